"""The runs: denoise, compare and restore a job, in a worker thread (fine-tuning: `_finetune_run`).

Each run is a generator that yields :class:`~._bridge.Progress` events and returns its
outputs as napari ``LayerDataTuple``s ``(data, kwargs, "image")`` (in :class:`Outputs`),
which the widgets and the console API add with :mod:`._viewer` (napari's own pattern: a
worker returns layer data, the main thread makes the layers). The core does the work;
this module only loads models (through the shared cache), checks that they fit and
records how each output was made in ``metadata["napari_wgan_denoise"]``.

A lazily loaded layer (its data a dask or zarr array) denoised whole is processed chunk
by chunk with :func:`~napari_wgan_denoise.inference.lazy.denoise_lazy` into a zarr store
in the output cache folder (:func:`output_cache_dir`; OME-Zarr when the layer was read
from an OME-Zarr image); the output is a dask array backed by that store, whose path is
recorded as ``metadata["napari_wgan_denoise"]["store"]``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import Cancelled
from ..inference import denoise, resolve_device, restore
from ..inference.cache import SHARED_CACHE, ModelCache
from ..inference.channels import check_channels, merge_alpha, split_alpha
from ..metrics import quality_metrics
from ..models.model import DenoiseModel
from ..models.registry import find_model
from ..noise_level import noise_warning
from ..validation import check_tta
from ._bridge import Progress, iter_progress, scaled
from ._jobs import METADATA_KEY, LayerJob, ReferenceJob, RestoreJob, is_lazy_data

#: What napari makes a layer from: ``(data, layer keyword arguments, layer type)``.
LayerDataTuple = tuple[Any, dict[str, Any], str]


@dataclass
class Outputs:
    """What a run made: layer data to add just above the input layer ``source``.

    ``linked`` leading outputs share contrast limits with the input (Compare's twins);
    ``panels`` leading outputs are shown in grid mode beside the input (Compare: both
    outputs and their difference), the other layers are hidden while the grid is on;
    ``metrics`` maps ``"input"`` and each model to PSNR / SSIM / gradient ratio when a
    reference was given; ``readout`` maps each model (and :data:`IDEAL`) to the
    hallucination readout of its method noise (see :func:`~..residual.stack_readout`).
    With ``main_on_top`` the first output (the main result) goes on top of the others in
    the layer list (Restore's "inpainted only" below "restored").
    """

    source: str
    layers: list[LayerDataTuple]
    linked: int = 0
    metrics: dict[str, dict[str, float]] | None = None
    main_on_top: bool = False
    panels: int = 0
    readout: dict[str, dict[str, float]] | None = None


def image_data(data: Any, job: LayerJob, name: str, record: dict[str, Any]) -> LayerDataTuple:
    """An output placed and displayed like the job's input, with the input's metadata plus
    ``record`` under ``METADATA_KEY``."""
    meta = {**job.metadata, METADATA_KEY: {**record, "package_version": __version__}}
    kwargs = {**job.layer_kwargs, "name": job.output_name(name), "metadata": meta}
    return data, kwargs, "image"


@dataclass(frozen=True)
class Settings:
    """How the core runs: device, tile edge and tiles per batch (None: the core's default),
    and test-time augmentation (``tta``: False, True = 8, or 2 / 4 / 8 passes; denoising
    only, restore runs ignore it)."""

    device: str = "auto"
    tile_size: int | None = None
    batch_size: int | None = None
    tta: bool | int = False

    def core(self) -> dict[str, Any]:
        """Keyword arguments of the core's ``denoise``."""
        return {
            "device": self.device,
            "tile_size": self.tile_size,
            "batch_size": self.batch_size,
            "tta": self.tta,
        }

    def record(self, job: LayerJob) -> dict[str, Any]:
        """What the output's metadata records about the run."""
        return {
            "device": str(self.device),
            "device_used": str(resolve_device(self.device)),
            "tile_size": int(self.tile_size) if self.tile_size else None,
            "batch_size": int(self.batch_size) if self.batch_size else None,
            "tta": check_tta(self.tta),  # flips/rotations averaged; 1: none
            "current_slice": job.slice_at is not None,
            "slice": list(job.slice_at) if job.slice_at is not None else None,
        }


def _load(model: str | DenoiseModel, cache: ModelCache) -> tuple[DenoiseModel, str]:
    """The model (cached) and its name for people (the card's name for a model object or a
    file path)."""
    name = model.name if isinstance(model, DenoiseModel) else str(model)
    loaded = cache.get(model)
    try:
        find_model(name)
    except ValueError:  # a model object or a file path: use the card's name
        name = loaded.name
    return loaded, name


def _check(model: DenoiseModel, name: str, job: LayerJob, kind: str = "model") -> None:
    """The one channel-fit check, with the layer named for people."""
    check_channels(model.channels, job.channels, model=name, image=f"Layer {job.name!r}", kind=kind)


def _denoise_data(
    data: np.ndarray,
    model: DenoiseModel,
    job: LayerJob,
    cache: ModelCache,
    *,
    cancel: Any,
    options: dict[str, Any],
    start: float,
    span: float,
    message: str,
) -> Generator[Progress, None, np.ndarray]:
    """Denoise ``data`` (RGBA: the colours, alpha kept) and yield scaled progress."""
    colours, alpha = split_alpha(data, job.rgb)
    steps = iter_progress(
        denoise, colours, model, cancel=cancel, lock=cache.lock_for(model), **options
    )
    out = yield from scaled(steps, start, span, message, planes=job.planes)
    return merge_alpha(out, alpha)


def run_warnings(
    model: DenoiseModel, job: LayerJob, settings: Settings, data: Any | None = None
) -> list[str]:
    """What to tell people before a run starts: tiles so small that the run is many
    times slower, and (given the ``data`` to denoise) noise far outside what the model
    was trained for (its card's noise model)."""
    from ..inference.tiling import DEFAULT_TILE, default_overlap, small_tile_warning

    restoring = model.task == "restore"
    network = model.network
    overlap = default_overlap(network, 64 if restoring else 32)
    auto = DEFAULT_TILE.get(resolve_device(settings.device).type, 512)
    multiple = int(getattr(network, "size_multiple", 1))
    notes = [small_tile_warning(job.plane_shape, settings.tile_size, auto, overlap, multiple)]
    if data is not None and not restoring:
        with contextlib.suppress(ValueError, FloatingPointError):  # a hint: never stops a run
            notes.append(noise_warning(data, model.card, rgb=job.rgb))
    return [note for note in notes if note]


# --------------------------------------------------------------------------- denoise


def output_cache_dir() -> Path:
    """Where lazily denoised layers are written: ``$NAPARI_WGAN_DENOISE_CACHE`` if set,
    else ``~/.cache/napari-wgan-denoise/outputs``. Delete old stores there when done."""
    env = os.environ.get("NAPARI_WGAN_DENOISE_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "napari-wgan-denoise" / "outputs"


def output_store_path(layer_name: str, model_name: str, *, ome: bool = False) -> Path:
    """A new store path ``<cache>/<layer>-<model>-<timestamp>.zarr`` (``.ome.zarr``)."""

    def safe(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "layer"

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    suffix = ".ome.zarr" if ome else ".zarr"
    return output_cache_dir() / f"{safe(layer_name)}-{safe(model_name)}-{stamp}{suffix}"


def _runs_lazily(job: LayerJob) -> bool:
    """Whether a job is processed chunk by chunk into a zarr store: the whole of a dask or
    zarr layer (not RGBA, whose alpha is carried over in memory), dask and zarr installed."""
    if job.slice_at is not None or not is_lazy_data(job.source):
        return False
    if job.rgb and job.shape[-1] == 4:
        return False
    return all(importlib.util.find_spec(m) is not None for m in ("dask", "zarr"))


def _denoise_lazily(
    job: LayerJob, model: DenoiseModel, name: str, cache: ModelCache, *, cancel: Any, **options
) -> Generator[Progress, None, tuple[Any, Path]]:
    """Denoise a lazy layer chunk by chunk into a new store in the output cache folder;
    returns the output as a dask array backed by the store, and the store's path."""
    from ..inference.lazy import _remove, denoise_lazy

    store = output_store_path(job.name, name, ome=job.ome_source is not None)
    steps = iter_progress(
        denoise_lazy,
        job.source,
        model,
        cancel=cancel,
        lock=cache.lock_for(model),
        out=store,
        like=job.ome_source,
        **options,
    )
    out = yield from scaled(steps, 0.0, 1.0, f"Denoising {job.name} with {name} (chunk by chunk)")
    if cancel is not None and cancel.is_set():
        _remove(store)
    return out, store


def run_denoise(
    job: LayerJob,
    model: str | DenoiseModel,
    settings: Settings = Settings(),
    *,
    cache: ModelCache = SHARED_CACHE,
    cancel: Any | None = None,
) -> Generator[Progress, None, Outputs]:
    """Load ``model`` (cached) and denoise the job's data into ``"<input> [<model>]"``."""
    name = model.name if isinstance(model, DenoiseModel) else str(model)
    yield Progress(0.0, f"Loading {name}")
    dmodel, name = _load(model, cache)
    _check(dmodel, name, job)
    options = settings.core()
    lazy = _runs_lazily(job)
    data = None if lazy else job.read()
    sample = data if not lazy else (job.source[job.index] if hasattr(job.source, "dask") else None)
    for note in run_warnings(dmodel, job, settings, sample):
        yield Progress(0.0, f"Denoising {job.name} with {name}", warning=note)
    record: dict[str, Any] = {
        "model": name,
        "card_hash": dmodel.card_hash,
        "source_layer": job.name,
        "settings": settings.record(job),
    }
    if lazy:
        out, store = yield from _denoise_lazily(job, dmodel, name, cache, cancel=cancel, **options)
        record["store"] = str(store)
    else:
        out = yield from _denoise_data(
            data,
            dmodel,
            job,
            cache,
            cancel=cancel,
            options=options,
            start=0.0,
            span=1.0,
            message=f"Denoising {job.name} with {name}",
        )
    if cancel is not None and cancel.is_set():
        raise Cancelled("Denoising was cancelled; no layer was added.")
    yield Progress(1.0, "Done")
    return Outputs(job.name, [image_data(out, job, f"{job.name} [{name}]", record)])


# --------------------------------------------------------------------------- compare

#: Readout key of the ideal residual (noisy − reference) when a reference is given.
IDEAL = "ideal"
#: What each Compare output shows, in its layer name (the grid panels' labels).
COMPARE_ROLES = ("MSE", "WGAN")


def difference(mse: np.ndarray, wgan: np.ndarray, rgb: bool) -> np.ndarray:
    """``|MSE - WGAN|`` as float32; for RGB(A) the mean over the three colours (gray map)."""
    diff = np.abs(mse.astype(np.float32) - wgan.astype(np.float32))
    if rgb:
        diff = diff[..., :3].mean(axis=-1)
    return diff


def _difference_data(
    diff: np.ndarray, job: LayerJob, family: str, records: list[dict[str, Any]]
) -> LayerDataTuple:
    """The ``|MSE - WGAN|`` map as a gray-scale layer placed like the input."""
    drop = ("contrast_limits", "colormap", "gamma", "rgb", "blending")
    kwargs = {k: v for k, v in job.layer_kwargs.items() if k not in drop}
    top = float(np.percentile(diff, 99.9)) if diff.size else 1.0
    if not top > 0:
        top = float(diff.max()) or 1.0
    meta = {
        METADATA_KEY: {
            "family": family,
            "models": [r["model"] for r in records],
            "card_hashes": [r["card_hash"] for r in records],
            "source_layer": job.name,
            "settings": dict(records[0]["settings"]),
            "what": "|MSE - WGAN|: where the adversarial model changed the image most",
            "package_version": __version__,
        }
    }
    name = job.output_name(f"{job.name} |MSE − WGAN| [{family}]")
    kwargs.update(name=name, colormap="magma", contrast_limits=(0.0, top), rgb=False)
    return diff, {**kwargs, "metadata": meta}, "image"


def _method_noise_data(
    residual: np.ndarray, job: LayerJob, record: dict[str, Any], readout: dict[str, float]
) -> LayerDataTuple:
    """One model's method noise (input − output) as a signed gray layer placed like the
    input, with contrast limits symmetric about 0."""
    drop = ("contrast_limits", "colormap", "gamma", "rgb", "blending")
    kwargs = {k: v for k, v in job.layer_kwargs.items() if k not in drop}
    top = float(np.percentile(np.abs(residual), 99.5)) if residual.size else 1.0
    meta = {
        METADATA_KEY: {
            "model": record["model"],
            "family": record["family"],
            "source_layer": job.name,
            "what": "method noise: input − output (should look like pure noise)",
            "readout": dict(readout),
            "package_version": __version__,
        }
    }
    name = job.output_name(f"{job.name} method noise [{record['model']}]")
    limits = (-top, top) if top > 0 else (-1.0, 1.0)
    kwargs.update(name=name, colormap="gray", contrast_limits=limits, rgb=False)
    return residual, {**kwargs, "metadata": meta}, "image"


def run_compare(
    job: LayerJob,
    mse_name: str,
    wgan_name: str,
    settings: Settings = Settings(),
    *,
    family: str,
    reference: ReferenceJob | None = None,
    cache: ModelCache = SHARED_CACHE,
    cancel: Any | None = None,
    method_noise: bool = False,
) -> Generator[Progress, None, Outputs]:
    """Run a family's ID-MSE and ID-MSE-WGAN models on the same data: both outputs
    (``"<input> MSE [<model>]"``, ``"<input> WGAN [<model>]"``), their difference, the
    hallucination readout and (with a reference) the metrics; with ``method_noise`` also
    each model's input − output layer."""
    yield Progress(0.0, f"Loading {mse_name} and {wgan_name}")
    models = [cache.get(mse_name), cache.get(wgan_name)]
    for m, n in zip(models, (mse_name, wgan_name)):
        _check(m, n, job)
    data = job.read()
    options, record = settings.core(), settings.record(job)
    outs, records = [], []
    for k, (m, n) in enumerate(zip(models, (mse_name, wgan_name))):
        out = yield from _denoise_data(
            data,
            m,
            job,
            cache,
            cancel=cancel,
            options=options,
            start=0.45 * k,
            span=0.45,
            message=f"{n} ({k + 1}/2)",
        )
        outs.append(out)
        records.append(
            {
                "model": n,
                "card_hash": m.card_hash,
                "source_layer": job.name,
                "settings": record,
                "family": family,
            }
        )
    yield Progress(0.9, "Difference, readout and metrics")
    from ..residual import method_noise_map, stack_readout

    diff = difference(outs[0], outs[1], job.rgb)
    readout = {r["model"]: stack_readout(data, o, rgb=job.rgb) for r, o in zip(records, outs)}
    metrics = None
    if reference is not None:
        ref = reference.read(outs[0].shape)
        metrics = {r["model"]: quality_metrics(ref, o, job.rgb) for r, o in zip(records, outs)}
        metrics["input"] = quality_metrics(ref, data, job.rgb)
        # what removing exactly the noise would give: the yardstick for the readout
        readout[IDEAL] = stack_readout(data, ref, rgb=job.rgb)
    if cancel is not None and cancel.is_set():
        raise Cancelled("Comparison was cancelled; no layer was added.")
    yield Progress(1.0, "Done")
    layers = [
        image_data(o, job, f"{job.name} {role} [{r['model']}]", r)
        for role, r, o in zip(COMPARE_ROLES, records, outs)
    ]
    layers.append(_difference_data(diff, job, family, records))
    if method_noise:
        for r, o in zip(records, outs):
            residual = method_noise_map(data, o, job.rgb)
            layers.append(_method_noise_data(residual, job, r, readout[r["model"]]))
    return Outputs(job.name, layers, linked=2, metrics=metrics, panels=3, readout=readout)


# --------------------------------------------------------------------------- restore


def run_restore(
    job: RestoreJob,
    model: str | DenoiseModel,
    settings: Settings = Settings(),
    *,
    inpainted: bool = False,
    cache: ModelCache = SHARED_CACHE,
    cancel: Any | None = None,
) -> Generator[Progress, None, Outputs]:
    """Load ``model`` (cached) and restore the job's data into ``"<input> restored
    (<model>)"`` (and, with ``inpainted``, the inpainting-only ``"<input> inpainted
    (<model>)"``). Raises ``Cancelled`` when ``cancel`` is set."""
    name = model.name if isinstance(model, DenoiseModel) else str(model)
    yield Progress(0.0, f"Loading {name}")
    dmodel, name = _load(model, cache)
    if dmodel.task != "restore":
        raise ValueError(
            f"Model {name!r} is a {dmodel.task} model, not an inpaint + deblur + denoise "
            "cascade; choose a restore model (the Restore widget lists them)."
        )
    _check(dmodel, name, job.layer, kind="restore model")
    for note in run_warnings(dmodel, job.layer, settings):
        yield Progress(0.0, f"Restoring {job.name} with {name}", warning=note)
    data, alpha = split_alpha(job.layer.read(), job.layer.rgb)
    mask = job.mask
    if mask is None:
        mask = np.zeros(data.shape[-3:-1] if job.layer.rgb else data.shape[-2:], bool)
    steps = iter_progress(
        restore,
        data,
        mask,
        dmodel,
        cancel=cancel,
        lock=cache.lock_for(dmodel),
        return_inpainted=inpainted,
        device=settings.device,
        tile_size=settings.tile_size,
    )
    try:
        message = f"Restoring {job.name} with {name}"
        out = yield from scaled(steps, 0.0, 1.0, message, planes=job.layer.planes)
    except Cancelled as exc:
        raise Cancelled("Restoring was cancelled; no layer was added.") from exc
    if cancel is not None and cancel.is_set():
        raise Cancelled("Restoring was cancelled; no layer was added.")
    restored, filled = out if inpainted else (out, None)
    record = Settings(settings.device, settings.tile_size).record(job.layer)
    record.pop("batch_size", None)
    record.pop("tta", None)
    record["mask_pixels"] = int(np.count_nonzero(job.mask)) if job.mask is not None else 0
    outputs = [("restored", restored)] + ([("inpainted", filled)] if inpainted else [])
    layers = [
        image_data(
            merge_alpha(data_, alpha),
            job.layer,
            f"{job.name} {what} ({name})",
            {
                "model": name,
                "card_hash": dmodel.card_hash,
                "source_layer": job.name,
                "mask_layer": job.mask_name,
                "output": what,
                "settings": dict(record),
            },
        )
        for what, data_ in outputs
    ]
    yield Progress(1.0, "Done")
    return Outputs(job.name, layers, main_on_top=True)


# --------------------------------------------------------------------------- fine-tune
