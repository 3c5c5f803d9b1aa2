"""bioimage.io export and import: packages validate and pass test_model offline, load back
with the same output, and foreign or broken packages run or get a clear refusal."""

from __future__ import annotations

import hashlib
import io
import runpy
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from napari_wgan_denoise import create_model, denoise, load_model
from napari_wgan_denoise.cli import main
from napari_wgan_denoise.data.samples import cells_sample, fluorescence_sample
from napari_wgan_denoise.export.bioimageio import (
    FACTORY,
    PackageError,
    architecture_source,
    export_bioimageio,
    load_bioimageio,
    tiling_for,
    validate_package,
)
from napari_wgan_denoise.models.architectures import ARCHITECTURES


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No network and a private cache for bioimageio (its I/O checks are off)."""
    monkeypatch.setenv("BIOIMAGEIO_PERFORM_IO_CHECKS", "false")
    monkeypatch.setenv("BIOIMAGEIO_CACHE_PATH", str(tmp_path / "bioimageio-cache"))


def _rdf(path: Path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return yaml.safe_load(zf.read("rdf.yaml"))


@pytest.mark.parametrize("name", ["fluo-wgan-fast", "cells-mse-fast"])
def test_export_validates_and_passes_test_model(tmp_path, name):
    pytest.importorskip("bioimageio.core")
    path = export_bioimageio(name, tmp_path / f"{name}.zip")
    rdf = _rdf(path)
    assert rdf["format_version"].startswith("0.5")
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript"}
    model = load_model(name)
    arch = rdf["weights"]["pytorch_state_dict"]["architecture"]
    assert arch["callable"] == FACTORY
    assert arch["kwargs"]["features"] == model.card["config"]["features"]
    y_axis = rdf["outputs"][0]["axes"][2]
    step = rdf["inputs"][0]["axes"][2]["size"]["step"]
    assert y_axis["halo"] >= 1 and step == model.network.size_multiple
    assert any(c.get("doi") == "10.1109/ACCESS.2020.2988284" for c in rdf["cite"])
    with zipfile.ZipFile(path) as zf:
        readme = zf.read("README.md").decode()
        assert {"cover.png", "test_input.npy", "test_output.npy"} <= set(zf.namelist())
    assert "Training data and noise model" in readme and "PSNR" in readme
    passed, report = validate_package(path, test=True)
    assert passed, report


def test_percentile_and_fixed_normalisations_map_to_spec_processing(tmp_path):
    fluo = _rdf(export_bioimageio("fluo-mse-fast", tmp_path / "fluo.zip"))
    (pre,) = fluo["inputs"][0]["preprocessing"]
    assert pre["id"] == "scale_range" and pre["kwargs"]["min_percentile"] == 0.1
    assert fluo["outputs"][0]["postprocessing"] == []
    cells = _rdf(export_bioimageio("cells-wgan-fast", tmp_path / "cells.zip"))
    (pre,) = cells["inputs"][0]["preprocessing"]
    (post,) = cells["outputs"][0]["postprocessing"]
    assert pre["id"] == post["id"] == "scale_linear"
    assert post["kwargs"] == {"gain": 255.0, "offset": 0.0}
    assert cells["inputs"][0]["axes"][1]["channel_names"] == ["red", "green", "blue"]


@pytest.mark.parametrize("name", ["fluo-wgan-fast", "cells-wgan-fast"])
def test_export_then_import_gives_the_same_output(tmp_path, name):
    path = export_bioimageio(name, tmp_path / "m.zip")
    loaded = load_model(str(path))  # the registry's loader takes packages too
    original = load_model(name)
    # the same weights (the file's hash may differ: safetensors orders its metadata freely)
    state, back = original.network.state_dict(), loaded.network.state_dict()
    assert state.keys() == back.keys() and all(torch.equal(state[k], back[k]) for k in state)
    assert loaded.card["training"] == original.card["training"]
    noisy = fluorescence_sample()[0] if loaded.channels == 1 else cells_sample()[0][:128, :160]
    a = denoise(noisy.astype(np.float32), original, device="cpu")
    b = denoise(noisy.astype(np.float32), loaded, device="cpu")
    assert np.max(np.abs(a - b)) <= 1e-4 * float(np.ptp(a))


@pytest.mark.parametrize(
    "architecture",
    [name for name, arch in ARCHITECTURES.items() if arch.task == "denoise"],
)
def test_every_registered_denoiser_exports_with_a_standalone_architecture(tmp_path, architecture):
    model = create_model(architecture)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.network.parameters():
            p.add_(0.01 * torch.randn_like(p))
    namespace = runpy.run_path(_write(tmp_path / "arch.py", architecture_source(architecture)))
    config = model.card["config"]
    rebuilt = namespace[FACTORY](channels=1, **config)
    rebuilt.load_state_dict(model.network.state_dict())
    tiling = tiling_for(model.network)
    x = torch.rand(1, 1, tiling["min"], tiling["min"] + tiling["step"])
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(x), model.network.eval()(x), atol=1e-6)
    path = export_bioimageio(model, tmp_path / "m.zip", name=f"test-{architecture}")
    back = load_bioimageio(path)
    assert back.architecture == architecture


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_cli_export(tmp_path, capsys):
    out = tmp_path / "gray.zip"
    assert main(["export", "gray-mse-fast", "-o", str(out)]) == 0
    assert out.is_file() and "gray.zip" in capsys.readouterr().out
    assert main(["export", "gray-mse-fast", "-o", str(out)]) == 2  # exists, no --overwrite
    assert main(["export", "fluo-cascade-fast", "-o", str(tmp_path / "c.zip")]) == 2
    assert main(["export", "no-such-model", "-o", str(tmp_path / "n.zip")]) == 3
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["export", "gray-mse-fast", "-o", str(blocker / "x.zip")]) == 1  # not writable
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "gray.zip"]


# ---------------------------------------------------------------- foreign and broken packages


class _Smooth(nn.Module):
    """A tiny 1-channel 'denoiser': a fixed 3x3 box filter."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        nn.init.constant_(self.conv.weight, 1 / 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _foreign_package(
    path: Path,
    *,
    channels: int = 1,
    axes: tuple[str, ...] = ("y", "x"),
    weights: str = "torchscript",
    preprocessing: list | None = None,
) -> Path:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(_Smooth()), buf)
    blob = buf.getvalue()
    space = [{"type": "space", "id": a, "size": {"min": 16, "step": 8}} for a in axes]
    out_space = [
        {"type": "space", "id": a, "size": {"tensor_id": "in", "axis_id": a}, "halo": 2}
        for a in axes
    ]
    chan = {"type": "channel", "channel_names": [f"c{i}" for i in range(channels)]}
    rdf = {
        "type": "model",
        "format_version": "0.5.4",
        "name": "box filter",
        "inputs": [
            {
                "id": "in",
                "axes": [{"type": "batch"}, chan, *space],
                "preprocessing": preprocessing
                if preprocessing is not None
                else [
                    {
                        "id": "scale_range",
                        "kwargs": {"axes": ["y", "x"], "min_percentile": 1, "max_percentile": 99},
                    }
                ],
            }
        ],
        "outputs": [{"id": "out", "axes": [{"type": "batch"}, chan, *out_space]}],
        "weights": {weights: {"source": "w.pt", "sha256": hashlib.sha256(blob).hexdigest()}},
    }
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("rdf.yaml", yaml.safe_dump(rdf))
        zf.writestr("w.pt", blob)
    return path


def test_foreign_torchscript_package_runs(tmp_path):
    model = load_model(str(_foreign_package(tmp_path / "box.zip")))
    assert model.channels == 1 and model.card["normalisation"]["mode"] == "percentile"
    assert model.network.size_multiple == 8 and model.network.receptive_radius == 2
    noisy = fluorescence_sample()[0].astype(np.float32)
    # fp32: the box filter's exact values (bf16 autocast, "auto" on CPUs with native bf16,
    # keeps about 3 significant digits)
    out = denoise(noisy, model, device="cpu", precision="fp32")
    lo, hi = np.percentile(noisy, [1, 99])
    with torch.no_grad():
        x = ((noisy - lo) / (hi - lo)).astype(np.float32)
        ref = _Smooth()(torch.from_numpy(x)[None, None])[0, 0].numpy()
    ref = ref * (hi - lo) + lo
    inner = (slice(4, -4), slice(4, -4))  # the borders differ by padding mode only
    assert np.max(np.abs(out[inner] - ref[inner])) < 1e-3 * (hi - lo)


def test_foreign_format_04_package_runs(tmp_path):
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(_Smooth()), buf)
    rdf = {
        "type": "model",
        "format_version": "0.4.10",
        "name": "old box filter",
        "inputs": [
            {
                "name": "raw",
                "axes": "bcyx",
                "data_type": "float32",
                "shape": {"min": [1, 1, 16, 16], "step": [0, 0, 16, 16]},
                "preprocessing": [
                    {"name": "scale_linear", "kwargs": {"gain": 0.5, "offset": 1.0, "axes": "yx"}}
                ],
            }
        ],
        "outputs": [
            {
                "name": "out",
                "axes": "bcyx",
                "data_type": "float32",
                "shape": {"reference_tensor": "raw", "scale": [1, 1, 1, 1], "offset": [0] * 4},
                "halo": [0, 0, 4, 4],
                "postprocessing": [
                    {"name": "scale_linear", "kwargs": {"gain": 2.0, "offset": -2.0, "axes": "yx"}}
                ],
            }
        ],
        "weights": {"torchscript": {"source": "w.pt"}},
    }
    path = tmp_path / "old.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("rdf.yaml", yaml.safe_dump(rdf))
        zf.writestr("w.pt", buf.getvalue())
    model = load_model(str(path))
    assert model.card["normalisation"] == {"mode": "fixed", "low": -2.0, "high": 0.0}
    assert model.network.size_multiple == 16 and model.network.receptive_radius == 4
    flat = np.full((32, 32), 7.0, np.float32)
    np.testing.assert_allclose(denoise(flat, model, device="cpu")[8:-8, 8:-8], 7.0, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"channels": 3}, "3 channels"),
        ({"axes": ("z", "y", "x")}, "2-D images"),
        ({"weights": "pytorch_state_dict"}, "no TorchScript weights"),
        ({"preprocessing": [{"id": "zero_mean_unit_variance", "kwargs": {}}]}, "not supported"),
    ],
)
def test_foreign_package_is_refused_with_the_reason(tmp_path, kwargs, reason):
    path = _foreign_package(tmp_path / "f.zip", **kwargs)
    with pytest.raises(PackageError, match=reason):
        load_model(str(path))


def test_corrupt_packages_get_clear_errors(tmp_path):
    good = export_bioimageio("gray-mse-fast", tmp_path / "good.zip")
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(PackageError, match="not a readable zip|corrupt"):
        load_model(str(truncated))
    not_a_package = tmp_path / "other.zip"
    with zipfile.ZipFile(not_a_package, "w") as zf:
        zf.writestr("hello.txt", "hi")
    with pytest.raises(PackageError, match="not a bioimage.io package"):
        load_model(str(not_a_package))
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            dst.writestr(item, data[:-8] + b"\0" * 8 if item == "model.safetensors" else data)
    with pytest.raises(PackageError, match="sha256"):
        load_model(str(tampered))
    with pytest.raises(PackageError, match="not found"):
        load_model(str(tmp_path / "missing.zip"))


def test_unzipped_package_loads_from_its_description(tmp_path):
    path = export_bioimageio("gray-wgan-fast", tmp_path / "g.zip")
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(path) as zf:
        zf.extractall(folder)
    model = load_model(str(folder / "rdf.yaml"))
    assert model.name == "gray-wgan-fast" and model.channels == 1
    (folder / "model.safetensors").unlink()
    with pytest.raises(PackageError, match="lacks its file 'model.safetensors'"):
        load_model(str(folder / "rdf.yaml"))
