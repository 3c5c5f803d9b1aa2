"""How noisy is an image, and is that what a model was trained for?

A robust wavelet estimate: the finest diagonal Haar detail of each 2 x 2 block holds
mostly noise, with standard deviation sigma for Gaussian noise of that sigma; its median
absolute value / 0.6745 (the MAD) estimates sigma while ignoring edges (Donoho's
estimator). For signal-dependent (Poisson-Gaussian) noise the blocks are binned by their
mean intensity and ``variance = gain * intensity + read**2`` is fitted to the binned
MAD variances, so dark background does not hide the noise of the bright structures.

Everything is measured on the scale the model sees (its card's normalisation), and
compared with the card's noise model (``noise``: Gaussian sigma range, Poisson-Gaussian
peak and read ranges, or a mixture of them). numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .inference.normalise import intensity_range, to_network

__all__ = [
    "NoiseEstimate",
    "estimate_noise",
    "noise_warning",
    "trained_sigma_range",
]

#: MAD of a standard normal variable.
_MAD = 0.6745
#: How far outside the trained range an estimate must be before it is reported.
TOLERANCE = 1.5
#: At most this many pixels per plane (a centred crop) and planes are looked at.
_CROP = 512
_PLANES = 3


@dataclass(frozen=True)
class NoiseEstimate:
    """Noise fitted as ``variance = gain * intensity + offset`` on the model's scale
    (``gain`` 0 for Gaussian noise); ``mean`` is the image's mean intensity there."""

    gain: float
    offset: float
    mean: float

    def sigma(self, intensity: float | None = None) -> float:
        """Noise standard deviation at ``intensity`` (default: the image's mean)."""
        x = self.mean if intensity is None else intensity
        return math.sqrt(max(self.gain * max(x, 0.0) + self.offset, 0.0))


def _blocks(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and diagonal Haar detail of each 2 x 2 block of a 2-D plane (both flattened)."""
    h, w = (plane.shape[0] // 2) * 2, (plane.shape[1] // 2) * 2
    p = plane[:h, :w].astype(np.float64)
    a, b, c, d = p[0::2, 0::2], p[0::2, 1::2], p[1::2, 0::2], p[1::2, 1::2]
    return ((a + b + c + d) / 4).ravel(), ((a - b - c + d) / 2).ravel()


def estimate_noise(planes: list[np.ndarray], bins: int = 12) -> NoiseEstimate:
    """Fit ``variance = gain * intensity + offset`` to 2-D float ``planes`` (on one scale)
    from the MAD of their finest diagonal Haar details, binned by block intensity."""
    means, details = zip(*(_blocks(p) for p in planes))
    mean, detail = np.concatenate(means), np.concatenate(details)
    keep = np.isfinite(mean) & np.isfinite(detail)
    mean, detail = mean[keep], detail[keep]
    if detail.size < 16:
        raise ValueError("The image is too small to estimate its noise (needs 8 x 8 pixels).")
    overall = (np.median(np.abs(detail)) / _MAD) ** 2
    edges = np.unique(np.quantile(mean, np.linspace(0, 1, bins + 1)))
    xs, vs, ns = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (mean >= lo) & (mean <= hi)
        if inside.sum() >= 32:
            xs.append(float(np.median(mean[inside])))
            vs.append(float((np.median(np.abs(detail[inside])) / _MAD) ** 2))
            ns.append(float(inside.sum()))
    gain, offset = 0.0, float(overall)
    if len(xs) >= 3 and np.ptp(xs) > 0:
        slope, intercept = np.polyfit(xs, vs, 1, w=np.sqrt(ns))
        if slope > 0:
            gain, offset = float(slope), float(max(intercept, 0.0))
        else:  # no signal dependence: Gaussian noise
            offset = float(np.average(vs, weights=ns))
    return NoiseEstimate(gain, offset, float(np.mean(np.clip(mean, 0.0, 1.0))))


def _components(noise: dict[str, Any]) -> list[dict[str, Any]]:
    return list(noise.get("components") or [noise])


def _scale(component: dict[str, Any]) -> float:
    """The card's noise scale as a divisor to the model's 0-1 scale ("0-255": 255)."""
    text = str(component.get("scale", "0-1"))
    try:
        return float(text.split("-")[-1]) or 1.0
    except ValueError:
        return 1.0


def trained_sigma_range(noise: dict[str, Any], intensity: float) -> tuple[float, float] | None:
    """The noise standard deviations (model scale) a card's noise model trained on at
    ``intensity``: the union over its synthetic components; None when it says nothing
    measurable (only real noise, or an unknown model)."""
    lows, highs = [], []
    for comp in _components(noise):
        kind, scale = comp.get("type"), _scale(comp)
        if kind == "gaussian" and "sigma" in comp:
            lo, hi = comp["sigma"]
            lows.append(lo / scale)
            highs.append(hi / scale)
        elif kind == "poisson-gaussian" and "peak" in comp:
            p_lo, p_hi = comp["peak"]
            r_lo, r_hi = comp.get("read", (0.0, 0.0))
            x = max(intensity, 1e-6)
            lows.append(math.sqrt(x / p_hi + (r_lo / scale) ** 2))
            highs.append(math.sqrt(x / p_lo + (r_hi / scale) ** 2))
        elif "gaussian_sigma" in comp:  # a restore model's degradation
            lo, hi = comp["gaussian_sigma"]
            gain = comp.get("poisson_gain", (0.0, 0.0))
            lows.append(math.sqrt((lo / scale) ** 2 + gain[0] * intensity))
            highs.append(math.sqrt((hi / scale) ** 2 + gain[1] * intensity))
    if not lows:
        return None
    return min(lows), max(highs)


def _sample_planes(data: Any, rgb: bool) -> list[np.ndarray]:
    """A few 2-D planes (RGB: each colour) of ``data``, centre-cropped to ``_CROP``."""
    arr = np.asarray(data) if not hasattr(data, "shape") else data
    n_lead = arr.ndim - (3 if rgb else 2)
    lead = arr.shape[:n_lead]
    count = math.prod(lead) if lead else 1
    picks = np.unique(np.linspace(0, count - 1, min(count, _PLANES)).round().astype(int))
    planes = []
    for k in picks:
        index = np.unravel_index(int(k), lead) if lead else ()
        h, w = arr.shape[n_lead], arr.shape[n_lead + 1]
        y0, x0 = max((h - _CROP) // 2, 0), max((w - _CROP) // 2, 0)
        plane = np.asarray(arr[tuple(index) + (slice(y0, y0 + _CROP), slice(x0, x0 + _CROP))])
        planes.extend([plane[..., c] for c in range(min(plane.shape[-1], 3))] if rgb else [plane])
    return planes


def noise_warning(data: Any, card: dict[str, Any], *, rgb: bool = False) -> str | None:
    """Why a model may not suit ``data`` (an image laid out YX last, RGB: colours last):
    a sentence when its estimated noise is far outside the card's noise model
    (``TOLERANCE`` times beyond the trained range), else None (also when the card's noise
    model cannot be compared)."""
    noise = card.get("noise") or {}
    normalisation = card.get("normalisation") or {"mode": "percentile"}
    planes = []
    for plane in _sample_planes(data, rgb):
        lo, hi = intensity_range(plane, normalisation)
        planes.append(to_network(plane, lo, hi))
    try:
        estimate = estimate_noise(planes)
    except ValueError:
        return None
    trained = trained_sigma_range(noise, estimate.mean)
    if trained is None:
        return None
    sigma, (low, high) = estimate.sigma(), trained
    name = card.get("name", "the model")
    where = f"(on the model's 0-1 scale, at the image's mean intensity {estimate.mean:.2f})"
    if sigma > TOLERANCE * high:
        return (
            f"This image looks noisier than {name} was trained for: noise σ ≈ {sigma:.3g} "
            f"vs at most {high:.3g} in training {where}; expect residual noise or artefacts."
        )
    if low > 0 and sigma < low / TOLERANCE:
        return (
            f"This image looks less noisy than {name} was trained for: noise σ ≈ {sigma:.3g} "
            f"vs at least {low:.3g} in training {where}; the model may smooth away detail "
            "and lower the quality (compare with the input)."
        )
    return None
