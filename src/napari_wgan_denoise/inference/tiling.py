"""Running a network over a large plane in overlapping, blended, batched tiles."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import Cancelled
from ..models.shuffle import ShuffleGenerator, fit_whole_image
from .optimise import winograd_threads

#: Tile edge when none is given, per device type; denoise and restore both use it. A CPU
#: runs one tile at a time: 1024² tiles left the caches (docs/benchmarks.md §7j), and 576
#: rather than 512 cuts a 1024² or 1536² plane into 2 or 3 tiles per axis instead of 3 or
#: 4, 10-14 % less time on an AMD EPYC without AMX (§7z; not measured on an Intel Xeon with AMX).
DEFAULT_TILE = {"cpu": 576, "cuda": 1024, "mps": 512}
BLEND = 8  # half-width of the linear cross-fade between neighbouring tiles
#: Balanced tiles are a multiple of this many pixels: some odd widths of the activations
#: (e.g. 363 px) make a 3x3 convolution 2-4x slower in bf16 on oneDNN; widths that are a
#: multiple of 8 at half resolution ran at full speed (docs/benchmarks.md §7r).
TILE_STEP = 16
#: A plane that fits in one tile is run at its own size, rounded up to TILE_STEP (by mirror
#: padding at its far edges) only from this many pixels on: the slow widths were all above
#: 260 px at half resolution, and small planes keep their exact whole-plane result.
STEP_SINGLE_FROM = 512
#: Mirror padding that denoise() gives a plane's outer edges. None would be the full
#: overlap; at 0 the network meets the image's edges as it met the edges of its training
#: patches (its own zero padding), which scored as well or better on every validation set
#: and spares the work of a mirrored frame (1.6x the pixels of a 300 x 300 image;
#: docs/benchmarks.md §7j).
EDGE_BORDER = 0


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value``."""
    return int(math.ceil(value / multiple) * multiple)


@dataclass(frozen=True)
class AxisPlan:
    """How one image axis of length ``length`` is cut into tiles; the axis is mirror-padded
    by ``border`` pixels at both ends (at most ``overlap``, the context between tiles)."""

    length: int
    tile: int
    overlap: int
    n_tiles: int
    border: int
    multiple: int

    @property
    def stride(self) -> int:
        """Distance between the starts of neighbouring tiles."""
        return self.tile - 2 * self.overlap

    @property
    def padded(self) -> int:
        """Length of the padded axis that the tiles cover exactly: the plane with its
        ``border`` at both ends, rounded up to the size multiple."""
        return max(round_up(self.length + 2 * self.border, self.multiple), self.tile)

    @functools.cached_property
    def starts(self) -> list[int]:
        """Where each tile starts on the padded axis: every ``stride``, and the last one
        flush with the padded axis's end, so that what lies beyond the plane's edge does
        not depend on the tile size."""
        last = self.padded - self.tile
        return [min(i * self.stride, last) for i in range(self.n_tiles - 1)] + [last]

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


def plan_axis(
    length: int, tile: int, overlap: int, multiple: int, border: int | None = None
) -> AxisPlan:
    """Cut an axis into tiles of at most ``tile`` pixels that share ``overlap`` context pixels
    on each side; tiles and offsets are multiples of ``multiple`` so a pooling network sees
    the same grid whatever the tile size. The axis is mirror-padded by ``border`` pixels
    at both ends (default and at most ``overlap``)."""
    overlap = round_up(max(overlap, 0), multiple)
    border = overlap if border is None else min(round_up(max(border, 0), multiple), overlap)
    span = length + 2 * border  # the padded axis the tiles must cover
    tile = round_up(max(tile, 2 * overlap + multiple), multiple)
    step = math.lcm(multiple, TILE_STEP)
    if round_up(span, multiple) <= tile:
        single = round_up(span, multiple)
        if single >= STEP_SINGLE_FROM and round_up(single, step) <= tile:
            single = round_up(single, step)
        return AxisPlan(length, single, overlap, 1, border, multiple)
    stride = tile - 2 * overlap
    n_tiles = max(1, math.ceil((span - 2 * overlap) / stride))
    # Balance: the smallest tile that covers the axis with the same number of tiles, so a
    # plane slightly larger than one tile is not run as two full tiles (e.g. 2048 px with
    # 1024 px tiles: 3 x 764 px instead of 3 x 1024 px, 1.8x less work in 2-D).
    # The balanced tile is rounded up to TILE_STEP as well: oneDNN's bf16 convolutions run 2-4x
    # slower at some odd widths (a 2048 px plane in 726 px tiles: 363 px at half resolution).
    tile = min(tile, round_up(math.ceil((span - 2 * overlap) / n_tiles) + 2 * overlap, step))
    return AxisPlan(length, tile, overlap, n_tiles, border, multiple)


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
    on_part: Callable[[float], None] | None = None,
    border: int | None = None,
) -> np.ndarray:
    """Denoise one ``(C, Y, X)`` float32 plane tile by tile and return the blended result
    (with ``out_channels`` channels when the network's output has a different count).

    ``on_batch(n)`` is called when ``n`` more tiles are done, ``on_part(tiles)`` while a
    batch runs, with the (fractional) tiles of it done so far, so that progress moves even
    when a plane is a single tile. ``cancel`` is checked before every layer of the network,
    so a long batch stops within one layer's time (``Cancelled``).

    Every output pixel of a tile is computed with at least ``overlap - BLEND`` pixels of
    real (or mirrored) context, so when that exceeds the network's receptive radius the
    result equals a whole-plane pass up to float rounding, for any tile size. The plane's
    outer edges are mirror-padded by ``border`` pixels (default: ``overlap``): the
    whole-plane pass that the result equals is one over the plane padded so. Noise-level
    maps read the noise model of the whole (unpadded) plane (:func:`whole_plane_noise`).
    """
    _, height, width = plane.shape
    multiple = int(getattr(network, "size_multiple", 1))
    py = plan_axis(height, tile, overlap, multiple, border)
    px = plan_axis(width, tile, overlap, multiple, border)
    o, b = py.overlap, py.border
    blend = max(0, min(BLEND, o, py.stride // 2, px.stride // 2))
    padded = _pad(plane, b, py.padded - height - b, px.padded - width - b)
    n_out = int(out_channels or plane.shape[0])
    acc = np.zeros((n_out, py.padded, px.padded), dtype=np.float32)
    wy = [py.weights(i, blend) for i in range(py.n_tiles)]
    wx = [px.weights(j, blend) for j in range(px.n_tiles)]
    # The weights are separable, so their sum over tiles is too: two 1-D sums instead of a
    # plane-sized accumulator.
    sum_y = np.zeros(py.padded, dtype=np.float32)
    for i in range(py.n_tiles):
        sum_y[py.starts[i] : py.starts[i] + py.tile] += wy[i]
    sum_x = np.zeros(px.padded, dtype=np.float32)
    for j in range(px.n_tiles):
        sum_x[px.starts[j] : px.starts[j] + px.tile] += wx[j]
    coords = [(i, j) for i in range(py.n_tiles) for j in range(px.n_tiles)]
    with (
        whole_plane_noise(network, plane, device),
        watched(network, cancel, on_part) as batch_started,
    ):
        for start in range(0, len(coords), batch_size):
            chunk = coords[start : start + batch_size]
            batch_started(len(chunk))
            y = _run_batch(network, padded, chunk, py, px, device, channels_last, autocast, cancel)
            for k, (i, j) in enumerate(chunk):
                w = wy[i][:, None] * wx[j][None, :]
                ys, xs = py.starts[i], px.starts[j]
                acc[:, ys : ys + py.tile, xs : xs + px.tile] += y[k] * w
            if on_batch is not None:
                on_batch(len(chunk))
    del padded
    acc = acc[:, b : b + height, b : b + width]
    sum_x = sum_x[b : b + width]
    rows = max(1, (1 << 20) // max(width, 1))  # normalise in bands: no plane-sized temporary
    for r in range(0, height, rows):
        band = sum_y[b + r : b + min(r + rows, height), None] * sum_x
        acc[:, r : r + rows] /= np.maximum(band, 1e-12, out=band)
    return acc


@contextmanager
def whole_plane_noise(
    network: nn.Module, plane: np.ndarray, device: torch.device
) -> Iterator[None]:
    """Let every noise-level map in ``network`` read the noise model of the whole ``(C, Y,
    X)`` plane while its tiles run, instead of fitting each tile by itself: the result
    then does not depend on the tiling, and the fit is made once per plane."""
    estimators = [
        m
        for m in network.modules()
        if isinstance(m, ShuffleGenerator) and m.noise_level and m.channels == plane.shape[0]
    ]
    if not estimators:
        yield
        return
    image = torch.from_numpy(plane)[None]
    for m in estimators:
        m.fixed_fit = tuple(t.to(device) for t in fit_whole_image(m, image))  # type: ignore[assignment]
    try:
        yield
    finally:
        for m in estimators:
            m.fixed_fit = None


def _cancelled() -> Cancelled:
    return Cancelled("Denoising was cancelled; the input is unchanged and no output was made.")


@contextmanager
def watched(
    network: nn.Module, cancel: object | None, on_part: Callable[[float], None] | None
) -> Iterator[Callable[[int], None]]:
    """Check ``cancel`` before every layer of ``network`` (raising ``Cancelled``) and report
    ``on_part(tiles done in this batch)`` as the layers run; yields the function to call
    with each batch's tile count before it runs. The hooks are removed on exit. A TorchScript
    network (a foreign bioimage.io package) takes no hooks: it is checked between batches.
    A network that runs its layers several times per call says so in a ``passes``
    attribute (test-time augmentation), so that progress spreads over all of them."""
    if cancel is None and on_part is None:
        yield lambda n: None
        return
    leaves = [
        m
        for m in network.modules()
        if next(m.children(), None) is None and not isinstance(m, torch.jit.ScriptModule)
    ]
    state = {"calls": 0, "tiles": 0, "reported": -1}
    passes = max(int(getattr(network, "passes", 1)), 1)
    per_call = max(len(leaves), 1) * passes  # each layer runs about `passes` times a call

    def check(module: nn.Module, args: object) -> None:
        if cancel is not None and cancel.is_set():  # type: ignore[attr-defined]
            raise _cancelled()
        if on_part is not None:
            state["calls"] += 1
            step = min(20 * state["calls"] // per_call, 19)  # 5 % steps, never 100 %
            if step != state["reported"]:
                state["reported"] = step
                on_part(state["tiles"] * step / 20)

    def batch_started(tiles: int) -> None:
        state.update(calls=0, tiles=tiles, reported=-1)

    handles = [m.register_forward_pre_hook(check) for m in leaves]
    try:
        yield batch_started
    finally:
        for handle in handles:
            handle.remove()


def _run_batch(
    network: nn.Module,
    padded: np.ndarray,
    chunk: list[tuple[int, int]],
    py: AxisPlan,
    px: AxisPlan,
    device: torch.device,
    channels_last: bool,
    autocast: bool,
    cancel: object | None,
) -> np.ndarray:
    """Run the network on the tiles ``chunk`` of the padded plane; their outputs."""
    if cancel is not None and cancel.is_set():  # type: ignore[attr-defined]
        raise _cancelled()
    batch = np.stack(
        [
            padded[
                :,
                py.starts[i] : py.starts[i] + py.tile,
                px.starts[j] : px.starts[j] + px.tile,
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
        with winograd_threads(network):
            y = network(x)
    return y.float().cpu().numpy()


def count_tiles(
    height: int, width: int, tile: int, overlap: int, multiple: int, border: int | None = None
) -> int:
    """How many tiles ``run_tiled`` will use for a plane of this size."""
    return (
        plan_axis(height, tile, overlap, multiple, border).n_tiles
        * plan_axis(width, tile, overlap, multiple, border).n_tiles
    )


def default_overlap(network: nn.Module, fallback_radius: int) -> int:
    """The context each tile carries on every side by default: the network's context radius
    (where it names one, the context its outputs need; else its receptive radius, else
    ``fallback_radius``) plus the blending, rounded up to the network's size multiple."""
    radius = getattr(network, "context_radius", None)
    if radius is None:
        radius = getattr(network, "receptive_radius", fallback_radius)
    radius = int(radius)
    return round_up(radius + BLEND, int(getattr(network, "size_multiple", 1)))


def smallest_tile(overlap: int, multiple: int) -> int:
    """The smallest tile that leaves room inside its overlap for blending."""
    return 2 * overlap + max(2 * BLEND, multiple)


@dataclass(frozen=True)
class TileGeometry:
    """How a network's planes are tiled: tile edge, context on each side, size multiple."""

    tile: int
    overlap: int
    multiple: int


def tile_geometry(
    network: nn.Module,
    tile_size: int | None,
    overlap: int | None,
    auto_tile: int,
    fallback_radius: int = 32,
) -> TileGeometry:
    """The tiles that ``denoise()`` and ``restore()`` use for ``network``: ``tile_size``
    (None or 0: ``auto_tile``) and ``overlap`` (None: :func:`default_overlap`), rounded up
    to the network's size multiple, the tile at least :func:`smallest_tile`."""
    multiple = int(getattr(network, "size_multiple", 1))
    if overlap is None:
        overlap = default_overlap(network, fallback_radius)
    else:
        overlap = round_up(int(overlap), multiple)
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}.")
    tile = int(tile_size or auto_tile)
    if tile < 8:
        raise ValueError(f"tile_size must be at least 8 pixels, got {tile}.")
    tile = max(round_up(tile, multiple), smallest_tile(overlap, multiple))
    return TileGeometry(tile, overlap, multiple)


def tiled_pixels(
    height: int, width: int, tile: int, overlap: int, multiple: int, border: int | None = None
) -> int:
    """How many pixels the network processes for one plane (tiles with their overlap)."""
    py = plan_axis(height, tile, overlap, multiple, border)
    px = plan_axis(width, tile, overlap, multiple, border)
    return py.n_tiles * py.tile * px.n_tiles * px.tile


def small_tile_warning(
    plane: tuple[int, int], tile_size: int | None, auto_tile: int, overlap: int, multiple: int
) -> str | None:
    """Why a requested ``tile_size`` makes a run slow, or None: tiles of at most about
    twice the ``overlap`` (context on each side: the model's context radius plus the
    blending) are mostly overlap, so the network does several times the work of the
    ``auto_tile`` default (the result is the same)."""
    if not tile_size:
        return None
    height, width = plane
    tile = max(round_up(tile_size, multiple), smallest_tile(overlap, multiple))
    mine = tiled_pixels(height, width, tile, overlap, multiple)
    auto = tiled_pixels(height, width, max(auto_tile, tile), overlap, multiple)
    if tile_size > 2 * overlap and mine <= 2 * auto:
        return None
    n_tiles = count_tiles(height, width, tile, overlap, multiple)
    return (
        f"Tile size {tile_size} px is small for this model: each tile carries {overlap} px "
        f"of overlap on every side (the context it needs plus blending), so a "
        f"{height} x {width} plane takes {n_tiles} tiles, about {mine / auto:.0f}x the work "
        f"of 'auto'. Use auto or at least {4 * overlap} px unless memory is short."
    )
