"""Denoising data larger than memory: a dask or zarr array in, a zarr store out.

:func:`denoise_lazy` walks the input one *block* at a time: one chunk along the leading
axes (T, Z, C, ...) by whole planes (Y, X and, for RGB models, C). Each block is loaded,
denoised with :func:`~napari_wgan_denoise.denoise` (so the result is identical to
``denoise`` on the whole array: the normalisation is per plane either way) and written to
the output zarr array before the next block is loaded. Peak memory is one input block, one
output block and ``denoise``'s per-plane working set, whatever the size of the data.

Output layout: the same shape and dtype as the input; chunks of one block along the
leading axes and the input's chunks (at most the whole plane) along Y and X. When the
input is an OME-Zarr image (a group whose attributes hold ``multiscales``, version 0.4 in
``.zattrs`` or 0.5 under ``ome`` in ``zarr.json``) the output is an OME-Zarr group of the
same zarr format with the same attributes, its ``multiscales`` cut down to the level that
was denoised (level 0, written at the same path, e.g. ``0``).

:func:`read_any` and :func:`write_any` extend :mod:`napari_wgan_denoise.io` to ``.zarr``
paths (lazily: a dask array in, streamed out).

dask and zarr are optional (``pip install "napari-wgan-denoise[large]"``); this module
imports them only when called. Both zarr-python 2 (``zarr<3``) and 3 are supported.
"""

from __future__ import annotations

import copy
import importlib
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..models.model import DenoiseModel
from ..validation import check_denoise_options
from .denoise import as_model, denoise, plan_axes

ProgressFn = Callable[[int, int], Any]
ZARR_SUFFIXES = (".zarr", ".ome.zarr")
_INSTALL_HINT = 'pip install "napari-wgan-denoise[large]"  (or: pip install dask zarr)'


class MissingDependency(ImportError):
    """An optional package that this operation needs is not installed."""


def _require(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        top = name.split(".")[0]
        raise MissingDependency(
            f"Reading, writing or denoising chunked (zarr / dask) data needs the optional "
            f"package {top!r}, which is not installed. Install it with: {_INSTALL_HINT}"
        ) from exc


def _zarr_major() -> int:
    zarr = _require("zarr")
    return int(str(zarr.__version__).split(".")[0])


def is_zarr_path(path: str | os.PathLike[str]) -> bool:
    """True for a path that names a zarr store: ends with ``.zarr`` or is a folder holding
    zarr metadata (``.zarray``, ``.zgroup`` or ``zarr.json``)."""
    p = Path(path)
    if p.suffix.lower() == ".zarr":
        return True
    return p.is_dir() and any((p / m).is_file() for m in (".zarray", ".zgroup", "zarr.json"))


# --------------------------------------------------------------------------- zarr helpers


def _multiscales(attrs: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, bool]:
    """The OME ``multiscales`` list of a group's attributes, and whether it sits under
    ``ome`` (OME-Zarr 0.5) rather than at the top (0.4)."""
    ome = attrs.get("ome")
    if isinstance(ome, dict) and isinstance(ome.get("multiscales"), list):
        return ome["multiscales"], True
    ms = attrs.get("multiscales")
    return (ms, False) if isinstance(ms, list) else (None, False)


def ome_image_path(path: str | os.PathLike[str], shape: tuple[int, ...]) -> str | None:
    """``path`` as a string when it is an OME-Zarr image folder whose level 0 has ``shape``
    (e.g. the image a lazily loaded napari layer was read from), else None. Never raises:
    anything that is not such an image gives None."""
    try:
        if not is_zarr_path(path) or not Path(path).is_dir():
            return None
        node = open_zarr(path)
        ms, _ = _multiscales(dict(getattr(node, "attrs", {})))
        if not ms or tuple(node[ms[0]["datasets"][0]["path"]].shape) != tuple(shape):
            return None
        return str(path)
    except Exception:  # noqa: BLE001 - not an OME-Zarr image we can copy metadata from
        return None


def _zarr_format(node: Any) -> int:
    meta = getattr(node, "metadata", None)
    fmt = getattr(meta, "zarr_format", None)
    return int(fmt) if fmt is not None else 2  # zarr-python 2 writes format 2 only


def open_zarr(path: str | os.PathLike[str], mode: str = "r") -> Any:
    """Open a zarr array or group at ``path`` (zarr-python 2 or 3)."""
    zarr = _require("zarr")
    p = Path(path)
    if mode == "r" and not p.exists():
        raise FileNotFoundError(f"Input {p} does not exist.")
    try:
        return zarr.open(str(p), mode=mode)
    except Exception as exc:  # noqa: BLE001 - report any reader failure with the path
        raise ValueError(f"Cannot open {p} as a zarr store: {exc}") from exc


def open_zarr_array(
    path: str | os.PathLike[str] | None,
    *,
    mode: str = "w",
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: Any,
    zarr_format: int | None = None,
    group: Any = None,
    name: str | None = None,
) -> Any:
    """Create a zarr array (in ``group`` under ``name``, at ``path``, or in memory when
    both are None). Format-2 arrays use ``/`` as the chunk key separator (OME-Zarr 0.4)."""
    zarr = _require("zarr")
    shape = tuple(int(s) for s in shape)
    chunks = tuple(int(c) for c in chunks)
    dtype = np.dtype(dtype)
    if _zarr_major() >= 3:
        kwargs: dict[str, Any] = {"shape": shape, "chunks": chunks, "dtype": dtype}
        fmt = zarr_format or 3
        if fmt == 2:
            kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
        if group is not None:
            return group.create_array(name, overwrite=True, **kwargs)
        store = str(path) if path is not None else zarr.storage.MemoryStore()
        return zarr.create_array(store, zarr_format=fmt, overwrite=mode == "w", **kwargs)
    if zarr_format == 3:
        raise MissingDependency(
            "Writing zarr format 3 (OME-Zarr 0.5) needs zarr-python 3: pip install -U zarr"
        )
    kwargs = {"shape": shape, "chunks": chunks, "dtype": dtype, "dimension_separator": "/"}
    if group is not None:
        return group.create_dataset(name, overwrite=True, **kwargs)
    store = str(path) if path is not None else zarr.storage.MemoryStore()
    return zarr.open_array(store, mode=mode, **kwargs)


def _as_dask(array: Any) -> tuple[Any, Any]:
    """``(dask array, OME group or None)`` for a dask array, a zarr array, a path to a zarr
    array or OME-Zarr image, or anything ``numpy.asarray`` accepts."""
    da = _require("dask.array")
    if isinstance(array, (str, os.PathLike)):
        node = open_zarr(array)
        return _node_to_dask(node, Path(array))
    if isinstance(array, da.Array):
        return array, None
    if _is_zarr_array(array):
        return da.from_zarr(array), None
    if _is_zarr_group(array):
        return _node_to_dask(array, None)
    arr = np.asarray(array)
    return da.from_array(arr, chunks=(1,) * max(arr.ndim - 2, 0) + arr.shape[-2:]), None


def _is_zarr_array(obj: Any) -> bool:
    mod = type(obj).__module__
    return mod.startswith("zarr") and hasattr(obj, "chunks") and hasattr(obj, "shape")


def _is_zarr_group(obj: Any) -> bool:
    mod = type(obj).__module__
    return mod.startswith("zarr") and hasattr(obj, "array_keys")


def _node_to_dask(node: Any, path: Path | None) -> tuple[Any, Any]:
    da = _require("dask.array")
    where = f" {path}" if path is not None else ""
    if _is_zarr_array(node):
        return da.from_zarr(node), None
    attrs = dict(node.attrs)
    ms, _ = _multiscales(attrs)
    if ms:
        datasets = ms[0].get("datasets") or []
        if not datasets or "path" not in datasets[0]:
            raise ValueError(f"The OME-Zarr image{where} lists no datasets in its multiscales.")
        return da.from_zarr(node[datasets[0]["path"]]), node
    keys = sorted(node.array_keys())
    if len(keys) == 1:
        return da.from_zarr(node[keys[0]]), None
    raise ValueError(
        f"The zarr group{where} is not an OME-Zarr image and holds "
        f"{len(keys)} arrays ({', '.join(keys[:10]) or 'none'}); open the array you want, "
        "e.g. zarr.open(path)['name'], and pass it instead."
    )


def ome_attributes(group: Any, levels: int = 1) -> dict[str, Any]:
    """A copy of an OME-Zarr group's attributes with each ``multiscales`` entry keeping only
    its first ``levels`` datasets (level 0 by default: the one that was denoised)."""
    attrs = copy.deepcopy(dict(group.attrs))
    ms, _ = _multiscales(attrs)
    for entry in ms or []:
        if isinstance(entry.get("datasets"), list):
            entry["datasets"] = entry["datasets"][:levels]
    return attrs


# --------------------------------------------------------------------------- core


def _partial_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _remove_settled(path: Path, timeout: float = 5.0) -> None:
    """Remove an interrupted partial store for good: zarr 3 writes chunks from its own
    I/O thread, and a write still in flight when Ctrl-C / SIGTERM reaches the main thread
    can recreate the store's folders after a first removal."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 3 and time.monotonic() < deadline:
        if path.exists() or path.is_symlink():
            _remove(path)
            quiet = 0
        else:
            quiet += 1
        time.sleep(0.05)


def create_output(
    store: Any, *, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: Any, like: Any = None
) -> tuple[Any, str | None]:
    """Create an output array in ``store`` (a path, a zarr store, or None for memory): a
    bare array, or with ``like`` (an OME-Zarr image group) the level-0 array of a new group
    carrying ``like``'s OME metadata. Returns the array and its path in the group (None
    for a bare array)."""
    if like is None:
        return open_zarr_array(store, shape=shape, chunks=chunks, dtype=dtype), None
    zarr = _require("zarr")
    fmt = _zarr_format(like)
    attrs = ome_attributes(like)
    ms, _ = _multiscales(attrs)
    if not ms:
        raise ValueError("like= must be an OME-Zarr image group (or its path).")
    name = str(ms[0]["datasets"][0]["path"])
    store = str(store) if isinstance(store, (str, os.PathLike)) else store
    if _zarr_major() >= 3:
        group = zarr.open_group(store, mode="w", zarr_format=fmt)
    else:
        group = zarr.open_group(store, mode="w")
    group.attrs.update(attrs)
    array = open_zarr_array(
        None, shape=shape, chunks=chunks, dtype=dtype, zarr_format=fmt, group=group, name=name
    )
    return array, name


def publish(tmp: Path, target: Path) -> Path:
    """Put the finished store (or file) ``tmp`` in place of ``target``; returns ``target``."""
    if target.exists():
        _remove(target)
    os.replace(tmp, target)
    return target


def _block_slices(chunks: tuple[tuple[int, ...], ...]) -> list[tuple[slice, ...]]:
    """Slices of every block of a dask ``chunks`` tuple, in C order."""
    starts = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int) for c in chunks]
    out = []
    for index in np.ndindex(*[len(c) for c in chunks]):
        out.append(
            tuple(
                slice(int(starts[d][i]), int(starts[d][i]) + int(chunks[d][i]))
                for d, i in enumerate(index)
            )
        )
    return out


def denoise_lazy(
    array: Any,
    model: DenoiseModel | nn.Module | str,
    *,
    out: Any = None,
    axes: str | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    device: str = "auto",
    progress: ProgressFn | None = None,
    cancel: Any | None = None,
    batch_size: int | None = None,
    value_range: tuple[float, float] | None = None,
    like: Any = None,
    overwrite: bool = False,
    planes_per_block: int | None = None,
    tta: bool | int = False,
) -> Any:
    """Denoise a dask / zarr array block by block into a zarr store; return the result as a
    lazily loaded dask array.

    ``array`` is a dask array, a zarr array, an OME-Zarr group, a path to either, or an
    in-memory array. The arguments shared with :func:`~napari_wgan_denoise.denoise` mean
    (``tta`` too: test-time augmentation, a little more quality at 2-8× the time) and the
    values written are identical to ``denoise(numpy.asarray(array), ...)``.

    ``out`` is where the result goes: a path (a new zarr store, written next to its final
    name and renamed into place when complete, so an interrupted run leaves nothing behind;
    an existing path needs ``overwrite=True``), an existing zarr array of the same shape
    (written in place), or None (an in-memory zarr store, compressed). ``like`` is an
    OME-Zarr group or path whose metadata the output copies; it defaults to ``array`` when
    that is an OME-Zarr image (or a path to one).

    Only one block is in memory at a time: one chunk of the input along the leading axes
    (``planes_per_block`` planes instead, when given: the input is rechunked) by whole
    planes. ``progress(done, total)`` counts tiles over the whole array.
    """
    da = _require("dask.array")
    dmodel = as_model(model)
    darr, ome_group = _as_dask(array)
    if like is not None:
        ome_group = open_zarr(like) if isinstance(like, (str, os.PathLike)) else like
        if not _is_zarr_group(ome_group) or not _multiscales(dict(ome_group.attrs))[0]:
            raise ValueError("like= must be an OME-Zarr image group (or its path).")
    dtype = np.dtype(darr.dtype)
    if dtype.kind == "b" or not (
        np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    ):
        raise ValueError(
            f"Cannot denoise data of dtype {dtype}: give integer or floating point intensities."
        )
    if darr.ndim < 2 or darr.size == 0:
        raise ValueError(
            f"Denoising needs non-empty images with at least two axes (Y, X); got shape "
            f"{darr.shape}."
        )
    plan = plan_axes(darr.shape, axes, dmodel.channels)
    plane = tuple(darr.shape[ax] for ax in plan.order[plan.n_leading : plan.n_leading + 2])
    check_denoise_options(
        tile_size=tile_size,
        overlap=overlap,
        batch_size=batch_size,
        value_range=value_range,
        plane=plane,
        tta=tta,
    )  # before the output store is made
    plane_axes = set(range(darr.ndim)) - set(plan.order[: plan.n_leading])
    # the input's chunk sizes along Y/X are kept for the output (at most the whole plane)
    yx_chunks = {ax: int(min(darr.chunksize[ax], darr.shape[ax])) for ax in plane_axes}
    rechunk = {ax: -1 for ax in plane_axes}
    if planes_per_block:
        for ax in plan.order[: plan.n_leading]:
            rechunk[ax] = 1
        if plan.n_leading:
            rechunk[plan.order[plan.n_leading - 1]] = int(planes_per_block)
    darr = darr.rechunk(rechunk)
    out_chunks = tuple(
        yx_chunks[ax] if ax in plane_axes else int(darr.chunks[ax][0]) for ax in range(darr.ndim)
    )
    blocks = _block_slices(darr.chunks)

    # ---- the output store
    final: Path | None = None
    tmp: Path | None = None
    group_path = None
    zout = out
    if out is None or isinstance(out, (str, os.PathLike)):
        if out is not None:
            final = Path(out)
            if isinstance(array, (str, os.PathLike)) and final.resolve() == Path(array).resolve():
                raise FileExistsError(
                    f"Output {final} would replace its own input; choose another."
                )
            if final.exists() and not overwrite:
                raise FileExistsError(f"{final} already exists; pass overwrite=True to replace it.")
            tmp = _partial_path(final)
            _remove(tmp)
            tmp.parent.mkdir(parents=True, exist_ok=True)
        store: Any = tmp
        if ome_group is not None and tmp is None:  # an in-memory OME-Zarr group
            store = _require("zarr").storage.MemoryStore()
        zout, group_path = create_output(
            store, shape=darr.shape, chunks=out_chunks, dtype=dtype, like=ome_group
        )
    elif tuple(zout.shape) != tuple(darr.shape):
        raise ValueError(
            f"out has shape {tuple(zout.shape)} but the input has shape {tuple(darr.shape)}."
        )

    # ---- block by block
    leading = plan.order[: plan.n_leading]
    n_planes = math.prod(darr.shape[ax] for ax in leading)
    state = {"base": 0, "planes_done": 0, "block_total": 0}
    try:
        for slices in blocks:
            block = np.asarray(darr[slices].compute())
            planes = math.prod(block.shape[ax] for ax in leading)

            def report(done: int, total: int, planes: int = planes) -> None:
                state["block_total"] = total
                if progress is not None:  # this block's count, the rest extrapolated
                    rest = n_planes - state["planes_done"] - planes
                    grand = state["base"] + total + round(total / planes * rest)
                    progress(state["base"] + done, grand)

            result = denoise(
                block,
                dmodel,
                axes=axes,
                tile_size=tile_size,
                overlap=overlap,
                device=device,
                progress=report,
                cancel=cancel,
                batch_size=batch_size,
                value_range=value_range,
                tta=tta,
            )
            del block
            zout[slices] = result
            del result
            state["base"] += state["block_total"]
            state["planes_done"] += planes
    except BaseException:
        if tmp is not None:
            _remove_settled(tmp)
        raise

    if final is not None and tmp is not None:
        publish(tmp, final)
        if group_path is not None:
            return da.from_zarr(str(final), component=group_path)
        return da.from_zarr(str(final))
    return da.from_zarr(zout)


# --------------------------------------------------------------------------- files


def read_any(path: str | os.PathLike[str]) -> Any:
    """Read an image file like :func:`napari_wgan_denoise.io.read_image` (a numpy array), or
    a ``.zarr`` store lazily: a zarr array, or level 0 of an OME-Zarr image, as a dask
    array (nothing is loaded until computed)."""
    p = Path(path)
    if is_zarr_path(p):
        if not p.exists():
            raise FileNotFoundError(f"Input {p} does not exist.")
        darr, _ = _node_to_dask(open_zarr(p), p)
        return darr
    from ..io import read_image

    return read_image(p)


def write_any(
    path: str | os.PathLike[str],
    data: Any,
    *,
    overwrite: bool = False,
    like: Any = None,
    chunks: tuple[int, ...] | None = None,
) -> Path:
    """Write ``data`` to ``path``: a ``.zarr`` path gets a zarr store written block by block
    (a dask array is never loaded whole; ``like`` = an OME-Zarr group or path whose
    metadata to copy), anything else a TIFF via :func:`napari_wgan_denoise.io.write_tiff`
    (which needs the whole array in memory). Atomic and refuses to replace an existing
    path unless ``overwrite``."""
    p = Path(path)
    if not is_zarr_path(p):
        from ..io import write_tiff

        return write_tiff(p, np.asarray(data), overwrite=overwrite)
    da = _require("dask.array")
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p} already exists; pass --overwrite to replace it.")
    darr = data if isinstance(data, da.Array) else None
    if darr is None:
        arr = np.asarray(data)
        darr = da.from_array(arr, chunks=chunks or (1,) * max(arr.ndim - 2, 0) + arr.shape[-2:])
    elif chunks is not None:
        darr = darr.rechunk(chunks)
    tmp = _partial_path(p)
    _remove(tmp)
    p.parent.mkdir(parents=True, exist_ok=True)
    out_chunks = tuple(int(c[0]) for c in darr.chunks)
    try:
        group_in = open_zarr(like) if isinstance(like, (str, os.PathLike)) else like
        zout, _ = create_output(
            tmp, shape=darr.shape, chunks=out_chunks, dtype=darr.dtype, like=group_in
        )
        for slices in _block_slices(darr.chunks):
            zout[slices] = np.asarray(darr[slices].compute())
    except BaseException:
        _remove(tmp)
        raise
    return publish(tmp, p)
