"""``denoise``: apply a model to an array of any dimensionality and dtype."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import Cancelled
from ..models.model import DEFAULT_NORMALISATION, DenoiseModel
from ..models.registry import load_model
from ..validation import check_axes, check_denoise_options, check_tta
from .augment import DihedralEnsemble
from .devices import resolve_device, use_bf16
from .normalise import from_network, intensity_range, to_network
from .optimise import prepared_network
from .tiling import (
    DEFAULT_TILE,
    EDGE_BORDER,
    count_tiles,
    round_up,
    run_tiled,
    smallest_tile,
    tile_geometry,
)

ProgressFn = Callable[[float, int], Any]

#: Pixels per batch by device (the tile edge is tiling.DEFAULT_TILE). On the CPU one 512 px
#: tile at a time was the fastest on 1-2 MP and 4 MP planes (docs/benchmarks.md §7j): bigger
#: tiles or batches leave the caches.
PIXELS_PER_BATCH = {"cpu": 1 << 18, "cuda": 1 << 23, "mps": 1 << 21}


@dataclass(frozen=True)
class AxesPlan:
    """Where the plane (Y, X) and colour (C) axes of an input are, and which axes lead."""

    axes: str
    order: tuple[int, ...]  # transpose that puts leading axes first, then Y, X (, C)
    n_leading: int
    rgb: bool


def as_model(model: DenoiseModel | nn.Module | str) -> DenoiseModel:
    """Accept a model object, a bare generator network, a registered name or a file path."""
    if isinstance(model, DenoiseModel):
        return model
    if isinstance(model, nn.Module):
        channels = int(getattr(model, "channels", 1))
        card = {
            "name": type(model).__name__,
            "architecture": "custom",
            "channels": channels,
            "normalisation": dict(DEFAULT_NORMALISATION),
        }
        return DenoiseModel(network=model, card=card)
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        return load_model(model)
    raise TypeError(
        "model must be a DenoiseModel, a torch module, a name or a path, "
        f"not {type(model).__name__}."
    )


def plan_axes(shape: tuple[int, ...], axes: str | None, channels: int) -> AxesPlan:
    """Work out the plane and colour axes of an array, from ``axes`` or from its shape.

    Without ``axes`` the last two axes are YX for gray models and the last three YXC for
    RGB models. With ``axes`` (one letter per axis, e.g. ``"TZYX"``, ``"CYX"``, ``"YXC"``)
    Y and X must be present; C (or S) is the colour axis of RGB models and an ordinary
    leading axis (each channel denoised on its own) for gray models.
    """
    ndim = len(shape)
    if axes is None:
        if channels == 3:
            if ndim < 3 or shape[-1] != 3:
                hint = (
                    " It has 4 values on the last axis: drop the alpha channel (array[..., :3])."
                    if ndim >= 3 and shape[-1] == 4
                    else ""
                )
                raise ValueError(
                    f"This model expects RGB images (..., Y, X, 3) but got shape {shape}.{hint} "
                    "Choose a gray model for single-channel data, or pass axes= if the colour "
                    "axis is elsewhere."
                )
            axes = "Q" * (ndim - 3) + "YXC"
        else:
            if ndim >= 3 and shape[-1] in (3, 4) and shape[-2] > 4:
                raise ValueError(
                    f"Data of shape {shape} looks like an RGB image (3 or 4 values on the last "
                    "axis) but this model is single-channel (gray). Choose an RGB model, or pass "
                    "axes='...YXC' to denoise each channel separately with this gray model."
                )
            axes = "Q" * (ndim - 2) + "YX"
        explicit = False
    else:
        explicit = True
        axes = check_axes(axes).upper().replace("S", "C")
        if len(axes) != ndim:
            raise ValueError(
                f"axes={axes!r} has {len(axes)} letters but the data has {ndim} axes "
                f"(shape {shape}); give one letter per axis, e.g. 'TZYX'."
            )
        if len(set(axes)) != len(axes) or "Y" not in axes or "X" not in axes:
            raise ValueError(
                f"axes={axes!r} must name each axis once and include both 'Y' and 'X'."
            )
    y, x = axes.index("Y"), axes.index("X")
    rgb = channels == 3
    if rgb:
        if "C" not in axes:
            raise ValueError(
                f"This model expects RGB images but axes={axes!r} has no colour axis "
                "'C'; choose a gray model or name the colour axis."
            )
        c = axes.index("C")
        if shape[c] != 3:
            raise ValueError(
                f"This model expects 3 colour channels but axis 'C' has {shape[c]} "
                f"(shape {shape}); choose a gray model or select 3 channels."
            )
        lead = [i for i in range(ndim) if i not in (y, x, c)]
        order = (*lead, y, x, c)
    else:
        lead = [i for i in range(ndim) if i not in (y, x)]
        order = (*lead, y, x)
    if not explicit:
        axes = axes.replace("Q", "")
        names = {0: "", 1: "Z", 2: "TZ", 3: "TCZ"}.get(len(lead), "N" * len(lead))
        axes = names + axes
    return AxesPlan(axes=axes, order=tuple(order), n_leading=len(lead), rgb=rgb)


def _check_values(view: np.ndarray, n_leading: int) -> None:
    if not np.issubdtype(view.dtype, np.floating):
        return
    for index in np.ndindex(*view.shape[:n_leading]):
        if not np.isfinite(view[index]).all():
            where = f" in plane {index}" if index else ""
            raise ValueError(
                f"The data contains NaN or infinite values{where}. Replace them first, e.g. "
                "numpy.nan_to_num(data, nan=0.0) or by interpolation, then denoise again."
            )


def checked_view(
    array: Any, axes: str | None, channels: int, **options: Any
) -> tuple[np.ndarray, AxesPlan, np.ndarray]:
    """The input as an array, its axes plan and its view with the planes last (leading
    axes, Y, X[, C]), after the checks every denoising-like call makes (input, axes,
    ``options`` such as tile size and overlap against the plane size)."""
    arr = np.asarray(array)
    _check_input(arr)
    plan = plan_axes(arr.shape, axes, channels)
    view = arr.transpose(plan.order)
    check_denoise_options(**options, plane=view.shape[plan.n_leading : plan.n_leading + 2])
    return arr, plan, view


def _check_input(arr: np.ndarray) -> None:
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise ValueError(
            f"Cannot denoise data of dtype {arr.dtype}: give integer or floating point intensities."
        )
    if arr.size == 0:
        raise ValueError(f"The data is empty (shape {arr.shape}); load an image with pixels first.")
    if arr.ndim < 2:
        raise ValueError(
            f"Denoising needs images with at least two axes (Y, X); got {arr.ndim}-D "
            f"data of shape {arr.shape}. Reshape it into an image first."
        )


def _smaller_after_oom(
    exc: BaseException, dev: torch.device, batch: int, tile: int, overlap: int, multiple: int
) -> tuple[int, int]:
    """The batch and tile to retry with after ``exc`` (re-raised unless it says the device
    ran out of memory): half the batch, else half the tile, else a clear MemoryError."""
    if not _is_oom(exc):
        raise exc
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    if batch > 1:
        return batch // 2, tile
    if tile // 2 >= smallest_tile(overlap, multiple):
        return batch, round_up(tile // 2, multiple)
    raise MemoryError(
        f"Not enough memory on {dev} to denoise even one {tile}x{tile} tile. "
        "Close other programs, use a smaller overlap, or choose another device."
    ) from exc


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


@torch.inference_mode()
def denoise(
    array: Any,
    model: DenoiseModel | nn.Module | str,
    *,
    axes: str | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    device: str | torch.device = "auto",
    progress: ProgressFn | None = None,
    cancel: Any | None = None,
    batch_size: int | None = None,
    value_range: tuple[float, float] | None = None,
    precision: str = "auto",
    tta: bool | int = False,
) -> np.ndarray:
    """Denoise an image or stack and return an array of the same shape and dtype.

    ``array`` has YX as its last two axes (YXC for RGB models); leading axes (T, Z, C, ...)
    are processed plane by plane. ``axes`` overrides that guess (e.g. ``"CYX"``).

    Normalisation, per plane (and over all three colours of an RGB plane together): the
    intensities ``low`` and ``high`` are mapped to 0 and 1 for the network and the output
    is mapped back with the same affine map. By default they are the 0.1 and 99.9
    percentiles of the plane; a model trained on 8-bit data with a fixed scale (its card
    says ``{"mode": "fixed", "low": 0, "high": 255, "dtypes": ["uint8"]}``) uses that scale
    for uint8 input; ``value_range=(low, high)`` fixes it explicitly. Integer outputs are
    rounded and clipped to their dtype's range; float outputs are not clipped.

    Planes are cut into ``tile_size`` tiles (default 576 on the CPU, else 1024) that share
    ``overlap`` pixels of context on every side (default: the context the model's outputs
    need, at most its receptive radius, plus a blend band), cross-faded and run in batches;
    the result does not depend on the tile size beyond the network's own rounding. At the
    plane's own edges the network pads with zeros, as it did at the edges of its training
    patches (no mirrored frame). ``device`` is ``"auto"`` (cuda, mps, cpu) or an explicit
    torch device; on running out of memory the batch, then the tile, is halved and the
    plane retried.
    ``progress(done, total)`` is called as tiles finish (and, with a fractional ``done``,
    while a batch of tiles runs); ``cancel`` is checked before every layer of the network,
    and when ``cancel.is_set()`` becomes true the call stops with
    :class:`~napari_wgan_denoise.errors.Cancelled`.

    ``precision`` is ``"auto"`` (half precision on CUDA, bf16 autocast on CPUs with native
    bf16, fp32 elsewhere; ``$NAPARI_WGAN_DENOISE_PRECISION`` overrides it), ``"bf16"`` or
    ``"fp32"``.

    ``tta`` (test-time augmentation) buys a little quality with time: the network runs on
    flipped and rotated copies of each tile and the outputs, turned back, are averaged.
    ``True`` or 8 uses all 8 flips/rotations, 4 the rotations, 2 the identity and a mirror
    flip; ``False`` (the default) one plain pass. On the shipped gray model it gains about
    +0.08 dB PSNR (Set12, 8 passes; +0.05 dB with 2) at 8× (2×) the time.
    """
    dmodel = as_model(model)
    if dmodel.task != "denoise":
        raise ValueError(
            f"Model {dmodel.name} is a {dmodel.task} model (inpaint + deblur + denoise) that "
            "needs a hole mask: use napari_wgan_denoise.restore(image, mask, model) or "
            "`wgan-denoise restore`, or pick a denoising model."
        )
    arr, plan, view = checked_view(
        array,
        axes,
        dmodel.channels,
        tile_size=tile_size,
        overlap=overlap,
        batch_size=batch_size,
        value_range=value_range,
        tta=tta,
    )
    _check_values(view, plan.n_leading)
    passes = check_tta(tta)

    dev = resolve_device(device)
    original = dmodel.network
    was_training = original.training
    original.eval()
    channels_last = dev.type == "cpu"
    autocast = use_bf16(dev, precision)
    dtype = torch.bfloat16 if autocast else torch.float32
    try:
        with prepared_network(original, dev, dtype) as network:
            if passes > 1:
                network = DihedralEnsemble(network, passes)
            geometry = tile_geometry(network, tile_size, overlap, DEFAULT_TILE.get(dev.type, 512))
            tile, overlap, multiple = geometry.tile, geometry.overlap, geometry.multiple
            border = EDGE_BORDER

            height, width = view.shape[plan.n_leading], view.shape[plan.n_leading + 1]
            leading = view.shape[: plan.n_leading]
            n_planes = math.prod(leading) if leading else 1
            out = np.empty_like(arr)
            out_view = out.transpose(plan.order)
            normalisation = dmodel.normalisation

            def batch_for(t: int) -> int:
                if batch_size:
                    return max(1, int(batch_size))
                return max(1, min(64, PIXELS_PER_BATCH.get(dev.type, 1 << 20) // (t * t)))

            state = {
                "done": 0,
                "total": n_planes * count_tiles(height, width, tile, overlap, multiple, border),
            }

            def on_batch(n: int) -> None:
                state["done"] += n
                if progress is not None:
                    progress(state["done"], state["total"])

            def on_part(tiles: float) -> None:  # within a batch: progress moves on one-tile planes
                if progress is not None:
                    progress(state["done"] + tiles, state["total"])

            if progress is not None:
                progress(0, state["total"])
            batch = batch_for(tile)
            rows = max(1, (1 << 20) // width)
            for plane_no, index in enumerate(np.ndindex(*leading)):
                plane = view[index]
                lo, hi = intensity_range(plane, normalisation, value_range)
                x = to_network(plane, lo, hi)
                x = np.moveaxis(x, -1, 0) if plan.rgb else x[None]
                x = np.ascontiguousarray(x)
                done_before = state["done"]
                while True:
                    try:
                        y = run_tiled(
                            network,
                            x,
                            tile=tile,
                            overlap=overlap,
                            batch_size=batch,
                            device=dev,
                            channels_last=channels_last,
                            autocast=autocast,
                            on_batch=on_batch,
                            cancel=cancel,
                            on_part=on_part,
                            border=border,
                        )
                        break
                    except Cancelled:
                        raise
                    except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
                        batch, tile = _smaller_after_oom(exc, dev, batch, tile, overlap, multiple)
                        state["done"] = done_before
                        state["total"] = done_before + (n_planes - plane_no) * count_tiles(
                            height, width, tile, overlap, multiple, border
                        )
                del x
                y = np.moveaxis(y, 0, -1) if plan.rgb else y[0]
                target = out_view[index]
                for r in range(0, height, rows):  # in bands: no plane-sized float temporary
                    target[r : r + rows] = from_network(y[r : r + rows], lo, hi, arr.dtype)
                del y, target
            return out
    finally:
        original.train(was_training)
