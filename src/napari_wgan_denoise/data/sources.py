"""The patch sources the trainer draws from: synthetic noise on clean images, real
noisy/clean pairs, and mixtures of sources (see :mod:`.datasets` for how they are built)."""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..io import natural_key as _natural_key
from .noise import NoiseModel
from .planes import (
    _VAL_SEED_OFFSET,
    FIXED_8BIT_NORMALISATION,
    JITTER_OFFSET,
    JITTER_SCALE,
    PATCH_POLICY,
    PERCENTILE_NORMALISATION,
    VAL_CROP,
    VAL_MAX_IMAGES,
    _centre_crop,
    _check_sample_args,
    _patch,
    _percentile_range,
    _pick,
    _Plane,
    _rand,
    _spread,
)


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
        planes = arrays[0].shape[0] if arrays else self.channels  # a stainer makes 1 into 3
        batch = np.empty((len(arrays), planes, size, size), dtype=np.float32)
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
        #: patches before noise (e.g. :class:`~napari_wgan_denoise.data.colour.ColourJitter`);
        #: one with a ``validate`` method of the same form applies it to the validation crops.
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
            validate = getattr(self.augment, "validate", None)  # e.g. a gray-to-stain synthesis
            if validate is not None:
                crop = validate(crop, gen)
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
