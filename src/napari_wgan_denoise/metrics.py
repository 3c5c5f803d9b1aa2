"""Image quality measures shared by ``evaluate``, training validation, fine-tuning and the
Compare widget: the one PSNR, SSIM and gradient ratio of the package."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def _as_float(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def psnr(clean: np.ndarray, estimate: np.ndarray, peak: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB; ``peak`` defaults to 255 for uint8 references and to
    the reference's range otherwise."""
    clean_f, est_f = _as_float(clean), _as_float(estimate)
    if clean_f.shape != est_f.shape:
        raise ValueError(f"Shapes differ: reference {clean_f.shape} vs estimate {est_f.shape}.")
    if peak is None:
        peak = 255.0 if np.asarray(clean).dtype == np.uint8 else float(np.ptp(clean_f)) or 1.0
    mse = float(np.mean((clean_f - est_f) ** 2))
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(peak**2 / mse))


def ssim(clean: np.ndarray, estimate: np.ndarray, peak: float | None = None) -> float:
    """Structural similarity (scikit-image); RGB images (last axis 3) are compared per channel."""
    from skimage.metrics import structural_similarity

    clean_f, est_f = _as_float(clean), _as_float(estimate)
    if peak is None:
        peak = 255.0 if np.asarray(clean).dtype == np.uint8 else float(np.ptp(clean_f)) or 1.0
    rgb = clean_f.ndim == 3 and clean_f.shape[-1] == 3
    return float(
        structural_similarity(clean_f, est_f, data_range=peak, channel_axis=-1 if rgb else None)
    )


def gradient_magnitude(image: np.ndarray) -> float:
    """Mean Sobel gradient magnitude (over all channels of an RGB image)."""
    from skimage.filters import sobel

    img = _as_float(image)
    if img.ndim == 3 and img.shape[-1] == 3:
        return float(np.mean([sobel(img[..., c]).mean() for c in range(3)]))
    return float(sobel(img).mean())


def grad_ratio(clean: np.ndarray, estimate: np.ndarray) -> float:
    """Sharpness of an estimate relative to the truth: mean Sobel magnitude of the estimate
    over that of the clean image. 1.0 is as sharp as the truth; below 1 is blurrier."""
    ref = gradient_magnitude(clean)
    return gradient_magnitude(estimate) / ref if ref > 0 else float("nan")


def _planes(a: np.ndarray, rgb: bool) -> Iterator[np.ndarray]:
    """The YX (YXC for RGB) planes of an nD array."""
    tail = 3 if rgb else 2
    a = a[..., :3] if rgb else a
    yield from a.reshape((-1, *a.shape[a.ndim - tail :]))


def quality_metrics(reference: np.ndarray, estimate: np.ndarray, rgb: bool) -> dict[str, float]:
    """PSNR (whole array), SSIM (mean over YX planes) and gradient ratio (mean Sobel
    magnitude of the estimate over that of the reference, over all planes) of one output
    against a clean reference of any dimensionality (RGBA: the colours only).

    The peak is 255 for uint8 references and the reference's range otherwise.
    """
    ref = np.asarray(reference)
    if rgb:
        ref, estimate = ref[..., :3], estimate[..., :3]
    peak = 255.0 if ref.dtype == np.uint8 else float(np.ptp(ref.astype(np.float64))) or 1.0
    ssims, g_ref, g_est = [], [], []
    for r, e in zip(_planes(ref, rgb), _planes(estimate, rgb)):
        ssims.append(ssim(r, e, peak=peak))
        g_ref.append(gradient_magnitude(r))
        g_est.append(gradient_magnitude(e))
    g = float(np.mean(g_ref))
    return {
        "psnr": psnr(ref, estimate, peak=peak),
        "ssim": float(np.mean(ssims)),
        "grad_ratio": float(np.mean(g_est)) / g if g > 0 else float("nan"),
    }
