"""Qt pieces shared by the Denoise and Compare widgets: pickers and the worker runner."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator
from typing import Any

from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QStandardItem, QStandardItemModel
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..errors import Cancelled
from ..inference import available_devices
from . import _engine

logger = logging.getLogger(__name__)

#: napari progress bars count in thousandths of the whole run.
PROGRESS_STEPS = 1000


class LayerPicker(QComboBox):
    """The viewer's Image layers, kept in step with the layer list.

    Choices follow layers being added, removed, moved and renamed; with ``follow=True``
    the picker also jumps to an image layer the user selects in the layer list (but not
    to outputs of this plugin, so that a new result does not become the next input).
    ``allow_none`` adds a first ``(none)`` choice (the Compare widget's reference).
    ``accepts`` lists other kinds of layers instead (e.g. Labels and Shapes for an ROI).
    """

    layer_changed = Signal(object)

    def __init__(
        self,
        viewer: Any,
        *,
        allow_none: bool = False,
        follow: bool = True,
        accepts: Callable[[Any], bool] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.allow_none = allow_none
        self.follow = follow
        #: Which layers are listed (default: Image layers).
        self.accepts: Callable[[Any], bool] = accepts or _engine.is_image_layer
        self._layers: list[Any] = []
        self._refreshing = False
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        events = viewer.layers.events
        for name in ("inserted", "removed", "moved", "reordered"):
            getattr(events, name).connect(self.refresh)
        viewer.layers.selection.events.active.connect(self._on_active)
        self.currentIndexChanged.connect(self._emit_changed)
        self.refresh()
        if follow:
            self._on_active()

    def layer(self) -> Any | None:
        """The picked layer, or None."""
        i = self.currentIndex()
        return self._layers[i] if 0 <= i < len(self._layers) else None

    def set_layer(self, layer: Any | None) -> None:
        """Pick ``layer`` (None picks ``(none)`` where allowed)."""
        for i, lyr in enumerate(self._layers):
            if lyr is layer or (layer is not None and lyr is not None and lyr == layer):
                self.setCurrentIndex(i)
                return

    def refresh(self, event: Any = None) -> None:
        """Rebuild the choices from the layer list, keeping the picked layer if it is there."""
        current = self.layer()
        layers: list[Any] = [None] if self.allow_none else []
        for lyr in reversed(list(self.viewer.layers)):  # top of the layer list first
            if self.accepts(lyr):
                layers.append(lyr)
                lyr.events.name.connect(self.refresh)
        self._refreshing = True
        try:
            self.clear()
            self._layers = layers
            for lyr in layers:
                self.addItem("(none)" if lyr is None else lyr.name)
            if current is not None and current in layers:
                self.setCurrentIndex(layers.index(current))
            elif layers:  # prefer the user's own data over this plugin's outputs
                inputs = [
                    i
                    for i, lyr in enumerate(layers)
                    if lyr is not None and _engine.METADATA_KEY not in lyr.metadata
                ]
                self.setCurrentIndex(inputs[0] if inputs and not self.allow_none else 0)
        finally:
            self._refreshing = False
        if self.layer() is not current:
            self.layer_changed.emit(self.layer())

    def _on_active(self, event: Any = None) -> None:
        if not self.follow:
            return
        active = self.viewer.layers.selection.active
        if (
            active is not None
            and self.accepts(active)
            and _engine.METADATA_KEY not in active.metadata
            and active in self._layers
        ):
            self.set_layer(active)

    def _emit_changed(self, index: int) -> None:
        if not self._refreshing:
            self.layer_changed.emit(self.layer())


class ChoicePicker(QComboBox):
    """A combo box of ``(value, label, tooltip, enabled)`` choices; disabled ones are grey
    and cannot be picked. ``source`` is called again each time the list opens; the picked
    choice is kept while it stays enabled, else ``preferred()`` or the first enabled one."""

    def __init__(
        self,
        source: Callable[[], list[tuple[str, str, str, bool]]],
        *,
        empty_text: str,
        preferred: Callable[[], str | None] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.source = source
        #: Picked when the current choice is gone or greyed out (e.g. the default model).
        self.preferred: Callable[[], str | None] = preferred or (lambda: None)
        self.empty_text = empty_text
        self._model = QStandardItemModel(self)
        self.setModel(self._model)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(16)
        self.currentIndexChanged.connect(self._update_tooltip)
        self.refresh()

    def value(self) -> str | None:
        """The picked choice's value, or None if nothing usable is picked."""
        item = self._model.item(self.currentIndex()) if self.currentIndex() >= 0 else None
        if item is None or not item.isEnabled():
            return None
        return item.data(Qt.ItemDataRole.UserRole)

    def values(self, *, enabled_only: bool = False) -> list[str]:
        """All choice values (optionally only the enabled ones), in order."""
        out = []
        for row in range(self._model.rowCount()):
            item = self._model.item(row)
            value = item.data(Qt.ItemDataRole.UserRole)
            if value is not None and (item.isEnabled() or not enabled_only):
                out.append(value)
        return out

    def is_enabled(self, value: str) -> bool:
        """Whether the choice ``value`` is listed and can be picked."""
        return value in self.values(enabled_only=True)

    def set_value(self, value: str) -> bool:
        """Pick ``value`` if it is listed and enabled; returns whether it was."""
        for row in range(self._model.rowCount()):
            item = self._model.item(row)
            if item.data(Qt.ItemDataRole.UserRole) == value and item.isEnabled():
                self.setCurrentIndex(row)
                return True
        return False

    def refresh(self) -> None:
        """Re-read the choices, keeping the picked one if it is still enabled."""
        current = self.value()
        self.blockSignals(True)
        try:
            self._model.clear()
            choices = self.source()
            if not choices:
                placeholder = QStandardItem(self.empty_text)
                placeholder.setEnabled(False)
                self._model.appendRow(placeholder)
            for value, label, tip, enabled in choices:
                item = QStandardItem(label)
                item.setData(value, Qt.ItemDataRole.UserRole)
                item.setToolTip(tip)
                item.setEnabled(enabled)
                self._model.appendRow(item)
            self.setCurrentIndex(0)
            if not (current and self.set_value(current)):
                preferred = self.preferred()
                if not (preferred and self.set_value(preferred)):
                    enabled = self.values(enabled_only=True)
                    if enabled:
                        self.set_value(enabled[0])
        finally:
            self.blockSignals(False)
        self.currentIndexChanged.emit(self.currentIndex())

    def _update_tooltip(self, index: int) -> None:
        item = self._model.item(index) if index >= 0 else None
        self.setToolTip(item.toolTip() if item is not None else "")

    def showPopup(self) -> None:  # noqa: N802 (Qt name)
        """Re-scan (e.g. for models saved since) before the list opens."""
        self.refresh()
        super().showPopup()


class RunnerWidget(QWidget):
    """Base of the plugin's widgets: run options, Run/Cancel and the worker.

    Subclasses add their pickers to ``self.form`` (the image one as ``self.layer_picker``)
    and implement ``_start_job`` returning a generator (run in a napari ``thread_worker``)
    and a callback for its result.
    """

    #: Emitted in the main thread when a run ends: "done", "cancelled" or "error".
    run_finished = Signal(str)

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.cache = _engine.ModelCache()
        #: Tiles per batch (None: the core's default); tests set 1 for fine-grained progress.
        self.batch_size: int | None = None
        self.worker: Any | None = None
        self._cancel: threading.Event | None = None
        self._pbar: progress | None = None
        self._outcome = "done"

        self.form = QFormLayout()
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)

        self.device_picker = QComboBox(self)
        self.device_picker.addItems(available_devices())
        self.device_picker.setToolTip("auto: CUDA, then Apple MPS, then CPU.")
        self.tile_size = QSpinBox(self)
        self.tile_size.setRange(0, 8192)
        self.tile_size.setSingleStep(64)
        self.tile_size.setSpecialValueText("auto")
        self.tile_size.setSuffix(" px")
        self.tile_size.setToolTip(
            "Tile edge in pixels; auto is 512 on CPU and 1024 on CUDA. Smaller tiles use "
            "less memory; the result does not depend on it."
        )
        self.current_slice = QCheckBox("current slice only (quick preview)", self)
        self.current_slice.setToolTip(
            "Denoise only the YX plane shown at the sliders' position; the result is placed "
            "at that plane and named '... (slice i, j)'."
        )

        self.run_button = QPushButton("Run", self)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)

        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        self.status.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)

        self.layout_ = QVBoxLayout(self)
        self.layout_.addLayout(self.form)
        self.options_form = QFormLayout()
        self.options_form.addRow("Device:", self.device_picker)
        self.options_form.addRow("Tile size:", self.tile_size)
        self.options_form.addRow(self.current_slice)
        self.layout_.addLayout(self.options_form)
        self.layout_.addLayout(buttons)
        self.layout_.addWidget(self.status)
        self.layout_.addStretch(1)  # keep the controls together at the top of the dock

    # ------------------------------------------------------------------ options

    @property
    def busy(self) -> bool:
        """Whether a run is in progress."""
        return self.worker is not None

    def options(self) -> dict[str, Any]:
        """Device, tile size and batch size for the engine."""
        return {
            "device": self.device_picker.currentText() or "auto",
            "tile_size": self.tile_size.value() or None,
            "batch_size": self.batch_size,
        }

    def update_run_state(self) -> None:
        """Enable Run only when idle and the inputs make sense; say why not otherwise."""
        reason = None if self.busy else self._not_ready_reason()
        self.run_button.setEnabled(not self.busy and reason is None)
        self.run_button.setToolTip(reason or "")
        if reason and not self.busy:
            self.status.setText(reason)
        elif not self.busy and self.status.text() == self._last_reason:
            self.status.setText("")
        self._last_reason = reason

    _last_reason: str | None = None

    def _not_ready_reason(self) -> str | None:
        raise NotImplementedError

    def _channels(self) -> int | None:
        """Channels of the picked layer (1 gray, 3 RGB), or None when no layer is picked."""
        layer = self.layer_picker.layer()
        return _engine.layer_channels(layer) if layer is not None else None

    # ------------------------------------------------------------------ running

    def run(self) -> Any | None:
        """Start a run in a worker thread; returns the worker (None if nothing started)."""
        if self.busy:
            return None
        self._cancel = threading.Event()
        try:
            started = self._start_job(self._cancel)
        except (ValueError, MemoryError) as exc:  # bad input found before starting
            self._cancel = None
            show_error(str(exc))
            self.status.setText(str(exc))
            self.run_finished.emit("error")
            return None
        gen_func, args, kwargs, on_result, description = started
        self._on_result = on_result
        self._outcome = "done"
        self._pbar = progress(total=PROGRESS_STEPS, desc=description)
        worker = create_worker(gen_func, *args, _ignore_errors=True, **kwargs)
        worker.yielded.connect(self._on_step)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.status.setText(description)
        self.update_run_state()
        self.cancel_button.setEnabled(True)
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running job to stop at its next tile."""
        if self.busy and self._cancel is not None:
            self._cancel.set()
            self.status.setText("Cancelling...")
            self.cancel_button.setEnabled(False)

    def _start_job(
        self, cancel: threading.Event
    ) -> tuple[Callable[..., Generator], tuple, dict, Callable[[Any], None], str]:
        raise NotImplementedError

    def _on_step(self, step: _engine.Step) -> None:
        fraction, message = step
        bar = self._pbar  # updating the bar may process events, even this run's end
        if self.worker is None or bar is None:
            return
        if message and not (self._cancel is not None and self._cancel.is_set()):
            self.status.setText(f"{message}: {fraction:.0%}")
        if message and message != bar.desc:
            bar.set_description(message)
        target = int(round(min(max(fraction, 0.0), 1.0) * PROGRESS_STEPS))
        if target != bar.n:
            bar.update(target - bar.n)

    def _on_returned(self, result: Any) -> None:
        try:
            self._on_result(result)
        except Exception as exc:  # adding layers failed: report, keep the viewer usable
            self._outcome = "error"
            show_error(f"Could not add the result to the viewer: {exc}")
            self.status.setText(str(exc))
        else:
            self.status.setText("Done.")

    def _on_errored(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            self._outcome = "cancelled"
            show_info(str(exc))
            self.status.setText("Cancelled; no layer was added.")
        else:
            self._outcome = "error"
            message = error_message(exc)
            show_error(message)
            self.status.setText(message)

    def _on_finished(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.worker = None
        self._cancel = None
        self.cancel_button.setEnabled(False)
        self.update_run_state()
        self.run_finished.emit(self._outcome)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        """Stop a running job when the widget is closed."""
        self.cancel()
        super().closeEvent(event)


def refresh_model_pickers(viewer: Any) -> int:
    """Re-read the model registry in every model/family picker docked in ``viewer``'s
    window (e.g. after a fine-tuned model was saved); returns how many were refreshed."""
    window = getattr(viewer, "window", None)
    docked = getattr(window, "dock_widgets", None)
    if docked is not None:
        roots = [w for w in docked.values() if isinstance(w, QWidget)]
        pickers = [p for w in roots for p in w.findChildren(ChoicePicker)]
    else:  # older napari: every picker whose widget belongs to this viewer
        from qtpy.QtWidgets import QApplication

        pickers = [
            w
            for w in QApplication.allWidgets()
            if isinstance(w, ChoicePicker) and getattr(w.parent(), "viewer", None) is viewer
        ]
    for picker in pickers:
        picker.refresh()
    return len(pickers)


def error_message(exc: BaseException) -> str:
    """The core's own message for the errors it raises on purpose (bad input, memory);
    anything unexpected is logged with its traceback and named by type."""
    if isinstance(exc, (ValueError, MemoryError, OSError)) and str(exc):
        return str(exc)
    logger.error("The operation failed", exc_info=exc)
    return f"The operation failed with {type(exc).__name__}: {exc} (details in the log)"


def add_row(form: QFormLayout, label: str, widget: QWidget, tip: str = "") -> None:
    """Add a labelled row with a tooltip."""
    if tip:
        widget.setToolTip(tip)
    form.addRow(label, widget)
