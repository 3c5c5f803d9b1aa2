"""A dask-backed napari layer is denoised chunk by chunk into a zarr store, lazily."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")

from napari.layers import Image  # noqa: E402

from napari_wgan_denoise import Cancelled, denoise, load_model, save_user_model  # noqa: E402
from napari_wgan_denoise.napari import _jobs  # noqa: E402
from napari_wgan_denoise.napari.api import denoise_layer  # noqa: E402


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("NAPARI_WGAN_DENOISE_CACHE", str(folder))
    return folder


@pytest.fixture
def model(tiny_gray):
    save_user_model(tiny_gray, "tiny-mse", modality="fluo")
    return "tiny-mse"


@pytest.fixture
def stack(rng):
    return rng.integers(100, 4000, (3, 48, 48)).astype(np.uint16)


def _check_output(layer, stack, model, cache_dir) -> None:
    assert isinstance(layer.data, da.Array)
    store = Path(layer.metadata[_jobs.METADATA_KEY]["store"])
    assert store.is_dir() and store.parent == cache_dir and store.suffix == ".zarr"
    assert store.name.startswith("img-tiny-mse-")
    assert layer.data.chunks == ((1, 1, 1), (48,), (48,))
    expected = denoise(stack, load_model(model))
    np.testing.assert_array_equal(layer.data.compute(), expected)
    np.testing.assert_array_equal(zarr.open_array(str(store), mode="r")[:], expected)


def test_denoise_layer_lazy(model, stack, cache_dir):
    layer = Image(da.from_array(stack, chunks=(1, 48, 48)), name="img")
    seen = []
    out = denoise_layer(layer, model, progress=lambda f, m: seen.append(f))
    _check_output(out, stack, model, cache_dir)
    assert seen[-1] == 1.0
    # a numpy layer and a current-slice preview are still computed in memory
    assert not _jobs.is_lazy_data(denoise_layer(Image(stack, name="img"), model).data)


def test_lazy_run_cancelled_leaves_no_store(model, stack, cache_dir):
    layer = Image(da.from_array(stack, chunks=(1, 48, 48)), name="img")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        denoise_layer(layer, model, cancel=cancel)
    assert not cache_dir.exists() or not any(cache_dir.iterdir())


def test_denoise_widget_lazy(make_napari_viewer, qtbot, model, stack, cache_dir):
    pytest.importorskip("qtpy")
    viewer = make_napari_viewer()
    viewer.add_image(da.from_array(stack, chunks=(1, 48, 48)), name="img")
    _, widget = viewer.window.add_plugin_dock_widget("napari-wgan-denoise", "Denoise")
    assert widget.model_picker.set_value(model)
    with qtbot.waitSignal(widget.run_finished, timeout=60_000) as blocker:
        widget.run()
    assert blocker.args[0] == "done"
    _check_output(widget.last_layer, stack, model, cache_dir)
    assert widget.last_layer in viewer.layers


def test_ome_zarr_layer_gives_ome_zarr_store(model, stack, cache_dir, tmp_path):
    from napari.layers._source import layer_source

    src = tmp_path / "img.ome.zarr"
    group = zarr.open_group(str(src), mode="w", zarr_format=2)
    ms = [{"version": "0.4", "axes": [{"name": a} for a in "zyx"], "datasets": [{"path": "0"}]}]
    group.attrs["multiscales"] = ms
    group.create_array("0", shape=stack.shape, chunks=(1, 48, 48), dtype=stack.dtype)[:] = stack
    with layer_source(path=str(src)):
        layer = Image(da.from_zarr(str(src), component="0"), name="img")
    out = denoise_layer(layer, model)
    store = Path(out.metadata[_jobs.METADATA_KEY]["store"])
    assert store.name.endswith(".ome.zarr")
    back = zarr.open_group(str(store), mode="r")
    assert back.attrs["multiscales"][0]["datasets"] == [{"path": "0"}]
    np.testing.assert_array_equal(out.data.compute(), denoise(stack, load_model(model)))
