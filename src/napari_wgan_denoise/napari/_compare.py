"""The Compare widget: a family's ID-MSE and ID-MSE-WGAN twins side by side."""

from __future__ import annotations

import math
import threading
from typing import Any

from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QWidget

from ..models.families import default_family_for, family_members
from ._choices import family_choices, kind, no_model_message
from ._jobs import layer_channels, prepare_job, prepare_reference
from ._pickers import ChoicePicker, LayerPicker
from ._runner import RunnerWidget, Started, add_row
from ._runs import Outputs, run_compare

__all__ = ["CompareWidget"]

METRIC_COLUMNS = (("psnr", "PSNR dB"), ("ssim", "SSIM"), ("grad_ratio", "grad ratio"))


class CompareWidget(RunnerWidget):
    """Run both members of a model family on one layer and show where they differ.

    Adds the ID-MSE and ID-MSE-WGAN outputs and an ``|MSE − WGAN|`` layer (where the
    adversarial model changed the image most: look there for invented detail), turns on
    grid mode with the input and outputs side by side and links their contrast limits.
    With a clean reference layer, a table shows PSNR, SSIM and gradient ratio (sharpness
    relative to the reference; below 1 is blurrier) of the input and both outputs.
    """

    action = "compare on"

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
        self.table = QTableWidget(0, len(METRIC_COLUMNS), self)
        self.table.setHorizontalHeaderLabels([label for _, label in METRIC_COLUMNS])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setToolTip(
            "Against the reference: PSNR and SSIM (higher is closer), gradient ratio "
            "(sharpness relative to the reference: 1 is as sharp, below 1 blurrier)."
        )
        self.table.setVisible(False)
        self.layout_.insertWidget(self.layout_.count() - 1, self.table)  # above the stretch
        self._watch(self.family_picker, refresh=[self.family_picker])

    #: The layers ``(mse, wgan, difference)`` of the last successful run.
    last_layers: tuple[Any, Any, Any] | None = None
    #: The metrics of the last run with a reference (``model -> {psnr, ssim, grad_ratio}``).
    last_metrics: dict[str, dict[str, float]] | None = None

    # ------------------------------------------------------------------ choices

    def _family_choices(self) -> list[tuple[str, str, str, bool]]:
        return family_choices(self._channels())

    def _preferred_family(self) -> str | None:
        channels = self._channels()
        return default_family_for(channels) if channels else None

    def _not_ready_for(self, layer: Any) -> str | None:
        if self.family_picker.value() is None:
            channels = layer_channels(layer)
            if not self.family_picker.values():
                return (
                    "Compare needs a model family (an -mse and a -wgan model). "
                    + no_model_message(channels)
                )
            return f"No installed model family fits the {kind(channels)} layer {layer.name!r}."
        return None

    # ------------------------------------------------------------------ running

    def _start_job(self, cancel: threading.Event) -> Started:
        layer, family = self._picked(self.family_picker)
        mse, wgan = family_members(family)
        job = prepare_job(layer, **self._where())
        reference = self.reference_picker.layer()
        ref_job = prepare_reference(reference, job) if reference is not None else None
        add = self._adder(layer, grid=True)

        def on_result(outputs: Outputs) -> None:
            self.last_layers = tuple(add(outputs))
            self.last_metrics = outputs.metrics
            self.show_metrics(outputs.metrics)

        kwargs = {
            "family": family,
            "reference": ref_job,
            "cache": self.cache,
            "cancel": cancel,
        }
        description = f"Compare {mse} vs {wgan} on {layer.name}"
        return run_compare, (job, mse, wgan, self.options()), kwargs, on_result, description

    def show_metrics(self, metrics: dict[str, dict[str, float]] | None) -> None:
        """Fill the metrics table (hidden when there is no reference)."""
        self.table.setVisible(bool(metrics))
        if not metrics:
            self.table.setRowCount(0)
            return
        rows = ["input"] + [name for name in metrics if name != "input"]
        self.table.setRowCount(len(rows))
        self.table.setVerticalHeaderLabels(rows)
        for r, name in enumerate(rows):
            for c, (key, _) in enumerate(METRIC_COLUMNS):
                self.table.setItem(r, c, QTableWidgetItem(_format(key, metrics[name][key])))
        self.table.resizeRowsToContents()
        height = self.table.horizontalHeader().height() + sum(
            self.table.rowHeight(r) for r in range(len(rows))
        )
        self.table.setFixedHeight(height + 2 * self.table.frameWidth())


def _format(key: str, value: float) -> str:
    """PSNR with 2 decimals, SSIM and gradient ratio with 3."""
    if math.isinf(value):
        return "inf"
    return f"{value:.2f}" if key == "psnr" else f"{value:.3f}"
