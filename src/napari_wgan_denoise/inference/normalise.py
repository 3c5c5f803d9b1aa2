"""Mapping image intensities to the network's scale and back."""

from __future__ import annotations

from typing import Any

import numpy as np

_SUBSAMPLE_ABOVE = 1 << 22  # estimate percentiles on a strided subset of larger planes
# Intensities (or a range) beyond this would overflow float32 arithmetic (max ~3.4e38):
# such planes are mapped in float64 instead.
_FLOAT32_SAFE = 1e30


def _wide(lo: float, hi: float) -> bool:
    """Whether ``lo``/``hi`` (or their difference) are too large for float32 arithmetic."""
    return not max(abs(lo), abs(hi), hi - lo) < _FLOAT32_SAFE


def intensity_range(
    plane: np.ndarray, normalisation: dict[str, Any], value_range: tuple[float, float] | None = None
) -> tuple[float, float]:
    """The ``(low, high)`` input intensities that the network sees as 0 and 1 for one plane.

    ``value_range`` wins when given. A ``fixed`` normalisation (``low``/``high`` in the
    card) applies when the input's dtype is one the card lists under ``dtypes`` (or always
    when it lists none), e.g. models trained on 8-bit images with noise on the 0-255 scale.
    Otherwise the ``low``/``high`` percentiles of the plane are used (defaults 0.1 / 99.9).
    A flat plane gets a unit-width range so it passes through unchanged.
    """
    if value_range is not None:
        lo, hi = float(value_range[0]), float(value_range[1])
        if not np.isfinite([lo, hi]).all() or hi <= lo:
            raise ValueError(
                f"value_range must be two finite numbers low < high, got {value_range}."
            )
        return lo, hi
    mode = normalisation.get("mode", "percentile")
    if mode == "fixed":
        dtypes = normalisation.get("dtypes")
        if not dtypes or plane.dtype.name in dtypes:
            lo, hi = float(normalisation["low"]), float(normalisation["high"])
            if not (np.isfinite([lo, hi]).all() and hi > lo):
                raise ValueError(
                    f"The model's fixed normalisation needs finite low < high, got {lo}, {hi}."
                )
            return lo, hi
        p_lo, p_hi = 0.1, 99.9
    elif mode == "percentile":
        p_lo, p_hi = float(normalisation.get("low", 0.1)), float(normalisation.get("high", 99.9))
    else:
        raise ValueError(f"Unknown normalisation mode {mode!r} in the model card.")
    flat = plane.reshape(-1)
    if flat.size > _SUBSAMPLE_ABOVE:
        flat = flat[:: flat.size // _SUBSAMPLE_ABOVE + 1]
    lo, hi = (float(v) for v in np.percentile(flat, [p_lo, p_hi]))
    if not hi > lo:
        lo, hi = float(flat.min()), float(flat.max())
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def to_network(plane: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Scale a plane to float32 with ``lo -> 0`` and ``hi -> 1`` (in float64 when the
    intensities are too large for float32, e.g. float64 data around 1e40)."""
    if _wide(lo, hi):
        wide = plane.astype(np.float64, copy=True)  # halves: hi - lo may exceed float64
        wide *= 0.5
        wide -= lo / 2
        wide /= hi / 2 - lo / 2
        return wide.astype(np.float32)
    out = plane.astype(np.float32, copy=True)
    out -= np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    return out


def from_network(values: np.ndarray, lo: float, hi: float, dtype: np.dtype) -> np.ndarray:
    """Undo ``to_network`` and cast to ``dtype``: integers are rounded and clipped to the
    dtype's range; floats keep the network's values unclipped (only limited to the
    dtype's finite range, for data near the float32 or float64 maximum)."""
    dtype = np.dtype(dtype)
    if _wide(lo, hi):
        wide = values.astype(np.float64) * (hi / 2 - lo / 2) + lo / 2
        wide *= 2.0
        if np.issubdtype(dtype, np.floating):
            info = np.finfo(dtype)
            np.clip(wide, info.min, info.max, out=wide)
            return wide.astype(dtype)
        out = wide
    else:
        out = values.astype(np.float32, copy=False) * np.float32(hi - lo) + np.float32(lo)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        np.rint(out, out=out)
        np.clip(out, info.min, info.max, out=out)
    return out.astype(dtype, copy=False)
