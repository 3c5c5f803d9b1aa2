"""Median s/MP of denoise() with and without oneDNN's fused convolutions (or, with
``--switch winograd``, NNPACK's Winograd convolutions of fp32 inference on AVX2 CPUs), by
thread count and CPU tile size, interleaved so that both sides see the same machine
(docs/benchmarks.md §7m, §7af). Run it on a quiet machine:

python3 benchmarks/fusion_speed.py --threads 1 2 --tiles 512 768 --sizes 300 1024 2048
python3 benchmarks/fusion_speed.py --switch winograd --threads 1 2 --tiles 576 \
    --models cells-mse-fast gray-mse-fast fluo-mse-fast
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from napari_wgan_denoise import denoise
from napari_wgan_denoise.benchmark import synthetic_image
from napari_wgan_denoise.inference.optimise import FUSION_ENV, WINOGRAD_ENV
from napari_wgan_denoise.models.registry import load_model

#: The switch each ``--switch`` toggles (its environment variable).
SWITCHES = {"fusion": FUSION_ENV, "winograd": WINOGRAD_ENV}


def _seconds(image: np.ndarray, model, on: bool, tile: int, switch: str = FUSION_ENV) -> float:
    os.environ[switch] = "1" if on else "0"
    start = time.perf_counter()
    denoise(image, model, tile_size=tile)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["cells-wgan-fast", "gray-wgan-fast"])
    parser.add_argument("--threads", nargs="+", type=int, default=[2])
    parser.add_argument("--tiles", nargs="+", type=int, default=[512])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1024])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--switch", choices=sorted(SWITCHES), default="fusion")
    args = parser.parse_args(argv)
    switch = SWITCHES[args.switch]
    on = "fused" if args.switch == "fusion" else args.switch
    print(f"model | size | threads | tile | plain s/MP | {on} s/MP | plain/{on}", flush=True)
    for name in args.models:
        model = load_model(name)
        for size in args.sizes:
            image = synthetic_image(size, size, model.channels)
            megapixels = size * size / 1e6
            for threads in args.threads:
                torch.set_num_threads(threads)
                for tile in args.tiles:
                    for fused in (False, True):  # warm-up
                        _seconds(image, model, fused, tile, switch)
                    times: dict[bool, list[float]] = {False: [], True: []}
                    for _ in range(args.repeats):
                        for fused in (False, True):
                            times[fused].append(_seconds(image, model, fused, tile, switch))
                    plain, fast = (float(np.median(times[f])) / megapixels for f in (False, True))
                    print(
                        f"{name} | {size}² | {threads} | {tile} | {plain:.3f} | {fast:.3f} | "
                        f"{plain / fast:.2f}",
                        flush=True,
                    )
    os.environ.pop(switch, None)


if __name__ == "__main__":
    main()
