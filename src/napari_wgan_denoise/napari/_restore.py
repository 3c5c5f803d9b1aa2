"""The Restore widget: fill masked pixels and remove blur and noise with a cascade model.

Pick an image layer, a mask layer (Labels: non-zero labels; Shapes: the union of the
shapes, used on every plane) or no mask (deblur + denoise only), and a restore model; the
core :func:`~napari_wgan_denoise.restore` runs in a background worker with a progress bar
and Cancel. The mask rules are in :mod:`._masks`.
"""

from __future__ import annotations

import threading
from typing import Any

from qtpy.QtWidgets import QCheckBox, QWidget

from ._choices import NO_MASK_TEXT, NO_RESTORE_MODEL
from ._jobs import layer_channels, prepare_restore
from ._masks import is_mask_layer
from ._pickers import LayerPicker
from ._runner import RunnerWidget, Started, add_row
from ._runs import Settings, run_restore

__all__ = ["MaskPicker", "RestoreWidget"]


class MaskPicker(LayerPicker):
    """The viewer's Labels and Shapes layers, with a first "no mask" choice.

    Follows a Labels or Shapes layer the user selects in the layer list (e.g. a new Labels
    layer made to paint the holes on).
    """

    def __init__(self, viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(viewer, allow_none=True, follow=True, accepts=is_mask_layer, parent=parent)

    def refresh(self, event: Any = None) -> None:
        """Rebuild the choices and name the first one "no mask (deblur + denoise only)"."""
        super().refresh(event)
        if self.count():
            self.setItemText(0, NO_MASK_TEXT)


class RestoreWidget(RunnerWidget):
    """Restore an Image layer (whole, or the current slice) with a restore (cascade) model.

    The result is added as ``"<input> restored (<model>)"`` (and, when asked, the
    inpainting-only ``"<input> inpainted (<model>)"``: the holes filled, blur and noise
    left) just above the input, with its placement and contrast limits. The input layer is
    never changed; a cancelled or failed run adds nothing.
    """

    action = "restore"
    offers_tta = False  # the restore models run without test-time augmentation

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.layer_picker = LayerPicker(napari_viewer, parent=self)
        self.mask_picker = MaskPicker(napari_viewer, parent=self)
        self.model_picker = self.model_picker_for("restore", "No restore models installed")
        self.add_inpainted = QCheckBox("Also add the inpainting-only layer", self)
        self.add_inpainted.setToolTip(
            "Also add '<image> inpainted (<model>)': the holes filled but blur and noise "
            "left, to see what the inpainting stage put into the holes."
        )
        add_row(self.form, "Image:", self.layer_picker, "The image layer to restore.")
        add_row(
            self.form,
            "Mask:",
            self.mask_picker,
            "The pixels to fill: a Labels layer (labels other than 0; the image's shape, or "
            "YX only for every plane) or a Shapes layer (the union of its shapes, on every "
            f"plane). {NO_MASK_TEXT}: nothing is filled, the model only deblurs and "
            "denoises (NaN pixels are still filled).",
        )
        add_row(
            self.form,
            "Model:",
            self.model_picker,
            "Restore (inpaint + deblur + denoise cascade) models; train one with "
            "`wgan-denoise cascade-train`.",
        )
        self.form.addRow(self.add_inpainted)
        self.current_slice.setToolTip(
            "Restore only the YX plane shown at the sliders' position; the result is placed "
            "at that plane and named '... (slice i, j)'."
        )
        self._watch(self.mask_picker, self.model_picker, refresh=[self.model_picker])

    def _not_ready_for(self, layer: Any) -> str | None:
        if self.model_picker.value() is None:
            if not self.model_picker.values():
                return NO_RESTORE_MODEL
            if layer_channels(layer) == 3:
                return (
                    f"Layer {layer.name!r} is RGB but every installed restore model is gray "
                    "(single-channel); choose a gray layer or split this one into its "
                    "channels (right-click it > Split RGB)."
                )
            return (
                f"Layer {layer.name!r} is single-channel but every installed restore model "
                "is RGB; choose an RGB layer or train a gray model with "
                "`wgan-denoise cascade-train`."
            )
        return None

    # ------------------------------------------------------------------ running

    def _start_job(self, cancel: threading.Event) -> Started:
        layer, model = self._picked(self.model_picker)
        job = prepare_restore(layer, self.mask_picker.layer(), **self._where())
        kwargs = {
            "cache": self.cache,
            "cancel": cancel,
            "inpainted": self.add_inpainted.isChecked(),
        }
        settings = self.options()
        args = (job, model, Settings(settings.device, settings.tile_size))
        description = f"{layer.name} restored ({model})"
        return run_restore, args, kwargs, self._adder(layer), description
