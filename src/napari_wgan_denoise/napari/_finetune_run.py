"""The fine-tune run: adapt a model to a layer's data in a worker thread, report loss,
validation metric and preview as :class:`~._bridge.Progress` events, and save the model
as a user model (only when it improved on its base)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np

from ..errors import Cancelled
from ..inference.channels import check_channels, split_alpha
from ..models.model import DenoiseModel
from ..models.registry import load_model, save_user_model
from ._bridge import Progress, iter_progress
from ._jobs import FinetuneJob


def _finetune_in_thread(
    job: FinetuneJob, *, progress: Any, cancel: Any, discard: Any | None = None
) -> DenoiseModel:
    """Load the base model and the data, run the core fine-tuning and save the model
    unless ``discard`` was set meanwhile (helper thread)."""
    from ..output_checks import check_model_name
    from ..training.finetune import FinetuneConfig, FinetuneData
    from ..training.finetune import run_finetune as finetune

    progress({"status": f"Loading {job.base} and {job.layer_name}"})
    base = load_model(job.base)
    channels, image = 3 if job.rgb else 1, f"Layer {job.layer_name!r}"
    check_channels(base.channels, channels, model=job.base, image=image, kind="base model")

    def read(source: Any) -> np.ndarray:
        return split_alpha(np.asarray(source), job.rgb)[0]

    data = FinetuneData(read(job.noisy), roi=job.roi)
    if job.clean is not None:
        data.clean = read(job.clean)
    if job.references is not None:
        data.references = [read(r) for r in job.references]
    lead: tuple[int, ...] = ()
    if job.preview is not None:
        plane = read(job.preview.read())
        lead = plane.shape[: len(job.preview.slice_at or ())]
        data.preview = plane.reshape(plane.shape[len(lead) :])

    def on_progress(info: dict[str, Any]) -> None:
        if "preview" in info:  # the core returns it in the input's scale: add the lead axes
            info = {**info, "preview": info["preview"].reshape(lead + info["preview"].shape)}
        progress(info)

    options = {**job.options, "axis": job.axis, "name": job.name, "save": False}
    config = FinetuneConfig.from_options(job.mode, **options)
    if job.name:  # saved here, not by the core: check the name before training, as it does
        check_model_name(job.name, overwrite=config.overwrite)
    model = finetune(base, data, config, progress=on_progress, cancel=cancel)
    if discard is not None and discard.is_set():
        raise Cancelled("Fine-tuning was stopped with its widget closed; nothing was saved.")
    if model.card["finetune"].get("improved", True):  # else nothing to save: the base's weights
        save_user_model(model, model.card["name"], overwrite=config.overwrite)
        model.card["finetune"]["saved"] = True
    return model


def run_finetune(
    job: FinetuneJob, *, cancel: Any | None = None, discard: Any | None = None
) -> Generator[Progress, None, DenoiseModel]:
    """Fine-tune and save a user model; each event carries the core's progress dicts
    (``updates``: loss, validation metric, ``"preview"`` as layer data, or ``"status"``
    while loading) and the fraction done (by iterations or by the time budget, whichever
    is further). Stop (``cancel``) keeps the best weights so far; returns the saved model.
    ``discard`` (set with ``cancel`` when the widget is closed) saves nothing and raises
    ``Cancelled``."""
    import time

    budget = job.options.get("time_budget")
    started: float | None = None
    fraction = 0.0
    steps = iter_progress(_finetune_in_thread, job, cancel=cancel, discard=discard)
    while True:
        try:
            batch = next(steps)
        except StopIteration as stop:
            return stop.value
        updates = tuple(call[0] for call in batch)
        infos = [info for info in updates if "status" not in info]
        if infos:
            started = started if started is not None else time.perf_counter()
            it, total = int(infos[-1].get("iteration", 0)), int(infos[-1].get("total", 1)) or 1
            fraction = it / total
            if budget:
                fraction = max(fraction, (time.perf_counter() - started) / budget)
        yield Progress(min(fraction, 1.0), job.description, updates)
