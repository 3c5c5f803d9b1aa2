"""Speed / memory / GFLOP/s / quality benchmark of denoising models (issue 7).

The same harness as ``wgan-denoise benchmark`` (see
:mod:`napari_wgan_denoise.benchmark` for what each column means). From the repository
root::

    python -m benchmarks.run                      # registered models, else reference archs
    python benchmarks/run.py --model fluo-wgan-fast --size 2048 --repeats 5
    python -m benchmarks.run --clean shared/data/test --sigma 25 --append docs/benchmarks.md
"""

from __future__ import annotations

import sys

from napari_wgan_denoise.benchmark import (
    PeakRSS,
    benchmark_model,
    flops_per_pixel,
    format_markdown,
    machine_info,
    matmul_gflops,
    run_benchmark,
)
from napari_wgan_denoise.cli.benchmark import main

__all__ = [
    "PeakRSS",
    "benchmark_model",
    "flops_per_pixel",
    "format_markdown",
    "machine_info",
    "main",
    "matmul_gflops",
    "run_benchmark",
]

if __name__ == "__main__":
    sys.exit(
        main(prog="python benchmarks/run.py" if not __package__ else "python -m benchmarks.run")
    )
