"""``wgan-denoise cascade-train`` and ``wgan-denoise restore``: the seed-004 cascade headless."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._command import add_command
from ._progress import counting, progress_bar

RESTORE_SUMMARY = "fill masked pixels and remove blur and noise with a cascade model"
CASCADE_TRAIN_SUMMARY = "train an inpaint + deblur + denoise cascade (seed 004) on clean images"
CASCADE_TRAIN_DESCRIPTION = """
Train the seed-004 cascade on clean images damaged on the fly (holes, blur, Poisson-
Gaussian noise) with the gradual strategy: inpainting with MSE, then with the critic,
auto-encoder pre-training, then both end to end.
"""


def _image_files(items: list[str], role: str) -> list[Path]:
    from ..io import list_images

    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files += list_images(path, role)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"The {role} path {path} does not exist.")
    return files


def _config(args: argparse.Namespace) -> Any:
    from ..training.cascade import CascadeTrainConfig
    from ..validation import check_cascade_settings, load_config_file

    values: dict[str, Any] = {}
    if args.config:
        values = load_config_file(args.config)  # clear errors for YAML mistakes
    for key in (
        "inpaint_mse_iterations",
        "inpaint_adv_iterations",
        "restore_iterations",
        "joint_iterations",
        "batch_size",
        "patch_size",
        "lr",
        "lambda_per",
        "lambda_adv",
        "vgg_weights",
        "vgg_arch",
        "seed",
        "device",
        "val_every",
    ):
        value = getattr(args, key)
        if value is not None:
            values[key] = value
    if args.no_gradual:
        values["gradual"] = False
    arch = dict(values.get("arch_config") or {})
    for key in ("inpaint_features", "inpaint_blocks", "restore_features", "restore_layers"):
        if getattr(args, key) is not None:
            arch[key] = getattr(args, key)
    values["arch_config"] = arch
    return CascadeTrainConfig.from_dict(check_cascade_settings(values, source=args.config))


def _cmd_cascade_train(args: argparse.Namespace) -> int:
    from ..data.degrade import CleanPatchPool, image_planes
    from ..errors import EXIT_INTERRUPTED, Cancelled, InvalidSetting
    from ..interrupt import GracefulStop
    from ..io import read_image
    from ..models.model import save_model
    from ..models.registry import save_user_model
    from ..output_checks import check_model_name, check_model_output
    from ..training.cascade import train_cascade

    config = _config(args)
    config.validate()
    out = Path(args.output) if args.output else None
    if out is None and not args.name:
        raise InvalidSetting("Give -o OUT_PATH, --name NAME (a user model), or both.")
    if out is not None:
        check_model_output(out, overwrite=args.overwrite)  # both files, and writable
    if args.name:
        check_model_name(args.name, overwrite=args.overwrite)
    pool = CleanPatchPool.from_paths(_image_files(args.clean, "clean"))
    val = []
    for path in _image_files(args.val or [], "validation"):
        val += image_planes(read_image(path))[:4]

    def progress(st: Any) -> None:
        if args.quiet:
            return
        if st.val_psnr is not None or st.iteration % 50 == 0:
            extra = f" val {st.val_psnr:.2f} dB" if st.val_psnr is not None else ""
            print(
                f"[{st.stage}] {st.iteration}/{st.total} loss {st.loss:.5f}{extra} "
                f"({st.elapsed:.0f} s)",
                file=sys.stderr,
            )

    with GracefulStop("saving the best (or last) weights so far") as stop:
        try:
            model = train_cascade(config, pool, val, progress=progress, cancel=stop.event)
            interrupted = False
        except Cancelled as exc:
            model, interrupted = exc.model, True  # type: ignore[attr-defined]
            done = model.card["training"]["iterations"]
            if not done:
                print(
                    "wgan-denoise: stopped before the first iteration; nothing saved.",
                    file=sys.stderr,
                )
                return EXIT_INTERRUPTED
            model.card["training"]["stopped"] = "interrupted"
        if args.modality:
            model.card["modality"] = args.modality
        saved = []
        if out is not None:
            model.card.setdefault("name", None)
            model.card["name"] = model.card["name"] or out.name
            path = save_model(model, out)
            saved.append(str(path))
            if not interrupted:
                print(f"saved {path}")
        if args.name:
            path = save_user_model(model, args.name, overwrite=args.overwrite)
            saved.append(f"user model {args.name!r} ({path})")
            if not interrupted:
                print(f"registered user model {args.name} ({path})")
    if interrupted:
        best = model.card.get("metrics", {}).get("best_iteration")
        kept = f"the best weights (iteration {best})" if best else "the weights so far"
        print(
            f"wgan-denoise: interrupted at iteration {done}/{config.total_iterations()}; saved "
            f"{kept} to {' and '.join(saved)}.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    import numpy as np

    from ..inference.restore import restore
    from ..io import read_image, write_tiff
    from ..models.registry import load_model
    from ..output_checks import check_output_folder, check_writable

    outdir = Path(args.output)
    check_output_folder(outdir)
    model = load_model(args.model)
    check_writable(outdir)  # before any work, not after it
    mask = read_image(args.mask) if args.mask else None
    for src in (Path(p) for p in args.inputs):
        if not src.is_file():
            raise FileNotFoundError(f"Input file {src} does not exist.")
        dst = outdir / (src.stem + ".tif")
        dst_inp = outdir / (src.stem + "_inpainted.tif")
        for target in [dst] + ([dst_inp] if args.save_inpainted else []):
            if target.exists() and not args.overwrite:
                raise FileExistsError(f"{target} already exists; pass --overwrite to replace it.")
            if target.resolve() == src.resolve():
                raise FileExistsError(f"Output {target} replaces its input; use another -o.")
        image = read_image(src)
        holes = mask
        if holes is None:  # no mask: deblur and denoise only (NaN pixels are still filled)
            plane_shape = image.shape[-3:-1] if model.channels == 3 else image.shape[-2:]
            holes = np.zeros(plane_shape, dtype=bool)
        with progress_bar(desc=src.name, quiet=args.quiet) as bar:
            result = restore(
                image,
                holes,
                model,
                axes=args.axes,
                tile_size=args.tile_size,
                device=args.device,
                progress=counting(bar),
                return_inpainted=args.save_inpainted,
            )
        restored, filled = result if args.save_inpainted else (result, None)
        write_tiff(dst, restored, overwrite=args.overwrite)
        if filled is not None:
            write_tiff(dst_inp, filled, overwrite=args.overwrite)
        if not args.quiet:
            print(f"{src} -> {dst}")
    return 0


def register(sub: Any) -> None:
    """Add the ``cascade-train`` and ``restore`` subcommands to ``wgan-denoise``."""
    p = add_command(
        sub, "cascade-train", _cmd_cascade_train, CASCADE_TRAIN_SUMMARY, CASCADE_TRAIN_DESCRIPTION
    )
    p.add_argument("--clean", nargs="+", required=True, help="clean image files or folders")
    p.add_argument("--val", nargs="*", help="clean validation images (held out)")
    p.add_argument("--config", help="YAML file of CascadeTrainConfig settings")
    p.add_argument("-o", "--output", help="OUT_PATH: writes OUT_PATH.safetensors + .json")
    p.add_argument("--name", help="also register the model as a user model with this name")
    p.add_argument("--modality", default=None, help="what images it is for, e.g. fluo")
    for flag, kind in (
        ("--inpaint-mse-iterations", int),
        ("--inpaint-adv-iterations", int),
        ("--restore-iterations", int),
        ("--joint-iterations", int),
        ("--batch-size", int),
        ("--patch-size", int),
        ("--lr", float),
        ("--lambda-per", float),
        ("--lambda-adv", float),
        ("--seed", int),
        ("--val-every", int),
        ("--inpaint-features", int),
        ("--inpaint-blocks", int),
        ("--restore-features", int),
        ("--restore-layers", int),
    ):
        p.add_argument(flag, type=kind, default=None)
    p.add_argument("--vgg-weights", default=None, help="torchvision VGG weights for --lambda-per")
    p.add_argument("--vgg-arch", default=None, choices=("vgg16", "vgg19"))
    p.add_argument("--no-gradual", action="store_true", help="ablation: no pre-training stages")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")

    p = add_command(sub, "restore", _cmd_restore, RESTORE_SUMMARY)
    p.add_argument("inputs", nargs="+", help="TIFF, PNG or JPEG files")
    p.add_argument("--mask", help="image whose non-zero pixels are to be filled (YX or same shape)")
    p.add_argument("--model", required=True, help="a restore model name or path")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--save-inpainted", action="store_true", help="also write NAME_inpainted.tif")
    p.add_argument("--tile-size", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--axes", default=None)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
