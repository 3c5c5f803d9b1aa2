"""Seconds per megapixel of the shipped models against scikit-image's non-local means on the
same noisy images, interleaved image by image and repeated, so that a machine whose speed
drifts (a shared host) treats every method alike: the speed target of issue 14 (no slower
than NLM, ≤ 1 s/MP on 2 cores) as a ratio measured in one run (docs/benchmarks.md §7af).
``--switch winograd`` adds each model with NNPACK's Winograd convolutions off, beside the
default (they are on where the CPU's widest vectors are AVX2).

    OMP_NUM_THREADS=2 python3 benchmarks/speed_vs_nlm.py --switch winograd
    OMP_NUM_THREADS=2 python3 benchmarks/speed_vs_nlm.py --families cells --model cells=runs/zoo/c10
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import skimage.io
import torch

from napari_wgan_denoise import denoise
from napari_wgan_denoise.evaluation.methods import nlm01
from napari_wgan_denoise.inference.optimise import WINOGRAD_ENV
from napari_wgan_denoise.models.registry import load_model

DATA = Path("../shared/data")
#: Each family's held-out images (as zoo_eval uses them) and its models.
SETS = {
    "cells": (DATA / "cells/cellavision_train", -12, True, ("cells-mse-fast",)),
    "gray": (DATA / "gray/set12", 0, False, ("gray-mse-fast",)),
    "fluo": (DATA / "gray/set12", 0, False, ("fluo-mse-fast",)),  # any gray image: speed only
}


def _images(family: str, sigma: float, count: int) -> list[np.ndarray]:
    folder, start, rgb, _ = SETS[family]
    files = sorted(folder.glob("*.png"))[start:][:count]
    rng = np.random.default_rng(0)
    out = []
    for f in files:
        img = skimage.io.imread(f).astype(np.float32)
        img = img[..., :3] if rgb else (img if img.ndim == 2 else img[..., 0])
        out.append(img + rng.normal(0, sigma, img.shape).astype(np.float32))
    return out


def _nlm(image: np.ndarray, sigma: float) -> np.ndarray:
    """zoo_eval's NLM baseline on a 0-255 image."""
    return nlm01(image / 255.0, sigma / 255.0, image.ndim == 3)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", nargs="+", default=["cells", "gray", "fluo"])
    ap.add_argument("--images", type=int, default=4, help="images per family")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sigma", type=float, default=25.0)
    ap.add_argument("--switch", choices=("winograd",), default=None)
    ap.add_argument(
        "--model",
        action="append",
        default=[],
        help="FAMILY=MODEL (a name or a path), timed beside the family's shipped models",
    )
    args = ap.parse_args(argv)
    extra: dict[str, list[str]] = {}
    for item in args.model:
        family, _, name = item.partition("=")
        if family not in SETS or not name:
            ap.error(f"--model takes FAMILY=MODEL with FAMILY one of {sorted(SETS)}, got {item!r}")
        extra.setdefault(family, []).append(name)
    print(f"threads {torch.get_num_threads()}, CPU {torch.backends.cpu.get_cpu_capability()}")
    print("family | method | s/MP (median of repeats) | / NLM")
    for family in args.families:
        images = _images(family, args.sigma, args.images)
        megapixels = sum(i.shape[0] * i.shape[1] for i in images) / 1e6
        methods: dict[str, object] = {}
        for name in (*SETS[family][3], *extra.get(family, [])):
            model = load_model(name)
            methods[name] = (model, None)
            if args.switch:
                methods[f"{name}, {args.switch} off"] = (model, "0")
        methods["nlm"] = None
        times: dict[str, list[float]] = {m: [] for m in methods}
        for rep in range(args.repeats + 1):  # the first round warms up
            totals = dict.fromkeys(methods, 0.0)
            for image in images:
                for name, spec in methods.items():
                    if spec is not None:
                        os.environ.pop(WINOGRAD_ENV, None)
                        if spec[1] is not None:
                            os.environ[WINOGRAD_ENV] = spec[1]
                    start = time.perf_counter()
                    if spec is None:
                        _nlm(image, args.sigma)
                    else:
                        denoise(image, spec[0], value_range=(0, 255))
                    totals[name] += time.perf_counter() - start
            if rep:
                for name, total in totals.items():
                    times[name].append(total / megapixels)
        os.environ.pop(WINOGRAD_ENV, None)
        nlm = statistics.median(times["nlm"])
        for name, values in times.items():
            median = statistics.median(values)
            spread = f"{min(values):.2f}-{max(values):.2f}"
            print(f"{family} | {name} | {median:.2f} ({spread}) | {median / nlm:.2f}", flush=True)


if __name__ == "__main__":
    main()
