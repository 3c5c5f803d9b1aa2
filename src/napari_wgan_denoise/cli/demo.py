"""``wgan-denoise demo``: the shipped default model on the bundled sample images."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ._command import add_command


def _fresh_folder(base: Path) -> Path:
    """``base`` if it does not exist yet, else ``base-2``, ``base-3``, ... (never reuse)."""
    if not base.exists():
        return base
    n = 2
    while base.with_name(f"{base.name}-{n}").exists():
        n += 1
    return base.with_name(f"{base.name}-{n}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand to the ``wgan-denoise`` parser."""
    p = add_command(
        sub, "demo", cmd_demo, "denoise the bundled sample images with the default model"
    )
    p.add_argument(
        "-o",
        "--output",
        default="wgan-denoise-demo",
        help="folder for the TIFFs (a new numbered folder if it exists)",
    )
    p.add_argument("--model", help="model to use (default: the default model for each sample)")
    p.add_argument("--sample", choices=("fluorescence", "cells", "all"), default="all")
    p.add_argument("--device", default="auto")


def cmd_demo(args: argparse.Namespace) -> int:
    """Denoise each bundled sample, write noisy/denoised/clean TIFFs, print PSNR and SSIM."""
    from ..data.samples import cells_sample, fluorescence_sample
    from ..inference import denoise
    from ..io import write_tiff
    from ..metrics import psnr, ssim
    from ..models.families import default_model_for
    from ..models.registry import load_model

    samples = {"fluorescence": (fluorescence_sample, 1), "cells": (cells_sample, 3)}
    chosen = list(samples) if args.sample == "all" else [args.sample]
    outdir = _fresh_folder(Path(args.output))
    ran = 0
    for name in chosen:
        make, channels = samples[name]
        model_name = args.model or default_model_for(channels)
        if model_name is None:
            kind = "RGB" if channels == 3 else "gray"
            print(
                f"{name}: skipped, no {kind} model is installed (train one with "
                "`wgan-denoise train` or pass --model PATH)."
            )
            continue
        model = load_model(model_name)
        if model.channels != channels:
            print(f"{name}: skipped, model {model.name} has {model.channels} channel(s).")
            continue
        noisy, clean = make()
        start = time.perf_counter()
        result = denoise(noisy, model, device=args.device)
        seconds = time.perf_counter() - start
        outdir.mkdir(parents=True, exist_ok=True)
        for label, data in (("noisy", noisy), ("denoised", result), ("clean", clean)):
            write_tiff(outdir / f"{name}_{label}.tif", data)
        print(
            f"{name}: {model.name} PSNR {psnr(clean, noisy):.2f} -> {psnr(clean, result):.2f} dB, "
            f"SSIM {ssim(clean, noisy):.3f} -> {ssim(clean, result):.3f} ({seconds:.2f} s)"
        )
        ran += 1
    if ran:
        print(
            f"wrote {outdir}/ (open the TIFFs in napari, or run `napari` and use "
            "Plugins > WGAN Denoise)"
        )
    return 0 if ran else 1
