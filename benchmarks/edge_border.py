"""How a plane's edges are padded before the network sees them (docs/benchmarks.md §7j).

Runs the shipped models on the held-out sets with the outer mirror padding at the full
overlap (the behaviour before 2026-12-06), 16, 8, 4 and 0 pixels (EDGE_BORDER, the
default now), and prints the mean PSNR and the wall time of each. Usage, from the
repository root:

    OMP_NUM_THREADS=1 python3 benchmarks/edge_border.py --threads 1
"""

from __future__ import annotations

import argparse
import glob
import importlib
import time

import numpy as np
import skimage.io
import torch

from napari_wgan_denoise.models.registry import load_model

DATA = "../shared/data"
BORDERS = (None, 16, 8, 4, 0)


def _psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    return float(10 * np.log10(peak**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def _sets() -> dict[str, list[np.ndarray] | list[tuple[np.ndarray, np.ndarray]]]:
    cells = sorted(glob.glob(f"{DATA}/cells/cellavision_train/*.png"))[-12:]
    gray = sorted(glob.glob(f"{DATA}/gray/set12/*.png"))
    fmd = []
    for fov in ("3", "11"):
        gt = skimage.io.imread(f"{DATA}/fluo/fmd_confocal_bpae_b/gt/{fov}/avg50.png")
        for raw in sorted(glob.glob(f"{DATA}/fluo/fmd_confocal_bpae_b/raw/{fov}/*.png"))[:5]:
            fmd.append((skimage.io.imread(raw).astype(np.float32), gt.astype(np.float32)))
    return {
        "cells": [skimage.io.imread(f)[..., :3].astype(np.float32) for f in cells],
        "gray": [skimage.io.imread(f).astype(np.float32) for f in gray],
        "fmd": fmd,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    module = importlib.import_module("napari_wgan_denoise.inference.denoise")
    sets = _sets()
    jobs = [
        ("cells-wgan-fast", "cells", 25),
        ("cells-wgan-fast", "cells", 50),
        ("gray-mse-fast", "gray", 25),
        ("gray-mse-fast", "gray", 50),
        ("fluo-wgan-fast", "fmd", None),
        ("gray-mse-fast", "fmd", None),
    ]
    for name, data, sigma in jobs:
        model = load_model(name)
        if data == "fmd":
            pairs = sets["fmd"]
        else:
            pairs = [
                (c + sigma * np.random.default_rng([0, i]).standard_normal(c.shape), c)
                for i, c in enumerate(sets[data])
            ]
        row = []
        for border in BORDERS:
            module.EDGE_BORDER = border  # None: the full overlap
            scores, wall = [], 0.0
            for noisy, clean in pairs:
                value_range = None if data == "fmd" else (0.0, 255.0)
                start = time.perf_counter()
                out = module.denoise(noisy.astype(np.float32), model, value_range=value_range)
                wall += time.perf_counter() - start
                scores.append(_psnr(out, clean))
            label = "overlap" if border is None else border
            row.append(f"{label}: {np.mean(scores):.3f} dB ({wall:.1f} s)")
        print(f"{name} {data} σ {sigma}: " + " | ".join(row), flush=True)


if __name__ == "__main__":
    main()
