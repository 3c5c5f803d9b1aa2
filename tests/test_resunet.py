"""The seed-003 residual U-Net generator: shapes, identity at init, training with every
loss, the model file round trip and BN-folded inference."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.io
import torch

from napari_wgan_denoise import denoise
from napari_wgan_denoise.data.datasets import make_source
from napari_wgan_denoise.inference.optimise import fold_batch_norm
from napari_wgan_denoise.inference.tiling import EDGE_BORDER, round_up
from napari_wgan_denoise.models import (
    ARCHITECTURES,
    build_critic,
    create_model,
    load_model_file,
    save_model,
)
from napari_wgan_denoise.models.critics import SRGANCritic
from napari_wgan_denoise.models.resunet import ResUNetConfig, ResUNetGenerator
from napari_wgan_denoise.training import TrainConfig, Trainer

TINY = {"features": 4, "depth": 2}
TINY_CRITIC = {"features": 4, "max_features": 16}
FAST_VGG = {"vgg_random_init": True, "vgg_layers": ["relu1_2", "relu2_2"]}


@pytest.fixture
def clean_dir(tmp_path):
    """Eight smooth 8-bit gray images of 64x64."""
    folder = tmp_path / "clean"
    folder.mkdir()
    yy, xx = np.mgrid[:64, :64]
    for i in range(8):
        img = 128 + 90 * np.sin(xx / (3 + i)) * np.cos(yy / (4 + i / 2))
        skimage.io.imsave(folder / f"{i:02d}.png", img.astype(np.uint8), check_contrast=False)
    return folder


def _config(**kw) -> TrainConfig:
    base = dict(
        architecture="resunet",
        arch_config=TINY,
        critic_config=TINY_CRITIC,
        iterations=6,
        batch_size=4,
        patch_size=32,
        val_every=3,
        checkpoint_every=3,
        lr=1e-3,
    )
    base.update(kw)
    return TrainConfig(**base)


def _randomise(model, seed: int = 0, std: float = 0.1):
    """Random weights and batch-norm statistics, so that no layer is trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.network.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
        for m in model.network.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.add_(1.0)
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    model.network.eval()
    return model


def test_registry_and_create_model():
    arch = ARCHITECTURES["resunet"]
    assert arch.generator is ResUNetGenerator and arch.config is ResUNetConfig
    assert "seed 003" in arch.description
    model = create_model("resunet", channels=1, **TINY)
    net = model.network
    assert model.card["architecture"] == "resunet" and model.card["config"] == TINY
    assert net.size_multiple == 4 and net.channels == 1 and net.config == ResUNetConfig(4, 2)
    assert ResUNetGenerator().size_multiple == 8  # defaults: 32 features, depth 3
    critic = build_critic("resunet", 1, TINY_CRITIC)
    assert isinstance(critic, SRGANCritic)
    assert critic(torch.rand(2, 1, 32, 32)).shape == (2,)
    # string values (from the CLI's key=value) are coerced
    assert create_model("resunet", features="4", depth="1").network.size_multiple == 2
    with pytest.raises(ValueError, match="depth"):
        create_model("resunet", depth=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_identity_at_init(channels):
    net = create_model("resunet", channels=channels, **TINY).network.eval()
    x = torch.rand(2, channels, 16, 24)
    with torch.no_grad():
        assert torch.equal(net(x), x)


def test_receptive_radius_is_conservative():
    model = _randomise(create_model("resunet", channels=1, **TINY))
    net = model.network
    x = torch.rand(1, 1, 128, 128, requires_grad=True)
    net(x)[0, 0, 64, 64].backward()
    rows, cols = np.nonzero(x.grad[0, 0].abs().numpy() > 0)
    reach = max(64 - rows.min(), rows.max() - 64, 64 - cols.min(), cols.max() - 64)
    assert 0 < reach <= net.receptive_radius


@pytest.mark.parametrize(("shape", "channels"), [((37, 53), 1), ((2, 29, 31), 1), ((27, 41, 3), 3)])
def test_denoise_odd_sizes(shape, channels, rng):
    model = _randomise(create_model("resunet", channels=channels, **TINY), seed=channels)
    img = (rng.random(shape) * 4000).astype(np.uint16)
    out = denoise(img, model, tile_size=64, device="cpu")
    assert out.shape == img.shape and out.dtype == img.dtype
    assert not np.array_equal(out, img)


@pytest.mark.parametrize("loss", ["mse", "wgan", "wgan-wf", "vgg", "wgan-vgg"])
def test_each_loss_trains(clean_dir, loss):
    source = make_source(clean=clean_dir, noise="gaussian:25", seed=0)
    trainer = Trainer(_config(loss=loss, **FAST_VGG), source)
    before = [p.detach().clone() for p in trainer.generator.parameters()]
    states = [trainer.step() for _ in range(2)]
    for st in states:
        assert np.isfinite(st.g_loss) and np.isfinite(st.mse)
        adv = st.adv if "wgan" in loss else 0.0
        perceptual = st.perceptual if "vgg" in loss else 0.0
        assert np.isfinite(adv) and np.isfinite(perceptual)
        assert st.g_loss == pytest.approx(st.mse + perceptual + 1.01 * adv, rel=1e-4, abs=1e-4)
        assert ("vgg" in loss) == (perceptual > 0)
        assert ("wgan" in loss) == np.isfinite(st.d_loss)
    assert (trainer.critic is None) == (loss in ("mse", "vgg"))
    after = list(trainer.generator.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_resume_with_perceptual_loss_is_exact(clean_dir, tmp_path):
    cfg = _config(loss="wgan-vgg", iterations=4, lr_drop_at=0.5, val_every=10, **FAST_VGG)

    def src():
        return make_source(clean=clean_dir, noise="gaussian:25", seed=0)

    straight = Trainer(cfg, src())
    straight.run()
    part = Trainer(cfg, src(), checkpoint_dir=tmp_path / "ck")
    part.run(iterations=2)
    resumed = Trainer(cfg, src(), checkpoint_dir=tmp_path / "ck")
    resumed.resume(tmp_path / "ck" / "last")
    model = resumed.run()
    for (k, a), b in zip(
        straight.generator.state_dict().items(), resumed.generator.state_dict().values()
    ):
        assert torch.equal(a, b), k
    assert model.card["training"]["perceptual"]["weights"] == "random (test only)"
    assert not any("features" in k for k in model.network.state_dict())  # VGG not saved


def test_trained_model_round_trip_and_folded_inference(clean_dir, tmp_path):
    source = make_source(clean=clean_dir, noise="gaussian:25", seed=0)
    model = Trainer(_config(loss="mse", iterations=3, val_every=10), source).run()
    net = model.network.eval()
    assert any(
        not torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
        for m in net.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    )
    folded = fold_batch_norm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())

    save_model(model, tmp_path / "res")
    loaded = load_model_file(tmp_path / "res")
    assert loaded.architecture == "resunet" and loaded.card["config"] == TINY
    x = torch.rand(2, 1, 36, 28)
    with torch.no_grad():
        assert torch.equal(loaded.network(x), net(x))

    # denoise() (BN folded, tiled) equals a plain eval-mode forward of the plane with its
    # edges padded as the tiles pad them (EDGE_BORDER, then mirrored up to the size
    # multiple): float input with value_range=(0, 1) is passed unscaled.
    img = np.random.default_rng(1).random((30, 45)).astype(np.float32)
    out = denoise(img, loaded, value_range=(0.0, 1.0), device="cpu")
    mult = net.size_multiple
    pad = round_up(EDGE_BORDER, mult)
    padded = np.pad(img, ((pad, pad + (-30) % mult), (pad, pad + (-45) % mult)), mode="reflect")
    with torch.no_grad():
        ref = net(torch.from_numpy(padded)[None, None])[0, 0, pad : pad + 30, pad : pad + 45]
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-4)
    assert not np.allclose(out, img, atol=1e-3)
