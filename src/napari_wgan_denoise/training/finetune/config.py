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
    ``iterations * stages``); ``time_budget`` (seconds) and cancelling end a run early
    with the best weights so far. ``lr`` and ``adversarial_weight`` default per mode (see
    the strategies). ``axis`` is the frames axis of Noise2Noise, ``axes`` the data's axis
    letters (e.g. ``"TZYX"``) when they cannot be guessed. ``name`` names the saved user
    model (default ``<base>-ft-<mode>-<time>``), ``save=False`` returns it unsaved; an
    existing user model ``name`` is replaced only with ``overwrite``.
    """

    mode: str
    iterations: int = 500
    time_budget: float | None = None
    patch_size: int = 64
    batch_size: int = 8
    lr: float | None = None
    adversarial_weight: float | None = None
    stages: int = 1
    device: str = "auto"
    seed: int = 0
    val_every: int = 50
    preview_every: int = 200
    axis: int | None = None
    axes: str | None = None
    name: str | None = None
    save: bool = True
    overwrite: bool = False

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
