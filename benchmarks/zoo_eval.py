"""Held-out scores of the CPU zoo beside BM3D and NLM, measured in the same run (issue 14).

Usage (from the repository root)::

    python -m benchmarks.zoo_eval gray  --model gray-mse-fast --model gray-wgan-fast
    python -m benchmarks.zoo_eval cells --model cells-mse-fast --model cells-wgan-fast
    python -m benchmarks.zoo_eval fluo  --model fluo-mse-fast --model fluo-wgan-fast
    python -m benchmarks.zoo_eval cells-other --model cells-mse-fast --model cells-wgan-fast
    # add --json FILE to keep the rows, --no-baselines to skip BM3D/NLM,
    # --baselines nlm to run NLM alone, --tta 8 to average each model over the 8
    # flips/rotations of its input (rows "<model> (tta 8)"; with --no-baselines, beside
    # the plain rows of an earlier run)
    # a --model may also be a training checkpoint: runs/zoo/gray-mse-checkpoints/last

* gray: Set12 at σ 25 and 50 (seeded, float, unclipped: the seed-000 protocol).
* cells: CellaVision 077-088 (held out from training) at σ 25/35/50, and the same images
  after each fixed colour shift of ``data/colour.VALIDATION_SHIFTS`` (models only; the
  stain-robustness rows: mean and worst shift).
* cells-other: RGB images no cell model trains on, at σ 25/35/50: scikit-image's
  immunohistochemistry image (another stain, DAB and haematoxylin, and another tissue)
  and three of its natural colour photographs (astronaut, coffee, chelsea: structure the
  smooth blood smears lack).
* fluo: FMD Confocal_BPAE_B fields 3 and 11 (held out), each raw frame against the
  50-frame average; and synthetic Poisson-Gaussian noise (peak 30 photons, read 0.01) on
  the held-out clean images (avg50 of fields 3 and 11, StarDist's image), once
  pixel-independent and once spatially correlated (neighbour correlation 0.6, as
  wide-field cameras), with a fixed seed.

Derived test folders are written under ``runs/eval/`` (git-ignored) and reused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import skimage.io
import tifffile
import torch

from napari_wgan_denoise.data.colour import colour_shifted_copies
from napari_wgan_denoise.data.noise import correlate
from napari_wgan_denoise.evaluation import evaluate

DATA = Path("../shared/data")
EVAL = Path("runs/eval")
FMD = DATA / "fluo/fmd_confocal_bpae_b"
HELD_OUT_FOVS = ("3", "11")
CELLS_HELD_OUT = 12  # 077-088


def _row(r: dict) -> str:
    return f"{r['psnr']:.2f} / {r['ssim']:.3f} / {r['grad_ratio']:.3f}"


def _table(title: str, columns: list[str], rows: dict[str, list[str]]) -> str:
    lines = [f"\n{title}\n", "| method | " + " | ".join(columns) + " |"]
    lines.append("|---|" + "---:|" * len(columns))
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows.items()]
    return "\n".join(lines)


def _run(models, baselines, tta=1, **kw) -> list[dict]:
    return evaluate(list(models), baselines=baselines, tta=tta, notify=lambda m: None, **kw)


def gray(models, baselines, tta=1) -> dict:
    """Set12 at σ 25 and 50."""
    out, table = {}, {}
    for sigma in (25, 50):
        rows = _run(
            models, baselines, tta, clean=DATA / "gray/set12", sigma=sigma, include_noisy=True
        )
        out[sigma] = rows
        for r in rows:
            table.setdefault(r["model"], []).append(
                _row(r) + f" ({r.get('s_per_mp') or 0:.2f} s/MP)"
            )
    print(_table("Set12 (PSNR / SSIM / gradient ratio)", ["σ 25", "σ 50"], table))
    return out


def _shifted_folders() -> list[tuple[str, Path]]:
    files = sorted((DATA / "cells/cellavision_train").glob("*.png"))[-CELLS_HELD_OUT:]
    folders: dict[str, Path] = {}
    for f in files:
        img = skimage.io.imread(f)[..., :3].astype(np.float32)
        for k, (name, arr) in enumerate(colour_shifted_copies(img)):
            folder = EVAL / "cells_shifted" / f"{k}"
            folders[name] = folder
            target = folder / f.name
            if not target.exists():
                folder.mkdir(parents=True, exist_ok=True)
                skimage.io.imsave(
                    target, np.round(arr).clip(0, 255).astype(np.uint8), check_contrast=False
                )
    return list(folders.items())


def cells(models, baselines, tta=1) -> dict:
    """CellaVision 077-088 at σ 25/35/50, plain and colour-shifted."""
    out, table = {"plain": {}, "shifted": {}}, {}
    clean = DATA / "cells/cellavision_train"
    for sigma in (25, 35, 50):
        rows = _run(
            models,
            baselines,
            tta,
            clean=clean,
            sigma=sigma,
            last=CELLS_HELD_OUT,
            include_noisy=True,
        )
        out["plain"][sigma] = rows
        for r in rows:
            table.setdefault(r["model"], []).append(_row(r))
    print(
        _table(
            "CellaVision 077-088 (PSNR / SSIM / gradient ratio)", ["σ 25", "σ 35", "σ 50"], table
        )
    )
    shifted_table = {}
    for sigma in (25, 35, 50):
        per_model: dict[str, list[float]] = {}
        for name, folder in _shifted_folders():
            rows = _run(models, (), tta, clean=folder, sigma=sigma)
            out["shifted"].setdefault(sigma, {})[name] = rows
            for r in rows:
                per_model.setdefault(r["model"], []).append(r["psnr"])
        plain = {r["model"]: r["psnr"] for r in out["plain"][sigma]}
        for model, values in per_model.items():
            shifted_table.setdefault(model, []).append(
                f"{np.mean(values):.2f} (worst {min(values):.2f}; plain {plain[model]:.2f})"
            )
    print(
        _table(
            "Colour-shifted copies, mean PSNR over 6 fixed shifts",
            ["σ 25", "σ 35", "σ 50"],
            shifted_table,
        )
    )
    return out


OTHER_RGB = {
    "other stain (IHC)": ("immunohistochemistry",),
    "natural RGB": ("astronaut", "coffee", "chelsea"),
}


def _other_folders() -> list[tuple[str, Path]]:
    from skimage import data

    folders = []
    for k, (label, names) in enumerate(OTHER_RGB.items()):
        folder = EVAL / f"cells_other/{k}"
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            target = folder / f"{name}.png"
            if not target.exists():
                img = np.asarray(getattr(data, name)())[..., :3]
                skimage.io.imsave(target, img, check_contrast=False)
        folders.append((label, folder))
    return folders


def cells_other(models, baselines, tta=1) -> dict:
    """Other stains and natural colour images at σ 25/35/50 (no cell model trains on them)."""
    out: dict = {}
    for label, folder in _other_folders():
        table = {}
        for sigma in (25, 35, 50):
            rows = _run(models, baselines, tta, clean=folder, sigma=sigma, include_noisy=True)
            out.setdefault(label, {})[sigma] = rows
            for r in rows:
                table.setdefault(r["model"], []).append(_row(r))
        print(_table(f"{label} (PSNR / SSIM / gradient ratio)", ["σ 25", "σ 35", "σ 50"], table))
    return out


def _fmd_folders() -> tuple[Path, Path]:
    noisy, clean = EVAL / "fmd_val/noisy", EVAL / "fmd_val/clean"
    if not noisy.exists():
        noisy.mkdir(parents=True)
        clean.mkdir(parents=True)
        for fov in HELD_OUT_FOVS:
            gt = skimage.io.imread(FMD / "gt" / fov / "avg50.png")
            for k, raw in enumerate(sorted((FMD / "raw" / fov).glob("*.png"))):
                name = f"fov{fov}_{k:02d}.png"
                skimage.io.imsave(noisy / name, skimage.io.imread(raw), check_contrast=False)
                skimage.io.imsave(clean / name, gt, check_contrast=False)
    return noisy, clean


def _synthetic_folders(rho: float) -> tuple[Path, Path]:
    root = EVAL / f"fluo_synthetic_corr{rho:g}"
    noisy, clean = root / "noisy", root / "clean"
    if noisy.exists():
        return noisy, clean
    noisy.mkdir(parents=True)
    clean.mkdir(parents=True)
    images = [skimage.io.imread(FMD / "gt" / fov / "avg50.png") for fov in HELD_OUT_FOVS]
    images.append(tifffile.imread(DATA / "fluo/clean/stardist_img2d.tif"))
    gen = torch.Generator().manual_seed(2026)
    for k, img in enumerate(images):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = np.percentile(arr, (0.1, 99.9))
        c01 = np.clip((arr - lo) / (hi - lo), 0, 1).astype(np.float32)
        x = torch.from_numpy(c01)[None, None]
        peak, read = 30.0, 0.01
        noisy01 = torch.poisson(x * peak, generator=gen) / peak
        noisy01 = noisy01 + read * torch.randn(x.shape, generator=gen)
        if rho > 0:
            noisy01 = x + correlate(noisy01 - x, torch.tensor([rho]))
        tifffile.imwrite(noisy / f"{k}.tif", noisy01[0, 0].numpy())
        tifffile.imwrite(clean / f"{k}.tif", c01)
    return noisy, clean


def fluo(models, baselines, tta=1) -> dict:
    """FMD held-out fields (real noise) and synthetic independent/correlated noise."""
    out, table = {}, {}
    sets = [("FMD fields 3+11", *_fmd_folders())]
    for rho in (0.0, 0.6):
        sets.append((f"synthetic PG, corr {rho:g}", *_synthetic_folders(rho)))
    for label, noisy, clean in sets:
        rows = _run(models, baselines, tta, clean=clean, noisy=noisy, include_noisy=True)
        out[label] = rows
        for r in rows:
            table.setdefault(r["model"], []).append(_row(r))
    print(_table("Fluorescence (PSNR / SSIM / gradient ratio)", [s[0] for s in sets], table))
    return out


def _model(name: str):
    """A model name or file as is; a training checkpoint as a model (named after its run
    and iteration)."""
    meta = Path(f"{name}.json")
    if meta.exists() and "iteration" in json.loads(meta.read_text()):
        from benchmarks.generator_study import checkpoint_model

        model, info = checkpoint_model(Path(name))
        model.card["name"] = f"{model.card['name']}@{info['iteration']}"
        return model
    return name


def main() -> None:
    """Run one family's held-out evaluation and print markdown tables."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("family", choices=("gray", "cells", "cells-other", "fluo"))
    ap.add_argument("--model", action="append", default=[])
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument(
        "--baselines",
        default="bm3d,nlm",
        help="comma-separated (bm3d, nlm): e.g. nlm alone for the speed comparison, BM3D "
        "being deterministic but ~140 s/MP",
    )
    ap.add_argument(
        "--tta",
        type=int,
        default=1,
        choices=(1, 2, 4, 8),
        metavar="N",
        help="average each model over N flips/rotations of its input (1, 2, 4 or 8; rows "
        "labelled '<model> (tta N)')",
    )
    ap.add_argument("--json")
    args = ap.parse_args()
    baselines = () if args.no_baselines else tuple(b for b in args.baselines.split(",") if b)
    models = [_model(m) for m in args.model]
    run = {"gray": gray, "cells": cells, "cells-other": cells_other, "fluo": fluo}[args.family]
    result = run(models, baselines, args.tta)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
