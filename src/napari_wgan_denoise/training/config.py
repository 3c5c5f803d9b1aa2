"""The settings of a training run (TrainConfig), what each iteration reports (TrainState)
and the learning-rate schedule."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..inference.devices import PRECISIONS
from ..validation import coerce_settings

LR_SCHEDULES = ("step", "cosine")
MSE_REDUCTIONS = ("sum", "mean", "log")
LOSSES = ("mse", "wgan", "wgan-wf", "vgg", "wgan-vgg")
#: Losses with a perceptual (VGG feature) term; ``vgg`` has no critic, ``wgan-vgg`` does.
PERCEPTUAL_LOSSES = ("vgg", "wgan-vgg")
#: Losses trained without a critic.
CRITIC_FREE_LOSSES = ("mse", "vgg")


class SettingsMixin:
    """``to_dict``/``from_dict`` for a settings dataclass (a training config): a JSON-able
    copy for cards and checkpoints, and construction from a dict (e.g. a YAML file) that
    rejects unknown keys and converts values to the field types. ``SETTINGS`` names the
    kind of setting in messages."""

    SETTINGS: ClassVar[str] = "setting"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy for cards and checkpoints."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def checked_values(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` checked against the fields: unknown keys raise ValueError; a wrong
        type names the key and the type expected."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"Unknown {cls.SETTINGS}(s) {unknown}; valid: {sorted(names)}.")
        return coerce_settings(values, cls)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Any:
        """Build a config from a dict (e.g. a YAML file), rejecting unknown keys."""
        return cls(**cls.checked_values(values))


@dataclass
class TrainConfig(SettingsMixin):
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
    relu4_3 for VGG16 and relu5_4 for VGG19; ``vgg_random_init`` is for tests only.
    ``mse_reduction="log"`` (the mean of each patch's log MSE) weighs every noise level
    alike in dB; its gradient is that of the summed MSE divided by ``C*H*W * (mse + floor)``,
    so an ``alpha`` that balanced the summed MSE is divided by about that much (128² RGB
    patches at a denoised MSE of 2-5e-4: 15-35; the cells twin's alpha 0.5 under "log" cost
    about what alpha 16 had under "sum", docs/benchmarks.md §7u)."""

    SETTINGS: ClassVar[str] = "training setting"

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
        if self.mse_reduction not in MSE_REDUCTIONS:
            raise ValueError(
                f"mse_reduction must be one of {', '.join(MSE_REDUCTIONS)}, "
                f"got {self.mse_reduction!r}."
            )
        if self.mse_reduction == "log" and self.loss in PERCEPTUAL_LOSSES:
            raise ValueError(
                "mse_reduction 'log' has no scale to weigh a perceptual term against; use "
                f"it with --loss mse or wgan (got {self.loss!r})."
            )
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

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build a config from a dict (e.g. a YAML file), rejecting unknown keys."""
        values = cls.checked_values(values)
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
