"""``evaluate`` and the ``wgan-denoise evaluate`` command on tiny generated test sets."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import skimage.io
import tifffile

from napari_wgan_denoise import create_model, denoise, save_model
from napari_wgan_denoise.cli.evaluate import main_for_tests
from napari_wgan_denoise.evaluation import evaluate
from napari_wgan_denoise.metrics import psnr

SIZE = 48
N_IMAGES = 3


def _pattern(k: int, rgb: bool = False) -> np.ndarray:
    """A smooth 8-bit image (gradients and slow waves) in roughly 30..220."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    img = 0.5 + 0.25 * np.sin(2 * np.pi * (x * (k + 1) + 0.5 * y)) + 0.15 * (x - y)
    if rgb:
        img = np.stack([img, img[::-1], 0.5 * (img + img.T)], axis=-1)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def _write_folder(folder, rgb: bool = False, n: int = N_IMAGES):
    folder.mkdir()
    images = {}
    for k in range(n):
        images[f"img{k}"] = _pattern(k, rgb)
        skimage.io.imsave(folder / f"img{k}.png", images[f"img{k}"], check_contrast=False)
    return images


@pytest.fixture
def clean_dir(tmp_path):
    _write_folder(tmp_path / "clean")
    return tmp_path / "clean"


@pytest.fixture
def identity():
    """An SRResNet whose last conv is zero at init: its output is its input."""
    return create_model("srresnet", n_blocks=1, features=8)


@pytest.fixture
def identity_path(identity, tmp_path):
    save_model(identity, tmp_path / "ident")
    return str(tmp_path / "ident.safetensors")


def _run_json(argv, capsys):
    assert main_for_tests(argv) == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.strip().splitlines()
    return [json.loads(line) for line in lines]


def test_json_lines_keys_and_types(identity_path, clean_dir, capsys):
    rows = _run_json(
        [
            "evaluate",
            "--model",
            identity_path,
            "--clean",
            str(clean_dir),
            "--sigma",
            "25",
            "--baseline",
            "nlm",
            "--include-noisy",
            "--json",
            "-q",
        ],
        capsys,
    )
    assert [r["model"] for r in rows] == ["noisy", "ident", "nlm"]
    for r in rows:
        assert {"model", "n", "psnr", "ssim", "grad_ratio", "s_per_mp"} <= set(r)
        assert isinstance(r["model"], str) and r["n"] == N_IMAGES
        for key in ("psnr", "ssim", "grad_ratio", "noisy_psnr"):
            assert isinstance(r[key], float) and np.isfinite(r[key])
        assert r["mode"] == "gaussian" and r["sigma"] == 25.0 and r["seed"] == 0
    assert rows[0]["s_per_mp"] is None
    assert all(isinstance(r["s_per_mp"], float) and r["s_per_mp"] > 0 for r in rows[1:])


def test_table_output(identity_path, clean_dir, capsys):
    argv = ["evaluate", "--model", identity_path, "--clean", str(clean_dir), "--sigma", "25"]
    assert main_for_tests([*argv, "-q"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[1].split()
    assert header == ["model", "n", "PSNR", "SSIM", "grad", "ratio", "s/MP"]
    assert "input PSNR 20." in out and "ident" in out


def test_identity_model_scores_like_the_noisy_input(identity, clean_dir):
    rows = evaluate([identity], clean=clean_dir, sigma=25, include_noisy=True, device="cpu")
    noisy, ident = rows
    assert noisy["kind"] == "noisy" and ident["kind"] == "model"
    assert abs(noisy["psnr"] - 20.17) < 0.3  # 10 log10(255² / 25²)
    assert ident["psnr"] == pytest.approx(noisy["psnr"], abs=1e-4)
    assert ident["psnr"] == pytest.approx(ident["noisy_psnr"], abs=1e-4)
    assert ident["ssim"] == pytest.approx(noisy["ssim"], abs=1e-5)
    assert ident["grad_ratio"] == pytest.approx(noisy["grad_ratio"], rel=1e-5)
    assert ident["grad_ratio"] > 1.5  # noise is much "sharper" than these smooth images


def test_noise_follows_the_protocol(clean_dir):
    """N(0, σ²) on the 0-255 scale, float, unclipped, from default_rng([seed, index])."""
    rows = evaluate([], clean=clean_dir, sigma=30, seed=7, include_noisy=True, per_image=True)
    got = [im["psnr"] for im in rows[0]["images"]]
    want = []
    for i in range(N_IMAGES):
        ref = _pattern(i)
        noise = np.random.default_rng([7, i]).standard_normal(ref.shape)
        want.append(psnr(ref, (ref + 30.0 * noise).astype(np.float32), peak=255))
    assert got == pytest.approx(want, abs=1e-9)
    assert [im["name"] for im in rows[0]["images"]] == [f"img{i}.png" for i in range(N_IMAGES)]


def test_seed_reproducible(tiny_gray, clean_dir):
    def run(seed):
        rows = evaluate([tiny_gray], clean=clean_dir, sigma=25, seed=seed, baselines=["nlm"])
        return [{k: v for k, v in r.items() if k != "s_per_mp"} for r in rows]

    a, b, c = run(0), run(0), run(1)
    assert a == b
    assert a[0]["psnr"] != c[0]["psnr"] and a[1]["psnr"] != c[1]["psnr"]
    assert a[0]["noisy_psnr"] != c[0]["noisy_psnr"]


def test_limit_and_last_keep_each_images_noise(clean_dir):
    full = evaluate([], clean=clean_dir, sigma=25, include_noisy=True, per_image=True)
    first = evaluate([], clean=clean_dir, sigma=25, include_noisy=True, per_image=True, limit=1)
    last = evaluate([], clean=clean_dir, sigma=25, include_noisy=True, per_image=True, last=2)
    assert first[0]["n"] == 1 and last[0]["n"] == 2
    assert first[0]["images"] == full[0]["images"][:1]
    assert last[0]["images"] == full[0]["images"][1:]


def test_fixed_scale_model_gets_the_8bit_value_range(tiny_gray, clean_dir):
    """A model trained on 8-bit data at a fixed 0..255 scale sees the float noisy input on
    that scale (values below 0 and above 255 included), as ``denoise`` would map a uint8
    file, not stretched by percentiles."""
    tiny_gray.card["normalisation"] = {"mode": "fixed", "low": 0, "high": 255, "dtypes": ["uint8"]}
    rows = evaluate([tiny_gray], clean=clean_dir, sigma=25, per_image=True, limit=1)
    ref = _pattern(0)
    noisy = (ref + 25.0 * np.random.default_rng([0, 0]).standard_normal(ref.shape)).astype(
        np.float32
    )
    fixed = denoise(noisy, tiny_gray, value_range=(0, 255), device="cpu")
    stretched = denoise(noisy, tiny_gray, device="cpu")
    got = rows[0]["images"][0]["psnr"]
    assert got == pytest.approx(psnr(ref, fixed, peak=255), abs=1e-6)
    assert got != pytest.approx(psnr(ref, stretched, peak=255), abs=1e-3)


def test_non_8bit_reference_uses_its_range(tmp_path):
    folder = tmp_path / "u16"
    folder.mkdir()
    for k in range(2):
        tifffile.imwrite(folder / f"s{k}.tif", _pattern(k).astype(np.uint16) * 40 + 100)
    rows = evaluate([], clean=folder, sigma=25, include_noisy=True)
    assert abs(rows[0]["noisy_psnr"] - 20.17) < 0.3


def test_paired_mode_matches_by_name(identity, tmp_path, capsys):
    clean = _write_folder(tmp_path / "clean")
    noisy_dir = tmp_path / "noisy"
    noisy_dir.mkdir()
    rng = np.random.default_rng(3)
    expected = []
    for name in sorted(clean, reverse=True):  # written in another order and as TIFF
        ref = clean[name]
        noisy = np.clip(ref + rng.normal(0, 20, ref.shape), 0, 255).astype(np.uint8)
        tifffile.imwrite(noisy_dir / f"{name}.tif", noisy)
        expected.append(psnr(ref, noisy, peak=255))
    rows = evaluate(
        [identity], clean=tmp_path / "clean", noisy=noisy_dir, baselines=["nlm"], notify=print
    )
    assert "estimate_sigma" in capsys.readouterr().out
    ident, nlm = rows
    assert ident["mode"] == "paired" and ident["sigma"] is None and ident["n"] == N_IMAGES
    assert ident["noisy_psnr"] == pytest.approx(np.mean(expected), abs=1e-9)
    assert ident["psnr"] == pytest.approx(ident["noisy_psnr"], abs=1e-4)
    assert nlm["psnr"] > ident["noisy_psnr"] + 2 and nlm["sigma_est"] > 5

    (noisy_dir / "img0.tif").rename(noisy_dir / "other.tif")
    with pytest.raises(
        ValueError, match=r"only in the noisy folder: other\.tif; only in the clean folder: img0"
    ):
        evaluate([identity], clean=tmp_path / "clean", noisy=noisy_dir)
    argv = ["evaluate", "--clean", str(tmp_path / "clean"), "--noisy", str(noisy_dir)]
    assert main_for_tests([*argv, "--baseline", "nlm", "-q"]) == 2
    assert "other.tif" in capsys.readouterr().err


def test_nlm_beats_the_noisy_input(clean_dir):
    nlm = evaluate([], clean=clean_dir, sigma=25, baselines=["nlm"])[0]
    assert nlm["model"] == "nlm" and nlm["kind"] == "baseline"
    assert nlm["psnr"] > nlm["noisy_psnr"] + 5
    assert nlm["ssim"] > 0.5 and nlm["grad_ratio"] < 1.5


def test_bm3d_when_installed(clean_dir):
    pytest.importorskip("bm3d")
    rows = evaluate([], clean=clean_dir, sigma=25, baselines=["bm3d", "nlm"], limit=2)
    bm3d_row, nlm_row = rows
    assert bm3d_row["model"] == "bm3d" and bm3d_row["n"] == 2
    assert bm3d_row["psnr"] > bm3d_row["noisy_psnr"] + 5
    assert bm3d_row["psnr"] > nlm_row["psnr"] - 1.0


def test_missing_baseline_package_is_skipped_with_a_note(clean_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "bm3d", None)  # makes `import bm3d` fail
    notes = []
    rows = evaluate([], clean=clean_dir, sigma=25, baselines=["bm3d", "nlm"], notify=notes.append)
    assert [r["model"] for r in rows] == ["nlm"]
    assert any("bm3d" in n and "pip install bm3d" in n for n in notes)


def test_rgb_data(tiny_rgb, tiny_gray, tmp_path, capsys):
    _write_folder(tmp_path / "rgb", rgb=True, n=2)
    rows = evaluate([tiny_rgb], clean=tmp_path / "rgb", sigma=25, baselines=["nlm"])
    assert [r["n"] for r in rows] == [2, 2]
    assert rows[1]["psnr"] > rows[1]["noisy_psnr"] + 3

    save_model(tiny_gray, tmp_path / "graymodel")
    with pytest.raises(ValueError, match=r"'graymodel' is a gray .*img0\.png.* RGB"):
        evaluate([str(tmp_path / "graymodel")], clean=tmp_path / "rgb", sigma=25)
    save_model(tiny_rgb, tmp_path / "rgbmodel")
    _write_folder(tmp_path / "gray", n=1)
    argv = ["evaluate", "--model", str(tmp_path / "rgbmodel"), "--clean", str(tmp_path / "gray")]
    assert main_for_tests([*argv, "--sigma", "25", "-q"]) == 2
    err = capsys.readouterr().err
    assert "'rgbmodel' is an RGB model" in err and "img0.png" in err


def test_bad_input_is_reported(identity_path, clean_dir, tmp_path, capsys):
    base = ["evaluate", "--model", identity_path, "-q"]
    (tmp_path / "empty").mkdir()
    cases = [
        ([*base, "--clean", str(tmp_path / "empty"), "--sigma", "25"], "holds no images"),
        ([*base, "--clean", str(tmp_path / "absent"), "--sigma", "25"], "does not exist"),
        ([*base, "--clean", str(clean_dir)], "--sigma"),
        ([*base, "--clean", str(clean_dir), "--sigma", "25", "--noisy", str(clean_dir)], "not"),
        ([*base, "--clean", str(clean_dir), "--sigma", "-5"], "positive"),
        ([*base, "--clean", str(clean_dir), "--sigma", "25", "--limit", "0"], "at least 1"),
        ([*base, "--clean", str(clean_dir), "--sigma", "25", "--baseline", "bm4d"], "bm4d"),
        (["evaluate", "--clean", str(clean_dir), "--sigma", "25"], "Nothing to evaluate"),
        ([*base[:3], "--clean", str(clean_dir), "--sigma", "25", "--model", "nope"], "nope"),
    ]
    for argv, message in cases:
        assert main_for_tests(argv) == 2, argv
        assert message in capsys.readouterr().err, argv

    with pytest.raises(ValueError, match="not both and not neither"):
        evaluate([identity_path], clean=clean_dir)
    with pytest.raises(ValueError, match="not both"):
        evaluate([identity_path], clean=clean_dir, sigma=25, noisy=clean_dir)
    with pytest.raises(ValueError, match="Unknown baseline"):
        evaluate([], clean=clean_dir, sigma=25, baselines=["median"])
