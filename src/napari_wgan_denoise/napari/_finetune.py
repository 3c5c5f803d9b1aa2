"""The "Fine-tune on this stack" widget: adapt a model to the user's own images.

Pick the noisy image layer, a mode (paired with a clean layer, two-stage with unpaired
clean references, or Noise2Noise along an axis of repeated frames), an optional ROI
(Labels or Shapes layer) and a base model; the core ``finetune`` runs in a background
worker (:func:`~._finetune_run.run_finetune`) with a live loss / validation plot, a preview of the
current slice and Stop. The result is saved as a user model, appears in the Denoise and
Compare pickers and can be applied to the layer with one click.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..models.model import DenoiseModel
from ..training.finetune import N2N_REFERENCE_WEIGHT, SS_REFERENCE_WEIGHT, STRATEGIES
from ..training.finetune.selfsupervised import SS_ITERATIONS
from ._bridge import Progress
from ._choices import (
    FINETUNE_MODES,
    METRIC_LABELS,
    format_duration,
    format_metric,
    unique_model_name,
)
from ._finetune_form import SS_LOSS_MODES, build_form, clean_label
from ._finetune_run import run_finetune
from ._jobs import FinetuneJob, check_model_name, prepare_finetune, prepare_job
from ._loss_plot import LossPlot
from ._pickers import refresh_model_pickers
from ._runner import RunnerWidget, Started
from ._runs import run_denoise
from ._viewer import show_preview

__all__ = ["FinetuneWidget", "LossPlot"]


#: The critic's weight when a reference layer is picked, by mode.
REFERENCE_WEIGHTS = {"n2n": N2N_REFERENCE_WEIGHT, "self-supervised": SS_REFERENCE_WEIGHT}


class FinetuneWidget(RunnerWidget):
    """Fine-tune a model on an image layer, watch it learn, then apply the new model.

    **Fine-tune** starts the core ``finetune`` in a background worker; **Stop** ends it
    early and keeps the best weights so far. The new user model is named
    ``"<base>-ft-<mode>-<n>"`` (or the name typed under *Save as*), refreshed into every
    open Denoise and Compare picker, and **Apply to layer** denoises the picked layer with
    it (tile size and *current slice only* apply there).
    """

    mode_picker: QComboBox
    axis_picker: QComboBox
    iterations: QSpinBox
    time_limit: QDoubleSpinBox
    preview_every: QSpinBox
    save_as: QLineEdit

    action = "fine-tune on"

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        #: Training options passed to the core that have no control (for scripts and tests).
        #: (Patch and batch sizes and the validation interval default per mode in the core.)
        self.train_options: dict[str, Any] = {
            "seed": 0,
        }
        #: Name of the last model this widget saved, and that model's card.
        self.last_model: str | None = None
        self.last_card: dict[str, Any] | None = None
        #: The running job's noise-check line and time left (seconds, once measured).
        self.noise_message = ""
        self.eta: float | None = None
        #: The preview layer of the last run.
        self.preview_layer: Any | None = None
        self._job: FinetuneJob | None = None
        self._source: Any | None = None
        self._running = "finetune"
        build_form(self)  # the pickers and spin boxes, in self.form

        self.run_button.setText("Fine-tune")
        self.cancel_button.setText("Stop")
        self.cancel_button.setToolTip("Stop early; the best weights so far are saved.")

        # tile size, TTA and "current slice only" are for Apply: they live in its box
        self.apply_button = QPushButton("Apply to layer", self)
        self.apply_button.setEnabled(False)
        self.apply_button.clicked.connect(self.apply)
        self.result_label = QLabel("No fine-tuned model yet.", self)
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        result_box = QGroupBox("Result", self)
        box = QVBoxLayout(result_box)
        box.addWidget(self.result_label)
        apply_form = QFormLayout()
        apply_form.addRow("Tile size:", self.tile_size)
        apply_form.addRow(self.tta)
        apply_form.addRow(self.current_slice)
        box.addLayout(apply_form)
        apply_row = QHBoxLayout()
        apply_row.addWidget(self.apply_button)
        box.addLayout(apply_row)

        self.plot = LossPlot(self)
        self.progress_label = QLabel("", self)
        self.progress_label.setWordWrap(True)
        for widget in (self.plot, self.progress_label, result_box):
            self.layout_.insertWidget(self.layout_.count() - 1, widget)  # above the stretch

        self.mode_picker.currentIndexChanged.connect(self._on_mode_changed)
        self.ss_loss_picker.currentIndexChanged.connect(self._on_mode_changed)
        pickers = (self.clean_picker, self.roi_picker, self.axis_picker, self.base_picker)
        self._watch(*pickers, refresh=[self.base_picker])
        self._fill_axes()
        self._on_mode_changed()

    def _place_run_options(self, form: QFormLayout) -> None:
        """Tile size, TTA and "current slice only" go to the Apply box instead."""

    # ------------------------------------------------------------------ choices

    def mode(self) -> str:
        """The picked mode: ``"paired"``, ``"two-stage"`` or ``"n2n"``."""
        return str(self.mode_picker.currentData())

    def set_mode(self, mode: str) -> None:
        """Pick a mode by its core name."""
        index = self.mode_picker.findData(mode)
        if index < 0:
            raise ValueError(f"Unknown mode {mode!r}; one of {[m for m, _, _ in FINETUNE_MODES]}.")
        self.mode_picker.setCurrentIndex(index)

    def axis(self) -> int | None:
        """The picked frames axis (data index) for Noise2Noise, or None."""
        value = self.axis_picker.currentData()
        return int(value) if value is not None else None

    def _fill_axes(self) -> None:
        """List the picked layer's non-YX axes (with their lengths) as frame axes."""
        layer = self.layer_picker.layer()
        current = self.axis()
        self.axis_picker.blockSignals(True)
        try:
            self.axis_picker.clear()
            if layer is not None:
                shape = np.shape(layer.data)
                n_lead = len(shape) - (3 if layer.rgb else 2)
                labels = list(getattr(layer, "axis_labels", []) or [])
                ndim = len(labels)
                for ax in range(max(n_lead, 0)):
                    text = f"axis {ax} ({shape[ax]} frames)"
                    label = str(labels[ax]) if ax < ndim else ""
                    if label and label != str(ax - ndim):  # napari's default labels: -3, ...
                        text = f"{label}: {text}"
                    self.axis_picker.addItem(text, ax)
            if self.axis_picker.count() == 0:
                self.axis_picker.addItem("(no stack axis)", None)
            index = self.axis_picker.findData(current) if current is not None else -1
            self.axis_picker.setCurrentIndex(max(index, 0))
        finally:
            self.axis_picker.blockSignals(False)

    def _on_layer_changed(self, layer: Any) -> None:
        self._fill_axes()
        super()._on_layer_changed(layer)

    def _mode_default(self) -> int | None:
        """The run's default length for the picked mode and self-supervised loss."""
        mode = self.mode()
        loss = self.ss_loss_picker.currentData() if mode in SS_LOSS_MODES else None
        if mode == "self-supervised" and loss in SS_ITERATIONS:
            return SS_ITERATIONS[loss]
        return STRATEGIES[mode].iterations if mode in STRATEGIES else None

    def _on_mode_changed(self, *args: Any) -> None:
        mode = self.mode()
        default = self._mode_default()
        if default and self.iterations.value() == getattr(self, "_mode_iterations", None):
            self.iterations.setValue(default)  # the user kept the last mode's default
        self._mode_iterations = default
        text, tip = clean_label(mode)
        label = self.form.labelForField(self.clean_picker)
        if label is not None:
            label.setText(text)
        self.clean_picker.setToolTip(tip)
        self.axis_picker.setEnabled(mode == "n2n")
        self.ss_loss_picker.setEnabled(mode in SS_LOSS_MODES)
        self.mode_picker.setToolTip(next(t for m, _, t in FINETUNE_MODES if m == mode))
        self.update_run_state()

    def _not_ready_for(self, layer: Any) -> str | None:
        if self.base_picker.value() is None:
            return self._no_fitting_model(self.base_picker, layer)
        mode = self.mode()
        if mode == "paired" and self.clean_picker.layer() is None:
            return (
                "Paired fine-tuning needs the clean version of the stack (e.g. an averaged "
                "acquisition): choose it under Clean, or use the two-stage mode."
            )
        if mode == "n2n" and self.axis() is None:
            return (
                f"Noise2Noise needs repeated frames of the same field along an axis, but "
                f"layer {layer.name!r} has no stack axis; use the two-stage mode."
            )
        return None

    def update_run_state(self) -> None:
        """Enable Fine-tune when idle and ready, Apply when idle with a fine-tuned model."""
        super().update_run_state()
        if hasattr(self, "apply_button"):
            ready = not self.busy and self.last_model is not None
            self.apply_button.setEnabled(ready and self.layer_picker.layer() is not None)

    # ------------------------------------------------------------------ running

    def apply(self) -> Any | None:
        """Denoise the picked layer with the last fine-tuned model (in a worker thread)."""
        return self.start_run(self._start_apply)

    def cancel(self) -> None:
        """Stop: fine-tuning ends at the next iteration and keeps the best weights so far."""
        stopping = self.busy and self._running == "finetune"
        super().cancel()
        if stopping:
            self.status.setText("Stopping: keeping the best weights so far...")

    def make_job(self) -> FinetuneJob:
        """The job for the current settings; ``ValueError`` says what is wrong."""
        reason = self._not_ready_reason()
        if reason is not None:
            raise ValueError(reason)
        layer, base, mode = self.layer_picker.layer(), self.base_picker.value(), self.mode()
        assert layer is not None and base is not None
        other = self.clean_picker.layer()
        minutes = self.time_limit.value()
        iterations, every = self.iterations.value(), self.preview_every.value()
        options = {
            **self.train_options,
            # left at the mode's default: the run's own default, which follows the loss
            # the noise check picks (1000 when it switches to the blind-spot loss), as in
            # the CLI and the API; likewise a preview left at every 10 % of the run
            "iterations": None if iterations == self._mode_iterations else iterations,
            "time_budget": minutes * 60.0 if minutes > 0 else None,
            "device": self.device(),
            "preview_every": None if every == max(1, iterations // 10) else max(every, 1),
            "adversarial_weight": REFERENCE_WEIGHTS.get(mode) if other else None,
        }
        if mode in SS_LOSS_MODES:
            options["ss_loss"] = self.ss_loss_picker.currentData()
        name = self.save_as.text().strip()
        job = prepare_finetune(
            layer,
            mode=mode,
            base=base,
            name=name or "",
            other=other,
            roi=self.roi_picker.layer(),
            axis=self.axis(),
            world_point=self.viewer.dims.point if self.preview_every.value() > 0 else None,
            options=options,
        )
        if name:
            job.name = check_model_name(name)
        else:
            job.name = unique_model_name(f"{base}-ft-{mode}")
        return job

    def _start_job(self, cancel: threading.Event) -> Started:
        job = self.make_job()
        self._running = "finetune"
        self._job, self._source = job, self.layer_picker.layer()
        self.plot.clear(job.options["iterations"] or self.iterations.value())
        self.progress_label.setText("")
        self.noise_message, self.eta = "", None

        def on_result(model: DenoiseModel) -> None:
            self.show_result(model.card)
            refresh_model_pickers(self.viewer)
            self.base_picker.refresh()

        kwargs = {"cancel": cancel, "discard": self.closed}
        return run_finetune, (job,), kwargs, on_result, job.description

    def _start_apply(self, cancel: threading.Event) -> Started:
        layer, model = self.layer_picker.layer(), self.last_model
        if layer is None or model is None:
            raise ValueError("Fine-tune a model first, then apply it to an image layer.")
        self._running = "apply"
        job = prepare_job(layer, **self._where())
        kwargs = {"cache": self.cache, "cancel": cancel}
        args = (job, model, self.options())
        return run_denoise, args, kwargs, self._adder(layer), f"{layer.name} [{model}]"

    def _on_step(self, step: Progress) -> None:
        if not step.updates:  # Apply: a plain denoising run
            super()._on_step(step)
            return
        if self.worker is None or self._job is None or self.closed.is_set():
            return
        last: dict[str, Any] = {}
        preview = None
        for info in step.updates:
            if "status" in info:
                self.progress_label.setText(str(info["status"]))
                continue
            if "noise_check" in info:  # before the first iteration
                self.noise_message = str(info.get("message", ""))
                self.progress_label.setText(self.noise_message)
                continue
            self.plot.add(info)
            self.eta = info.get("eta_s", self.eta)
            preview = info.get("preview", preview)
            last = info
        self.plot.update()
        if preview is not None:
            self.preview_layer = show_preview(
                self.viewer, preview, self._job, self.preview_layer, self._source
            )
        if last:
            it, total = int(last.get("iteration", 0)), int(last.get("total", 1)) or 1
            self.progress_label.setText(self._progress_text(it, total))
            super()._on_step(step)

    def _progress_text(self, it: int, total: int) -> str:
        bits = [f"iteration {it} / {total}"]
        if self.plot.loss:
            bits.append(f"loss {self.plot.loss[-1][1]:.4g}")
        metric = self.plot.metric
        if metric and self.plot.values:
            label = METRIC_LABELS.get(metric, (metric, True))[0]
            now = format_metric(metric, self.plot.values[-1][1])
            start = format_metric(metric, self.plot.values[0][1])
            bits.append(f"{label} {now} (start {start})")
        if self.eta is not None:  # once the first iterations are measured
            bits.append(f"about {format_duration(self.eta)} left")
        text = " · ".join(bits)
        return f"{text}<br>{self.noise_message}" if self.noise_message else text

    def show_result(self, card: dict[str, Any]) -> None:
        """Show the saved model's name, how it ended and its validation metric before → after."""
        ft = card.get("finetune", {})
        if ft.get("saved") is False:  # the best weights were still the base's
            self.result_label.setText(
                f"No improvement over {card.get('base_model', {}).get('name', 'the base')} "
                f"after {ft.get('iterations_run', '?')} iterations: nothing was saved."
            )
            self.update_run_state()
            return
        self.last_model = str(card["name"])
        self.last_card = card
        metrics = card.get("metrics", {})
        metric = str(metrics.get("validation_metric", ""))
        label, higher = METRIC_LABELS.get(metric, (metric, True))
        lines = [f"Saved as <b>{self.last_model}</b> (in the Denoise and Compare model lists)."]
        run = f"{ft.get('iterations_run', '?')} of {ft.get('iterations_asked', '?')} iterations"
        if ft.get("stopped"):
            run += f", stopped ({ft['stopped']}); best weights kept"
        lines.append(f"{run}, {ft.get('wall_time_s', '?')} s on {ft.get('device', '?')}.")
        if "before" in metrics and "after" in metrics:
            before, after = float(metrics["before"]), float(metrics["after"])
            better = "higher is better" if higher else "lower is better"
            lines.append(
                f"{label}: {format_metric(metric, before)} → {format_metric(metric, after)} "
                f"({better})."
            )
        self.result_label.setText("<br>".join(lines))
        self.apply_button.setToolTip(
            f"Denoise the picked image layer with {self.last_model} (tile size and 'current "
            "slice only' apply)."
        )
        self.update_run_state()

    def _on_returned(self, result: Any) -> None:
        super()._on_returned(result)
        if isinstance(result, DenoiseModel) and self._outcome == "done":
            if result.card.get("finetune", {}).get("saved") is False:
                self.status.setText("Done: no improvement over the base; nothing saved.")
            else:
                self.status.setText(f"Done: saved {result.card['name']}.")
