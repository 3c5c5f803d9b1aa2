"""How much context a tile needs: the shipped denoisers tiled with a given overlap against
their whole-image output, and the time each overlap costs (docs/benchmarks.md §7p).

For each model, a 1024² test image (scikit-image's astronaut for cells, camera for gray,
a 2 x 2 mosaic of FMD avg50 fields for fluo, all resized or tiled, with seeded noise) is
denoised once as one tile and then in 512 px tiles whose overlap is the full receptive
radius + blend (the default before §7p), 32 px and 24 px, and the default now. Printed:
the largest and the 99.99th-percentile difference from the one-tile output (0-255 scale),
the PSNR against the one-tile output and against the clean image. With ``--time`` also the
median s/MP of three calls per overlap, alternating. Usage, from the repository root:

    OMP_NUM_THREADS=1 python3 benchmarks/tile_context.py --threads 1
    OMP_NUM_THREADS=2 python3 benchmarks/tile_context.py --threads 2 --time   # quiet machine
"""

from __future__ import annotations

import argparse
import glob
import time

import numpy as np
import skimage.io
import torch
from skimage import data, transform

from napari_wgan_denoise import denoise
from napari_wgan_denoise.inference.tiling import BLEND, default_overlap, round_up
from napari_wgan_denoise.metrics import psnr
from napari_wgan_denoise.models.registry import load_model

FMD_GT = "../shared/data/fluo/fmd_confocal_bpae_b/gt/*/avg50.png"


def sample_images(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Clean and noisy 1024² images per shipped MSE/WGAN family (0-255 floats)."""
    size = (1024, 1024)
    astro = transform.resize(data.astronaut(), size, order=3, preserve_range=True)
    cam = transform.resize(data.camera(), size, order=3, preserve_range=True)
    images = {
        "cells-mse-fast": (astro, astro + rng.normal(0, 25, astro.shape)),
        "gray-mse-fast": (cam, cam + rng.normal(0, 25, cam.shape)),
    }
    fields = sorted(glob.glob(FMD_GT))[:4]
    if len(fields) == 4:
        f = [skimage.io.imread(p).astype(np.float64) for p in fields]
        fl = np.block([[f[0], f[1]], [f[2], f[3]]])
        noisy = rng.poisson(np.maximum(fl, 0) / 255 * 30) / 30 * 255 + rng.normal(0, 2.5, fl.shape)
        images["fluo-wgan-fast"] = (fl, noisy)
    return {k: (c.astype(np.float32), n.astype(np.float32)) for k, (c, n) in images.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--time", action="store_true", help="also time each overlap")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print("| model | overlap (px) | max diff | p99.99 diff | PSNR vs one tile | PSNR vs clean |")
    print("|---|---:|---:|---:|---:|---:|")
    timings = []
    for name, (clean, noisy) in sample_images(rng).items():
        model = load_model(name)
        net = model.network
        full = round_up(int(net.receptive_radius) + BLEND, int(net.size_multiple))
        now = default_overlap(net, 32)
        one = denoise(noisy, model, tile_size=2048, value_range=(0, 255))
        overlaps = sorted({full, 32, 24, now}, reverse=True)
        for overlap in overlaps:
            out = denoise(noisy, model, overlap=overlap, value_range=(0, 255))
            diff = np.abs(out - one)
            label = f"{overlap}" + (" (full radius)" if overlap == full else "")
            label += " (default)" if overlap == now else ""
            print(
                f"| {name} | {label} | {diff.max():.3f} | {np.quantile(diff, 0.9999):.3f} "
                f"| {psnr(one, out, peak=255.0):.1f} | {psnr(clean, out, peak=255.0):.3f} |"
            )
        if args.time:
            times: dict[int, list[float]] = {full: [], now: []}
            for _ in range(3):
                for overlap in times:
                    start = time.perf_counter()
                    denoise(noisy, model, overlap=overlap)
                    megapixels = noisy.shape[0] * noisy.shape[1] / 1e6
                    times[overlap].append((time.perf_counter() - start) / megapixels)
            for overlap, t in times.items():
                timings.append((name, overlap, float(np.median(t))))
    for name, overlap, s_per_mp in timings:
        print(f"{name}: overlap {overlap} px: {s_per_mp:.3f} s/MP (median of 3)")


if __name__ == "__main__":
    main()
