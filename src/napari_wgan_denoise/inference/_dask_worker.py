"""What runs inside a dask worker process for :mod:`.distributed`: one model cache per
process (a worker loads each model once, however many tasks it runs) and the tasks."""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from .cache import ModelCache
from .lazy import open_zarr

#: This process's models (a dask worker loads each model once, however many tasks it runs).
_MODELS = ModelCache(maxsize=2)
_STATS_LOCK = threading.Lock()
_TASKS = 0
_THREADS_SET = False


def _configure_threads() -> None:
    """Give torch ``OMP_NUM_THREADS`` threads (default 1) in this worker process, once."""
    global _THREADS_SET
    if _THREADS_SET:
        return
    import torch

    try:
        n = max(1, int(os.environ.get("OMP_NUM_THREADS") or 1))
    except ValueError:
        n = 1
    torch.set_num_threads(n)
    _THREADS_SET = True


def _worker_model(model_path: str, card_hash: str) -> tuple[Any, threading.Lock]:
    """The model at ``model_path`` for this process (cached) and the lock for its runs."""
    global _TASKS
    with _STATS_LOCK:
        _TASKS += 1
        _configure_threads()
    model = _MODELS.get_file(model_path, card_hash)
    return model, _MODELS.lock_for(model)


def worker_stats() -> dict[str, int]:
    """How many times this process loaded a model and how many tasks it ran (call it on
    every worker with ``client.run(worker_stats)``)."""
    with _STATS_LOCK:
        return {"loads": _MODELS.loads, "tasks": _TASKS}


def _denoise_with(model_path: str, card_hash: str, data: np.ndarray, options: dict) -> np.ndarray:
    from .denoise import denoise

    model, lock = _worker_model(model_path, card_hash)
    with lock:  # denoise switches the network's mode; one run per model at a time
        return denoise(data, model, **options)


def _file_task(
    src: str, dst: str, model_path: str, card_hash: str, overwrite: bool, options: dict
) -> str:
    """Worker task: denoise one image file into a TIFF."""
    from ..io import read_image, write_tiff

    result = _denoise_with(model_path, card_hash, read_image(src), options)
    write_tiff(dst, result, overwrite=overwrite)
    return dst


def _block_task(
    src: str,
    src_component: str | None,
    dst: str,
    slices: tuple[slice, ...],
    model_path: str,
    card_hash: str,
    options: dict,
) -> int:
    """Worker task: denoise one block of a zarr array into its region of the output."""
    node = open_zarr(src)
    source = node[src_component] if src_component else node
    block = np.asarray(source[slices])
    result = _denoise_with(model_path, card_hash, block, options)
    del block
    target = open_zarr(dst, mode="r+")
    target[slices] = result
    return int(result.size)
