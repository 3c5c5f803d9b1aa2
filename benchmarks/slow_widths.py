"""Activation widths that oneDNN's bf16 convolutions run slowly, and what one-tile planes
of such widths cost before and after rounding them up (docs/benchmarks.md §7r).

OMP_NUM_THREADS=2 python3 benchmarks/slow_widths.py scan --low 60 --high 300
OMP_NUM_THREADS=2 python3 benchmarks/slow_widths.py plane   # run once per code version
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import skimage.io
import torch

from napari_wgan_denoise import denoise

SET12 = Path("../shared/data/gray/set12")


def scan(low: int, high: int, threshold: float) -> list[tuple[int, float]]:
    """Widths in [low, high) where one 3x3 64->64 bf16 convolution (channels-last, 128 rows)
    runs below ``threshold`` GFLOP/s."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last)
    slow = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for w in range(low, high):
            x = torch.randn(1, 64, 128, w).to(memory_format=torch.channels_last)
            conv(x)
            start = time.perf_counter()
            conv(x)
            conv(x)
            seconds = (time.perf_counter() - start) / 2
            rate = 2 * 9 * 64 * 64 * 128 * w / seconds / 1e9
            if rate < threshold:
                slow.append((w, round(rate)))
    return slow


def plane() -> None:
    """PSNR of gray-mse-fast on three one-tile crops of a Set12 mosaic at σ 25, and s/MP of a
    726² plane (a slow width at half resolution), each run as one 1024 px tile."""
    images = [skimage.io.imread(f).astype(np.float32) for f in sorted(SET12.glob("*.png"))]
    big = [image for image in images if image.shape[0] == 512]
    mosaic = np.block([[big[0], big[1]], [big[2], big[3]]])
    rng = np.random.default_rng(0)
    scores = []
    for size, offset in [(726, 0), (598, 100), (670, 250)]:
        ref = mosaic[offset : offset + size, offset : offset + size]
        noisy = ref + 25 * rng.standard_normal(ref.shape).astype(np.float32)
        out = denoise(noisy, "gray-mse-fast", tile_size=1024)
        scores.append(round(float(10 * np.log10(255**2 / np.mean((out - ref) ** 2))), 3))
    print("PSNR (726², 598², 670²):", scores)
    for model, shape in [("gray-wgan-fast", (726, 726)), ("cells-wgan-fast", (726, 726, 3))]:
        image = (rng.random(shape) * 255).astype(np.float32)
        denoise(image, model, tile_size=1024)  # warm-up
        times = []
        for _ in range(3):
            start = time.perf_counter()
            denoise(image, model, tile_size=1024)
            times.append(round((time.perf_counter() - start) / (726 * 726 / 1e6), 2))
        print(model, "726², s/MP:", times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("scan", help="slow widths of one convolution")
    s.add_argument("--low", type=int, default=60)
    s.add_argument("--high", type=int, default=300)
    s.add_argument("--threshold", type=float, default=200.0, help="GFLOP/s")
    sub.add_parser("plane", help="one-tile planes: PSNR and speed")
    args = parser.parse_args()  # threads: OMP_NUM_THREADS
    if args.what == "scan":
        print(scan(args.low, args.high, args.threshold))
    else:
        plane()


if __name__ == "__main__":
    main()
