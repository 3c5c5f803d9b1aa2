"""Training images held in memory as planes: reading files, channels, the validation
split, and cutting augmented patches; the scales (normalisations) the sources declare."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..inference.normalise import intensity_range
from ..io import TIFF_SUFFIXES, read_image

FIXED_8BIT_NORMALISATION: dict[str, Any] = {
    "mode": "fixed",
    "low": 0,
    "high": 255,
    "dtypes": ["uint8"],
}
PERCENTILE_NORMALISATION: dict[str, Any] = {"mode": "percentile", "low": 0.1, "high": 99.9}

#: Random intensity affine applied to synthetic percentile-scaled pairs (see SyntheticSource).
JITTER_SCALE: tuple[float, float] = (0.8, 1.25)
JITTER_OFFSET: float = 0.1

#: Validation images: centre crops of at most this size, rounded down to a multiple of
#: VAL_MULTIPLE (so that every generator, e.g. the U-Net with its two poolings, takes them),
#: and at most VAL_MAX_IMAGES of them, spread over the held-out files / fields of view.
VAL_CROP = 256
VAL_MULTIPLE = 8
VAL_MAX_IMAGES = 8
_VAL_SEED_OFFSET = 1_000_003  # the synthetic validation noise uses seed + this

PATCH_POLICY: dict[str, Any] = {
    "sampling": "on demand from the training images held in memory",
    "image_weight": "proportional to pixel count",
    "position": "uniform",
    "augment": "one of 8 flips/90-degree rotations, same for noisy and clean",
    "small_images": "reflect-padded to the patch size",
}


# --------------------------------------------------------------------------- reading


@dataclass
class _Plane:
    """One 2D training image (C, H, W) in its native dtype, with its network map."""

    name: str  # shown in messages, e.g. "stack.tif[3]" or "1/HV110_P0500510000.png"
    group: str  # unit of the train/validation split: file name or field of view
    clean: np.ndarray
    noisy: np.ndarray | None
    lo: float  # intensity that the network sees as 0 ...
    hi: float  # ... and as 1

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.clean.shape[-2]), int(self.clean.shape[-1])


@dataclass
class _ImageFile:
    path: Path
    planes: list[np.ndarray]  # each (C, H, W)
    rgb: bool


def _read_file(path: Path) -> _ImageFile:
    """Read one file into 2D planes (C, H, W): gray (H, W) -> 1 plane; RGB(A) (H, W, 3|4)
    -> 1 plane, alpha dropped; stacks (N, ..., H, W[, 3]) -> one plane per 2D image."""
    try:
        arr = np.asarray(read_image(path))
    except (ValueError, OSError) as exc:
        raise ValueError(
            f"{str(exc).rstrip('.')}. Remove the file from the folder or re-save it as PNG or TIFF."
        ) from exc
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise ValueError(
            f"Image {path} has dtype {arr.dtype}; training needs integer or floating point "
            "intensities. Convert it or remove it from the folder."
        )
    if arr.ndim < 2 or arr.size == 0 or min(arr.shape[-2:]) < 1:
        raise ValueError(f"Image {path} has no 2D pixel data (shape {arr.shape}); remove it.")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(
                f"Image {path} contains NaN or infinite values; replace them (e.g. "
                "numpy.nan_to_num) or remove the file."
            )
        arr = arr.astype(np.float32, copy=False)
    elif arr.dtype.itemsize > 2:
        arr = arr.astype(np.float32)
    if arr.ndim >= 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]  # (..., H, W, 1): an explicit single channel
    last_is_colour = arr.ndim >= 3 and arr.shape[-2] > 4
    if last_is_colour and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3].reshape(-1, *arr.shape[-3:-1], 3)
        planes = [np.ascontiguousarray(np.moveaxis(p, -1, 0)) for p in rgb]
        return _ImageFile(path, planes, rgb=True)
    if last_is_colour and arr.shape[-1] == 2:
        if path.suffix.lower() in TIFF_SUFFIXES:
            arr = np.moveaxis(arr, -1, -3)  # two channels: each its own gray plane
        else:
            arr = arr[..., 0]  # gray + alpha (e.g. an LA PNG): drop the alpha
    gray = arr.reshape(-1, *arr.shape[-2:])
    return _ImageFile(path, [p[None] for p in gray], rgb=False)


def _resolve_channels(files: Sequence[_ImageFile], channels: int | None, where: str) -> int:
    """1 or 3 from the data, checked against a forced ``channels``."""
    rgb = [f for f in files if f.rgb]
    gray = [f for f in files if not f.rgb]
    if rgb and gray:
        raise ValueError(
            f"{where} mixes gray and RGB images (e.g. gray {gray[0].path.name}, RGB "
            f"{rgb[0].path.name}). A model has either 1 or 3 channels: put gray and RGB "
            "images in separate folders, or convert them to one kind."
        )
    found = 3 if rgb else 1
    if channels is None or channels == found:
        return found
    example = files[0].path.name
    if channels == 3:
        raise ValueError(
            f"channels=3 (RGB) was asked for, but {where} holds gray images (e.g. {example}). "
            "Train a gray model (channels=1) or give a folder of RGB images."
        )
    raise ValueError(
        f"channels=1 (gray) was asked for, but {where} holds RGB images (e.g. {example}). "
        "They are not converted to gray automatically: train an RGB model (channels=3) or "
        "convert the images to gray yourself."
    )


def _percentile_range(plane: np.ndarray) -> tuple[float, float]:
    """The (p0.1, p99.9) of a (C, H, W) plane, computed exactly as inference does it
    (on the (H, W, C) layout, all colours together)."""
    view = plane[0] if plane.shape[0] == 1 else np.moveaxis(plane, 0, -1)
    return intensity_range(view, PERCENTILE_NORMALISATION)


# --------------------------------------------------------------------------- splitting


def _named_val_groups(
    groups: list[str],
    aliases: dict[str, str],
    val_names: str | Sequence[str],
    *,
    where: str,
    strict: bool,
    unit: str,
) -> tuple[set[str], set[str]]:
    """The split units (files, fields of view) that ``val_names`` hold out, and the names
    that matched. ``strict=False`` (mixtures) tolerates names that belong to another
    source; an empty set then means none matched here."""
    names = [val_names] if isinstance(val_names, str) else [str(n) for n in val_names]
    val = {aliases[n] for n in names if n in aliases}
    matched = {n for n in names if n in aliases}
    unmatched = [n for n in names if n not in aliases]
    if unmatched and strict:
        shown = ", ".join(groups[:12]) + (", ..." if len(groups) > 12 else "")
        raise ValueError(
            f"val_names {unmatched} are not in {where}. Name {unit} that exist: {shown}."
        )
    if len(val) == len(groups) and groups:
        raise ValueError(
            f"val_names hold out every image of {where}, leaving nothing to train on; name fewer."
        )
    return val, matched


def _drawn_val_groups(groups: list[str], val_fraction: float, seed: int) -> set[str]:
    """``val_fraction`` of the split units, drawn with ``seed`` (at least one, never all)."""
    n = len(groups)
    if val_fraction <= 0 or n < 2:
        return set()
    n_val = min(n - 1, max(1, round(val_fraction * n)))
    order = np.random.default_rng(seed).permutation(n)
    return {groups[i] for i in order[:n_val]}


def _split_planes(
    planes: list[_Plane],
    aliases: dict[str, str],
    *,
    val_fraction: float,
    val_names: Sequence[str] | None,
    seed: int,
    where: str,
    strict: bool = True,
    unit: str = "files (with or without extension)",
) -> tuple[list[_Plane], list[_Plane], set[str]]:
    """Split planes into (train, val) by group, never putting one group in both, except
    for a single multi-plane file, whose planes are split as a contiguous block."""
    groups = list(dict.fromkeys(p.group for p in planes))
    if len(groups) == 1 and len(planes) > 1 and val_names is None and val_fraction > 0:
        n = len(planes)
        n_val = min(n - 1, max(1, round(val_fraction * n)))
        start = int(np.random.default_rng(seed).integers(0, n - n_val + 1))
        warnings.warn(
            f"{where} holds a single file ({groups[0]}); holding out its planes "
            f"{start}-{start + n_val - 1} for validation. Neighbouring planes of a stack are "
            "similar, so validation scores are optimistic: add another file for validation.",
            UserWarning,
            stacklevel=3,
        )
        val = planes[start : start + n_val]
        return planes[:start] + planes[start + n_val :], val, set()
    if val_names is None:
        val_groups, matched = _drawn_val_groups(groups, val_fraction, seed), set()
    else:  # named units win; in a mixture, names that match nothing here draw instead
        val_groups, matched = _named_val_groups(
            groups, aliases, val_names, where=where, strict=strict, unit=unit
        )
        no_names = not isinstance(val_names, str) and len(val_names) == 0
        if not (val_groups or strict or no_names):
            val_groups = _drawn_val_groups(groups, val_fraction, seed)
    train = [p for p in planes if p.group not in val_groups]
    val = [p for p in planes if p.group in val_groups]
    if not val and val_fraction > 0 and val_names is None:
        warnings.warn(
            f"{where} holds a single image; there is nothing to hold out for validation.",
            UserWarning,
            stacklevel=3,
        )
    return train, val, matched


# --------------------------------------------------------------------------- sources


def _rand(generator: torch.Generator, shape: tuple[int, ...], dtype=torch.float32) -> np.ndarray:
    """Uniform [0, 1) numbers from ``generator`` (on its own device), as numpy."""
    return (
        torch.rand(shape, generator=generator, device=generator.device, dtype=dtype).cpu().numpy()
    )


def _pick(cumulative: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Indices drawn with weights given as a cumulative sum, from uniforms ``u``."""
    idx = np.searchsorted(cumulative, u * cumulative[-1], side="right")
    return np.minimum(idx, len(cumulative) - 1)


def _check_sample_args(batch_size: int, patch_size: int) -> None:
    for name, v in (("batch_size", batch_size), ("patch_size", patch_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}.")


def _patch(arr: np.ndarray, y: int, x: int, size: int, transform: int) -> np.ndarray:
    """Cut ``arr[:, y:y+size, x:x+size]`` (reflect-padded when the image is smaller) and
    apply dihedral ``transform`` (bits 0-1: quarter turns, bit 2: left-right flip)."""
    _, h, w = arr.shape
    out = arr[:, y : y + size, x : x + size]
    ph, pw = out.shape[-2:]
    if ph < size or pw < size:
        dh, dw = size - ph, size - pw
        pad = ((0, 0), (dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2))
        out = np.pad(out, pad, mode="reflect" if min(ph, pw) > 1 else "edge")
    k = transform & 3
    if k:
        out = np.rot90(out, k, axes=(1, 2))
    if transform & 4:
        out = out[:, :, ::-1]
    return out


def _centre_crop(arr: np.ndarray) -> np.ndarray:
    """Centre crop (C, H, W) to at most VAL_CROP, rounded down to a multiple of
    VAL_MULTIPLE where the image is large enough."""
    _, h, w = arr.shape

    def size(n: int) -> int:
        m = min(n, VAL_CROP)
        return m - m % VAL_MULTIPLE if m >= VAL_MULTIPLE else m

    sh, sw = size(h), size(w)
    y, x = (h - sh) // 2, (w - sw) // 2
    return arr[:, y : y + sh, x : x + sw]


def _spread(planes: list[_Plane], limit: int = VAL_MAX_IMAGES) -> list[_Plane]:
    """Up to ``limit`` planes taken round-robin over their groups (deterministic)."""
    by_group: dict[str, list[_Plane]] = {}
    for p in planes:
        by_group.setdefault(p.group, []).append(p)
    chosen: list[_Plane] = []
    depth = 0
    while len(chosen) < limit and any(depth < len(v) for v in by_group.values()):
        for members in by_group.values():
            if depth < len(members) and len(chosen) < limit:
                chosen.append(members[depth])
        depth += 1
    return chosen
