"""The seed-000 training procedure (Algorithm 1): ID-MSE, ID-MSE-WGAN and its WF ablation,
plus the perceptual (VGG feature) losses of seeds 003 and 004: CNN-VGG and WGAN-VGG."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import Cancelled
from ..inference.devices import resolve_device, use_bf16
from ..metrics import psnr
from ..models.architectures import build_critic
from ..models.model import DenoiseModel, create_model, save_model
from .checkpoint import load_checkpoint, save_checkpoint
from .config import (
    CRITIC_FREE_LOSSES,
    LOSSES,
    LR_SCHEDULES,
    PERCEPTUAL_LOSSES,
    TrainConfig,
    TrainState,
    learning_rate,
)
from .llvm_clash import avoid_triton_llvm_clash
from .losses import critic_scores, gradient_penalty, patch_mse
from .perceptual import PerceptualLoss

__all__ = [
    "CRITIC_FREE_LOSSES",
    "LOSSES",
    "LR_SCHEDULES",
    "PERCEPTUAL_LOSSES",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "learning_rate",
    "run_whole",
    "train",
    "validate",
]


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
        avoid_triton_llvm_clash()  # before the first optimizer (napari's OpenGL)
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
        # On the CPU, oneDNN's convolutions run faster on channels-last (NHWC) tensors, in
        # training as in inference (denoise()); the same arithmetic, rounded in another
        # order. The trained model leaves in the default layout (plain_generator()).
        self.set_channels_last(self.device.type == "cpu")
        self.cpu_time = 0.0
        self.warm_started: dict[str, Any] | None = None
        #: Set by whoever passed ``init``: where its weights came from, for the card.
        self.initialised_from: dict[str, Any] | None = None

    def set_channels_last(self, on: bool) -> None:
        """Train in channels-last (``on``) or in the default layout: the networks and every
        batch from now on."""
        self.channels_last = bool(on)
        layout = torch.channels_last if on else torch.contiguous_format
        for net in (self.generator, self.critic):
            if net is not None:
                net.to(memory_format=layout)

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
        keys = ("architecture", "arch_config", "loss", "batch_size", "patch_size")
        self._continue_from(meta, path, keys, "use the same settings")
        self.best = dict(meta.get("best", {}))

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
        keys = ("architecture", "arch_config", "batch_size", "patch_size", "iterations")
        self._continue_from(meta, path, keys, "a warm start needs the same setting")
        self.best = {}
        self.warm_started = {"from": str(path), "iteration": self.iteration}

    def _continue_from(
        self, meta: dict[str, Any], path: str | Path, keys: tuple[str, ...], rule: str
    ) -> None:
        """Take the iteration count, learning curve and clocks of a loaded checkpoint,
        after checking that it was made with the same ``keys`` settings as this run."""
        old = meta.get("config", {})
        for key in keys:
            if key in old and old[key] != self.config.to_dict()[key]:
                raise ValueError(
                    f"Checkpoint {path} was made with {key}={old[key]!r} but this run "
                    f"asks for {self.config.to_dict()[key]!r}; {rule}."
                )
        self.iteration = int(meta["iteration"])
        self.history = list(meta.get("history", []))
        self.curve = list(meta.get("curve") or _curve_of(self.history))
        self.wall_time = float(meta.get("wall_time", 0.0))
        self.cpu_time = float(meta.get("cpu_time", 0.0))

    # -- one iteration -------------------------------------------------------------------
    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        noisy, clean = self.source.sample(self.config.batch_size, self.config.patch_size, self.rng)
        return self._to_device(noisy), self._to_device(clean)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _real(self, clean: torch.Tensor) -> torch.Tensor:
        """What the critic sees as 'real': the paired clean patches, or unpaired reference
        patches when the source offers them (seed 002's stage 2)."""
        if not getattr(self.source, "unpaired_references", False):
            return clean
        sample_real = self.source.sample_real
        real = sample_real(clean.shape[0], self.config.patch_size, self.rng)
        return self._to_device(real)

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
        # a run in parts: the previous part's _finish left the generator in the default layout
        self.set_channels_last(self.channels_last)
        stop_at = (
            cfg.iterations
            if iterations is None
            else min(cfg.iterations, self.iteration + iterations)
        )
        pairs = self.source.validation_pairs()
        start = time.perf_counter() - self.wall_time
        cpu_start = time.process_time() - self.cpu_time
        if pairs and self.iteration == 0 and self.initialised_from is not None and not self.curve:
            self._record_start(pairs)
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
                self._add_to_curve(
                    metrics["val_psnr"],
                    time.process_time() - cpu_start,
                    time.perf_counter() - start,
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

    def _record_start(self, pairs: list) -> None:
        """Score the starting weights of an initialised run on this run's validation set,
        as iteration 0 of its curve: a stage whose data or seed (and so validation set)
        differs from its predecessor's then shows where it starts, not a step that looks
        like a gain or a loss."""
        metrics = validate(self.generator, pairs, self.device)
        self._add_to_curve(metrics["val_psnr"], 0.0, 0.0, initial=True)

    def _add_to_curve(self, val_psnr: float, cpu_s: float, wall_s: float, **extra: Any) -> None:
        """Record a validation at the current iteration in the learning curve."""
        self.curve.append(
            {
                "iteration": self.iteration,
                "val_psnr": round(val_psnr, 4),
                "cpu_time_s": round(cpu_s, 1),
                "wall_time_s": round(wall_s, 1),
                "loss": self.config.loss,
                **extra,
            }
        )

    def plain_generator(self) -> torch.nn.Module:
        """The generator, turned (in place) to the default memory layout, as a model loaded
        from its file has it: channels-last is the trainer's speed choice on the CPU, not part
        of the model (the same weights in another layout round differently). ``run`` turns it
        back when training goes on."""
        return self.generator.to(memory_format=torch.contiguous_format)

    def _finish(self, pairs: list) -> DenoiseModel:
        cfg = self.config
        self.plain_generator()
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
                **({"init_weights": self.initialised_from} if self.initialised_from else {}),
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
