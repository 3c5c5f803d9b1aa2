"""The viewer side: making layers from the runs' ``LayerDataTuple``s and placing them.

Main thread only. Outputs go just above their input in the layer list (so they are its
neighbours in grid mode); Compare links contrast limits and turns on grid mode.
"""

from __future__ import annotations

from typing import Any

from napari.layers import Image, Layer

from ._jobs import METADATA_KEY, FinetuneJob
from ._runs import LayerDataTuple, Outputs

#: Name suffix of the fine-tuning preview layer.
PREVIEW_SUFFIX = " [fine-tune preview]"


def to_layer(data: LayerDataTuple) -> Layer:
    """A napari layer from ``(data, kwargs, layer_type)``."""
    array, kwargs, layer_type = data
    return Layer.create(array, dict(kwargs), layer_type)


def to_layers(outputs: Outputs) -> list[Layer]:
    """The layers of a run's outputs, not added to any viewer."""
    return [to_layer(d) for d in outputs.layers]


def move_above(viewer: Any, new: list[Layer], anchor: Layer) -> None:
    """Put ``new`` layers directly above ``anchor`` in the layer list (neighbours in grid)."""
    for offset, lyr in enumerate(new, start=1):
        src = viewer.layers.index(lyr)
        dest = viewer.layers.index(anchor) + offset
        if dest < src:  # new layers are appended on top, so they only ever move down
            viewer.layers.move(src, dest)


def grid_of(viewer: Any) -> Any:
    """The viewer's grid settings: ``viewer.canvas.grid`` since napari 0.9, else ``.grid``."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


def add_outputs(
    viewer: Any, outputs: Outputs, source: Layer | None, *, grid: bool = False
) -> list[Layer]:
    """Add a run's outputs to ``viewer`` just above ``source`` (when it is still there;
    in their order, or the first on top with ``outputs.main_on_top``),
    link the contrast limits of the input and the ``outputs.linked`` first outputs, and
    (``grid``) switch the viewer to grid mode; returns the new layers."""
    layers = to_layers(outputs)
    stacked = layers[::-1] if outputs.main_on_top else layers  # bottom to top
    for layer in stacked:
        viewer.layers.append(layer)
    there = source is not None and source in viewer.layers
    if there:
        move_above(viewer, stacked, source)
    if outputs.linked:
        linked = layers[: outputs.linked]
        viewer.layers.link_layers(([source] if there else []) + linked, ("contrast_limits",))
    if grid:
        grid_of(viewer).enabled = True
    return layers


def show_preview(
    viewer: Any, data: Any, job: FinetuneJob, layer: Image | None, source: Layer | None
) -> Image:
    """Put ``data`` (the current slice denoised so far) into the fine-tuning preview layer
    (``layer`` if it is still the one, else one found by name, else a new one just above
    ``source``); returns the layer."""
    assert job.preview is not None
    name = job.layer_name + PREVIEW_SUFFIX
    if layer is None or layer not in viewer.layers or layer.name != name:
        layer = next(
            (lyr for lyr in viewer.layers if lyr.name == name and METADATA_KEY in lyr.metadata),
            None,
        )
    meta = {
        METADATA_KEY: {
            "what": "fine-tune preview",
            "base_model": job.base,
            "model": job.name,
            "source_layer": job.layer_name,
            "slice": list(job.preview.slice_at) if job.preview.slice_at else None,
        }
    }
    if layer is not None and getattr(layer, "rgb", False) == job.rgb:
        layer.data = data
        layer.translate = job.preview.layer_kwargs["translate"]
        layer.metadata = {**layer.metadata, **meta}
        return layer
    layer = Image(data, name=name, metadata=meta, **job.preview.layer_kwargs)
    viewer.layers.append(layer)
    if source is not None and source in viewer.layers:
        move_above(viewer, [layer], source)
    return layer
