"""The shuffle models' first convolution in fp32 under bf16 autocast: PSNR and speed against
the whole network in bf16 and in fp32, through ``denoise`` itself (tiling, fused
convolutions), in one run (docs/benchmarks.md §7v).

OMP_NUM_THREADS=2 python3 benchmarks/head_precision.py

Quality: the seeded validation inputs of ``zoo_eval`` (CellaVision 077-088 at σ 25/35/50,
Set12 at σ 25/50). Speed: a 1024² crop of each modality's data, the variants taken in turn,
the median of ``--repeats`` calls.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from napari_wgan_denoise import denoise
from napari_wgan_denoise.evaluation.samples import _samples
from napari_wgan_denoise.metrics import psnr
from napari_wgan_denoise.models.registry import load_model

DATA = Path("../shared/data")
SETS = {
    "cells-mse-fast": (DATA / "cells/cellavision_train", (25, 35, 50), 12),
    "gray-mse-fast": (DATA / "gray/set12", (25, 50), None),
}
#: variant -> (the network's full_precision, denoise's precision)
VARIANTS = {
    "bf16, head bf16 (before)": ((), "bf16"),
    "bf16, head fp32 (now)": (("head",), "bf16"),
    "fp32": (("head",), "fp32"),
}


def _models(name: str) -> dict:
    """One loaded copy of the model per variant (each keeps its own prepared copy)."""
    models = {}
    for label, (full, _) in VARIANTS.items():
        model = load_model(name)
        model.network.full_precision = full
        models[label] = model
    return models


def quality(name: str) -> None:
    """Mean PSNR of each variant at each σ on the model's validation images."""
    folder, sigmas, last = SETS[name]
    models = _models(name)
    for sigma in sigmas:
        scores: dict[str, list[float]] = {label: [] for label in VARIANTS}
        for sample in _samples(folder, sigma, None, seed=0, limit=None, last=last):
            for label, (_, precision) in VARIANTS.items():
                out = denoise(
                    sample.noisy, models[label], precision=precision, value_range=(0, 255)
                )
                scores[label].append(psnr(sample.clean, out, peak=255.0))
        row = " | ".join(f"{np.mean(v):.3f}" for v in scores.values())
        print(f"| {name} | σ {sigma} | {row} |", flush=True)


def speed(name: str, repeats: int) -> None:
    """Median s/MP of each variant on a 1024² noisy image of the model's modality."""
    folder, _, _ = SETS[name]
    first = next(_samples(folder, 25, None, seed=0, limit=1, last=None)).noisy
    reps = -(-1024 // min(first.shape[:2]))
    tiles = (reps, reps, 1) if first.ndim == 3 else (reps, reps)
    image = np.tile(first, tiles)[:1024, :1024].copy()
    models = _models(name)
    times: dict[str, list[float]] = {label: [] for label in VARIANTS}
    for label, (_, precision) in VARIANTS.items():  # warm-up: prepared copies, oneDNN kernels
        denoise(image, models[label], precision=precision, value_range=(0, 255))
    for _ in range(repeats):
        for label, (_, precision) in VARIANTS.items():
            start = time.perf_counter()
            denoise(image, models[label], precision=precision, value_range=(0, 255))
            times[label].append(time.perf_counter() - start)
    row = " | ".join(f"{np.median(v) / 1.048576:.2f}" for v in times.values())
    print(f"| {name} | s/MP, 1024² | {row} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", choices=sorted(SETS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-speed", action="store_true")
    args = parser.parse_args()
    print("| model | set | " + " | ".join(VARIANTS) + " |")
    print("|---|---|" + "---:|" * len(VARIANTS))
    for name in args.model or sorted(SETS):
        quality(name)
        if not args.no_speed:
            speed(name, args.repeats)


if __name__ == "__main__":
    main()
