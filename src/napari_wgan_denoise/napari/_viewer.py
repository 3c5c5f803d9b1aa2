"""The viewer side: making layers from the runs' ``LayerDataTuple``s and placing them.

Main thread only. Outputs go just above their input in the layer list (so they are its
neighbours in grid mode); Compare links contrast limits, replaces its own earlier outputs
of the same input and turns on a grid of just the input, both outputs and their
difference, labelled with the layer names (other layers are hidden until the grid is
turned off).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
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


# --------------------------------------------------------------------------- compare


def _is_compare_output(layer: Layer) -> bool:
    """Whether ``layer`` was made by Compare (its record names the model family)."""
    record = layer.metadata.get(METADATA_KEY) if isinstance(layer.metadata, dict) else None
    return isinstance(record, dict) and "family" in record and "source_layer" in record


def add_comparison(
    viewer: Any, outputs: Outputs, source: Layer | None, *, grid: bool = True
) -> list[Layer]:
    """Add Compare's outputs above ``source`` like :func:`add_outputs`, first removing the
    earlier Compare outputs of the same names (a repeated run replaces its own layers, so
    names never pile up as ``"… [1]"``); with ``grid``, show only the input and the
    ``outputs.panels`` leading outputs in grid mode (see :func:`show_grid`)."""
    names = {kwargs.get("name") for _, kwargs, _ in outputs.layers}
    for old in [lyr for lyr in viewer.layers if lyr.name in names and lyr is not source]:
        if _is_compare_output(old):
            viewer.layers.unlink_layers([old])
            viewer.layers.remove(old)
    layers = add_outputs(viewer, outputs, source, grid=False)
    if grid:
        there = source is not None and source in viewer.layers
        show_grid(viewer, ([source] if there else []) + layers[: outputs.panels])
    return layers


@dataclass
class _GridSession:
    """What :func:`show_grid` changed in one viewer, to undo when the grid is turned off."""

    viewer_ref: weakref.ref  # weak: a closed viewer is not kept alive
    emitter: Any  # the grid's ``enabled`` event that calls ``undo``
    hidden: list[weakref.ref] = field(default_factory=list)
    named: list[tuple[weakref.ref, bool]] = field(default_factory=list)

    def undo(self, event: Any = None) -> None:
        """Grid off: show the layers hidden for it again and put the name labels back."""
        viewer = self.viewer_ref()
        if viewer is not None and grid_of(viewer).enabled:
            return
        for ref in self.hidden:
            if (layer := ref()) is not None:
                layer.visible = True
        for ref, visible in self.named:
            if (layer := ref()) is not None:
                layer.name_overlay.visible = visible
        self.emitter.disconnect(self.undo)
        if _GRID_SESSIONS.get(id(viewer)) is self:
            del _GRID_SESSIONS[id(viewer)]


#: Open grid sessions by ``id`` of the viewer (its grid's event holds ``undo`` weakly, so
#: this keeps the session alive until the grid is turned off).
_GRID_SESSIONS: dict[int, _GridSession] = {}


def show_grid(viewer: Any, shown: list[Layer]) -> None:
    """Grid mode with exactly ``shown`` as its panels, each labelled with its layer name,
    and the view reset so that every panel shows the whole image. Other visible layers are
    hidden meanwhile; turning the grid off shows them again and removes the labels."""
    grid = grid_of(viewer)
    session = _GRID_SESSIONS.get(id(viewer))
    if session is None or session.viewer_ref() is not viewer:
        session = _GridSession(weakref.ref(viewer), grid.events.enabled)
        _GRID_SESSIONS[id(viewer)] = session
        session.emitter.connect(session.undo)
    for layer in viewer.layers:
        if layer.visible and not any(layer is s for s in shown):
            layer.visible = False
            session.hidden.append(weakref.ref(layer))
    for layer in shown:
        layer.visible = True
        if not layer.name_overlay.visible:
            session.named.append((weakref.ref(layer), False))
            layer.name_overlay.visible = True
    grid.enabled = True
    viewer.reset_view()
