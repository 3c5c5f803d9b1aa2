"""The noise check before self-supervised fine-tuning (issue 15): is the noise pixel-
independent (blind-spot and sub-sampling losses assume it), and does its variance follow
the signal (Poisson-Gaussian)?

The neighbour correlation (lag 1, along rows and columns; the larger is reported) is about
0 for pixel-independent noise and about 0.5-0.7 for wide-field camera noise or noise
filtered by a small kernel. It does not depend on the base model, which may leave
correlated noise in (a base trained on white noise leaves a nearly white residual): it
is the mean of two estimates, both read inside the planes' flattest 16 x 16 blocks (each
block's quadratic trend removed), where the planes hold mostly noise: the residual of a
reference model trained with correlated noise (``REFERENCE_MODEL``), and the blocks
themselves (docs/benchmarks.md §8, noise check). The variance-vs-mean fit bins
the pixels by the base's output and fits ``var = gain * mean + offset`` (network scale).
Divided by the same fit measured on the noisy planes alone (:func:`stack_noise_model`), it
says how much of the stack's noise the base already removes (``NoiseReport.removed``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: Neighbour correlation from which the noise counts as correlated. Both estimates read
#: noise of correlation 0.3 as 0.2-0.3 and pixel-independent noise as -0.1 to 0.1.
CORRELATION_FLAG = 0.15
#: The model whose residual estimates the correlation: trained with correlated noise
#: (neighbour correlation 0-0.7), so it removes it and its residual shows it.
REFERENCE_MODEL = "fluo-mse-fast"
#: Edge of the blocks of the model-free estimate, and the share of flattest blocks used.
BLOCK, FLATTEST = 16, 0.1
#: Edge of the central crop of each plane that is checked (pixels).
CHECK_CROP = 256
#: Share of the stack's noise variance that the base's residual must reach for the check
#: to say the base already removes most of it (docs/benchmarks.md §8: 0.77-0.89 for the
#: FMD-trained bases on FMD and synthetic Poisson-Gaussian noise, where self-supervised
#: fine-tuning gained -0.16 to +0.08 dB; 0.60-0.66 for the Gaussian-trained gray base,
#: where it gained +0.9 to +1.2 dB).
REMOVED_FLAG = 0.72


@dataclass(frozen=True)
class NoiseReport:
    """What the noise check found: the residual's neighbour ``correlation`` (max of rows /
    columns, and each), the variance-vs-mean fit ``gain`` / ``offset`` (network scale),
    whether the noise is ``signal_dependent`` (the fitted variance grows by more than half
    over the signal range), ``correlated`` (>= CORRELATION_FLAG) and
    whether the stack looks like ``repeats`` of one field (Noise2Noise applies)."""

    correlation_rows: float
    correlation_cols: float
    gain: float
    offset: float
    signal_dependent: bool
    repeats: bool
    #: The base's residual variance over the stack's own noise variance (measured on the
    #: noisy planes alone), at the planes' mean signal; NaN when unknown.
    removed: float = float("nan")
    #: The neighbour correlation of the base model's own residual (for the record).
    base_correlation: float = float("nan")

    @property
    def matched(self) -> bool:
        """Whether the base already removes most of the noise (``removed`` >= REMOVED_FLAG):
        fine-tuning then has little to gain and can lower it."""
        return bool(self.removed >= REMOVED_FLAG)

    @property
    def correlation(self) -> float:
        """The larger of the row and column neighbour correlations."""
        return max(self.correlation_rows, self.correlation_cols)

    @property
    def correlated(self) -> bool:
        """Whether blind-spot assumptions fail (correlation >= CORRELATION_FLAG)."""
        return self.correlation >= CORRELATION_FLAG

    def message(self) -> str:
        """One line for the CLI and the widget."""
        fit = f"variance = {self.gain:.2g} x mean + {self.offset:.2g}" + (
            " (signal-dependent)" if self.signal_dependent else ""
        )
        if not self.correlated:  # (correlated: the high-pass estimate misses the noise)
            matched = (
                f" The base already removes most of this noise ({min(self.removed, 1):.0%} "
                "of its variance): fine-tuning has little to gain and can lower it; compare "
                "the result with the base model."
                if self.matched
                else ""
            )
            return (
                f"Noise check: neighbour correlation {self.correlation:.2f} "
                f"(pixel-independent); {fit}.{matched}"
            )
        advice = (
            "the stack has repeats: Noise2Noise (n2n) is the better mode"
            if self.repeats
            else "self-supervised training recorrupts with the measured correlation, which "
            "can still lower a model that already handles such noise: compare the result "
            "with the base model"
        )
        return (
            f"Noise check: the noise is spatially correlated (neighbour correlation "
            f"{self.correlation:.2f} >= {CORRELATION_FLAG}); blind-spot assumptions fail, "
            f"{advice}; {fit}."
        )

    def as_dict(self) -> dict[str, Any]:
        """The report as plain values (for the model card and progress reports)."""
        values = {"correlation": self.correlation, **asdict(self), "correlated": self.correlated}
        return {
            k: (None if v != v else round(v, 4)) if isinstance(v, float) else v  # NaN: None
            for k, v in values.items()
        }


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def _crop(x: np.ndarray) -> np.ndarray:
    h, w = x.shape[-2:]
    y0, x0 = max(0, (h - CHECK_CROP) // 2), max(0, (w - CHECK_CROP) // 2)
    return x[..., y0 : y0 + CHECK_CROP, x0 : x0 + CHECK_CROP]


def noise_check(
    planes: list[np.ndarray],
    denoise: Callable[[np.ndarray], np.ndarray],
    *,
    max_planes: int = 4,
) -> NoiseReport:
    """Check the noise of ``planes`` (``(C, H, W)`` on the network scale) with the base
    model ``denoise`` (a ``(C, H, W)`` -> ``(C, H, W)`` call); up to ``max_planes`` planes,
    spread over the stack, each cropped to ``CHECK_CROP`` pixels."""
    if not planes:
        raise ValueError("The noise check needs at least one plane.")
    picks = np.unique(np.linspace(0, len(planes) - 1, min(max_planes, len(planes))).astype(int))
    ys = [np.ascontiguousarray(_crop(np.asarray(planes[i], np.float32))) for i in picks]
    outs = [np.asarray(denoise(y), np.float32) for y in ys]
    res = [y - o for y, o in zip(ys, outs)]
    base = _lag1(res)  # the base's own residual: the last resort, and for the record
    flattest = _flattest(ys)  # where both estimates read the noise
    estimates = [
        e for e in (_reference_correlation(ys, flattest), _flat_block_correlation(flattest)) if e
    ]
    rows, cols = (float(v) for v in np.mean(estimates or [base], axis=0))
    repeats = len(ys) >= 2 and _corr(outs[0], outs[1]) > 0.9
    gain, offset, dependent = _variance_fit(outs, res)
    s_gain, s_offset = stack_noise_model(ys, max_planes=len(ys))
    level = float(np.mean([o.mean() for o in outs]))  # the fits' mean variance
    stack_var = s_gain * level + s_offset
    removed = (gain * level + offset) / stack_var if stack_var > 0 else float("nan")
    return NoiseReport(
        rows,
        cols,
        gain,
        offset,
        dependent,
        repeats=bool(repeats),
        removed=float(removed),
        base_correlation=max(base),
    )


def _lag1(res: list[np.ndarray]) -> tuple[float, float]:
    """Mean neighbour correlation of ``(C, H, W)`` arrays along rows and along columns."""
    rows = float(np.mean([_corr(r[:, :, :-1], r[:, :, 1:]) for r in res]))
    cols = float(np.mean([_corr(r[:, :-1, :], r[:, 1:, :]) for r in res]))
    return rows, cols


@functools.lru_cache(maxsize=1)
def _reference_network() -> Any:
    from ...models.registry import load_model

    return load_model(REFERENCE_MODEL).network.eval()


def _blocks(x: np.ndarray) -> np.ndarray:
    """The whole BLOCK x BLOCK blocks of a ``(C, H, W)`` array, ``(n, BLOCK * BLOCK)``."""
    c, h, w = x.shape
    h, w = h // BLOCK * BLOCK, w // BLOCK * BLOCK
    b = x[:, :h, :w].reshape(c, h // BLOCK, BLOCK, w // BLOCK, BLOCK)
    return b.transpose(0, 1, 3, 2, 4).reshape(-1, BLOCK * BLOCK).astype(np.float64)


def _flattest(ys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """The flattest FLATTEST share of the planes' blocks (least variance once each block's
    quadratic trend is removed): ``(indices into the blocks of all planes, their detrended
    values)``; None without a whole block of nonzero variance."""
    grid = np.mgrid[0:BLOCK, 0:BLOCK].reshape(2, -1).astype(np.float64)
    gy, gx = grid - (BLOCK - 1) / 2
    design = np.stack([np.ones(BLOCK * BLOCK), gy, gx, gy * gy, gx * gx, gx * gy], 1)
    project = design @ np.linalg.pinv(design)  # onto the quadratic trend
    blocks = [_blocks(plane) for plane in ys if min(plane.shape[-2:]) >= BLOCK]
    if not blocks:
        return None
    flat = np.concatenate(blocks)
    flat = flat - flat @ project.T
    var = flat.var(axis=1)
    keep = np.argsort(var)[: max(1, int(len(var) * FLATTEST))]
    keep = keep[var[keep] > 0]
    return (keep, flat[keep]) if keep.size else None


def _reference_correlation(
    ys: list[np.ndarray], chosen: tuple[np.ndarray, np.ndarray] | None
) -> tuple[float, float] | None:
    """Rows/columns neighbour correlation of the reference model's residual (each channel
    as a gray plane) inside the planes' flattest blocks ``chosen`` (:func:`_flattest` of
    ``ys``), where the residual is noise rather than structure the model smoothed away
    (over the whole plane, weak pixel-independent noise of 2 in 255 read 0.20-0.31); None
    without such blocks or when the model cannot load."""
    import torch

    if chosen is None:
        return None
    try:
        network = _reference_network()
    except Exception:  # a broken install must not stop fine-tuning: the other estimate
        return None
    res = []
    for y in ys:
        h, w = y.shape[-2] // 2 * 2, y.shape[-1] // 2 * 2
        if min(h, w) < BLOCK:
            continue
        x = torch.from_numpy(np.ascontiguousarray(y[:, :h, :w]))[:, None]
        with torch.no_grad():
            res.append(_blocks((x - network(x)).numpy()[:, 0]))
    r = np.concatenate(res)[chosen[0]].reshape(-1, BLOCK, BLOCK)
    r = r - r.mean(axis=(1, 2), keepdims=True)
    return _corr(r[:, :, 1:], r[:, :, :-1]), _corr(r[:, 1:, :], r[:, :-1, :])


def _flat_block_correlation(
    chosen: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[float, float] | None:
    """Rows/columns neighbour correlation inside the flattest blocks ``chosen`` (from
    :func:`_flattest`): there the planes hold mostly noise, whatever a model does. Median
    over the blocks; None without a block."""
    if chosen is None:
        return None
    flat = chosen[1]
    v = flat.var(axis=1)
    r = flat.reshape(-1, BLOCK, BLOCK)
    rows = (r[:, :, 1:] * r[:, :, :-1]).mean(axis=(1, 2)) / v
    cols = (r[:, 1:, :] * r[:, :-1, :]).mean(axis=(1, 2)) / v
    return float(np.median(rows)), float(np.median(cols))


def _binned_spread(
    outs: list[np.ndarray],
    res: list[np.ndarray],
    spread: Callable[[np.ndarray], float] = np.var,
) -> tuple[list[float], list[float]]:
    """``(means, spreads)`` of the residuals ``res`` (``spread`` of each bin) against the
    signal ``outs`` in 16 quantile bins of the signal (bins of over 50 pixels)."""
    means = np.concatenate([o.ravel() for o in outs])
    resid = np.concatenate([r.ravel() for r in res])
    edges = np.unique(np.quantile(means, np.linspace(0, 1, 17)))
    idx = np.clip(np.searchsorted(edges, means, side="right") - 1, 0, max(len(edges) - 2, 0))
    mu, var = [], []
    for k in range(max(len(edges) - 1, 1)):
        sel = idx == k
        if sel.sum() > 50:
            mu.append(float(means[sel].mean()))
            var.append(float(spread(resid[sel])))
    return mu, var


def _variance_fit(
    outs: list[np.ndarray],
    res: list[np.ndarray],
    spread: Callable[[np.ndarray], float] = np.var,
) -> tuple[float, float, bool]:
    """``(gain, offset, signal_dependent)``: the residuals' variance (``spread`` of each
    bin) against the base's output in 16 quantile bins, fitted by a line; signal-dependent
    when the fitted variance grows by more than half over the signal range."""
    mu, var = _binned_spread(outs, res, spread)
    if len(mu) >= 2:
        gain, offset = (float(v) for v in np.polyfit(mu, var, 1))
    else:
        gain, offset = 0.0, float(np.concatenate([r.ravel() for r in res]).var())
    low, high = (min(mu), max(mu)) if mu else (0.0, 0.0)
    signal_dependent = bool(
        gain > 0 and gain * high + offset > 1.5 * max(gain * low + offset, 1e-12)
    )
    return gain, offset, signal_dependent


#: Immerkaer's 3x3 high-pass kernel, divided by 6 so that pixel-independent noise of
#: variance v gives filtered values of variance v.
_HIGH_PASS = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32) / 6.0


def _high_pass_bins(
    planes: list[np.ndarray], max_planes: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The 5x5 local means and Immerkaer's high-pass values of up to ``max_planes`` of the
    ``(C, H, W)`` planes (flattened per crop): what the white-noise estimates bin."""
    import torch
    import torch.nn.functional as F

    kernel = torch.from_numpy(_HIGH_PASS)[None, None]
    means, highs = [], []
    for y in _picked_crops(planes, max_planes):
        highs.append(F.conv2d(F.pad(y, (1, 1, 1, 1), mode="reflect"), kernel).numpy().ravel())
        means.append(_local_mean(y).numpy().ravel())
    return means, highs


def stack_noise_model(planes: list[np.ndarray], *, max_planes: int = 4) -> tuple[float, float]:
    """``(gain, offset)`` of ``var = gain * mean + offset`` (network scale), measured on
    the noisy ``planes`` (``(C, H, W)``) alone: Immerkaer's high-pass filter against the
    5x5 local mean, in 16 quantile bins (for pixel-independent noise; unlike the base's
    residual, which a base that leaves noise in underestimates)."""
    means, highs = _high_pass_bins(planes, max_planes)
    gain, offset, _ = _variance_fit([np.concatenate(means)], [np.concatenate(highs)])
    return gain, offset


@dataclass(frozen=True)
class VarianceCurve:
    """The noise variance against the signal (network scale) as measured, bin by bin:
    ``variances[i]`` at ``means[i]`` (increasing), linear between the bins and, beyond
    them, continued with the slope ``gain`` of the line through them. It follows noise
    whose variance is not a line in the signal, as a camera's near its offset, where the
    line's few bright bins pull it off (docs/benchmarks.md §8, session 7)."""

    means: tuple[float, ...]
    variances: tuple[float, ...]
    gain: float

    def variance(self, mean: Any) -> Any:
        """The variance at each value of ``mean`` (a tensor), never below a floor."""
        import torch

        x = torch.tensor(self.means, dtype=mean.dtype, device=mean.device)
        v = torch.tensor(self.variances, dtype=mean.dtype, device=mean.device)
        if len(self.means) == 1:
            return (v[0] + self.gain * (mean - x[0])).clamp_min(self.floor)
        i = torch.searchsorted(x, mean.contiguous()).clamp(1, len(x) - 1)
        x0, x1, v0, v1 = x[i - 1], x[i], v[i - 1], v[i]
        inside = v0 + (v1 - v0) * (mean - x0) / (x1 - x0)
        below = v[0] + self.gain * (mean - x[0])
        above = v[-1] + self.gain * (mean - x[-1])
        out = torch.where(mean < x[0], below, torch.where(mean > x[-1], above, inside))
        return out.clamp_min(self.floor)

    @property
    def floor(self) -> float:
        """The least variance the curve gives (a thousandth of its largest bin's)."""
        return max(1e-3 * max(abs(v) for v in self.variances), 1e-10)

    def as_record(self) -> dict[str, Any]:
        """The curve as plain values (for the model card)."""
        return {
            "means": [round(m, 6) for m in self.means],
            "variances": [float(f"{v:.4g}") for v in self.variances],
            "gain": float(f"{self.gain:.4g}"),
        }


def stack_noise_curve(planes: list[np.ndarray], *, max_planes: int = 4) -> VarianceCurve:
    """The noise variance of the ``planes`` (``(C, H, W)``) against their signal, bin by
    bin (:class:`VarianceCurve`), measured as :func:`stack_noise_model` measures its line
    (for pixel-independent noise)."""
    return _curve(*_high_pass_bins(planes, max_planes))


def _curve(
    means: list[np.ndarray],
    resid: list[np.ndarray],
    spread: Callable[[np.ndarray], float] = np.var,
    share: float = 1.0,
) -> VarianceCurve:
    """The :class:`VarianceCurve` of the residuals ``resid`` (``spread`` of each signal bin
    of ``means``, divided by the ``share`` of the noise variance they hold); one level
    where no bin has enough pixels."""
    mu, var = _binned_spread(means, resid, spread)
    if not mu:
        mu, var = [float(np.concatenate(means).mean())], [float(spread(np.concatenate(resid)))]
    var = [v / share for v in var]
    gain = float(np.polyfit(mu, var, 1)[0]) if len(mu) >= 2 else 0.0
    return VarianceCurve(tuple(mu), tuple(var), max(gain, 0.0))


def _picked_crops(planes: list[np.ndarray], max_planes: int) -> list[Any]:
    """Up to ``max_planes`` of the ``(C, H, W)`` planes, spread over the stack, each
    cropped to ``CHECK_CROP`` pixels, as ``(C, 1, H, W)`` float32 tensors."""
    import torch

    if not planes:
        raise ValueError("The noise model needs at least one plane.")
    picks = np.unique(np.linspace(0, len(planes) - 1, min(max_planes, len(planes))).astype(int))
    crops = []
    for i in picks:
        y = torch.from_numpy(np.ascontiguousarray(_crop(np.asarray(planes[i], np.float32))))
        crops.append(y.reshape(-1, 1, *y.shape[-2:]))
    return crops


#: Edge of the local mean that the noise models measure against (the correlated-noise
#: estimate subtracts it: wide enough that noise correlated over a pixel or two stays
#: mostly in the difference).
_LOCAL = 5


def _local_mean(y: Any) -> Any:
    """The ``_LOCAL`` x ``_LOCAL`` mean of a ``(N, 1, H, W)`` tensor (edges reflected)."""
    import torch.nn.functional as F

    pad = _LOCAL // 2
    return F.avg_pool2d(F.pad(y, (pad,) * 4, mode="reflect"), _LOCAL, stride=1)


def _robust_var(x: np.ndarray) -> float:
    """The variance read from the median absolute deviation (as for Gaussian noise), so
    that the few large values at edges count less."""
    return float((1.4826 * np.median(np.abs(x - np.median(x)))) ** 2)


@functools.lru_cache(maxsize=32)
def _local_residual_share(correlation: float) -> float:
    """The share of a pixel's noise variance left in pixel minus local mean, for noise
    whose neighbours correlate by ``correlation`` (the ``[a, 1, a]`` blur of
    :func:`..data.noise.correlate`), measured on a seeded noise field."""
    import torch

    from ...data.noise import correlate

    w = torch.randn((1, 1, 512, 512), generator=torch.Generator().manual_seed(0))
    n = correlate(w, torch.tensor([float(correlation)]))
    n = n / n.std()
    return float((n - _local_mean(n)).numpy().var())


def correlated_noise_curve(
    planes: list[np.ndarray], correlation: float, *, max_planes: int = 4
) -> VarianceCurve:
    """The noise variance against the signal, bin by bin (:class:`VarianceCurve`), for noise
    whose neighbours correlate by ``correlation``, measured on the noisy ``planes`` alone.
    The high-pass estimate of :func:`stack_noise_curve` sees little of such noise (at 0.6,
    about 6 % of its variance, and that share swings with the correlation); the pixel minus
    its 5 x 5 mean keeps most of it (70 %), and that share, computed for the correlation,
    is divided out. Robust spread per bin (the median absolute deviation), so that edges
    count less."""
    means, resid = [], []
    for y in _picked_crops(planes, max_planes):
        m = _local_mean(y)
        means.append(m.numpy().ravel())
        resid.append((y - m).numpy().ravel())
    share = _local_residual_share(float(np.clip(correlation, 0.0, 0.7)))
    return _curve(means, resid, _robust_var, share)
