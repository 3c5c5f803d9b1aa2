"""Batch denoising on a dask.distributed cluster: many files, or one large zarr store.

Two entry points, both driven from the client process:

* :func:`denoise_files_distributed` — one task per image file (TIFF, PNG, ...), each
  written as ``OUTDIR/<stem>.tif``; ``.zarr`` inputs in the list go through
  :func:`denoise_zarr_distributed` on the same cluster.
* :func:`denoise_zarr_distributed` — one task per block of a zarr (or OME-Zarr) array: a
  chunk along the leading axes (T, Z, C, ...) by whole YX planes, exactly the blocks of
  :func:`~napari_wgan_denoise.inference.lazy.denoise_lazy`. The output store is created
  up front (next to its final name, renamed into place when every block is written) with
  one chunk per block along the leading axes, so each task writes whole chunks of its own
  region and no two tasks touch the same chunk.

The model travels by *path* (its ``NAME.safetensors`` + ``NAME.json`` pair, plus the
card hash), never as a pickled torch module: each worker process loads it on first use and
keeps it in a module-level cache keyed by ``(path, card hash)``, so a worker loads it once
however many tasks it runs (:func:`worker_stats` counts loads and tasks per worker; run it
with ``client.run``). Every path — inputs, outputs, model — must be visible to the workers
under the same name (a shared file system for a remote cluster).

``scheduler=None`` (or ``"local"``) starts a ``LocalCluster`` of ``n_workers`` processes
with ``threads_per_worker`` threads each and closes it afterwards; a string is the address
of a running scheduler (``tcp://host:8786``), which is left running; a
``distributed.Client`` is used as it is. Torch in a worker uses ``OMP_NUM_THREADS``
threads (1 unless set: dask's nanny sets it to 1 for the workers it starts; a LocalCluster
started here gets ``torch_threads``).

``distributed`` is optional (``pip install distributed``, the release matching the
installed dask); without it these functions raise
:class:`~napari_wgan_denoise.inference.lazy.MissingDependency`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..validation import check_tta
from ._dask_worker import _block_task, _file_task, worker_stats
from .lazy import (
    MissingDependency,
    _block_slices,
    _multiscales,
    _partial_path,
    _remove,
    _remove_settled,
    create_output,
    is_zarr_path,
    open_zarr,
    publish,
)

ProgressFn = Callable[[int, int], Any]

__all__ = [
    "check_targets",
    "denoise_files_distributed",
    "denoise_zarr_distributed",
    "output_path",
    "worker_stats",
]

_INSTALL_HINT = (
    "pip install distributed  (the release matching your dask, e.g. "
    'pip install "dask[distributed]"), or pip install "napari-wgan-denoise[large]"'
)

#: Options of ``denoise`` / ``denoise_lazy`` that may be passed through to the workers.
_DENOISE_OPTIONS = ("axes", "tile_size", "overlap", "device", "batch_size", "value_range", "tta")


def _require_distributed() -> Any:
    try:
        return importlib.import_module("distributed")
    except ImportError as exc:
        raise MissingDependency(
            "Denoising on a dask cluster needs the optional package 'distributed', which is "
            f"not installed. Install it with: {_INSTALL_HINT}"
        ) from exc


# --------------------------------------------------------------------------- client side


def _model_ref(model: Any) -> tuple[str, str, int]:
    """``(path, card hash, channels)`` of a model given by name, path or loaded object."""
    from ..models.model import DenoiseModel
    from ..models.registry import load_model

    if isinstance(model, DenoiseModel):
        if model.path is None:
            raise ValueError(
                "The model has no file: save it first (napari_wgan_denoise.save_model(model, "
                "path)) and pass the path, so that each worker can load it."
            )
        if not Path(str(model.path) + ".safetensors").exists():
            raise FileNotFoundError(f"Model file {model.path}.safetensors does not exist.")
        return str(Path(model.path).resolve()), model.card_hash, model.channels
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(
            "model must be a registered model name, a model file path or a saved DenoiseModel "
            f"(workers load it from its file), not {type(model).__name__}."
        )
    loaded = load_model(model)  # resolves a name to its file and checks that it loads
    return str(Path(loaded.path).resolve()), loaded.card_hash, loaded.channels


@contextlib.contextmanager
def _client(
    scheduler: Any, n_workers: int, threads_per_worker: int, torch_threads: int
) -> Iterator[Any]:
    """A ``distributed.Client``: on a new LocalCluster (closed afterwards), on the
    scheduler at an address, or the given client."""
    distributed = _require_distributed()
    if isinstance(scheduler, distributed.Client):
        yield scheduler
        return
    if scheduler is None or (isinstance(scheduler, str) and scheduler.lower() == "local"):
        n_workers, threads_per_worker = int(n_workers), int(threads_per_worker)
        if n_workers < 1 or threads_per_worker < 1:
            raise ValueError("n_workers and threads_per_worker must be at least 1.")
        threads = str(max(1, int(torch_threads)))
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        with (
            distributed.LocalCluster(
                n_workers=n_workers,
                threads_per_worker=threads_per_worker,
                processes=True,
                dashboard_address=":0",
                env=env,
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            yield client
        return
    if not isinstance(scheduler, str):
        raise TypeError(
            "scheduler must be None or 'local' (a new LocalCluster), a scheduler address "
            f"such as 'tcp://host:8786', or a distributed.Client; not {type(scheduler).__name__}."
        )
    try:
        client = distributed.Client(scheduler, timeout="30s")
    except OSError as exc:
        raise ValueError(f"Cannot connect to the dask scheduler at {scheduler}: {exc}") from exc
    with client:
        yield client


def _options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(_DENOISE_OPTIONS))
    if unknown:
        raise TypeError(
            f"Unknown denoise option(s) {', '.join(unknown)}; "
            f"expected some of {', '.join(_DENOISE_OPTIONS)}."
        )
    check_tta(options.get("tta"))  # here, not in every worker
    return {k: v for k, v in options.items() if v is not None}


def output_path(src: str | os.PathLike[str], outdir: str | os.PathLike[str]) -> Path:
    """Where the output of ``src`` goes in ``outdir``: ``<name>.zarr`` for a zarr store,
    else ``<stem>.tif`` (the ``wgan-denoise denoise`` rule)."""
    src = Path(src)
    return Path(outdir) / src.name if is_zarr_path(src) else Path(outdir) / (src.stem + ".tif")


def check_targets(
    inputs: Sequence[Path],
    targets: Sequence[Path],
    overwrite: bool,
    *,
    hint: str = "pass overwrite=True",
) -> None:
    """Raise a clear error before any work when an input is missing, an output would replace
    its own input or an existing file (unless ``overwrite``; ``hint`` says how to allow it),
    or two inputs would write the same output."""
    for src, dst in zip(inputs, targets):
        if not (src.exists() if is_zarr_path(src) else src.is_file()):
            raise FileNotFoundError(f"Input file {src} does not exist.")
        if dst.resolve() == src.resolve():
            raise FileExistsError(f"Output {dst} would replace its own input; choose another.")
        if dst.exists() and not overwrite:
            raise FileExistsError(f"{dst} already exists; {hint} to replace it.")
    if len({t.resolve() for t in targets}) != len(targets):
        raise ValueError(
            "Two inputs share a file name stem and would write the same output; "
            "denoise them into different folders."
        )


def _source_component(node: Any, src: Path) -> str | None:
    """The array inside a zarr store to denoise: None for a bare array, level 0 of an
    OME-Zarr image, or the only array of a group."""
    if hasattr(node, "chunks") and not hasattr(node, "array_keys"):
        return None
    ms, _ = _multiscales(dict(node.attrs))
    if ms:
        datasets = ms[0].get("datasets") or []
        if not datasets or "path" not in datasets[0]:
            raise ValueError(f"The OME-Zarr image {src} lists no datasets in its multiscales.")
        return str(datasets[0]["path"])
    keys = sorted(node.array_keys())
    if len(keys) == 1:
        return keys[0]
    raise ValueError(
        f"The zarr group {src} is not an OME-Zarr image and holds {len(keys)} arrays "
        f"({', '.join(keys[:10]) or 'none'}); pass the path of the array you want."
    )


def _zarr_on(
    client: Any,
    src: Path,
    dst: Path,
    ref: tuple[str, str, int],
    *,
    overwrite: bool,
    options: dict[str, Any],
    planes_per_block: int | None,
    progress: ProgressFn | None,
) -> Path:
    from .denoise import plan_axes

    distributed = _require_distributed()
    model_path, card_hash, channels = ref
    node = open_zarr(src)
    component = _source_component(node, src)
    source = node[component] if component else node
    shape = tuple(int(s) for s in source.shape)
    dtype = np.dtype(source.dtype)
    if dtype.kind == "b" or not (
        np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    ):
        raise ValueError(
            f"Cannot denoise {src} of dtype {dtype}: give integer or floating point intensities."
        )
    if len(shape) < 2 or 0 in shape:
        raise ValueError(
            f"Denoising needs non-empty images with at least two axes; {src} has {shape}."
        )
    plan = plan_axes(shape, options.get("axes"), channels)
    leading = set(plan.order[: plan.n_leading])
    in_chunks = tuple(int(c) for c in source.chunks)
    # one block: the input's chunk along the leading axes (planes_per_block planes of the
    # innermost leading axis instead, when given), the whole plane along the others
    block = [in_chunks[ax] if ax in leading else shape[ax] for ax in range(len(shape))]
    if planes_per_block and plan.n_leading:
        for ax in leading:
            block[ax] = 1
        block[plan.order[plan.n_leading - 1]] = int(planes_per_block)
    block = [min(b, s) for b, s in zip(block, shape)]
    out_chunks = tuple(
        block[ax] if ax in leading else min(in_chunks[ax], shape[ax]) for ax in range(len(shape))
    )
    grid = tuple((b,) * (s // b) + ((s % b,) if s % b else ()) for b, s in zip(block, shape))
    blocks = _block_slices(grid)

    tmp = _partial_path(dst)
    _remove(tmp)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ome = _multiscales(dict(node.attrs))[0] if component is not None else None
    _, name = create_output(
        tmp, shape=shape, chunks=out_chunks, dtype=dtype, like=node if ome else None
    )
    target = tmp / name if name is not None else tmp

    futures = [
        client.submit(
            _block_task,
            str(src.resolve()),
            component,
            str(target.resolve()),
            slices,
            model_path,
            card_hash,
            options,
            pure=False,
        )
        for slices in blocks
    ]
    try:
        if progress is not None:
            progress(0, len(futures))
        for done, future in enumerate(distributed.as_completed(futures), start=1):
            future.result()  # re-raises a worker's error here
            if progress is not None:
                progress(done, len(futures))
    except BaseException:
        client.cancel(futures)
        _remove_settled(tmp)
        raise
    return publish(tmp, dst)


def _files_on(
    client: Any,
    inputs: Sequence[Path],
    targets: Sequence[Path],
    ref: tuple[str, str, int],
    *,
    overwrite: bool,
    options: dict[str, Any],
    progress: ProgressFn | None,
    on_done: Callable[[Path, Path], Any] | None = None,
) -> None:
    distributed = _require_distributed()
    model_path, card_hash, _ = ref
    futures = {
        client.submit(
            _file_task,
            str(src.resolve()),
            str(dst.resolve()),
            model_path,
            card_hash,
            overwrite,
            options,
            pure=False,
        ): (src, dst)
        for src, dst in zip(inputs, targets)
    }
    try:
        if progress is not None:
            progress(0, len(futures))
        for done, future in enumerate(distributed.as_completed(list(futures)), start=1):
            future.result()
            if progress is not None:
                progress(done, len(futures))
            if on_done is not None:
                on_done(*futures[future])
    except BaseException:
        client.cancel(list(futures))
        raise


def denoise_files_distributed(
    inputs: Sequence[str | os.PathLike[str]],
    outdir: str | os.PathLike[str],
    model: Any,
    *,
    scheduler: Any = None,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    torch_threads: int = 1,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    planes_per_block: int | None = None,
    on_done: Callable[[Path, Path], Any] | None = None,
    on_client: Callable[[Any], Any] | None = None,
    store_progress: Callable[[Path], ProgressFn | None] | None = None,
    **denoise_options: Any,
) -> list[Path]:
    """Denoise image files on a dask cluster, one task per file; return the output paths.

    Each input ``DIR/NAME.EXT`` is written to ``outdir/NAME.tif`` (a ``.zarr`` store to
    ``outdir/NAME.zarr``, block by block with :func:`denoise_zarr_distributed`). ``model``
    is a registered name, a model file path or a saved ``DenoiseModel``; the workers load
    it from its file, once each. ``denoise_options`` (``axes``, ``tile_size``,
    ``overlap``, ``device``, ``batch_size``, ``value_range``, ``tta``) mean what they mean for
    :func:`~napari_wgan_denoise.denoise`, and the outputs equal ``denoise``'s.
    ``progress(done, total)`` counts finished files; ``store_progress(src)`` may give a
    ``progress`` for the blocks of a zarr input; ``on_done(src, dst)`` is called as each
    input is finished and ``on_client(client)`` once the cluster is ready (the command line
    prints from these). Existing outputs need ``overwrite``. See the module docstring for
    ``scheduler``.
    """
    options = _options(denoise_options)
    srcs = [Path(p) for p in inputs]
    targets = [output_path(p, outdir) for p in srcs]
    check_targets(srcs, targets, overwrite)
    ref = _model_ref(model)
    files = [(s, t) for s, t in zip(srcs, targets) if not is_zarr_path(s)]
    stores = [(s, t) for s, t in zip(srcs, targets) if is_zarr_path(s)]
    with _client(scheduler, n_workers, threads_per_worker, torch_threads) as client:
        if on_client is not None:
            on_client(client)
        if files:
            Path(outdir).mkdir(parents=True, exist_ok=True)
            _files_on(
                client,
                [s for s, _ in files],
                [t for _, t in files],
                ref,
                overwrite=overwrite,
                options=options,
                progress=progress,
                on_done=on_done,
            )
        for src, dst in stores:
            _zarr_on(
                client,
                src,
                dst,
                ref,
                overwrite=overwrite,
                options=options,
                planes_per_block=planes_per_block,
                progress=store_progress(src) if store_progress is not None else None,
            )
            if on_done is not None:
                on_done(src, dst)
    return targets


def denoise_zarr_distributed(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    model: Any,
    *,
    scheduler: Any = None,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    torch_threads: int = 1,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    planes_per_block: int | None = None,
    **denoise_options: Any,
) -> Path:
    """Denoise a zarr array or OME-Zarr image (a path) on a dask cluster into the zarr store
    ``dst``, one task per block; return ``dst``.

    The blocks and the output (shape, dtype, chunks, OME-Zarr metadata) are those of
    :func:`~napari_wgan_denoise.inference.lazy.denoise_lazy`, and so are the values (equal to
    ``denoise`` on the whole array). Each task reads its block from ``src`` and writes it
    into its own chunks of ``dst``; the store is written as ``.<name>.partial`` and renamed
    to ``dst`` once every block is done (removed on error). ``progress(done, total)`` counts
    finished blocks. Open the result lazily with ``read_any(dst)``. See
    :func:`denoise_files_distributed` for the other arguments.
    """
    options = _options(denoise_options)
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise FileNotFoundError(f"Input {src} does not exist.")
    check_targets([src], [dst], overwrite)
    ref = _model_ref(model)
    with _client(scheduler, n_workers, threads_per_worker, torch_threads) as client:
        return _zarr_on(
            client,
            src,
            dst,
            ref,
            overwrite=overwrite,
            options=options,
            planes_per_block=planes_per_block,
            progress=progress,
        )
