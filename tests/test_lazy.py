"""``denoise_lazy``, ``read_any`` and ``write_any``: chunked (dask / zarr) data, block by block."""

from __future__ import annotations

import json
import sys
import threading

import numpy as np
import pytest
from torch import nn

da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")

from napari_wgan_denoise import Cancelled, denoise  # noqa: E402
from napari_wgan_denoise.inference.lazy import (  # noqa: E402
    MissingDependency,
    denoise_lazy,
    open_zarr_array,
    read_any,
    write_any,
)


@pytest.fixture
def stack(rng):
    return rng.integers(100, 4000, (3, 64, 64)).astype(np.uint16)


class _Spy(nn.Module):
    """Wraps a generator and records, at every forward pass, how many chunks were loaded."""

    def __init__(self, inner: nn.Module, loads: list) -> None:
        super().__init__()
        self.inner = inner
        self.channels = inner.channels
        self.size_multiple = inner.size_multiple
        self.receptive_radius = inner.receptive_radius
        self.loads = loads
        self.seen: list[int] = []

    def forward(self, x):
        self.seen.append(len(self.loads))
        return self.inner(x)


def _counting_dask(data: np.ndarray, loads: list):
    """A dask array whose every chunk (one plane) is made on demand and logged."""

    def load(block_id=None):
        loads.append(block_id[0])
        return data[block_id[0] : block_id[0] + 1].copy()

    chunks = ((1,) * data.shape[0], (data.shape[1],), (data.shape[2],))
    return da.map_blocks(
        load, chunks=chunks, dtype=data.dtype, meta=np.empty((0, 0, 0), data.dtype)
    )


def test_same_result_as_denoise(tiny_gray, stack, tmp_path):
    lazy = da.from_array(stack, chunks=(1, 64, 64))
    result = denoise_lazy(lazy, tiny_gray, out=tmp_path / "out.zarr")
    assert isinstance(result, da.Array)
    assert result.shape == stack.shape and result.dtype == stack.dtype
    np.testing.assert_array_equal(result.compute(), denoise(stack, tiny_gray))


def test_streams_one_chunk_at_a_time(tiny_gray, stack, tmp_path):
    loads: list = []
    spy = _Spy(tiny_gray.network, loads)
    result = denoise_lazy(_counting_dask(stack, loads), spy, out=tmp_path / "out.zarr")
    assert sorted(loads) == [0, 1, 2]  # every chunk loaded exactly once
    # each plane's network passes ran after its own chunk was loaded and before the next
    assert sorted(set(spy.seen)) == [1, 2, 3] and spy.seen == sorted(spy.seen)
    np.testing.assert_array_equal(result.compute(), denoise(stack, tiny_gray))


def test_output_is_lazy_and_chunked(tiny_gray, stack, tmp_path):
    out = tmp_path / "out.zarr"
    result = denoise_lazy(da.from_array(stack, chunks=(1, 64, 64)), tiny_gray, out=out)
    expected = denoise(stack, tiny_gray)
    assert result.chunks == ((1, 1, 1), (64,), (64,))
    stored = zarr.open(str(out), mode="r")
    assert stored.shape == stack.shape and tuple(stored.chunks) == (1, 64, 64)
    assert not (tmp_path / ".out.zarr.partial").exists()
    # the result reads the store chunk by chunk when computed, it holds no data: remove the
    # chunk file of plane 2 and plane 1 still reads back, plane 2 is now the fill value
    files = [f for f in out.rglob("*") if f.is_file() and f.relative_to(out).parts[-3:-2]]
    (plane2,) = [f for f in files if f.relative_to(out).parts[-3:] == ("2", "0", "0")]
    plane2.unlink()
    np.testing.assert_array_equal(result[1].compute(), expected[1])
    assert not result[2].compute().any()


def test_multi_plane_and_yx_chunks(tiny_gray, rng, tmp_path):
    data = rng.integers(0, 1000, (4, 64, 64)).astype(np.uint16)
    expected = denoise(data, tiny_gray)
    lazy = da.from_array(data, chunks=(2, 32, 32))
    result = denoise_lazy(lazy, tiny_gray, out=tmp_path / "a.zarr")
    assert result.chunksize == (2, 32, 32)  # the input's Y/X chunks are kept
    np.testing.assert_array_equal(result.compute(), expected)
    result = denoise_lazy(lazy, tiny_gray, out=tmp_path / "b.zarr", planes_per_block=1)
    assert result.chunksize == (1, 32, 32)
    np.testing.assert_array_equal(result.compute(), expected)


def test_zarr_array_in_memory_out_and_rgb(tiny_rgb, rng):
    rgb = (rng.random((2, 40, 48, 3)) * 255).astype(np.uint8)
    src = zarr.open_array(
        zarr.storage.MemoryStore(), mode="w", shape=rgb.shape, dtype="uint8", chunks=(1, 40, 48, 3)
    )
    src[:] = rgb
    result = denoise_lazy(src, tiny_rgb)  # out=None: an in-memory zarr store
    np.testing.assert_array_equal(result.compute(), denoise(rgb, tiny_rgb))


def test_existing_zarr_array_as_out(tiny_gray, stack):
    target = zarr.open_array(
        zarr.storage.MemoryStore(), mode="w", shape=stack.shape, dtype="uint16", chunks=(1, 64, 64)
    )
    denoise_lazy(da.from_array(stack, chunks=(1, 64, 64)), tiny_gray, out=target)
    np.testing.assert_array_equal(target[:], denoise(stack, tiny_gray))
    bad = zarr.open_array(
        zarr.storage.MemoryStore(), mode="w", shape=(2, 64, 64), dtype="uint16", chunks=(1, 64, 64)
    )
    with pytest.raises(ValueError, match="shape"):
        denoise_lazy(da.from_array(stack), tiny_gray, out=bad)


ZARR3 = int(zarr.__version__.split(".")[0]) >= 3


def _group(path, fmt=2):
    if ZARR3:
        return zarr.open_group(str(path), mode="w", zarr_format=fmt)
    return zarr.open_group(str(path), mode="w")


def _array(group, name, data, chunks, fmt=2):
    arr = open_zarr_array(
        None, group=group, name=name, shape=data.shape, chunks=chunks, dtype=data.dtype,
        zarr_format=fmt,
    )  # fmt: skip
    arr[...] = data
    return arr


def _multiscales(version):
    return [
        {
            "version": version,
            "name": "cells",
            "axes": [
                {"name": "z", "type": "space", "unit": "micrometer"},
                {"name": "y", "type": "space", "unit": "micrometer"},
                {"name": "x", "type": "space", "unit": "micrometer"},
            ],
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [2, 1, 1]}]},
                {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [2, 2, 2]}]},
            ],
        }
    ]


def _ome(path, data):
    """An OME-Zarr 0.4 image (zarr format 2) with two levels."""
    group = _group(path)
    group.attrs["multiscales"] = _multiscales("0.4")
    group.attrs["omero"] = {"channels": [{"label": "DAPI", "window": {"start": 0, "end": 4000}}]}
    _array(group, "0", data, (1, 32, 32))
    _array(group, "1", data[:, ::2, ::2], (1, 32, 32))
    return path


def test_ome_zarr_metadata_is_copied(tiny_gray, stack, tmp_path):
    src = _ome(tmp_path / "in.ome.zarr", stack)
    dst = tmp_path / "out.ome.zarr"
    result = denoise_lazy(src, tiny_gray, out=dst)
    np.testing.assert_array_equal(result.compute(), denoise(stack, tiny_gray))
    attrs = json.loads((dst / ".zattrs").read_text())  # OME-Zarr 0.4 = zarr format 2
    (ms,) = attrs["multiscales"]
    assert ms["axes"][0]["unit"] == "micrometer" and ms["name"] == "cells"
    assert [d["path"] for d in ms["datasets"]] == ["0"]  # only the level that was denoised
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [2, 1, 1]
    assert attrs["omero"]["channels"][0]["label"] == "DAPI"
    zarray = json.loads((dst / "0" / ".zarray").read_text())
    assert zarray["dimension_separator"] == "/" and zarray["chunks"] == [1, 32, 32]
    back = read_any(dst)  # read_any opens level 0 of an OME-Zarr image, lazily
    assert isinstance(back, da.Array)
    np.testing.assert_array_equal(back.compute(), result.compute())
    with pytest.raises(FileExistsError):
        denoise_lazy(src, tiny_gray, out=dst)
    with pytest.raises(FileExistsError, match="its own input"):
        denoise_lazy(src, tiny_gray, out=src, overwrite=True)


@pytest.mark.skipif(not ZARR3, reason="OME-Zarr 0.5 (zarr format 3) needs zarr-python 3")
def test_ome_zarr_05(tiny_gray, stack, tmp_path):
    src = tmp_path / "in.ome.zarr"
    group = _group(src, fmt=3)
    group.attrs["ome"] = {"version": "0.5", "multiscales": _multiscales("0.5")}
    _array(group, "0", stack, (1, 64, 64), fmt=3)
    _array(group, "1", stack[:, ::2, ::2], (1, 32, 32), fmt=3)
    dst = tmp_path / "out.ome.zarr"
    result = denoise_lazy(read_any(src), tiny_gray, out=dst, like=src)
    np.testing.assert_array_equal(result.compute(), denoise(stack, tiny_gray))
    meta = json.loads((dst / "zarr.json").read_text())
    assert meta["zarr_format"] == 3
    (ms,) = meta["attributes"]["ome"]["multiscales"]
    assert [d["path"] for d in ms["datasets"]] == ["0"]


def test_cancel_leaves_no_output(tiny_gray, stack, tmp_path):
    cancel = threading.Event()

    def progress(done, total):
        if done:
            cancel.set()

    dst = tmp_path / "out.zarr"
    with pytest.raises(Cancelled):
        denoise_lazy(
            da.from_array(stack, chunks=(1, 64, 64)),
            tiny_gray,
            out=dst,
            progress=progress,
            cancel=cancel,
            batch_size=1,
        )
    assert not dst.exists() and not list(tmp_path.iterdir())


def test_progress_counts_all_tiles(tiny_gray, stack):
    calls = []
    denoise_lazy(
        da.from_array(stack, chunks=(1, 64, 64)),
        tiny_gray,
        batch_size=4,
        progress=lambda d, t: calls.append((d, t)),
    )
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1] == calls[0][1]


def test_read_write_any(tmp_path, stack):
    path = write_any(tmp_path / "x.zarr", da.from_array(stack, chunks=(1, 32, 64)))
    back = read_any(path)
    assert isinstance(back, da.Array) and back.chunksize == (1, 32, 64)
    np.testing.assert_array_equal(back.compute(), stack)
    tif = write_any(tmp_path / "x.tif", back)  # other suffixes: a TIFF, via io.write_tiff
    np.testing.assert_array_equal(read_any(tif), stack)
    with pytest.raises(FileExistsError):
        write_any(path, stack)
    write_any(path, stack[:2], overwrite=True)
    assert read_any(path).shape == (2, 64, 64)
    with pytest.raises(FileNotFoundError):
        read_any(tmp_path / "missing.zarr")


def test_bad_input(tiny_gray, tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        denoise_lazy(da.zeros((2, 16, 16), dtype=bool), tiny_gray)
    group = _group(tmp_path / "g.zarr")
    _array(group, "a", np.zeros((8, 8), np.uint8), (8, 8))
    _array(group, "b", np.zeros((8, 8), np.uint8), (8, 8))
    with pytest.raises(ValueError, match="not an OME-Zarr image"):
        read_any(tmp_path / "g.zarr")


def test_missing_packages_give_an_install_hint(tiny_gray, monkeypatch, stack):
    monkeypatch.setitem(sys.modules, "zarr", None)
    with pytest.raises(MissingDependency, match=r"pip install .*large"):
        denoise_lazy(da.from_array(stack), tiny_gray)
