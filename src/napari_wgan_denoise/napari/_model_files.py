"""Model files in a widget's model list: *Open…* a bioimage.io package or a model file pair,
*Export…* the picked model as a bioimage.io package (the Denoise widget uses both)."""

from __future__ import annotations

from pathlib import Path

from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QPushButton

from ._choices import kind
from ._pickers import ChoicePicker

__all__ = ["ModelFilesMixin"]

#: What *Open…* offers.
OPEN_FILTER = "Models (*.zip *.safetensors *.json);;bioimage.io packages (*.zip)"


class ModelFilesMixin:
    """Adds *Open…* and *Export…* under a :class:`~._runner.RunnerWidget`'s model picker.

    *Open…* adds a model from a file (a bioimage.io ``.zip`` package or our
    ``NAME.safetensors`` / ``NAME.json`` pair) to the list; *Export…* writes the picked
    model as a bioimage.io package for Fiji/deepImageJ, ilastik, QuPath or the Model Zoo.
    Call :meth:`_add_model_file_buttons` once the picker is made.
    """

    #: Models opened from files: path -> (name, channels).
    model_files: dict[str, tuple[str, int]]
    _files_picker: ChoicePicker

    def _add_model_file_buttons(self, picker: ChoicePicker) -> None:
        """Put the two buttons under ``picker`` and list the opened files in it."""
        self.model_files = {}
        self._files_picker = picker
        registry_choices = picker.source
        picker.source = lambda: registry_choices() + self._file_choices()
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
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.export_button)
        self.form.addRow("", buttons)

    def _file_choices(self) -> list[tuple[str, str, str, bool]]:
        """The model files opened with *Open…*, greyed out where they do not fit the layer."""
        channels = self._channels()
        out = []
        for path, (name, n) in self.model_files.items():
            fits = channels is None or n == channels
            out.append((path, f"{name}  (file, {kind(n)})", path, fits))
        return out

    def open_model_file(self, path: str | None = None) -> str | None:
        """Add a model file (bioimage.io ``.zip``, ``.safetensors`` or ``.json``) to the
        model list and pick it; asks for the file when ``path`` is None. Returns the path,
        or None when nothing was opened (cancelled, or the file cannot be used: the reason
        is shown)."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Open a model", "", OPEN_FILTER)
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
        self._files_picker.refresh()
        self._files_picker.set_value(path)
        self.update_run_state()
        return path

    def export_model(self, path: str | None = None) -> Path | None:
        """Export the picked model as a bioimage.io package (asks where when ``path`` is
        None); returns the written file, or None when cancelled or refused (reason shown)."""
        from ..export.bioimageio import export_bioimageio

        model = self._files_picker.value()
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
