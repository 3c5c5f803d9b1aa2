"""Fine-tune a model on the user's own stack: paired, two-stage (seed 002), Noise2Noise
or self-supervised.

:func:`finetune` is the public call; it builds a :class:`FinetuneConfig` (how) and a
:class:`FinetuneData` (on what) and runs the one loop, :func:`run_finetune`, with the
mode's strategy (:mod:`.strategies`). A new mode is one :class:`Strategy` subclass
registered with :func:`register_mode`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ...models.model import DenoiseModel
from .config import FinetuneConfig, FinetuneData
from .data import ArraySource, Session
from .loop import run_finetune
from .noise import NoiseReport, noise_check, stack_noise_curve, stack_noise_model
from .strategies import (
    N2N_REFERENCE_WEIGHT,
    SS_REFERENCE_WEIGHT,
    STRATEGIES,
    LossSettings,
    NoiseToNoise,
    Paired,
    SelfSupervised,
    Strategy,
    TwoStage,
    register_mode,
)

#: The modes ``finetune`` knows (more can be registered).
MODES = tuple(STRATEGIES)

__all__ = [
    "MODES",
    "N2N_REFERENCE_WEIGHT",
    "SS_REFERENCE_WEIGHT",
    "NoiseReport",
    "STRATEGIES",
    "ArraySource",
    "FinetuneConfig",
    "FinetuneData",
    "LossSettings",
    "NoiseToNoise",
    "Paired",
    "SelfSupervised",
    "Session",
    "Strategy",
    "TwoStage",
    "finetune",
    "noise_check",
    "stack_noise_curve",
    "stack_noise_model",
    "register_mode",
    "run_finetune",
]


def finetune(
    base: DenoiseModel | str,
    noisy: Any,
    *,
    mode: str,
    clean: Any | None = None,
    references: Any | None = None,
    roi: np.ndarray | None = None,
    preview: np.ndarray | None = None,
    progress: Callable[[dict[str, Any]], Any] | None = None,
    cancel: Any | None = None,
    **options: Any,
) -> DenoiseModel:
    """Adapt ``base`` to the user's data and (by default) save it as a user model.

    Modes:
    - ``"paired"``: ``noisy`` and a ``clean`` array of the same shape; MSE + WGAN as in
      Algorithm 1 (seed 000) on patches of the pair.
    - ``"two-stage"`` (seed 002): only ``noisy``. Surrogate targets ``X_s = G0(Y)`` come
      from the base model; ``G`` starts from ``G0``; loss = MSE(G(Y), X_s) (summed per
      patch, see :meth:`TwoStage.loss`) + ``adversarial_weight`` (1e-3) x adversarial, the
      critic judging G(Y) against unpaired clean ``references`` (default: clean images
      shipped for the model's modality); lr 1e-5. ``stages > 1`` regenerates X_s with the
      latest G between stages. A ``clean`` array, if given, is used for validation only.
    - ``"n2n"``: ``noisy`` holds repeated acquisitions of the same field along ``axis``;
      pairs of different frames are input and target (Noise2Noise), MSE plus an optional
      adversarial term (needs references).
    - ``"self-supervised"``: only ``noisy``, no pairs or repeats: ``ss_loss``
      ``"recorrupted"`` (default: Recorrupted-to-Recorrupted pairs at the stack's own
      noise level, measured bin by bin by :func:`stack_noise_curve`, and with its neighbour
      correlation when the noise check finds correlated noise), ``"neighbor2neighbor"`` or
      ``"blind-spot"`` (N2V2-style; a structured mask when the noise check finds
      correlated noise), from the base model;
      optional adversarial term (``adversarial_weight``, references). Validation: the
      same loss on the held-out planes / rows with fixed masks / noise
      (``val_ss_loss``).

    Before training a noise check (:func:`noise_check`) measures the neighbour correlation
    of the base model's residual and a variance-vs-mean fit; it is reported in the first
    progress call (``"noise_check"``, ``"message"``) and in the model card. A run whose
    best weights are still the base's (no improvement) saves nothing
    (``card["finetune"]["saved"]`` is False).

    ``options`` are the fields of :class:`FinetuneConfig` (iterations, time_budget,
    patch_size, batch_size, lr, adversarial_weight, stages, device, seed, val_every,
    preview_every, axis, axes, name, save, overwrite, ss_loss, structured, surrogates,
    noise_check). Patches come only from inside ``roi`` (a YX
    mask) when given. 15 % of the planes (or a band of rows for a single plane) is held
    out: validation PSNR against ``clean`` where known, else the Noise2Noise loss between
    held-out frames (n2n), else the MSE to the surrogate (two-stage, where the last
    weights are kept). The best weights are kept; ``cancel`` or ``time_budget`` stops
    early and returns the best so far. ``progress(info)`` receives iteration, loss,
    validation metric and, every ``preview_every`` iterations when ``preview`` (a YX or
    YXC plane) is given, ``"preview"``: that plane denoised so far, in its own dtype and
    intensity scale.
    """
    data = FinetuneData(noisy, clean, references, roi, preview)
    config = FinetuneConfig.from_options(mode, **options)
    return run_finetune(base, data, config, progress=progress, cancel=cancel)
