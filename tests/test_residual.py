"""The hallucination readout's statistics on cases with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_wgan_denoise.residual import (
    gradient_correlation,
    method_noise,
    method_noise_map,
    neighbour_autocorrelation,
    residual_readout,
    stack_readout,
    whiteness,
)


def _edge_image(n: int = 128) -> np.ndarray:
    img = np.zeros((n, n), np.float32)
    img[:, n // 2 :] = 100.0
    return img


def test_white_noise_residual_is_white():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 5, (256, 256))
    assert abs(whiteness(noise)) < 0.02
    ay, ax = neighbour_autocorrelation(noise)
    assert abs(ay) < 0.02 and abs(ax) < 0.02
    # Poisson noise is signal dependent but still uncorrelated between pixels
    clean = _edge_image(256) + 10
    shot = rng.poisson(clean) - clean
    assert abs(whiteness(shot)) < 0.02


def test_residual_with_an_edge_is_not_white():
    rng = np.random.default_rng(1)
    edge = _edge_image()
    assert whiteness(edge) > 0.9
    assert whiteness(edge + rng.normal(0, 10, edge.shape)) > 0.5


def test_correlated_noise_is_flagged_too():
    rng = np.random.default_rng(2)
    noise = rng.normal(size=(256, 257))
    smooth = (noise[:, 1:] + noise[:, :-1]) / 2  # neighbours share half their noise
    ay, ax = neighbour_autocorrelation(smooth)
    assert abs(ay) < 0.03 and ax == pytest.approx(0.5, abs=0.03)


def test_gradient_correlation():
    rng = np.random.default_rng(3)
    output = _edge_image()
    noise = rng.normal(0, 5, output.shape)
    assert abs(gradient_correlation(noise, output)) < 0.1
    # a model that removed part of the edge: the residual lives where the gradient is
    blurred_away = np.zeros_like(output)
    blurred_away[:, 62:66] = [-20, -40, 40, 20]
    assert gradient_correlation(blurred_away + 0.5 * noise, output) > 0.7


def test_rgb_planes_and_constant_residual():
    rng = np.random.default_rng(4)
    rgb = rng.normal(size=(64, 64, 3))
    assert abs(whiteness(rgb)) < 0.05
    assert np.isnan(whiteness(np.zeros((16, 16))))
    with pytest.raises(ValueError, match="2 x 2"):
        neighbour_autocorrelation(np.zeros(5))


def test_readout_with_and_without_reference():
    rng = np.random.default_rng(5)
    clean = (_edge_image() + 50).astype(np.uint8)  # no clipping: clipped noise has a bias
    noisy = np.clip(clean + rng.normal(0, 10, clean.shape), 0, 255).astype(np.uint8)
    good = clean.copy()
    out = residual_readout(noisy, good)
    assert set(out) == {"whiteness", "grad_corr", "residual_std"}
    assert abs(out["whiteness"]) < 0.05
    full = residual_readout(noisy, good, clean)
    assert full["psnr"] == float("inf") and full["ssim"] == pytest.approx(1.0)
    assert np.array_equal(method_noise(noisy, good), noisy.astype(np.float32) - good)


def test_stack_readout_samples_planes_and_crops():
    rng = np.random.default_rng(6)
    clean = np.stack([_edge_image(96) + 50] * 20)
    noisy = clean + rng.normal(0, 5, clean.shape)
    white = stack_readout(noisy, clean, max_planes=4, max_side=64)
    assert set(white) == {"whiteness", "grad_corr", "residual_std"}
    assert abs(white["whiteness"]) < 0.05
    blurred = stack_readout(noisy, np.zeros_like(noisy) + noisy.mean())  # removed everything
    assert blurred["whiteness"] > 0.5
    rgb = np.stack([clean[0]] * 3, axis=-1)
    assert method_noise_map(rgb + 3, rgb, rgb=True).shape == (96, 96)
    assert stack_readout(rgb + rng.normal(0, 5, rgb.shape), rgb, rgb=True)["whiteness"] < 0.05
