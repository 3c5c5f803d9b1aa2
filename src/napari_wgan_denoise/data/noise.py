"""Synthetic noise models that turn clean training patches into noisy ones.

Every model draws all of its randomness from the ``torch.Generator`` it is given, so a
training run that restores the generator state reproduces the same noise exactly.

Spec strings (``parse_noise``, the CLI's ``--noise``) and their models:

* ``gaussian:25`` - additive white Gaussian noise, σ = 25 on the 0-255 scale of 8-bit data;
* ``gaussian:0-55`` - blind: σ drawn per sample uniformly from [0, 55];
* ``gaussian`` - same as ``gaussian:0-55`` (the DnCNN-B blind range);
* ``poisson-gaussian:peak=5-500,read=0-0.05`` - shot noise with a per-sample photon count
  at the bright end (log-uniform in ``peak``) plus Gaussian read noise (std uniform in
  ``read``, on the 0-1 scale); ``poisson-gaussian`` alone is ``peak=2-1000,read=0-0.03``;
* ``poisson-gaussian:peak=2-1000,read=0-0.03,corr=0-0.7,corr_p=0.5`` - the same, with the
  noise of a fraction ``corr_p`` of the samples blurred so that neighbouring pixels
  correlate by a coefficient drawn uniformly from ``corr`` (wide-field cameras: ≈ 0.6).
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from typing import Any

import torch

__all__ = ["GaussianNoise", "NoiseModel", "PoissonGaussianNoise", "parse_noise"]

Range = tuple[float, float]

DEFAULT_GAUSSIAN_SIGMA: Range = (0.0, 55.0)
DEFAULT_PEAK: Range = (2.0, 1000.0)
DEFAULT_READ: Range = (0.0, 0.03)


def _fmt(value: float) -> str:
    """Shortest text for a number that still parses back to (nearly) the same float."""
    return f"{value:.10g}"


def _fmt_range(rng: Range) -> str:
    lo, hi = rng
    return _fmt(lo) if lo == hi else f"{_fmt(lo)}-{_fmt(hi)}"


def _as_range(value: float | tuple[float, float] | list[float], name: str) -> Range:
    """Turn a number or a (low, high) pair into a validated range of floats."""
    if isinstance(value, (int, float)):
        lo = hi = float(value)
    else:
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"{name} must be a number or a (low, high) pair, got {value!r}."
            ) from exc
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"{name} must be finite with low <= high, got {value!r}.")
    return lo, hi


def _uniform(generator: torch.Generator, n: int, rng: Range) -> torch.Tensor:
    """``n`` values uniform in ``rng`` (no draw at all for a single value), shape (n,1,1,1)."""
    lo, hi = rng
    if lo == hi:
        return torch.full((n, 1, 1, 1), lo, dtype=torch.float32, device=generator.device)
    u = torch.rand((n, 1, 1, 1), generator=generator, device=generator.device)
    return lo + (hi - lo) * u


def _check_batch(clean: torch.Tensor) -> None:
    if clean.ndim != 4:
        raise ValueError(
            f"Noise models take a batch (B, C, H, W) of clean patches; got shape "
            f"{tuple(clean.shape)}."
        )


class NoiseModel(ABC):
    """A synthetic degradation: clean batch (B, C, H, W) in, noisy batch out.

    Subclasses implement ``apply`` (randomness only from the given generator), ``to_card``
    (a JSON-able description for the model card) and ``__str__`` (the spec string that
    ``parse_noise`` turns back into an equal model).
    """

    #: True for models whose parameters are on the 0-255 scale of 8-bit data, so that 8-bit
    #: training images can keep the fixed ``value/255`` map (seed-000 protocol).
    fixed_8bit_scale: bool = False

    @abstractmethod
    def apply(self, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return a noisy float32 copy of ``clean`` (not clipped)."""

    @abstractmethod
    def to_card(self) -> dict[str, Any]:
        """JSON-able description of the noise for the model card."""

    @abstractmethod
    def __str__(self) -> str:
        """The spec string, e.g. ``gaussian:0-55``."""

    def with_data_max(self, data_max: float) -> NoiseModel:
        """The same noise for data whose full range is ``data_max`` (e.g. 1.0 after
        normalising to 0-1); models without a data scale return themselves."""
        return self

    def __repr__(self) -> str:
        return f"parse_noise({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NoiseModel):
            return NotImplemented
        return type(self) is type(other) and self.to_card() == other.to_card()

    def __hash__(self) -> int:
        return hash(str(self))


class GaussianNoise(NoiseModel):
    """Additive white Gaussian noise, independent per pixel and channel (seed 000, DnCNN).

    ``sigma`` is on the 0-255 scale of 8-bit data: the noise std is
    ``sigma * data_max / 255``, with ``data_max`` the value that 255 corresponds to in the
    data given to ``apply`` (255 for 8-bit intensities, 1.0 for data normalised to 0-1).
    A ``(low, high)`` pair draws σ per sample uniformly from that range (a blind model).
    """

    fixed_8bit_scale = True

    def __init__(self, sigma: float | tuple[float, float], data_max: float = 255.0) -> None:
        self.sigma = _as_range(sigma, "sigma")
        if self.sigma[0] < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma!r}.")
        self.data_max = float(data_max)
        if not (math.isfinite(self.data_max) and self.data_max > 0):
            raise ValueError(f"data_max must be a positive number, got {data_max!r}.")

    @property
    def blind(self) -> bool:
        """True when σ is drawn from a range rather than fixed."""
        return self.sigma[0] != self.sigma[1]

    def apply(self, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Add N(0, (σ·data_max/255)²) to each pixel; σ drawn per sample when blind."""
        _check_batch(clean)
        dev = generator.device
        x = clean.to(device=dev, dtype=torch.float32)
        std = _uniform(generator, x.shape[0], self.sigma) * (self.data_max / 255.0)
        noise = torch.randn(x.shape, generator=generator, device=dev, dtype=torch.float32)
        return (x + noise * std).to(clean.device)

    def with_data_max(self, data_max: float) -> GaussianNoise:
        return GaussianNoise(self.sigma, data_max=data_max)

    def to_card(self) -> dict[str, Any]:
        lo, hi = self.sigma
        return {
            "type": "gaussian",
            "sigma": lo if lo == hi else [lo, hi],
            "scale": "0-255",
            "spec": str(self),
        }

    def __str__(self) -> str:
        return f"gaussian:{_fmt_range(self.sigma)}"


class PoissonGaussianNoise(NoiseModel):
    """Signal-dependent shot noise plus Gaussian read noise, for fluorescence microscopy.

    Works on clean patches already normalised to 0-1 (the image's bright end at 1) and
    returns the noisy batch on the same 0-1 scale. Per sample it draws a photon count
    ``peak`` (log-uniform in the range) that the value 1 maps to and a read-noise std
    (uniform in ``read``, 0-1 scale), then
    ``noisy = Poisson(clean01 * peak) / peak + N(0, read_std²)``.
    Negative inputs are treated as 0 for the Poisson part.
    """

    def __init__(
        self,
        peak: float | tuple[float, float] = DEFAULT_PEAK,
        read: float | tuple[float, float] = DEFAULT_READ,
        corr: float | tuple[float, float] = 0.0,
        corr_p: float = 1.0,
    ) -> None:
        self.peak = _as_range(peak, "peak")
        self.read = _as_range(read, "read")
        self.corr = _as_range(corr, "corr")
        self.corr_p = float(corr_p)
        if not (self.corr[0] >= 0 and self.corr[1] <= MAX_CORRELATION):
            raise ValueError(
                f"corr (neighbour correlation of the noise) must lie in 0-{MAX_CORRELATION}, "
                f"got {corr!r}."
            )
        if not 0 <= self.corr_p <= 1:
            raise ValueError(f"corr_p (a fraction of samples) must be in [0, 1], got {corr_p!r}.")
        if self.peak[0] <= 0:
            raise ValueError(f"peak (photons at the bright end) must be > 0, got {peak!r}.")
        if self.read[0] < 0:
            raise ValueError(f"read (noise std on the 0-1 scale) must be >= 0, got {read!r}.")

    def apply(self, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Poisson-Gaussian noise on 0-1 data; see the class docstring."""
        _check_batch(clean)
        dev = generator.device
        x = clean.to(device=dev, dtype=torch.float32).clamp_min(0.0)
        log_peak = _uniform(generator, x.shape[0], (math.log(self.peak[0]), math.log(self.peak[1])))
        peak = torch.exp(log_peak)
        read = _uniform(generator, x.shape[0], self.read)
        counts = torch.poisson(x * peak, generator=generator)
        noise = torch.randn(x.shape, generator=generator, device=dev, dtype=torch.float32)
        noisy = counts / peak + noise * read
        if self.corr[1] > 0 and self.corr_p > 0:
            rho = _uniform(generator, x.shape[0], self.corr)
            keep = _uniform(generator, x.shape[0], (0.0, 1.0)) >= self.corr_p
            rho = torch.where(keep, torch.zeros_like(rho), rho)
            noisy = x + correlate(noisy - x, rho)
        return noisy.to(clean.device)

    def to_card(self) -> dict[str, Any]:
        card = {
            "type": "poisson-gaussian",
            "peak": list(self.peak),
            "peak_distribution": "log-uniform",
            "read": list(self.read),
            "read_distribution": "uniform",
            "scale": "0-1",
            "spec": str(self),
        }
        if self.corr[1] > 0:
            card.update(
                correlation=list(self.corr),
                correlation_fraction=self.corr_p,
                correlation_kernel="separable 3-tap [a, 1, a], variance-preserving",
            )
        return card

    def __str__(self) -> str:
        spec = f"poisson-gaussian:peak={_fmt_range(self.peak)},read={_fmt_range(self.read)}"
        if self.corr[1] > 0:
            spec += f",corr={_fmt_range(self.corr)},corr_p={_fmt(self.corr_p)}"
        return spec


#: The largest neighbour correlation a 3-tap kernel [a, 1, a] reaches (a = 1/sqrt(2)).
MAX_CORRELATION = 0.7


def correlate(noise: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """Blur a noise batch (B, C, H, W) per sample with a separable kernel ``[a, 1, a]``
    chosen so that horizontally and vertically neighbouring pixels correlate by ``rho``
    (one value per sample), scaled so that each pixel keeps its variance: the spatially
    correlated read-out noise of wide-field cameras."""
    rho = rho.to(noise.dtype).clamp(0.0, MAX_CORRELATION).view(-1, 1, 1, 1)
    # rho = 2a / (1 + 2a^2) for white noise through [a, 1, a]; the smaller root.
    safe = rho.clamp_min(1e-6)
    a = torch.where(
        rho > 1e-6, (1 - torch.sqrt((1 - 2 * safe**2).clamp_min(0))) / (2 * safe), 0 * rho
    )
    padded = torch.nn.functional.pad(noise, (1, 1, 1, 1), mode="reflect")
    rows = a * padded[..., :, :-2] + padded[..., :, 1:-1] + a * padded[..., :, 2:]
    out = a * rows[..., :-2, :] + rows[..., 1:-1, :] + a * rows[..., 2:, :]
    return out / (1 + 2 * a**2)


_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_RANGE_RE = re.compile(rf"\s*({_NUM})\s*(?:-\s*({_NUM})\s*)?")

_SPEC_HELP = (
    "Use 'gaussian:25' (σ on the 0-255 scale), 'gaussian:0-55' (blind range), or "
    "'poisson-gaussian:peak=5-500,read=0-0.05' (photons at the bright end, read-noise std "
    "on the 0-1 scale)."
)


def _parse_range(text: str, name: str, spec: str) -> Range:
    m = _RANGE_RE.fullmatch(text)
    if not m:
        raise ValueError(
            f"Bad {name} {text!r} in noise spec {spec!r}: give a number or a range like "
            f"'0-55'. {_SPEC_HELP}"
        )
    lo = float(m.group(1))
    hi = float(m.group(2)) if m.group(2) is not None else lo
    if lo > hi:
        raise ValueError(f"Bad {name} range {text!r} in noise spec {spec!r}: low > high.")
    return lo, hi


def _parse_fields(params: str, allowed: tuple[str, ...], spec: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in params.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in allowed:
            raise ValueError(
                f"Bad field {part.strip()!r} in noise spec {spec!r}: expected "
                f"{' and '.join(k + '=...' for k in allowed)}. {_SPEC_HELP}"
            )
        if key in fields:
            raise ValueError(f"Field {key!r} given twice in noise spec {spec!r}.")
        fields[key] = value
    return fields


def parse_noise(spec: str) -> NoiseModel:
    """Build a noise model from a CLI spec string (see the module docstring for the forms)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"Empty or non-text noise spec {spec!r}. {_SPEC_HELP}")
    kind, _, params = spec.strip().partition(":")
    kind = kind.strip().lower().replace("_", "-")
    params = params.strip()
    if kind in ("gaussian", "gauss", "awgn"):
        if not params:
            return GaussianNoise(DEFAULT_GAUSSIAN_SIGMA)
        if "=" in params:
            value = _parse_fields(params, ("sigma",), spec).get("sigma")
            if value is None:
                return GaussianNoise(DEFAULT_GAUSSIAN_SIGMA)
            params = value
        return GaussianNoise(_parse_range(params, "sigma", spec))
    if kind in ("poisson-gaussian", "poisson-gauss", "pg"):
        fields = _parse_fields(params, ("peak", "read", "corr", "corr_p"), spec)
        peak = _parse_range(fields["peak"], "peak", spec) if "peak" in fields else DEFAULT_PEAK
        read = _parse_range(fields["read"], "read", spec) if "read" in fields else DEFAULT_READ
        corr = _parse_range(fields["corr"], "corr", spec) if "corr" in fields else 0.0
        corr_p = _parse_range(fields["corr_p"], "corr_p", spec)[0] if "corr_p" in fields else 1.0
        return PoissonGaussianNoise(peak=peak, read=read, corr=corr, corr_p=corr_p)
    raise ValueError(f"Unknown noise type {kind!r} in spec {spec!r}. {_SPEC_HELP}")
