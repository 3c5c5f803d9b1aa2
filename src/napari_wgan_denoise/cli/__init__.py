"""The ``wgan-denoise`` command line: every subcommand's arguments live in this package.

Each module registers its subcommands (``register(subparsers)``) and turns the parsed
arguments into typed calls of the core; :mod:`._progress` is the one tqdm adapter.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._version import __version__

__all__ = ["build_parser", "main"]


def _cmd_models(args: argparse.Namespace) -> int:
    from ..models.registry import model_entries

    entries = model_entries()
    if not entries:
        print("No models installed. Train one with `wgan-denoise train` or load a file by path.")
        return 0
    rows = [("name", "task", "architecture", "channels", "parameters", "source", "modality")]
    for e in entries:
        rows.append(
            (
                e.name,
                e.task,
                e.architecture,
                "RGB" if e.channels == 3 else "gray",
                f"{e.parameters:,}",
                e.source,
                e.modality or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``wgan-denoise`` (exposed for docs and tests)."""
    from . import benchmark, cascade, demo, denoise, evaluate, finetune, train

    parser = argparse.ArgumentParser(
        prog="wgan-denoise",
        description="Denoise microscopy images with ID-MSE and ID-MSE-WGAN models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list shipped and user models")
    p.set_defaults(func=_cmd_models)
    for module in (denoise, train, finetune, cascade, evaluate, demo, benchmark):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``wgan-denoise``; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("wgan-denoise: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, MemoryError, ImportError) as exc:
        print(f"wgan-denoise: error: {exc}", file=sys.stderr)
        return 2
