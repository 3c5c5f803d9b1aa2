"""The ``wgan-denoise`` command line: list models and denoise files, headless."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__


def _cmd_models(args: argparse.Namespace) -> int:
    from .models.registry import model_entries

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
    from .io import read_image, write_tiff
    from .models.registry import load_model

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
            else:
                result = denoise(read_image(src), model, **options)
                write_tiff(dst, result, overwrite=args.overwrite)
        if not args.quiet:
            print(f"{src} -> {dst}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """``wgan-denoise export``: write a bioimage.io model package, optionally test it."""
    from .export.bioimageio import export_bioimageio, validate_package

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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``wgan-denoise`` (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="wgan-denoise",
        description="Denoise microscopy images with ID-MSE and ID-MSE-WGAN models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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

    p = sub.add_parser("export", help="write a bioimage.io model package (.zip)")
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
    p.set_defaults(func=_cmd_export)

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


if __name__ == "__main__":
    sys.exit(main())
