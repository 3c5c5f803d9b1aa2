"""Gradual training of the seed-004 cascade (inpainting WGAN + deblurring-denoising
auto-encoder) on clean images damaged on the fly."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..data.degrade import CleanPatchPool, DegradationConfig, damage, damage_image
from ..errors import Cancelled
from ..inference.devices import resolve_device
from ..metrics import psnr
from ..models.architectures import build_critic
from ..models.model import DenoiseModel, create_model
from .config import SettingsMixin
from .llvm_clash import avoid_triton_llvm_clash
from .losses import gradient_penalty

STAGES = ("inpaint-mse", "inpaint-adv", "restore", "joint")


@dataclass
class CascadeTrainConfig(SettingsMixin):
    """Every constant of a cascade run.

    The gradual strategy of seed 004 runs four stages: ``inpaint_mse_iterations`` of the
    inpainting generator with MSE only; ``inpaint_adv_iterations`` adding the critic (and
    the perceptual loss when ``lambda_per > 0``); ``restore_iterations`` pre-training the
    auto-encoder on blurred + noisy pairs; ``joint_iterations`` of both networks end to end
    on the final output. ``gradual=False`` is the ablation without pre-training: all the
    iterations are spent end to end from scratch. Optimiser: RMSProp (as seed 004, following
    the WGAN paper) for both networks and the critic. Losses: ``lambda_mse`` times the
    per-pixel MSE (seed 004 eq. 1), ``lambda_per`` times the VGG feature loss (eq. 2-3),
    ``lambda_adv`` times the generator's Wasserstein loss (eq. 6) with a gradient penalty of
    weight ``gp_lambda`` on the critic. The joint stage trains on the final output's loss
    only (seed 004 back-propagates from the output to the generator's input);
    ``joint_adversarial=True`` keeps the critic on the inpainting output there too.
    """

    SETTINGS: ClassVar[str] = "cascade setting"

    arch_config: dict[str, Any] = field(default_factory=dict)
    critic_config: dict[str, Any] = field(default_factory=dict)
    degradation: dict[str, Any] = field(default_factory=dict)
    inpaint_mse_iterations: int = 2000
    inpaint_adv_iterations: int = 1000
    restore_iterations: int = 2000
    joint_iterations: int = 2000
    gradual: bool = True
    batch_size: int = 16
    patch_size: int = 64
    lr: float = 2e-4
    critic_lr: float = 5e-5
    lambda_mse: float = 1.0
    lambda_per: float = 0.0
    lambda_adv: float = 1e-3
    joint_adversarial: bool = False
    gp_lambda: float = 10.0
    vgg_weights: str | None = None
    vgg_arch: str = "vgg16"
    vgg_random_init: bool = False
    seed: int = 0
    device: str = "auto"
    val_every: int = 250

    def validate(self) -> None:
        """Raise ValueError for settings that cannot work, naming the setting."""
        for name in ("batch_size", "patch_size", "val_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in (
            "inpaint_mse_iterations",
            "inpaint_adv_iterations",
            "restore_iterations",
            "joint_iterations",
        ):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.total_iterations() < 1:
            raise ValueError("The run has no iterations; give at least one stage some.")
        if self.patch_size < 32 or self.patch_size % 4:
            raise ValueError(
                f"patch_size must be a multiple of 4 and at least 32 (the critic's minimum), "
                f"got {self.patch_size}."
            )
        DegradationConfig.from_dict(self.degradation)

    def total_iterations(self) -> int:
        """Iterations of the whole run over all stages."""
        return (
            self.inpaint_mse_iterations
            + self.inpaint_adv_iterations
            + self.restore_iterations
            + self.joint_iterations
        )

    def schedule(self) -> list[tuple[str, int]]:
        """The stages to run, in order, with their iteration counts."""
        if not self.gradual:
            return [("joint", self.total_iterations())]
        counts = (
            self.inpaint_mse_iterations,
            self.inpaint_adv_iterations,
            self.restore_iterations,
            self.joint_iterations,
        )
        return [(s, n) for s, n in zip(STAGES, counts) if n > 0]


@dataclass
class CascadeState:
    """What the trainer reports after each iteration."""

    stage: str
    iteration: int
    total: int
    loss: float
    mse: float
    adv: float = float("nan")
    wasserstein: float = float("nan")
    perceptual: float = float("nan")
    val_psnr: float | None = None
    val_inpaint_psnr: float | None = None
    elapsed: float = 0.0


def validation_set(
    images: list[np.ndarray], seed: int, config: DegradationConfig, size: int = 128
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Fixed ``(network_input, hole_mask, clean)`` triples for validation: centre crops of
    ``size`` (multiple of 4) of clean 0-1 images, damaged with seeds ``seed, seed + 1, ...``."""
    out = []
    for k, img in enumerate(images):
        h, w = img.shape
        s = min(size, h - h % 4, w - w % 4)
        y0, x0 = (h - s) // 2, (w - s) // 2
        clean = img[y0 : y0 + s, x0 : x0 + s].astype(np.float32)
        observed, mask = damage_image(clean, seed + k, config)
        net_in = np.stack([observed, mask.astype(np.float32)])
        out.append((net_in, mask, clean))
    return out


class CascadeTrainer:
    """Trains a :class:`~napari_wgan_denoise.models.cascade.CascadeNetwork` stage by stage."""

    def __init__(
        self,
        config: CascadeTrainConfig,
        pool: CleanPatchPool,
        validation: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
        *,
        init: DenoiseModel | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.pool = pool
        self.degradation = DegradationConfig.from_dict(config.degradation)
        self.validation = validation or []
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        self.model = init or create_model("cascade", channels=1, **config.arch_config)
        if self.model.task != "restore":
            raise ValueError(f"Model {self.model.name} is not a cascade (restore) model.")
        self.net = self.model.network.to(self.device).train()
        self.critic = build_critic("cascade", 1, config.critic_config).to(self.device).train()
        avoid_triton_llvm_clash()  # before the first optimizer (napari's OpenGL)
        self.opt_inpaint = torch.optim.RMSprop(self.net.inpaint.parameters(), lr=config.lr)
        self.opt_restore = torch.optim.RMSprop(self.net.restore.parameters(), lr=config.lr)
        self.opt_critic = torch.optim.RMSprop(self.critic.parameters(), lr=config.critic_lr)
        self.perceptual = None
        if config.lambda_per > 0:
            from .perceptual import PerceptualLoss

            self.perceptual = PerceptualLoss(
                config.vgg_weights, arch=config.vgg_arch, random_init=config.vgg_random_init
            ).to(self.device)
        self.rng = torch.Generator().manual_seed(config.seed)
        self.iteration = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stage_results: dict[str, dict[str, float]] = {}
        self.stage_states: dict[str, dict[str, torch.Tensor]] = {}
        self.wall_time = 0.0

    # ------------------------------------------------------------------ pieces
    def _batch(self):
        clean = self.pool.sample(self.config.batch_size, self.config.patch_size, self.rng)
        d = damage(clean, self.rng, self.degradation)
        to = self.device
        return d.network_input.to(to), d.observed.to(to), d.clean.to(to), d.mask.to(to)

    def _critic_step(self, real: torch.Tensor, fake: torch.Tensor) -> float:
        self.critic.requires_grad_(True)
        d_real = self.critic(real).mean()
        d_fake = self.critic(fake.detach()).mean()
        gp = gradient_penalty(self.critic, real, fake.detach(), self.rng)
        loss = d_fake - d_real + self.config.gp_lambda * gp
        self.opt_critic.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_critic.step()
        self.critic.requires_grad_(False)
        return float((d_real - d_fake).item())

    def _terms(self, estimate: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        cfg = self.config
        mse = F.mse_loss(estimate, target)
        loss = cfg.lambda_mse * mse
        info = {"mse": float(mse.item())}
        if self.perceptual is not None:
            per = self.perceptual(estimate, target)
            loss = loss + cfg.lambda_per * per
            info["perceptual"] = float(per.item())
        return loss, info

    def step(self, stage: str) -> dict[str, float]:
        """One iteration of ``stage`` (see :data:`STAGES`)."""
        cfg = self.config
        net_in, observed, clean, _ = self._batch()
        info: dict[str, float] = {}
        if stage in ("inpaint-mse", "inpaint-adv"):
            self.net.inpaint.train()
            filled = self.net.inpaint(net_in)
            if stage == "inpaint-adv":
                info["wasserstein"] = self._critic_step(observed, filled)
            loss, terms = self._terms(filled, observed)
            info.update(terms)
            if stage == "inpaint-adv":
                adv = -self.critic(filled).mean()
                loss = loss + cfg.lambda_adv * adv
                info["adv"] = float(adv.item())
            self.opt_inpaint.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_inpaint.step()
        elif stage == "restore":
            out = self.net.restore(observed)
            loss, terms = self._terms(out, clean)
            info.update(terms)
            self.opt_restore.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_restore.step()
        elif stage == "joint":
            filled, out = self.net.stages(net_in)
            if cfg.joint_adversarial:
                info["wasserstein"] = self._critic_step(observed, filled)
            loss, terms = self._terms(out, clean)
            info.update(terms)
            if cfg.joint_adversarial:
                adv = -self.critic(filled).mean()
                loss = loss + cfg.lambda_adv * adv
                info["adv"] = float(adv.item())
            self.opt_inpaint.zero_grad(set_to_none=True)
            self.opt_restore.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_inpaint.step()
            self.opt_restore.step()
        else:
            raise ValueError(f"Unknown stage {stage!r}; stages are {STAGES}.")
        info["loss"] = float(loss.item())
        return info

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean PSNR (peak 1) on the validation crops of the input, the inpainting-only
        output and the full cascade."""
        if not self.validation:
            return {}
        was = self.net.training
        self.net.eval()
        rows = {"input": [], "inpaint": [], "cascade": []}
        try:
            for net_in, _, clean in self.validation:
                x = torch.from_numpy(net_in)[None].to(self.device)
                filled, out = self.net.stages(x)
                rows["input"].append(psnr(clean, net_in[0], peak=1.0))
                rows["inpaint"].append(psnr(clean, filled[0, 0].cpu().numpy(), peak=1.0))
                rows["cascade"].append(psnr(clean, out[0, 0].cpu().numpy(), peak=1.0))
        finally:
            self.net.train(was)
        return {f"val_{k}_psnr": float(np.mean(v)) for k, v in rows.items()}

    # ------------------------------------------------------------------ the run
    def run(
        self,
        progress: Callable[[CascadeState], Any] | None = None,
        cancel: Any | None = None,
    ) -> DenoiseModel:
        """Run every stage; keep the weights with the best validation PSNR of the final
        output once the cascade is complete (the last stage). On cancel, the best (or
        current) weights are kept and :class:`Cancelled` is raised with the model attached
        as ``exc.model``."""
        total = self.config.total_iterations()
        start = time.perf_counter()
        schedule = self.config.schedule()
        try:
            for n_stage, (stage, count) in enumerate(schedule):
                final_stage = n_stage == len(schedule) - 1
                for k in range(count):
                    if cancel is not None and cancel.is_set():
                        raise Cancelled(
                            f"Cascade training stopped in stage {stage} at iteration "
                            f"{self.iteration} of {total}."
                        )
                    info = self.step(stage)
                    self.iteration += 1
                    st = CascadeState(stage=stage, iteration=self.iteration, total=total, **info)
                    last = k == count - 1
                    if self.validation and (self.iteration % self.config.val_every == 0 or last):
                        metrics = self.evaluate()
                        st.val_psnr = metrics["val_cascade_psnr"]
                        st.val_inpaint_psnr = metrics["val_inpaint_psnr"]
                        if last:
                            self.stage_results[stage] = metrics
                        if final_stage and (
                            not self.best or metrics["val_cascade_psnr"] > self.best["val_psnr"]
                        ):
                            self.best = {"iteration": self.iteration, "val_psnr": st.val_psnr}
                            self.best_state = copy.deepcopy(self.net.state_dict())
                    st.elapsed = time.perf_counter() - start
                    if self.iteration % 10 == 0 or st.val_psnr is not None:
                        self.history.append(dataclasses.asdict(st))
                    if progress is not None:
                        progress(st)
                self.stage_states[stage] = copy.deepcopy(self.net.state_dict())
        except Cancelled as exc:
            self.wall_time = time.perf_counter() - start
            exc.model = self._finish()  # type: ignore[attr-defined]
            raise
        self.wall_time = time.perf_counter() - start
        return self._finish()

    def _finish(self) -> DenoiseModel:
        if self.best_state is not None:
            self.net.load_state_dict(self.best_state)
        final = self.evaluate()
        cfg = self.config
        self.model.card.update(
            task="restore",
            noise={"model": "poisson-gaussian + blur + holes", **self.degradation.to_dict()},
            training={
                "data": self.pool.describe(),
                "loss": "cascade (seed 004): MSE"
                + (" + perceptual" if self.perceptual is not None else "")
                + " + WGAN-GP",
                "strategy": "gradual" if cfg.gradual else "end to end from scratch",
                "stages": [list(s) for s in cfg.schedule()],
                "iterations": self.iteration,
                "config": cfg.to_dict(),
                "perceptual": self.perceptual.describe() if self.perceptual is not None else None,
                "device": str(self.device),
                "wall_time_s": round(self.wall_time, 1),
                "torch": torch.__version__,
            },
            metrics={
                **final,
                "best_iteration": self.best.get("iteration"),
                "stages": self.stage_results,
            },
        )
        self.net.eval()
        return self.model


def train_cascade(
    config: CascadeTrainConfig,
    pool: CleanPatchPool,
    validation_images: list[np.ndarray] | None = None,
    *,
    progress: Callable[[CascadeState], Any] | None = None,
    cancel: Any | None = None,
) -> DenoiseModel:
    """Train a cascade on clean images (damaged on the fly) and return it as a model."""
    degradation = DegradationConfig.from_dict(config.degradation)
    val = validation_set(validation_images or [], config.seed + 1000, degradation)
    trainer = CascadeTrainer(config, pool, val)
    return trainer.run(progress=progress, cancel=cancel)
