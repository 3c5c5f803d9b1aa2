"""Median s/MP of denoise() by CPU tile size and batch (docs/benchmarks.md §7j, §7z).

OMP_NUM_THREADS=2 python3 benchmarks/tile_speed.py
OMP_NUM_THREADS=2 python3 benchmarks/tile_speed.py --tiles 512,576,640 --batch 1 --sizes 1024,2048
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_wgan_denoise import denoise
from napari_wgan_denoise.benchmark import synthetic_image
from napari_wgan_denoise.models.registry import load_model


def _s_per_mp(img: np.ndarray, model, **options) -> float:
    denoise(img, model, **options)  # warm-up
    times = []
    for _ in range(5):
        start = time.perf_counter()
        denoise(img, model, **options)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) / (img.shape[0] * img.shape[1] / 1e6)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="cells-wgan-fast,gray-wgan-fast")
    ap.add_argument("--sizes", type=_ints, default=[1024, 2048], help="plane sides, e.g. 1024,2048")
    ap.add_argument("--tiles", type=_ints, default=[384, 512, 768, 1024])
    ap.add_argument(
        "--batch", type=int, default=None, help="tiles per batch (default: 1 and auto, both)"
    )
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = {n: load_model(n) for n in args.models.split(",")}
    batches = (1, None) if args.batch is None else (args.batch,)
    for size in args.sizes:
        for name, model in models.items():
            img = synthetic_image(size, size, model.channels)
            row = []
            for tile in args.tiles:
                for batch in batches:
                    value = _s_per_mp(img, model, tile_size=tile, batch_size=batch)
                    row.append(f"tile {tile} / batch {batch or 'auto'}: {value:.3f}")
            print(size, name, "; ".join(row), flush=True)


if __name__ == "__main__":
    main()
