"""Layers → arrays: what a run needs from the viewer, captured in the main thread.

A *job* holds the data (arrays or lazy arrays, read later in the worker thread), the
selection (whole layer or the current YX plane) and the output's placement and display
settings. Jobs never touch Qt; :mod:`._runs` turns them into core calls and
``LayerDataTuple``s. Masks and ROIs come from :mod:`._masks`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer, Shapes
from napari.utils.transforms import Affine

from ..inference.lazy import ome_image_path
from ..models.registry import list_models
from ._choices import kind
from ._masks import is_mask_layer, mask_from_layer, roi_mask

#: Key under which output layers record how they were made, in ``layer.metadata``.
METADATA_KEY = "napari_wgan_denoise"


def is_image_layer(layer: Any) -> bool:
    """True for napari Image layers (not Labels), the layers the widgets can denoise."""
    return isinstance(layer, Image) and not isinstance(layer, Labels)


def layer_channels(layer: Image) -> int:
    """Colour channels a model needs for this layer: 3 for RGB(A) layers, else 1."""
    return 3 if getattr(layer, "rgb", False) else 1


def is_lazy_data(data: Any) -> bool:
    """True for a dask array or a zarr array (data that napari loads lazily)."""
    da = sys.modules.get("dask.array")
    if da is not None and isinstance(data, da.Array):
        return True
    mod = type(data).__module__
    return mod.startswith("zarr") and hasattr(data, "chunks") and hasattr(data, "shape")


@dataclass
class LayerJob:
    """What to process from one Image layer, captured in the main thread.

    ``index`` selects the data (all of it, or the current YX plane with the leading axes
    kept as length-1 axes); ``layer_kwargs`` are the input's placement and display
    settings for the output layer, its translate already shifted for a slice, and
    ``metadata`` the input's metadata (carried over to the outputs).
    """

    name: str
    source: Any  # the layer's data array (numpy, dask, zarr, ...)
    index: tuple[slice, ...]
    rgb: bool
    channels: int
    slice_at: tuple[int, ...] | None
    layer_kwargs: dict[str, Any]
    shape: tuple[int, ...]
    ome_source: str | None = None  # the OME-Zarr image the layer was read from, if any
    metadata: dict[str, Any] = field(default_factory=dict)

    def read(self) -> np.ndarray:
        """Load the selected data as a numpy array (call from the worker thread)."""
        return np.asarray(self.source[self.index])

    @property
    def selected_shape(self) -> tuple[int, ...]:
        """The shape of the selected data (the output's shape)."""
        return tuple(len(range(*s.indices(n))) for s, n in zip(self.index, self.shape))

    @property
    def plane_shape(self) -> tuple[int, int]:
        """Height and width of the YX planes."""
        shape = self.shape[:-1] if self.rgb else self.shape
        return int(shape[-2]), int(shape[-1])

    @property
    def planes(self) -> int:
        """How many YX planes the selection holds."""
        shape = self.selected_shape[:-1] if self.rgb else self.selected_shape
        return int(np.prod(shape[:-2], dtype=np.int64)) if len(shape) > 2 else 1

    def output_name(self, name: str) -> str:
        """``name``, plus the plane for a current-slice job."""
        if self.slice_at is not None:
            name += f" (slice {', '.join(str(k) for k in self.slice_at)})"
        return name


def current_slice_index(layer: Image, world_point: Sequence[float]) -> tuple[int, ...]:
    """Data indices of ``layer``'s leading (non-YX) axes at the viewer position ``world_point``.

    Rounded like napari's own slicing. Raises ``ValueError`` if the position lies outside
    the layer on one of those axes (napari then shows nothing of the layer).
    """
    n_lead = layer.ndim - 2
    if n_lead <= 0:
        return ()
    coords = layer.world_to_data(np.asarray(world_point, dtype=float))
    shape = np.shape(layer.data)
    index = []
    for axis in range(n_lead):
        k = int(np.round(coords[axis]))
        if not 0 <= k < shape[axis]:
            raise ValueError(
                f"The viewer's current position is outside layer {layer.name!r} on its axis "
                f"{axis} (plane {k} of {shape[axis]}): move the slider onto the layer or "
                "untick 'current slice only'."
            )
        index.append(k)
    return tuple(index)


def _shifted_translate(layer: Image, slice_at: tuple[int, ...]) -> np.ndarray:
    """The translate that puts data index 0 of a slice where index ``slice_at`` was."""
    ndim = layer.ndim
    offset = np.zeros(ndim)
    offset[: len(slice_at)] = slice_at
    transform = Affine(
        scale=layer.scale, translate=layer.translate, rotate=layer.rotate, shear=layer.shear
    )
    return np.asarray(layer.translate) + transform(offset) - transform(np.zeros(ndim))


def display_kwargs(layer: Image) -> dict[str, Any]:
    """The input's placement (scale, translate, rotate, shear, affine, units, axis labels)
    and display settings (contrast limits, colormap, gamma, ...) for an output layer."""
    kwargs: dict[str, Any] = {
        "scale": tuple(layer.scale),
        "translate": tuple(layer.translate),
        "rotate": np.asarray(layer.rotate),
        "shear": np.asarray(layer.shear),
        "affine": layer.affine,
        "contrast_limits": tuple(layer.contrast_limits),
        "colormap": layer.colormap,
        "gamma": layer.gamma,
        "blending": layer.blending,
        "opacity": layer.opacity,
        "rgb": layer.rgb,
    }
    for attr in ("units", "axis_labels"):
        if hasattr(layer, attr):
            kwargs[attr] = getattr(layer, attr)
    return kwargs


def prepare_job(
    layer: Image, *, current_slice: bool = False, world_point: Sequence[float] | None = None
) -> LayerJob:
    """Capture what to process from ``layer``; with ``current_slice`` only the YX plane at
    ``world_point`` (the viewer's ``dims.point``), placed where it was in the stack."""
    if not is_image_layer(layer):
        raise ValueError(
            f"Layer {getattr(layer, 'name', layer)!r} is not an image layer; choose an Image."
        )
    if layer.multiscale:
        raise ValueError(
            f"Layer {layer.name!r} is multiscale (a pyramid); denoising pyramids is not "
            "supported. Open its full-resolution level as a plain image layer instead."
        )
    shape = tuple(np.shape(layer.data))
    rgb = bool(layer.rgb)
    kwargs = display_kwargs(layer)
    slice_at: tuple[int, ...] | None = None
    index: tuple[slice, ...] = (slice(None),) * len(shape)
    if current_slice and layer.ndim > 2:
        if world_point is None:
            raise ValueError("'current slice only' needs the viewer's position (world_point).")
        slice_at = current_slice_index(layer, world_point)
        index = tuple(slice(k, k + 1) for k in slice_at) + (slice(None),) * (
            len(shape) - len(slice_at)
        )
        kwargs["translate"] = tuple(_shifted_translate(layer, slice_at))
    return LayerJob(
        name=layer.name,
        source=layer.data,
        index=index,
        rgb=rgb,
        channels=3 if rgb else 1,
        slice_at=slice_at,
        layer_kwargs=kwargs,
        shape=shape,
        ome_source=_ome_source(layer, shape),
        metadata=dict(layer.metadata),
    )


def _ome_source(layer: Image, shape: tuple[int, ...]) -> str | None:
    """The path of the OME-Zarr image a lazily loaded layer was read from, or None."""
    path = getattr(getattr(layer, "source", None), "path", None)
    if not path or not is_lazy_data(layer.data):
        return None
    return ome_image_path(path, shape)


# --------------------------------------------------------------------------- compare


@dataclass
class ReferenceJob:
    """The clean reference layer's data selected to match a :class:`LayerJob`."""

    name: str
    source: Any
    index: tuple[slice, ...]

    def read(self, shape: tuple[int, ...]) -> np.ndarray:
        """Load the reference and bring it to ``shape`` (the output's)."""
        ref = np.asarray(self.source[self.index])
        if ref.shape != shape:
            ref = ref.reshape(shape)
        return ref


def prepare_reference(reference: Image, job: LayerJob) -> ReferenceJob:
    """Select the part of ``reference`` that matches the job, or raise a clear ValueError."""
    if not is_image_layer(reference):
        raise ValueError(f"Reference {reference!r} is not an image layer.")
    shape = tuple(np.shape(reference.data))
    if shape == job.shape:
        return ReferenceJob(reference.name, reference.data, job.index)
    out_shape = job.selected_shape
    if [n for n in shape if n != 1] == [n for n in out_shape if n != 1]:
        # e.g. a 2D clean image for the current plane of a stack: reshaped when read
        return ReferenceJob(reference.name, reference.data, (slice(None),) * len(shape))
    raise ValueError(
        f"Reference layer {reference.name!r} has shape {shape} but layer {job.name!r} has "
        f"shape {job.shape}; choose the clean version of the same image as reference."
    )


# --------------------------------------------------------------------------- restore


@dataclass
class RestoreJob:
    """An image layer's data to restore (a :class:`LayerJob`) and its mask."""

    layer: LayerJob
    mask: np.ndarray | None
    mask_name: str | None = None

    @property
    def name(self) -> str:
        """The input layer's name."""
        return self.layer.name


def _mask_for_job(mask: np.ndarray | None, job: LayerJob) -> np.ndarray | None:
    """The part of ``mask`` that goes with the job's data (its plane for a current-slice
    job when the mask has one plane per image plane)."""
    if mask is None or job.slice_at is None or np.ndim(mask) <= 2:
        return mask
    spatial_ndim = len(job.shape) - (1 if job.rgb else 0)
    if np.shape(mask) != job.shape[:spatial_ndim]:
        return mask  # restore() says what is wrong with it
    return np.asarray(mask)[job.index[:spatial_ndim]]


def prepare_restore(
    layer: Image,
    mask: Labels | Shapes | np.ndarray | None,
    *,
    current_slice: bool = False,
    world_point: Sequence[float] | None = None,
) -> RestoreJob:
    """Capture what to restore from ``layer`` and the mask (a Labels or Shapes layer, an
    array or None), in the main thread; raises ``ValueError`` for bad input."""
    job = prepare_job(layer, current_slice=current_slice, world_point=world_point)
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


# --------------------------------------------------------------------------- fine-tune


@dataclass
class FinetuneJob:
    """Everything one fine-tuning run needs, captured from the layers in the main thread.

    Array-like data is read (``np.asarray``) in the worker thread. ``preview`` is the
    current slice of the input (a current-slice :class:`LayerJob`), or None. ``options``
    are passed to the core ``finetune`` (iterations, time_budget, device, ...).
    """

    layer_name: str
    noisy: Any
    rgb: bool
    mode: str
    base: str
    name: str
    clean: Any | None = None
    references: list[Any] | None = None
    roi: np.ndarray | None = None
    axis: int | None = None
    preview: LayerJob | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        """One line for the progress bar and the status."""
        return f"Fine-tuning {self.base} ({self.mode}) on {self.layer_name}"


def check_model_name(name: str) -> str:
    """``name`` if it can name a new user model; ValueError saying why not otherwise."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*", name):
        raise ValueError(f"Invalid model name {name!r}: use letters, digits, '-', '_' and '.'.")
    if name in list_models():
        raise ValueError(f"A model named {name!r} already exists; type another name under Save as.")
    return name


def prepare_finetune(
    layer: Image,
    *,
    mode: str,
    base: str,
    name: str,
    other: Image | None = None,
    roi: Labels | Shapes | None = None,
    axis: int | None = None,
    world_point: Sequence[float] | None = None,
    options: dict[str, Any] | None = None,
) -> FinetuneJob:
    """Capture a fine-tuning run on ``layer``: ``other`` is the clean layer (paired) or the
    unpaired reference (two-stage, n2n), ``roi`` a Labels or Shapes layer, ``world_point``
    the viewer position of the preview slice (None: no preview). ValueError for bad input."""
    if layer.multiscale:
        raise ValueError(
            f"Layer {layer.name!r} is multiscale (a pyramid); open its full-resolution "
            "level as a plain image layer to fine-tune on it."
        )
    if other is not None and layer_channels(other) != layer_channels(layer):
        raise ValueError(
            f"Layer {other.name!r} is {kind(layer_channels(other))} but {layer.name!r} is "
            f"{kind(layer_channels(layer))}; "
            "the clean/reference layer must have the same kind of channels."
        )
    clean = references = None
    if mode == "paired":
        if other is None:
            raise ValueError("Paired fine-tuning needs the clean version of the stack.")
        if np.shape(other.data) != np.shape(layer.data):
            raise ValueError(
                f"The clean layer {other.name!r} has shape {np.shape(other.data)} but "
                f"{layer.name!r} has {np.shape(layer.data)}; paired fine-tuning needs the "
                "clean version of the same stack."
            )
        clean = other.data
    elif other is not None:
        references = [other.data]
    preview = None
    if world_point is not None:
        try:
            preview = prepare_job(layer, current_slice=True, world_point=world_point)
        except ValueError:  # the sliders are outside the layer: no preview
            preview = None
    return FinetuneJob(
        layer_name=layer.name,
        noisy=layer.data,
        rgb=bool(layer.rgb),
        mode=mode,
        base=base,
        name=name,
        clean=clean,
        references=references,
        roi=roi_mask(roi, layer) if roi is not None else None,
        axis=axis if mode == "n2n" else None,
        preview=preview,
        options=dict(options or {}),
    )
