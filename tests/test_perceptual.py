"""The perceptual (VGG feature) loss: torchvision layouts, safe loading, clear errors, and
its place in the trainer and the ``train`` CLI."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import skimage.io
import torch
from safetensors.torch import save_file

from napari_wgan_denoise.cli import main
from napari_wgan_denoise.data.datasets import make_source
from napari_wgan_denoise.models import load_model
from napari_wgan_denoise.training import TrainConfig, Trainer
from napari_wgan_denoise.training.perceptual import (
    VGG_ENV,
    PerceptualLoss,
    layer_names,
    resolve_vgg_weights,
    vgg_features,
)

#: torchvision's conv indices in ``features`` (configurations D and E).
TORCHVISION_CONVS = {
    "vgg16": [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
    "vgg19": [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34],
}
SHALLOW = ["relu1_2", "relu2_2"]


@pytest.fixture(autouse=True)
def _no_vgg_env(monkeypatch):
    monkeypatch.delenv(VGG_ENV, raising=False)


def _state(arch: str, upto: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision-layout VGG state dict (``features.N.*`` plus classifier keys) with
    small random weights; only the layers up to ``upto`` when given."""
    gen = torch.Generator().manual_seed(seed)
    feats = vgg_features(arch)
    if upto is not None:
        feats = feats[: upto + 1]
    state = {
        f"features.{k}": torch.randn(v.shape, generator=gen) * 0.05
        for k, v in feats.state_dict().items()
    }
    state["classifier.0.weight"] = torch.zeros(8, 4)
    state["classifier.0.bias"] = torch.zeros(8)
    return state


def _write(state: dict[str, torch.Tensor], path) -> str:
    if str(path).endswith(".safetensors"):
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return str(path)


@pytest.fixture(scope="module")
def full_files(tmp_path_factory):
    """Complete torchvision-layout files: VGG16 as .pth, VGG19 as .safetensors."""
    folder = tmp_path_factory.mktemp("vgg")
    return {
        "vgg16": _write(_state("vgg16"), folder / "vgg16-397923af.pth"),
        "vgg19": _write(_state("vgg19", seed=1), folder / "vgg19.safetensors"),
    }


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


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_feature_layout_is_torchvisions(arch):
    feats = vgg_features(arch)
    assert len(feats) == {"vgg16": 31, "vgg19": 37}[arch]
    convs = [i for i, m in enumerate(feats) if isinstance(m, torch.nn.Conv2d)]
    assert convs == TORCHVISION_CONVS[arch]
    names = layer_names(arch)
    assert names["conv1_1"] == 0 and names["relu1_2"] == 3 and names["pool1"] == 4
    last = "relu5_3" if arch == "vgg16" else "relu5_4"
    assert names[last] == convs[-1] + 1


def test_full_files_load_with_default_layers(full_files):
    for arch, path in full_files.items():
        loss = PerceptualLoss(path, arch=arch)
        expected = {"vgg16": ["relu1_2", "relu2_2", "relu3_3", "relu4_3"], "vgg19": ["relu5_4"]}
        assert list(loss.layers) == expected[arch]
        assert len(loss.features) == layer_names(arch)[expected[arch][-1]] + 1  # truncated
        state = _state(arch, seed=0 if arch == "vgg16" else 1)
        for k, v in loss.features.state_dict().items():
            assert torch.equal(v, state[f"features.{k}"]), k
        desc = loss.describe()
        with open(path, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
        assert desc == {
            "arch": arch,
            "layers": expected[arch],
            "weights": os.path.basename(path),
            "weights_sha256": digest,
        }


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_both_formats_and_archs_load(tmp_path, arch, suffix):
    upto = layer_names(arch)["relu2_2"]
    path = _write(_state(arch, upto=upto), tmp_path / f"w{suffix}")
    loss = PerceptualLoss(path, arch=arch, layers=SHALLOW)
    a, b = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    assert loss(a, a).item() == 0.0 and loss(a, b).item() > 0
    rand = PerceptualLoss(arch=arch, layers=SHALLOW, random_init=True)
    assert loss(a, b).item() != rand(a, b).item()  # the file's weights are the ones used


def test_loss_values_gradients_and_gray():
    loss = PerceptualLoss(random_init=True, layers="relu1_2, relu2_2")
    assert loss.layers == ("relu1_2", "relu2_2")
    assert loss.describe()["weights"] == "random (test only)"
    target = torch.rand(2, 1, 24, 24)
    estimate = (target + 0.1 * torch.randn(2, 1, 24, 24)).requires_grad_(True)
    assert loss(target, target).item() == 0.0
    value = loss(estimate, target)
    assert value.ndim == 0 and value.item() > 0
    value.backward()
    assert estimate.grad is not None and estimate.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())
    # gray is the same as the gray image repeated to RGB
    rgb = loss(estimate.detach().repeat(1, 3, 1, 1), target.repeat(1, 3, 1, 1))
    assert rgb.item() == pytest.approx(value.item(), rel=1e-6)
    # eq. 2-3: the mean over layers of the per-element mean squared distance
    maps_e, maps_t = loss.feature_maps(estimate.detach()), loss.feature_maps(target)
    manual = np.mean([((maps_e[n] - maps_t[n]) ** 2).mean().item() for n in loss.layers])
    assert value.item() == pytest.approx(manual, rel=1e-5)
    # random init is deterministic; the module stays in eval mode
    again = PerceptualLoss(random_init=True, layers=["relu1_2", "relu2_2"])
    assert again(estimate.detach(), target).item() == value.item()
    assert not loss.train().training
    with pytest.raises(ValueError, match="C = 1 or 3"):
        loss(torch.rand(1, 2, 8, 8), torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match="relu1_1"):
        PerceptualLoss(random_init=True, layers=["relu9_9"])


def test_missing_weights_say_what_to_get(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as err:
        resolve_vgg_weights(None)
    message = str(err.value)
    assert "vgg16-397923af.pth" in message and VGG_ENV in message
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in message
    assert "--vgg-weights" in message
    with pytest.raises(FileNotFoundError, match="vgg19-dcbb9e9d.pth"):
        PerceptualLoss(arch="vgg19")
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        resolve_vgg_weights(tmp_path / "nowhere.pth")
    monkeypatch.setenv(VGG_ENV, str(tmp_path / "gone.pth"))
    with pytest.raises(FileNotFoundError, match=f"gone.pth.*{VGG_ENV}"):
        resolve_vgg_weights(None)
    real = tmp_path / "vgg.pth"
    real.write_bytes(b"x")
    monkeypatch.setenv(VGG_ENV, str(real))
    assert resolve_vgg_weights(None) == real
    assert resolve_vgg_weights(str(real)) == real


class _Sneaky:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Custom:
    pass


@pytest.mark.parametrize("kind", ["reduce", "custom class"])
def test_pickles_are_never_executed(tmp_path, kind):
    marker = tmp_path / "executed"
    if kind == "reduce":
        payload = _Sneaky()
        payload.marker = marker
        obj = {"features.0.weight": payload}
    else:
        obj = {"features.0.weight": torch.zeros(64, 3, 3, 3), "extra": _Custom()}
    path = tmp_path / "evil.pth"
    torch.save(obj, path)
    assert not marker.exists()
    with pytest.raises(ValueError, match="evil.pth"):
        PerceptualLoss(path, layers=["relu1_1"])
    assert not marker.exists()


def test_bad_files_name_the_problem(tmp_path, full_files):
    state = _state("vgg16", upto=8)
    state["features.2.weight"] = torch.zeros(32, 64, 3, 3)
    path = _write(state, tmp_path / "wrong.safetensors")
    with pytest.raises(ValueError, match=r"wrong\.safetensors.*wrong shape.*features\.2\.weight"):
        PerceptualLoss(path, layers=SHALLOW)
    short = _write(_state("vgg16", upto=3), tmp_path / "short.pth")
    with pytest.raises(ValueError, match=r"short\.pth.*missing features\.5\.weight"):
        PerceptualLoss(short, layers=SHALLOW)
    with pytest.raises(ValueError, match="--vgg-arch vgg19"):
        PerceptualLoss(full_files["vgg19"], arch="vgg16")
    none = _write({"classifier.0.weight": torch.zeros(2)}, tmp_path / "none.pth")
    with pytest.raises(ValueError, match="no 'features"):
        PerceptualLoss(none)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="junk.safetensors"):
        PerceptualLoss(junk)
    tensor_only = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(ValueError, match="not a state dict"):
        PerceptualLoss(tensor_only)


def _trainer_config(**kw) -> TrainConfig:
    base = dict(
        architecture="srresnet",
        arch_config={"n_blocks": 1, "features": 8},
        critic_config={"features": 4, "max_features": 16},
        iterations=2,
        batch_size=2,
        patch_size=32,
        val_every=10,
        vgg_layers=SHALLOW,
        vgg_random_init=True,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_trainer_fails_early_without_weights(clean_dir):
    source = make_source(clean=clean_dir, noise="gaussian:25", seed=0)
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):
        Trainer(_trainer_config(loss="wgan-vgg", vgg_random_init=False), source)
    Trainer(_trainer_config(loss="wgan"), source)  # other losses never look for VGG


def test_perceptual_term_scales_like_the_mse(clean_dir):
    """Under ``mse_reduction="sum"`` both terms are x(C*H*W) of their "mean" values."""
    states = {}
    for reduction in ("sum", "mean"):
        cfg = _trainer_config(
            loss="vgg", mse_reduction=reduction, architecture="resunet", arch_config={}
        )
        trainer = Trainer(cfg, make_source(clean=clean_dir, noise="gaussian:25", seed=0))
        states[reduction] = trainer.step()  # an untrained ResUNet is the identity
    s, m = states["sum"], states["mean"]
    assert s.mse / m.mse == pytest.approx(32 * 32, rel=1e-4)
    assert s.perceptual / m.perceptual == pytest.approx(32 * 32, rel=1e-4)
    cfg = _trainer_config(loss="vgg", mse_weight=0.5, perceptual_weight=2.0)
    st = Trainer(cfg, make_source(clean=clean_dir, noise="gaussian:25", seed=0)).step()
    assert st.g_loss == pytest.approx(0.5 * st.mse + 2.0 * st.perceptual, rel=1e-5)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"loss": "vgg", "perceptual_weight": 0.0}, "no perceptual term"),
        ({"loss": "vgg", "vgg_arch": "vgg11"}, "vgg16 or vgg19"),
        ({"loss": "wgan", "mse_weight": -1.0}, "mse_weight"),
        ({"loss": "mse", "mse_weight": 0.0}, "nothing to minimise"),
    ],
)
def test_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        _trainer_config(**kw).validate()


def test_config_parses_layer_lists():
    cfg = TrainConfig.from_dict({"loss": "vgg", "vgg_layers": "relu1_2, relu2_2"})
    assert cfg.vgg_layers == ["relu1_2", "relu2_2"]
    assert TrainConfig.from_dict({"vgg_layers": ["relu5_4"]}).vgg_layers == ["relu5_4"]


def _cli(tmp_path, clean_dir, *extra):
    return [
        "train",
        "-o",
        str(tmp_path / "m"),
        "--clean",
        str(clean_dir),
        "--noise",
        "gaussian:25",
        "--arch-config",
        "features=4,depth=1",
        "--critic-config",
        "features=4,max_features=16",
        "--iterations",
        "2",
        "--batch-size",
        "2",
        "--patch-size",
        "32",
        "-q",
        *extra,
    ]


def test_cli_without_weights_explains(tmp_path, clean_dir, capsys):
    argv = _cli(tmp_path, clean_dir, "--architecture", "resunet", "--loss", "wgan-vgg")
    assert main(argv) == 3  # bad input: a missing file (2 is for usage errors)
    err = capsys.readouterr().err
    assert "vgg16-397923af.pth" in err and VGG_ENV in err and "--vgg-weights" in err
    assert "Traceback" not in err
    assert not (tmp_path / "m-checkpoints").exists()  # failed before anything was written


def test_cli_trains_resunet_with_a_weights_file(tmp_path, clean_dir, monkeypatch):
    weights = _write(_state("vgg16", upto=8), tmp_path / "vgg16-features.safetensors")
    argv = _cli(
        tmp_path,
        clean_dir,
        "--architecture",
        "resunet",
        "--loss",
        "wgan-vgg",
        "--vgg-layers",
        "relu1_2,relu2_2",
        "--perceptual-weight",
        "0.5",
        "--mse-weight",
        "1",
    )
    monkeypatch.setenv(VGG_ENV, weights)  # the environment names the file
    assert main(argv) == 0
    card = load_model(tmp_path / "m").card
    assert card["architecture"] == "resunet"
    training = card["training"]
    assert training["loss"] == "wgan-vgg" and training["config"]["perceptual_weight"] == 0.5
    with open(weights, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    assert training["perceptual"] == {
        "arch": "vgg16",
        "layers": ["relu1_2", "relu2_2"],
        "weights": "vgg16-features.safetensors",
        "weights_sha256": digest,
    }


def test_train_help_lists_the_new_options(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for text in ("wgan-vgg", "--perceptual-weight", "--mse-weight", "--vgg-weights"):
        assert text in out
    for text in ("--vgg-arch", "--vgg-layers", "resunet"):
        assert text in out
