"""Qt-free machinery of the Restore widget and ``restore_layer``: masks from layers, the
core :func:`~napari_wgan_denoise.restore` run as a generator, and the output layers.

Mask rules (the widget, the console API and the tests share them):

* **Labels** layer: the pixels with a label other than 0 are filled. Used pixel for pixel
  in data coordinates: its data must have the image's shape (without the colour axis; one
  mask per plane), or a trailing part of it, e.g. a 2-D ``(Y, X)`` Labels layer for a stack
  (used on every plane). Leading length-1 axes are ignored.
* **Shapes** layer: the union of all shapes, rasterised onto the image's YX grid and used
  on every plane (dead pixels and scratches sit at the same place in every frame). The
  vertices go through both layers' placement (scale, translate, rotate, affine), so shapes
  drawn over a scaled or shifted image still land where they were drawn; the axes before
  YX of nD shapes are ignored.
* An **array**: passed on to ``restore`` (a 2-D YX mask or one of the image's shape).
* **None**: no holes, the model only deblurs and denoises (NaN pixels are still filled).

A Labels or Shapes layer that marks nothing inside the image is an error (a mask that was
picked but not painted yet is more likely a mistake than a wish to skip inpainting).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer, Shapes

from .._version import __version__
from ..errors import Cancelled
from ..inference import restore
from ..models.model import DenoiseModel
from ..models.registry import model_entries
from . import _engine

__all__ = [
    "NO_MASK_TEXT",
    "NO_RESTORE_MODEL",
    "RestoreJob",
    "RestoreResult",
    "add_restored",
    "default_restore_model",
    "is_mask_layer",
    "mask_from_layer",
    "prepare_restore",
    "run_restore",
]

#: The mask picker's "no mask" choice.
NO_MASK_TEXT = "(none: deblur + denoise only)"

#: What to tell users when no restore (cascade) model is installed.
NO_RESTORE_MODEL = "No restore model installed; train one with `wgan-denoise cascade-train`."


def is_mask_layer(layer: Any) -> bool:
    """Labels and Shapes layers can mark the pixels to fill."""
    return isinstance(layer, (Labels, Shapes))


def image_spatial_shape(layer: Image) -> tuple[int, ...]:
    """The shape of an Image layer's data without its colour axis (RGB layers)."""
    shape = tuple(int(n) for n in np.shape(layer.data))
    return shape[:-1] if layer.rgb else shape


def default_restore_model(channels: int) -> str | None:
    """The first installed restore model for images with ``channels`` (1 or 3), or None."""
    for entry in model_entries():
        if entry.task == "restore" and entry.channels == channels:
            return entry.name
    return None


# --------------------------------------------------------------------------- masks


def mask_from_layer(layer: Labels | Shapes, image: Image) -> np.ndarray:
    """The boolean mask (True: fill) that a Labels or Shapes layer marks on ``image``.

    A 2-D ``(Y, X)`` mask, or one of the image's shape without its colour axis (possibly a
    read-only broadcast view); see the module docstring for the rules. Raises
    ``ValueError`` with a clear message when the layer does not fit the image or marks
    nothing inside it.
    """
    spatial = image_spatial_shape(image)
    if isinstance(layer, Labels):
        mask = _labels_mask(layer, spatial, image.name)
        what = "no pixels are labelled"
    elif isinstance(layer, Shapes):
        mask = _shapes_mask(layer, image, spatial[-2:])
        what = "it has no shapes" if len(layer.data) == 0 else "no shape lies inside the image"
    else:
        raise ValueError(
            f"Layer {getattr(layer, 'name', layer)!r} is not a Labels or Shapes layer; "
            "mark the pixels to fill on a Labels layer or draw them on a Shapes layer."
        )
    if not mask.any():
        raise ValueError(
            f"Mask layer {layer.name!r} is empty for image {image.name!r} ({what}); paint "
            "or draw the damaged pixels first, or choose no mask to only deblur and denoise."
        )
    return mask


def _labels_mask(layer: Labels, spatial: tuple[int, ...], image_name: str) -> np.ndarray:
    data = layer.data[0] if layer.multiscale else layer.data
    labels = np.asarray(data)
    while labels.ndim > max(2, len(spatial)) and labels.shape[0] == 1:
        labels = labels[0]
    fits = (
        2 <= labels.ndim <= len(spatial)
        and labels.shape[-2:] == spatial[-2:]
        and all(a in (1, b) for a, b in zip(labels.shape, spatial[len(spatial) - labels.ndim :]))
    )
    if not fits:
        h, w = spatial[-2:]
        raise ValueError(
            f"Mask layer {layer.name!r} has shape {tuple(np.shape(data))} but image "
            f"{image_name!r} has shape {spatial}; paint the mask on a Labels layer of the "
            "image's size (select the image, then Layers > New Labels Layer), or use a 2-D "
            f"{h} x {w} one for every plane."
        )
    mask = labels != 0
    if mask.shape == spatial or mask.ndim == 2:
        return mask
    return np.broadcast_to(mask, spatial)


def _to_image_yx(vertices: np.ndarray, shapes: Shapes, image: Image) -> np.ndarray:
    """Shape vertices (shapes layer data coordinates) in the image's data YX coordinates."""
    out = []
    for vertex in vertices:
        world = shapes.data_to_world(vertex)
        out.append(np.asarray(image.world_to_data(world), dtype=float)[-2:])
    # round away float noise of the round trip (e.g. 9.9999999 instead of 10)
    return np.round(np.asarray(out), 6)


def _shapes_mask(layer: Shapes, image: Image, yx: Sequence[int]) -> np.ndarray:
    h, w = (int(n) for n in yx)
    if len(layer.data) == 0:
        return np.zeros((h, w), bool)
    polygons = [_to_image_yx(np.asarray(d, dtype=float), layer, image) for d in layer.data]
    flat = Shapes(polygons, shape_type=list(layer.shape_type), ndim=2)
    return np.asarray(flat.to_masks((h, w))).reshape(-1, h, w).any(axis=0)


def _mask_for_job(mask: np.ndarray | None, job: _engine.LayerJob) -> np.ndarray | None:
    """The part of ``mask`` that goes with the job's data (its plane for a current-slice
    job when the mask has one plane per image plane)."""
    if mask is None or job.slice_at is None or np.ndim(mask) <= 2:
        return mask
    spatial_ndim = len(job.shape) - (1 if job.rgb else 0)
    if np.shape(mask) != job.shape[:spatial_ndim]:
        return mask  # restore() says what is wrong with it
    return np.asarray(mask)[job.index[:spatial_ndim]]


# --------------------------------------------------------------------------- jobs


@dataclass
class RestoreJob:
    """An image layer's data to restore (an :class:`~._engine.LayerJob`) and its mask."""

    layer: _engine.LayerJob
    mask: np.ndarray | None
    mask_name: str | None = None

    @property
    def name(self) -> str:
        """The input layer's name."""
        return self.layer.name


def prepare_restore(
    layer: Image,
    mask: Labels | Shapes | np.ndarray | None,
    *,
    current_slice: bool = False,
    world_point: Sequence[float] | None = None,
) -> RestoreJob:
    """Capture what to restore from ``layer`` and the mask (a Labels or Shapes layer, an
    array or None), in the main thread; raises ``ValueError`` for bad input."""
    job = _engine.prepare_job(layer, current_slice=current_slice, world_point=world_point)
    mask_name = None
    if mask is None:
        array = None
    elif is_mask_layer(mask):
        array = mask_from_layer(mask, layer)
        mask_name = mask.name
    elif isinstance(mask, Layer):
        raise ValueError(
            f"Mask layer {mask.name!r} is not a Labels or Shapes layer (it is a "
            f"{type(mask).__name__} layer); mark the pixels to fill on a Labels layer or draw "
            "them on a Shapes layer (or pass an array)."
        )
    else:
        array = np.asarray(mask)
    return RestoreJob(job, _mask_for_job(array, job), mask_name)


def check_restore_model(model: DenoiseModel, job: _engine.LayerJob, name: str) -> None:
    """ValueError with a clear message when ``model`` is no restore model or does not fit
    the layer (RGB vs gray)."""
    if model.task != "restore":
        raise ValueError(
            f"Model {name!r} is a {model.task} model, not an inpaint + deblur + denoise "
            "cascade; choose a restore model (the Restore widget lists them)."
        )
    if model.channels == job.channels:
        return
    if job.channels == 3:
        raise ValueError(
            f"Layer {job.name!r} is RGB but restore model {name!r} is gray (single-channel); "
            "choose an RGB restore model, or split the layer into its channels (right-click "
            "it > Split RGB) and restore them one by one."
        )
    raise ValueError(
        f"Restore model {name!r} expects RGB images but layer {job.name!r} is "
        "single-channel; choose a gray restore model."
    )


# --------------------------------------------------------------------------- running


@dataclass
class RestoreResult:
    """A finished restore of one layer, ready to become Image layers in the main thread."""

    job: RestoreJob
    model_name: str
    card_hash: str
    restored: np.ndarray
    inpainted: np.ndarray | None
    settings: dict[str, Any] = field(default_factory=dict)

    def layer_name(self, what: str = "restored") -> str:
        """``"<input> restored (<model>)"`` (or ``inpainted``), plus the plane for a
        current-slice run."""
        name = f"{self.job.name} {what} ({self.model_name})"
        if self.job.layer.slice_at is not None:
            name += f" (slice {', '.join(str(k) for k in self.job.layer.slice_at)})"
        return name

    def metadata(
        self, input_metadata: dict[str, Any] | None = None, what: str = "restored"
    ) -> dict[str, Any]:
        """The input's metadata plus a record of the model, the mask and the settings."""
        meta = dict(input_metadata or {})
        meta[_engine.METADATA_KEY] = {
            "model": self.model_name,
            "card_hash": self.card_hash,
            "source_layer": self.job.name,
            "mask_layer": self.job.mask_name,
            "output": what,
            "settings": dict(self.settings),
            "package_version": __version__,
        }
        return meta

    def to_layers(self, input_metadata: dict[str, Any] | None = None) -> list[Image]:
        """The restored layer (and the inpainting-only one when made), placed and displayed
        like the input."""
        outputs = [("restored", self.restored)]
        if self.inpainted is not None:
            outputs.append(("inpainted", self.inpainted))
        return [
            Image(
                data,
                name=self.layer_name(what),
                metadata=self.metadata(input_metadata, what),
                **self.job.layer.layer_kwargs,
            )
            for what, data in outputs
        ]


def run_restore(
    job: RestoreJob,
    model: str | DenoiseModel,
    *,
    cache: _engine.ModelCache = _engine.SHARED_CACHE,
    device: str = "auto",
    tile_size: int | None = None,
    inpainted: bool = False,
    cancel: Any | None = None,
) -> Generator[_engine.Step, None, RestoreResult]:
    """Load ``model`` (cached), restore the job's data and yield ``(fraction, message)``.

    Meant to run in a worker thread; returns a :class:`RestoreResult` (with the
    inpainting-only output when ``inpainted``). Raises ``Cancelled`` when ``cancel`` is set.
    """
    name = model.name if isinstance(model, DenoiseModel) else str(model)
    yield 0.0, f"Loading {name}"
    dmodel = cache.get(model)
    if _engine.find_entry(name) is None:  # a model object or a file path: the card's name
        name = dmodel.name
    check_restore_model(dmodel, job.layer, name)
    data = job.layer.read()
    alpha = None
    if job.layer.rgb and data.shape[-1] == 4:
        data, alpha = data[..., :3], data[..., 3:]
    mask = job.mask
    if mask is None:
        yx = data.shape[-3:-1] if job.layer.rgb else data.shape[-2:]
        mask = np.zeros(yx, bool)

    def call(array: np.ndarray, network: DenoiseModel, **options: Any) -> Any:
        return restore(array, mask, network, return_inpainted=inpainted, **options)

    message = f"Restoring {job.name} with {name}"
    try:
        out = yield from _engine._scaled(
            _engine.iter_denoise(
                data,
                dmodel,
                cancel=cancel,
                lock=cache.lock_for(dmodel),
                function=call,
                device=device,
                tile_size=tile_size,
            ),
            0.0,
            1.0,
            message,
        )
    except Cancelled as exc:
        raise Cancelled("Restoring was cancelled; no layer was added.") from exc
    if cancel is not None and cancel.is_set():
        raise Cancelled("Restoring was cancelled; no layer was added.")
    restored, filled = out if inpainted else (out, None)
    if alpha is not None:
        restored = np.concatenate([restored, alpha], axis=-1)
        if filled is not None:
            filled = np.concatenate([filled, alpha], axis=-1)
    settings = _engine._settings(job.layer, device, tile_size, None)
    settings.pop("batch_size", None)
    settings["mask_pixels"] = int(np.count_nonzero(job.mask)) if job.mask is not None else 0
    yield 1.0, "Done"
    return RestoreResult(job, name, dmodel.card_hash, restored, filled, settings)


def add_restored(viewer: Any, result: RestoreResult, source: Image | None) -> list[Image]:
    """Add a finished restore to ``viewer`` just above its input; returns the new layers
    (restored first, then the inpainting-only one if it was made)."""
    layers = result.to_layers(source.metadata if source is not None else None)
    for layer in layers:
        viewer.layers.append(layer)
    if source is not None and source in viewer.layers:
        _engine._move_above(viewer, layers, source)
    return layers
