"""The "Fine-tune on this stack" widget: adapt a model to the user's own images.

Pick the noisy image layer, a mode (paired with a clean layer, two-stage with unpaired
clean references, or Noise2Noise along an axis of repeated frames), an optional ROI
(Labels or Shapes layer) and a base model; the core :func:`finetune` runs in a background
worker with a live loss / validation plot, a preview of the current slice and Stop. The
result is saved as a user model, appears in the Denoise and Compare pickers and can be
applied to the layer with one click.
"""

from __future__ import annotations

import math
import queue
import re
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from napari.layers import Labels, Shapes
from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..inference.normalise import from_network, intensity_range
from ..models.families import default_model_for
from ..models.model import DenoiseModel
from ..models.registry import list_models, load_model
from . import _engine
from ._qt_common import ChoicePicker, LayerPicker, RunnerWidget, add_row, refresh_model_pickers

__all__ = ["FinetuneJob", "FinetuneWidget", "LossPlot", "iter_finetune", "roi_mask"]

#: ``(mode, label, tooltip)`` of the core's fine-tuning modes.
MODES: tuple[tuple[str, str, str], ...] = (
    (
        "paired",
        "paired (noisy + clean layer)",
        "You have a clean version of the same stack (e.g. an averaged acquisition): MSE + "
        "Wasserstein critic on patches of the pair; validation PSNR on held-out planes.",
    ),
    (
        "two-stage",
        "two-stage (noisy only)",
        "Only noisy images: the base model's output is the target and a critic compares "
        "the result with unpaired clean references (your reference layer, else images "
        "shipped with the package).",
    ),
    (
        "n2n",
        "Noise2Noise (repeated frames)",
        "Repeated acquisitions of the same field along an axis (time, repeats): pairs of "
        "different frames are input and target. A reference layer adds a critic.",
    ),
)

#: Weight of the adversarial term in Noise2Noise mode when a reference layer is chosen.
N2N_ADVERSARIAL_WEIGHT = 1e-3

#: What the validation metrics are called in the widget, and whether higher is better.
METRIC_LABELS: dict[str, tuple[str, bool]] = {
    "val_psnr": ("validation PSNR", True),
    "val_n2n_mse": ("validation Noise2Noise loss", False),
    "val_mse_to_surrogate": ("validation MSE to the base model's output", False),
}

PREVIEW_SUFFIX = " [fine-tune preview]"


# --------------------------------------------------------------------------- Qt-free part


def is_roi_layer(layer: Any) -> bool:
    """Labels and Shapes layers can mark where the patches come from."""
    return isinstance(layer, (Labels, Shapes))


def image_yx_shape(layer: Any) -> tuple[int, int]:
    """The ``(height, width)`` of an Image layer's planes (RGB channels excluded)."""
    shape = tuple(np.shape(layer.data))
    return tuple(shape[-3:-1] if layer.rgb else shape[-2:])  # type: ignore[return-value]


def roi_mask(layer: Labels | Shapes, yx_shape: tuple[int, int], image_name: str = "") -> np.ndarray:
    """The YX boolean mask of an ROI layer for images of ``yx_shape``.

    Labels: pixels with a label > 0 in any plane (the max projection of a stack); the
    layer's YX shape must be the image's. Shapes: the union of all shapes, drawn in the
    layer's data coordinates (projected onto YX for nD shapes). Raises ``ValueError``
    when the shapes differ or the mask is empty.
    """
    h, w = (int(n) for n in yx_shape)
    image = f"image {image_name!r}" if image_name else "the image"
    if isinstance(layer, Labels):
        data = layer.data[0] if layer.multiscale else layer.data
        labels = np.asarray(data)
        if labels.ndim < 2 or labels.shape[-2:] != (h, w):
            got = " x ".join(str(n) for n in labels.shape[-2:])
            raise ValueError(
                f"ROI layer {layer.name!r} is {got} pixels (YX) but {image} is {h} x {w}; "
                "paint the ROI on a Labels layer of the image's size (select the image, then "
                "Layers > New Labels Layer)."
            )
        mask = (labels.reshape(-1, h, w) > 0).any(axis=0)
    elif isinstance(layer, Shapes):
        shapes = [np.asarray(d)[:, -2:] for d in layer.data]
        if shapes:
            flat = Shapes(shapes, shape_type=list(layer.shape_type), ndim=2)
            mask = np.asarray(flat.to_masks((h, w))).reshape(-1, h, w).any(axis=0)
        else:
            mask = np.zeros((h, w), bool)
    else:
        raise ValueError(
            f"ROI layer {getattr(layer, 'name', layer)!r} must be a Labels or Shapes layer."
        )
    if not mask.any():
        what = "labels" if isinstance(layer, Labels) else "shapes"
        raise ValueError(
            f"ROI layer {layer.name!r} has no {what} inside {image}; paint or draw the region "
            "to learn from first (or choose no ROI)."
        )
    return mask


def _read(source: Any, rgb: bool) -> np.ndarray:
    """A layer's data as numpy (RGBA: the RGB part)."""
    arr = np.asarray(source)
    if rgb and arr.shape[-1] == 4:
        arr = arr[..., :3]
    return arr


@dataclass
class FinetuneJob:
    """Everything one fine-tuning run needs, captured from the layers in the main thread.

    Array-like data is read (``np.asarray``) in the worker thread. ``preview`` is the
    current slice of the input (a current-slice :class:`~._engine.LayerJob`), or None.
    ``options`` are passed to :func:`finetune` (iterations, time_budget, device, ...).
    """

    layer_name: str
    noisy: Any
    rgb: bool
    mode: str
    base: str
    name: str
    clean: Any | None = None
    references: list[Any] | None = None
    roi: np.ndarray | None = None
    axis: int | None = None
    preview: _engine.LayerJob | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        """One line for the progress bar and the status."""
        return f"Fine-tuning {self.base} ({self.mode}) on {self.layer_name}"


class _Either:
    """A cancel flag set when any of its flags is."""

    def __init__(self, *flags: Any) -> None:
        self.flags = [f for f in flags if f is not None]

    def is_set(self) -> bool:
        return any(f.is_set() for f in self.flags)


def _preview_mapper(
    job: FinetuneJob, model: DenoiseModel
) -> tuple[np.ndarray | None, Callable[[np.ndarray], np.ndarray] | None]:
    """The preview plane (YX or YXC) for the core and a function that turns the core's
    network-scale ``(C, H, W)`` preview into data for the preview layer (the input's dtype
    and intensity scale, with the slice's length-1 leading axes)."""
    if job.preview is None:
        return None, None
    data = _read(job.preview.read(), job.rgb)
    n_lead = len(job.preview.slice_at or ())
    plane = data.reshape(data.shape[n_lead:])
    lo, hi = intensity_range(plane, model.normalisation)
    lead = data.shape[:n_lead]

    def to_layer(values: np.ndarray) -> np.ndarray:
        vals = np.moveaxis(values, 0, -1) if job.rgb else values[0]
        out = from_network(vals, lo, hi, plane.dtype)
        return out.reshape(lead + out.shape)

    return plane, to_layer


def iter_finetune(
    job: FinetuneJob, cancel: Any | None = None
) -> Generator[list[dict[str, Any]], None, DenoiseModel]:
    """Run the core :func:`finetune` for ``job`` in a helper thread; yield its progress.

    Each yield is the list of progress dicts that arrived since the last one (iteration,
    total, loss, the validation metric when measured and, every ``preview_every``
    iterations, ``"preview"`` already mapped to the preview layer's data); the first is
    ``[{"status": ...}]`` while data and model load. Returns the saved model (Stop, i.e.
    ``cancel``, returns the best weights so far); re-raises what the core raised. Closing
    the generator early stops the run.
    """
    from ..training.finetune import finetune

    updates: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            updates.put({"status": f"Loading {job.base} and {job.layer_name}"})
            base = load_model(job.base)
            channels = 3 if job.rgb else 1
            if base.channels != channels:
                kind = "RGB" if job.rgb else "gray"
                raise ValueError(
                    f"Base model {job.base!r} does not fit the {kind} layer {job.layer_name!r}; "
                    f"choose a {kind} model."
                )
            noisy = _read(job.noisy, job.rgb)
            clean = _read(job.clean, job.rgb) if job.clean is not None else None
            references = (
                [_read(r, job.rgb) for r in job.references] if job.references is not None else None
            )
            plane, to_layer = _preview_mapper(job, base)

            def on_progress(info: dict[str, Any]) -> None:
                if to_layer is not None and "preview" in info:
                    info = {**info, "preview": to_layer(info["preview"])}
                updates.put(info)

            outcome["result"] = finetune(
                base,
                noisy,
                mode=job.mode,
                clean=clean,
                references=references,
                roi=job.roi,
                axis=job.axis,
                preview=plane,
                name=job.name,
                save=True,
                progress=on_progress,
                cancel=_Either(cancel, stop),
                **job.options,
            )
        except BaseException as exc:  # re-raised in the generator's thread
            outcome["error"] = exc
        finally:
            updates.put(None)

    thread = threading.Thread(target=work, name="napari-wgan-denoise-finetune", daemon=True)
    thread.start()
    try:
        finished = False
        while not finished:
            batch: list[dict[str, Any]] = []
            item = updates.get()
            while item is not None:
                batch.append(item)
                try:
                    item = updates.get_nowait()
                except queue.Empty:
                    break
            finished = item is None
            if batch:
                yield batch
    finally:
        stop.set()
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def format_metric(name: str, value: float) -> str:
    """A validation metric's value for people: PSNR in dB, losses with 4 digits."""
    if name == "val_psnr":
        return "inf dB" if math.isinf(value) else f"{value:.2f} dB"
    return f"{value:.4g}"


def unique_model_name(stem: str) -> str:
    """``stem``, or ``stem-2``, ``stem-3``, ... if a model of that name exists."""
    names = set(list_models())
    name, k = stem, 1
    while name in names:
        k += 1
        name = f"{stem}-{k}"
    return name


# --------------------------------------------------------------------------- Qt part


class LossPlot(QWidget):
    """A small live plot of the training loss and the validation metric, drawn with QPainter.

    The loss (blue) and the validation metric (orange dots and line) each use their own
    vertical range; the x axis is the iteration, 0 to the run's total.
    """

    LOSS_COLOR = QColor(80, 160, 230)
    METRIC_COLOR = QColor(240, 160, 50)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Training loss (blue) and validation metric (orange) by iteration.")
        self.clear()

    def clear(self, total: int = 1, metric: str = "") -> None:
        """Forget the curves; the next run has ``total`` iterations and ``metric``."""
        self.total = max(int(total), 1)
        self.metric = metric
        self.loss: list[tuple[int, float]] = []
        self.values: list[tuple[int, float]] = []
        self.update()

    def add(self, info: dict[str, Any]) -> None:
        """Add one progress dict of the core (loss and/or validation metric)."""
        it = int(info.get("iteration", 0))
        self.total = max(self.total, int(info.get("total", self.total)))
        if info.get("metric"):
            self.metric = info["metric"]
        loss = info.get("loss")
        if loss is not None and math.isfinite(loss):
            self.loss.append((it, float(loss)))
        value = info.get(self.metric) if self.metric else None
        if value is not None and math.isfinite(value):
            self.values.append((it, float(value)))

    def sizeHint(self) -> Any:  # noqa: N802 (Qt name)
        """Wide and short."""
        hint = super().sizeHint()
        hint.setHeight(120)
        return hint

    def _points(
        self, series: list[tuple[int, float]], x0: float, y0: float, w: float, h: float
    ) -> list[QPointF]:
        if not series:
            return []
        stride = max(1, len(series) // max(int(w), 1))
        pts = series[::stride] + ([series[-1]] if (len(series) - 1) % stride else [])
        ys = [v for _, v in pts]
        lo, hi = min(ys), max(ys)
        span = hi - lo if hi > lo else 1.0
        return [
            QPointF(x0 + w * it / self.total, y0 + h - h * ((v - lo) / span if hi > lo else 0.5))
            for it, v in pts
        ]

    def paintEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        """Draw the frame, both curves and their latest values."""
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = self.palette().color(self.foregroundRole())
        line_h = painter.fontMetrics().height()
        x0, y0 = 4.0, line_h + 4.0
        w, h = self.width() - 8.0, self.height() - 2.0 * line_h - 8.0
        frame = QColor(text)
        frame.setAlpha(90)
        painter.setPen(QPen(frame, 1))
        painter.drawRect(int(x0), int(y0), int(w), int(h))
        loss_pts = self._points(self.loss, x0, y0, w, h)
        metric_pts = self._points(self.values, x0, y0, w, h)
        if len(loss_pts) > 1:
            painter.setPen(QPen(self.LOSS_COLOR, 1.5))
            painter.drawPolyline(QPolygonF(loss_pts))
        if metric_pts:
            painter.setPen(QPen(self.METRIC_COLOR, 1.5))
            if len(metric_pts) > 1:
                painter.drawPolyline(QPolygonF(metric_pts))
            painter.setBrush(self.METRIC_COLOR)
            for p in metric_pts:
                painter.drawEllipse(p, 2.5, 2.5)
        # legend with the latest values (top) and the iteration axis (bottom)
        painter.setPen(self.LOSS_COLOR)
        loss_text = f"loss {self.loss[-1][1]:.4g}" if self.loss else "loss"
        painter.drawText(QPointF(x0, line_h), loss_text)
        if self.metric:
            label = METRIC_LABELS.get(self.metric, (self.metric, True))[0]
            if self.values:
                label += f" {format_metric(self.metric, self.values[-1][1])}"
            painter.setPen(self.METRIC_COLOR)
            right = x0 + w - painter.fontMetrics().horizontalAdvance(label)
            painter.drawText(QPointF(max(right, x0 + w / 2), line_h), label)
        painter.setPen(text)
        bottom = self.height() - 4.0
        painter.drawText(QPointF(x0, bottom), "0")
        end = f"{self.total} iterations"
        end_x = x0 + w - painter.fontMetrics().horizontalAdvance(end)
        painter.drawText(QPointF(end_x, bottom), end)
        painter.end()


class FinetuneWidget(RunnerWidget):
    """Fine-tune a model on an image layer, watch it learn, then apply the new model.

    **Fine-tune** starts the core :func:`finetune` in a background worker; **Stop** ends
    it early and keeps the best weights so far. The new user model is named
    ``"<base>-ft-<mode>-<time>"`` (or the name typed under *Save as*), refreshed into every
    open Denoise and Compare picker, and **Apply to layer** denoises the picked layer with
    it (tile size and *current slice only* apply there).
    """

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        #: Training options passed to the core that have no control (for scripts and tests).
        self.train_options: dict[str, Any] = {
            "patch_size": 64,
            "batch_size": 8,
            "val_every": 50,
            "seed": 0,
        }
        #: Name of the last model this widget saved, and that model's card.
        self.last_model: str | None = None
        self.last_card: dict[str, Any] | None = None
        #: The preview layer of the last run, and the layer the last Apply added.
        self.preview_layer: Any | None = None
        self.last_layer: Any | None = None
        self._next_job = "finetune"
        self._t0: float | None = None
        self._time_budget: float | None = None

        self.layer_picker = LayerPicker(napari_viewer, parent=self)
        self.mode_picker = QComboBox(self)
        for k, (value, label, tip) in enumerate(MODES):
            self.mode_picker.addItem(label, value)
            self.mode_picker.setItemData(k, tip, Qt.ItemDataRole.ToolTipRole)
        self.clean_picker = LayerPicker(napari_viewer, allow_none=True, follow=False, parent=self)
        self.axis_picker = QComboBox(self)
        self.roi_picker = LayerPicker(
            napari_viewer, allow_none=True, follow=False, accepts=is_roi_layer, parent=self
        )
        self.base_picker = ChoicePicker(
            self._model_choices,
            empty_text="No models installed",
            preferred=self._preferred_model,
            parent=self,
        )
        self.iterations = QSpinBox(self)
        self.iterations.setRange(1, 1_000_000)
        self.iterations.setSingleStep(100)
        self.iterations.setValue(500)
        self.time_limit = QDoubleSpinBox(self)
        self.time_limit.setRange(0.0, 24 * 60.0)
        self.time_limit.setDecimals(1)
        self.time_limit.setSingleStep(1.0)
        self.time_limit.setSuffix(" min")
        self.time_limit.setSpecialValueText("none")
        self.preview_every = QSpinBox(self)
        self.preview_every.setRange(0, 1_000_000)
        self.preview_every.setSingleStep(100)
        self.preview_every.setValue(200)
        self.preview_every.setSpecialValueText("off")
        self.preview_every.setSuffix(" iterations")
        self.save_as = QLineEdit(self)
        self.save_as.setPlaceholderText("automatic: <base>-ft-<mode>-<time>")

        add_row(self.form, "Image:", self.layer_picker, "The noisy image layer to learn from.")
        add_row(self.form, "Mode:", self.mode_picker)
        add_row(self.form, "Clean:", self.clean_picker)
        add_row(
            self.form,
            "Frames axis:",
            self.axis_picker,
            "Noise2Noise: the axis along which the frames repeat the same field.",
        )
        add_row(
            self.form,
            "ROI:",
            self.roi_picker,
            "Optional Labels or Shapes layer: patches are taken only inside it (labels > 0 "
            "in any plane, or the union of the shapes).",
        )
        add_row(self.form, "Base model:", self.base_picker)
        add_row(
            self.form,
            "Iterations:",
            self.iterations,
            "Training iterations; the run also ends at the time limit or with Stop.",
        )
        add_row(
            self.form,
            "Time limit:",
            self.time_limit,
            "Stop after this long and keep the best weights so far (none: no limit).",
        )
        add_row(
            self.form,
            "Preview every:",
            self.preview_every,
            "Refresh the '<image> [fine-tune preview]' layer (the current slice denoised "
            "with the model being trained) this often.",
        )
        add_row(
            self.form,
            "Save as:",
            self.save_as,
            "Name of the new user model (letters, digits, '-', '_', '.').",
        )

        self.run_button.setText("Fine-tune")
        self.cancel_button.setText("Stop")
        self.cancel_button.setToolTip("Stop early; the best weights so far are saved.")

        # tile size and "current slice only" are for Apply: move them into its box
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
        for widget in (self.tile_size, self.current_slice):
            row, _ = self.options_form.getWidgetPosition(widget)
            taken = self.options_form.takeRow(row)
            label = taken.labelItem.widget() if taken.labelItem is not None else None
            if label is not None:  # the old label: gone now, not at the next event loop
                label.hide()
                label.setParent(None)
                label.deleteLater()
            if widget is self.tile_size:
                apply_form.addRow("Tile size:", widget)
            else:
                apply_form.addRow(widget)
        box.addLayout(apply_form)
        apply_row = QHBoxLayout()
        apply_row.addWidget(self.apply_button)
        box.addLayout(apply_row)

        self.plot = LossPlot(self)
        self.progress_label = QLabel("", self)
        self.progress_label.setWordWrap(True)
        for widget in (self.plot, self.progress_label, result_box):
            self.layout_.insertWidget(self.layout_.count() - 1, widget)  # above the stretch

        self.layer_picker.layer_changed.connect(self._on_layer_changed)
        self.mode_picker.currentIndexChanged.connect(self._on_mode_changed)
        for picker in (self.clean_picker, self.roi_picker):
            picker.layer_changed.connect(lambda *_: self.update_run_state())
        self.axis_picker.currentIndexChanged.connect(lambda *_: self.update_run_state())
        self.base_picker.currentIndexChanged.connect(lambda *_: self.update_run_state())
        self._fill_axes()
        self._on_mode_changed()

    # ------------------------------------------------------------------ choices

    def mode(self) -> str:
        """The picked mode: ``"paired"``, ``"two-stage"`` or ``"n2n"``."""
        return str(self.mode_picker.currentData())

    def set_mode(self, mode: str) -> None:
        """Pick a mode by its core name."""
        index = self.mode_picker.findData(mode)
        if index < 0:
            raise ValueError(f"Unknown mode {mode!r}; one of {[m for m, _, _ in MODES]}.")
        self.mode_picker.setCurrentIndex(index)

    def axis(self) -> int | None:
        """The picked frames axis (data index) for Noise2Noise, or None."""
        value = self.axis_picker.currentData()
        return int(value) if value is not None else None

    def _model_choices(self) -> list[tuple[str, str, str, bool]]:
        return _engine.model_choices(self._channels())

    def _preferred_model(self) -> str | None:
        channels = self._channels()
        return default_model_for(channels) if channels else None

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
        self.base_picker.refresh()
        self.update_run_state()

    def _on_mode_changed(self, *args: Any) -> None:
        mode = self.mode()
        label = self.form.labelForField(self.clean_picker)
        tips = {
            "paired": (
                "Clean:",
                "The clean version of the same stack (same shape), e.g. an average of many "
                "acquisitions: the training target.",
            ),
            "two-stage": (
                "References:",
                "Optional clean images of similar content, any size (unpaired): the critic "
                "learns what clean looks like from them. (none): images shipped with the "
                "package for the base model's modality.",
            ),
            "n2n": (
                "Reference:",
                "Optional clean images of similar content (unpaired): adds a Wasserstein "
                f"critic with weight {N2N_ADVERSARIAL_WEIGHT:g}. (none): plain Noise2Noise.",
            ),
        }
        text, tip = tips[mode]
        if label is not None:
            label.setText(text)
        self.clean_picker.setToolTip(tip)
        self.axis_picker.setEnabled(mode == "n2n")
        self.mode_picker.setToolTip(next(t for m, _, t in MODES if m == mode))
        self.update_run_state()

    def _not_ready_reason(self) -> str | None:
        layer = self.layer_picker.layer()
        if layer is None:
            return "Add or open an image layer to fine-tune on."
        if self.base_picker.value() is None:
            channels = _engine.layer_channels(layer)
            if not self.base_picker.values():
                return _engine.no_model_message(channels)
            kind = "RGB" if channels == 3 else "gray"
            return f"No installed model fits the {kind} layer {layer.name!r}."
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

    def run(self) -> Any | None:
        """Start fine-tuning in a worker thread; returns the worker (None if not started)."""
        self._next_job = "finetune"
        return super().run()

    def apply(self) -> Any | None:
        """Denoise the picked layer with the last fine-tuned model (in a worker thread)."""
        self._next_job = "apply"
        try:
            return super().run()
        finally:
            self._next_job = "finetune"

    def cancel(self) -> None:
        """Stop: fine-tuning ends at the next iteration and keeps the best weights so far."""
        stopping = self.busy and self._next_running == "finetune"
        super().cancel()
        if stopping:
            self.status.setText("Stopping: keeping the best weights so far...")

    _next_running = "finetune"

    def _start_job(
        self, cancel: threading.Event
    ) -> tuple[Callable[..., Generator], tuple, dict, Callable[[Any], None], str]:
        self._next_running = self._next_job
        if self._next_job == "apply":
            return self._start_apply(cancel)
        return self._start_finetune(cancel)

    def make_job(self) -> FinetuneJob:
        """The job for the current settings; ``ValueError`` says what is wrong."""
        reason = self._not_ready_reason()
        if reason is not None:
            raise ValueError(reason)
        layer = self.layer_picker.layer()
        base = self.base_picker.value()
        assert layer is not None and base is not None
        if layer.multiscale:
            raise ValueError(
                f"Layer {layer.name!r} is multiscale (a pyramid); open its full-resolution "
                "level as a plain image layer to fine-tune on it."
            )
        mode = self.mode()
        yx = image_yx_shape(layer)
        clean = None
        references = None
        adversarial_weight = None
        other = self.clean_picker.layer()
        if other is not None and _engine.layer_channels(other) != _engine.layer_channels(layer):
            kinds = ("RGB", "gray") if layer.rgb else ("gray", "RGB")
            raise ValueError(
                f"Layer {other.name!r} is {kinds[0]} but {layer.name!r} is {kinds[1]}; "
                "the clean/reference layer must have the same kind of channels."
            )
        if mode == "paired":
            assert other is not None
            if np.shape(other.data) != np.shape(layer.data):
                raise ValueError(
                    f"The clean layer {other.name!r} has shape {np.shape(other.data)} but "
                    f"{layer.name!r} has {np.shape(layer.data)}; paired fine-tuning needs the "
                    "clean version of the same stack."
                )
            clean = other.data
        elif other is not None:
            references = [other.data]
            if mode == "n2n":
                adversarial_weight = N2N_ADVERSARIAL_WEIGHT
        roi_layer = self.roi_picker.layer()
        roi = roi_mask(roi_layer, yx, layer.name) if roi_layer is not None else None
        name = self.save_as.text().strip()
        if name:
            if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*", name):
                raise ValueError(
                    f"Invalid model name {name!r}: use letters, digits, '-', '_' and '.'."
                )
            if name in list_models():
                raise ValueError(
                    f"A model named {name!r} already exists; type another name under Save as."
                )
        else:
            name = unique_model_name(f"{base}-ft-{mode}-{time.strftime('%Y%m%d-%H%M%S')}")
        preview = None
        if self.preview_every.value() > 0:
            try:
                preview = _engine.prepare_job(
                    layer, current_slice=True, world_point=self.viewer.dims.point
                )
            except ValueError:  # the sliders are outside the layer: no preview
                preview = None
        minutes = self.time_limit.value()
        options = {
            **self.train_options,
            "iterations": self.iterations.value(),
            "time_budget": minutes * 60.0 if minutes > 0 else None,
            "device": self.device_picker.currentText() or "auto",
            "preview_every": max(self.preview_every.value(), 1),
            "adversarial_weight": adversarial_weight,
        }
        return FinetuneJob(
            layer_name=layer.name,
            noisy=layer.data,
            rgb=bool(layer.rgb),
            mode=mode,
            base=base,
            name=name,
            clean=clean,
            references=references,
            roi=roi,
            axis=self.axis() if mode == "n2n" else None,
            preview=preview,
            options=options,
        )

    def _start_finetune(
        self, cancel: threading.Event
    ) -> tuple[Callable[..., Generator], tuple, dict, Callable[[Any], None], str]:
        job = self.make_job()
        layer = self.layer_picker.layer()
        self._job = job
        self._source = layer
        self._t0 = None
        self._time_budget = job.options.get("time_budget")
        self.plot.clear(job.options["iterations"])
        self.progress_label.setText("")

        def on_result(model: DenoiseModel) -> None:
            self.show_result(model.card)
            refresh_model_pickers(self.viewer)
            self.base_picker.refresh()

        return iter_finetune, (job,), {"cancel": cancel}, on_result, job.description

    def _start_apply(
        self, cancel: threading.Event
    ) -> tuple[Callable[..., Generator], tuple, dict, Callable[[Any], None], str]:
        layer = self.layer_picker.layer()
        model = self.last_model
        if layer is None or model is None:
            raise ValueError("Fine-tune a model first, then apply it to an image layer.")
        job = _engine.prepare_job(
            layer,
            current_slice=self.current_slice.isChecked(),
            world_point=self.viewer.dims.point,
        )

        def on_result(result: _engine.DenoiseResult) -> None:
            source = layer if layer in self.viewer.layers else None
            self.last_layer = _engine.add_denoised(self.viewer, result, source)

        kwargs = {"cache": self.cache, "cancel": cancel, **self.options()}
        return _engine.run_denoise, (job, model), kwargs, on_result, f"{layer.name} [{model}]"

    def _on_step(self, step: Any) -> None:
        if not isinstance(step, list):  # Apply: (fraction, message) from the engine
            super()._on_step(step)
            return
        if self.worker is None:
            return
        last: dict[str, Any] = {}
        preview = None
        for info in step:
            if "status" in info:
                self.progress_label.setText(str(info["status"]))
                continue
            if self._t0 is None:
                self._t0 = time.perf_counter()
            self.plot.add(info)
            if "preview" in info:
                preview = info["preview"]
            last = info
        self.plot.update()
        if preview is not None:
            self.show_preview(preview)
        if not last:
            return
        it, total = int(last.get("iteration", 0)), int(last.get("total", 1)) or 1
        fraction = it / total
        if self._time_budget and self._t0 is not None:
            fraction = max(fraction, (time.perf_counter() - self._t0) / self._time_budget)
        self.progress_label.setText(self._progress_text(it, total))
        super()._on_step((min(fraction, 1.0), self._job.description))

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
        return " · ".join(bits)

    def show_preview(self, data: np.ndarray) -> Any:
        """Put ``data`` (the current slice denoised so far) into the preview layer, making
        it just above the input the first time; returns the layer."""
        job = self._job
        assert job.preview is not None
        name = job.layer_name + PREVIEW_SUFFIX
        layer = self.preview_layer
        if layer is None or layer not in self.viewer.layers or layer.name != name:
            layer = next(
                (
                    lyr
                    for lyr in self.viewer.layers
                    if lyr.name == name and _engine.METADATA_KEY in lyr.metadata
                ),
                None,
            )
        meta = {
            _engine.METADATA_KEY: {
                "what": "fine-tune preview",
                "base_model": job.base,
                "model": job.name,
                "source_layer": job.layer_name,
                "slice": list(job.preview.slice_at) if job.preview.slice_at else None,
            }
        }
        if layer is not None and getattr(layer, "rgb", False) == job.rgb:
            layer.data = data
            layer.translate = job.preview.layer_kwargs["translate"]
            layer.metadata = {**layer.metadata, **meta}
        else:
            from napari.layers import Image

            layer = Image(data, name=name, metadata=meta, **job.preview.layer_kwargs)
            self.viewer.layers.append(layer)
            source = self._source
            if source is not None and source in self.viewer.layers:
                src, dest = self.viewer.layers.index(layer), self.viewer.layers.index(source) + 1
                if dest < src:
                    self.viewer.layers.move(src, dest)
        self.preview_layer = layer
        return layer

    def show_result(self, card: dict[str, Any]) -> None:
        """Show the saved model's name, how it ended and its validation metric before → after."""
        self.last_model = str(card["name"])
        self.last_card = card
        ft = card.get("finetune", {})
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
            self.status.setText(f"Done: saved {result.card['name']}.")
