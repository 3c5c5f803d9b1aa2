"""``wgan-denoise evaluate``: score denoisers on a test set, with BM3D / NLM baselines.

The core, :func:`evaluate`, needs neither napari nor Qt. It reads a folder of clean
reference images and either adds seeded Gaussian noise to them (``sigma``) or pairs them
with a folder of real noisy images (``noisy``, matched by file name), runs every model (and
every requested baseline) on exactly the same noisy images and returns one row per method:

``model``
    the model's name (or ``bm3d`` / ``nlm`` / ``noisy``); with test-time augmentation
    followed by ``" (tta N)"``
``n``
    number of images
``psnr``, ``ssim``
    mean over images of the per-image PSNR (dB) and SSIM (scikit-image). The peak / data
    range is 255 for 8-bit references and the reference image's own range (max - min)
    for any other dtype.
``grad_ratio``
    mean over images of (mean Sobel gradient magnitude of the output) / (that of the clean
    image): 1.0 is as sharp as the truth, below 1 blurrier, above 1 noisier or
    over-sharpened.
``s_per_mp``
    wall seconds of the denoising calls only (no file reading, noise generation or
    metrics) summed over the images, divided by the total megapixels (an RGB pixel counts
    once); each method is warmed up on a small image first. ``None`` for the ``noisy`` row.
``noisy_psnr``
    mean PSNR of the unprocessed noisy input (the same for every row of one run)
``mode``, ``sigma``, ``seed``, ``kind``
    ``"gaussian"`` or ``"paired"``; σ (``None`` in paired mode); the noise seed;
    ``"model"``, ``"baseline"`` or ``"noisy"``
``sigma_est``
    baselines in paired mode only: the mean σ estimated from the noisy images (0-255 scale)

Noise protocol (``sigma``), as in ``shared/data/README.md`` and the seed-000 paper: add
``N(0, σ²)`` on the 0-255 scale in floating point, neither clipped nor rounded. The noise of
image ``i`` (in name order, counting from 0 before ``limit``/``last`` are applied) comes from
``numpy.random.default_rng([seed, i])``, so every method, and every later run with the same
seed, sees the identical noisy image. For references that are not 8-bit, σ is relative to
255 = the reference's range (max - min), so σ = 25 gives an input PSNR of ≈ 20.2 dB
whatever the dtype.

Outputs are scored as floats, neither clipped to the data range nor rounded.

How models see the data: the noisy image is given to :func:`~napari_wgan_denoise.denoise`
as float32 and normalised exactly as ``denoise`` would normalise a file of the reference's
dtype (of the noisy file's dtype in paired mode): a model whose card fixes the scale for
that dtype (the 8-bit Gaussian models: ``0..255``) gets that range as ``value_range`` — the
noisy float values below 0 or above 255 are mapped like the 8-bit training data, not
stretched by percentiles — and a model with percentile normalisation normalises itself.

Baselines (CPU, optional packages, imported lazily and skipped with a note if missing), on
the 0-1 scale (the image divided by 255 for 8-bit references, else shifted by the
reference's minimum and divided by its range) with σ on that scale:

``bm3d``
    the PyPI package ``bm3d`` (``pip install bm3d``): ``bm3d.bm3d(z, sigma_psd=σ)`` for gray
    images and ``bm3d.bm3d_rgb(z, sigma_psd=σ)`` (opponent colour space) for RGB.
``nlm``
    ``skimage.restoration.denoise_nl_means`` with scikit-image's recommended settings for
    a known σ: ``h = 0.8 σ``, ``sigma = σ``, ``fast_mode=True``, ``patch_size=5``,
    ``patch_distance=6``.

In Gaussian mode the baselines are given the true σ; in paired mode σ is estimated from each
noisy image with ``skimage.restoration.estimate_sigma`` (a wavelet estimate that assumes
signal-independent white noise: it underestimates signal-dependent or spatially correlated
microscope noise, so the baselines are handicapped there).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import metrics
from ..errors import Cancelled
from ..validation import check_tta
from .methods import (
    BASELINES,
    NoteFn,
    _baseline_method,
    _check_channels,
    _load_models,
    _Method,
    _model_method,
)
from .samples import _count, _samples

ProgressFn = Callable[[int, int], Any]
__all__ = ["BASELINES", "ROW_KEYS", "evaluate", "format_table"]

ROW_KEYS = ("model", "n", "psnr", "ssim", "grad_ratio", "s_per_mp")


# --------------------------------------------------------------------------- core


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def evaluate(
    models: Sequence[Any] = (),
    *,
    clean: str | Path,
    sigma: float | None = None,
    noisy: str | Path | None = None,
    seed: int = 0,
    baselines: Sequence[str] = (),
    device: str = "auto",
    tile_size: int | None = None,
    tta: bool | int = False,
    progress: ProgressFn | None = None,
    limit: int | None = None,
    last: int | None = None,
    include_noisy: bool = False,
    per_image: bool = False,
    cancel: Any | None = None,
    notify: NoteFn | None = None,
) -> list[dict[str, Any]]:
    """Score denoisers on the clean images in ``clean`` and return one dict per method.

    Give exactly one of ``sigma`` (synthetic Gaussian noise, seeded by ``seed`` and the
    image's index) or ``noisy`` (a folder of real noisy images matched to ``clean`` by file
    name without suffix). ``models`` are registered names, file paths or
    :class:`~napari_wgan_denoise.DenoiseModel` objects; ``baselines`` names from
    ``("bm3d", "nlm")`` (a baseline whose package is missing is skipped with a note).
    ``limit`` keeps the first N images by name, ``last`` the last N. ``include_noisy`` adds a
    row ``"noisy"`` scoring the unprocessed input; ``per_image`` adds an ``"images"`` list
    with each image's scores. ``progress(done, total)`` counts (image, method) steps;
    ``cancel.is_set()`` stops the run with :class:`~napari_wgan_denoise.errors.Cancelled`;
    ``notify(message)`` receives notes (default: printed to stderr). ``tta`` runs every model
    with test-time augmentation as :func:`~napari_wgan_denoise.denoise` does (its rows are
    labelled ``"<model> (tta N)"``; the time counts all N passes).

    See the module docstring for the rows' keys, the noise protocol, the metrics' peak and
    the baselines' settings.
    """
    if notify is None:

        def notify(msg: str) -> None:
            print(msg, file=sys.stderr)

    if (sigma is None) == (noisy is None):
        raise ValueError(
            "Give either a noise level sigma (synthetic Gaussian noise on the 0-255 scale) or a "
            "folder of noisy images (paired mode), not both and not neither."
        )
    if sigma is not None:
        sigma = float(sigma)
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a positive number (0-255 scale), got {sigma}.")
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}.")
    baselines = list(dict.fromkeys(baselines))
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"Unknown baseline(s) {unknown}; choose from {', '.join(BASELINES)}.")
    passes = check_tta(tta)
    if not models and not baselines and not include_noisy:
        raise ValueError("Nothing to evaluate: give at least one model or baseline.")
    clean = Path(clean)
    noisy = Path(noisy) if noisy is not None else None
    mode = "gaussian" if noisy is None else "paired"
    total_images = _count(clean, noisy, limit, last)  # validates folders and pairing early

    methods: list[_Method] = []
    for dm, label in _load_models(list(models)):
        methods.append(_model_method(dm, label, device, tile_size, cancel, passes))
    for name in baselines:
        m = _baseline_method(name, sigma, notify)
        if m is not None:
            methods.append(m)
    if mode == "paired" and any(m.kind == "baseline" for m in methods):
        notify(
            "note: paired mode: the baselines get σ estimated from each noisy image "
            "(skimage.restoration.estimate_sigma), which assumes white signal-independent noise."
        )
    noisy_row = _Method("noisy", "noisy", None) if include_noisy else None

    total_steps = total_images * max(1, len(methods))
    done = 0
    if progress is not None:
        progress(0, total_steps)
    noisy_psnr: list[float] = []
    n = 0
    warmed = False
    for sample in _samples(clean, sigma, noisy, seed, limit, last):
        for method in methods:
            _check_channels(method, sample, clean)
        if not warmed:
            for method in methods:
                if method.warmup is not None:
                    method.warmup(sample.rgb)
            warmed = True
        n += 1
        noisy_psnr.append(metrics.psnr(sample.clean, sample.noisy, peak=sample.peak))
        scored = [(noisy_row, sample.noisy, 0.0)] if noisy_row is not None else []
        for method in methods:
            if cancel is not None and cancel.is_set():
                raise Cancelled("Evaluation cancelled.")
            assert method.run is not None
            start = time.perf_counter()
            out = method.run(sample)
            seconds = time.perf_counter() - start
            scored.append((method, out, seconds))
            done += 1
            if progress is not None:
                progress(done, total_steps)
        for method, out, seconds in scored:
            p = metrics.psnr(sample.clean, out, peak=sample.peak)
            s = metrics.ssim(sample.clean, out, peak=sample.peak)
            g = metrics.grad_ratio(sample.clean, out)
            method.psnr.append(p)
            method.ssim.append(s)
            method.grad.append(g)
            method.seconds += seconds
            method.megapixels += sample.megapixels
            if per_image:
                method.per_image.append(
                    {"name": sample.name, "psnr": p, "ssim": s, "grad_ratio": g, "seconds": seconds}
                )

    rows = []
    for method in ([noisy_row] if noisy_row is not None else []) + methods:
        row: dict[str, Any] = {
            "model": method.label,
            "n": n,
            "psnr": _mean(method.psnr),
            "ssim": _mean(method.ssim),
            "grad_ratio": _mean(method.grad),
            "s_per_mp": (
                None
                if method.kind == "noisy"
                else method.seconds / method.megapixels
                if method.megapixels
                else float("nan")
            ),
            "noisy_psnr": _mean(noisy_psnr),
            "mode": mode,
            "sigma": sigma,
            "seed": seed if mode == "gaussian" else None,
            "kind": method.kind,
        }
        if method.sigma_est:
            row["sigma_est"] = _mean(method.sigma_est)
        if per_image:
            row["images"] = method.per_image
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The plain-text table the CLI prints (model, n, PSNR, SSIM, grad ratio, s/MP)."""

    def num(v: Any, fmt: str) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return format(v, fmt)

    table = [("model", "n", "PSNR", "SSIM", "grad ratio", "s/MP")]
    for r in rows:
        table.append(
            (
                str(r["model"]),
                str(r["n"]),
                num(r["psnr"], ".2f"),
                num(r["ssim"], ".4f"),
                num(r["grad_ratio"], ".3f"),
                num(r["s_per_mp"], ".3f"),
            )
        )
    widths = [max(len(t[i]) for t in table) for i in range(len(table[0]))]
    lines = []
    for k, t in enumerate(table):
        cells = [t[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(t[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
