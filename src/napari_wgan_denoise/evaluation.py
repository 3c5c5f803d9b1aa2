"""``wgan-denoise evaluate``: score denoisers on a test set, with BM3D / NLM baselines.

The core, :func:`evaluate`, needs neither napari nor Qt. It reads a folder of clean
reference images and either adds seeded Gaussian noise to them (``sigma``) or pairs them
with a folder of real noisy images (``noisy``, matched by file name), runs every model (and
every requested baseline) on exactly the same noisy images and returns one row per method:

``model``
    the model's name (or ``bm3d`` / ``nlm`` / ``noisy``)
``n``
    number of images
``psnr``, ``ssim``
    mean over images of the per-image PSNR (dB) and SSIM (scikit-image). The peak / data
    range is 255 for 8-bit references and the reference image's own range (max - min)
    for any other dtype.
``grad_ratio``
    mean over images of (mean Sobel gradient magnitude of the output) / (that of the clean
    image): 1.0 is as sharp as the truth, below 1 blurrier, above 1 noisier or
    over-sharpened.
``s_per_mp``
    wall seconds of the denoising calls only (no file reading, noise generation or
    metrics) summed over the images, divided by the total megapixels (an RGB pixel counts
    once); each method is warmed up on a small image first. ``None`` for the ``noisy`` row.
``noisy_psnr``
    mean PSNR of the unprocessed noisy input (the same for every row of one run)
``mode``, ``sigma``, ``seed``, ``kind``
    ``"gaussian"`` or ``"paired"``; σ (``None`` in paired mode); the noise seed;
    ``"model"``, ``"baseline"`` or ``"noisy"``
``sigma_est``
    baselines in paired mode only: the mean σ estimated from the noisy images (0-255 scale)

Noise protocol (``sigma``), as in ``shared/data/README.md`` and the seed-000 paper: add
``N(0, σ²)`` on the 0-255 scale in floating point, neither clipped nor rounded. The noise of
image ``i`` (in name order, counting from 0 before ``limit``/``last`` are applied) comes from
``numpy.random.default_rng([seed, i])``, so every method, and every later run with the same
seed, sees the identical noisy image. For references that are not 8-bit, σ is relative to
255 = the reference's range (max - min), so σ = 25 gives an input PSNR of ≈ 20.2 dB
whatever the dtype.

Outputs are scored as floats, neither clipped to the data range nor rounded.

How models see the data: the noisy image is given to :func:`~napari_wgan_denoise.denoise`
as float32 and normalised exactly as ``denoise`` would normalise a file of the reference's
dtype (of the noisy file's dtype in paired mode): a model whose card fixes the scale for
that dtype (the 8-bit Gaussian models: ``0..255``) gets that range as ``value_range`` — the
noisy float values below 0 or above 255 are mapped like the 8-bit training data, not
stretched by percentiles — and a model with percentile normalisation normalises itself.

Baselines (CPU, optional packages, imported lazily and skipped with a note if missing), on
the 0-1 scale (the image divided by 255 for 8-bit references, else shifted by the
reference's minimum and divided by its range) with σ on that scale:

``bm3d``
    the PyPI package ``bm3d`` (``pip install bm3d``): ``bm3d.bm3d(z, sigma_psd=σ)`` for gray
    images and ``bm3d.bm3d_rgb(z, sigma_psd=σ)`` (opponent colour space) for RGB.
``nlm``
    ``skimage.restoration.denoise_nl_means`` with scikit-image's recommended settings for
    a known σ: ``h = 0.8 σ``, ``sigma = σ``, ``fast_mode=True``, ``patch_size=5``,
    ``patch_distance=6``.

In Gaussian mode the baselines are given the true σ; in paired mode σ is estimated from each
noisy image with ``skimage.restoration.estimate_sigma`` (a wavelet estimate that assumes
signal-independent white noise: it underestimates signal-dependent or spatially correlated
microscope noise, so the baselines are handicapped there).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics
from .errors import Cancelled
from .io import files_by_stem, list_images, read_image

ProgressFn = Callable[[int, int], Any]
NoteFn = Callable[[str], Any]

BASELINES = ("bm3d", "nlm")
ROW_KEYS = ("model", "n", "psnr", "ssim", "grad_ratio", "s_per_mp")
_WARMUP_SIZE = 64


# --------------------------------------------------------------------------- data


@dataclass
class _Sample:
    """One test image: the clean reference and the noisy input every method sees."""

    name: str
    clean: np.ndarray  # original dtype, (Y, X) or (Y, X, 3)
    noisy: np.ndarray  # float32, same shape
    noisy_dtype: np.dtype  # dtype a user's noisy file would have (for normalisation)
    peak: float  # PSNR peak / SSIM data range
    offset: float  # subtracted before dividing by ``peak`` for the baselines' 0-1 scale

    @property
    def rgb(self) -> bool:
        return self.clean.ndim == 3

    @property
    def megapixels(self) -> float:
        return self.clean.shape[0] * self.clean.shape[1] / 1e6


def _read(path: Path) -> np.ndarray:
    arr = np.asarray(read_image(path))
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]  # drop alpha
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)):
        raise ValueError(
            f"{path}: evaluate needs 2-D gray (Y, X) or RGB (Y, X, 3) images, got shape "
            f"{arr.shape}."
        )
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise ValueError(f"{path}: cannot evaluate images of dtype {arr.dtype}.")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"{path} contains NaN or infinite values.")
    return arr


def _peak_offset(clean: np.ndarray) -> tuple[float, float]:
    if clean.dtype == np.uint8:
        return 255.0, 0.0
    lo, hi = float(clean.min()), float(clean.max())
    return (hi - lo) or 1.0, lo


def _pair(clean_files: list[Path], noisy_dir: Path) -> list[tuple[Path, Path]]:
    noisy_files = list_images(noisy_dir, "noisy")
    clean_by = files_by_stem(clean_files, "clean")
    noisy_by = files_by_stem(noisy_files, "noisy")
    only_clean = sorted(set(clean_by) - set(noisy_by))
    only_noisy = sorted(set(noisy_by) - set(clean_by))
    if only_clean or only_noisy:
        parts = []
        if only_clean:
            parts.append(f"only in the clean folder: {_names(clean_by, only_clean)}")
        if only_noisy:
            parts.append(f"only in the noisy folder: {_names(noisy_by, only_noisy)}")
        raise ValueError(
            "Paired mode matches clean and noisy images by file name (without suffix), but "
            + "; ".join(parts)
            + "."
        )
    return [(clean_by[s], noisy_by[s]) for s in sorted(clean_by)]


def _names(by: dict[str, Path], stems: list[str], most: int = 20) -> str:
    shown = ", ".join(by[s].name for s in stems[:most])
    return shown + (f" and {len(stems) - most} more" if len(stems) > most else "")


def _select(items: list, limit: int | None, last: int | None) -> list:
    if limit is not None and last is not None:
        raise ValueError("Give either limit (first N images) or last (last N images), not both.")
    for name, value in (("limit", limit), ("last", last)):
        if value is not None and int(value) < 1:
            raise ValueError(f"{name} must be at least 1, got {value}.")
    if limit is not None:
        return items[: int(limit)]
    if last is not None:
        return items[-int(last) :]
    return items


def _samples(
    clean: Path,
    sigma: float | None,
    noisy: Path | None,
    seed: int,
    limit: int | None,
    last: int | None,
):
    """Yield the test images one at a time (so a large folder never sits in memory)."""
    clean_files = list_images(clean, "clean")
    if noisy is None:
        indexed = _select(list(enumerate(clean_files)), limit, last)
        for index, path in indexed:
            ref = _read(path)
            peak, offset = _peak_offset(ref)
            scale = sigma * (1.0 if ref.dtype == np.uint8 else peak / 255.0)
            rng = np.random.default_rng([seed, index])
            noise = rng.standard_normal(ref.shape)
            noisy_img = (ref.astype(np.float64) + scale * noise).astype(np.float32)
            yield _Sample(path.name, ref, noisy_img, ref.dtype, peak, offset)
    else:
        for clean_path, noisy_path in _select(_pair(clean_files, noisy), limit, last):
            ref = _read(clean_path)
            raw = _read(noisy_path)
            if raw.shape != ref.shape:
                raise ValueError(
                    f"{noisy_path.name} has shape {raw.shape} but its clean reference "
                    f"{clean_path.name} has shape {ref.shape}."
                )
            peak, offset = _peak_offset(ref)
            yield _Sample(clean_path.name, ref, raw.astype(np.float32), raw.dtype, peak, offset)


def _count(clean: Path, noisy: Path | None, limit: int | None, last: int | None) -> int:
    files = list_images(clean, "clean")
    n = len(files) if noisy is None else len(_pair(files, noisy))
    return len(_select(list(range(n)), limit, last))


# --------------------------------------------------------------------------- methods


@dataclass
class _Method:
    """A model or baseline with its running totals."""

    label: str
    kind: str  # "model", "baseline" or "noisy"
    run: Callable[[_Sample], np.ndarray] | None
    warmup: Callable[[bool], None] | None = None
    channels: int | None = None  # models only
    source: str = ""
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    grad: list[float] = field(default_factory=list)
    seconds: float = 0.0
    megapixels: float = 0.0
    sigma_est: list[float] = field(default_factory=list)
    per_image: list[dict[str, Any]] = field(default_factory=list)


def _model_value_range(model: Any, dtype: np.dtype) -> tuple[float, float] | None:
    """The range ``denoise`` would use for a file of ``dtype`` with a fixed-scale model."""
    norm = model.normalisation
    if norm.get("mode") != "fixed":
        return None
    dtypes = norm.get("dtypes")
    if dtypes and np.dtype(dtype).name not in dtypes:
        return None
    return float(norm["low"]), float(norm["high"])


def _model_method(
    model: Any, label: str, device: str, tile_size: int | None, cancel: Any
) -> _Method:
    from .inference import denoise

    def run(sample: _Sample) -> np.ndarray:
        return denoise(
            sample.noisy,
            model,
            tile_size=tile_size,
            device=device,
            cancel=cancel,
            value_range=_model_value_range(model, sample.noisy_dtype),
        )

    def warmup(rgb: bool) -> None:
        shape = (_WARMUP_SIZE, _WARMUP_SIZE, 3) if rgb else (_WARMUP_SIZE, _WARMUP_SIZE)
        x = np.random.default_rng(0).random(shape, dtype=np.float32) * 255
        denoise(x, model, tile_size=tile_size, device=device, value_range=(0.0, 255.0))

    return _Method(label, "model", run, warmup, channels=model.channels)


def _sigma01(sample: _Sample, sigma: float | None, method: _Method, z: np.ndarray) -> float:
    if sigma is not None:
        return sigma / 255.0
    from skimage.restoration import estimate_sigma

    s = float(estimate_sigma(z, channel_axis=-1 if sample.rgb else None, average_sigmas=True))
    method.sigma_est.append(s * 255.0)
    return max(s, 1e-6)


def _baseline_method(name: str, sigma: float | None, notify: NoteFn) -> _Method | None:
    if name == "bm3d":
        try:
            import bm3d
        except ImportError:
            notify(
                "note: baseline 'bm3d' skipped: the 'bm3d' package is not installed "
                "(pip install bm3d)."
            )
            return None

        def denoise01(z: np.ndarray, s: float, rgb: bool) -> np.ndarray:
            if rgb:
                if hasattr(bm3d, "bm3d_rgb"):
                    return bm3d.bm3d_rgb(z, s)
                return np.stack([bm3d.bm3d(z[..., c], s) for c in range(3)], axis=-1)
            return bm3d.bm3d(z, s)

    elif name == "nlm":
        try:
            from skimage.restoration import denoise_nl_means
        except ImportError:  # pragma: no cover - scikit-image is a dependency
            notify("note: baseline 'nlm' skipped: scikit-image is not installed.")
            return None

        def denoise01(z: np.ndarray, s: float, rgb: bool) -> np.ndarray:
            return denoise_nl_means(
                z,
                h=0.8 * s,
                sigma=s,
                fast_mode=True,
                patch_size=5,
                patch_distance=6,
                channel_axis=-1 if rgb else None,
            )

    else:
        raise ValueError(f"Unknown baseline {name!r}; choose from {', '.join(BASELINES)}.")

    method = _Method(name, "baseline", None)

    def run(sample: _Sample) -> np.ndarray:
        z = (sample.noisy.astype(np.float64) - sample.offset) / sample.peak
        s = _sigma01(sample, sigma, method, z)
        out = np.asarray(denoise01(z, s, sample.rgb), dtype=np.float64)
        return (out * sample.peak + sample.offset).astype(np.float32)

    def warmup(rgb: bool) -> None:
        rng = np.random.default_rng(0)
        shape = (_WARMUP_SIZE, _WARMUP_SIZE, 3) if rgb else (_WARMUP_SIZE, _WARMUP_SIZE)
        denoise01(rng.random(shape), 0.1, rgb)

    method.run = run
    method.warmup = warmup
    return method


def _load_models(models: Sequence[Any]) -> list[tuple[Any, str]]:
    from .inference import as_model

    loaded = []
    for m in models:
        dm = as_model(m)
        loaded.append((dm, str(m) if isinstance(m, (str, Path)) else dm.name))
    labels = [dm.name for dm, _ in loaded]
    out = []
    for dm, given in loaded:
        # a model's name, unless two share it: then what the user typed (a path)
        out.append((dm, dm.name if labels.count(dm.name) == 1 else given))
    return out


def _check_channels(method: _Method, sample: _Sample, folder: Path) -> None:
    if method.channels is None:
        return
    if method.channels == 3 and not sample.rgb:
        raise ValueError(
            f"Model {method.label!r} is an RGB model but {sample.name} in {folder} is a gray "
            f"image (shape {sample.clean.shape}); evaluate it on RGB images or choose a gray "
            "model."
        )
    if method.channels == 1 and sample.rgb:
        raise ValueError(
            f"Model {method.label!r} is a gray (single-channel) model but {sample.name} in "
            f"{folder} is an RGB image (shape {sample.clean.shape}); evaluate it on gray "
            "images or choose an RGB model."
        )


# --------------------------------------------------------------------------- core


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def evaluate(
    models: Sequence[Any] = (),
    *,
    clean: str | Path,
    sigma: float | None = None,
    noisy: str | Path | None = None,
    seed: int = 0,
    baselines: Sequence[str] = (),
    device: str = "auto",
    tile_size: int | None = None,
    progress: ProgressFn | None = None,
    limit: int | None = None,
    last: int | None = None,
    include_noisy: bool = False,
    per_image: bool = False,
    cancel: Any | None = None,
    notify: NoteFn | None = None,
) -> list[dict[str, Any]]:
    """Score denoisers on the clean images in ``clean`` and return one dict per method.

    Give exactly one of ``sigma`` (synthetic Gaussian noise, seeded by ``seed`` and the
    image's index) or ``noisy`` (a folder of real noisy images matched to ``clean`` by file
    name without suffix). ``models`` are registered names, file paths or
    :class:`~napari_wgan_denoise.DenoiseModel` objects; ``baselines`` names from
    ``("bm3d", "nlm")`` (a baseline whose package is missing is skipped with a note).
    ``limit`` keeps the first N images by name, ``last`` the last N. ``include_noisy`` adds a
    row ``"noisy"`` scoring the unprocessed input; ``per_image`` adds an ``"images"`` list
    with each image's scores. ``progress(done, total)`` counts (image, method) steps;
    ``cancel.is_set()`` stops the run with :class:`~napari_wgan_denoise.errors.Cancelled`;
    ``notify(message)`` receives notes (default: printed to stderr).

    See the module docstring for the rows' keys, the noise protocol, the metrics' peak and
    the baselines' settings.
    """
    if notify is None:

        def notify(msg: str) -> None:
            print(msg, file=sys.stderr)

    if (sigma is None) == (noisy is None):
        raise ValueError(
            "Give either a noise level sigma (synthetic Gaussian noise on the 0-255 scale) or a "
            "folder of noisy images (paired mode), not both and not neither."
        )
    if sigma is not None:
        sigma = float(sigma)
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a positive number (0-255 scale), got {sigma}.")
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}.")
    baselines = list(dict.fromkeys(baselines))
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"Unknown baseline(s) {unknown}; choose from {', '.join(BASELINES)}.")
    if not models and not baselines and not include_noisy:
        raise ValueError("Nothing to evaluate: give at least one model or baseline.")
    clean = Path(clean)
    noisy = Path(noisy) if noisy is not None else None
    mode = "gaussian" if noisy is None else "paired"
    total_images = _count(clean, noisy, limit, last)  # validates folders and pairing early

    methods: list[_Method] = []
    for dm, label in _load_models(list(models)):
        methods.append(_model_method(dm, label, device, tile_size, cancel))
    for name in baselines:
        m = _baseline_method(name, sigma, notify)
        if m is not None:
            methods.append(m)
    if mode == "paired" and any(m.kind == "baseline" for m in methods):
        notify(
            "note: paired mode: the baselines get σ estimated from each noisy image "
            "(skimage.restoration.estimate_sigma), which assumes white signal-independent noise."
        )
    noisy_row = _Method("noisy", "noisy", None) if include_noisy else None

    total_steps = total_images * max(1, len(methods))
    done = 0
    if progress is not None:
        progress(0, total_steps)
    noisy_psnr: list[float] = []
    n = 0
    warmed = False
    for sample in _samples(clean, sigma, noisy, seed, limit, last):
        for method in methods:
            _check_channels(method, sample, clean)
        if not warmed:
            for method in methods:
                if method.warmup is not None:
                    method.warmup(sample.rgb)
            warmed = True
        n += 1
        noisy_psnr.append(metrics.psnr(sample.clean, sample.noisy, peak=sample.peak))
        scored = [(noisy_row, sample.noisy, 0.0)] if noisy_row is not None else []
        for method in methods:
            if cancel is not None and cancel.is_set():
                raise Cancelled("Evaluation cancelled.")
            assert method.run is not None
            start = time.perf_counter()
            out = method.run(sample)
            seconds = time.perf_counter() - start
            scored.append((method, out, seconds))
            done += 1
            if progress is not None:
                progress(done, total_steps)
        for method, out, seconds in scored:
            p = metrics.psnr(sample.clean, out, peak=sample.peak)
            s = metrics.ssim(sample.clean, out, peak=sample.peak)
            g = metrics.grad_ratio(sample.clean, out)
            method.psnr.append(p)
            method.ssim.append(s)
            method.grad.append(g)
            method.seconds += seconds
            method.megapixels += sample.megapixels
            if per_image:
                method.per_image.append(
                    {"name": sample.name, "psnr": p, "ssim": s, "grad_ratio": g, "seconds": seconds}
                )

    rows = []
    for method in ([noisy_row] if noisy_row is not None else []) + methods:
        row: dict[str, Any] = {
            "model": method.label,
            "n": n,
            "psnr": _mean(method.psnr),
            "ssim": _mean(method.ssim),
            "grad_ratio": _mean(method.grad),
            "s_per_mp": (
                None
                if method.kind == "noisy"
                else method.seconds / method.megapixels
                if method.megapixels
                else float("nan")
            ),
            "noisy_psnr": _mean(noisy_psnr),
            "mode": mode,
            "sigma": sigma,
            "seed": seed if mode == "gaussian" else None,
            "kind": method.kind,
        }
        if method.sigma_est:
            row["sigma_est"] = _mean(method.sigma_est)
        if per_image:
            row["images"] = method.per_image
        rows.append(row)
    return rows
