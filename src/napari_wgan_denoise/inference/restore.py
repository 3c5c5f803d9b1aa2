"""``restore``: fill masked pixels and remove blur and noise with a seed-004 cascade model."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.model import DenoiseModel
from .denoise import ProgressFn, as_model, checked_view
from .devices import resolve_device
from .normalise import from_network, intensity_range, to_network
from .optimise import fold_batch_norm
from .tiling import DEFAULT_TILE, count_tiles, run_tiled, tile_geometry


class _BothStages(nn.Module):
    """Runs a cascade once and returns the inpainted and the restored image side by side."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.size_multiple = int(getattr(network, "size_multiple", 1))
        if hasattr(network, "receptive_radius"):
            self.receptive_radius = int(network.receptive_radius)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        filled, restored = self.network.stages(x)
        return torch.cat([filled, restored], dim=1)


def _mask_view(mask: Any, shape: tuple[int, ...], plan: Any) -> np.ndarray:
    """The mask arranged like the transposed image (leading axes, Y, X), as booleans."""
    m = np.asarray(mask)
    if m.dtype.kind not in "biuf":
        raise ValueError(f"The mask must hold numbers or booleans, not {m.dtype}.")
    if m.dtype.kind == "f" and not np.isfinite(m).all():
        raise ValueError("The mask contains NaN or infinite values; use 0 (keep) and 1 (fill).")
    m = m != 0
    spatial_order = plan.order[:-1] if plan.rgb else plan.order
    image_shape = tuple(shape[i] for i in spatial_order)  # leading..., Y, X
    yx = image_shape[-2:]
    if m.shape == yx:
        return np.broadcast_to(m, image_shape)
    spatial_shape = tuple(shape[i] for i in sorted(spatial_order))
    if m.shape == spatial_shape:
        ranks = {axis: k for k, axis in enumerate(sorted(spatial_order))}
        return m.transpose([ranks[a] for a in spatial_order])
    raise ValueError(
        f"The mask has shape {m.shape} but the image's planes are {yx} (image shape "
        f"{shape}). Give a 2-D mask of shape {yx} (used on every plane) or one of shape "
        f"{spatial_shape} (one per plane)."
    )


@torch.inference_mode()
def restore(
    array: Any,
    mask: Any,
    model: DenoiseModel | str,
    *,
    axes: str | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    device: str | torch.device = "auto",
    progress: ProgressFn | None = None,
    cancel: Any | None = None,
    return_inpainted: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Fill the pixels where ``mask`` is true (dead pixels, saturated spots, scratches) and
    remove blur and noise everywhere, with a ``restore`` (seed-004 cascade) model.

    ``array`` is laid out as for :func:`~napari_wgan_denoise.denoise` (YX last, leading
    axes plane by plane); ``mask`` is a 2-D YX mask used on every plane or one with the
    image's shape (without the colour axis). NaN pixels count as masked. Returns an array
    of the input's shape and dtype (the input is never modified); with
    ``return_inpainted=True`` also the inpainting-only result (holes filled, blur and
    noise left). Intensities are normalised per plane on the unmasked pixels.
    """
    dmodel = as_model(model)
    if dmodel.task != "restore":
        raise ValueError(
            f"Model {dmodel.name} is a {dmodel.task} model, not an inpaint + deblur + denoise "
            "cascade; pick a restore model (e.g. fluo-cascade-fast) or use denoise()."
        )
    arr, plan, view = checked_view(
        array, axes, dmodel.channels, tile_size=tile_size, overlap=overlap
    )
    mview = _mask_view(mask, arr.shape, plan)
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(view)
        if bad.any():
            mview = mview | (bad.any(axis=-1) if plan.rgb else bad)
    lead = view.shape[: plan.n_leading]
    for index in np.ndindex(*lead):
        if mview[index].all():
            where = f" in plane {index}" if index else ""
            raise ValueError(
                f"The mask covers the whole image{where}: there is nothing to fill the holes "
                "from. Mask only the damaged pixels."
            )

    dev = resolve_device(device)
    original = dmodel.network
    was_training = original.training
    original.eval()
    network = _BothStages(fold_batch_norm(original)).to(dev)
    geometry = tile_geometry(network, tile_size, overlap, DEFAULT_TILE.get(dev.type, 512), 64)
    tile, overlap, multiple = geometry.tile, geometry.overlap, geometry.multiple
    height, width = view.shape[plan.n_leading], view.shape[plan.n_leading + 1]
    n_planes = math.prod(lead) if lead else 1
    total = n_planes * count_tiles(height, width, tile, overlap, multiple)
    state = {"done": 0}

    def on_batch(n: int) -> None:
        state["done"] += n
        if progress is not None:
            progress(state["done"], total)

    def on_part(tiles: float) -> None:  # within a batch: progress moves on one-tile planes
        if progress is not None:
            progress(state["done"] + tiles, total)

    if progress is not None:
        progress(0, total)
    c = dmodel.channels
    restored = np.empty_like(arr)
    inpainted = np.empty_like(arr) if return_inpainted else None
    try:
        for index in np.ndindex(*lead):
            plane, holes = view[index], mview[index]
            valid = plane[~holes]
            lo, hi = intensity_range(valid, dmodel.normalisation)
            x = to_network(plane, lo, hi)
            x = np.moveaxis(x, -1, 0) if plan.rgb else x[None]
            x = np.where(holes[None] | ~np.isfinite(x), np.float32(0), x)
            x = np.concatenate([x, holes[None].astype(np.float32)], axis=0)
            y = run_tiled(
                network,
                np.ascontiguousarray(x, dtype=np.float32),
                tile=tile,
                overlap=overlap,
                batch_size=max(1, (1 << 20) // (tile * tile)),
                device=dev,
                on_batch=on_batch,
                cancel=cancel,
                out_channels=2 * c,
                on_part=on_part,
            )
            outs = [(restored, y[c:])] + ([(inpainted, y[:c])] if inpainted is not None else [])
            for target, part in outs:
                part = np.moveaxis(part, 0, -1) if plan.rgb else part[0]
                target.transpose(plan.order)[index] = from_network(part, lo, hi, arr.dtype)
    finally:
        original.train(was_training)
    if inpainted is not None:
        return restored, inpainted
    return restored
