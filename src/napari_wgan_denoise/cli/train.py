"""``wgan-denoise train``: command-line front end of the trainer."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..training.perceptual import VGG_ENV
from ..training.trainer import LOSSES, PERCEPTUAL_LOSSES, TrainConfig, TrainState
from ..validation import check_train_settings, load_config_file
from ._command import add_command
from ._progress import advance_to, progress_bar

DATA_KEYS = (
    "clean",
    "noisy",
    "fmd",
    "noise",
    "val_fraction",
    "val_names",
    "channels",
    "mix",
    "sources",
    "balance",
    "colour_jitter",
)
CARD_KEYS = ("modality", "description", "family", "default")
PATH_KEYS = ("clean", "noisy", "fmd")


TRAIN_SUMMARY = "train a denoiser (ID-MSE or ID-MSE-WGAN)"
TRAIN_DESCRIPTION = """
Train a denoiser with Algorithm 1 of seed 000. Options given on the command line
override those of --config.
"""


def parse_kv(text: str | dict | None) -> dict[str, Any]:
    """Parse ``"n_blocks=16,features=64"`` (or pass a dict through) into a dict."""
    if text is None or isinstance(text, dict):
        return dict(text or {})
    out: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in item:
            raise ValueError(f"Expected key=value in {text!r}, got {item!r}.")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value.strip()
    return out


def _clean(record: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy of a log record: NaN (a loss that does not apply) becomes null."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in record.items()}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand to the ``wgan-denoise`` parser."""
    p = add_command(sub, "train", cmd_train, TRAIN_SUMMARY, TRAIN_DESCRIPTION)
    p.add_argument("-o", "--output", help="model path to write (OUT.safetensors + OUT.json)")
    p.add_argument("--config", help="YAML file with any of the options below (underscored keys)")
    p.add_argument(
        "--clean", help="folder of clean images (targets, or the base of synthetic noise)"
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--noisy", help="folder of noisy images matched to --clean by file name")
    g.add_argument("--fmd", help="folder in the FMD layout raw/<fov>/*.png + gt/<fov>/avg50.png")
    p.add_argument(
        "--noise",
        help="synthetic noise: gaussian:25, gaussian:0-55, poisson-gaussian:peak=5-500,read=0-0.05",
    )
    from ..models.architectures import ARCHITECTURES

    p.add_argument(
        "--architecture",
        choices=None,
        help="generator: "
        + "; ".join(
            f"{name} ({arch.description})"
            for name, arch in ARCHITECTURES.items()
            if getattr(arch, "task", "denoise") == "denoise"
        ),
    )
    p.add_argument("--arch-config", help="generator config, e.g. n_blocks=16,features=64")
    p.add_argument("--critic-config", help="critic config, e.g. features=64")
    p.add_argument(
        "--loss",
        choices=LOSSES,
        help="mse (ID-MSE), wgan (ID-MSE-WGAN), wgan-wf (its no-freezing ablation), vgg "
        "(CNN-VGG: MSE + VGG feature loss, no critic), wgan-vgg (WGAN-VGG: + critic)",
    )
    p.add_argument(
        "--mse-weight",
        type=float,
        help="weight of the pixel MSE term (1; 0 gives seed 003's pure CNN-VGG / WGAN-VGG)",
    )
    p.add_argument(
        "--perceptual-weight",
        type=float,
        help="weight of the VGG feature loss for --loss vgg/wgan-vgg (1 = on the MSE's scale)",
    )
    p.add_argument(
        "--vgg-weights",
        metavar="PATH",
        help="torchvision ImageNet VGG weights (vgg16-397923af.pth / vgg19-dcbb9e9d.pth, "
        f".pth or .safetensors) for --loss vgg/wgan-vgg; default ${VGG_ENV}",
    )
    p.add_argument("--vgg-arch", choices=("vgg16", "vgg19"), help="VGG of the weights (vgg16)")
    p.add_argument(
        "--vgg-layers",
        help="feature layers, e.g. relu1_2,relu2_2,relu3_3,relu4_3 (the VGG16 default, "
        "seed 004) or relu5_4 (the VGG19 default, WGAN-VGG)",
    )
    p.add_argument("--iterations", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--patch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--alpha", type=float, help="adversarial weight (1.01)")
    p.add_argument("--gp-lambda", type=float, help="gradient-penalty weight (10)")
    p.add_argument("--critic-clip", help="clip critic outputs, e.g. 0,100 (seed 001)")
    p.add_argument("--device")
    p.add_argument("--seed", type=int)
    p.add_argument("--val-fraction", type=float)
    p.add_argument("--modality", help="recorded in the card: gray, cells, fluo, ...")
    p.add_argument("--checkpoint-dir", help="default: OUT-checkpoints/")
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--val-every", type=int)
    p.add_argument("--resume", help="checkpoint to continue from (e.g. OUT-checkpoints/last)")
    p.add_argument(
        "--warm-start",
        metavar="CHECKPOINT",
        help="start from another run's checkpoint (generator, its optimiser, data RNG and "
        "iteration; fresh critic): the WGAN twin after MSE pre-training",
    )
    p.add_argument(
        "--init-weights",
        metavar="MODEL",
        help="start a new stage from a trained model's generator weights (same architecture; "
        "fresh optimiser, schedule and iteration count): e.g. a larger-patch continuation",
    )
    p.add_argument(
        "--cpu-budget",
        type=float,
        metavar="MINUTES",
        help="stop (with a checkpoint, no model file) once the run has used this much CPU "
        "time in all; resume later with --resume",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        help="auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32",
    )
    p.add_argument("--no-amp", action="store_true", help="fp32 only (no bf16/fp16 autocast)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output model")
    p.add_argument("-q", "--quiet", action="store_true")


def gather_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Merge the YAML config (if any) with the options given on the command line."""
    settings: dict[str, Any] = {}
    if args.config:
        settings.update(load_config_file(args.config))  # clear errors for YAML mistakes
    cli = {
        k: v
        for k, v in vars(args).items()
        if v is not None
        and k not in ("func", "command", "config", "no_amp", "overwrite", "quiet", "cpu_budget")
    }
    settings.update(cli)
    if args.no_amp:
        settings["amp"] = False
    for key in ("arch_config", "critic_config"):
        if key in settings:
            settings[key] = parse_kv(settings[key])
    if isinstance(settings.get("critic_clip"), str):
        settings["critic_clip"] = [float(v) for v in settings["critic_clip"].split(",")]
    return check_train_settings(settings, source=args.config)  # names key and expected type


def _initial_model(path: str, config: Any) -> Any:
    """The trained model whose generator weights start this run (``init_weights``), after
    checking that it is the network the config asks for."""
    from ..models.model import load_model_file

    model = load_model_file(path)
    config_of = model.card.get("config", {})
    wanted = dict(config.arch_config)
    differs = {k: (config_of.get(k), v) for k, v in wanted.items() if config_of.get(k) != v}
    if model.architecture != config.architecture or differs:
        raise ValueError(
            f"--init-weights {path} is a {model.architecture} {config_of} network but this "
            f"run asks for {config.architecture} {wanted}; give a model of the same network."
        )
    return model


def _keep_interrupted(trainer: Any, output: str, card: dict[str, Any], started_at: int) -> int:
    """After SIGINT/SIGTERM: save the weights so far as the model (the trainer has just
    written its resumable checkpoint), say where and how to continue; exit status 130."""
    from ..errors import EXIT_INTERRUPTED
    from ..interrupt import finish_interrupted_training
    from ..models.model import model_paths, save_model

    weights, _ = model_paths(output)
    checkpoint = trainer.checkpoint_dir / "last"
    if trainer.iteration == started_at:
        print("wgan-denoise: stopped before training started; nothing saved.", file=sys.stderr)
        return EXIT_INTERRUPTED
    model = finish_interrupted_training(trainer)
    model.card.update(card)
    save_model(model, output)
    print(
        f"wgan-denoise: interrupted at iteration {trainer.iteration}/{trainer.config.iterations}; "
        f"saved the model so far to {weights} and a checkpoint to {checkpoint}. "
        f"To continue, run the same command with --resume {checkpoint} --overwrite.",
        file=sys.stderr,
    )
    return EXIT_INTERRUPTED


class _CpuBudget:
    """A cancel flag that is set by ``other`` (e.g. Ctrl-C) or once a trainer has used
    ``minutes`` of CPU time in all."""

    def __init__(self, trainer: Any, minutes: float | None, other: Any = None) -> None:
        self.trainer, self.other = trainer, other
        self.seconds = None if minutes is None else 60.0 * minutes

    def reached(self) -> bool:
        """Whether the CPU budget (not another flag) is what stops the run."""
        return self.seconds is not None and self.trainer.cpu_time >= self.seconds

    def is_set(self) -> bool:
        return bool(self.other is not None and self.other.is_set()) or self.reached()


def cmd_train(args: argparse.Namespace) -> int:
    """Run ``wgan-denoise train``."""
    from ..data.recipes import build_source
    from ..errors import Cancelled
    from ..interrupt import GracefulStop
    from ..models.model import model_paths, save_model
    from ..output_checks import check_model_output, check_writable

    settings = gather_settings(args)
    output = settings.pop("output", None)
    if not output:
        raise ValueError("No output path: pass -o OUT_PATH (or 'output:' in --config).")
    weights, card_path = model_paths(output)
    check_model_output(output, overwrite=args.overwrite)  # both files, and writable
    data = {k: settings.pop(k) for k in DATA_KEYS if k in settings}
    card = {k: settings.pop(k) for k in CARD_KEYS if k in settings}
    checkpoint_dir = (
        settings.pop("checkpoint_dir", None) or f"{weights.with_suffix('')}-checkpoints"
    )
    resume = settings.pop("resume", None)
    warm = settings.pop("warm_start", None)
    init_path = settings.pop("init_weights", None)
    check_writable(checkpoint_dir, "the checkpoint folder")
    config = TrainConfig.from_dict(settings)
    config.validate()
    if config.loss in PERCEPTUAL_LOSSES and not config.vgg_random_init:
        from ..training.perceptual import resolve_vgg_weights

        resolve_vgg_weights(config.vgg_weights, config.vgg_arch)  # fail before loading data
    if not data.get("sources") and not any(data.get(k) for k in PATH_KEYS):
        raise ValueError(
            "No training data: give --clean DIR with --noise, --noisy DIR with "
            "--clean DIR, or --fmd DIR."
        )
    if (
        data.get("clean")
        and not data.get("noisy")
        and not data.get("fmd")
        and not data.get("noise")
    ):
        raise ValueError("--clean alone needs --noise (e.g. gaussian:25) to make noisy inputs.")
    init = _initial_model(init_path, config) if init_path else None  # before the data
    source = build_source(data, seed=config.seed)

    from ..training.trainer import Trainer

    trainer = Trainer(config, source, init=init, checkpoint_dir=checkpoint_dir)
    if init is not None:
        from ..models.model import init_record

        trainer.initialised_from = init_record(str(init_path), init.card)
    if resume:
        trainer.resume(resume)
    elif warm:
        trainer.warm_start(warm)
    started_at = trainer.iteration
    log_path = Path(checkpoint_dir) / "log.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    bar = progress_bar(
        total=config.iterations, initial=trainer.iteration, unit="it", quiet=args.quiet, wide=True
    )

    with log_path.open("a") as log:

        def progress(st: TrainState) -> None:
            advance_to(bar, st.iteration)
            # under mse_reduction "log" the term is the patches' mean log MSE (negative)
            term = "log_mse" if config.mse_reduction == "log" else "mse"
            post = {"loss": f"{st.g_loss:.3g}", term: f"{st.mse:.3g}"}
            if st.perceptual == st.perceptual:
                post["vgg"] = f"{st.perceptual:.3g}"
            if st.wasserstein == st.wasserstein:
                post["W"] = f"{st.wasserstein:.3g}"
            if st.val_psnr is not None:
                post["val"] = f"{st.val_psnr:.2f}dB"
                log.write(json.dumps(_clean(vars(st))) + "\n")
                log.flush()
            elif st.iteration % 100 == 0:
                log.write(json.dumps(_clean(vars(st))) + "\n")
            bar.set_postfix(post, refresh=False)

        budget = getattr(args, "cpu_budget", None)
        with GracefulStop("saving the model so far") as stop:
            limit = _CpuBudget(trainer, budget, stop.event)
            try:
                model = trainer.run(progress=progress, cancel=limit)
            except Cancelled as exc:
                if limit.reached():
                    print(f"CPU budget of {budget:g} min reached. {exc}", file=sys.stderr)
                    return 0
                model = None
            finally:
                bar.close()
            if model is None:
                return _keep_interrupted(trainer, output, card, started_at)
            model.card.update(card)
            save_model(model, output)
    if not args.quiet:
        m = model.card.get("metrics", {})
        val, inp = m.get("val_psnr", float("nan")), m.get("val_input_psnr", float("nan"))
        print(
            f"saved {weights} (iterations {trainer.iteration}, validation PSNR {val:.2f} dB, "
            f"noisy input {inp:.2f} dB)"
        )
    return 0
