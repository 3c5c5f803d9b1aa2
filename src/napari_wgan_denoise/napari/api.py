"""Console API: denoise, compare and restore napari layers from code (e.g. napari's console).

Importing this module needs napari but not Qt::

    from napari_wgan_denoise.napari import compare_layer, denoise_layer, restore_layer

    out = denoise_layer(viewer.layers["noisy"], model="fluo-wgan")      # adds "noisy [fluo-wgan]"
    cmp = compare_layer("noisy", family="fluo", reference="clean")      # 3 layers + grid mode
    cmp.metrics  # {"fluo-mse": {"psnr": ..., "ssim": ..., "grad_ratio": ...}, ...}
    out = restore_layer("damaged", mask="holes")  # adds "damaged restored (<model>)"

They run in the calling thread (the viewer does not repaint meanwhile); the Denoise,
Compare and Restore widgets run the same code in a background worker with a progress bar
and Cancel.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Shapes

from ..models.families import default_family_for, default_model_for, family_members
from ..models.model import DenoiseModel
from ._bridge import drive
from ._choices import NO_RESTORE_MODEL, default_restore_model, no_model_message
from ._jobs import LayerJob, is_image_layer, prepare_job, prepare_reference, prepare_restore
from ._runs import Outputs, Settings, run_compare, run_denoise, run_restore
from ._viewer import add_comparison, add_outputs, to_layers

__all__ = ["Comparison", "compare_layer", "denoise_layer", "restore_layer"]


def _resolve(layer: Image | str, viewer: Any | None) -> tuple[Image, Any | None]:
    """The Image layer (looked up by name in the viewer if a string) and the viewer that
    holds it (the given one, else napari's current viewer if it holds the layer)."""
    if viewer is None and "napari._qt" in sys.modules:  # no viewer without Qt: don't load it
        import napari

        current = napari.current_viewer()
        if current is not None and (
            isinstance(layer, str) or any(lyr is layer for lyr in current.layers)
        ):
            viewer = current
    if isinstance(layer, str):
        if viewer is None:
            raise ValueError(
                f"No viewer to look up layer {layer!r} in; pass the layer itself or viewer=."
            )
        if layer not in viewer.layers:
            names = ", ".join(repr(lyr.name) for lyr in viewer.layers) or "(none)"
            raise ValueError(f"The viewer has no layer named {layer!r}; its layers: {names}.")
        layer = viewer.layers[layer]
    if not is_image_layer(layer):
        what = repr(layer.name) if hasattr(layer, "name") else f"A {type(layer).__name__}"
        if hasattr(layer, "shape") and hasattr(layer, "dtype"):  # an array: never its repr
            what = f"An array of shape {tuple(layer.shape)} and dtype {layer.dtype}"
            raise ValueError(
                f"{what} is not an image layer. Add it first (viewer.add_image(data)) and pass "
                "the layer, or denoise the array itself with napari_wgan_denoise.denoise()."
            )
        raise ValueError(f"{what} is not an image layer; denoising needs an Image.")
    return layer, viewer


def _job(layer: Image, viewer: Any | None, current_slice: bool) -> LayerJob:
    if current_slice and viewer is None and layer.ndim > 2:
        raise ValueError("current_slice=True needs the viewer that shows the layer (viewer=).")
    point = viewer.dims.point if viewer is not None else None
    return prepare_job(layer, current_slice=current_slice, world_point=point)


def _place(outputs: Outputs, layer: Image, viewer: Any | None) -> list:
    """The outputs as layers, added just above ``layer`` in ``viewer`` unless it is None."""
    if viewer is None:
        return to_layers(outputs)
    return add_outputs(viewer, outputs, layer)


def denoise_layer(
    layer: Image | str,
    model: str | DenoiseModel | None = None,
    *,
    viewer: Any | None = None,
    add_to_viewer: bool = True,
    current_slice: bool = False,
    device: str = "auto",
    tile_size: int | None = None,
    batch_size: int | None = None,
    progress: Callable[[float, str], Any] | None = None,
    cancel: Any | None = None,
    tta: bool | int = False,
) -> Image:
    """Denoise an Image layer with a model and return the new layer ``"<input> [<model>]"``.

    ``layer`` is an Image layer or its name in the viewer. ``model`` is a registry name
    (``napari_wgan_denoise.list_models()``), a model file path or a loaded ``DenoiseModel``;
    ``None`` picks the default model for the layer (as the one-click action does). The
    output keeps the input's dtype, shape, scale, translate, rotation/affine and contrast
    limits; ``layer.metadata["napari_wgan_denoise"]`` records the model, its card hash and
    the settings. It is added to ``viewer`` (default: napari's current viewer when it holds
    the layer) unless ``add_to_viewer=False``.

    ``current_slice=True`` denoises only the YX plane at the viewer's position (a quick
    preview, placed at that plane). ``device``, ``tile_size``, ``batch_size`` and ``tta``
    (test-time augmentation: ``True`` averages the 8 flips/rotations, a little more
    quality at 8× the time) are passed to :func:`napari_wgan_denoise.denoise`;
    ``progress(fraction, message)`` is called as tiles finish and ``cancel`` (a
    ``threading.Event``) stops the run with ``Cancelled``.
    Errors are the core's ``ValueError``/``MemoryError`` with their messages.
    """
    layer, viewer = _resolve(layer, viewer)
    job = _job(layer, viewer, current_slice)
    if model is None:
        model = default_model_for(job.channels)
        if model is None:
            raise ValueError(no_model_message(job.channels))
    outputs = drive(
        run_denoise(job, model, Settings(device, tile_size, batch_size, tta), cancel=cancel),
        progress,
    )
    return _place(outputs, layer, viewer if add_to_viewer else None)[0]


@dataclass
class Comparison:
    """What :func:`compare_layer` made: both outputs, their difference and the metrics.

    ``metrics`` maps ``"input"`` and each model name to ``{"psnr", "ssim", "grad_ratio"}``
    when a reference was given, else it is ``None``. ``readout`` maps each model name (and
    ``"ideal"``, the true noise, with a reference) to the method-noise statistics
    ``{"whiteness", "grad_corr", "residual_std"}``; ``method_noise`` holds the method noise
    layers when they were asked for.
    """

    family: str
    mse: Image
    wgan: Image
    difference: Image
    metrics: dict[str, dict[str, float]] | None
    readout: dict[str, dict[str, float]] | None = None
    method_noise: list[Image] = field(default_factory=list)

    @property
    def layers(self) -> tuple[Image, Image, Image]:
        """``(mse, wgan, difference)``."""
        return self.mse, self.wgan, self.difference


def compare_layer(
    layer: Image | str,
    family: str | None = None,
    reference: Image | str | None = None,
    *,
    viewer: Any | None = None,
    add_to_viewer: bool = True,
    grid: bool = True,
    current_slice: bool = False,
    device: str = "auto",
    tile_size: int | None = None,
    batch_size: int | None = None,
    progress: Callable[[float, str], Any] | None = None,
    cancel: Any | None = None,
    method_noise: bool = False,
    tta: bool | int = False,
) -> Comparison:
    """Run a family's ID-MSE and ID-MSE-WGAN twins on a layer and compare them.

    ``family`` is e.g. ``"fluo"`` (models ``fluo-mse`` and ``fluo-wgan``) or ``"cells-fast"``;
    ``None`` picks the default family for the layer. Adds both outputs and an
    ``|MSE − WGAN|`` layer (where the adversarial model changed most: check there for
    invented detail) above the input as ``"<input> MSE [<model>]"``, ``"<input> WGAN
    [<model>]"`` and ``"<input> |MSE − WGAN| [<family>]"`` (replacing the layers of an
    earlier comparison of the same input and family), links the contrast limits of input
    and outputs and turns on a grid of just these four, labelled with their names and the
    view reset (``grid=False`` leaves the view as it is). With a ``reference``
    (the clean image, a layer or its name) ``Comparison.metrics`` holds PSNR, SSIM and
    gradient ratio of the input and both outputs. ``Comparison.readout`` always holds the
    hallucination readout; ``method_noise=True`` also adds each model's input − output
    layer. Other options as in :func:`denoise_layer`.
    """
    layer, viewer = _resolve(layer, viewer)
    job = _job(layer, viewer, current_slice)
    if family is None:
        family = default_family_for(job.channels)
        if family is None:
            raise ValueError(
                "No complete model family (an -mse and a -wgan model) fits this layer. "
                + no_model_message(job.channels)
            )
    mse_name, wgan_name = family_members(family)
    ref_job = None
    if reference is not None:
        ref_layer, _ = _resolve(reference, viewer)
        ref_job = prepare_reference(ref_layer, job)
    outputs = drive(
        run_compare(
            job,
            mse_name,
            wgan_name,
            Settings(device, tile_size, batch_size, tta),
            family=family,
            reference=ref_job,
            cancel=cancel,
            method_noise=method_noise,
        ),
        progress,
    )
    if viewer is not None and add_to_viewer:
        layers = add_comparison(viewer, outputs, layer, grid=grid)
    else:
        layers = to_layers(outputs)
    mse, wgan, diff = layers[: outputs.panels]
    residuals = layers[outputs.panels :]
    return Comparison(family, mse, wgan, diff, outputs.metrics, outputs.readout, residuals)


def restore_layer(
    layer: Image | str,
    mask: Labels | Shapes | str | np.ndarray | None = None,
    model: str | DenoiseModel | None = None,
    *,
    viewer: Any | None = None,
    add_to_viewer: bool = True,
    return_inpainted: bool = False,
    current_slice: bool = False,
    device: str = "auto",
    tile_size: int | None = None,
    progress: Callable[[float, str], Any] | None = None,
    cancel: Any | None = None,
) -> Image | tuple[Image, Image]:
    """Fill the masked pixels of an Image layer and remove its blur and noise with a restore
    (inpaint + deblur + denoise cascade) model; returns the new ``"<input> restored
    (<model>)"`` layer.

    ``layer`` is an Image layer or its name in the viewer. ``mask`` marks the pixels to
    fill: a Labels layer (labels other than 0; the image's shape, or YX only for every
    plane), a Shapes layer (the union of its shapes, on every plane), either by name, an
    array (2-D YX, or the image's shape without the colour axis) or ``None`` (no holes:
    deblur and denoise only). A Labels or Shapes layer that marks nothing is an error.
    ``model`` is a restore model's registry name, a model file path or a loaded model;
    ``None`` picks the first installed restore model that fits the layer.

    With ``return_inpainted=True`` also makes the inpainting-only ``"<input> inpainted
    (<model>)"`` layer and returns ``(restored, inpainted)``. The outputs keep the input's
    dtype, shape, placement and contrast limits and are added just above the input in
    ``viewer`` (default: napari's current viewer when it holds the layer) unless
    ``add_to_viewer=False``. Other options as in :func:`denoise_layer`; errors are
    ``ValueError`` with the core's messages, ``Cancelled`` when ``cancel`` is set.
    """
    layer, viewer = _resolve(layer, viewer)
    if isinstance(mask, str):
        if viewer is None or mask not in viewer.layers:
            raise ValueError(
                f"No layer named {mask!r} to use as mask; pass the Labels or Shapes layer "
                "itself (or viewer=)."
            )
        mask = viewer.layers[mask]
    if current_slice and viewer is None and layer.ndim > 2:
        raise ValueError("current_slice=True needs the viewer that shows the layer (viewer=).")
    job = prepare_restore(
        layer,
        mask,
        current_slice=current_slice,
        world_point=viewer.dims.point if viewer is not None else None,
    )
    if model is None:
        model = default_restore_model(job.layer.channels)
        if model is None:
            raise ValueError(NO_RESTORE_MODEL)
    outputs = drive(
        run_restore(
            job, model, Settings(device, tile_size), inpainted=return_inpainted, cancel=cancel
        ),
        progress,
    )
    layers = _place(outputs, layer, viewer if add_to_viewer else None)
    return (layers[0], layers[1]) if return_inpainted else layers[0]
