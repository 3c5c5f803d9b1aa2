"""Qt-free machinery shared by the widgets, the one-click action and the console API.

Everything that touches a layer's data, a model or the viewer's layer list without needing
Qt lives here: preparing a job from a layer (whole layer or the current slice), running the
core ``denoise`` as a generator that yields progress, building the output layers with the
input's placement and contrast, and the ``|MSE - WGAN|`` difference and quality metrics of
the Compare widget.

A lazily loaded layer (its data a dask or zarr array, e.g. opened from a large zarr store)
denoised whole is processed chunk by chunk with
:func:`~napari_wgan_denoise.inference.lazy.denoise_lazy` into a zarr store in the output
cache folder (:func:`output_cache_dir`; OME-Zarr when the layer was read from an OME-Zarr
image), and the output layer is a dask array backed by that store: the layer is never
loaded whole. ``layer.metadata["napari_wgan_denoise"]["store"]`` records the store's path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import queue
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.transforms import Affine

from .._version import __version__
from ..errors import Cancelled
from ..inference import denoise, resolve_device
from ..models.model import DenoiseModel
from ..models.registry import ModelEntry, find_model, load_model, model_entries

#: Key under which output layers record how they were made, in ``layer.metadata``.
METADATA_KEY = "napari_wgan_denoise"

#: What the generators below yield: ``(fraction done in [0, 1], message)``.
Step = tuple[float, str]


def is_image_layer(layer: Any) -> bool:
    """True for napari Image layers (not Labels), the layers the widgets can denoise."""
    return isinstance(layer, Image) and not isinstance(layer, Labels)


def layer_channels(layer: Image) -> int:
    """Colour channels a model needs for this layer: 3 for RGB(A) layers, else 1."""
    return 3 if getattr(layer, "rgb", False) else 1


def model_choices(channels: int | None, task: str = "denoise") -> list[tuple[str, str, str, bool]]:
    """Picker choices ``(name, label, tooltip, fits)`` for every registered model of a task
    (``"denoise"`` or ``"restore"``); models that do not fit a layer with ``channels`` (RGB
    vs gray) are marked as not fitting."""
    out = []
    for entry in model_entries():
        if entry.task != task:
            continue
        fits = channels is None or entry.channels == channels
        tip = entry_tooltip(entry)
        if not fits:
            kind = "RGB" if channels == 3 else "gray"
            tip = f"Does not fit the {kind} layer.\n{tip}"
        out.append((entry.name, describe_entry(entry), tip, fits))
    return out


def describe_entry(entry: ModelEntry) -> str:
    """One-line label of a registry model for pickers: name, modality, size and channels."""
    bits = [entry.modality] if entry.modality else []
    if entry.parameters:
        bits.append(_human_count(entry.parameters) + " params")
    bits.append("RGB" if entry.channels == 3 else "gray")
    if entry.source == "user":
        bits.append("user")
    return f"{entry.name}  ({', '.join(bits)})"


def entry_tooltip(entry: ModelEntry) -> str:
    """Longer description of a registry model (architecture, source, card description)."""
    card = entry.card
    lines = [
        f"{entry.name}: {entry.architecture}, {'RGB' if entry.channels == 3 else 'gray'}, "
        f"{entry.parameters:,} parameters, {entry.source} model",
    ]
    if entry.modality:
        lines.append(f"modality: {entry.modality}")
    for key in ("description", "loss"):
        if card.get(key):
            lines.append(f"{key}: {card[key]}")
    lines.append(str(entry.path))
    return "\n".join(lines)


def _human_count(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f} M"
    if n >= 1_000:
        return f"{n / 1e3:.0f} k"
    return str(n)


def no_model_message(channels: int) -> str:
    """What to tell users when no installed model fits their image."""
    from ..models.registry import user_models_dir

    kind = "RGB" if channels == 3 else "gray (single-channel)"
    return (
        f"No denoising model for {kind} images is installed. The shipped models come with "
        "the napari-wgan-denoise package (reinstall or upgrade it: pip install -U "
        f"napari-wgan-denoise); models you train or fine-tune are stored in "
        f"{user_models_dir()} (set NAPARI_WGAN_DENOISE_MODELS to use another folder)."
    )


# --------------------------------------------------------------------------- models


def card_key(card: dict[str, Any]) -> str:
    """Short hash of a model card, the same digest as ``DenoiseModel.card_hash``."""
    blob = json.dumps(card, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class ModelCache:
    """Loaded models by (name, card hash), so repeated runs do not reload weights.

    A model file that is replaced (e.g. a fine-tuned user model saved again) gets a new
    card hash and is loaded afresh. ``lock_for(model)`` serialises runs of one model
    object across threads (its network is moved between devices while it runs).
    """

    def __init__(self, maxsize: int = 4) -> None:
        self.maxsize = maxsize
        self._models: OrderedDict[tuple[str, str], DenoiseModel] = OrderedDict()
        self._locks: dict[int, threading.Lock] = {}
        self._lock = threading.Lock()
        self.loads = 0  # how many times weights were read from disk (tests check this)

    def get(self, model: str | DenoiseModel) -> DenoiseModel:
        """A registered model by name (cached), a model file by path, or ``model`` itself."""
        if isinstance(model, DenoiseModel):
            return model
        try:
            entry = find_model(str(model))
        except ValueError:
            if any(sep in str(model) for sep in "/\\") or str(model).endswith(
                (".json", ".safetensors", ".zip")
            ):
                self.loads += 1
                return load_model(model)
            raise
        key = (entry.name, card_key(entry.card))
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        loaded = load_model(entry.path)
        with self._lock:
            self.loads += 1
            self._models[key] = loaded
            while len(self._models) > self.maxsize:
                self._models.popitem(last=False)
        return loaded

    def lock_for(self, model: DenoiseModel) -> threading.Lock:
        """The lock that serialises runs of ``model``."""
        with self._lock:
            return self._locks.setdefault(id(model), threading.Lock())

    def clear(self) -> None:
        """Forget every loaded model."""
        with self._lock:
            self._models.clear()
            self._locks.clear()


#: Cache used by the console API and the one-click action.
SHARED_CACHE = ModelCache()


def find_entry(name: str) -> ModelEntry | None:
    """The registry entry called ``name``, or None."""
    return next((e for e in model_entries() if e.name == name), None)


# --------------------------------------------------------------------------- jobs


@dataclass
class LayerJob:
    """What to denoise from one Image layer, captured in the main thread.

    ``index`` selects the data (all of it, or the current YX plane with the leading axes
    kept as length-1 axes); ``layer_kwargs`` are the input's placement and display
    settings for the output layer, its translate already shifted for a slice.
    """

    name: str
    source: Any  # the layer's data array (numpy, dask, zarr, ...)
    index: tuple[slice, ...]
    rgb: bool
    channels: int
    slice_at: tuple[int, ...] | None
    layer_kwargs: dict[str, Any]
    shape: tuple[int, ...]
    ome_source: str | None = None  # the OME-Zarr image the layer was read from, if any

    def read(self) -> np.ndarray:
        """Load the selected data as a numpy array (call from the worker thread)."""
        return np.asarray(self.source[self.index])


def current_slice_index(layer: Image, world_point: Sequence[float]) -> tuple[int, ...]:
    """Data indices of ``layer``'s leading (non-YX) axes at the viewer position ``world_point``.

    Rounded like napari's own slicing. Raises ``ValueError`` if the position lies outside
    the layer on one of those axes (napari then shows nothing of the layer).
    """
    n_lead = layer.ndim - 2
    if n_lead <= 0:
        return ()
    coords = layer.world_to_data(np.asarray(world_point, dtype=float))
    shape = np.shape(layer.data)
    index = []
    for axis in range(n_lead):
        k = int(np.round(coords[axis]))
        if not 0 <= k < shape[axis]:
            raise ValueError(
                f"The viewer's current position is outside layer {layer.name!r} on its axis "
                f"{axis} (plane {k} of {shape[axis]}): move the slider onto the layer or "
                "untick 'current slice only'."
            )
        index.append(k)
    return tuple(index)


def _shifted_translate(layer: Image, slice_at: tuple[int, ...]) -> np.ndarray:
    """The translate that puts data index 0 of a slice where index ``slice_at`` was."""
    ndim = layer.ndim
    offset = np.zeros(ndim)
    offset[: len(slice_at)] = slice_at
    transform = Affine(
        scale=layer.scale, translate=layer.translate, rotate=layer.rotate, shear=layer.shear
    )
    return np.asarray(layer.translate) + transform(offset) - transform(np.zeros(ndim))


def display_kwargs(layer: Image) -> dict[str, Any]:
    """The input's placement (scale, translate, rotate, shear, affine, units, axis labels)
    and display settings (contrast limits, colormap, gamma, ...) for an output layer."""
    kwargs: dict[str, Any] = {
        "scale": tuple(layer.scale),
        "translate": tuple(layer.translate),
        "rotate": np.asarray(layer.rotate),
        "shear": np.asarray(layer.shear),
        "affine": layer.affine,
        "contrast_limits": tuple(layer.contrast_limits),
        "colormap": layer.colormap,
        "gamma": layer.gamma,
        "blending": layer.blending,
        "opacity": layer.opacity,
        "rgb": layer.rgb,
    }
    for attr in ("units", "axis_labels"):
        if hasattr(layer, attr):
            kwargs[attr] = getattr(layer, attr)
    return kwargs


def prepare_job(
    layer: Image, *, current_slice: bool = False, world_point: Sequence[float] | None = None
) -> LayerJob:
    """Capture what to denoise from ``layer``; with ``current_slice`` only the YX plane at
    ``world_point`` (the viewer's ``dims.point``), placed where it was in the stack."""
    if not is_image_layer(layer):
        raise ValueError(
            f"Layer {getattr(layer, 'name', layer)!r} is not an image layer; choose an Image."
        )
    if layer.multiscale:
        raise ValueError(
            f"Layer {layer.name!r} is multiscale (a pyramid); denoising pyramids is not "
            "supported. Open its full-resolution level as a plain image layer instead."
        )
    shape = tuple(np.shape(layer.data))
    rgb = bool(layer.rgb)
    kwargs = display_kwargs(layer)
    slice_at: tuple[int, ...] | None = None
    index: tuple[slice, ...] = (slice(None),) * len(shape)
    if current_slice and layer.ndim > 2:
        if world_point is None:
            raise ValueError("'current slice only' needs the viewer's position (world_point).")
        slice_at = current_slice_index(layer, world_point)
        index = tuple(slice(k, k + 1) for k in slice_at) + (slice(None),) * (
            len(shape) - len(slice_at)
        )
        kwargs["translate"] = tuple(_shifted_translate(layer, slice_at))
    return LayerJob(
        name=layer.name,
        source=layer.data,
        index=index,
        rgb=rgb,
        channels=3 if rgb else 1,
        slice_at=slice_at,
        layer_kwargs=kwargs,
        shape=shape,
        ome_source=_ome_source(layer, shape),
    )


def _ome_source(layer: Image, shape: tuple[int, ...]) -> str | None:
    """The path of the OME-Zarr image a lazily loaded layer was read from (its level 0 has
    the layer's shape), or None."""
    path = getattr(getattr(layer, "source", None), "path", None)
    if not path or not is_lazy_data(layer.data):
        return None
    try:
        from ..inference.lazy import _multiscales, is_zarr_path, open_zarr

        if not is_zarr_path(path) or not Path(path).is_dir():
            return None
        node = open_zarr(path)
        ms, _ = _multiscales(dict(getattr(node, "attrs", {})))
        if not ms or tuple(node[ms[0]["datasets"][0]["path"]].shape) != shape:
            return None
        return str(path)
    except Exception:  # noqa: BLE001 - not an OME-Zarr image we can copy metadata from
        return None


def check_fits(model_channels: int, job: LayerJob, model_name: str) -> None:
    """ValueError with a clear message when the model's channels do not fit the layer."""
    if model_channels == job.channels:
        return
    if job.channels == 3:
        raise ValueError(
            f"Layer {job.name!r} is RGB but model {model_name!r} is a gray (single-channel) "
            "model; choose an RGB model (e.g. a 'cells' model)."
        )
    raise ValueError(
        f"Model {model_name!r} expects RGB images but layer {job.name!r} is single-channel; "
        "choose a gray model (e.g. a 'fluo' or 'gray' model)."
    )


# --------------------------------------------------------------------------- running


class _AnySet:
    """Cancellation flag that is set when any of several flags is."""

    def __init__(self, *flags: Any) -> None:
        self.flags = [f for f in flags if f is not None]

    def is_set(self) -> bool:
        return any(f.is_set() for f in self.flags)


def iter_denoise(
    array: np.ndarray,
    model: DenoiseModel,
    *,
    cancel: Any | None = None,
    lock: threading.Lock | None = None,
    function: Callable[..., Any] = denoise,
    **options: Any,
) -> Generator[tuple[int, int], None, np.ndarray]:
    """Run the core ``denoise`` and yield its ``(done, total)`` tile progress as it goes.

    The computation runs in a helper thread so that progress can be yielded while a plane
    is being processed; the generator returns the denoised array (``yield from`` gives it)
    and re-raises whatever ``denoise`` raised. Closing the generator early cancels the run.
    ``function`` replaces ``denoise`` by another function with its progress and cancel
    arguments (``denoise_lazy``).
    """
    updates: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            with lock if lock is not None else nullcontext():
                outcome["result"] = function(
                    array,
                    model,
                    progress=lambda done, total: updates.put((done, total)),
                    cancel=_AnySet(cancel, stop),
                    **options,
                )
        except BaseException as exc:  # re-raised in the generator's thread
            outcome["error"] = exc
        finally:
            updates.put(None)

    thread = threading.Thread(target=work, name="napari-wgan-denoise", daemon=True)
    thread.start()
    try:
        finished = False
        while not finished:
            item = updates.get()
            if item is None:
                break
            while True:  # skip to the newest update
                try:
                    newer = updates.get_nowait()
                except queue.Empty:
                    break
                if newer is None:
                    finished = True
                    break
                item = newer
            yield item
    finally:
        stop.set()
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _scaled(
    gen: Generator[tuple[int, int], None, np.ndarray], start: float, span: float, message: str
) -> Generator[Step, None, np.ndarray]:
    """Map ``(done, total)`` progress onto ``[start, start + span]`` with a message."""
    while True:
        try:
            done, total = next(gen)
        except StopIteration as stop:
            return stop.value
        yield start + span * (done / total if total else 1.0), message


@dataclass
class DenoiseResult:
    """A finished run on one layer, ready to become an Image layer in the main thread."""

    job: LayerJob
    model_name: str
    card_hash: str
    data: np.ndarray
    settings: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def layer_name(self) -> str:
        """``"<input> [<model>]"``, plus the plane for a current-slice preview."""
        name = f"{self.job.name} [{self.model_name}]"
        if self.job.slice_at is not None:
            name += f" (slice {', '.join(str(k) for k in self.job.slice_at)})"
        return name

    def metadata(self, input_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """The input's metadata plus a record of the model, its card hash and the settings."""
        meta = dict(input_metadata or {})
        meta[METADATA_KEY] = {
            "model": self.model_name,
            "card_hash": self.card_hash,
            "source_layer": self.job.name,
            "settings": dict(self.settings),
            "package_version": __version__,
            **self.extra,
        }
        return meta

    def to_layer(self, input_metadata: dict[str, Any] | None = None) -> Image:
        """The output as a napari Image layer placed and displayed like the input."""
        return Image(
            self.data,
            name=self.layer_name,
            metadata=self.metadata(input_metadata),
            **self.job.layer_kwargs,
        )


def _settings(job: LayerJob, device: str, tile_size: int | None, batch_size: int | None) -> dict:
    return {
        "device": str(device),
        "device_used": str(resolve_device(device)),
        "tile_size": int(tile_size) if tile_size else None,
        "batch_size": int(batch_size) if batch_size else None,
        "current_slice": job.slice_at is not None,
        "slice": list(job.slice_at) if job.slice_at is not None else None,
    }


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
) -> Generator[Step, None, np.ndarray]:
    """Denoise ``data`` (RGBA: the RGB part, alpha kept) and yield scaled progress."""
    alpha = None
    if job.rgb and data.shape[-1] == 4:
        data, alpha = data[..., :3], data[..., 3:]
    out = yield from _scaled(
        iter_denoise(data, model, cancel=cancel, lock=cache.lock_for(model), **options),
        start,
        span,
        message,
    )
    if alpha is not None:
        out = np.concatenate([out, alpha], axis=-1)
    return out


def is_lazy_data(data: Any) -> bool:
    """True for a dask array or a zarr array (data that napari loads lazily)."""
    da = sys.modules.get("dask.array")
    if da is not None and isinstance(data, da.Array):
        return True
    mod = type(data).__module__
    return mod.startswith("zarr") and hasattr(data, "chunks") and hasattr(data, "shape")


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
    job: LayerJob,
    model: DenoiseModel,
    name: str,
    cache: ModelCache,
    *,
    cancel: Any,
    options: dict[str, Any],
) -> Generator[Step, None, tuple[Any, Path]]:
    """Denoise a lazy layer chunk by chunk into a new store in the output cache folder;
    returns the output as a dask array backed by the store, and the store's path."""
    from ..inference.lazy import _remove, denoise_lazy

    store = output_store_path(job.name, name, ome=job.ome_source is not None)
    out = yield from _scaled(
        iter_denoise(
            job.source,
            model,
            cancel=cancel,
            lock=cache.lock_for(model),
            function=denoise_lazy,
            out=store,
            like=job.ome_source,
            **options,
        ),
        0.0,
        1.0,
        f"Denoising {job.name} with {name} (chunk by chunk)",
    )
    if cancel is not None and cancel.is_set():
        _remove(store)
    return out, store


def run_denoise(
    job: LayerJob,
    model: str | DenoiseModel,
    *,
    cache: ModelCache = SHARED_CACHE,
    device: str = "auto",
    tile_size: int | None = None,
    batch_size: int | None = None,
    cancel: Any | None = None,
) -> Generator[Step, None, DenoiseResult]:
    """Load ``model`` (cached), denoise the job's data and yield ``(fraction, message)``.

    Meant to run in a worker thread; returns a :class:`DenoiseResult`.
    """
    name = model.name if isinstance(model, DenoiseModel) else str(model)
    yield 0.0, f"Loading {name}"
    dmodel = cache.get(model)
    if find_entry(name) is None:  # a model object or a file path: use the card's name
        name = dmodel.name
    check_fits(dmodel.channels, job, name)
    options = {"device": device, "tile_size": tile_size, "batch_size": batch_size}
    extra: dict[str, Any] = {}
    if _runs_lazily(job):
        out, store = yield from _denoise_lazily(
            job, dmodel, name, cache, cancel=cancel, options=options
        )
        extra["store"] = str(store)
        if cancel is not None and cancel.is_set():
            raise Cancelled("Denoising was cancelled; no layer was added.")
        yield 1.0, "Done"
        return DenoiseResult(
            job=job,
            model_name=name,
            card_hash=dmodel.card_hash,
            data=out,
            settings=_settings(job, device, tile_size, batch_size),
            extra=extra,
        )
    data = job.read()
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
    yield 1.0, "Done"
    return DenoiseResult(
        job=job,
        model_name=name,
        card_hash=dmodel.card_hash,
        data=out,
        settings=_settings(job, device, tile_size, batch_size),
    )


# --------------------------------------------------------------------------- compare


def difference(mse: np.ndarray, wgan: np.ndarray, rgb: bool) -> np.ndarray:
    """``|MSE - WGAN|`` as float32; for RGB(A) the mean over the three colours (gray map)."""
    diff = np.abs(mse.astype(np.float32) - wgan.astype(np.float32))
    if rgb:
        diff = diff[..., :3].mean(axis=-1)
    return diff


def _planes(a: np.ndarray, rgb: bool) -> Iterator[np.ndarray]:
    tail = 3 if rgb else 2
    a = a[..., :3] if rgb else a
    yield from a.reshape((-1, *a.shape[a.ndim - tail :]))


def quality_metrics(reference: np.ndarray, estimate: np.ndarray, rgb: bool) -> dict[str, float]:
    """PSNR (whole array), SSIM (mean over YX planes) and gradient ratio (mean Sobel
    magnitude of the estimate over that of the reference, over all planes) of one output.

    The peak is 255 for uint8 references and the reference's range otherwise.
    """
    from ..metrics import gradient_magnitude, psnr, ssim

    ref = np.asarray(reference)
    if rgb:
        ref, estimate = ref[..., :3], estimate[..., :3]
    peak = 255.0 if ref.dtype == np.uint8 else float(np.ptp(ref.astype(np.float64))) or 1.0
    ssims, g_ref, g_est = [], [], []
    for r, e in zip(_planes(ref, rgb), _planes(estimate, rgb)):
        ssims.append(ssim(r, e, peak=peak))
        g_ref.append(gradient_magnitude(r))
        g_est.append(gradient_magnitude(e))
    g = float(np.mean(g_ref))
    return {
        "psnr": psnr(ref, estimate, peak=peak),
        "ssim": float(np.mean(ssims)),
        "grad_ratio": float(np.mean(g_est)) / g if g > 0 else float("nan"),
    }


@dataclass
class ReferenceJob:
    """The clean reference layer's data selected to match a :class:`LayerJob`."""

    name: str
    source: Any
    index: tuple[slice, ...]

    def read(self, shape: tuple[int, ...]) -> np.ndarray:
        """Load the reference and bring it to ``shape`` (the output's)."""
        ref = np.asarray(self.source[self.index])
        if ref.shape != shape:
            ref = ref.reshape(shape)
        return ref


def prepare_reference(reference: Image, job: LayerJob) -> ReferenceJob:
    """Select the part of ``reference`` that matches the job, or raise a clear ValueError."""
    if not is_image_layer(reference):
        raise ValueError(f"Reference {reference!r} is not an image layer.")
    shape = tuple(np.shape(reference.data))
    if shape == job.shape:
        return ReferenceJob(reference.name, reference.data, job.index)
    out_shape = tuple(len(range(*s.indices(n))) for s, n in zip(job.index, job.shape))
    if [n for n in shape if n != 1] == [n for n in out_shape if n != 1]:
        # e.g. a 2D clean image for the current plane of a stack: reshaped when read
        return ReferenceJob(reference.name, reference.data, (slice(None),) * len(shape))
    raise ValueError(
        f"Reference layer {reference.name!r} has shape {shape} but layer {job.name!r} has "
        f"shape {job.shape}; choose the clean version of the same image as reference."
    )


#: Readout key of the ideal residual (noisy − reference) when a reference is given.
IDEAL = "ideal"


@dataclass
class CompareResult:
    """Both outputs of a family, their difference and (with a reference) the metrics."""

    family: str
    mse: DenoiseResult
    wgan: DenoiseResult
    difference: np.ndarray
    metrics: dict[str, dict[str, float]] | None
    reference_name: str | None
    #: Hallucination readout per model, no reference needed (see ``residual.stack_readout``).
    readout: dict[str, dict[str, float]] | None = None
    #: Method noise (input − output) per model, when asked for (``method_noise=True``).
    method_noise: dict[str, np.ndarray] | None = None

    def method_noise_layers(self) -> list[Image]:
        """One signed gray layer of the method noise per model, placed like the input."""
        kwargs = {
            k: v
            for k, v in self.mse.job.layer_kwargs.items()
            if k not in ("contrast_limits", "colormap", "gamma", "rgb", "blending")
        }
        layers = []
        for name, res in (self.method_noise or {}).items():
            top = float(np.percentile(np.abs(res), 99.5)) if res.size else 1.0
            meta = {
                METADATA_KEY: {
                    "model": name,
                    "source_layer": self.mse.job.name,
                    "what": "method noise: input − output (should look like pure noise)",
                    "readout": dict((self.readout or {}).get(name, {})),
                    "package_version": __version__,
                }
            }
            layers.append(
                Image(
                    res,
                    name=f"{self.mse.job.name} method noise [{name}]",
                    colormap="gray",
                    contrast_limits=(-top, top) if top > 0 else (-1.0, 1.0),
                    rgb=False,
                    metadata=meta,
                    **kwargs,
                )
            )
        return layers

    def difference_layer(self) -> Image:
        """The ``|MSE - WGAN|`` map as a gray-scale layer placed like the input."""
        kwargs = {
            k: v
            for k, v in self.mse.job.layer_kwargs.items()
            if k not in ("contrast_limits", "colormap", "gamma", "rgb", "blending")
        }
        diff = self.difference
        top = float(np.percentile(diff, 99.9)) if diff.size else 1.0
        if not top > 0:
            top = float(diff.max()) or 1.0
        meta = {
            METADATA_KEY: {
                "family": self.family,
                "models": [self.mse.model_name, self.wgan.model_name],
                "card_hashes": [self.mse.card_hash, self.wgan.card_hash],
                "source_layer": self.mse.job.name,
                "settings": dict(self.mse.settings),
                "what": "|MSE - WGAN|: where the adversarial model changed the image most",
                "package_version": __version__,
            }
        }
        name = f"{self.mse.job.name} |MSE − WGAN| [{self.family}]"
        if self.mse.job.slice_at is not None:
            name += f" (slice {', '.join(str(k) for k in self.mse.job.slice_at)})"
        return Image(
            diff,
            name=name,
            colormap="magma",
            contrast_limits=(0.0, top),
            rgb=False,
            metadata=meta,
            **kwargs,
        )


def run_compare(
    job: LayerJob,
    mse_name: str,
    wgan_name: str,
    *,
    family: str,
    reference: ReferenceJob | None = None,
    cache: ModelCache = SHARED_CACHE,
    device: str = "auto",
    tile_size: int | None = None,
    batch_size: int | None = None,
    cancel: Any | None = None,
    method_noise: bool = False,
) -> Generator[Step, None, CompareResult]:
    """Run a family's ID-MSE and ID-MSE-WGAN models on the same data, then the difference,
    the hallucination readout and (with a reference) the metrics; with ``method_noise``
    also each model's input − output map. Yields ``(fraction, message)``."""
    yield 0.0, f"Loading {mse_name} and {wgan_name}"
    models = [cache.get(mse_name), cache.get(wgan_name)]
    for m, n in zip(models, (mse_name, wgan_name)):
        check_fits(m.channels, job, n)
    data = job.read()
    options = {"device": device, "tile_size": tile_size, "batch_size": batch_size}
    settings = _settings(job, device, tile_size, batch_size)
    results = []
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
        results.append(DenoiseResult(job, n, m.card_hash, out, settings, {"family": family}))
    yield 0.9, "Difference and metrics"
    diff = difference(results[0].data, results[1].data, job.rgb)
    metrics = None
    if reference is not None:
        ref = reference.read(results[0].data.shape)
        metrics = {r.model_name: quality_metrics(ref, r.data, job.rgb) for r in results}
        metrics["input"] = quality_metrics(ref, data, job.rgb)
    from ..residual import method_noise_map, stack_readout

    readout = {r.model_name: stack_readout(data, r.data, rgb=job.rgb) for r in results}
    if reference is not None:  # what removing exactly the noise would give: the yardstick
        readout[IDEAL] = stack_readout(data, ref, rgb=job.rgb)
    residuals = (
        {r.model_name: method_noise_map(data, r.data, job.rgb) for r in results}
        if method_noise
        else None
    )
    if cancel is not None and cancel.is_set():
        raise Cancelled("Comparison was cancelled; no layer was added.")
    yield 1.0, "Done"
    return CompareResult(
        family,
        results[0],
        results[1],
        diff,
        metrics,
        reference.name if reference else None,
        readout,
        residuals,
    )


# --------------------------------------------------------------------------- viewer


def add_denoised(viewer: Any, result: DenoiseResult, source: Image | None) -> Image:
    """Add a finished run to ``viewer`` (just above its input) and return the new layer."""
    layer = result.to_layer(source.metadata if source is not None else None)
    viewer.layers.append(layer)
    if source is not None and source in viewer.layers:
        _move_above(viewer, [layer], source)
    return layer


def _move_above(viewer: Any, new: list[Image], anchor: Image) -> None:
    """Put ``new`` layers directly above ``anchor`` in the layer list (neighbours in grid)."""
    for offset, lyr in enumerate(new, start=1):
        src = viewer.layers.index(lyr)
        dest = viewer.layers.index(anchor) + offset
        if dest < src:  # new layers are appended on top, so they only ever move down
            viewer.layers.move(src, dest)


def add_comparison(
    viewer: Any, result: CompareResult, source: Image | None, *, grid: bool = True
) -> tuple[Image, Image, Image]:
    """Add both outputs and the difference above the input, link the contrast limits of
    input and outputs and (``grid``) switch the viewer to grid mode."""
    meta = source.metadata if source is not None else None
    mse, wgan = result.mse.to_layer(meta), result.wgan.to_layer(meta)
    diff = result.difference_layer()
    for lyr in (mse, wgan, diff):
        viewer.layers.append(lyr)
    if source is not None and source in viewer.layers:
        _move_above(viewer, [mse, wgan, diff], source)
        viewer.layers.link_layers([source, mse, wgan], ("contrast_limits",))
    else:
        viewer.layers.link_layers([mse, wgan], ("contrast_limits",))
    if grid:
        grid_of(viewer).enabled = True
    return mse, wgan, diff


def grid_of(viewer: Any) -> Any:
    """The viewer's grid settings: ``viewer.canvas.grid`` since napari 0.9, else ``.grid``."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


def drive(gen: Generator[Step, None, Any], progress: Callable[[float, str], Any] | None) -> Any:
    """Run one of the generators above to the end in this thread; return its result."""
    while True:
        try:
            fraction, message = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(fraction, message)
