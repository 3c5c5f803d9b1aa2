"""fp32 vs bf16 autocast on this machine: training step time, inference s/MP and the PSNR
change, measured as ratios in one run (issue 14, deliverable 1).

Usage (from the repository root; one thread, like a training run)::

    OMP_NUM_THREADS=1 python -m benchmarks.precision --model gray-mse-fast \
        --model runs/zoo/gray-mse-checkpoints/last --clean ../shared/data/gray/set12 \
        --sigma 25 --json runs/precision.json

A ``--model`` is a registered name, a model file, or a training checkpoint (``.../last``).

Training: a generator step (forward, summed-MSE loss in fp32, backward, Adam) on a batch
of 32 patches of 64², and for one architecture a full WGAN-GP iteration (critic step with
the fp32 gradient penalty, then the generator step), with the trainer's own code.
Inference: ``evaluate`` on the clean folder with seeded Gaussian noise, once with
``NAPARI_WGAN_DENOISE_PRECISION=fp32`` and once with ``bf16``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from benchmarks.generator_study import checkpoint_model
from napari_wgan_denoise.benchmark import machine_info
from napari_wgan_denoise.evaluation import evaluate
from napari_wgan_denoise.inference.devices import PRECISION_ENV, cpu_has_bf16
from napari_wgan_denoise.training import TrainConfig, Trainer

ARCHS = {
    "unet K=32 (shipped -fast)": ("unet", {"features": 32, "bottleneck": 16}),
    "unet K=48": ("unet", {"features": 48, "bottleneck": 24}),
    "shuffle 12x64": ("shuffle", {"features": 64, "depth": 12}),
    "shuffle 16x80": ("shuffle", {"features": 80, "depth": 16}),
    "shuffle 16x64, noise level (shipped gray, cells)": (
        "shuffle",
        {"features": 64, "depth": 16, "noise_level": True},
    ),
}


class _Random:
    """A patch source of random images (timing only)."""

    channels = 1
    normalisation = {"mode": "percentile", "low": 0.1, "high": 99.9}

    def sample(self, batch, patch, generator):
        clean = torch.rand((batch, 1, patch, patch), generator=generator)
        return clean + 0.1 * torch.randn(clean.shape, generator=generator), clean

    def validation_pairs(self):
        return []

    def describe(self):
        return {"kind": "random"}


def step_time(
    arch: str,
    config: dict,
    precision: str,
    loss: str = "mse",
    steps: int = 6,
    channels_last: bool = True,
) -> float:
    """Median CPU seconds of one training iteration (after two warm-up steps). CPU time of
    this one-thread process, not wall time, so the ratio holds on a loaded machine.
    ``channels_last=False`` times the trainer with its tensors in the default (NCHW) layout,
    as it ran before it switched to channels-last on the CPU."""
    cfg = TrainConfig(
        architecture=arch,
        arch_config=config,
        critic_config={"features": 32, "max_features": 256},
        loss=loss,
        iterations=steps + 2,
        batch_size=32,
        patch_size=64,
        precision=precision,
        lr=1e-4,
    )
    trainer = Trainer(cfg, _Random())
    if not channels_last:
        trainer.set_channels_last(False)
    times = []
    for _ in range(steps + 2):
        t = time.process_time()
        trainer.step()
        times.append(time.process_time() - t)
    times = sorted(times[2:])
    return times[len(times) // 2]


def cpu_s_per_mp(model: object, size: int = 1024) -> float:
    """CPU seconds per megapixel of ``denoise`` on one thread (after a warm-up)."""
    import numpy as np

    from napari_wgan_denoise import denoise

    img = np.random.default_rng(0).normal(100, 20, (size, size)).astype(np.float32)
    denoise(img[:256, :256], model)
    t = time.process_time()
    denoise(img, model)
    return (time.process_time() - t) / (size * size / 1e6)


def main() -> None:
    """Measure and print a markdown table (and optionally a JSON file)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", action="append", default=[])
    ap.add_argument("--clean", default="../shared/data/gray/set12")
    ap.add_argument("--sigma", type=float, default=25.0)
    ap.add_argument("--json")
    ap.add_argument("--skip-training", action="store_true")
    args = ap.parse_args()
    result = {
        "machine": machine_info(),
        "cpu_has_bf16": cpu_has_bf16(),
        "training": [],
        "inference": [],
    }
    print(f"CPU native bf16: {cpu_has_bf16()}; threads: {torch.get_num_threads()}")
    if not args.skip_training:
        print(
            "\n| training step (32 x 64², one thread) | fp32 NCHW | fp32 | bf16 NCHW | bf16 "
            "| bf16 over fp32 | channels-last, bf16 |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        rows = [(n, a, c, "mse") for n, (a, c) in ARCHS.items()]
        rows.append(
            ("shuffle 12x64, WGAN-GP iteration", "shuffle", ARCHS["shuffle 12x64"][1], "wgan")
        )
        for name, arch, cfg, loss in rows:
            fp32_nchw = step_time(arch, cfg, "fp32", loss, channels_last=False)
            fp32 = step_time(arch, cfg, "fp32", loss)
            bf16_nchw = step_time(arch, cfg, "bf16", loss, channels_last=False)
            bf16 = step_time(arch, cfg, "bf16", loss)
            result["training"].append(
                {
                    "name": name,
                    "fp32_nchw_s": fp32_nchw,
                    "fp32_s": fp32,
                    "bf16_nchw_s": bf16_nchw,
                    "bf16_s": bf16,
                }
            )
            print(
                f"| {name} | {fp32_nchw:.3f} | {fp32:.3f} | {bf16_nchw:.3f} | {bf16:.3f} "
                f"| {fp32 / bf16:.2f}x | {bf16_nchw / bf16:.2f}x |",
                flush=True,
            )
    print(
        f"\n| model ({args.clean}, σ {args.sigma:g}) | PSNR fp32 | PSNR bf16 | Δ dB "
        "| CPU-s/MP fp32 | CPU-s/MP bf16 |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    old = os.environ.get(PRECISION_ENV)
    try:
        for name in args.model:
            model = name
            if os.path.exists(f"{name}.json") and os.path.exists(f"{name}.safetensors"):
                with open(f"{name}.json") as fh:
                    if "iteration" in json.load(fh):  # a training checkpoint
                        model = checkpoint_model(Path(name))[0]
            rows = {}
            for precision in ("fp32", "bf16"):
                os.environ[PRECISION_ENV] = precision
                evaluate(
                    [model], clean=args.clean, sigma=args.sigma, notify=lambda m: None
                )  # warm-up
                rows[precision] = evaluate([model], clean=args.clean, sigma=args.sigma)[0]
                rows[precision]["cpu_s_per_mp"] = cpu_s_per_mp(model)
            a, b = rows["fp32"], rows["bf16"]
            result["inference"].append({"model": name, "fp32": a, "bf16": b})
            print(
                f"| {name} | {a['psnr']:.3f} | {b['psnr']:.3f} | {b['psnr'] - a['psnr']:+.3f} | "
                f"{a['cpu_s_per_mp']:.2f} | {b['cpu_s_per_mp']:.2f} |",
                flush=True,
            )
    finally:
        if old is None:
            os.environ.pop(PRECISION_ENV, None)
        else:
            os.environ[PRECISION_ENV] = old
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
