"""The seed-000 training procedure (Algorithm 1): ID-MSE, ID-MSE-WGAN and its WF ablation,
plus the perceptual (VGG feature) losses of seeds 003 and 004: CNN-VGG and WGAN-VGG."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import Cancelled
from ..inference.devices import PRECISIONS, resolve_device, use_bf16
from ..metrics import psnr
from ..models.architectures import build_critic
from ..models.model import DenoiseModel, create_model, save_model
from ..validation import coerce_settings
from .checkpoint import load_checkpoint, save_checkpoint
from .losses import critic_scores, gradient_penalty, patch_mse
from .perceptual import PerceptualLoss

LR_SCHEDULES = ("step", "cosine")
LOSSES = ("mse", "wgan", "wgan-wf", "vgg", "wgan-vgg")
#: Losses with a perceptual (VGG feature) term; ``vgg`` has no critic, ``wgan-vgg`` does.
PERCEPTUAL_LOSSES = ("vgg", "wgan-vgg")
#: Losses trained without a critic.
CRITIC_FREE_LOSSES = ("mse", "vgg")


@dataclass
class TrainConfig:
    """Every constant of a training run. Defaults are the paper's (seed 000, Gaussian
    denoising): 40x40 patches in batches of 128 for 50 epochs of 1772 batches, Adam with
    beta = (0, 0.9), lr 1e-4 dropping to 1e-5 after 60 % (30 of 50 epochs), gradient
    penalty weight 10, adversarial weight 1.01, one critic step per generator step.

    The generator loss is ``mse_weight * MSE + perceptual_weight * P + alpha * adv``, the
    adversarial term only with a critic (``wgan``, ``wgan-wf``, ``wgan-vgg``) and ``P``
    only for the perceptual losses (``vgg`` = CNN-VGG, ``wgan-vgg`` = WGAN-VGG). ``P`` is
    the mean squared VGG feature distance (seed 004, eq. 2-3, see
    :class:`~napari_wgan_denoise.training.perceptual.PerceptualLoss`); with
    ``mse_reduction="sum"`` it is multiplied by the number of values in a patch (C*H*W),
    exactly as the summed MSE is relative to the per-pixel mean, so
    ``perceptual_weight = 1`` weighs it like the MSE under either reduction. The MSE term
    stays in by default (``mse_weight = 1``, seed 004's form); seed 003's pure CNN-VGG /
    WGAN-VGG is ``mse_weight = 0``. ``vgg_weights`` is torchvision's ImageNet VGG file (or
    ``$NAPARI_WGAN_DENOISE_VGG``); ``vgg_layers`` defaults to relu1_2, relu2_2, relu3_3,
    relu4_3 for VGG16 and relu5_4 for VGG19; ``vgg_random_init`` is for tests only."""

    architecture: str = "srresnet"
    arch_config: dict[str, Any] = field(default_factory=dict)
    critic_config: dict[str, Any] = field(default_factory=dict)
    loss: str = "wgan"
    iterations: int = 88_600
    batch_size: int = 128
    patch_size: int = 40
    lr: float = 1e-4
    lr_final: float = 1e-5
    lr_drop_at: float = 0.6
    critic_lr: float | None = None
    betas: tuple[float, float] = (0.0, 0.9)
    gp_lambda: float = 10.0
    alpha: float = 1.01
    critic_steps: int = 1
    critic_clip: tuple[float, float] | None = None
    mse_reduction: str = "sum"
    mse_weight: float = 1.0
    perceptual_weight: float = 1.0
    vgg_weights: str | None = None
    vgg_arch: str = "vgg16"
    vgg_layers: list[str] | None = None
    vgg_random_init: bool = False
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    precision: str = "auto"
    lr_schedule: str = "step"
    checkpoint_every: int = 1000
    val_every: int = 500
    keep_checkpoints: list[int] = field(default_factory=list)
    grad_clip: float | None = None

    def validate(self) -> None:
        """Raise ValueError for settings that cannot work, naming the setting."""
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {self.loss!r}.")
        for name in ("iterations", "batch_size", "patch_size", "critic_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.loss not in CRITIC_FREE_LOSSES and self.patch_size < 32:
            raise ValueError(
                f"The critic needs patches of at least 32 pixels; patch_size is "
                f"{self.patch_size}. Use --patch-size 32 or more, or --loss mse."
            )
        for name in ("mse_weight", "perceptual_weight"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.loss in PERCEPTUAL_LOSSES:
            if self.vgg_arch not in ("vgg16", "vgg19"):
                raise ValueError(f"vgg_arch must be vgg16 or vgg19, got {self.vgg_arch!r}.")
            if float(self.perceptual_weight) == 0:
                raise ValueError(
                    f"--loss {self.loss} with perceptual_weight 0 has no perceptual term; "
                    "use --loss mse or wgan instead."
                )
        elif self.loss in CRITIC_FREE_LOSSES and float(self.mse_weight) == 0:
            raise ValueError("--loss mse with mse_weight 0 has nothing to minimise.")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}."
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}."
            )
        if not 0 <= self.lr_drop_at <= 1:
            raise ValueError(f"lr_drop_at must be between 0 and 1, got {self.lr_drop_at}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy for cards and checkpoints."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a config from a dict (e.g. a YAML file), rejecting unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"Unknown training setting(s) {unknown}; valid: {sorted(names)}.")
        values = coerce_settings(values, cls)  # typed; a wrong type names key and type
        for key in ("betas", "critic_clip"):
            if values.get(key) is not None:
                values[key] = tuple(float(v) for v in values[key])
        if values.get("keep_checkpoints") is not None:
            values["keep_checkpoints"] = [int(v) for v in values["keep_checkpoints"]]
        if isinstance(values.get("vgg_layers"), str):
            values["vgg_layers"] = [s.strip() for s in values["vgg_layers"].split(",") if s.strip()]
        elif values.get("vgg_layers") is not None:
            values["vgg_layers"] = [str(s) for s in values["vgg_layers"]]
        if values.get("vgg_weights") is not None:
            values["vgg_weights"] = str(values["vgg_weights"])
        return cls(**values)


@dataclass
class TrainState:
    """What the trainer reports to a progress callback after each iteration."""

    iteration: int
    total: int
    lr: float
    g_loss: float
    mse: float
    adv: float = float("nan")
    d_loss: float = float("nan")
    wasserstein: float = float("nan")
    gp: float = float("nan")
    perceptual: float = float("nan")
    grad_norm: float = float("nan")
    val_psnr: float | None = None
    elapsed: float = 0.0
    cpu_time: float = 0.0


def learning_rate(config: TrainConfig, iteration: int) -> float:
    """The learning rate at ``iteration``: seed 000's step schedule (``lr`` until
    ``lr_drop_at`` of the run, then ``lr_final``) or a cosine decay from ``lr`` to
    ``lr_final`` over the whole run (``lr_schedule="cosine"``, used by the CPU zoo)."""
    if config.lr_schedule == "cosine":
        t = min(1.0, iteration / max(1, config.iterations))
        return config.lr_final + 0.5 * (config.lr - config.lr_final) * (1 + math.cos(math.pi * t))
    return config.lr if iteration < config.lr_drop_at * config.iterations else config.lr_final


def _curve_of(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The learning curve recovered from log records (checkpoints written before the
    curve was kept on its own)."""
    return [
        {
            "iteration": r["iteration"],
            "val_psnr": round(r["val_psnr"], 4),
            "cpu_time_s": round(r.get("cpu_time", 0.0), 1),
            "wall_time_s": round(r.get("elapsed", 0.0), 1),
        }
        for r in history
        if r.get("val_psnr") is not None
    ]


def run_whole(network: torch.nn.Module, x: np.ndarray, device: torch.device) -> np.ndarray:
    """Run a network on one whole ``(C, H, W)`` image (mirror-padded to the network's size
    multiple and cropped back), without tiling: for small validation and preview images."""
    mult = int(getattr(network, "size_multiple", 1))
    _, h, w = x.shape
    t = torch.from_numpy(np.ascontiguousarray(x))[None].to(device)
    if (-h) % mult or (-w) % mult:
        t = torch.nn.functional.pad(t, (0, (-w) % mult, 0, (-h) % mult), mode="reflect")
    with torch.no_grad():
        return network(t)[0, :, :h, :w].float().cpu().numpy()


@torch.no_grad()
def validate(
    network: torch.nn.Module, pairs: list[tuple[np.ndarray, np.ndarray]], device: torch.device
) -> dict[str, float]:
    """Mean PSNR (peak 1 on the network scale) of the network and of the raw input on
    validation pairs ``(noisy, clean)`` of shape ``(C, H, W)``."""
    if not pairs:
        return {}
    was = network.training
    network.eval()
    out, inp = [], []
    try:
        for noisy, clean in pairs:
            out.append(psnr(clean, run_whole(network, noisy, device), peak=1.0))
            inp.append(psnr(clean, noisy, peak=1.0))
    finally:
        network.train(was)
    return {"val_psnr": float(np.mean(out)), "val_input_psnr": float(np.mean(inp))}


class Trainer:
    """Trains a generator (and, for the WGAN losses, a critic) on a patch source.

    ``source`` must offer ``channels``, ``normalisation``, ``sample(batch, patch, generator)
    -> (noisy, clean)``, ``validation_pairs()`` and ``describe()`` (see
    :mod:`napari_wgan_denoise.data.datasets`); a source with an ``objective(generator,
    noisy, clean, autocast) -> (estimate, data_loss)`` computes the data term itself
    (self-supervised fine-tuning). For the perceptual losses the VGG weights
    are loaded here, so a missing file fails before any training (``FileNotFoundError``
    saying what to get). All randomness (patches, noise, the
    gradient-penalty eps) comes from one seeded CPU generator whose state is checkpointed,
    so a resumed run continues exactly as an uninterrupted one would.
    """

    def __init__(
        self,
        config: TrainConfig,
        source: Any,
        *,
        init: DenoiseModel | None = None,
        checkpoint_dir: str | Path | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.source = source
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        if init is not None:
            if init.channels != source.channels:
                raise ValueError(
                    f"Model {init.name} has {init.channels} channel(s) but the "
                    f"data has {source.channels}."
                )
            self.model = init
        else:
            self.model = create_model(
                config.architecture, channels=source.channels, **config.arch_config
            )
        self.model.card["normalisation"] = dict(source.normalisation)
        self.generator = self.model.network.to(self.device).train()
        self.critic = None
        if config.loss not in CRITIC_FREE_LOSSES:
            self.critic = (
                build_critic(self.model.architecture, source.channels, config.critic_config)
                .to(self.device)
                .train()
            )
        self.perceptual: PerceptualLoss | None = None
        if config.loss in PERCEPTUAL_LOSSES:
            self.perceptual = PerceptualLoss(
                config.vgg_weights,
                arch=config.vgg_arch,
                layers=config.vgg_layers,
                random_init=config.vgg_random_init,
            ).to(self.device)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=config.betas)
        self.opt_d = None
        if self.critic is not None:
            self.opt_d = torch.optim.Adam(
                self.critic.parameters(), lr=config.critic_lr or config.lr, betas=config.betas
            )
        self.rng = torch.Generator().manual_seed(config.seed)
        self.iteration = 0
        self.history: list[dict[str, float]] = []
        #: The learning curve: every validation (iteration, PSNR, CPU and wall time),
        #: kept whole (``history`` keeps only the last records); it goes into the card.
        self.curve: list[dict[str, float]] = []
        self.best: dict[str, Any] = {}
        self.wall_time = 0.0
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        # bf16 autocast for the networks' forward passes (CUDA, and CPUs with native bf16);
        # the losses and the gradient penalty are computed in fp32 (see step()).
        self.amp = bool(config.amp) and use_bf16(self.device, config.precision)
        self.cpu_time = 0.0
        self.warm_started: dict[str, Any] | None = None

    # -- checkpoints -------------------------------------------------------------------
    def _parts(self) -> tuple[dict, dict, dict]:
        modules = {"generator": self.generator}
        optimizers = {"generator": self.opt_g}
        if self.critic is not None:
            modules["critic"] = self.critic
            optimizers["critic"] = self.opt_d
        return modules, optimizers, {"data": self.rng}

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write a resumable checkpoint (default: ``<checkpoint_dir>/last``)."""
        if path is None:
            if self.checkpoint_dir is None:
                raise ValueError("No checkpoint folder was given to the trainer.")
            path = self.checkpoint_dir / "last"
        modules, optimizers, rng = self._parts()
        meta = {
            "iteration": self.iteration,
            "config": self.config.to_dict(),
            "card": self.model.card,
            "history": self.history[-2000:],
            "curve": self.curve,
            "best": self.best,
            "wall_time": self.wall_time,
            "cpu_time": self.cpu_time,
            "kind": "napari-wgan-denoise training checkpoint",
        }
        return save_checkpoint(path, modules=modules, optimizers=optimizers, rng=rng, meta=meta)

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint written by :meth:`save_checkpoint`."""
        modules, optimizers, rng = self._parts()
        meta = load_checkpoint(path, modules=modules, optimizers=optimizers, rng=rng)
        old = meta.get("config", {})
        for key in ("architecture", "arch_config", "loss", "batch_size", "patch_size"):
            if key in old and old[key] != self.config.to_dict()[key]:
                raise ValueError(
                    f"Checkpoint {path} was made with {key}={old[key]!r} but this run "
                    f"asks for {self.config.to_dict()[key]!r}; use the same settings."
                )
        self.iteration = int(meta["iteration"])
        self.history = list(meta.get("history", []))
        self.curve = list(meta.get("curve") or _curve_of(self.history))
        self.best = dict(meta.get("best", {}))
        self.wall_time = float(meta.get("wall_time", 0.0))
        self.cpu_time = float(meta.get("cpu_time", 0.0))

    def warm_start(self, path: str | Path) -> None:
        """Continue another run's generator: its weights, optimiser moments, data RNG,
        iteration count and learning curve, with a fresh critic. This is how a WGAN twin
        starts from its MSE twin part-way (MSE pre-training, as SRGAN does), so that both
        twins end having seen the same data for the same total number of iterations."""
        meta = load_checkpoint(
            path,
            modules={"generator": self.generator},
            optimizers={"generator": self.opt_g},
            rng={"data": self.rng},
        )
        old = meta.get("config", {})
        for key in ("architecture", "arch_config", "batch_size", "patch_size", "iterations"):
            if key in old and old[key] != self.config.to_dict()[key]:
                raise ValueError(
                    f"Checkpoint {path} was made with {key}={old[key]!r} but this run asks "
                    f"for {self.config.to_dict()[key]!r}; a warm start needs the same setting."
                )
        self.iteration = int(meta["iteration"])
        self.history = list(meta.get("history", []))
        self.curve = list(meta.get("curve") or _curve_of(self.history))
        self.best = {}
        self.wall_time = float(meta.get("wall_time", 0.0))
        self.cpu_time = float(meta.get("cpu_time", 0.0))
        self.warm_started = {"from": str(path), "iteration": self.iteration}

    # -- one iteration -------------------------------------------------------------------
    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        noisy, clean = self.source.sample(self.config.batch_size, self.config.patch_size, self.rng)
        return noisy.to(self.device, non_blocking=True), clean.to(self.device, non_blocking=True)

    def _real(self, clean: torch.Tensor) -> torch.Tensor:
        """What the critic sees as 'real': the paired clean patches, or unpaired reference
        patches when the source offers them (seed 002's stage 2)."""
        if not getattr(self.source, "unpaired_references", False):
            return clean
        sample_real = self.source.sample_real
        real = sample_real(clean.shape[0], self.config.patch_size, self.rng)
        return real.to(self.device, non_blocking=True)

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def step(self) -> TrainState:
        """One iteration of Algorithm 1: critic step(s), then the generator step."""
        cfg = self.config
        lr = learning_rate(cfg, self.iteration)
        for group in self.opt_g.param_groups:
            group["lr"] = lr
        noisy, clean = self._batch()
        state: dict[str, float] = {}
        if self.critic is not None:
            for group in self.opt_d.param_groups:
                group["lr"] = (cfg.critic_lr or cfg.lr) * lr / cfg.lr
            self.critic.requires_grad_(True)
            for k in range(cfg.critic_steps):
                if k > 0:  # extra critic steps see fresh data
                    noisy, clean = self._batch()
                real = self._real(clean)
                with torch.no_grad(), self._autocast():
                    fake = self.generator(noisy).float()
                with self._autocast():
                    d_real = critic_scores(self.critic, real, cfg.critic_clip).mean()
                    d_fake = critic_scores(self.critic, fake, cfg.critic_clip).mean()
                gp = gradient_penalty(self.critic, real, fake, self.rng, cfg.critic_clip)
                d_loss = d_fake - d_real + cfg.gp_lambda * gp  # minus eq. 6
                self.opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                self.opt_d.step()
            state.update(d_loss=d_loss.item(), wasserstein=(d_real - d_fake).item(), gp=gp.item())
            self.critic.requires_grad_(False)
            if cfg.loss == "wgan-wf":  # the ablation: a new minibatch for the generator
                noisy, clean = self._batch()
        objective = getattr(self.source, "objective", None)
        if objective is not None:  # a self-supervised source computes its own data term
            estimate, mse = objective(self.generator, noisy, clean, self._autocast)
        else:
            with self._autocast():
                estimate = self.generator(noisy).float()
            mse = patch_mse(estimate, clean, cfg.mse_reduction)
        # x * 1.0 is exact, but skipping it keeps the MSE-only graph exactly as before.
        g_loss = mse if cfg.mse_weight == 1.0 else cfg.mse_weight * mse
        if self.perceptual is not None:
            with self._autocast():
                perceptual = self.perceptual(estimate, clean)
            if cfg.mse_reduction == "sum":  # on the summed MSE's scale, see TrainConfig
                perceptual = perceptual * estimate[0].numel()
            g_loss = g_loss + cfg.perceptual_weight * perceptual
            state["perceptual"] = perceptual.item()
        if self.critic is not None:
            with self._autocast():
                adv = -critic_scores(self.critic, estimate, cfg.critic_clip).mean()
            g_loss = g_loss + cfg.alpha * adv
            state["adv"] = adv.item()
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        if cfg.grad_clip:  # a guard against the rare huge step that undoes a run
            norm = torch.nn.utils.clip_grad_norm_(self.generator.parameters(), cfg.grad_clip)
            state["grad_norm"] = float(norm)
        self.opt_g.step()
        self.iteration += 1
        return TrainState(
            iteration=self.iteration,
            total=cfg.iterations,
            lr=lr,
            g_loss=g_loss.item(),
            mse=mse.item(),
            **state,
        )

    # -- the run -------------------------------------------------------------------------
    def run(
        self,
        progress: Callable[[TrainState], Any] | None = None,
        cancel: Any | None = None,
        iterations: int | None = None,
    ) -> DenoiseModel:
        """Train until ``config.iterations`` (or ``iterations`` more steps) and return the
        model with its card filled in. Checkpoints every ``checkpoint_every`` iterations;
        on cancel a checkpoint is written and :class:`Cancelled` raised."""
        cfg = self.config
        stop_at = (
            cfg.iterations
            if iterations is None
            else min(cfg.iterations, self.iteration + iterations)
        )
        pairs = self.source.validation_pairs()
        start = time.perf_counter() - self.wall_time
        cpu_start = time.process_time() - self.cpu_time
        while self.iteration < stop_at:
            if cancel is not None and cancel.is_set():
                self.wall_time = time.perf_counter() - start
                self.cpu_time = time.process_time() - cpu_start
                if self.checkpoint_dir is not None:
                    self.save_checkpoint()
                raise Cancelled(
                    f"Training stopped at iteration {self.iteration}"
                    + (
                        f"; resume from {self.checkpoint_dir / 'last'}"
                        if self.checkpoint_dir
                        else ""
                    )
                    + "."
                )
            st = self.step()
            last = self.iteration == cfg.iterations
            if pairs and (self.iteration % cfg.val_every == 0 or last):
                metrics = validate(self.generator, pairs, self.device)
                st.val_psnr = metrics["val_psnr"]
                if not self.best or metrics["val_psnr"] > self.best["val_psnr"]:
                    self.best = {"iteration": self.iteration, **metrics}
                self.best.setdefault("val_input_psnr", metrics["val_input_psnr"])
                self.curve.append(
                    {
                        "iteration": self.iteration,
                        "val_psnr": round(metrics["val_psnr"], 4),
                        "cpu_time_s": round(time.process_time() - cpu_start, 1),
                        "wall_time_s": round(time.perf_counter() - start, 1),
                        "loss": cfg.loss,
                    }
                )
            st.elapsed = time.perf_counter() - start
            st.cpu_time = time.process_time() - cpu_start
            self.wall_time, self.cpu_time = st.elapsed, st.cpu_time
            record = {k: v for k, v in dataclasses.asdict(st).items() if v is not None}
            if self.iteration % 10 == 0 or st.val_psnr is not None or last:
                self.history.append(record)
            if progress is not None:
                progress(st)
            if self.checkpoint_dir is not None and (
                self.iteration % cfg.checkpoint_every == 0 or self.iteration == stop_at
            ):
                self.save_checkpoint()
            if self.checkpoint_dir is not None and self.iteration in cfg.keep_checkpoints:
                self.save_checkpoint(self.checkpoint_dir / f"iter-{self.iteration}")
        return self._finish(pairs)

    def _finish(self, pairs: list) -> DenoiseModel:
        cfg = self.config
        metrics = validate(self.generator, pairs, self.device) if pairs else {}
        metrics = {
            **metrics,
            "best_val_psnr": self.best.get("val_psnr"),
            "best_iteration": self.best.get("iteration"),
        }
        description = self.source.describe()
        self.model.card.update(
            noise=description.get("noise"),
            training={
                "data": description,
                "loss": cfg.loss,
                "iterations": self.iteration,
                "config": cfg.to_dict(),
                "device": str(self.device),
                "device_name": torch.cuda.get_device_name(self.device)
                if self.device.type == "cuda"
                else "cpu",
                "wall_time_s": round(self.wall_time, 1),
                "cpu_time_s": round(self.cpu_time, 1),
                "precision": "bf16" if self.amp else "fp32",
                **({"warm_start": self.warm_started} if self.warm_started else {}),
                "torch": torch.__version__,
                **(
                    {"perceptual": self.perceptual.describe()}
                    if self.perceptual is not None
                    else {}
                ),
            },
            metrics={k: v for k, v in metrics.items() if v is not None},
            learning_curve=self.curve,
        )
        self.generator.eval()
        return self.model


def train(
    config: TrainConfig,
    source: Any,
    out_path: str | Path | None = None,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: str | Path | None = None,
    progress: Callable[[TrainState], Any] | None = None,
    cancel: Any | None = None,
    init: DenoiseModel | None = None,
    card: dict[str, Any] | None = None,
) -> DenoiseModel:
    """Train a denoiser and (when ``out_path`` is given) save it as a model file pair."""
    trainer = Trainer(config, source, init=init, checkpoint_dir=checkpoint_dir)
    if resume:
        trainer.resume(resume)
    model = trainer.run(progress=progress, cancel=cancel)
    if card:
        model.card.update(card)
    if out_path is not None:
        save_model(model, out_path)
    return model
