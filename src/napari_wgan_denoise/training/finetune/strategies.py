"""Fine-tuning modes as strategies: what the targets are, how the run is validated and
how the loss is weighed. The loop in :mod:`.loop` drives any of them.

A new mode is one subclass of :class:`Strategy` registered with :func:`register_mode`
(see ``docs/architecture.md``): it decides the data layout (``arrange``), the split
(``split``), the training targets (``targets``, ``next_targets``) and patches
(``source``), the validation metric (``validate``) and the loss settings (``loss``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ...metrics import psnr
from .config import FinetuneConfig
from .data import Session, split
from .selfsupervised import (
    DEFAULT_SS_LOSS,
    SS_ITERATIONS,
    SS_LR,
    SS_LR_FINAL,
    NoiseModel,
    SelfSupervisedSource,
    check_correlation,
    correlation_record,
    noise_record,
    resolve_loss,
    self_supervised_surrogates,
    session_noise_model,
    sure_validation,
    validation_loss,
)

#: Weight of the adversarial term in Noise2Noise mode when clean references are given
#: (the napari widget uses it; the core's default is plain Noise2Noise).
N2N_REFERENCE_WEIGHT = 1e-3
#: The same for self-supervised mode.
SS_REFERENCE_WEIGHT = 1e-3
#: How two-stage makes its surrogate targets by default, and the choices (measured in
#: docs/benchmarks.md §8: from a recorrupted self-supervised fine-tune, +1.25 / +0.29 dB
#: on held-out FMD from gray-mse-fast / fluo-wgan-fast, against +0.06 / +0.06 dB from the
#: base's own outputs).
DEFAULT_SURROGATES = "self-supervised"
SURROGATES = ("base", "ensemble", "self-supervised")


@dataclass(frozen=True)
class LossSettings:
    """The generator loss of a mode: ``"wgan"`` (MSE + critic) or ``"mse"``, how the MSE
    is reduced (``"sum"`` per patch or ``"mean"``), the adversarial weight and the lr
    (constant, or with ``lr_final`` a cosine decay to it over the run)."""

    loss: str
    reduction: str
    alpha: float
    lr: float
    lr_final: float | None = None


class Strategy:
    """One fine-tuning mode. Subclasses set ``mode`` and override what differs."""

    #: The mode's name, as ``finetune(mode=...)`` takes it.
    mode: ClassVar[str] = ""
    #: Default batch and patch size (chosen for <= 0.3 s per iteration on 2 cores).
    batch_size: ClassVar[int] = 8
    patch_size: ClassVar[int] = 64
    #: Default length (per stage) when the config leaves ``iterations`` at None.
    iterations: ClassVar[int] = 500
    #: Whether the noise check runs first (the noisy-only modes).
    checks_noise: ClassVar[bool] = False
    #: Default decay of the weight average that is validated and kept (None: the latest
    #: weights; see :class:`.loop.WeightAverage`).
    average: ClassVar[float | None] = None
    #: Default validation interval (iterations).
    val_every: ClassVar[int] = 50

    def __init__(self, config: FinetuneConfig) -> None:
        if config.iterations is None:  # the mode's default length, filled in the config
            config.iterations = self.iterations
        if config.average is None:
            config.average = self.average
        if config.val_every is None:
            config.val_every = self.val_every
        self.config = config

    def sizes(self) -> tuple[int, int]:
        """``(batch size, patch size)``: the config's, else the mode's defaults."""
        c = self.config
        batch = self.batch_size if c.batch_size is None else c.batch_size
        return batch, self.patch_size if c.patch_size is None else c.patch_size

    def arrange(self, data: np.ndarray) -> np.ndarray:
        """The noisy (and clean) data with its axes as the mode needs them."""
        return data

    def prepare(self, session: Session) -> None:
        """Look at the data before the targets are made (e.g. the noise check)."""

    def check(self, clean: Any | None) -> None:
        """ValueError when the mode lacks an input it needs."""

    def uses_critic(self) -> bool:
        """Whether the critic sees unpaired clean references (they are then loaded)."""
        return False

    def loss(self) -> LossSettings:
        """The loss, its reduction, the adversarial weight and the learning rate."""
        raise NotImplementedError

    def split(self, session: Session) -> None:
        """Hold out validation planes (or rows) and keep the rest for training."""
        session.set_split(*split(len(session.inputs), session.height))

    def targets(self, session: Session) -> list[np.ndarray] | None:
        """The training targets at the start (default: the clean planes)."""
        return session.targets

    def next_targets(self, session: Session, iteration: int) -> list[np.ndarray] | None:
        """New targets before ``iteration`` (the source is rebuilt), or None to keep them."""
        return None

    def source(self, session: Session, targets: list[np.ndarray] | None) -> Any:
        """The trainer's patch source (``sample``, ``sample_real``, ``channels``, ...);
        default: noisy patches against the same patches of ``targets`` (a mode that makes
        its pairs per batch, e.g. blind-spot masking, returns its own source)."""
        return session.source(targets)

    def validate(self, session: Session, targets: list[np.ndarray] | None) -> tuple[str, float]:
        """``(metric name, value)`` on the held-out data (default: PSNR against clean)."""
        return "val_psnr", self._psnr(session, session.val)

    def keep_latest(self, metric: str) -> bool:
        """Whether the last weights are kept instead of the best by ``metric``."""
        return False

    @staticmethod
    def _psnr(session: Session, planes: list[int]) -> float:
        assert session.targets is not None
        values = [
            psnr(session.crop_val(session.targets[i]), session.validation_output(i), peak=1.0)
            for i in planes
        ]
        return float(np.mean(values))


class Paired(Strategy):
    """Noisy and clean of the same stack: MSE + WGAN as in Algorithm 1 (seed 000)."""

    mode = "paired"
    batch_size, patch_size = 4, 48
    #: Real pairs give batches of bright patches with ten times the loss of dark ones,
    #: each of which moves the weights by up to 1 dB on held-out frames; the average,
    #: scored twice as often (docs/benchmarks.md §8), keeps the kept iteration from
    #: landing on such a kick.
    average, val_every = 0.95, 25

    def check(self, clean: Any | None) -> None:
        """Paired fine-tuning needs the clean data."""
        if clean is None:
            raise ValueError(
                "Paired fine-tuning needs a clean array (e.g. an averaged "
                "acquisition) of the same shape as the noisy one."
            )

    def loss(self) -> LossSettings:
        """Summed per-patch MSE + critic (weight 1.01), lr 1e-4."""
        w = self.config.adversarial_weight
        return LossSettings("wgan", "sum", 1.01 if w is None else w, self.config.lr or 1e-4)


class TwoStage(Strategy):
    """Only noisy data (seed 002): the base model's outputs are the targets, a critic
    compares the output with unpaired clean references; ``stages > 1`` regenerates the
    targets with the latest weights between stages."""

    mode = "two-stage"
    batch_size, patch_size = 4, 48
    checks_noise = True
    # as good as 500 on held-out FMD with self-supervised surrogates (+1.25 / +0.29 dB
    # against +1.23 / +0.26 dB, benchmarks.md §8), in ~100 s on 2 cores
    iterations = 300

    def uses_critic(self) -> bool:
        """Always: the critic is what moves the model away from its own outputs."""
        return True

    def loss(self) -> LossSettings:
        """Summed per-patch MSE + 1e-3 x critic, lr 1e-5.

        Seed 002 weighs lambda = 1e-3 against a per-pixel MSE with a -log D adversarial
        term. Our critic is a WGAN-GP critic (input-gradient norm ~1 per image, unbounded
        scores): against a per-pixel mean (~1e-4 on the 0-1 scale) it dominates and drags
        the output away (-7.6 dB on FMD in our test). Against the per-patch summed MSE of
        Algorithm 1 it acts as the small regulariser seed 002 intends.
        """
        w = self.config.adversarial_weight
        return LossSettings("wgan", "sum", 1e-3 if w is None else w, self.config.lr or 1e-5)

    def surrogate_kind(self) -> str:
        """How the surrogates are made: the config's choice, else DEFAULT_SURROGATES."""
        kind = self.config.surrogates or DEFAULT_SURROGATES
        if kind not in SURROGATES:
            raise ValueError(f"surrogates must be one of {', '.join(SURROGATES)}; got {kind!r}.")
        return kind

    def targets(self, session: Session) -> list[np.ndarray] | None:
        """Surrogate clean images: the base model's outputs, their flip/rotate ensemble,
        or those of a short self-supervised fine-tune of the base."""
        kind = self.surrogate_kind()
        session.description["surrogates"] = kind
        if kind == "self-supervised":
            return self_supervised_surrogates(session, self.config)
        return session.surrogates(ensemble=kind == "ensemble")

    def next_targets(self, session: Session, iteration: int) -> list[np.ndarray] | None:
        """Fresh surrogates from the latest weights at the start of each later stage."""
        per_stage = max(1, int(self.config.iterations))
        if self.config.stages > 1 and iteration > 1 and (iteration - 1) % per_stage == 0:
            return session.surrogates(ensemble=self.surrogate_kind() != "base")
        return None

    def validate(self, session: Session, targets: list[np.ndarray] | None) -> tuple[str, float]:
        """PSNR against clean data where given, else the MSE to the surrogates."""
        if session.targets is not None:
            return super().validate(session, targets)
        assert targets is not None
        values = [
            float(np.mean((session.validation_output(i) - session.crop_val(targets[i])) ** 2))
            for i in session.val
        ]
        return "val_mse_to_surrogate", float(np.mean(values))

    def keep_latest(self, metric: str) -> bool:
        """Without clean data the MSE to the surrogates does not measure quality."""
        return metric == "val_mse_to_surrogate"


class NoiseToNoise(Strategy):
    """Repeated acquisitions of one field along ``axis``: pairs of different frames are
    input and target (Noise2Noise), with an optional critic against clean references."""

    mode = "n2n"

    def arrange(self, data: np.ndarray) -> np.ndarray:
        """The frames axis first; ValueError without one of at least 2 frames."""
        axis = self.config.axis
        if axis is None:
            raise ValueError("Noise2Noise needs the axis of repeated acquisitions (axis=...).")
        if not -data.ndim <= axis < data.ndim:
            raise ValueError(f"axis={axis} is out of range for data of shape {data.shape}.")
        if data.shape[axis] < 2:
            raise ValueError(
                f"Noise2Noise needs at least 2 frames along axis {axis}; got {data.shape[axis]}."
            )
        self.frames = int(data.shape[axis])
        return np.moveaxis(data, axis, 0)

    def uses_critic(self) -> bool:
        """With an adversarial weight only."""
        return bool(self.config.adversarial_weight)

    def loss(self) -> LossSettings:
        """Per-pixel mean MSE, plus the critic when weighted; lr 1e-4."""
        alpha = self.config.adversarial_weight or 0.0
        return LossSettings("wgan" if alpha > 0 else "mse", "mean", alpha, self.config.lr or 1e-4)

    def split(self, session: Session) -> None:
        """Fields (the same place in every frame) are held out, or a band of rows when
        there are too few."""
        per_field = len(session.inputs) // self.frames
        # planes are frame-major: plane f * per_field + k is frame f of field k
        session.fields = [[f * per_field + k for f in range(self.frames)] for k in range(per_field)]
        session.set_split(*split(len(session.fields), session.height))

    def validate(self, session: Session, targets: list[np.ndarray] | None) -> tuple[str, float]:
        """PSNR against clean data where given, else the loss between held-out frames."""
        assert session.fields is not None
        fields = [session.fields[k] for k in session.val]
        if session.targets is not None:
            return "val_psnr", self._psnr(session, sorted({i for f in fields for i in f}))
        losses = []
        for f in fields:
            est, other = session.validation_output(f[0]), session.crop_val(session.inputs[f[1]])
            losses.append(float(np.mean((est - other) ** 2)))
        return "val_n2n_mse", float(np.mean(losses))


class SelfSupervised(Strategy):
    """Only noisy images, no pairs or repeats: a Neighbor2Neighbor or blind-spot loss on
    the noisy patches themselves, starting from the base model (issue 15); an optional
    critic against unpaired clean references (``adversarial_weight``)."""

    mode = "self-supervised"
    checks_noise = True
    iterations = SS_ITERATIONS[DEFAULT_SS_LOSS]

    def __init__(self, config: FinetuneConfig) -> None:
        # the length left to the loss (recorrupted peaks at ~300 iterations, the others at
        # ~1000-1300 on held-out FMD: benchmarks.md §8)
        self.ss_loss, self.structured = resolve_loss(config.ss_loss, config.structured, None)
        if config.iterations is None:
            config.iterations = SS_ITERATIONS[self.ss_loss]
        super().__init__(config)
        self.noise: NoiseModel | None = None
        #: The neighbour correlation the recorrupted loss draws its noise with (the noise
        #: check's reading when it flagged the stack, else 0).
        self.correlation = 0.0

    def prepare(self, session: Session) -> None:
        """The mask for the noise check's finding (correlated noise: a structured
        blind-spot mask, where it was left to it), and for the recorrupted loss the
        stack's noise model and the correlation to draw with."""
        report = session.description.get("noise_check")
        self.ss_loss, self.structured = resolve_loss(
            self.config.ss_loss, self.config.structured, report
        )
        if self.ss_loss == "recorrupted":
            self.correlation = check_correlation(report)
            self.noise = session_noise_model(session, self.correlation)
        session.description["self_supervised"] = {
            "loss": self.ss_loss,
            "structured": self.structured if self.ss_loss == "blind-spot" else None,
            "noise_model": noise_record(self.noise),
            **correlation_record(self.correlation),
        }

    def uses_critic(self) -> bool:
        """With an adversarial weight only."""
        return bool(self.config.adversarial_weight)

    def loss(self) -> LossSettings:
        """Per-pixel mean of the self-supervised loss, plus the critic when weighted; the
        loss's learning rate (:data:`SS_LR`, measured on held-out FMD), decayed on a
        cosine to :data:`SS_LR_FINAL` for the recorrupted loss."""
        alpha = self.config.adversarial_weight or 0.0
        lr = self.config.lr or SS_LR[self.ss_loss]
        final = min(lr, SS_LR_FINAL) if self.ss_loss == "recorrupted" else None
        return LossSettings("wgan" if alpha > 0 else "mse", "mean", alpha, lr, final)

    def targets(self, session: Session) -> list[np.ndarray] | None:
        """No targets: the loss is made from the noisy patches."""
        return None

    def source(self, session: Session, targets: list[np.ndarray] | None) -> Any:
        """Noisy training patches whose ``objective`` is the self-supervised loss."""
        inputs = [session.train_view(session.inputs[i]) for i in session.train]
        return SelfSupervisedSource(
            inputs,
            inputs,
            references=session.references,
            mask=session.mask,
            normalisation=session.model.normalisation,
            description=session.description,
            ss_loss=self.ss_loss,
            structured=self.structured,
            seed=self.config.seed,
            noise=self.noise,
            correlation=self.correlation,
        )

    def validate(self, session: Session, targets: list[np.ndarray] | None) -> tuple[str, float]:
        """PSNR against clean data where given; else, for the recorrupted loss, the
        Monte-Carlo SURE estimate of the MSE (an estimate of the held-out error itself,
        which the recorrupted loss on noisier inputs is not), and for the others their
        loss on the held-out planes (or rows), with fixed masks."""
        if session.targets is not None:
            return super().validate(session, targets)
        if self.noise is not None:
            return "val_sure_mse", sure_validation(session, self.noise, self.correlation)
        return "val_ss_loss", validation_loss(session, self.ss_loss, self.structured)


#: The fine-tuning modes by name, in the order the widget lists them.
STRATEGIES: dict[str, type[Strategy]] = {}


def register_mode(cls: type[Strategy]) -> type[Strategy]:
    """Make ``cls`` available as ``finetune(mode=cls.mode)`` (usable as a decorator)."""
    if not cls.mode:
        raise ValueError(f"{cls.__name__} has no mode name.")
    STRATEGIES[cls.mode] = cls
    return cls


for _cls in (Paired, TwoStage, NoiseToNoise, SelfSupervised):
    register_mode(_cls)


def strategy_for(config: FinetuneConfig) -> Strategy:
    """The strategy of ``config.mode``; ValueError naming the modes for an unknown one."""
    cls = STRATEGIES.get(config.mode)
    if cls is None:
        raise ValueError(f"mode must be one of {', '.join(STRATEGIES)}; got {config.mode!r}.")
    return cls(config)
