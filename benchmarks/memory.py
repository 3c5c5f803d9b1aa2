"""Peak memory of denoising large data on the CPU (issue 7).

Each case runs in a fresh Python subprocess so that nothing from an earlier case (or from
the parent) is counted. The child builds the fast U-Net architecture (``unet``,
``features=32, bottleneck=16``, random weights: memory does not depend on the weights),
makes the input (uint16), warms up on a small image, then measures one call.

How peak memory is measured: on Linux the kernel's high-water mark of the process's
resident set (``VmHWM``) is reset just before the call (``echo 5 > /proc/self/clear_refs``)
and read just after it, so it is the exact peak RSS *during the call*, transient spikes
included; a 2 ms sampling thread is the fallback elsewhere. The reported

    extra = peak RSS during the call - RSS just before the call - output bytes

is the memory the call needs beyond its input (already resident before the call) and its
output array. The budget is 1.5 GB (``--budget-gb``).

Cases:

``image``   one 4096 x 4096 uint16 image through ``denoise``
``stack``   a 50 x 2048 x 2048 uint16 stack through ``denoise`` (``--quick``: 5 planes)
``lazy``    the same stack as a zarr store on disk, through ``denoise_lazy`` into another
            zarr store: neither input nor output is ever whole in memory (needs dask and
            zarr; input/output bytes are not subtracted since they never are resident)

Usage (from the repository root)::

    python benchmarks/memory.py --quick          # 4096^2 image + 5 x 2048^2 stack, ~2-3 min
    python benchmarks/memory.py                  # full: 50 x 2048^2 (200 MP), ~15-30 min
    python benchmarks/memory.py --case lazy --quick
    python -m benchmarks.memory --json           # one JSON object per case
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GB = 1e9
CASES = ("image", "stack", "lazy")


# --------------------------------------------------------------------------- child


def _fast_unet():
    import torch

    from napari_wgan_denoise import create_model

    torch.manual_seed(0)
    model = create_model("unet", features=32, bottleneck=16)
    with torch.no_grad():  # non-zero last layer, so the network really computes something
        for p in model.network.parameters():
            if p.ndim == 4 and not p.abs().sum():
                p.normal_(0, 0.01)
    return model


def _make_stack(shape: tuple[int, ...]):
    import numpy as np

    rng = np.random.default_rng(0)
    out = np.empty(shape, np.uint16)
    planes = out.reshape(-1, *shape[-2:])
    for k in range(planes.shape[0]):  # plane by plane: no big temporary
        planes[k] = rng.integers(100, 4000, shape[-2:], dtype=np.uint16)
    return out


def case_shape(
    case: str, quick: bool = False, planes: int | None = None, side: int | None = None
) -> tuple[int, ...]:
    """The input shape of a case: ``image`` 4096 x 4096, ``stack``/``lazy`` 50 (``quick``:
    5) x 2048 x 2048; ``planes`` and ``side`` override the defaults."""
    if case == "image":
        return (side or 4096, side or 4096)
    return (planes or (5 if quick else 50), side or 2048, side or 2048)


def run_child(
    case: str,
    quick: bool,
    tile_size: int | None,
    threads: int,
    planes: int | None = None,
    side: int | None = None,
) -> dict[str, Any]:
    """Measure one case in this process and return its result row."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from napari_wgan_denoise import denoise
    from napari_wgan_denoise.benchmark import PeakRSS

    model = _fast_unet()
    shape = case_shape(case, quick, planes, side)
    denoise(np.zeros((64, 64), np.uint16) + 7, model, tile_size=tile_size)  # warm-up
    row: dict[str, Any] = {"case": case, "shape": list(shape), "dtype": "uint16"}
    row["threads"] = torch.get_num_threads()
    if case == "lazy":
        import dask.array as da

        from napari_wgan_denoise.inference.lazy import denoise_lazy, open_zarr_array

        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "in.zarr"
            store = open_zarr_array(
                src, mode="w", shape=shape, chunks=(1, *shape[1:]), dtype="uint16"
            )
            rng = np.random.default_rng(0)
            for k in range(shape[0]):
                store[k] = rng.integers(100, 4000, shape[1:], dtype=np.uint16)
            del store
            arr = da.from_zarr(str(src))
            row["input_bytes"] = int(arr.nbytes)
            row["output_bytes"] = int(arr.nbytes)
            start = time.perf_counter()
            with PeakRSS() as peak:
                denoise_lazy(arr, model, out=Path(tmp) / "out.zarr", tile_size=tile_size)
            row["seconds"] = time.perf_counter() - start
            row["extra_bytes"] = peak.peak - peak.before  # in/out never resident
    else:
        data = _make_stack(shape)
        row["input_bytes"] = int(data.nbytes)
        row["output_bytes"] = int(data.nbytes)
        start = time.perf_counter()
        with PeakRSS() as peak:
            out = denoise(data, model, tile_size=tile_size)
        row["seconds"] = time.perf_counter() - start
        row["extra_bytes"] = peak.peak - peak.before - out.nbytes
    row["rss_before"] = peak.before
    row["peak_rss"] = peak.peak
    row["method"] = peak.method
    row["megapixels"] = float(np.prod(shape)) / 1e6
    return row


# --------------------------------------------------------------------------- parent


def run_case(
    case: str,
    *,
    quick: bool = False,
    tile_size: int | None = None,
    threads: int | None = None,
    planes: int | None = None,
    side: int | None = None,
) -> dict[str, Any]:
    """Run one case in a fresh subprocess and return its result row."""
    threads = threads or max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        case,
        "--threads",
        str(threads),
    ]
    if quick:
        cmd.append("--quick")
    if tile_size:
        cmd += ["--tile-size", str(tile_size)]
    if planes:
        cmd += ["--planes", str(planes)]
    if side:
        cmd += ["--side", str(side)]
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory case {case!r} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def format_rows(rows: list[dict[str, Any]], budget_gb: float) -> str:
    """A markdown table of memory results."""
    lines = [
        "| case | shape | input GB | output GB | RSS before GB | peak RSS GB | "
        "extra GB | within budget | seconds | method |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in rows:
        extra = r["extra_bytes"] / GB
        lines.append(
            f"| {r['case']} | {'x'.join(map(str, r['shape']))} {r['dtype']} | "
            f"{r['input_bytes'] / GB:.3f} | {r['output_bytes'] / GB:.3f} | "
            f"{r['rss_before'] / GB:.3f} | {r['peak_rss'] / GB:.3f} | {extra:.3f} | "
            f"{'yes' if extra <= budget_gb else 'NO'} (<= {budget_gb:g}) | "
            f"{r['seconds']:.1f} | {r['method']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--case",
        action="append",
        choices=CASES,
        help="which case(s) to run (default: image and stack)",
    )
    parser.add_argument("--quick", action="store_true", help="5 planes instead of 50")
    parser.add_argument("--planes", type=int, default=None, help="stack planes (50; quick 5)")
    parser.add_argument(
        "--side", type=int, default=None, help="plane side (image 4096, stack 2048)"
    )
    parser.add_argument("--tile-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads in the child")
    parser.add_argument("--budget-gb", type=float, default=1.5)
    parser.add_argument("--json", action="store_true", help="one JSON object per case")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        row = run_child(
            args.child, args.quick, args.tile_size, args.threads or 1, args.planes, args.side
        )
        print(json.dumps(row))
        return 0
    rows = []
    for case in args.case or ["image", "stack"]:
        row = run_case(
            case,
            quick=args.quick,
            tile_size=args.tile_size,
            threads=args.threads,
            planes=args.planes,
            side=args.side,
        )
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
    if not args.json:
        print(format_rows(rows, args.budget_gb))
    return 0 if all(r["extra_bytes"] <= args.budget_gb * GB for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
