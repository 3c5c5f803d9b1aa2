"""The Denoise widget: pick an image layer and a model, denoise in a background worker."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QPushButton, QWidget

from ..models.families import default_model_for
from . import _engine
from ._qt_common import ChoicePicker, LayerPicker, RunnerWidget, add_row

__all__ = ["DenoiseWidget"]


class DenoiseWidget(RunnerWidget):
    """Denoise an Image layer (whole, or the current slice) with a registry model.

    The model list shows each shipped and user model's modality, size and channels and
    greys out models that do not fit the picked layer (RGB vs gray). The result is added as
    ``"<input> [<model>]"`` with the input's placement and contrast limits.

    *Open…* adds a model from a file (a bioimage.io ``.zip`` package or our
    ``.safetensors``/``.json`` pair) to the list; *Export…* writes the picked model as a
    bioimage.io package for Fiji/deepImageJ, ilastik, QuPath or the Model Zoo.
    """

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.layer_picker = LayerPicker(napari_viewer, parent=self)
        #: Models opened from files: path -> (name, channels).
        self.model_files: dict[str, tuple[str, int]] = {}
        self.model_picker = ChoicePicker(
            self._model_choices,
            empty_text="No models installed",
            preferred=self._preferred_model,
            parent=self,
        )
        add_row(self.form, "Image:", self.layer_picker, "The image layer to denoise.")
        add_row(self.form, "Model:", self.model_picker)
        # -- model files and bioimage.io export (kept together for easy porting)
        self.open_button = QPushButton("Open…", self)
        self.open_button.setToolTip(
            "Use a model file: a bioimage.io package (.zip) or NAME.safetensors / NAME.json."
        )
        self.export_button = QPushButton("Export…", self)
        self.export_button.setToolTip(
            "Save the picked model as a bioimage.io package (.zip) for Fiji/deepImageJ, "
            "ilastik, QuPath or the bioimage.io Model Zoo."
        )
        self.open_button.clicked.connect(lambda: self.open_model_file())
        self.export_button.clicked.connect(lambda: self.export_model())
        model_buttons = QHBoxLayout()
        model_buttons.addWidget(self.open_button)
        model_buttons.addWidget(self.export_button)
        self.form.addRow("", model_buttons)
        self.layer_picker.layer_changed.connect(self._on_layer_changed)
        self.model_picker.currentIndexChanged.connect(lambda *_: self.update_run_state())
        self.update_run_state()

    # ------------------------------------------------------------------ choices

    def _model_choices(self) -> list[tuple[str, str, str, bool]]:
        return _engine.model_choices(self._channels()) + self._file_choices()

    def _file_choices(self) -> list[tuple[str, str, str, bool]]:
        """The model files opened with *Open…*, greyed out where they do not fit the layer."""
        channels = self._channels()
        out = []
        for path, (name, n) in self.model_files.items():
            fits = channels is None or n == channels
            kind = "RGB" if n == 3 else "gray"
            out.append((path, f"{name}  (file, {kind})", path, fits))
        return out

    def open_model_file(self, path: str | None = None) -> str | None:
        """Add a model file (bioimage.io ``.zip``, ``.safetensors`` or ``.json``) to the
        model list and pick it; asks for the file when ``path`` is None. Returns the path,
        or None when nothing was opened (cancelled, or the file cannot be used: the reason
        is shown)."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(
                self,
                "Open a model",
                "",
                "Models (*.zip *.safetensors *.json);;bioimage.io packages (*.zip)",
            )
            if not path:
                return None
        path = str(Path(path).resolve())
        try:
            model = self.cache.get(path)
        except (ValueError, OSError, RuntimeError) as exc:
            show_error(f"Cannot use {Path(path).name} as a model: {exc}")
            return None
        if model.task != "denoise":
            show_error(f"{model.name} is a {model.task} model: open it in the Restore widget.")
            return None
        self.model_files[path] = (model.name, model.channels)
        self.model_picker.refresh()
        self.model_picker.set_value(path)
        self.update_run_state()
        return path

    def export_model(self, path: str | None = None) -> Path | None:
        """Export the picked model as a bioimage.io package (asks where when ``path`` is
        None); returns the written file, or None when cancelled or refused (reason shown)."""
        from ..export.bioimageio import export_bioimageio

        model = self.model_picker.value()
        if model is None:
            show_error("Pick a model to export first.")
            return None
        if path is None:
            default = f"{Path(model).stem if Path(model).suffix else model}.zip"
            path, _ = QFileDialog.getSaveFileName(
                self, "Export as bioimage.io package", default, "bioimage.io package (*.zip)"
            )
            if not path:
                return None
        try:
            out = export_bioimageio(self.cache.get(model), path, overwrite=True)
        except (ValueError, OSError, RuntimeError) as exc:
            show_error(f"Could not export {model}: {exc}")
            return None
        show_info(f"Exported {model} to {out}")
        self.status.setText(f"Exported to {out}")
        return out

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
