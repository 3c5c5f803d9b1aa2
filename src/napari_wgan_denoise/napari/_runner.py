"""The base of the plugin's widgets: run options, Run/Cancel and the napari worker.

A widget subclass adds its pickers to ``self.form`` (the image one as
``self.layer_picker``), calls ``_watch`` with them and implements ``_not_ready_for`` (why
Run cannot start yet) and ``_start_job``: a run of :mod:`._runs` (a generator yielding
:class:`~._bridge.Progress`) and what to do with its result in the main thread (usually
:meth:`RunnerWidget._adder`, which adds the ``LayerDataTuple``s with :mod:`._viewer`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Sequence
from typing import Any

from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, Signal
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
from ..inference.cache import ModelCache
from ..models.families import default_model_for
from ._bridge import AnyFlag, Progress
from ._choices import (
    default_restore_model,
    device_label,
    kind,
    model_choices,
    no_model_message,
)
from ._fold import Foldout, scrolling
from ._jobs import layer_channels
from ._pickers import ChoiceBox, ChoicePicker
from ._runs import Outputs, Settings
from ._viewer import add_outputs

logger = logging.getLogger(__name__)

#: napari progress bars count in percent of the whole run (the description says which
#: plane and tile).
PROGRESS_STEPS = 100

#: What ``_start_job`` returns: the run (a generator function), its positional and keyword
#: arguments, what to do with its result in the main thread, and a description.
Started = tuple[Callable[..., Generator], tuple, dict, Callable[[Any], None], str]


class RunnerWidget(QWidget):
    """Base of the plugin's widgets: run options, Run/Cancel and the worker.

    Subclasses add their pickers to ``self.form`` (the image one as ``self.layer_picker``)
    and implement ``_start_job`` returning a generator (run in a napari ``thread_worker``)
    and a callback for its result.
    """

    #: Whether the run options offer test-time augmentation (the runs that denoise).
    offers_tta = True

    #: Emitted in the main thread when a run ends: "done", "cancelled" or "error".
    run_finished = Signal(str)
    #: Emitted in the main thread with each :class:`~._bridge.Progress` event the widget
    #: takes in (connect before starting to see them all, the first warnings included).
    progressed = Signal(object)

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.cache = ModelCache()
        #: Tiles per batch (None: the core's default); tests set 1 for fine-grained progress.
        self.batch_size: int | None = None
        self.worker: Any | None = None
        self._cancel: threading.Event | None = None
        self._pbar: progress | None = None
        self._outcome = "done"

        #: Set when the widget is closed or its dock removed: the run stops and adds
        #: nothing (no layer, no saved model, no preview); cleared when shown or docked
        #: again while idle.
        self.closed = threading.Event()
        self.destroyed.connect(self.closed.set)  # not a method of self: runs after deletion
        self._had_parent = parent is not None

        self.form = QFormLayout()
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)

        self.device_picker = ChoiceBox(self)
        for device in available_devices():
            self.device_picker.addItem(device_label(device), device)
        self.device_picker.setToolTip("auto: CUDA, then Apple MPS, then CPU.")
        self.tile_size = QSpinBox(self)
        self.tile_size.setRange(0, 8192)
        self.tile_size.setSingleStep(64)
        self.tile_size.setSpecialValueText("auto")
        self.tile_size.setSuffix(" px")
        self.tile_size.setToolTip(
            "Tile edge in pixels; auto picks one for the device. Smaller tiles use "
            "less memory but overlap more (the model's receptive radius on each side), so "
            "tiles under about twice the overlap make runs much slower; the result does "
            "not depend on it."
        )
        self.tta = QCheckBox("Average 8 flips/rotations (TTA)", self)
        self.tta.setToolTip(
            "Test-time augmentation: run the model on the 8 flipped and rotated copies of "
            "the image and average the outputs, turned back. 8× slower for about +0.1 dB "
            "PSNR (+0.08 dB for the gray model on Set12)."
        )
        if not self.offers_tta:
            self.tta.hide()  # placed in no layout
        self.current_slice = QCheckBox("current slice only", self)
        self.current_slice.setToolTip(
            "A quick preview: denoise only the YX plane shown at the sliders' position; the "
            "result is placed at that plane and named '... (slice i, j)'."
        )

        self.run_button = QPushButton("Run", self)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.run_button.clicked.connect(lambda *_: self.run())
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)

        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        self.status.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        #: The last run's warnings (tiles too small, noise outside the model's training).
        self.warning_label = QLabel("", self)
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet("color: #e0a030;")
        self.warning_label.setVisible(False)

        # the form scrolls; Run / Cancel and the status stay in view below it
        body = QWidget(self)
        self.layout_ = QVBoxLayout(body)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.layout_.addLayout(self.form)
        #: Options most runs leave alone, folded away: device, tile size, ...
        self.advanced = Foldout("Advanced", body)
        self.advanced.form.addRow("Device:", self.device_picker)
        self.options_form = self.advanced.form
        self._place_run_options(self.options_form)
        self.layout_.addWidget(self.advanced)
        self.layout_.addStretch(1)  # keep the controls together at the top of the dock
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        outer.addWidget(scrolling(body, self), 1)
        outer.addLayout(buttons)
        outer.addWidget(self.status)
        outer.addWidget(self.warning_label)

    def _place_run_options(self, form: QFormLayout) -> None:
        """Put the tile size (and the TTA box) under the device and "current slice only"
        under the form (subclasses that use them elsewhere override this)."""
        form.addRow("Tile size:", self.tile_size)
        if self.offers_tta:
            form.addRow(self.tta)
        self.layout_.addWidget(self.current_slice)

    # ------------------------------------------------------------------ options

    @property
    def busy(self) -> bool:
        """Whether a run is in progress."""
        return self.worker is not None

    def device(self) -> str:
        """The picked device's name (``"auto"``, ``"cpu"``, ``"cuda:0"``, ...)."""
        data = self.device_picker.currentData()
        return str(data or self.device_picker.currentText() or "auto")

    def options(self) -> Settings:
        """Device, tile size, batch size and test-time augmentation for the runs."""
        return Settings(
            device=self.device(),
            tile_size=self.tile_size.value() or None,
            batch_size=self.batch_size,
            tta=self.offers_tta and self.tta.isChecked(),
        )

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

    #: What the widget does, for "Add or open an image layer to ...".
    action = "process"
    _refreshed: list[ChoicePicker] = []

    def _watch(self, *pickers: QComboBox, refresh: Sequence[ChoicePicker] = ()) -> None:
        """Check readiness again whenever the image or one of ``pickers`` changes; a new
        image also refreshes the ``refresh`` pickers (their choices depend on its channels)."""
        self._refreshed = list(refresh)
        self.layer_picker.layer_changed.connect(self._on_layer_changed)
        for picker in pickers:
            changed = getattr(picker, "layer_changed", picker.currentIndexChanged)
            changed.connect(lambda *_: self.update_run_state())
        self.update_run_state()

    def _on_layer_changed(self, layer: Any) -> None:
        for picker in self._refreshed:
            picker.refresh()
        self.update_run_state()

    def _not_ready_reason(self) -> str | None:
        """Why Run cannot start now (None when it can)."""
        layer = self.layer_picker.layer()
        if layer is None:
            return f"Add or open an image layer to {self.action}."
        return self._not_ready_for(layer)

    def _picked(self, picker: ChoicePicker) -> tuple[Any, str]:
        """The picked image layer and ``picker``'s value; ValueError saying what is missing."""
        layer, value = self.layer_picker.layer(), picker.value()
        if layer is None or value is None:
            raise ValueError(self._not_ready_reason() or "Nothing to run.")
        return layer, value

    def _where(self) -> dict[str, Any]:
        """Whether to run on the current slice only, and the viewer's position for it."""
        return {
            "current_slice": self.current_slice.isChecked(),
            "world_point": self.viewer.dims.point,
        }

    def _not_ready_for(self, layer: Any) -> str | None:
        """Why Run cannot start on the picked ``layer`` (None when it can)."""
        raise NotImplementedError

    def _channels(self) -> int | None:
        """Channels of the picked layer (1 gray, 3 RGB), or None when no layer is picked."""
        layer = self.layer_picker.layer()
        return layer_channels(layer) if layer is not None else None

    def model_picker_for(
        self, task: str = "denoise", empty_text: str = "No models installed"
    ) -> ChoicePicker:
        """A picker of the registry's models of ``task`` that greys out those that do not fit
        the picked layer and prefers the default model for it."""
        default = default_model_for if task == "denoise" else default_restore_model

        def preferred() -> str | None:
            channels = self._channels()
            return default(channels) if channels else None

        return ChoicePicker(
            lambda: model_choices(self._channels(), task),
            empty_text=empty_text,
            preferred=preferred,
            parent=self,
        )

    def _no_fitting_model(self, picker: ChoicePicker, layer: Any) -> str:
        """Why ``picker`` offers nothing for ``layer``: no model at all, or none that fits."""
        channels = layer_channels(layer)
        if not picker.values():
            return no_model_message(channels)
        return f"No installed model fits the {kind(channels)} layer {layer.name!r}."

    def _adder(self, layer: Any, *, grid: bool = False) -> Callable[[Outputs], list[Any]]:
        """A result callback that adds a run's outputs just above ``layer`` and keeps them
        as ``last_layers`` (and the first as ``last_layer``)."""

        def on_result(outputs: Outputs) -> list[Any]:
            source = layer if layer in self.viewer.layers else None
            self.last_layers = add_outputs(self.viewer, outputs, source, grid=grid)
            self.last_layer = self.last_layers[0]
            return self.last_layers

        return on_result

    #: The layers added by the last successful run, and the first of them.
    last_layers: Any = None
    last_layer: Any | None = None

    # ------------------------------------------------------------------ running

    def run(self) -> Any | None:
        """Start a run in a worker thread; returns the worker (None if nothing started)."""
        return self.start_run(self._start_job)

    def start_run(self, start: Callable[[threading.Event], Started]) -> Any | None:
        """Start the run that ``start(cancel)`` prepares (``_start_job`` for Run) in a worker
        thread; returns the worker (None if nothing started)."""
        if self.busy:
            return None
        self._cancel = threading.Event()
        try:
            started = start(AnyFlag(self._cancel, self.closed))
        except (ValueError, MemoryError) as exc:  # bad input found before starting
            self._cancel = None
            show_error(str(exc))
            self.status.setText(str(exc))
            self.run_finished.emit("error")
            return None
        gen_func, args, kwargs, on_result, description = started
        self.warning_label.clear()
        self.warning_label.setVisible(False)
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

    def _start_job(self, cancel: threading.Event) -> Started:
        raise NotImplementedError

    def _on_step(self, step: Progress) -> None:
        fraction, message = step.fraction, step.message
        bar = self._pbar  # updating the bar may process events, even this run's end
        if self.worker is None or bar is None or self.closed.is_set():
            return
        self.progressed.emit(step)
        if step.warning:
            self.warn(step.warning)
        if message and not (self._cancel is not None and self._cancel.is_set()):
            self.status.setText(f"{message} ({fraction:.0%})")
        if message and message != bar.desc:
            bar.set_description(message)
        target = int(round(min(max(fraction, 0.0), 1.0) * PROGRESS_STEPS))
        if target != bar.n:
            bar.update(target - bar.n)

    def warn(self, message: str) -> None:
        """Show a warning about the running job under the status line and as a napari
        notification."""
        show_warning(message)
        text = self.warning_label.text()
        self.warning_label.setText(f"{text}\n{message}" if text else message)
        self.warning_label.setVisible(True)

    def _on_returned(self, result: Any) -> None:
        if self.closed.is_set():  # the widget was closed mid-run: add nothing
            self._outcome = "cancelled"
            return
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
        self.abandon()
        super().closeEvent(event)

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        """Shown again after being closed: later runs may add their results."""
        if not self.busy:
            self.closed.clear()
        super().showEvent(event)

    def event(self, event: QEvent) -> bool:
        """Notice the dock being removed: napari's ``remove_dock_widget`` (the dock's ×)
        only takes the widget out of its dock (``setParent(None)``), so ``closeEvent``
        never runs; losing the parent it was docked in stops the run like closing."""
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is None and self._had_parent:
                self.abandon()
            elif self.parent() is not None and not self.busy:
                self.closed.clear()  # docked (again): runs may add their results
            self._had_parent = self.parent() is not None
        return super().event(event)

    def abandon(self) -> None:
        """Stop the running job for good: it adds no layer, saves no model and updates no
        preview (the widget was closed or its dock removed)."""
        self.closed.set()
        if self.busy:
            self.cancel()
            if self._pbar is not None:
                self._pbar.close()
                self._pbar = None


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
