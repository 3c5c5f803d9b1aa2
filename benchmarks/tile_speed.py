"""Median s/MP of denoise() by CPU tile size and batch (docs/benchmarks.md §7j).

OMP_NUM_THREADS=2 python3 benchmarks/tile_speed.py
"""

from __future__ import annotations

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


def main() -> None:
    torch.set_num_threads(2)
    models = {n: load_model(n) for n in ("cells-wgan-fast", "gray-wgan-fast")}
    for size in (1024, 2048):
        for name, model in models.items():
            img = synthetic_image(size, size, model.channels)
            row = []
            for tile in (384, 512, 768, 1024):
                for batch in (1, None):
                    value = _s_per_mp(img, model, tile_size=tile, batch_size=batch)
                    row.append(f"tile {tile} / batch {batch or 'auto'}: {value:.3f}")
            print(size, name, "; ".join(row), flush=True)


if __name__ == "__main__":
    main()
