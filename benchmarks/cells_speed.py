"""Seconds per megapixel of a cells model on the held-out CellaVision images (077-088, σ 25)
one call per image, and on 1024² and 2048² mosaics of them: the speed target of issue 14
(≤ 1 s/MP on 2 cores) on the images it is about. For an A/B of two versions of the
package, run it alternately from two checkouts in one session (docs/benchmarks.md §7s):

    git worktree add /tmp/before 963bb1d
    for r in 1 2 3; do for s in /tmp/before/src src; do
        PYTHONPATH=$s OMP_NUM_THREADS=2 python3 benchmarks/cells_speed.py; done; done
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import skimage.io
import torch

from napari_wgan_denoise import denoise
from napari_wgan_denoise.models.registry import load_model

DATA = Path("../shared/data/cells/cellavision_train")


def images(sigma: float = 25.0, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """The noisy test sets by name: the 12 images, and the 1024² and 2048² mosaics."""
    rng = np.random.default_rng(seed)
    files = sorted(DATA.glob("*.png"))[-12:]
    clean = [skimage.io.imread(f)[..., :3].astype(np.float32) for f in files]
    noisy = [c + rng.normal(0, sigma, c.shape).astype(np.float32) for c in clean]
    rows = [np.concatenate(noisy[r * 4 : (r + 1) * 4], 1) for r in range(3)]
    big = np.tile(np.concatenate(rows, 0), (3, 2, 1))[:2048, :2048].copy()
    return {"cellavision": noisy, "1024": [big[:1024, :1024].copy()], "2048": [big]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="cells-wgan-fast")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--overlap",
        type=int,
        default=None,
        help="tile overlap, context + blend (default: the model's)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    sets = images()
    denoise(sets["cellavision"][0], model, value_range=(0, 255))  # warm-up
    line = []
    for name, batch in sets.items():
        mp = sum(i.shape[0] * i.shape[1] for i in batch) / 1e6
        start = time.perf_counter()
        for image in batch:
            denoise(image, model, value_range=(0, 255), overlap=args.overlap)
        line.append(f"{name} {(time.perf_counter() - start) / mp:.3f}")
    overlap = "" if args.overlap is None else f" (overlap {args.overlap} px)"
    print(f"{args.model}{overlap}: " + "  ".join(line) + " s/MP")


if __name__ == "__main__":
    main()
