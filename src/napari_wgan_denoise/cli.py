"""The ``wgan-denoise`` command line: list models and denoise files, headless."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import EXIT_INTERRUPTED, describe_error, exit_status


def _cmd_models(args: argparse.Namespace) -> int:
    from .models.registry import model_entries, unreadable_models

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


def _output_path(src: Path, outdir: Path) -> Path:
    from .inference.lazy import is_zarr_path

    return outdir / src.name if is_zarr_path(src) else outdir / (src.stem + ".tif")


def _cmd_denoise(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .inference import denoise
    from .inference.lazy import denoise_lazy, is_zarr_path
    from .io import read_image_series, write_tiff
    from .models.registry import load_model
    from .validation import check_writable

    model = load_model(args.model)
    outdir = Path(args.output)
    inputs = [Path(p) for p in args.inputs]
    targets = [_output_path(p, outdir) for p in inputs]
    for src, dst in zip(inputs, targets):
        if not (src.exists() if is_zarr_path(src) else src.is_file()):
            raise FileNotFoundError(f"Input file {src} does not exist.")
        if dst.exists() and not args.overwrite:
            raise FileExistsError(f"{dst} already exists; pass --overwrite to replace it.")
        if dst.resolve() == src.resolve():
            raise FileExistsError(f"Output {dst} would replace its own input; choose another -o.")
    if len(set(targets)) != len(targets):
        raise ValueError(
            "Two inputs share a file name stem and would write the same output; "
            "denoise them into different folders."
        )
    check_writable(outdir)  # before any work, not after it
    from .inference.distributed import run_distributed, wants_distributed

    if wants_distributed(args):
        return run_distributed(args, model.path, inputs, targets)
    for src, dst in zip(inputs, targets):
        with tqdm(total=1, desc=src.name, unit="tile", disable=args.quiet, file=sys.stderr) as bar:

            def progress(done: int, total: int, bar=bar) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            options = dict(
                axes=args.axes,
                tile_size=args.tile_size,
                overlap=args.overlap,
                device=args.device,
                progress=progress,
            )
            if is_zarr_path(src):  # chunk by chunk, zarr (OME-Zarr) in and out
                denoise_lazy(src, model, out=dst, overwrite=args.overwrite, **options)
            else:  # every series of a multi-series TIFF, written as as many series
                results = [denoise(image, model, **options) for image in read_image_series(src)]
                write_tiff(dst, results, overwrite=args.overwrite)
        if not args.quiet:
            n = len(results) if not is_zarr_path(src) else 1
            print(f"{src} -> {dst}" + (f" ({n} image series)" if n > 1 else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``wgan-denoise`` (exposed for docs and tests)."""
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

    p = sub.add_parser("models", help="list shipped and user models")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("denoise", help="denoise image files into TIFFs")
    p.add_argument("inputs", nargs="+", help="TIFF, PNG or JPEG files, or .zarr stores")
    p.add_argument("-o", "--output", required=True, help="output folder (created if missing)")
    p.add_argument("--model", required=True, help="registered model name or NAME.safetensors path")
    p.add_argument("--tile-size", type=int, default=None)
    p.add_argument("--overlap", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--axes", default=None, help="axis letters, e.g. TZYX or YXC")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("-q", "--quiet", action="store_true")
    from .inference.distributed import add_distributed_arguments

    add_distributed_arguments(p)
    p.set_defaults(func=_cmd_denoise)

    from .benchmark import register_cli as register_benchmark
    from .demo import register_cli as register_demo
    from .evaluation import register_cli as register_evaluate
    from .training.cascade_cli import register_cli as register_cascade
    from .training.cli import register_cli as register_train
    from .training.finetune_cli import register_cli as register_finetune

    register_train(sub)
    register_finetune(sub)
    register_cascade(sub)
    register_evaluate(sub)
    register_demo(sub)
    register_benchmark(sub)
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
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    from .interrupt import terminate_as_interrupt

    try:
        with terminate_as_interrupt():  # SIGTERM cleans up like Ctrl-C
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("wgan-denoise: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - one line per failure; --debug shows the rest
        if debug:
            traceback.print_exc()
        print(f"wgan-denoise: error: {describe_error(exc)}", file=sys.stderr)
        return exit_status(exc)


if __name__ == "__main__":
    sys.exit(main())
