"""The one-click action (Layers > Filter): denoise the selected image with the default model."""

from __future__ import annotations

from typing import Any

from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from napari.viewer import Viewer

from ..errors import Cancelled
from ..models.families import default_model_for
from ._bridge import Progress
from ._choices import no_model_message
from ._jobs import is_image_layer, layer_channels, prepare_job
from ._runner import error_message
from ._runs import Outputs, run_denoise
from ._viewer import add_outputs

#: Workers of one-click runs still in progress (kept alive until they finish).
RUNNING: set[Any] = set()


def selected_image_layer(viewer: Any) -> Any | None:
    """The active layer if it is an image, else the only selected image layer, else None."""
    active = viewer.layers.selection.active
    if is_image_layer(active):
        return active
    images = [lyr for lyr in viewer.layers.selection if is_image_layer(lyr)]
    return images[0] if len(images) == 1 else None


def start_default_denoise(viewer: Any, layer: Any | None = None) -> Any | None:
    """Denoise ``layer`` (default: the selected image) with ``default_model_for`` its
    channels in a background worker; notifications explain anything that stops it.

    Returns the started worker, or None when there was nothing to run.
    """
    layer = layer if layer is not None else selected_image_layer(viewer)
    if layer is None:
        show_info("Select an image layer to denoise first.")
        return None
    channels = layer_channels(layer)
    model = default_model_for(channels)
    if model is None:
        show_warning(no_model_message(channels))
        return None
    try:
        job = prepare_job(layer)
    except ValueError as exc:
        show_error(str(exc))
        return None
    bar = progress(total=1000, desc=f"{layer.name} [{model}]")
    worker = create_worker(run_denoise, job, model, _ignore_errors=True)

    def on_step(step: Progress) -> None:
        target = int(round(step.fraction * 1000))
        if worker in RUNNING and target > bar.n:
            bar.update(target - bar.n)

    def on_returned(outputs: Outputs) -> None:
        add_outputs(viewer, outputs, layer if layer in viewer.layers else None)

    def on_errored(exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            show_info(str(exc))
        else:
            show_error(error_message(exc))

    def on_finished() -> None:
        bar.close()
        RUNNING.discard(worker)

    worker.yielded.connect(on_step)
    worker.returned.connect(on_returned)
    worker.errored.connect(on_errored)
    worker.finished.connect(on_finished)
    RUNNING.add(worker)
    worker.start()
    return worker


def denoise_selected_layer(viewer: Viewer) -> None:
    """Menu command: denoise the selected image layer with the default model, one click."""
    start_default_denoise(viewer)
