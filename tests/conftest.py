"""Shared fixtures: tiny real models and an isolated user-model folder."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


def _randomise(model, seed: int = 0, std: float = 0.05):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.network.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


@pytest.fixture(autouse=True)
def _user_models(tmp_path_factory, monkeypatch):
    """Every test gets its own empty user-model folder."""
    folder = tmp_path_factory.mktemp("user_models")
    monkeypatch.setenv("NAPARI_WGAN_DENOISE_MODELS", str(folder))
    return folder


@pytest.fixture
def tiny_gray():
    """A 2-block x 16-feature SRResNet with random (non-identity) weights."""
    from napari_wgan_denoise import create_model

    return _randomise(create_model("srresnet", channels=1, n_blocks=2, features=16))


@pytest.fixture
def tiny_rgb():
    """An RGB 2-block x 16-feature SRResNet with random weights."""
    from napari_wgan_denoise import create_model

    return _randomise(create_model("srresnet", channels=3, n_blocks=2, features=16), seed=1)


@pytest.fixture
def tiny_unet():
    """A U-Net generator with 8 features and random weights."""
    from napari_wgan_denoise import create_model

    return _randomise(create_model("unet", channels=1, features=8, bottleneck=2), seed=2, std=0.1)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def no_shipped_models(tmp_path_factory, monkeypatch):
    """Hide the shipped zoo, for tests about what happens with only user models."""
    from napari_wgan_denoise.models import registry

    empty = tmp_path_factory.mktemp("no_shipped")
    monkeypatch.setattr(registry, "SHIPPED_DIR", empty)
    return empty


@pytest.fixture
def notifications():
    """Every napari notification dispatched during the test, as (severity, message)."""
    from napari.utils.notifications import notification_manager

    seen: list[tuple[str, str]] = []

    def record(event):
        note = event if hasattr(event, "severity") else event.value
        seen.append((str(note.severity), str(note.message)))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)
