"""Training pairs for the denoisers: patch sources drawn on demand from images in memory.

Three kinds of data, all behind the :class:`PatchSource` interface the trainer uses:

* **synthetic** - a folder of clean images plus a :class:`~.noise.NoiseModel`;
* **paired** - a folder of noisy images and a folder of clean ones, matched by file name;
* **FMD** - the Fluorescence Microscopy Denoising layout ``raw/<fov>/*.png`` +
  ``gt/<fov>/avg50.png``: every raw frame is paired with the average of its field of view;

and :class:`MixedSource`, which draws each batch element from one of several sources.

Scales. The network sees data on the scale that inference (``inference/normalise.py``)
gives it, and each source says which one in ``normalisation`` (the trained model's card
must declare it):

* 8-bit images with Gaussian noise: fixed ``value / 255`` (``{"mode": "fixed", ...}``);
  noise is added on the 0-255 scale in float and not clipped (seed-000 protocol).
* everything else: per-plane percentiles (``{"mode": "percentile", "low": 0.1,
  "high": 99.9}``). Real pairs use the percentiles of the *noisy* plane for both images,
  exactly as inference will. Synthetic pairs normalise the clean plane by its own
  percentiles, add noise on that 0-1 scale and then apply a random intensity affine jitter
  (see :class:`SyntheticSource`).

Images are held in memory in their own dtype and patches are cut when asked for, with a
random position and one of the 8 flips/90° rotations (the same for noisy and clean). All
randomness comes from the ``torch.Generator`` passed to ``sample``, so a trainer that
saves and restores the generator state resumes with exactly the same batches.

Images smaller than the patch size are reflect-padded (with a one-time warning), not
skipped, so small images still contribute.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..inference.normalise import intensity_range
from ..io import IMAGE_SUFFIXES, TIFF_SUFFIXES, files_by_stem, read_image
from ..io import list_images as _list_images
from ..io import natural_key as _natural_key
from .noise import NoiseModel, parse_noise

__all__ = [
    "FIXED_8BIT_NORMALISATION",
    "PERCENTILE_NORMALISATION",
    "MixedSource",
    "PairedSource",
    "PatchSource",
    "SyntheticSource",
    "make_source",
]

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


def _choose_val_groups(
    groups: list[str],
    aliases: dict[str, str],
    *,
    val_fraction: float,
    val_names: Sequence[str] | None,
    seed: int,
    where: str,
    strict: bool = True,
    unit: str = "files (with or without extension)",
) -> tuple[set[str], set[str]]:
    """Which split units (files, fields of view) are held out, and which ``val_names``
    matched. ``val_names`` wins; otherwise ``val_fraction`` of the units chosen with
    ``seed`` (at least one, never all). ``strict=False`` (mixtures) tolerates names that
    belong to another source and falls back to ``val_fraction`` when none match here."""
    if val_names is not None:
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
                f"val_names hold out every image of {where}, leaving nothing to train on; "
                "name fewer."
            )
        if val or strict or not names:
            return val, matched
    n = len(groups)
    if val_fraction <= 0 or n < 2:
        return set(), set()
    n_val = min(n - 1, max(1, round(val_fraction * n)))
    order = np.random.default_rng(seed).permutation(n)
    return {groups[i] for i in order[:n_val]}, set()


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
    val_groups, matched = _choose_val_groups(
        groups,
        aliases,
        val_fraction=val_fraction,
        val_names=val_names,
        seed=seed,
        where=where,
        strict=strict,
        unit=unit,
    )
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


class PatchSource(ABC):
    """What the trainer consumes: random (noisy, clean) patch batches on the network's
    scale, fixed validation pairs and a description for the model card.

    Attributes: ``channels`` (1 or 3) and ``normalisation`` (the card normalisation the
    trained model must declare so that inference feeds it data on the same scale).
    """

    channels: int
    normalisation: dict[str, Any]

    @abstractmethod
    def sample(
        self, batch_size: int, patch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch ``(noisy, clean)`` of float32 tensors (B, C, P, P) on the network scale,
        cut on demand at random positions with random flips/rotations; all randomness
        from ``generator``, so equal generator states give equal batches."""

    @abstractmethod
    def validation_pairs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Fixed ``(noisy, clean)`` float32 (C, H, W) images on the network scale from the
        held-out split (at most VAL_MAX_IMAGES centre crops of at most VAL_CROP pixels)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-able description of the training data for the model card."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of training images (2D planes)."""


class _PlaneSource(PatchSource):
    """Shared machinery of the sources that cut patches from in-memory planes."""

    kind = "planes"

    def __init__(
        self,
        train: list[_Plane],
        val: list[_Plane],
        *,
        channels: int,
        normalisation: dict[str, Any],
        info: dict[str, Any],
    ) -> None:
        if not train:
            raise ValueError("No training images are left after the validation split.")
        self.channels = int(channels)
        self.normalisation = dict(normalisation)
        self._train = train
        self._val = val
        self._info = info
        areas = np.array([h * w for h, w in (p.shape for p in train)], dtype=np.float64)
        self._cumulative = np.cumsum(areas)
        self._lo = np.array([p.lo for p in train], dtype=np.float32)
        self._scale = np.array([1.0 / (p.hi - p.lo) for p in train], dtype=np.float32)
        self._min_side = min(min(p.shape) for p in train)
        self._warned: set[int] = set()
        self._val_cache: list[tuple[np.ndarray, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self._train)

    def balance_files(self) -> None:
        """Draw patches so that every file (split unit) is equally likely, whatever its
        size or plane count; within a file, by area. Without this a 60-plane stack
        outweighs a single image 60 to 1."""
        areas = np.array([h * w for h, w in (p.shape for p in self._train)], dtype=np.float64)
        groups = [p.group for p in self._train]
        totals: dict[str, float] = {}
        for g, a in zip(groups, areas):
            totals[g] = totals.get(g, 0.0) + a
        self._cumulative = np.cumsum([a / totals[g] for g, a in zip(groups, areas)])
        self._info["balance"] = "files"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self._train)} train / {len(self._val)} val images, "
            f"channels={self.channels}, normalisation={self.normalisation['mode']})"
        )

    @property
    def train_names(self) -> list[str]:
        """Names of the training planes, in order."""
        return [p.name for p in self._train]

    @property
    def val_names(self) -> list[str]:
        """Names of the held-out planes, in order."""
        return [p.name for p in self._val]

    def _draw(
        self, batch_size: int, patch_size: int, generator: torch.Generator
    ) -> tuple[np.ndarray, list[tuple[int, int]], np.ndarray]:
        """Images, top-left corners and transforms for one batch (this order of draws)."""
        _check_sample_args(batch_size, patch_size)
        if patch_size > self._min_side and patch_size not in self._warned:
            self._warned.add(patch_size)
            small = sum(1 for p in self._train if min(p.shape) < patch_size)
            warnings.warn(
                f"{small} training image(s) are smaller than the {patch_size}-pixel patch "
                "and are reflect-padded; consider a smaller patch size.",
                UserWarning,
                stacklevel=3,
            )
        which = _pick(self._cumulative, _rand(generator, (batch_size,), torch.float64))
        where = _rand(generator, (batch_size, 2), torch.float64)
        transforms = (
            torch.randint(0, 8, (batch_size,), generator=generator, device=generator.device)
            .cpu()
            .numpy()
        )
        corners = []
        for i, (uy, ux) in zip(which, where):
            h, w = self._train[i].shape
            y = min(int(uy * (h - patch_size + 1)), h - patch_size) if h > patch_size else 0
            x = min(int(ux * (w - patch_size + 1)), w - patch_size) if w > patch_size else 0
            corners.append((y, x))
        return which, corners, transforms

    def _stack(
        self,
        arrays: list[np.ndarray],
        corners: list[tuple[int, int]],
        transforms: np.ndarray,
        size: int,
    ) -> torch.Tensor:
        batch = np.empty((len(arrays), self.channels, size, size), dtype=np.float32)
        for b, (arr, (y, x), t) in enumerate(zip(arrays, corners, transforms)):
            batch[b] = _patch(arr, y, x, size, int(t))
        return torch.from_numpy(batch)

    def _to_network(self, batch: torch.Tensor, which: np.ndarray) -> torch.Tensor:
        lo = torch.from_numpy(self._lo[which]).view(-1, 1, 1, 1)
        scale = torch.from_numpy(self._scale[which]).view(-1, 1, 1, 1)
        return (batch - lo) * scale

    def validation_pairs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        if self._val_cache is None:
            self._val_cache = self._make_validation()
        return [(n.copy(), c.copy()) for n, c in self._val_cache]

    @abstractmethod
    def _make_validation(self) -> list[tuple[np.ndarray, np.ndarray]]: ...

    def _describe_common(self) -> dict[str, Any]:
        return {
            "channels": self.channels,
            "normalisation": dict(self.normalisation),
            "images": {"train": len(self._train), "val": len(self._val)},
            "val_split": sorted({p.group for p in self._val}, key=_natural_key),
            "validation_images": min(VAL_MAX_IMAGES, len(self._val)),
            "validation_crop": VAL_CROP,
            "patch_policy": dict(PATCH_POLICY),
        }


class SyntheticSource(_PlaneSource):
    """Clean images + a synthetic noise model.

    8-bit images with a noise model on the 0-255 scale (Gaussian): noise is added to the
    0-255 intensities in float, unclipped, and both images are divided by 255 - the
    seed-000 protocol, with the fixed normalisation.

    Otherwise each clean plane is mapped to 0-1 by its own 0.1/99.9 percentiles (clipped
    to [0, 1]; only the target, the noise is added afterwards and never clipped), noise is
    added on that scale, and a random intensity affine ``v -> s*v + o`` (s log-uniform in
    [0.8, 1.25], o uniform in [-0.1, 0.1], per sample, the same for noisy and clean) is
    applied. Why the jitter: inference normalises by the percentiles of the *noisy* plane,
    which noise widens (the tails of the noisy histogram lie beyond the clean ones, by an
    amount that depends on the noise level and the image), so at inference the content
    lands on [0, 1] slightly shifted and compressed compared with the clean-percentile map
    used here. Training on randomly shifted/scaled versions makes the network robust to
    that mismatch (noise is added before the jitter, so its statistics relative to the
    signal are unchanged). Validation pairs, in contrast, are mapped exactly as inference
    would: by the percentiles of the noisy crop.
    """

    kind = "synthetic"

    def __init__(
        self,
        train: list[_Plane],
        val: list[_Plane],
        *,
        channels: int,
        noise: NoiseModel,
        fixed: bool,
        info: dict[str, Any],
        seed: int = 0,
    ) -> None:
        super().__init__(
            train,
            val,
            channels=channels,
            normalisation=FIXED_8BIT_NORMALISATION if fixed else PERCENTILE_NORMALISATION,
            info=info,
        )
        self.noise = noise
        self.fixed = fixed
        self.seed = int(seed)
        #: Optional ``augment(clean_batch, generator) -> clean_batch`` applied to the clean
        #: patches before noise (e.g. :class:`~napari_wgan_denoise.data.colour.ColourJitter`).
        self.augment: Any = None
        self._noise_net = noise.with_data_max(255.0 if fixed else 1.0)

    def sample(
        self, batch_size: int, patch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        which, corners, transforms = self._draw(batch_size, patch_size, generator)
        clean = self._stack([self._train[i].clean for i in which], corners, transforms, patch_size)
        if self.augment is not None:  # colour jitter on the clean scale, before the noise
            clean = self.augment(clean, generator)
        if self.fixed:
            noisy = self._noise_net.apply(clean, generator)
            return (noisy / 255.0).float().contiguous(), clean / 255.0
        clean = self._to_network(clean, which).clamp_(0.0, 1.0)
        noisy = self._noise_net.apply(clean, generator).float()
        u = torch.from_numpy(_rand(generator, (batch_size, 2)))
        lo_s, hi_s = (math.log(v) for v in JITTER_SCALE)
        s = torch.exp(lo_s + (hi_s - lo_s) * u[:, 0]).view(-1, 1, 1, 1)
        o = (JITTER_OFFSET * (2.0 * u[:, 1] - 1.0)).view(-1, 1, 1, 1)
        return (noisy * s + o).contiguous(), (clean * s + o).contiguous()

    def _make_validation(self) -> list[tuple[np.ndarray, np.ndarray]]:
        gen = torch.Generator().manual_seed(self.seed + _VAL_SEED_OFFSET)
        pairs = []
        for p in _spread(self._val):
            crop = torch.from_numpy(np.array(_centre_crop(p.clean), dtype=np.float32))[None]
            if self.fixed:
                noisy = self._noise_net.apply(crop, gen)[0].numpy() / 255.0
                clean = crop[0].numpy() / 255.0
            else:
                clean01 = ((crop - p.lo) / (p.hi - p.lo)).clamp_(0.0, 1.0)
                noisy01 = self._noise_net.apply(clean01, gen)[0].numpy()
                lo, hi = _percentile_range(noisy01)  # as inference maps the noisy input
                noisy = (noisy01 - lo) / (hi - lo)
                clean = (clean01[0].numpy() - lo) / (hi - lo)
            pairs.append((noisy.astype(np.float32), clean.astype(np.float32)))
        return pairs

    def describe(self) -> dict[str, Any]:
        scale = (
            "value/255; noise added on the 0-255 scale, unclipped"
            if self.fixed
            else "clean plane mapped by its own 0.1/99.9 percentiles to 0-1 (clipped), noise "
            "added on that scale, then a per-sample intensity jitter"
        )
        out = {"kind": self.kind, **self._info, "noise": self.noise.to_card(), "scale": scale}
        if self.augment is not None and hasattr(self.augment, "to_card"):
            out["augment"] = self.augment.to_card()
        out.update(self._describe_common())
        out["jitter"] = (
            None
            if self.fixed
            else {
                "scale": list(JITTER_SCALE),
                "scale_distribution": "log-uniform",
                "offset": [-JITTER_OFFSET, JITTER_OFFSET],
            }
        )
        out["validation_noise_seed"] = self.seed + _VAL_SEED_OFFSET
        return out


class PairedSource(_PlaneSource):
    """Real (noisy, clean) pairs: each pair is mapped to the network scale with the
    0.1/99.9 percentiles of the noisy plane, applied to both images, as inference maps
    the noisy input. Used for matched folders and for the FMD layout."""

    kind = "paired"

    def __init__(
        self,
        train: list[_Plane],
        val: list[_Plane],
        *,
        channels: int,
        info: dict[str, Any],
        kind: str = "paired",
    ) -> None:
        super().__init__(
            train, val, channels=channels, normalisation=PERCENTILE_NORMALISATION, info=info
        )
        self.kind = kind

    def sample(
        self, batch_size: int, patch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        which, corners, transforms = self._draw(batch_size, patch_size, generator)
        planes = [self._train[i] for i in which]
        noisy = self._stack([p.noisy for p in planes], corners, transforms, patch_size)
        clean = self._stack([p.clean for p in planes], corners, transforms, patch_size)
        return self._to_network(noisy, which), self._to_network(clean, which)

    def _make_validation(self) -> list[tuple[np.ndarray, np.ndarray]]:
        pairs = []
        for p in _spread(self._val):
            scale = np.float32(1.0 / (p.hi - p.lo))
            noisy = (_centre_crop(p.noisy).astype(np.float32) - np.float32(p.lo)) * scale
            clean = (_centre_crop(p.clean).astype(np.float32) - np.float32(p.lo)) * scale
            pairs.append((noisy, clean))
        return pairs

    def describe(self) -> dict[str, Any]:
        out = {
            "kind": self.kind,
            **self._info,
            "noise": {"type": "real"},
            "scale": "both images mapped by the 0.1/99.9 percentiles of the noisy plane",
        }
        out.update(self._describe_common())
        return out


class MixedSource(PatchSource):
    """Draws each batch element from one of ``sources`` with probability proportional to
    ``weights`` (default: equal). All sources must agree on channels and normalisation,
    since the trained model declares one of each."""

    kind = "mixed"

    def __init__(
        self, sources: Sequence[PatchSource], weights: Sequence[float] | None = None
    ) -> None:
        self.sources = list(sources)
        if not self.sources:
            raise ValueError("MixedSource needs at least one source.")
        if weights is None:
            weights = [1.0] * len(self.sources)
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (len(self.sources),) or not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(
                f"weights must be {len(self.sources)} non-negative numbers, got {weights!r}."
            )
        if w.sum() <= 0:
            raise ValueError("At least one MixedSource weight must be positive.")
        self.weights = (w / w.sum()).tolist()
        self._cumulative = np.cumsum(w)
        first = self.sources[0]
        for s in self.sources[1:]:
            if s.channels != first.channels:
                raise ValueError(
                    f"Cannot mix sources with {first.channels} and {s.channels} channels: "
                    "one holds gray images and the other RGB ones; train on data of one kind."
                )
            if s.normalisation != first.normalisation:
                raise ValueError(
                    "Cannot mix sources on different network scales "
                    f"({first.normalisation} vs {s.normalisation}): a model declares one "
                    "normalisation. Use 16-bit/percentile data or Poisson-Gaussian noise for "
                    "both, or train on them separately."
                )
        self.channels = first.channels
        self.normalisation = dict(first.normalisation)

    def sample(
        self, batch_size: int, patch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check_sample_args(batch_size, patch_size)
        choice = _pick(self._cumulative, _rand(generator, (batch_size,), torch.float64))
        shape = (batch_size, self.channels, patch_size, patch_size)
        noisy, clean = torch.empty(shape), torch.empty(shape)
        for k, source in enumerate(self.sources):
            rows = torch.from_numpy(np.flatnonzero(choice == k))
            if len(rows):
                n, c = source.sample(len(rows), patch_size, generator)
                noisy[rows], clean[rows] = n, c
        return noisy, clean

    def validation_pairs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        lists = [s.validation_pairs() for s in self.sources]
        out: list[tuple[np.ndarray, np.ndarray]] = []
        depth = 0
        while len(out) < VAL_MAX_IMAGES and any(depth < len(v) for v in lists):
            for pairs in lists:
                if depth < len(pairs) and len(out) < VAL_MAX_IMAGES:
                    out.append(pairs[depth])
            depth += 1
        return out

    def describe(self) -> dict[str, Any]:
        parts = [s.describe() for s in self.sources]
        return {
            "kind": self.kind,
            "noise": {
                "type": "mixed",
                "components": [d.get("noise") for d in parts],
                "weights": list(self.weights),
            },
            "channels": self.channels,
            "normalisation": dict(self.normalisation),
            "weights": list(self.weights),
            "sources": parts,
            "images": {
                "train": len(self),
                "val": sum(d["images"]["val"] for d in parts),
            },
        }

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)

    def __repr__(self) -> str:
        inner = ", ".join(repr(s) for s in self.sources)
        return f"MixedSource([{inner}], weights={self.weights})"


# --------------------------------------------------------------------------- builders


def _build_synthetic(
    folder: Path,
    noise: NoiseModel,
    channels: int | None,
    split: dict[str, Any],
    force_percentile: bool = False,
) -> tuple[SyntheticSource, set[str]]:
    files = [_read_file(p) for p in _list_images(folder, "clean")]
    where = f"the clean folder {folder}"
    n_channels = _resolve_channels(files, channels, where)
    fixed = (
        not force_percentile
        and noise.fixed_8bit_scale
        and all(pl.dtype == np.uint8 for f in files for pl in f.planes)
    )
    planes: list[_Plane] = []
    aliases: dict[str, str] = {}
    for f in files:
        aliases[f.path.name] = aliases.setdefault(f.path.stem, f.path.name)
        for z, arr in enumerate(f.planes):
            lo, hi = (0.0, 255.0) if fixed else _percentile_range(arr)
            name = f.path.name if len(f.planes) == 1 else f"{f.path.name}[{z}]"
            planes.append(_Plane(name, f.path.name, arr, None, lo, hi))
    train, val, matched = _split_planes(planes, aliases, where=where, **split)
    info = {
        "clean": str(folder),
        "files": {
            "train": len({p.group for p in train}),
            "val": len({p.group for p in val}),
        },
    }
    src = SyntheticSource(
        train, val, channels=n_channels, noise=noise, fixed=fixed, info=info, seed=split["seed"]
    )
    return src, matched


def _pair_planes(
    noisy: _ImageFile, clean: _ImageFile, group: str, label: str
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, noisy plane, clean plane) for a matched pair of files; a single clean plane
    serves every noisy plane (e.g. an average of repeated frames)."""
    if len(clean.planes) not in (1, len(noisy.planes)):
        raise ValueError(
            f"{label}: the noisy file has {len(noisy.planes)} planes but the clean one has "
            f"{len(clean.planes)}; give one clean plane per noisy plane, or a single one."
        )
    out = []
    for z, n in enumerate(noisy.planes):
        c = clean.planes[z if len(clean.planes) > 1 else 0]
        if n.shape != c.shape:
            raise ValueError(
                f"{label}: noisy and clean images differ in size ({n.shape[1:]} vs "
                f"{c.shape[1:]}); pairs must be pixel-aligned images of the same size."
            )
        out.append((group if len(noisy.planes) == 1 else f"{group}[{z}]", n, c))
    return out


def _build_paired(
    noisy_dir: Path, clean_dir: Path, channels: int | None, split: dict[str, Any]
) -> tuple[PairedSource, set[str]]:
    noisy = files_by_stem(_list_images(noisy_dir, "noisy"), "noisy")
    clean = files_by_stem(_list_images(clean_dir, "clean"), "clean")
    only_noisy = sorted(set(noisy) - set(clean), key=_natural_key)
    only_clean = sorted(set(clean) - set(noisy), key=_natural_key)
    if only_noisy or only_clean:

        def show(names: list[str]) -> str:
            return ", ".join(names[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "")

        parts = []
        if only_noisy:
            parts.append(f"only in the noisy folder: {show(only_noisy)}")
        if only_clean:
            parts.append(f"only in the clean folder: {show(only_clean)}")
        raise ValueError(
            "The noisy and clean folders must hold the same image names (matched without "
            f"extension); {'; '.join(parts)}. Rename or remove the unmatched files."
        )
    stems = sorted(noisy, key=_natural_key)
    files_n = {s: _read_file(noisy[s]) for s in stems}
    files_c = {s: _read_file(clean[s]) for s in stems}
    where = f"the noisy ({noisy_dir}) and clean ({clean_dir}) folders"
    n_channels = _resolve_channels([*files_n.values(), *files_c.values()], channels, where)
    planes: list[_Plane] = []
    aliases: dict[str, str] = {}
    for s in stems:
        aliases.update({s: s, noisy[s].name: s, clean[s].name: s})
        for name, n, c in _pair_planes(files_n[s], files_c[s], s, f"Pair {s!r}"):
            lo, hi = _percentile_range(n)
            planes.append(_Plane(name, s, c, n, lo, hi))
    train, val, matched = _split_planes(planes, aliases, where=where, **split)
    info = {
        "noisy": str(noisy_dir),
        "clean": str(clean_dir),
        "files": {"train": len({p.group for p in train}), "val": len({p.group for p in val})},
    }
    return PairedSource(train, val, channels=n_channels, info=info, kind="paired"), matched


def _fmd_target(gt_dir: Path) -> Path:
    """The ground-truth image of one FMD field of view: avg50.png, else the only image."""
    preferred = gt_dir / "avg50.png"
    if preferred.is_file():
        return preferred
    images = (
        [
            p
            for p in gt_dir.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        ]
        if gt_dir.is_dir()
        else []
    )
    avg = [p for p in images if p.stem == "avg50"]
    if len(avg) == 1:
        return avg[0]
    if len(images) == 1:
        return images[0]
    raise ValueError(
        f"No ground truth for this field of view: expected {preferred} "
        f"({'missing folder' if not gt_dir.is_dir() else f'{len(images)} images found'})."
    )


def _build_fmd(
    folder: Path, channels: int | None, split: dict[str, Any]
) -> tuple[PairedSource, set[str]]:
    raw_root, gt_root = folder / "raw", folder / "gt"
    if not folder.is_dir():
        raise ValueError(f"The FMD folder {folder} does not exist or is not a folder.")
    if not raw_root.is_dir() or not gt_root.is_dir():
        raise ValueError(
            f"{folder} is not in the FMD layout: expected raw/<fov>/*.png (noisy frames) and "
            "gt/<fov>/avg50.png (their average) inside it. For two folders of matched images "
            "use noisy= and clean= instead."
        )
    fovs = sorted(
        (p.name for p in raw_root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=_natural_key,
    )
    if not fovs:
        raise ValueError(f"{raw_root} has no field-of-view subfolders (raw/<fov>/*.png).")
    missing = [f for f in fovs if not (gt_root / f).is_dir()]
    if missing:
        raise ValueError(
            f"Fields of view without a gt/ folder in {folder}: {', '.join(missing[:10])}. "
            "Each raw/<fov> needs gt/<fov>/avg50.png; add it or remove the raw folder."
        )
    targets: dict[str, _ImageFile] = {}
    frames: dict[str, list[_ImageFile]] = {}
    for fov in fovs:
        try:
            target = _fmd_target(gt_root / fov)
        except ValueError as exc:
            raise ValueError(f"FMD field of view {fov!r} in {folder}: {exc}") from exc
        targets[fov] = _read_file(target)
        if len(targets[fov].planes) != 1:
            raise ValueError(f"The ground truth {target} must be a single 2D image.")
        frames[fov] = [_read_file(p) for p in _list_images(raw_root / fov, f"FMD raw/{fov}")]
    all_files = [*targets.values(), *(f for fs in frames.values() for f in fs)]
    n_channels = _resolve_channels(all_files, channels, f"the FMD folder {folder}")
    planes: list[_Plane] = []
    for fov in fovs:
        for f in frames[fov]:
            label = f"FMD frame {fov}/{f.path.name}"
            for name, n, c in _pair_planes(f, targets[fov], f"{fov}/{f.path.name}", label):
                lo, hi = _percentile_range(n)
                planes.append(_Plane(name, fov, c, n, lo, hi))
    aliases = {fov: fov for fov in fovs}
    train, val, matched = _split_planes(
        planes, aliases, where=f"the FMD folder {folder}", unit="fields of view", **split
    )
    train_fovs = sorted({p.group for p in train}, key=_natural_key)
    val_fovs = sorted({p.group for p in val}, key=_natural_key)
    info = {
        "fmd": str(folder),
        "fields_of_view": {"train": train_fovs, "val": val_fovs},
        "files": {"train": len(train), "val": len(val)},
    }
    return PairedSource(train, val, channels=n_channels, info=info, kind="fmd"), matched


def make_source(
    *,
    clean: str | Path | None = None,
    noisy: str | Path | None = None,
    fmd: str | Path | None = None,
    noise: NoiseModel | str | None = None,
    channels: int | None = None,
    val_fraction: float = 0.1,
    val_names: list[str] | None = None,
    seed: int = 0,
    mix: float = 0.5,
) -> PatchSource:
    """Build the training data source from folders.

    * ``clean`` + ``noise``: synthetic pairs (:class:`SyntheticSource`);
    * ``noisy`` + ``clean``: real pairs matched by file name (:class:`PairedSource`);
    * ``fmd``: an FMD-layout folder, split by field of view (:class:`PairedSource`);
    * ``fmd`` + ``clean`` + ``noise``: a :class:`MixedSource` drawing a fraction ``mix``
      (default 0.5) of each batch from the real FMD pairs and the rest synthetic.

    ``channels`` forces 1 (gray) or 3 (RGB) and is checked against the data. The
    validation split holds out whole files (fields of view for FMD): ``val_names`` names
    them (file names with or without extension, or FMD field-of-view folder names), else
    a fraction ``val_fraction`` is chosen with ``seed``; ``val_fraction=0`` holds out
    nothing. Raises ValueError, naming the problem, for unusable input.
    """
    if channels is not None and channels not in (1, 3):
        raise ValueError(
            f"channels must be 1 (gray), 3 (RGB) or None (from the data), not {channels!r}."
        )
    if not (isinstance(val_fraction, (int, float)) and 0 <= val_fraction < 1):
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}.")
    if not 0 <= mix <= 1:
        raise ValueError(
            f"mix (the fraction of real pairs per batch) must be in [0, 1], got {mix!r}."
        )
    if isinstance(noise, str):
        noise = parse_noise(noise)
    elif noise is not None and not isinstance(noise, NoiseModel):
        raise ValueError(
            f"noise must be a NoiseModel or a spec string, not {type(noise).__name__}."
        )
    clean_dir = Path(clean).expanduser() if clean is not None else None
    noisy_dir = Path(noisy).expanduser() if noisy is not None else None
    fmd_dir = Path(fmd).expanduser() if fmd is not None else None

    if noisy_dir is not None:
        if clean_dir is None:
            raise ValueError("noisy= needs a matching clean= folder (pairs are matched by name).")
        if fmd_dir is not None:
            raise ValueError(
                "Give either noisy=/clean= folders or fmd=, not both; to combine them build "
                "the sources separately and use MixedSource."
            )
        if noise is not None:
            raise ValueError(
                "noise= adds synthetic noise to clean images, but noisy= already gives real "
                "noisy images: leave noise out (or drop noisy= for synthetic pairs)."
            )
    elif clean_dir is not None and noise is None:
        raise ValueError(
            "A clean folder alone is not training data: add noise= (e.g. 'gaussian:25' or "
            "'poisson-gaussian') for synthetic pairs, or noisy= for real pairs."
        )
    elif clean_dir is None and fmd_dir is None:
        raise ValueError("Give training data: clean= with noise=, noisy= with clean=, or fmd=.")
    elif clean_dir is None and noise is not None:
        raise ValueError(
            "noise= needs a clean= folder of images to add it to (FMD frames are already noisy)."
        )

    names = (
        None
        if val_names is None
        else ([val_names] if isinstance(val_names, str) else list(val_names))
    )
    mixed = fmd_dir is not None and clean_dir is not None
    split = {
        "val_fraction": float(val_fraction),
        "val_names": names,
        "seed": int(seed),
        "strict": not mixed,
    }

    if noisy_dir is not None:
        return _build_paired(noisy_dir, clean_dir, channels, split)[0]
    if not mixed:
        if fmd_dir is not None:
            return _build_fmd(fmd_dir, channels, split)[0]
        return _build_synthetic(clean_dir, noise, channels, split)[0]

    real, matched_real = _build_fmd(fmd_dir, channels, split)
    # The FMD pairs are on the percentile scale, so the synthetic half must be too.
    synthetic, matched_syn = _build_synthetic(
        clean_dir, noise, channels, split, force_percentile=True
    )
    if names:
        unmatched = [n for n in names if n not in matched_real | matched_syn]
        if unmatched:
            raise ValueError(
                f"val_names {unmatched} are neither FMD fields of view in {fmd_dir} nor files "
                f"in {clean_dir}."
            )
    return MixedSource([real, synthetic], [mix, 1.0 - mix])
