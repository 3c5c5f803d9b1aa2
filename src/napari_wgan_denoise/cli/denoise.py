"""``wgan-denoise denoise``: denoise image files (or zarr stores) into TIFFs, in this
process or on a dask cluster (``--scheduler`` / ``--workers``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._command import add_command
from ._progress import counting, progress_bar


def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--scheduler`` and ``--workers`` to the ``wgan-denoise denoise`` parser."""
    group = parser.add_argument_group("cluster (dask.distributed)")
    group.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS|local",
        help="run on a dask.distributed cluster: 'local' starts a LocalCluster of --workers "
        "processes, an address such as tcp://host:8786 uses a running scheduler "
        "(paths must be visible to its workers); needs: pip install distributed",
    )
    group.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes of the local cluster (default 2; implies --scheduler local)",
    )


def add_tta_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--tta [N]`` (test-time augmentation; the flag alone: 8 passes)."""
    parser.add_argument(
        "--tta",
        nargs="?",
        const="8",
        default=None,
        metavar="N",
        help="average the model over N flips/rotations of the input: 2, 4 or 8 (the flag "
        "alone: 8); about +0.1 dB at N times the time",
    )


def tta_flag_alone(argv: list[str]) -> list[str]:
    """``argv`` with a ``--tta`` that is not followed by a number written ``--tta=8``, so
    that ``denoise --tta in.tif ...`` reads ``in.tif`` as an input, not as the count."""
    out = []
    for i, arg in enumerate(argv):
        following = argv[i + 1] if i + 1 < len(argv) else ""
        out.append("--tta=8" if arg == "--tta" and not following.strip().isdigit() else arg)
    return out


def tta_passes(value: str | None) -> int:
    """The passes ``--tta`` asks for (1 without the flag); an error naming the option."""
    from ..errors import InvalidSetting
    from ..validation import TTA_PASSES

    if value is None:
        return 1
    if value.strip().isdigit() and int(value) in TTA_PASSES:
        return int(value)
    raise InvalidSetting(
        f"--tta takes the number of flips/rotations to average: 1, 2, 4 or 8 (the flag "
        f"alone: 8), got {value!r}."
    )


def wants_distributed(args: argparse.Namespace) -> bool:
    """True when the command line asks for a cluster (``--scheduler`` or ``--workers``)."""
    return bool(getattr(args, "scheduler", None) or getattr(args, "workers", None))


def register(sub: Any) -> None:
    """Add the ``denoise`` subcommand."""
    p = add_command(sub, "denoise", cmd_denoise, "denoise image files into TIFFs")
    p.add_argument("inputs", nargs="+", help="TIFF, PNG or JPEG files, or .zarr stores")
    p.add_argument("-o", "--output", required=True, help="output folder (created if missing)")
    p.add_argument("--model", required=True, help="registered model name or NAME.safetensors path")
    p.add_argument("--tile-size", type=int, default=None)
    p.add_argument("--overlap", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--axes", default=None, help="axis letters, e.g. TZYX or YXC")
    add_tta_argument(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("-q", "--quiet", action="store_true")
    add_distributed_arguments(p)


def cmd_denoise(args: argparse.Namespace) -> int:
    """Run ``wgan-denoise denoise``."""
    from ..inference.distributed import check_targets, output_path
    from ..models.registry import load_model
    from ..output_checks import check_output_folder

    outdir = Path(args.output)
    check_output_folder(outdir, "<name>.tif, or <name>.zarr for a zarr store")
    model = load_model(args.model)
    inputs = [Path(p) for p in args.inputs]
    targets = [output_path(p, outdir) for p in inputs]
    check_targets(inputs, targets, args.overwrite, hint="pass --overwrite")
    from ..output_checks import check_writable
    from ..validation import check_axes, check_denoise_options

    check_writable(outdir)  # before any work, not after it
    check_axes(args.axes)  # option errors before any image is read
    check_denoise_options(tile_size=args.tile_size, overlap=args.overlap)
    options = {
        "axes": args.axes,
        "tile_size": args.tile_size,
        "overlap": args.overlap,
        "device": args.device,
        "tta": tta_passes(args.tta),
    }
    if wants_distributed(args):
        return _on_cluster(args, model.path, inputs, outdir, options)
    from ..inference import denoise
    from ..inference.lazy import denoise_lazy, is_zarr_path
    from ..io import read_image_series, write_tiff

    for src, dst in zip(inputs, targets):
        with progress_bar(desc=src.name, quiet=args.quiet) as bar:
            if is_zarr_path(src):  # chunk by chunk, zarr (OME-Zarr) in and out
                denoise_lazy(
                    src, model, out=dst, overwrite=args.overwrite, progress=counting(bar), **options
                )
            else:  # every series of a multi-series TIFF, written as as many series
                results = [
                    denoise(image, model, progress=counting(bar), **options)
                    for image in read_image_series(src)
                ]
                write_tiff(dst, results, overwrite=args.overwrite)
        if not args.quiet:
            n = 1 if is_zarr_path(src) else len(results)
            print(f"{src} -> {dst}" + (f" ({n} image series)" if n > 1 else ""))
    return 0


def _on_cluster(
    args: argparse.Namespace,
    model_path: Any,
    inputs: list[Path],
    outdir: Path,
    options: dict[str, Any],
) -> int:
    """Denoise on a dask cluster with the core's ``denoise_files_distributed``: files one
    task each, zarr stores one task per block."""
    from ..inference.distributed import denoise_files_distributed
    from ..inference.lazy import is_zarr_path

    scheduler = args.scheduler or "local"
    if args.workers and scheduler.lower() != "local":
        raise ValueError("--workers sets the size of a local cluster; drop it with --scheduler.")
    quiet = bool(args.quiet)
    n_files = sum(not is_zarr_path(p) for p in inputs)

    def on_client(client: Any) -> None:
        if not quiet:
            print(f"dask scheduler: {client.scheduler.address}", file=sys.stderr)

    def on_done(src: Path, dst: Path) -> None:
        if src in stores:
            stores.pop(src).close()
        if not quiet:
            (print if is_zarr_path(src) else bar.write)(f"{src} -> {dst}")

    def store_progress(src: Path) -> Any:
        stores[src] = progress_bar(desc=src.name, unit="task", quiet=quiet)
        return counting(stores[src])

    stores: dict[Path, Any] = {}
    with progress_bar(total=n_files, desc="files", unit="task", quiet=quiet or not n_files) as bar:
        try:
            denoise_files_distributed(
                inputs,
                outdir,
                str(model_path),
                scheduler=scheduler,
                n_workers=args.workers or 2,
                overwrite=bool(args.overwrite),
                progress=counting(bar),
                on_done=on_done,
                on_client=on_client,
                store_progress=store_progress,
                **{k: v for k, v in options.items() if v is not None},
            )
        finally:
            for store_bar in stores.values():
                store_bar.close()
    return 0
