"""Running a network over a large plane in overlapping, blended, batched tiles."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import Cancelled

BLEND = 8  # half-width of the linear cross-fade between neighbouring tiles


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value``."""
    return int(math.ceil(value / multiple) * multiple)


@dataclass(frozen=True)
class AxisPlan:
    """How one image axis of length ``length`` is cut into tiles."""

    length: int
    tile: int
    overlap: int
    n_tiles: int

    @property
    def stride(self) -> int:
        """Distance between the starts of neighbouring tiles."""
        return self.tile - 2 * self.overlap

    @property
    def padded(self) -> int:
        """Length of the padded axis that the tiles cover exactly."""
        return (self.n_tiles - 1) * self.stride + self.tile

    def weights(self, index: int, blend: int) -> np.ndarray:
        """1-D blending weights of tile ``index``: a linear ramp over ``2*blend`` pixels
        centred on each inner edge of the tile's core, flat at the image's outer edges."""
        i = np.arange(self.tile, dtype=np.float32) + 0.5
        w = np.ones(self.tile, dtype=np.float32)
        if blend <= 0:  # hard cut at the core boundaries
            if index > 0:
                w *= i >= self.overlap
            if index < self.n_tiles - 1:
                w *= i < self.tile - self.overlap
            return w
        if index > 0:
            w *= np.clip((i - (self.overlap - blend)) / (2 * blend), 0, 1)
        if index < self.n_tiles - 1:
            w *= np.clip(((self.tile - self.overlap + blend) - i) / (2 * blend), 0, 1)
        return w


def plan_axis(length: int, tile: int, overlap: int, multiple: int) -> AxisPlan:
    """Cut an axis into tiles of at most ``tile`` pixels that share ``overlap`` context pixels
    on each side; tiles and offsets are multiples of ``multiple`` so a pooling network sees
    the same grid whatever the tile size."""
    overlap = round_up(max(overlap, 0), multiple)
    tile = round_up(max(tile, 2 * overlap + multiple), multiple)
    tile = min(tile, round_up(length + 2 * overlap, multiple))
    stride = tile - 2 * overlap
    n_tiles = max(1, math.ceil(length / stride))
    # Balance: the smallest tile that covers the axis with the same number of tiles, so a
    # plane slightly larger than one tile is not run as two full tiles (e.g. 2048 px with
    # 1024 px tiles: 3 x 764 px instead of 3 x 1024 px, 1.8x less work in 2-D).
    tile = min(tile, round_up(math.ceil(length / n_tiles) + 2 * overlap, multiple))
    return AxisPlan(length, tile, overlap, n_tiles)


def _pad(plane: np.ndarray, before: int, after_y: int, after_x: int) -> np.ndarray:
    """Mirror-pad the last two axes of ``(C, Y, X)`` (edge-pad axes of length 1)."""
    pads = [(0, 0), (before, after_y), (before, after_x)]
    if plane.shape[1] > 1 and plane.shape[2] > 1:  # one pass: no intermediate copy
        return np.pad(plane, pads, mode="reflect")
    out = plane
    for axis in (1, 2):
        width = [(0, 0)] * 3
        width[axis] = pads[axis]
        mode = "reflect" if plane.shape[axis] > 1 else "edge"
        out = np.pad(out, width, mode=mode)
    return out


def run_tiled(
    network: nn.Module,
    plane: np.ndarray,
    *,
    tile: int,
    overlap: int,
    batch_size: int,
    device: torch.device,
    channels_last: bool = False,
    autocast: bool = False,
    on_batch: Callable[[int], None] | None = None,
    cancel: object | None = None,
    out_channels: int | None = None,
) -> np.ndarray:
    """Denoise one ``(C, Y, X)`` float32 plane tile by tile and return the blended result
    (with ``out_channels`` channels when the network's output has a different count).

    Every output pixel of a tile is computed with at least ``overlap - BLEND`` pixels of
    real (or mirrored) context, so when that exceeds the network's receptive radius the
    result equals a whole-plane pass up to float rounding, for any tile size.
    """
    _, height, width = plane.shape
    multiple = int(getattr(network, "size_multiple", 1))
    py = plan_axis(height, tile, overlap, multiple)
    px = plan_axis(width, tile, overlap, multiple)
    o = py.overlap
    blend = max(0, min(BLEND, o, py.stride // 2, px.stride // 2))
    padded = _pad(plane, o, py.padded - height - o, px.padded - width - o)
    n_out = int(out_channels or plane.shape[0])
    acc = np.zeros((n_out, py.padded, px.padded), dtype=np.float32)
    wy = [py.weights(i, blend) for i in range(py.n_tiles)]
    wx = [px.weights(j, blend) for j in range(px.n_tiles)]
    # The weights are separable, so their sum over tiles is too: two 1-D sums instead of a
    # plane-sized accumulator.
    sum_y = np.zeros(py.padded, dtype=np.float32)
    for i in range(py.n_tiles):
        sum_y[i * py.stride : i * py.stride + py.tile] += wy[i]
    sum_x = np.zeros(px.padded, dtype=np.float32)
    for j in range(px.n_tiles):
        sum_x[j * px.stride : j * px.stride + px.tile] += wx[j]
    coords = [(i, j) for i in range(py.n_tiles) for j in range(px.n_tiles)]
    for start in range(0, len(coords), batch_size):
        if cancel is not None and cancel.is_set():
            raise Cancelled(
                "Denoising was cancelled; the input is unchanged and no output was made."
            )
        chunk = coords[start : start + batch_size]
        batch = np.stack(
            [
                padded[
                    :,
                    i * py.stride : i * py.stride + py.tile,
                    j * px.stride : j * px.stride + px.tile,
                ]
                for i, j in chunk
            ]
        )
        x = torch.from_numpy(batch)
        if device.type == "cuda":
            x = x.pin_memory().to(device, non_blocking=True)
        else:
            x = x.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if autocast:
            half = torch.float16 if device.type == "cuda" else torch.bfloat16
            with torch.autocast(device_type=device.type, dtype=half):
                y = network(x)
        else:
            y = network(x)
        y = y.float().cpu().numpy()
        for k, (i, j) in enumerate(chunk):
            w = wy[i][:, None] * wx[j][None, :]
            ys, xs = i * py.stride, j * px.stride
            acc[:, ys : ys + py.tile, xs : xs + px.tile] += y[k] * w
        if on_batch is not None:
            on_batch(len(chunk))
    del padded
    acc = acc[:, o : o + height, o : o + width]
    sum_x = sum_x[o : o + width]
    rows = max(1, (1 << 20) // max(width, 1))  # normalise in bands: no plane-sized temporary
    for r in range(0, height, rows):
        band = sum_y[o + r : o + min(r + rows, height), None] * sum_x
        acc[:, r : r + rows] /= np.maximum(band, 1e-12, out=band)
    return acc


def count_tiles(height: int, width: int, tile: int, overlap: int, multiple: int) -> int:
    """How many tiles ``run_tiled`` will use for a plane of this size."""
    return (
        plan_axis(height, tile, overlap, multiple).n_tiles
        * plan_axis(width, tile, overlap, multiple).n_tiles
    )
