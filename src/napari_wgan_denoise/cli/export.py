"""``wgan-denoise export``: write a model as a bioimage.io package (and optionally test it)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._command import add_command


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand to the ``wgan-denoise`` parser."""
    p = add_command(sub, "export", cmd_export, "write a bioimage.io model package (.zip)")
    p.add_argument("model", help="registered model name or NAME.safetensors path")
    p.add_argument("-o", "--output", required=True, help="the package to write, NAME.zip")
    p.add_argument("--name", default=None, help="model name in the package (default: the card's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing package")
    p.add_argument(
        "--test",
        action="store_true",
        help="validate and run bioimageio.core's test_model on it (needs the bioimageio extra)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print the full test report")


def cmd_export(args: argparse.Namespace) -> int:
    """Export ``args.model`` to ``args.output``; with ``--test`` validate the package and
    return 1 when bioimageio.core's ``test_model`` fails."""
    from ..export.bioimageio import export_bioimageio, validate_package
    from ..output_checks import check_writable

    check_writable(Path(args.output).expanduser().absolute().parent)  # before any work
    path = export_bioimageio(args.model, args.output, name=args.name, overwrite=args.overwrite)
    print(f"{args.model} -> {path}")
    if args.test:
        passed, report = validate_package(path, test=True)
        print(
            report
            if args.verbose
            else f"bioimageio.core test_model: {'passed' if passed else 'FAILED'}"
        )
        return 0 if passed else 1
    return 0
