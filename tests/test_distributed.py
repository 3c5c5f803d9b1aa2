"""Batch denoising on a dask.distributed cluster (a 2-process LocalCluster, tiny data)."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")
tifffile = pytest.importorskip("tifffile")

from napari_wgan_denoise import denoise, load_model, save_model  # noqa: E402
from napari_wgan_denoise.inference import distributed as dist  # noqa: E402
from napari_wgan_denoise.inference.lazy import MissingDependency, read_any  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    """One 2-process cluster for the module (starting one costs seconds)."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as lc:
        yield lc


@pytest.fixture(scope="module")
def client(cluster):
    with distributed.Client(cluster) as c:
        yield c


@pytest.fixture
def model_path(tiny_gray, tmp_path):
    save_model(tiny_gray, tmp_path / "tiny")
    return tmp_path / "tiny"


def _stats(client) -> dict[str, dict[str, int]]:
    return client.run(dist.worker_stats)


def _check_loaded_once(before, after) -> None:
    """Every worker that ran tasks loaded the model exactly once; at least one ran two."""
    tasks = {w: after[w]["tasks"] - before.get(w, {}).get("tasks", 0) for w in after}
    loads = {w: after[w]["loads"] - before.get(w, {}).get("loads", 0) for w in after}
    assert max(tasks.values()) >= 2
    for w in after:
        assert loads[w] == (1 if tasks[w] else 0), (tasks, loads)


def test_files_match_denoise_and_load_model_once(cluster, client, model_path, tmp_path, rng):
    arrays = [rng.integers(100, 4000, (2, 40, 40)).astype(np.uint16) for _ in range(3)]
    inputs = []
    for k, arr in enumerate(arrays):
        inputs.append(tmp_path / f"in{k}.tif")
        tifffile.imwrite(inputs[-1], arr)
    before = _stats(client)
    seen = []
    outs = dist.denoise_files_distributed(
        inputs,
        tmp_path / "out",
        str(model_path),
        scheduler=cluster.scheduler_address,
        progress=lambda done, total: seen.append((done, total)),
    )
    _check_loaded_once(before, _stats(client))
    assert [p.name for p in outs] == ["in0.tif", "in1.tif", "in2.tif"]
    assert seen[-1] == (3, 3)
    model = load_model(model_path)
    for arr, out in zip(arrays, outs):
        np.testing.assert_array_equal(tifffile.imread(out), denoise(arr, model))
    with pytest.raises(FileExistsError):
        dist.denoise_files_distributed(
            inputs[:1], tmp_path / "out", str(model_path), scheduler=client
        )


def test_zarr_blocks_match_denoise(client, model_path, tmp_path, rng):
    arr = rng.integers(100, 4000, (3, 40, 40)).astype(np.uint16)
    src = tmp_path / "in.zarr"
    z = zarr.open_array(str(src), mode="w", shape=arr.shape, chunks=(1, 40, 40), dtype=arr.dtype)
    z[:] = arr
    before = _stats(client)
    out = dist.denoise_zarr_distributed(
        src, tmp_path / "out.zarr", str(model_path), scheduler=client
    )
    _check_loaded_once(before, _stats(client))
    assert out == tmp_path / "out.zarr" and out.is_dir()
    assert not list(tmp_path.glob(".*partial"))
    result = read_any(out)
    assert result.chunks == ((1, 1, 1), (40,), (40,))
    np.testing.assert_array_equal(result.compute(), denoise(arr, load_model(model_path)))


def test_ome_zarr_keeps_metadata(client, model_path, tmp_path, rng):
    arr = rng.integers(0, 255, (2, 40, 40)).astype(np.uint8)
    src = tmp_path / "img.ome.zarr"
    group = zarr.open_group(str(src), mode="w", zarr_format=2)
    ms = [{"version": "0.4", "axes": [{"name": a} for a in "zyx"], "datasets": [{"path": "0"}]}]
    group.attrs["multiscales"] = ms
    group.create_array("0", shape=arr.shape, chunks=(1, 40, 40), dtype=arr.dtype)[:] = arr
    out = dist.denoise_zarr_distributed(
        src, tmp_path / "out" / "img.ome.zarr", str(model_path), scheduler=client
    )
    back = zarr.open_group(str(out), mode="r")
    assert back.attrs["multiscales"][0]["datasets"] == [{"path": "0"}]
    np.testing.assert_array_equal(back["0"][:], denoise(arr, load_model(model_path)))


def test_denoise_cli_on_a_cluster(cluster, model_path, tmp_path, rng, capsys):
    from napari_wgan_denoise.cli import main
    from napari_wgan_denoise.cli.denoise import add_distributed_arguments, wants_distributed

    arr = rng.integers(100, 4000, (40, 40)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", arr)
    parser = argparse.ArgumentParser()
    add_distributed_arguments(parser)
    assert wants_distributed(parser.parse_args(["--scheduler", cluster.scheduler_address]))
    assert not wants_distributed(parser.parse_args([]))
    assert wants_distributed(parser.parse_args(["--workers", "3"]))
    out = tmp_path / "out"
    argv = ["denoise", str(tmp_path / "a.tif"), "-o", str(out), "--model", str(model_path)]
    assert main([*argv, "--scheduler", cluster.scheduler_address]) == 0
    assert f"-> {out / 'a.tif'}" in capsys.readouterr().out
    np.testing.assert_array_equal(
        tifffile.imread(out / "a.tif"), denoise(arr, load_model(model_path))
    )
    assert main([*argv, "--scheduler", cluster.scheduler_address, "-q"]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err


def test_denoise_cli_tta_reaches_the_workers(cluster, model_path, tmp_path, rng):
    from napari_wgan_denoise.cli import main

    arr = rng.integers(100, 4000, (2, 40, 40)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", arr)
    store = str(tmp_path / "b.zarr")
    zarr.open_array(store, mode="w", shape=arr.shape, chunks=(1, 40, 40), dtype=arr.dtype)[:] = arr
    out = tmp_path / "out"
    inputs = [str(tmp_path / "a.tif"), str(tmp_path / "b.zarr")]
    argv = ["denoise", *inputs, "-o", str(out), "--model", str(model_path), "-q", "--tta", "2"]
    assert main([*argv, "--scheduler", cluster.scheduler_address]) == 0
    expected = denoise(arr, load_model(model_path), tta=2)
    assert not np.array_equal(expected, denoise(arr, load_model(model_path)))
    np.testing.assert_array_equal(tifffile.imread(out / "a.tif"), expected)
    np.testing.assert_array_equal(read_any(out / "b.zarr").compute(), expected)


def test_default_local_cluster(model_path, tmp_path, rng):
    arr = rng.integers(100, 4000, (40, 40)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", arr)
    (out,) = dist.denoise_files_distributed(
        [tmp_path / "a.tif"], tmp_path / "out", model_path, n_workers=1
    )
    np.testing.assert_array_equal(tifffile.imread(out), denoise(arr, load_model(model_path)))


def test_model_must_be_a_file(tiny_gray, tmp_path):
    with pytest.raises(ValueError, match="save it first"):
        dist.denoise_files_distributed([], tmp_path, tiny_gray, scheduler="tcp://unused:1")


def test_missing_distributed_is_a_clear_error(monkeypatch, model_path, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(MissingDependency, match="pip install distributed"):
        dist.denoise_files_distributed([], tmp_path / "out", model_path)
