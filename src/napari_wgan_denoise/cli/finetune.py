"""``wgan-denoise finetune``: adapt a model to one's own data from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..training.finetune import MODES
from ..training.finetune.selfsupervised import DEFAULT_SS_LOSS, SS_LOSSES
from ..training.finetune.strategies import DEFAULT_SURROGATES, SURROGATES, strategy_for
from ._command import add_command
from ._progress import advance_to, progress_bar

FINETUNE_SUMMARY = "fine-tune a model on your own stack"
FINETUNE_DESCRIPTION = """
Adapt a model to your data: paired (noisy + clean), two-stage (seed 002, noisy only),
n2n (repeated frames) or self-supervised (noisy only: recorrupted pairs at the stack's own
measured noise level by default, or Neighbor2Neighbor or blind-spot loss). A noise check
runs first; for correlated noise the recorrupted pairs take its measured correlation (and
the blind-spot loss a structured mask).
"""


def read_stack(path: str | Path) -> np.ndarray:
    """A file as an array, or a folder of same-shaped images stacked along a new first axis."""
    from ..io import list_images, read_image

    p = Path(path)
    if p.is_dir():
        images = [read_image(f) for f in list_images(p, "stack")]
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise ValueError(
                f"Images in {p} have different shapes {sorted(shapes)}; a stack needs one shape."
            )
        return np.stack(images)
    return read_image(p)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``finetune`` subcommand to the ``wgan-denoise`` parser."""
    p = add_command(sub, "finetune", cmd_finetune, FINETUNE_SUMMARY, FINETUNE_DESCRIPTION)
    p.add_argument("--model", required=True, help="base model name or path")
    p.add_argument("--noisy", required=True, help="image file (stack) or folder of images")
    p.add_argument("--clean", help="clean counterpart (paired mode; validation in two-stage)")
    p.add_argument(
        "--references",
        help="folder of clean images for the critic (two-stage; optional in "
        "n2n and self-supervised with --adversarial-weight)",
    )
    p.add_argument("--mode", required=True, choices=MODES)
    p.add_argument("--axis", type=int, help="axis of repeated frames (n2n)")
    p.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="training iterations (per stage); default: the mode's (500; self-supervised and "
        "two-stage 300; self-supervised with --ss-loss neighbor2neighbor or blind-spot, 1000)",
    )
    p.add_argument("--time-budget", type=float, help="stop after this many seconds")
    p.add_argument("--patch-size", type=int, help="default: the mode's (chosen for speed)")
    p.add_argument("--batch-size", type=int, help="default: the mode's (chosen for speed)")
    p.add_argument(
        "--ss-loss",
        choices=SS_LOSSES,
        help=f"self-supervised loss (default {DEFAULT_SS_LOSS})",
    )
    p.add_argument(
        "--structured",
        action=argparse.BooleanOptionalAction,
        help="structured blind-spot mask (default: when the noise check finds correlated noise)",
    )
    p.add_argument(
        "--surrogates",
        choices=SURROGATES,
        help=f"two-stage targets (default {DEFAULT_SURROGATES})",
    )
    p.add_argument("--lr", type=float)
    p.add_argument("--adversarial-weight", type=float)
    p.add_argument(
        "--average",
        type=float,
        help="decay of the weight average that is validated and kept (0: the latest weights; "
        "default: the mode's, 0.95 for paired)",
    )
    p.add_argument("--stages", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True, help="model path to write (OUT.safetensors)")
    p.add_argument("--name", help="also register the model under this name for napari")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")


def cmd_finetune(args: argparse.Namespace) -> int:
    """Run ``wgan-denoise finetune``; Ctrl-C or SIGTERM keeps the best weights so far."""
    from ..errors import EXIT_FAILED, EXIT_INTERRUPTED
    from ..interrupt import GracefulStop
    from ..models.model import model_paths, save_model
    from ..models.registry import load_model, save_user_model
    from ..output_checks import check_model_name, check_model_output
    from ..training.finetune import FinetuneConfig, FinetuneData, run_finetune
    from ..validation import check_finetune_base, check_training_length

    weights, _ = model_paths(args.output)
    check_model_output(args.output, overwrite=args.overwrite)  # both files, and writable
    if args.name:
        check_model_name(args.name, overwrite=args.overwrite)
    base = load_model(args.model)
    check_finetune_base(base)
    noisy = read_stack(args.noisy)
    clean = read_stack(args.clean) if args.clean else None
    iterations = args.iterations
    if iterations is None:  # the mode's (and self-supervised loss's) default length
        asked = FinetuneConfig(mode=args.mode, ss_loss=args.ss_loss)
        iterations = strategy_for(asked).config.iterations
    check_training_length(  # before any progress bar appears
        iterations,
        stages=args.stages,
        batch_size=1 if args.batch_size is None else args.batch_size,
        patch_size=32 if args.patch_size is None else args.patch_size,
        time_budget=args.time_budget,
        average=args.average,
    )
    bar = progress_bar(
        total=iterations * max(1, args.stages), unit="it", quiet=args.quiet, wide=True
    )

    def progress(info: dict) -> None:
        if info.get("total") and info["total"] != bar.total:  # the run's own length
            bar.total = info["total"]  # (a default the noise check changed)
            bar.refresh()
        if "noise_check" in info:  # one line, before the first iteration
            if not args.quiet or info["noise_check"]["correlated"]:
                bar.write(info["message"], file=sys.stderr)
            return
        if "status" in info:  # work before the first iteration
            bar.set_postfix_str(info["status"], refresh=True)
            return
        advance_to(bar, info["iteration"])
        metric = info.get("metric")
        if metric in info:
            bar.set_postfix({metric: f"{info[metric]:.4g}"}, refresh=False)

    with GracefulStop("saving the best weights so far") as stop:
        try:
            config = FinetuneConfig(
                mode=args.mode,
                axis=args.axis,
                iterations=args.iterations,  # None: the run's default, after the check
                time_budget=args.time_budget,
                patch_size=args.patch_size,
                batch_size=args.batch_size,
                lr=args.lr,
                adversarial_weight=args.adversarial_weight,
                stages=args.stages,
                ss_loss=args.ss_loss,
                structured=args.structured,
                surrogates=args.surrogates,
                average=args.average,
                device=args.device,
                seed=args.seed,
                name=args.name or weights.stem,
                save=False,
            )
            data = FinetuneData(noisy, clean=clean, references=args.references)
            model = run_finetune(base, data, config, progress=progress, cancel=stop.event)
        finally:
            bar.close()
        ft = model.card["finetune"]
        interrupted = stop.stopped and ft["stopped"] == "cancelled"
        if interrupted and not ft["iterations_run"]:
            print(
                "wgan-denoise: stopped before the first iteration; nothing saved.", file=sys.stderr
            )
            return EXIT_INTERRUPTED
        if not ft["improved"]:  # the best weights are the base's: no copy under a new name
            m = model.card["metrics"]
            how = "interrupted with" if interrupted else "after"
            print(
                f"wgan-denoise: no improvement over {base.name} {how} {ft['iterations_run']} "
                f"iteration(s) ({m['validation_metric']} {m['before']:.4g}); nothing saved.",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED if interrupted else EXIT_FAILED
        save_model(model, args.output)
        if args.name:
            save_user_model(model, args.name, overwrite=args.overwrite)
    m = model.card["metrics"]
    where = f"{weights}" + (f" and as user model {args.name!r}" if args.name else "")
    if interrupted:
        print(
            f"wgan-denoise: interrupted at iteration "
            f"{ft['iterations_run']}/{ft['iterations_asked']}; saved the best weights so far "
            f"(iteration {ft['best_iteration']}, "
            f"{m['validation_metric']} {m['before']:.4g} -> {m['after']:.4g}) to {where}.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if not args.quiet:
        print(f"saved {where}: {m['validation_metric']} {m['before']:.4g} -> {m['after']:.4g}")
    return 0
