"""The one rasteriser of mask and ROI layers, shared by Restore and Fine-tune.

Rules (the widgets, the console API and the tests share them):

* **Labels** layer: the pixels with a label other than 0. Used pixel for pixel in data
  coordinates: its data must have the image's shape (without the colour axis; one mask per
  plane), or a trailing part of it, e.g. a 2-D ``(Y, X)`` Labels layer for a stack (used
  on every plane). Leading length-1 axes are ignored.
* **Shapes** layer: the union of all shapes, rasterised onto the image's YX grid and used
  on every plane (dead pixels and scratches sit at the same place in every frame). The
  vertices go through both layers' placement (scale, translate, rotate, affine), so shapes
  drawn over a scaled or shifted image land where they were drawn; the axes before YX of
  nD shapes are ignored.

Restore fills the mask (:func:`mask_from_layer`); Fine-tune takes patches from inside its
YX projection (:func:`roi_mask`: a pixel counts when any plane marks it). A layer that
marks nothing inside the image is an error (a mask that was picked but not painted yet is
more likely a mistake than a wish to use none).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Shapes

__all__ = ["image_spatial_shape", "is_mask_layer", "mask_from_layer", "roi_mask"]


def is_mask_layer(layer: Any) -> bool:
    """Labels and Shapes layers can mark pixels (holes to fill, a region to learn from)."""
    return isinstance(layer, (Labels, Shapes))


def image_spatial_shape(layer: Image) -> tuple[int, ...]:
    """The shape of an Image layer's data without its colour axis (RGB layers)."""
    shape = tuple(int(n) for n in np.shape(layer.data))
    return shape[:-1] if layer.rgb else shape


def mask_from_layer(layer: Labels | Shapes, image: Image, *, role: str = "Mask") -> np.ndarray:
    """The boolean mask (True: marked) that a Labels or Shapes layer marks on ``image``.

    A 2-D ``(Y, X)`` mask, or one of the image's shape without its colour axis (possibly a
    read-only broadcast view); see the module docstring for the rules. Raises
    ``ValueError`` with a clear message when the layer does not fit the image or marks
    nothing inside it. ``role`` names the layer in messages ("Mask", "ROI").
    """
    spatial = image_spatial_shape(image)
    if isinstance(layer, Labels):
        mask = _labels_mask(layer, spatial, image.name, role)
        what = "no pixels are labelled"
    elif isinstance(layer, Shapes):
        mask = _shapes_mask(layer, image, spatial[-2:])
        what = "it has no shapes" if len(layer.data) == 0 else "no shape lies inside the image"
    else:
        raise ValueError(
            f"Layer {getattr(layer, 'name', layer)!r} is not a Labels or Shapes layer; "
            "mark the pixels on a Labels layer or draw them on a Shapes layer."
        )
    if not mask.any():
        hint = (
            "choose no mask to only deblur and denoise"
            if role == "Mask"
            else "choose no ROI to learn from the whole image"
        )
        raise ValueError(
            f"{role} layer {layer.name!r} is empty for image {image.name!r} ({what}); paint "
            f"or draw the pixels first, or {hint}."
        )
    return mask


def roi_mask(layer: Labels | Shapes, image: Image) -> np.ndarray:
    """The YX region a Labels or Shapes layer marks on ``image``: :func:`mask_from_layer`
    projected onto YX (a pixel counts when any plane marks it)."""
    mask = mask_from_layer(layer, image, role="ROI")
    h, w = mask.shape[-2:]
    return np.asarray(mask).reshape(-1, h, w).any(axis=0)


def _labels_mask(layer: Labels, spatial: tuple[int, ...], image_name: str, role: str) -> np.ndarray:
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
        got = " x ".join(str(n) for n in np.shape(data)[-2:])
        raise ValueError(
            f"{role} layer {layer.name!r} has shape {tuple(np.shape(data))} ({got} pixels in "
            f"YX) but image {image_name!r} has shape {spatial} ({h} x {w}); paint it on a "
            "Labels layer of the image's size (select the image, then Layers > New Labels "
            f"Layer), or use a 2-D {h} x {w} one for every plane."
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
