"""Networks, the architecture registry and the model file format."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_wgan_denoise import (
    ModelFileError,
    create_model,
    list_models,
    load_model,
    save_model,
    save_user_model,
)
from napari_wgan_denoise.models import ARCHITECTURES, build_critic, build_generator

SMALL = {
    "srresnet": {"n_blocks": 1, "features": 8},
    "unet": {"features": 8},
    "resunet": {"features": 8, "depth": 2},
    "cascade": {"inpaint_features": 4, "inpaint_blocks": 1, "restore_features": 8},
    "shuffle": {"features": 8, "depth": 3},
}


def test_every_architecture_has_a_small_test_config():
    assert set(SMALL) == set(ARCHITECTURES)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_keeps_shape(arch, channels):
    net = build_generator(arch, channels, SMALL[arch])
    x = torch.rand(2, channels, 32, 48)
    if ARCHITECTURES[arch].task == "restore":  # image + hole mask in, image out
        x_in = torch.cat([x, torch.zeros(2, 1, 32, 48)], dim=1)
        assert net(x_in).shape == x.shape
    else:
        assert net(x).shape == x.shape


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_generators_start_near_identity(arch):
    """Every generator predicts a residual map initialised to zero: output == input."""
    net = build_generator(arch, 1, SMALL[arch]).eval()
    x = torch.rand(1, 1, 32, 32)
    if ARCHITECTURES[arch].task == "restore":
        assert torch.allclose(net(torch.cat([x, torch.zeros_like(x)], 1)), x)
    else:
        assert torch.allclose(net(x), x)


def test_paper_size_srresnet():
    net = build_generator("srresnet", 1, None)
    assert net.config.n_blocks == 16 and net.config.features == 64
    n_params = sum(p.numel() for p in net.parameters())
    assert 1_000_000 < n_params < 2_000_000  # fits the 8 MB model-file budget in float32


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("size", [32, 40, 64])
def test_critic_scores_any_patch(arch, size):
    critic = build_critic(arch, 1, {"features": 8})
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in critic.modules())
    assert not any(isinstance(m, torch.nn.Sigmoid) for m in critic.modules())
    out = critic(torch.rand(3, 1, size, size))
    assert out.shape == (3,)


def test_unknown_architecture_and_config():
    with pytest.raises(ValueError, match="Unknown architecture"):
        create_model("transformer")
    with pytest.raises(ValueError, match="Unknown config key"):
        create_model("srresnet", depth=3)


def test_round_trip(tmp_path, tiny_gray):
    path = save_model(tiny_gray, tmp_path / "tiny", metrics={"psnr": 30.0})
    assert path.name == "tiny.safetensors"
    card = json.loads((tmp_path / "tiny.json").read_text())
    for key in (
        "architecture",
        "config",
        "channels",
        "normalisation",
        "noise",
        "training",
        "metrics",
        "package_version",
        "weights_sha256",
    ):
        assert key in card
    loaded = load_model(tmp_path / "tiny.safetensors")
    assert loaded.card["metrics"] == {"psnr": 30.0}
    x = torch.rand(1, 1, 24, 24)
    with torch.no_grad():
        assert torch.equal(loaded.network(x), tiny_gray.network.eval()(x))
    # the json path and the bare stem work too
    assert load_model(tmp_path / "tiny.json").name == "tiny"
    assert load_model(str(tmp_path / "tiny")).name == "tiny"


def test_no_temporary_files_left(tmp_path, tiny_gray):
    save_model(tiny_gray, tmp_path / "m")
    save_model(tiny_gray, tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]


def test_truncated_weights(tmp_path, tiny_gray):
    save_model(tiny_gray, tmp_path / "m")
    blob = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ModelFileError, match=r"m\.safetensors.*(truncated|corrupt)"):
        load_model(tmp_path / "m")


def test_truncated_weights_without_hash(tmp_path, tiny_gray):
    save_model(tiny_gray, tmp_path / "m")
    card = json.loads((tmp_path / "m.json").read_text())
    del card["weights_sha256"]
    (tmp_path / "m.json").write_text(json.dumps(card))
    blob = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(blob[:100])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        load_model(tmp_path / "m")


def test_corrupt_card(tmp_path, tiny_gray):
    save_model(tiny_gray, tmp_path / "m")
    (tmp_path / "m.json").write_text('{"architecture": "srres')
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_model(tmp_path / "m")


def test_missing_files(tmp_path, tiny_gray):
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "absent.safetensors")
    save_model(tiny_gray, tmp_path / "m")
    (tmp_path / "m.safetensors").unlink()
    with pytest.raises(ModelFileError, match="weights .* not found"):
        load_model(tmp_path / "m")


def test_mismatched_card(tmp_path, tiny_gray):
    save_model(tiny_gray, tmp_path / "m")
    card = json.loads((tmp_path / "m.json").read_text())
    card["config"]["features"] = 32
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(ModelFileError, match="do not fit the architecture"):
        load_model(tmp_path / "m")


def test_pickle_is_never_loaded(tmp_path, tiny_gray):
    """A torch pickle renamed to .safetensors is refused, not unpickled."""
    save_model(tiny_gray, tmp_path / "m")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    card = json.loads((tmp_path / "m.json").read_text())
    del card["weights_sha256"]
    (tmp_path / "m.json").write_text(json.dumps(card))
    torch.save({"x": Evil()}, tmp_path / "m.safetensors")
    with pytest.raises(ModelFileError):
        load_model(tmp_path / "m")
    assert not marker.exists()


def test_user_registry(tiny_gray, _user_models):
    assert "mine" not in list_models()
    save_user_model(tiny_gray, "mine")
    assert "mine" in list_models()
    assert load_model("mine").card["name"] == "mine"
    with pytest.raises(ValueError, match="already exists"):
        save_user_model(tiny_gray, "mine")
    with pytest.raises(ValueError, match="No model named 'nope'"):
        load_model("nope")


def test_import_does_not_load_napari_or_qt():
    code = (
        "import sys, napari_wgan_denoise, napari_wgan_denoise.cli; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'vispy')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_card_hash_changes_with_weights(tmp_path, tiny_gray):
    save_model(tiny_gray, tmp_path / "a")
    h1 = load_model(tmp_path / "a").card_hash
    with torch.no_grad():
        next(tiny_gray.network.parameters()).add_(1.0)
    save_model(tiny_gray, tmp_path / "a")
    assert load_model(tmp_path / "a").card_hash != h1
    assert np.isfinite(tiny_gray.n_parameters)


def test_fold_batch_norm_is_exact(tiny_unet):
    from napari_wgan_denoise.inference.optimise import fold_batch_norm

    net = tiny_unet.network
    gen = torch.Generator().manual_seed(3)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    net.eval()
    folded = fold_batch_norm(net)
    assert folded is not net
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert n_bn < sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    x = torch.rand(2, 1, 32, 40)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-4)


def test_saved_files_are_readable_by_others(tmp_path, tiny_gray):
    import os
    import stat

    old = os.umask(0o022)
    try:
        save_model(tiny_gray, tmp_path / "m")
    finally:
        os.umask(old)
    for name in ("m.safetensors", "m.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644
