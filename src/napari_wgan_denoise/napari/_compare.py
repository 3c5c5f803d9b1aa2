"""The Compare widget: a family's ID-MSE and ID-MSE-WGAN twins side by side."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Generator
from typing import Any

from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from ..models.families import default_family_for, family_members, list_families
from ..models.registry import model_entries
from . import _engine
from ._qt_common import ChoicePicker, LayerPicker, RunnerWidget, add_row

__all__ = ["CompareWidget"]

METRIC_COLUMNS = (("psnr", "PSNR dB"), ("ssim", "SSIM"), ("grad_ratio", "grad ratio"))
#: The hallucination readout: statistics of the method noise, no reference needed.
READOUT_COLUMNS = (("whiteness", "whiteness"), ("grad_corr", "grad corr"))


class CompareWidget(RunnerWidget):
    """Run both members of a model family on one layer and show where they differ.

    Adds the ID-MSE and ID-MSE-WGAN outputs and an ``|MSE − WGAN|`` layer (where the
    adversarial model changed the image most: look there for invented detail), turns on
    grid mode with the input and outputs side by side and links their contrast limits.
    With a clean reference layer, a table shows PSNR, SSIM and gradient ratio (sharpness
    relative to the reference; below 1 is blurrier) of the input and both outputs.

    Always (no reference needed) the table shows the hallucination readout of each output's
    method noise (input − output): its whiteness (neighbour autocorrelation; about 0 when
    only noise was removed) and its correlation with the image gradient (positive when the
    model removed more at edges); *method noise layers* adds the maps themselves.
    """

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.layer_picker = LayerPicker(napari_viewer, parent=self)
        self.family_picker = ChoicePicker(
            self._family_choices,
            empty_text="No model family installed (needs -mse and -wgan)",
            preferred=self._preferred_family,
            parent=self,
        )
        self.reference_picker = LayerPicker(
            napari_viewer, allow_none=True, follow=False, parent=self
        )
        add_row(self.form, "Image:", self.layer_picker, "The noisy image layer.")
        add_row(self.form, "Family:", self.family_picker)
        add_row(
            self.form,
            "Reference:",
            self.reference_picker,
            "Optional clean image of the same scene, for PSNR / SSIM / gradient ratio.",
        )
        self.method_noise = QCheckBox("method noise layers (input − output)", self)
        self.method_noise.setToolTip(
            "Also add each model's method noise: what it removed. It should look like pure "
            "noise; edges or shapes in it are signal the model took away or replaced."
        )
        self.form.addRow(self.method_noise)
        columns = READOUT_COLUMNS + METRIC_COLUMNS
        self.table = QTableWidget(0, len(columns), self)
        self.table.setHorizontalHeaderLabels([label for _, label in columns])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setToolTip(
            "whiteness: neighbour autocorrelation of the method noise (input − output); about "
            "0 if only noise was removed, higher if image structure was removed too.\n"
            "grad corr: correlation of the method noise's size with the image gradient; "
            "positive if the model removed more at edges (blurred or replaced them).\n"
            "With a reference: PSNR and SSIM (higher is closer), gradient ratio "
            "(sharpness relative to the reference: 1 is as sharp, below 1 blurrier).\n"
            "ideal: the readout of noisy − reference, i.e. of removing exactly the noise: "
            "compare the models' whiteness and grad corr with it."
        )
        self.table.setVisible(False)
        self.layout_.insertWidget(self.layout_.count() - 1, self.table)  # above the stretch
        self.layer_picker.layer_changed.connect(self._on_layer_changed)
        self.family_picker.currentIndexChanged.connect(lambda *_: self.update_run_state())
        self.update_run_state()

    #: The layers ``(mse, wgan, difference)`` of the last successful run.
    last_layers: tuple[Any, Any, Any] | None = None
    #: The metrics of the last run with a reference (``model -> {psnr, ssim, grad_ratio}``).
    last_metrics: dict[str, dict[str, float]] | None = None
    #: The readout of the last run (``model -> {whiteness, grad_corr, residual_std}``).
    last_readout: dict[str, dict[str, float]] | None = None
    #: The method noise layers of the last run (when asked for).
    last_method_noise_layers: list[Any] = []

    # ------------------------------------------------------------------ choices

    def _family_choices(self) -> list[tuple[str, str, str, bool]]:
        entries = {e.name: e for e in model_entries()}
        channels = self._channels()
        out = []
        for family in list_families(entries):
            mse, wgan = family_members(family, entries)
            e_mse, e_wgan = entries[mse], entries[wgan]
            fits = channels is None or (e_mse.channels == channels == e_wgan.channels)
            kind = "RGB" if e_mse.channels == 3 else "gray"
            label = f"{family}  ({mse} vs {wgan}, {kind})"
            tip = f"{_engine.entry_tooltip(e_mse)}\n\n{_engine.entry_tooltip(e_wgan)}"
            if not fits:
                tip = f"Does not fit the {'RGB' if channels == 3 else 'gray'} layer.\n{tip}"
            out.append((family, label, tip, fits))
        return out

    def _preferred_family(self) -> str | None:
        channels = self._channels()
        return default_family_for(channels) if channels else None

    def _on_layer_changed(self, layer: Any) -> None:
        self.family_picker.refresh()
        self.update_run_state()

    def _not_ready_reason(self) -> str | None:
        layer = self.layer_picker.layer()
        if layer is None:
            return "Add or open an image layer to compare on."
        if self.family_picker.value() is None:
            channels = _engine.layer_channels(layer)
            if not self.family_picker.values():
                return (
                    "Compare needs a model family (an -mse and a -wgan model). "
                    + _engine.no_model_message(channels)
                )
            kind = "RGB" if channels == 3 else "gray"
            return f"No installed model family fits the {kind} layer {layer.name!r}."
        return None

    # ------------------------------------------------------------------ running

    def _start_job(
        self, cancel: threading.Event
    ) -> tuple[Callable[..., Generator], tuple, dict, Callable[[Any], None], str]:
        layer = self.layer_picker.layer()
        family = self.family_picker.value()
        if layer is None or family is None:
            raise ValueError(self._not_ready_reason() or "Nothing to run.")
        mse, wgan = family_members(family)
        job = _engine.prepare_job(
            layer,
            current_slice=self.current_slice.isChecked(),
            world_point=self.viewer.dims.point,
        )
        reference = self.reference_picker.layer()
        ref_job = _engine.prepare_reference(reference, job) if reference is not None else None

        def on_result(result: _engine.CompareResult) -> None:
            source = layer if layer in self.viewer.layers else None
            self.last_layers = _engine.add_comparison(self.viewer, result, source)
            self.last_method_noise_layers = result.method_noise_layers()
            for lyr in self.last_method_noise_layers:
                self.viewer.layers.append(lyr)
            self.last_metrics = result.metrics
            self.last_readout = result.readout
            self.show_metrics(result.metrics, result.readout)

        kwargs = {
            "family": family,
            "reference": ref_job,
            "cache": self.cache,
            "cancel": cancel,
            "method_noise": self.method_noise.isChecked(),
            **self.options(),
        }
        description = f"Compare {mse} vs {wgan} on {layer.name}"
        return _engine.run_compare, (job, mse, wgan), kwargs, on_result, description

    def show_metrics(
        self,
        metrics: dict[str, dict[str, float]] | None,
        readout: dict[str, dict[str, float]] | None = None,
    ) -> None:
        """Fill the table: the readout of each output, and with a reference the metrics of
        the input and the outputs (their columns are hidden without one)."""
        self.table.setVisible(bool(metrics or readout))
        if not (metrics or readout):
            self.table.setRowCount(0)
            return
        special = ("input", _engine.IDEAL)
        models = [n for n in (readout or metrics or {}) if n not in special]
        ideal = [_engine.IDEAL] if readout and _engine.IDEAL in readout else []
        rows = (["input"] if metrics else []) + ideal + models
        self.table.setRowCount(len(rows))
        self.table.setVerticalHeaderLabels(
            ["ideal (noisy − reference)" if r == _engine.IDEAL else r for r in rows]
        )
        for c, (key, _) in enumerate(READOUT_COLUMNS + METRIC_COLUMNS):
            source = readout if (key, _) in READOUT_COLUMNS else metrics
            self.table.setColumnHidden(c, not source)
            for r, name in enumerate(rows):
                value = (source or {}).get(name, {}).get(key)
                text = "–" if value is None else _format(key, value)
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.resizeRowsToContents()
        height = self.table.horizontalHeader().height() + sum(
            self.table.rowHeight(r) for r in range(len(rows))
        )
        self.table.setFixedHeight(height + 2 * self.table.frameWidth())


def _format(key: str, value: float) -> str:
    """PSNR with 2 decimals, the others with 3."""
    if math.isinf(value):
        return "inf"
    if math.isnan(value):
        return "n/a"
    return f"{value:.2f}" if key == "psnr" else f"{value:.3f}"
