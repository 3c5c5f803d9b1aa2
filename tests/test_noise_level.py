"""The core's noise-level estimate against the shipped models' noise models (numpy only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_wgan_denoise.noise_level import estimate_noise, noise_warning, trained_sigma_range

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "napari_wgan_denoise" / "weights"


def _card(name):
    return json.loads((WEIGHTS / f"{name}.json").read_text())


def _clean(size=256):
    yy, xx = np.mgrid[:size, :size]
    return 0.5 + 0.3 * np.sin(xx / 9.0) * np.cos(yy / 13.0)


@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.1])
def test_gaussian_sigma_is_recovered(rng, sigma):
    noisy = _clean() + rng.normal(0, sigma, (256, 256))
    estimate = estimate_noise([noisy])
    assert estimate.sigma() == pytest.approx(sigma, rel=0.15)


def test_poisson_gain_is_recovered(rng):
    peak = 200.0
    noisy = rng.poisson(_clean() * peak) / peak
    estimate = estimate_noise([noisy])
    assert estimate.gain == pytest.approx(1 / peak, rel=0.3)
    assert estimate.sigma(0.5) == pytest.approx(np.sqrt(0.5 / peak), rel=0.15)


def test_gray_model_range_inside_and_far_outside(rng):
    card = _card("gray-mse-fast")  # gaussian sigma 0-55 on 0-255
    assert trained_sigma_range(card["noise"], 0.5) == pytest.approx((0.0, 55 / 255))
    clean = _clean() * 255
    for sigma in (5, 25, 50):
        image = np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255).astype(np.uint8)
        assert noise_warning(image, card) is None, sigma
    image = np.clip(clean + rng.normal(0, 200, clean.shape), 0, 255).astype(np.uint8)
    assert "noisier than gray-mse-fast" in noise_warning(image, card)


def test_fluo_model_poisson_inside_and_nearly_clean(rng):
    card = _card("fluo-mse-fast")  # 50 % real, 50 % poisson-gaussian peak 2-1000
    for peak in (20, 300):
        image = (rng.poisson(_clean() * peak) + 100).astype(np.uint16)
        assert noise_warning(image, card) is None, peak
    nearly_clean = (rng.poisson(_clean() * 1e5) + 100).astype(np.float32)
    assert "less noisy than fluo-mse-fast" in noise_warning(nearly_clean, card)


def test_rgb_and_stacks_and_unknown_noise_models(rng):
    card = _card("cells-mse-fast")
    clean = np.stack([_clean(128) * 255] * 3, axis=-1)
    noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
    assert noise_warning(np.stack([noisy] * 4), card, rgb=True) is None
    very = np.clip(clean + rng.normal(0, 220, clean.shape), 0, 255).astype(np.uint8)
    assert "noisier" in noise_warning(very, card, rgb=True)
    assert noise_warning(very, {"noise": {"type": "real"}}, rgb=True) is None
    assert noise_warning(very, {}, rgb=True) is None
