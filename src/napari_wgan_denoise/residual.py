"""What a denoiser took away: statistics of the method noise (input − output).

A denoiser should remove noise and nothing else. If it does, the *method noise*
``input − output`` looks like the noise: no structure, no edges. These statistics measure
that without a clean reference, so they work on real data:

* :func:`whiteness` — the mean correlation of the residual with itself shifted by one
  pixel along Y and along X (neighbour autocorrelation). Pixel-independent noise gives
  about 0; a residual that contains image structure (edges, blobs, texture the model
  removed) gives clearly positive values, up to 1.
* :func:`gradient_correlation` — the Pearson correlation between the local size of the
  residual and the gradient magnitude of the output. About 0 when the model removed the
  same amount everywhere; positive when it removed more at edges (it blurred them) and
  negative when it removed less there than in flat areas.

Both take one plane (Y, X) or an RGB plane (Y, X, 3); :func:`residual_readout` bundles
them with the reference-based PSNR / SSIM / gradient ratio when a clean image is known.
Pure numpy + scikit-image: no napari, no torch.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = [
    "gradient_correlation",
    "method_noise",
    "neighbour_autocorrelation",
    "method_noise_map",
    "residual_readout",
    "stack_readout",
    "whiteness",
]


def method_noise(noisy: np.ndarray, denoised: np.ndarray) -> np.ndarray:
    """The residual ``noisy − denoised`` as float32 (what the model removed)."""
    a, b = np.asarray(noisy), np.asarray(denoised)
    if a.shape != b.shape:
        raise ValueError(f"Shapes differ: input {a.shape} vs output {b.shape}.")
    return a.astype(np.float32) - b.astype(np.float32)


def method_noise_map(noisy: np.ndarray, denoised: np.ndarray, rgb: bool = False) -> np.ndarray:
    """The method noise as one gray map: ``noisy − denoised`` (float32), for RGB data the
    mean over the three colours (a signed map: show it with limits symmetric about 0)."""
    res = method_noise(noisy, denoised)
    return res[..., :3].mean(axis=-1) if rgb else res


def _planes(a: np.ndarray, rgb: bool) -> list[np.ndarray]:
    """2-D float64 planes of ``a``: one per colour of an RGB plane, else ``a`` itself."""
    a = np.asarray(a, dtype=np.float64)
    if rgb:
        if a.ndim != 3 or a.shape[-1] < 3:
            raise ValueError(f"An RGB plane must have shape (Y, X, 3); got {a.shape}.")
        return [a[..., c] for c in range(3)]
    if a.ndim != 2:
        raise ValueError(f"Expected one plane (Y, X); got shape {a.shape}.")
    return [a]


def _is_rgb(a: np.ndarray, rgb: bool | None) -> bool:
    return bool(rgb) if rgb is not None else (a.ndim == 3 and a.shape[-1] in (3, 4))


def neighbour_autocorrelation(plane: np.ndarray) -> tuple[float, float]:
    """Correlation of a 2-D array with itself shifted by one pixel, along Y and along X.

    The plane's mean is removed first; each value is ``sum(r[i] r[i+1]) / sum(r[i]^2)``
    over the pairs (the lag-1 autocorrelation coefficient). NaN for a constant plane.
    """
    r = np.asarray(plane, dtype=np.float64)
    if r.ndim != 2 or min(r.shape) < 2:
        raise ValueError(f"Need a 2-D plane of at least 2 x 2 pixels, got shape {r.shape}.")
    r = r - r.mean()
    energy = float(np.sum(r * r))
    if energy <= 0:
        return float("nan"), float("nan")
    n = r.size
    # normalise each lag by its number of pairs so that both axes are unbiased
    ay = float(np.sum(r[1:, :] * r[:-1, :])) / (r.shape[0] - 1) / r.shape[1]
    ax = float(np.sum(r[:, 1:] * r[:, :-1])) / (r.shape[1] - 1) / r.shape[0]
    var = energy / n
    return ay / var, ax / var


def whiteness(residual: np.ndarray, *, rgb: bool | None = None) -> float:
    """Mean neighbour autocorrelation (Y and X, and over the colours of an RGB plane) of a
    residual: about 0 for white noise, near 1 when the residual holds smooth structure.

    The name follows the question it answers: is the residual white? Values above about
    0.1 mean the model removed something spatially correlated: image signal, or noise that
    was itself correlated (e.g. after demosaicing or compression).
    """
    res = np.asarray(residual)
    values = [v for p in _planes(res, _is_rgb(res, rgb)) for v in neighbour_autocorrelation(p)]
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _gradient_magnitude(plane: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.filters import gaussian, sobel

    return sobel(gaussian(plane, sigma=sigma, preserve_range=True)) if sigma > 0 else sobel(plane)


def gradient_correlation(
    residual: np.ndarray, image: np.ndarray, *, rgb: bool | None = None, sigma: float = 1.0
) -> float:
    """Pearson correlation between the local size of a residual and the image's gradient.

    ``image`` is the denoised output (less noisy than the input, so its gradients are
    where the edges are). The residual's local size is ``|residual|`` smoothed with a
    Gaussian of ``sigma`` pixels; the gradient is the Sobel magnitude of ``image`` smoothed
    by the same Gaussian. Positive: the model removed more at edges (blurred them, or
    removed real detail there); about 0: what it removed does not follow the edges. For
    RGB planes the colours are averaged first. NaN when either map is constant.
    """
    from skimage.filters import gaussian

    res, img = np.asarray(residual), np.asarray(image)
    if res.shape[:2] != img.shape[:2]:
        raise ValueError(f"Shapes differ: residual {res.shape} vs image {img.shape}.")
    is_rgb = _is_rgb(res, rgb)
    r_planes, i_planes = _planes(res, is_rgb), _planes(img, is_rgb)
    size = np.mean([np.abs(p) for p in r_planes], axis=0)
    plane = np.mean(i_planes, axis=0)
    local = gaussian(size, sigma=sigma, preserve_range=True) if sigma > 0 else size
    grad = _gradient_magnitude(plane, sigma)
    a, b = local - local.mean(), grad - grad.mean()
    denom = float(np.sqrt(np.sum(a * a) * np.sum(b * b)))
    return float(np.sum(a * b) / denom) if denom > 0 else float("nan")


def residual_readout(
    noisy: np.ndarray,
    denoised: np.ndarray,
    reference: np.ndarray | None = None,
    *,
    rgb: bool | None = None,
) -> dict[str, Any]:
    """The hallucination readout of one output: what it removed, and (with a reference)
    how close it is to the truth.

    Always ``whiteness`` and ``grad_corr`` of the method noise (see :func:`whiteness`
    and :func:`gradient_correlation`) and ``residual_std``, its standard deviation on the
    input's scale. With a clean ``reference``: ``psnr``, ``ssim`` and ``grad_ratio`` too
    (see :mod:`napari_wgan_denoise.metrics`). Takes one plane (Y, X) or RGB plane (Y, X, 3).
    """
    noisy_a, out_a = np.asarray(noisy), np.asarray(denoised)
    is_rgb = _is_rgb(noisy_a, rgb)
    if is_rgb:
        noisy_a, out_a = noisy_a[..., :3], out_a[..., :3]
    res = method_noise(noisy_a, out_a)
    result: dict[str, Any] = {
        "whiteness": whiteness(res, rgb=is_rgb),
        "grad_corr": gradient_correlation(res, out_a, rgb=is_rgb),
        "residual_std": float(np.std(res)),
    }
    if reference is not None:
        from .metrics import grad_ratio, psnr, ssim

        ref = np.asarray(reference)
        ref = ref[..., :3] if is_rgb else ref
        result.update(
            psnr=psnr(ref, out_a), ssim=ssim(ref, out_a), grad_ratio=grad_ratio(ref, out_a)
        )
    return result


def stack_readout(
    noisy: np.ndarray,
    denoised: np.ndarray,
    *,
    rgb: bool = False,
    max_planes: int = 8,
    max_side: int = 1024,
) -> dict[str, float]:
    """The reference-free part of :func:`residual_readout` for an image or a stack (YX or
    YXC planes last), averaged over up to ``max_planes`` evenly spaced planes; planes
    larger than ``max_side`` are measured on their central ``max_side`` square (the
    statistics are local, so a large crop says the same, in a fraction of the time)."""
    a, b = np.asarray(noisy), np.asarray(denoised)
    tail = 3 if rgb else 2
    a = a.reshape((-1, *a.shape[a.ndim - tail :]))
    b = b.reshape((-1, *b.shape[b.ndim - tail :]))
    y0 = max(0, (a.shape[1] - max_side) // 2)
    x0 = max(0, (a.shape[2] - max_side) // 2)
    a = a[:, y0 : y0 + max_side, x0 : x0 + max_side]
    b = b[:, y0 : y0 + max_side, x0 : x0 + max_side]
    picks = np.unique(np.linspace(0, len(a) - 1, min(len(a), max_planes)).round().astype(int))
    rows = [residual_readout(a[i], b[i], rgb=rgb) for i in picks]
    with warnings.catch_warnings():  # all-NaN (constant residual) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return {key: float(np.nanmean([r[key] for r in rows])) for key in rows[0]}
