"""The Denoise widget: pick an image layer and a model, denoise in a background worker."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from typing import Any

from qtpy.QtWidgets import QWidget

from ..models.families import default_model_for
from . import _engine
from ._qt_common import ChoicePicker, LayerPicker, RunnerWidget, add_row

__all__ = ["DenoiseWidget"]


class DenoiseWidget(RunnerWidget):
    """Denoise an Image layer (whole, or the current slice) with a registry model.

    The model list shows each shipped and user model's modality, size and channels and
    greys out models that do not fit the picked layer (RGB vs gray). The result is added as
    ``"<input> [<model>]"`` with the input's placement and contrast limits.
    """

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.layer_picker = LayerPicker(napari_viewer, parent=self)
        self.model_picker = ChoicePicker(
            self._model_choices,
            empty_text="No models installed",
            preferred=self._preferred_model,
            parent=self,
        )
        add_row(self.form, "Image:", self.layer_picker, "The image layer to denoise.")
        add_row(self.form, "Model:", self.model_picker)
        self.layer_picker.layer_changed.connect(self._on_layer_changed)
        self.model_picker.currentIndexChanged.connect(lambda *_: self.update_run_state())
        self.update_run_state()

    # ------------------------------------------------------------------ choices

    def _model_choices(self) -> list[tuple[str, str, str, bool]]:
        return _engine.model_choices(self._channels())

    def _preferred_model(self) -> str | None:
        channels = self._channels()
        return default_model_for(channels) if channels else None

    def _on_layer_changed(self, layer: Any) -> None:
        self.model_picker.refresh()
        self.update_run_state()

    def _not_ready_reason(self) -> str | None:
        layer = self.layer_picker.layer()
        if layer is None:
            return "Add or open an image layer to denoise."
        if self.model_picker.value() is None:
            channels = _engine.layer_channels(layer)
            if not self.model_picker.values():
                return _engine.no_model_message(channels)
            kind = "RGB" if channels == 3 else "gray"
            return f"No installed model fits the {kind} layer {layer.name!r}."
        return None

    # ------------------------------------------------------------------ running

    def _start_job(
        self, cancel: threading.Event
    ) -> tuple[Callable[..., Generator], tuple, dict, Callable[[Any], None], str]:
        layer = self.layer_picker.layer()
        model = self.model_picker.value()
        if layer is None or model is None:
            raise ValueError(self._not_ready_reason() or "Nothing to run.")
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

    #: The layer added by the last successful run (for scripts and tests).
    last_layer: Any | None = None
