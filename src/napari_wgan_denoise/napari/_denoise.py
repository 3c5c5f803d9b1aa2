"""The Denoise widget: pick an image layer and a model, denoise in a background worker."""

from __future__ import annotations

import threading
from typing import Any

from qtpy.QtWidgets import QWidget

from ._jobs import prepare_job
from ._model_files import ModelFilesMixin
from ._pickers import LayerPicker
from ._runner import RunnerWidget, Started, add_row
from ._runs import run_denoise

__all__ = ["DenoiseWidget"]


class DenoiseWidget(ModelFilesMixin, RunnerWidget):
    """Denoise an Image layer (whole, or the current slice) with a registry model.

    The model list shows each shipped and user model's modality, size and channels and
    greys out models that do not fit the picked layer (RGB vs gray). The result is added as
    ``"<input> [<model>]"`` with the input's placement and contrast limits.

    *Open…* adds a model file (a bioimage.io ``.zip`` package or a ``.safetensors`` /
    ``.json`` pair) to the list; *Export…* writes the picked model as a bioimage.io package.
    """

    action = "denoise"

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.layer_picker = LayerPicker(napari_viewer, parent=self)
        self.model_picker = self.model_picker_for("denoise")
        add_row(self.form, "Image:", self.layer_picker, "The image layer to denoise.")
        add_row(self.form, "Model:", self.model_picker)
        self._add_model_file_buttons(self.model_picker)
        self._watch(self.model_picker, refresh=[self.model_picker])

    def _not_ready_for(self, layer: Any) -> str | None:
        if self.model_picker.value() is None:
            return self._no_fitting_model(self.model_picker, layer)
        return None

    def _start_job(self, cancel: threading.Event) -> Started:
        layer, model = self._picked(self.model_picker)
        job = prepare_job(layer, **self._where())
        kwargs = {"cache": self.cache, "cancel": cancel}
        args = (job, model, self.options())
        return run_denoise, args, kwargs, self._adder(layer), f"{layer.name} [{model}]"
