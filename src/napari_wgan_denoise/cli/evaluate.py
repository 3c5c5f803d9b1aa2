"""``wgan-denoise evaluate``: score models (and BM3D / NLM baselines) on a test set."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from ..evaluation import BASELINES, evaluate, format_table
from ._command import add_command
from ._progress import counting, progress_bar
from .denoise import add_tta_argument, tta_flag_alone, tta_passes

EVALUATE_SUMMARY = "score models (and BM3D / NLM baselines) on clean test images"
EVALUATE_DESCRIPTION = """
Report mean PSNR, SSIM, gradient ratio (output sharpness / truth sharpness) and seconds
per megapixel for each model, on clean images with seeded Gaussian noise (--sigma) or on
noisy/clean pairs matched by file name (--noisy). PSNR/SSIM use a peak of 255 for 8-bit
references, else the reference's range.
"""


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _describe(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    r = rows[0]
    if args.sigma is not None:
        what = f"Gaussian noise σ={args.sigma:g} (0-255 scale, seed {args.seed}) on {args.clean}"
    else:
        what = f"paired {args.noisy} -> {args.clean}"
    return f"{what}: {r['n']} images, input PSNR {r['noisy_psnr']:.2f} dB"


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if args.sigma is None and args.noisy is None:
        raise ValueError("Give --sigma S (synthetic Gaussian noise) or --noisy DIR (paired mode).")
    tta = tta_passes(args.tta)
    with progress_bar(desc="evaluate", unit="step", quiet=args.quiet) as bar:
        rows = evaluate(
            args.model or [],
            clean=args.clean,
            sigma=args.sigma,
            noisy=args.noisy,
            seed=args.seed,
            baselines=args.baseline or [],
            device=args.device,
            tile_size=args.tile_size,
            tta=tta,
            progress=counting(bar),
            limit=args.limit,
            last=args.last,
            include_noisy=args.include_noisy,
        )
    if args.json:
        for row in rows:
            print(json.dumps(_json_safe(row), allow_nan=False))
    else:
        print(_describe(args, rows))
        print(format_table(rows))
    return 0


def register(subparsers: Any) -> None:
    """Add the ``evaluate`` subcommand to the ``wgan-denoise`` parser's subparsers."""
    p = add_command(subparsers, "evaluate", _cmd_evaluate, EVALUATE_SUMMARY, EVALUATE_DESCRIPTION)
    p.add_argument(
        "--model",
        action="append",
        metavar="NAME_OR_PATH",
        help="registered model name or NAME.safetensors path (repeat for several)",
    )
    p.add_argument("--clean", required=True, metavar="DIR", help="folder of clean references")
    noise = p.add_mutually_exclusive_group()
    noise.add_argument(
        "--sigma",
        type=float,
        metavar="S",
        help="add N(0, S²) noise on the 0-255 scale (float, not clipped, seeded)",
    )
    noise.add_argument(
        "--noisy", metavar="DIR", help="folder of real noisy images, matched to --clean by name"
    )
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument(
        "--baseline",
        action="append",
        choices=BASELINES,
        help="also run bm3d (needs `pip install bm3d`) or nlm (scikit-image); repeatable",
    )
    p.add_argument(
        "--include-noisy", action="store_true", help="add a row scoring the unprocessed input"
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--limit", type=int, metavar="N", help="only the first N images by name")
    which.add_argument("--last", type=int, metavar="N", help="only the last N images by name")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--tile-size", type=int, default=None)
    add_tta_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object per model per line")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def main_for_tests(argv: Sequence[str]) -> int:
    """Parse ``argv`` with a parser holding only ``evaluate`` and run it like ``wgan-denoise``
    would: returns the exit status (2 for bad arguments or input)."""
    parser = argparse.ArgumentParser(prog="wgan-denoise")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    try:
        args = parser.parse_args(tta_flag_alone(list(argv)))
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, MemoryError) as exc:
        print(f"wgan-denoise: error: {exc}", file=sys.stderr)
        return 2
