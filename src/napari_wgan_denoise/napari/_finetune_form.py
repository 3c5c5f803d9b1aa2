"""The controls of the fine-tuning widget: its pickers, spin boxes and their help texts."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QDoubleSpinBox, QLineEdit, QSpinBox

from ..training.finetune import N2N_REFERENCE_WEIGHT, SS_REFERENCE_WEIGHT
from ._choices import FINETUNE_MODES
from ._masks import is_mask_layer
from ._pickers import ChoiceBox, LayerPicker
from ._runner import add_row

#: The label and tooltip of the clean / reference picker in each mode.
CLEAN_LABELS: dict[str, tuple[str, str]] = {
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
        f"critic with weight {N2N_REFERENCE_WEIGHT:g}. (none): plain Noise2Noise.",
    ),
    "self-supervised": (
        "Reference:",
        "Optional clean images of similar content (unpaired): adds a Wasserstein "
        f"critic with weight {SS_REFERENCE_WEIGHT:g}. (none): self-supervised loss only.",
    ),
}

#: The modes that train with a self-supervised loss (two-stage: for its surrogates).
SS_LOSS_MODES = ("self-supervised", "two-stage")
#: The self-supervised loss choices: (label, core name; None lets the noise check pick).
SS_LOSS_CHOICES: tuple[tuple[str, str | None], ...] = (
    ("automatic", None),
    ("recorrupted pairs (R2R)", "recorrupted"),
    ("Neighbor2Neighbor", "neighbor2neighbor"),
    ("blind-spot", "blind-spot"),
)
SS_LOSS_TIP = (
    "Self-supervised mode (and two-stage's surrogate targets): automatic is recorrupted "
    "pairs at the stack's measured noise level, with its measured neighbour correlation "
    "when the noise check finds correlated noise. Neighbor2Neighbor and blind-spot peak "
    "later (about 1000 iterations); blind-spot takes a structured mask for correlated noise."
)

#: Default length of a run: the iterations and the time limit (minutes; <= 3 minutes on
#: 2 cores at every mode's defaults, see docs/benchmarks.md).
DEFAULT_ITERATIONS, DEFAULT_MINUTES = 500, 3.0


def clean_label(mode: str) -> tuple[str, str]:
    """``(label, tooltip)`` of the clean / reference picker in ``mode``."""
    return CLEAN_LABELS[mode]


def build_form(widget: Any) -> None:
    """Make the fine-tuning controls as attributes of ``widget`` and add them to its form:
    image, mode, clean / reference, frames axis, ROI, base model, iterations, time limit,
    preview interval, self-supervised loss and the new model's name."""
    viewer = widget.viewer
    widget.layer_picker = LayerPicker(viewer, parent=widget)
    widget.mode_picker = ChoiceBox(widget)
    for k, (value, label, tip) in enumerate(FINETUNE_MODES):
        widget.mode_picker.addItem(label, value)
        widget.mode_picker.setItemData(k, tip, Qt.ItemDataRole.ToolTipRole)
    widget.clean_picker = LayerPicker(viewer, allow_none=True, follow=False, parent=widget)
    widget.axis_picker = ChoiceBox(widget)
    widget.roi_picker = LayerPicker(
        viewer, allow_none=True, follow=False, accepts=is_mask_layer, parent=widget
    )
    widget.base_picker = widget.model_picker_for("denoise")
    widget.iterations = QSpinBox(widget)
    widget.iterations.setRange(1, 1_000_000)
    widget.iterations.setSingleStep(100)
    widget.iterations.setValue(DEFAULT_ITERATIONS)
    widget.time_limit = QDoubleSpinBox(widget)
    widget.time_limit.setRange(0.0, 24 * 60.0)
    widget.time_limit.setDecimals(1)
    widget.time_limit.setSingleStep(1.0)
    widget.time_limit.setSuffix(" min")
    widget.time_limit.setSpecialValueText("none")
    widget.time_limit.setValue(DEFAULT_MINUTES)
    widget.preview_every = QSpinBox(widget)
    widget.preview_every.setRange(0, 1_000_000)
    widget.preview_every.setSingleStep(100)
    widget.preview_every.setValue(DEFAULT_ITERATIONS // 10)
    widget.preview_every.setSpecialValueText("off")
    widget.preview_every.setSuffix(" iterations")
    widget.iterations.valueChanged.connect(lambda n: _follow_iterations(widget, n))
    widget._iterations_shown = DEFAULT_ITERATIONS
    widget.ss_loss_picker = ChoiceBox(widget)
    for label, value in SS_LOSS_CHOICES:
        widget.ss_loss_picker.addItem(label, value)
    widget.save_as = QLineEdit(widget)
    widget.save_as.setPlaceholderText("automatic: <base>-ft-<mode>-<n>")

    form = widget.form
    add_row(form, "Image:", widget.layer_picker, "The noisy image layer to learn from.")
    add_row(form, "Mode:", widget.mode_picker)
    add_row(form, "Clean:", widget.clean_picker)
    add_row(
        form,
        "Frames axis:",
        widget.axis_picker,
        "Noise2Noise: the axis along which the frames repeat the same field.",
    )
    add_row(
        form,
        "ROI:",
        widget.roi_picker,
        "Optional Labels or Shapes layer: patches are taken only inside it (labels > 0 "
        "in any plane, or the union of the shapes).",
    )
    add_row(form, "Base model:", widget.base_picker)
    add_row(
        form,
        "Iterations:",
        widget.iterations,
        "Training iterations; the run also ends at the time limit or with Stop. Left at "
        "the mode's default, the run takes the length its loss needs (1000 when the noise "
        "check switches to the blind-spot loss).",
    )
    add_row(
        form,
        "Save as:",
        widget.save_as,
        "Name of the new user model (letters, digits, '-', '_', '.').",
    )
    form = widget.advanced.form  # folded away: most runs leave these alone
    add_row(
        form,
        "Time limit:",
        widget.time_limit,
        "Stop after this long and keep the best weights so far (none: no limit).",
    )
    add_row(
        form,
        "Preview every:",
        widget.preview_every,
        "Refresh the '<image> [fine-tune preview]' layer (the current slice denoised "
        "with the model being trained) this often; by default every 10 % of the run.",
    )
    add_row(form, "Self-supervised loss:", widget.ss_loss_picker, SS_LOSS_TIP)


def _follow_iterations(widget: Any, iterations: int) -> None:
    """Keep the preview at every 10 % of the run while the user has not changed it."""
    if widget.preview_every.value() == max(1, widget._iterations_shown // 10):
        widget.preview_every.setValue(max(1, iterations // 10))
    widget._iterations_shown = iterations
