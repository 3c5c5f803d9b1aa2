"""The methods ``evaluate`` scores: models (normalised as ``denoise`` would) and the BM3D /
NLM baselines (optional packages, skipped with a note when missing)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .samples import _Sample

NoteFn = Callable[[str], Any]

BASELINES = ("bm3d", "nlm")
_WARMUP_SIZE = 64


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
    model: Any, label: str, device: str, tile_size: int | None, cancel: Any, tta: int = 1
) -> _Method:
    from ..inference import denoise

    def run(sample: _Sample) -> np.ndarray:
        return denoise(
            sample.noisy,
            model,
            tile_size=tile_size,
            device=device,
            cancel=cancel,
            value_range=_model_value_range(model, sample.noisy_dtype),
            tta=tta,
        )

    def warmup(rgb: bool) -> None:
        shape = (_WARMUP_SIZE, _WARMUP_SIZE, 3) if rgb else (_WARMUP_SIZE, _WARMUP_SIZE)
        x = np.random.default_rng(0).random(shape, dtype=np.float32) * 255
        denoise(x, model, tile_size=tile_size, device=device, value_range=(0.0, 255.0), tta=tta)

    if tta > 1:  # a row of its own beside the plain model's
        label = f"{label} (tta {tta})"
    return _Method(label, "model", run, warmup, channels=model.channels)


def _sigma01(sample: _Sample, sigma: float | None, method: _Method, z: np.ndarray) -> float:
    if sigma is not None:
        return sigma / 255.0
    from skimage.restoration import estimate_sigma

    s = float(estimate_sigma(z, channel_axis=-1 if sample.rgb else None, average_sigmas=True))
    method.sigma_est.append(s * 255.0)
    return max(s, 1e-6)


def nlm01(z: np.ndarray, s: float, rgb: bool) -> np.ndarray:
    """The NLM baseline (scikit-image's fast non-local means, h = 0.8 sigma, 5x5 patches, 13x13
    search) of a [0, 1] image ``z`` whose noise sigma is ``s`` on that scale."""
    from skimage.restoration import denoise_nl_means

    return denoise_nl_means(
        z,
        h=0.8 * s,
        sigma=s,
        fast_mode=True,
        patch_size=5,
        patch_distance=6,
        channel_axis=-1 if rgb else None,
    )


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
            import skimage.restoration  # noqa: F401
        except ImportError:  # pragma: no cover - scikit-image is a dependency
            notify("note: baseline 'nlm' skipped: scikit-image is not installed.")
            return None
        denoise01 = nlm01

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
    from ..inference import as_model

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
