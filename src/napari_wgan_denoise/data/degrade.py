"""Synthetic damage for the seed-004 cascade: holes (dead pixels, saturated spots,
scratches, missing blocks), optical blur and Poisson-Gaussian noise, applied to clean
patches so that the cascade learns to undo all three at once."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

HOLE_KINDS = ("dead", "spots", "scratches", "blocks")


@dataclass
class DegradationConfig:
    """How clean patches (on the network's 0-1 scale) are damaged.

    Each patch gets one to ``max_kinds`` hole kinds drawn from ``kinds``; a Gaussian blur
    of standard deviation drawn from ``blur_sigma`` (pixels; the microscope's PSF); then
    noise ``x + sqrt(gain * x + sigma^2) * n`` with ``gain`` from ``poisson_gain`` and
    ``sigma`` from ``gaussian_sigma``: the Poisson-Gaussian model of fluorescence cameras.
    """

    kinds: tuple[str, ...] = HOLE_KINDS
    max_kinds: int = 2
    blur_sigma: tuple[float, float] = (0.5, 2.0)
    gaussian_sigma: tuple[float, float] = (0.01, 0.08)
    poisson_gain: tuple[float, float] = (0.0, 0.02)
    max_hole_fraction: float = 0.2

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kinds) - set(HOLE_KINDS))
        if unknown or not self.kinds:
            raise ValueError(f"Unknown hole kind(s) {unknown}; choose from {HOLE_KINDS}.")
        for name in ("blur_sigma", "gaussian_sigma", "poisson_gain"):
            lo, hi = getattr(self, name)
            if lo < 0 or hi < lo:
                raise ValueError(f"{name} must be a range (low, high) with 0 <= low <= high.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy for model cards."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> DegradationConfig:
        """Build from a dict (e.g. a card or YAML), rejecting unknown keys."""
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"Unknown degradation setting(s) {unknown}; valid: {sorted(names)}.")
        for key in ("kinds", "blur_sigma", "gaussian_sigma", "poisson_gain"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


@dataclass
class Damaged:
    """One damaged batch: ``network_input`` (image with holes set to 0, plus the mask as the
    last channel), ``observed`` (blurred and noisy, no holes: the inpainting target and the
    auto-encoder's pre-training input), ``clean`` and ``mask`` (1 = missing)."""

    network_input: torch.Tensor
    observed: torch.Tensor
    clean: torch.Tensor
    mask: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


def _uniform(generator: torch.Generator, lo: float, hi: float, n: int = 1) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def random_masks(
    batch: int, size: int, generator: torch.Generator, config: DegradationConfig | None = None
) -> torch.Tensor:
    """Hole masks ``(batch, 1, size, size)`` of 0/1 floats, each with one or more hole kinds."""
    cfg = config or DegradationConfig()
    masks = torch.zeros(batch, 1, size, size)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for b in range(batch):
        n_kinds = 1 + int(torch.randint(cfg.max_kinds, (1,), generator=generator))
        order = torch.randperm(len(cfg.kinds), generator=generator)[:n_kinds]
        m = torch.zeros(size, size, dtype=torch.bool)
        for k in order.tolist():
            kind = cfg.kinds[k]
            if kind == "dead":  # isolated dead or hot pixels
                m |= torch.rand(size, size, generator=generator) < float(
                    _uniform(generator, 0.002, 0.02)
                )
            elif kind == "spots":  # saturated blobs
                for _ in range(1 + int(torch.randint(4, (1,), generator=generator))):
                    cy, cx = (torch.rand(2, generator=generator) * size).tolist()
                    r = float(_uniform(generator, 1.5, max(2.0, size / 16)))
                    m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            elif kind == "scratches":  # thin lines at any angle
                for _ in range(1 + int(torch.randint(2, (1,), generator=generator))):
                    cy, cx = (torch.rand(2, generator=generator) * size).tolist()
                    theta = float(_uniform(generator, 0.0, math.pi))
                    half = float(_uniform(generator, 0.5, 1.6))
                    dist = (yy - cy) * math.cos(theta) - (xx - cx) * math.sin(theta)
                    m |= dist.abs() <= half
            else:  # missing blocks, up to a quarter of the patch side
                side = max(2, size // 4)
                h, w = (torch.randint(2, side + 1, (2,), generator=generator)).tolist()
                y0 = int(torch.randint(size - h + 1, (1,), generator=generator))
                x0 = int(torch.randint(size - w + 1, (1,), generator=generator))
                m[y0 : y0 + h, x0 : x0 + w] = True
        limit = cfg.max_hole_fraction * size * size
        if m.sum() > limit:  # keep enough context: thin the mask out at random
            keep = torch.rand(size, size, generator=generator) < limit / float(m.sum())
            m &= keep
        masks[b, 0] = m.float()
    return masks


def gaussian_blur(x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Blur each image of ``x`` (B, C, H, W) with its own Gaussian of std ``sigmas[b]``,
    mirroring at the borders."""
    radius = max(1, int(math.ceil(3 * float(sigmas.max()))))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    s = sigmas.to(x.device, x.dtype).clamp_min(1e-3)[:, None]
    k1 = torch.exp(-0.5 * (t[None] / s) ** 2)
    k1 = k1 / k1.sum(dim=1, keepdim=True)  # (B, K)
    b, c, h, w = x.shape
    pad_mode = "reflect" if min(h, w) > radius else "replicate"
    y = F.pad(x, (radius, radius, radius, radius), mode=pad_mode)
    y = y.reshape(1, b * c, h + 2 * radius, w + 2 * radius)
    kx = k1.repeat_interleave(c, dim=0)[:, None, None, :]
    ky = k1.repeat_interleave(c, dim=0)[:, None, :, None]
    y = F.conv2d(y, kx, groups=b * c)
    y = F.conv2d(y, ky, groups=b * c)
    return y.reshape(b, c, h, w)


def damage(
    clean: torch.Tensor, generator: torch.Generator, config: DegradationConfig | None = None
) -> Damaged:
    """Blur, add noise to and punch holes into clean patches ``(B, C, H, W)`` (0-1 scale)."""
    cfg = config or DegradationConfig()
    b, _, h, w = clean.shape
    if h != w:
        raise ValueError(f"Patches must be square, got {h}x{w}.")
    sig_blur = _uniform(generator, *cfg.blur_sigma, n=b)
    blurred = gaussian_blur(clean, sig_blur)
    sig = _uniform(generator, *cfg.gaussian_sigma, n=b)[:, None, None, None]
    gain = _uniform(generator, *cfg.poisson_gain, n=b)[:, None, None, None]
    noise = torch.randn(clean.shape, generator=generator)
    observed = blurred + torch.sqrt(gain * blurred.clamp_min(0) + sig**2) * noise
    mask = random_masks(b, h, generator, cfg)
    holed = observed * (1 - mask)
    return Damaged(
        network_input=torch.cat([holed, mask], dim=1),
        observed=observed,
        clean=clean,
        mask=mask,
        info={"blur_sigma": sig_blur.tolist(), "noise_sigma": sig.flatten().tolist()},
    )


def damage_image(
    clean: np.ndarray, seed: int, config: DegradationConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Damage one clean 2-D image (0-1 scale, sides multiples of nothing in particular):
    returns the observed image with holes set to 0 and the boolean hole mask. Seeded, so
    evaluation crops are the same on every run."""
    g = torch.Generator().manual_seed(seed)
    arr = np.asarray(clean, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"damage_image takes a 2-D image, got shape {arr.shape}.")
    size = max(arr.shape)
    t = torch.from_numpy(arr)[None, None]
    padded = F.pad(t, (0, size - arr.shape[1], 0, size - arr.shape[0]), mode="replicate")
    d = damage(padded, g, config)
    h, w = arr.shape
    observed = d.network_input[0, 0, :h, :w].numpy()
    mask = d.mask[0, 0, :h, :w].numpy() > 0.5
    return observed, mask


class CleanPatchPool:
    """Random square patches of clean 2-D planes (normalised to 0-1 by their 0.1/99.9
    percentiles), with flips and 90-degree turns; every file gets the same share of
    patches whatever its number of planes, so one big stack cannot dominate."""

    def __init__(self, planes: list[tuple[str, np.ndarray]]) -> None:
        if not planes:
            raise ValueError("No clean images to train on.")
        self.files: dict[str, list[np.ndarray]] = {}
        for name, plane in planes:
            self.files.setdefault(name, []).append(plane)
        self.names = sorted(self.files)

    @classmethod
    def from_paths(cls, paths: list[Path], channels: int = 1) -> CleanPatchPool:
        """Load gray planes from image files (2-D images or stacks of 2-D planes)."""
        from ..io import read_image

        planes = []
        for path in paths:
            for plane in image_planes(read_image(path), channels):
                planes.append((str(path), plane))
        return cls(planes)

    def describe(self) -> dict[str, Any]:
        """What the pool holds, for model cards."""
        return {
            "files": self.names,
            "planes": sum(len(v) for v in self.files.values()),
        }

    def sample(self, batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
        """A batch ``(batch, 1, size, size)`` of clean patches."""
        out = np.empty((batch, 1, size, size), dtype=np.float32)
        for i in range(batch):
            name = self.names[int(torch.randint(len(self.names), (1,), generator=generator))]
            planes = self.files[name]
            plane = planes[int(torch.randint(len(planes), (1,), generator=generator))]
            h, w = plane.shape
            if h < size or w < size:
                raise ValueError(f"{name}: planes of {h}x{w} are smaller than patches of {size}.")
            y = int(torch.randint(h - size + 1, (1,), generator=generator))
            x = int(torch.randint(w - size + 1, (1,), generator=generator))
            p = plane[y : y + size, x : x + size]
            turn = int(torch.randint(8, (1,), generator=generator))
            p = np.rot90(p, turn % 4)
            if turn >= 4:
                p = p[:, ::-1]
            out[i, 0] = p
        return torch.from_numpy(out)


def normalise_plane(plane: np.ndarray) -> np.ndarray:
    """Map a plane's 0.1 and 99.9 percentiles to 0 and 1 (float32)."""
    plane = np.asarray(plane, dtype=np.float32)
    lo, hi = np.percentile(plane, [0.1, 99.9])
    return ((plane - lo) / max(float(hi - lo), 1e-6)).astype(np.float32)


def image_planes(image: np.ndarray, channels: int = 1) -> list[np.ndarray]:
    """Split an image file's array into normalised gray 2-D planes (RGB is averaged)."""
    arr = np.asarray(image)
    if arr.ndim >= 3 and arr.shape[-1] in (3, 4) and channels == 1:
        arr = arr[..., :3].astype(np.float32).mean(axis=-1)
    if arr.ndim < 2:
        raise ValueError(f"Expected an image with at least 2 dimensions, got {arr.shape}.")
    flat = arr.reshape(-1, *arr.shape[-2:])
    return [normalise_plane(p) for p in flat if float(np.ptp(p)) > 0]
