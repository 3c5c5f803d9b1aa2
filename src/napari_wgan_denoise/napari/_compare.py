"""The Compare widget: a family's ID-MSE and ID-MSE-WGAN twins side by side."""

from __future__ import annotations

import math
import threading
from typing import Any

from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from ..models.families import default_family_for, family_members
from ._choices import family_choices, kind, no_model_message
from ._jobs import layer_channels, prepare_job, prepare_reference
from ._pickers import ChoicePicker, LayerPicker
from ._runner import RunnerWidget, Started, add_row
from ._runs import IDEAL, Outputs, run_compare
from ._viewer import add_comparison

__all__ = ["CompareWidget"]

METRIC_COLUMNS = (("psnr", "PSNR dB"), ("ssim", "SSIM"), ("grad_ratio", "grad ratio"))
#: The hallucination readout: statistics of the method noise, no reference needed.
READOUT_COLUMNS = (("whiteness", "whiteness"), ("grad_corr", "grad corr"))
#: Colour of a PSNR below the input's (the model made the image worse).
WORSE_COLOUR = "#d9534f"


class CompareWidget(RunnerWidget):
    """Run both members of a model family on one layer and show where they differ.

    Adds the ID-MSE and ID-MSE-WGAN outputs (``"<input> MSE [<model>]"``, ``"<input> WGAN
    [<model>]"``) and an ``|MSE − WGAN|`` layer (where the adversarial model changed the
    image most: look there for invented detail), links the contrast limits of input and
    outputs and turns on a grid of exactly these four, each panel labelled with its layer
    name and the view reset to show whole images; other layers are hidden until the grid
    is turned off. Running again on the same input and family replaces the earlier outputs.

    The table always shows the hallucination readout of each output's method noise
    (input − output): its whiteness (neighbour autocorrelation; about 0 when only noise
    was removed) and its correlation with the image gradient (positive when the model
    removed more at edges); *method noise layers* adds the maps themselves. With a clean
    reference layer it also shows PSNR, SSIM and gradient ratio (sharpness relative to the
    reference; below 1 is blurrier) of the input and both outputs, and flags an output
    whose PSNR is below the input's.
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
        self.method_noise = QCheckBox("method noise layers (input − output)", self)
        self.method_noise.setToolTip(
            "Also add each model's method noise: what it removed. It should look like pure "
            "noise; edges or shapes in it are signal the model took away or replaced. "
            "Hidden while the comparison grid is on."
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
            "(sharpness relative to the reference: 1 is as sharp, below 1 blurrier); a PSNR "
            "marked ▼ is below the input's: that model made the image worse.\n"
            "ideal: the readout of noisy − reference, i.e. of removing exactly the noise: "
            "compare the models' whiteness and grad corr with it."
        )
        self.table.setVisible(False)
        #: Says which outputs have a lower PSNR than their input (hidden when none has).
        self.flag = QLabel("", self)
        self.flag.setWordWrap(True)
        self.flag.setStyleSheet(f"color: {WORSE_COLOUR};")
        self.flag.setVisible(False)
        self.layout_.insertWidget(self.layout_.count() - 1, self.table)  # above the stretch
        self.layout_.insertWidget(self.layout_.count() - 1, self.flag)
        self._watch(self.family_picker, refresh=[self.family_picker])

    #: The layers ``(mse, wgan, difference)`` of the last successful run.
    last_layers: tuple[Any, Any, Any] | None = None
    #: The metrics of the last run with a reference (``model -> {psnr, ssim, grad_ratio}``).
    last_metrics: dict[str, dict[str, float]] | None = None
    #: The readout of the last run (``model -> {whiteness, grad_corr, residual_std}``).
    last_readout: dict[str, dict[str, float]] | None = None
    #: The method noise layers of the last run (when asked for).
    last_method_noise_layers: list[Any] = []
    #: Models of the last run whose output has a lower PSNR than the input.
    worse_than_input: list[str] = []

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

        def on_result(outputs: Outputs) -> None:
            source = layer if layer in self.viewer.layers else None
            layers = add_comparison(self.viewer, outputs, source, grid=True)
            self.last_layers = tuple(layers[: outputs.panels])
            self.last_layer = layers[0]
            self.last_method_noise_layers = layers[outputs.panels :]
            self.last_metrics = outputs.metrics
            self.last_readout = outputs.readout
            self.show_metrics(outputs.metrics, outputs.readout)

        kwargs = {
            "family": family,
            "reference": ref_job,
            "cache": self.cache,
            "cancel": cancel,
            "method_noise": self.method_noise.isChecked(),
        }
        description = f"Compare {mse} vs {wgan} on {layer.name}"
        return run_compare, (job, mse, wgan, self.options()), kwargs, on_result, description

    def show_metrics(
        self,
        metrics: dict[str, dict[str, float]] | None,
        readout: dict[str, dict[str, float]] | None = None,
    ) -> None:
        """Fill the table: the readout of each output, and with a reference the metrics of
        the input and the outputs (their columns are hidden without one); flag outputs
        whose PSNR is below the input's."""
        self.table.setVisible(bool(metrics or readout))
        self.worse_than_input = worse_than_input(metrics)
        self._show_flag(metrics)
        if not (metrics or readout):
            self.table.setRowCount(0)
            return
        special = ("input", IDEAL)
        models = [n for n in (readout or metrics or {}) if n not in special]
        ideal = [IDEAL] if readout and IDEAL in readout else []
        rows = (["input"] if metrics else []) + ideal + models
        self.table.setRowCount(len(rows))
        self.table.setVerticalHeaderLabels(
            ["ideal (noisy − reference)" if r == IDEAL else r for r in rows]
        )
        for c, (key, label) in enumerate(READOUT_COLUMNS + METRIC_COLUMNS):
            source = readout if (key, label) in READOUT_COLUMNS else metrics
            self.table.setColumnHidden(c, not source)
            for r, name in enumerate(rows):
                value = (source or {}).get(name, {}).get(key)
                item = QTableWidgetItem("–" if value is None else _format(key, value))
                if key == "psnr" and name in self.worse_than_input:
                    item.setText(f"{item.text()} ▼")
                    item.setForeground(QBrush(QColor(WORSE_COLOUR)))
                    item.setToolTip("Below the input's PSNR: this model made the image worse.")
                self.table.setItem(r, c, item)
        self.table.resizeRowsToContents()
        height = self.table.horizontalHeader().height() + sum(
            self.table.rowHeight(r) for r in range(len(rows))
        )
        self.table.setFixedHeight(height + 2 * self.table.frameWidth())

    def _show_flag(self, metrics: dict[str, dict[str, float]] | None) -> None:
        """The warning under the table naming the outputs worse than the input."""
        if not self.worse_than_input or not metrics:
            self.flag.setVisible(False)
            self.flag.setText("")
            return
        base = metrics["input"]["psnr"]
        worse = ", ".join(f"{n} ({metrics[n]['psnr']:.2f} dB)" for n in self.worse_than_input)
        self.flag.setText(
            f"▼ Worse than the input ({base:.2f} dB): {worse}. This image may be less noisy "
            "than, or unlike, what the model was trained on."
        )
        self.flag.setVisible(True)


def worse_than_input(metrics: dict[str, dict[str, float]] | None) -> list[str]:
    """The models whose output has a lower PSNR against the reference than the input has."""
    if not metrics or "input" not in metrics:
        return []
    base = metrics["input"]["psnr"]
    return [name for name, values in metrics.items() if name != "input" and values["psnr"] < base]


def _format(key: str, value: float) -> str:
    """PSNR with 2 decimals, the others with 3."""
    if math.isinf(value):
        return "inf"
    if math.isnan(value):
        return "n/a"
    return f"{value:.2f}" if key == "psnr" else f"{value:.3f}"
