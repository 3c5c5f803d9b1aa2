"""``wgan-denoise benchmark`` (and ``benchmarks/run.py``): time models, measure peak
memory and, optionally, quality; see :mod:`napari_wgan_denoise.benchmark`."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..benchmark import __doc__ as BENCHMARK_DOC
from ..benchmark import format_markdown, run_benchmark
from ._command import add_command
from .denoise import add_tta_argument, tta_flag_alone, tta_passes

BENCHMARK_SUMMARY = "time models (s/MP, MP/s, GFLOP/s), peak memory and optionally quality"
BENCHMARK_DESCRIPTION = """
Measure each model's speed (median s/MP over repeats after a warm-up, on a synthetic
image), peak memory of one call, FLOPs per pixel and achieved GFLOP/s against the
machine's torch.mm rate, and with --clean/--sigma its PSNR, SSIM and gradient ratio.
Prints a markdown table; --append adds it to a file.
"""


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 8:
        raise argparse.ArgumentTypeError(f"size must be N or HxW with N >= 8, got {text!r}")
    return values[0], values[1]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by ``wgan-denoise benchmark`` and benchmarks/run.py)."""
    p.add_argument(
        "--model",
        action="append",
        metavar="NAME_OR_PATH",
        help="model to time (repeatable; default: all registered, else the reference "
        "architectures with random weights)",
    )
    p.add_argument(
        "--reference",
        action="store_true",
        help="also time the reference architectures (fast U-Net, paper SRResNet), random weights",
    )
    p.add_argument("--size", type=_size, default=(1024, 1024), help="image N or HxW (1024)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls, median reported (3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first (1)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--tile-size", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--clean", metavar="DIR", help="also score quality on these references")
    noise = p.add_mutually_exclusive_group()
    noise.add_argument("--sigma", type=float, metavar="S", help="Gaussian σ for --clean")
    noise.add_argument("--noisy", metavar="DIR", help="paired noisy images for --clean")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N quality images")
    p.add_argument("--no-matmul", action="store_true", help="skip the torch.mm roof measurement")
    p.add_argument("--append", metavar="FILE", help="append the markdown report to FILE")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress notes")
    add_tta_argument(p)


def _cmd_benchmark(args: argparse.Namespace) -> int:
    if args.clean is not None and args.sigma is None and args.noisy is None:
        raise ValueError("--clean needs --sigma S (synthetic noise) or --noisy DIR (paired).")
    argv = getattr(args, "_argv", None)
    prog = getattr(args, "_prog", "wgan-denoise")
    command = prog + " " + shlex.join(argv if argv is not None else sys.argv[1:])

    def notify(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    result = run_benchmark(
        args.model,
        size=args.size,
        repeats=args.repeats,
        warmup=args.warmup,
        device=args.device,
        tile_size=args.tile_size,
        threads=args.threads,
        clean=args.clean,
        sigma=args.sigma,
        noisy=args.noisy,
        limit=args.limit,
        matmul=not args.no_matmul,
        command=command.strip(),
        notify=notify,
        reference=args.reference,
        tta=tta_passes(args.tta),
    )
    report = format_markdown(result)
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(report)
    if args.append:
        path = Path(args.append)
        path.parent.mkdir(parents=True, exist_ok=True)
        lead = "\n" if path.exists() and path.stat().st_size else ""
        with path.open("a", encoding="utf-8") as fh:
            fh.write(lead + report)
    return 0


def register(subparsers: Any) -> None:
    """Add the ``benchmark`` subcommand to the ``wgan-denoise`` parser's subparsers."""
    p = add_command(
        subparsers, "benchmark", _cmd_benchmark, BENCHMARK_SUMMARY, BENCHMARK_DESCRIPTION
    )
    add_arguments(p)


def main(argv: Sequence[str] | None = None, prog: str = "python -m benchmarks.run") -> int:
    """Run the benchmark as a standalone program (``benchmarks/run.py``)."""
    parser = argparse.ArgumentParser(prog=prog, description=(BENCHMARK_DOC or "").split("\n\n")[0])
    add_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(tta_flag_alone(argv))
    args._argv, args._prog = argv, prog
    try:
        return _cmd_benchmark(args)
    except (ValueError, FileNotFoundError, MemoryError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
