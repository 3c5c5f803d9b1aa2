"""The test images of ``evaluate``: clean references and the noisy inputs every method
sees (seeded Gaussian noise, or real noisy images paired by file name)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import list_images, pair_by_stem, read_image


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
    pairs = pair_by_stem(list_images(noisy_dir, "noisy"), clean_files)
    return [(pairs[s][1], pairs[s][0]) for s in sorted(pairs)]


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
