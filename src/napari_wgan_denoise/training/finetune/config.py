"""The settings of one fine-tuning run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class FinetuneConfig:
    """How to fine-tune: the mode and the training, stopping and saving settings.

    ``iterations`` is per stage (two-stage mode with ``stages > 1`` runs
    ``iterations * stages``; None takes the mode's default: 500, self-supervised and two-stage 300);
    ``time_budget`` (seconds) and cancelling end a run early with the best weights so far.
    ``lr`` and ``adversarial_weight`` default per mode (see the strategies). ``axis`` is
    the frames axis of Noise2Noise, ``axes`` the data's axis letters (e.g. ``"TZYX"``)
    when they cannot be guessed. ``name`` names the saved user
    model (default ``<base>-ft-<mode>-<time>``), ``save=False`` returns it unsaved; an
    existing user model ``name`` is replaced only with ``overwrite``.

    ``patch_size`` / ``batch_size`` default per mode (chosen for speed, see the
    strategies). Self-supervised mode: ``ss_loss`` (``"neighbor2neighbor"`` or
    ``"blind-spot"``, default the mode's), ``structured`` (structured blind-spot mask; None:
    when the noise check finds correlated noise). Two-stage: ``surrogates`` (``"base"``,
    ``"ensemble"`` of 8 flips/rotations of the base, or ``"self-supervised"``: the outputs
    of a short self-supervised fine-tune). ``preview_every`` defaults to a tenth of the
    run. ``noise_check`` runs the noise check first (in the noisy-only
    modes, self-supervised and two-stage) and reports it (progress
    ``"noise_check"``, the model card). ``val_every`` (None: the mode's, 50; paired 25) is how
    often the held-out data is scored. ``average`` (a decay, e.g. 0.95; None: the mode's
    default, 0.95 for paired; 0: off) validates, previews and keeps a moving average of
    the weights instead of the latest ones.
    """

    mode: str
    iterations: int | None = None
    time_budget: float | None = None
    patch_size: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    adversarial_weight: float | None = None
    stages: int = 1
    device: str = "auto"
    seed: int = 0
    val_every: int | None = None
    preview_every: int | None = None
    axis: int | None = None
    axes: str | None = None
    name: str | None = None
    save: bool = True
    overwrite: bool = False
    ss_loss: str | None = None
    structured: bool | None = None
    surrogates: str | None = None
    noise_check: bool = True
    average: float | None = None

    @classmethod
    def from_options(cls, mode: str, **options: Any) -> FinetuneConfig:
        """A config from keyword options; TypeError naming any unknown option."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"Unknown fine-tuning option(s): {', '.join(unknown)}.")
        return cls(mode=mode, **options)


@dataclass
class FinetuneData:
    """What to learn from: the ``noisy`` stack and, as the mode needs them, its ``clean``
    counterpart, unpaired clean ``references`` (arrays, an image file or a folder), a YX
    ``roi`` mask that patches must come from, and a ``preview`` plane (YX or YXC) to
    denoise now and then while training."""

    noisy: Any
    clean: Any | None = None
    references: Any | None = None
    roi: np.ndarray | None = None
    preview: np.ndarray | None = None
