"""The noise check's neighbour-correlation estimates on noise of known correlation.
(docs/benchmarks.md §8, noise check)

OMP_NUM_THREADS=1 python3 benchmarks/noise_check_study.py
"""

import glob

import numpy as np
import skimage.io
import tifffile
import torch

from napari_wgan_denoise.data.noise import correlate
from napari_wgan_denoise.models.registry import load_model
from napari_wgan_denoise.training.finetune.noise import (
    _flat_block_correlation,
    _flattest,
    _reference_correlation,
    noise_check,
)

torch.set_num_threads(1)
DATA = "../shared/data"
rng = np.random.default_rng(7)
gen = torch.Generator().manual_seed(7)


def crop(a, s=256):
    h, w = a.shape[:2]
    y, x = (h - s) // 2, (w - s) // 2
    return a[y : y + s, x : x + s]


def norm(a):
    lo, hi = np.percentile(a, (0.1, 99.9))
    return ((a - lo) / (hi - lo)).astype(np.float32)


def corr_noise(shape, rho):
    n = torch.randn(shape, generator=gen)
    if rho > 0:
        n = correlate(
            n.reshape(-1, 1, *shape[-2:]),
            torch.full((int(np.prod(shape[:-2])) if len(shape) > 2 else 1,), rho),
        ).reshape(shape)
    return n.numpy()


# clean images, gray in [0,1], and RGB (C,H,W)
fmd_gt = [
    norm(skimage.io.imread(f"{DATA}/fluo/fmd_confocal_bpae_b/gt/{f}/avg50.png").astype(np.float32))
    for f in ("3", "11")
]
fmd_gt.append(norm(tifffile.imread(f"{DATA}/fluo/clean/stardist_img2d.tif").astype(np.float32)))
set12 = [
    skimage.io.imread(f).astype(np.float32) / 255
    for f in sorted(glob.glob(f"{DATA}/gray/set12/*.png"))[:4]
]
cells = [
    np.moveaxis(skimage.io.imread(f)[..., :3].astype(np.float32) / 255, -1, 0)
    for f in sorted(glob.glob(f"{DATA}/cells/cellavision_train/*.png"))[-3:]
]
fmd_raw = [
    norm(skimage.io.imread(f).astype(np.float32))
    for fov in ("3", "11")
    for f in sorted(glob.glob(f"{DATA}/fluo/fmd_confocal_bpae_b/raw/{fov}/*.png"))[:2]
]


def pg(c, rho, peak=30, read=0.01):
    x = torch.from_numpy(c)
    noisy = torch.poisson(x.clamp_min(0) * peak, generator=gen) / peak + read * torch.randn(
        x.shape, generator=gen
    )
    n = noisy - x
    if rho > 0:
        n = correlate(n.reshape(1, 1, *x.shape), torch.tensor([rho])).reshape(x.shape)
    return (x + n).numpy()


def box(c, sigma):
    n = rng.standard_normal(c.shape).astype(np.float32)
    k = np.ones((3, 3), np.float32) / 3  # keeps variance: 9 * (1/3)^2 = 1
    from scipy.ndimage import convolve

    n = np.stack([convolve(p, k, mode="wrap") for p in n.reshape(-1, *c.shape[-2:])]).reshape(
        c.shape
    )
    return c + sigma * n


conds = []
conds = []
conds.append(("FMD raw (real)", [crop(a) for a in fmd_raw], 0.0))
for rho in (0.0, 0.2, 0.3, 0.45, 0.6):
    conds.append((f"PG fluo corr {rho}", [crop(pg(c, rho)) for c in fmd_gt], rho))
for rho in (0.0, 0.3, 0.6):
    conds.append(
        (
            f"Gauss25 Set12 corr {rho}",
            [crop(c + 25 / 255 * corr_noise(c.shape, rho)) for c in set12],
            rho,
        )
    )
    conds.append(
        (
            f"Gauss25 cells corr {rho}",
            [crop(np.moveaxis(c + 25 / 255 * corr_noise(c.shape, rho), 0, -1)) for c in cells],
            rho,
        )
    )
for rho in (0.3, 0.6):
    conds.append((f"PG Set12 corr {rho}", [crop(pg(c, rho)) for c in set12], rho))
for sg in (2, 5):
    conds.append(
        (
            f"Gauss{sg} Set12 corr 0",
            [crop(c + sg / 255 * corr_noise(c.shape, 0)) for c in set12],
            0.0,
        )
    )
    conds.append(
        (
            f"Gauss{sg} cells corr 0",
            [crop(np.moveaxis(c + sg / 255 * corr_noise(c.shape, 0), 0, -1)) for c in cells],
            0.0,
        )
    )
for pk in (300, 3000):
    conds.append(
        (f"PG{pk} fluo corr 0", [crop(pg(c, 0, peak=pk, read=0.002)) for c in fmd_gt], 0.0)
    )
    conds.append(
        (f"PG{pk} fluo corr 0.6", [crop(pg(c, 0.6, peak=pk, read=0.002)) for c in fmd_gt], 0.6)
    )
conds.append(("clean Set12", [crop(c) for c in set12], 0.0))
conds.append(("box3 Set12 (corr 0.67)", [crop(box(c, 25 / 255)) for c in set12], 2 / 3))
conds.append(
    ("Gauss10 Set12 corr 0.3", [crop(c + 10 / 255 * corr_noise(c.shape, 0.3)) for c in set12], 0.3)
)
conds.append(
    ("Gauss50 Set12 corr 0.3", [crop(c + 50 / 255 * corr_noise(c.shape, 0.3)) for c in set12], 0.3)
)


gray = load_model("gray-mse-fast").network.eval()  # a base trained on white noise


def run_gray(y):  # (C, H, W) -> (C, H, W), each channel as a gray plane
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(y))[:, None]
        return gray(x)[:, 0].numpy()


columns = ("gray base", "reference", "flat blocks", "the check")
print(f"{'condition':28s} true  " + "  ".join(f"{c:>11s}" for c in columns))
for label, imgs, rho in conds:
    ys = [a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0) for a in imgs]
    ys = [np.ascontiguousarray(y, dtype=np.float32) for y in ys]
    report = noise_check(ys, run_gray)
    row = [
        report.base_correlation,
        max(_reference_correlation(ys, _flattest(ys))),
        max(_flat_block_correlation(_flattest(ys))),
        report.correlation,
    ]
    print(f"{label:28s} {rho:4.2f}  " + "  ".join(f"{v:11.2f}" for v in row), flush=True)
