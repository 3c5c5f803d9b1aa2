"""The benchmark harness: FLOP counting, peak memory, the report and the CLI (tiny inputs)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from napari_wgan_denoise import create_model, save_model
from napari_wgan_denoise.benchmark import (
    REFERENCE_MODELS,
    PeakRSS,
    flops_per_pixel,
    format_markdown,
    matmul_gflops,
    resolve_models,
    run_benchmark,
    tile_overhead,
)
from napari_wgan_denoise.cli.benchmark import main
from napari_wgan_denoise.cli.benchmark import register as register_cli

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["model", "params", "MFLOP/px", "image", "s/MP", "MP/s", "GFLOP/s", "peak MB"]


def test_flops_count_convolutions_at_their_resolution():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 2, 3, stride=2, padding=1))
    # 2*1*4*9 at full resolution + 2*4*2*9 at a quarter of the positions
    assert flops_per_pixel(net, channels=1) == pytest.approx(72 + 36)


def test_flops_of_the_architectures():
    srresnet = create_model("srresnet", n_blocks=2, features=16).network
    conv16 = 2 * 16 * 16 * 9
    head_tail = 2 * 1 * 16 * 9
    assert flops_per_pixel(srresnet) == pytest.approx(2 * head_tail + (4 + 1 + 2) * conv16)
    # U-Net K=8, b=2: convs at full, half and quarter resolution, plus 1x1 projections
    unet = create_model("unet", features=8, bottleneck=2).network
    full = 18 * (1 * 8 + 8 * 8 + 8 * 8 + 8 * 8 + 8 * 1) + 2 * 8 * 1
    half = 18 * (8 * 8 + 8 * 8 + 4 * 8 + 8 * 8) + 2 * 4 * 8
    quarter = 18 * (8 * 4 + 4 * 2 + 2 * 4) + 2 * 2 * 4
    assert flops_per_pixel(unet) == pytest.approx(full + half / 4 + quarter / 16)


def test_tiles_are_balanced():
    """A plane a little larger than one tile is not run as several full tiles."""
    import torch

    net = create_model("unet", features=32, bottleneck=16).network
    cpu = torch.device("cpu")
    for side, most in ((1024, 1.4), (2048, 1.3), (4096, 1.25)):
        assert 1 <= tile_overhead(net, side, side, cpu, 1024) < most


def test_peak_rss_sees_a_transient_allocation():
    import mmap

    with PeakRSS() as peak:
        # fresh pages from the kernel, touched and returned: a numpy array could reuse
        # memory that earlier tests left resident in the allocator and raise no peak
        block = mmap.mmap(-1, 40_000_000)
        block.write(b"\1" * 40_000_000)
        block.close()
    assert peak.extra >= 30_000_000
    assert peak.method in ("vmhwm", "sampled")


def test_matmul_rate_is_positive():
    assert matmul_gflops(n=128, repeats=2) > 0


def test_reference_models_when_none_registered(monkeypatch):
    import napari_wgan_denoise.models.registry as registry

    monkeypatch.setattr(registry, "model_entries", lambda: [])
    named = resolve_models()
    assert [label for label, _ in named] == list(REFERENCE_MODELS)
    assert [m.architecture for _, m in named] == ["unet", "srresnet"]
    named = resolve_models(["x.safetensors"][:0], reference=True)
    assert [label for label, _ in named] == list(REFERENCE_MODELS)


@pytest.fixture
def tiny_path(tiny_unet, tmp_path):
    save_model(tiny_unet, tmp_path / "tiny")
    return str(tmp_path / "tiny.safetensors")


def test_harness_smoke(tiny_path, tmp_path, capsys):
    report = tmp_path / "bench.md"
    argv = ["--model", tiny_path, "--size", "64", "--repeats", "2", "--warmup", "1",
            "--threads", "1", "--no-matmul", "--append", str(report), "-q"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| model"))
    for col in COLUMNS:
        assert f"| {col} |" in header
    row = next(line for line in out.splitlines() if line.startswith(f"| {tiny_path}"))
    assert "64x64" in row
    text = report.read_text()
    assert "Command: `python -m benchmarks.run --model" in text and "Machine:" in text
    assert "torch" in text and "Load average" in text
    assert "inference in bf16" in text or "inference in fp32" in text
    assert main(argv) == 0  # a second run appends
    assert report.read_text().count("### Benchmark") == 2


def test_harness_quality_and_json(tiny_path, tmp_path, capsys, rng):
    import skimage.io

    clean = tmp_path / "clean"
    clean.mkdir()
    for k in range(2):
        skimage.io.imsave(clean / f"{k}.png", (rng.random((32, 40)) * 255).astype(np.uint8))
    argv = ["--model", tiny_path, "--size", "32x48", "--repeats", "1", "--warmup", "0",
            "--threads", "1", "--clean", str(clean), "--sigma", "25", "--json", "-q"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    (row,) = result["rows"]
    assert row["size"] == [32, 48] and row["n"] == 2
    assert np.isfinite(row["psnr"]) and 0 < row["ssim"] <= 1
    assert row["s_per_mp"] > 0 and row["mp_per_s"] == pytest.approx(1 / row["s_per_mp"])
    assert row["gflops_executed"] >= row["gflops"] > 0 and row["tile_overhead"] >= 1
    assert "PSNR" in format_markdown(result)
    assert main(["--clean", str(clean), "--size", "32"]) == 2  # --clean needs --sigma/--noisy


def test_run_benchmark_api(tiny_unet):
    result = run_benchmark([tiny_unet], size=(32, 32), repeats=1, warmup=0, matmul=256)
    (row,) = result["rows"]
    assert result["matmul_gflops"] > 0 and row["roof_fraction"] > 0
    assert result["machine"]["cpu"] and result["machine"]["torch_threads"] >= 1


def test_tta_is_timed_and_scored_with_its_passes(tiny_path, tmp_path, capsys, rng):
    """``--tta`` times the averaged model (its FLOPs count every pass) and scores it: the
    averaged output differs from the plain one on an asymmetric network."""
    import skimage.io

    clean = tmp_path / "clean"
    clean.mkdir()
    skimage.io.imsave(clean / "0.png", (rng.random((32, 40)) * 255).astype(np.uint8))
    rows = {}
    for extra in ([], ["--tta"], ["--tta", "4"]):
        argv = ["--model", tiny_path, "--size", "32", "--repeats", "1", "--warmup", "0",
                "--threads", "1", "--no-matmul", "--clean", str(clean), "--sigma", "25",
                "--json", "-q", *extra]  # fmt: skip
        assert main(argv) == 0
        (row,) = json.loads(capsys.readouterr().out)["rows"]
        rows[row["tta"]] = row
    assert sorted(rows) == [1, 4, 8]
    assert rows[8]["mflop_per_px"] == pytest.approx(8 * rows[1]["mflop_per_px"])
    assert rows[8]["psnr"] != rows[1]["psnr"]
    assert main(["--model", tiny_path, "--tta", "3", "--size", "32", "-q"]) == 2


def test_cli_subcommand(tiny_path, capsys):
    parser = argparse.ArgumentParser(prog="wgan-denoise")
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "benchmark",
            "--model",
            tiny_path,
            "--size",
            "32",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--no-matmul",
            "-q",
        ]  # fmt: skip
    )
    assert args.func(args) == 0
    assert "| model |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["benchmark", "--size", "3x"])


def test_scripts_import_and_memory_case(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    import benchmarks.memory as memory
    import benchmarks.run as run

    assert run.main is main
    assert memory.case_shape("stack", quick=True) == (5, 2048, 2048)
    assert memory.case_shape("image") == (4096, 4096)
    # in this process (the script runs each case in a fresh subprocess)
    row = memory.run_child("stack", False, None, 1, planes=2, side=64)
    assert row["shape"] == [2, 64, 64] and row["peak_rss"] >= row["rss_before"] > 0
    assert row["extra_bytes"] < 1.5e9
    assert "| stack | 2x64x64 uint16 |" in memory.format_rows([row], 1.5)


def test_report_says_whether_convolutions_were_fused(tiny_path, monkeypatch, capsys):
    import torch

    from napari_wgan_denoise.inference.devices import use_bf16
    from napari_wgan_denoise.inference.optimise import FUSION_ENV, fusion_works

    argv = ["--model", tiny_path, "--size", "32", "--repeats", "1", "--warmup", "0",
            "--threads", "1", "--no-matmul"]  # fmt: skip
    monkeypatch.setenv(FUSION_ENV, "0")
    assert main(argv) == 0
    assert "fused convolutions" not in capsys.readouterr().out
    monkeypatch.delenv(FUSION_ENV)
    assert main(argv) == 0
    dtype = torch.bfloat16 if use_bf16(torch.device("cpu")) else torch.float32
    assert ("with fused convolutions" in capsys.readouterr().out) == fusion_works(dtype)
