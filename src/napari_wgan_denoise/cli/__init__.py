"""The ``wgan-denoise`` command line: every subcommand's arguments live in this package.

Each module registers its subcommands (``register(subparsers)``) and turns the parsed
arguments into typed calls of the core; :mod:`._progress` is the one tqdm adapter.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from .._version import __version__
from ..errors import EXIT_INTERRUPTED, describe_error, exit_status
from ._command import add_command
from .denoise import tta_flag_alone

__all__ = ["build_parser", "main"]


def _cmd_models(args: argparse.Namespace) -> int:
    from ..models.registry import model_entries, unreadable_models

    for name, reason in unreadable_models():  # never hidden: say why it is not listed
        print(f"wgan-denoise: not listed: {name}: {reason}", file=sys.stderr)
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
    from . import benchmark, cascade, demo, denoise, evaluate, export, finetune, train

    parser = argparse.ArgumentParser(
        prog="wgan-denoise",
        description="Denoise microscopy images with ID-MSE and ID-MSE-WGAN models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,  # main() takes it out of argv wherever it is
        help="show the Python traceback of errors (accepted at any position)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    add_command(sub, "models", _cmd_models, "list shipped and user models")
    for module in (denoise, train, finetune, cascade, evaluate, demo, benchmark, export):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``wgan-denoise``; returns the process exit status.

    Expected failures print one line (``--debug`` adds the traceback) and return a status
    by kind: 2 usage (bad option or setting, an output that exists), 3 bad input (a
    missing or unusable image, model or data file), 1 could not finish (out of memory,
    cannot write, a bug), 130 interrupted. See docs/reliability.md.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = tta_flag_alone([a for a in argv if a != "--debug"])
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..interrupt import ignore_signals, terminate_as_interrupt

    try:
        with terminate_as_interrupt():  # SIGTERM cleans up like Ctrl-C
            status = int(args.func(args) or 0)
    except KeyboardInterrupt:
        ignore_signals()  # the run is over; a repeated Ctrl-C must not cut this short
        if debug:
            traceback.print_exc()
        print("wgan-denoise: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - one line per failure; --debug shows the rest
        if debug:
            traceback.print_exc()
        print(f"wgan-denoise: error: {describe_error(exc)}", file=sys.stderr)
        return exit_status(exc)
    if status == EXIT_INTERRUPTED:  # stopped gracefully: the same for what follows
        ignore_signals()
    return status
