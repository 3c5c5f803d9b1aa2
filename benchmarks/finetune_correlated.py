"""Self-supervised fine-tuning on synthetic pixel-independent and correlated noise (issue 15).

Uses the synthetic Poisson-Gaussian test images that ``python -m benchmarks.zoo_eval
fluo`` writes (``runs/eval/fluo_synthetic_corr0`` and ``..._corr0.6``: neighbour
correlation 0 and 0.6, three 512² images with their clean originals). Fine-tunes ``BASE``
in self-supervised mode on the first two images (at the defaults, or with ``LOSS``), then
scores all three against their clean images before and after. Usage (from the repository
root; one thread, 0.5-2.5 minutes)::

    OMP_NUM_THREADS=1 python -m benchmarks.finetune_correlated corr0.6 fluo-wgan-fast [LOSS]
    OMP_NUM_THREADS=1 python -m benchmarks.finetune_correlated corr0.6 BASE --mode two-stage
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import tifffile
import torch

from napari_wgan_denoise import denoise, load_model
from napari_wgan_denoise.training.finetune import finetune


def main() -> None:
    """Print one JSON line: before, after, the loss used and the noise check."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kind", help="corr0, corr0.6, ...: the folder runs/eval/fluo_synthetic_KIND")
    ap.add_argument("base")
    ap.add_argument("loss", nargs="?", help="the self-supervised loss (default: the mode's)")
    ap.add_argument("--mode", default="self-supervised", choices=("self-supervised", "two-stage"))
    args = ap.parse_args()
    kind, base = args.kind, args.base
    options = {"ss_loss": args.loss} if args.loss else {}
    torch.set_num_threads(1)
    folder = f"runs/eval/fluo_synthetic_{kind}"
    noisy = [tifffile.imread(f"{folder}/noisy/{i}.tif").astype(np.float32) for i in range(3)]
    clean = [tifffile.imread(f"{folder}/clean/{i}.tif").astype(np.float32) for i in range(3)]

    def score(model) -> float:
        values = []
        for n, c in zip(noisy, clean):
            peak = float(c.max() - c.min())
            values.append(10 * np.log10(peak**2 / np.mean((denoise(n, model) - c) ** 2)))
        return float(np.mean(values))

    model = load_model(base)
    before, start = score(model), time.perf_counter()
    stack = np.stack([noisy[0][:512, :512], noisy[1][:512, :512]])
    tuned = finetune(model, stack, mode=args.mode, save=False, **options)
    card = tuned.card["finetune"]
    print(json.dumps({
        "noise": kind, "base": base, "mode": args.mode, "before": round(before, 2),
        "after": round(score(tuned), 2), "self_supervised": card["data"]["self_supervised"],
        "best_iteration": card["best_iteration"],
        "correlation": card["data"]["noise_check"]["correlation"],
        "wall_s": round(time.perf_counter() - start, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
