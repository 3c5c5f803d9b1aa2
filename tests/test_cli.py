"""The ``wgan-denoise`` command line on real temporary files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import skimage.io
import tifffile

from napari_wgan_denoise import load_model, save_model, save_user_model
from napari_wgan_denoise.cli import main
from napari_wgan_denoise.errors import EXIT_BAD_INPUT


def test_models_lists_user_models(tiny_gray, capsys):
    save_user_model(tiny_gray, "tiny-cli")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "tiny-cli" in out and "srresnet" in out and "user" in out and "gray" in out


def test_denoise_tiff_and_png(tiny_gray, tmp_path, rng):
    model = tmp_path / "m"
    save_model(tiny_gray, model)
    stack = (rng.random((2, 40, 40)) * 3000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    png = (rng.random((30, 30)) * 255).astype(np.uint8)
    skimage.io.imsave(tmp_path / "img.png", png, check_contrast=False)
    out = tmp_path / "out"
    argv = [
        "denoise",
        str(tmp_path / "stack.tif"),
        str(tmp_path / "img.png"),
        "-o",
        str(out),
        "--model",
        str(model) + ".safetensors",
        "--tile-size",
        "64",
        "-q",
    ]
    assert main(argv) == 0
    a = tifffile.imread(out / "stack.tif")
    b = tifffile.imread(out / "img.tif")
    assert a.shape == stack.shape and a.dtype == np.uint16
    assert b.shape == png.shape and b.dtype == np.uint8
    # never overwrite without --overwrite
    before = (out / "img.tif").read_bytes()
    assert main(argv) == 2
    assert (out / "img.tif").read_bytes() == before
    assert main([*argv, "--overwrite"]) == 0


def test_denoise_errors_are_clear(tiny_gray, tmp_path, capsys):
    save_model(tiny_gray, tmp_path / "m")
    assert (
        main(
            [
                "denoise",
                str(tmp_path / "absent.tif"),
                "-o",
                str(tmp_path),
                "--model",
                str(tmp_path / "m"),
            ]
        )
        == EXIT_BAD_INPUT  # 3: bad input (2 is for usage errors)
    )
    assert "does not exist" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((20, 20, 3), np.uint8))
    assert (
        main(
            [
                "denoise",
                str(tmp_path / "rgb.tif"),
                "-o",
                str(tmp_path / "o"),
                "--model",
                str(tmp_path / "m"),
            ]
        )
        == EXIT_BAD_INPUT  # 3: bad input (2 is for usage errors)
    )
    assert "single-channel" in capsys.readouterr().err
    assert not (tmp_path / "o" / "rgb.tif").exists()
    assert (
        main(
            [
                "denoise",
                str(tmp_path / "rgb.tif"),
                "-o",
                str(tmp_path / "o"),
                "--model",
                "no-such-model",
            ]
        )
        == EXIT_BAD_INPUT  # 3: bad input (2 is for usage errors)
    )
    assert "No model named" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--help"], ["models"]])
def test_console_script(args):
    result = subprocess.run(
        [sys.executable, "-m", "napari_wgan_denoise.cli", *args], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_demo_uses_the_shipped_model(tmp_path, capsys):
    """The README's main job: the shipped default model on the bundled fluorescence sample."""
    from napari_wgan_denoise.models.families import default_model_for

    if default_model_for(1) is None:
        pytest.skip("no shipped gray model")
    assert main(["demo", "--sample", "fluorescence", "-o", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    before, after = (float(v) for v in out.split("PSNR ")[1].split(" dB")[0].split(" -> "))
    assert after > before + 3  # a real model really denoises
    denoised = tifffile.imread(tmp_path / "demo" / "fluorescence_denoised.tif")
    assert denoised.dtype == np.uint8 and denoised.shape == (256, 256)
    # running again never overwrites: a new numbered folder
    assert main(["demo", "--sample", "fluorescence", "-o", str(tmp_path / "demo")]) == 0
    assert (tmp_path / "demo-2" / "fluorescence_denoised.tif").is_file()


def test_shipped_models_load_and_fit_budget():
    from napari_wgan_denoise.models import model_entries

    shipped = [e for e in model_entries() if e.source == "shipped"]
    total = 0
    for entry in shipped:
        model = load_model(entry.path)
        size = entry.path.with_suffix(".safetensors").stat().st_size
        total += size
        assert size <= 8 * 2**20, entry.name
        assert model.card["training"]["iterations"] > 0 and model.card.get("modality")
    assert total <= 60 * 2**20


def test_denoise_zarr_store(tiny_gray, tmp_path, rng):
    """`wgan-denoise denoise` reads and writes zarr stores chunk by chunk."""
    zarr = pytest.importorskip("zarr")
    from napari_wgan_denoise import denoise

    save_model(tiny_gray, tmp_path / "m")
    stack = (rng.random((3, 40, 40)) * 3000).astype(np.uint16)
    store = zarr.open(
        str(tmp_path / "in.zarr"),
        mode="w",
        shape=stack.shape,
        chunks=(1, 40, 40),
        dtype=stack.dtype,
    )
    store[:] = stack
    assert (
        main(
            [
                "denoise",
                str(tmp_path / "in.zarr"),
                "-o",
                str(tmp_path / "out"),
                "--model",
                str(tmp_path / "m"),
                "-q",
            ]
        )
        == 0
    )
    result = np.asarray(zarr.open(str(tmp_path / "out" / "in.zarr"), mode="r")[:])
    np.testing.assert_array_equal(result, denoise(stack, tiny_gray))
