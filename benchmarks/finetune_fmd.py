"""Fine-tuning evidence on real FMD confocal data (issues 6 and 15).

Fine-tunes each base model on the 10 raw frames of one FMD Confocal_BPAE_B field of view
and scores PSNR against that field's avg50 on the raw frames of *another* field (both
fields are held out of the shipped fluorescence models' training), before and after, for
each mode. The noisy-only modes (self-supervised, two-stage) treat the frames as
independent images (no pairing); n2n uses them as repeats and paired uses the avg50.

A mode may carry a variant after a colon: ``self-supervised:blind-spot``,
``self-supervised:neighbor2neighbor``, ``self-supervised:blind-spot+adv`` (critic against
the shipped references, weight ``--ss-adversarial-weight``), ``two-stage:base``,
``two-stage:ensemble``, ``two-stage:self-supervised``. ``--tta`` also scores the base and
each result with the 8-pass test-time augmentation. ``--n2v-scratch`` adds Noise2Void
(blind-spot loss) trained from a random initialisation of the same network for the wall
time of the default self-supervised run. Wall time and CPU time (``time.process_time``)
are recorded per run. Usage (from the repository root)::

    python benchmarks/finetune_fmd.py --base gray-mse-fast --base fluo-wgan-fast \
        --modes self-supervised,two-stage,n2n,paired --iterations 300 --threads 1 \
        --n2v-scratch --out runs/ft/issue15.json

``--seeds 0,1,2`` runs each mode once per seed (the patch draws, masks and recorruptions)
and prints the mean gain.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import skimage.io
import torch

from napari_wgan_denoise import denoise, load_model
from napari_wgan_denoise.metrics import psnr
from napari_wgan_denoise.models.model import DenoiseModel, create_model
from napari_wgan_denoise.training.finetune import finetune

FMD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fluo" / "fmd_confocal_bpae_b"


def load_field(fov: str) -> tuple[np.ndarray, np.ndarray]:
    """The raw frames ``(10, H, W)`` uint8 and the avg50 ground truth of one field."""
    raws = sorted((FMD / "raw" / fov).glob("*.png"))
    stack = np.stack([skimage.io.imread(p) for p in raws])
    return stack, skimage.io.imread(FMD / "gt" / fov / "avg50.png")


def score(model: DenoiseModel, frames: np.ndarray, gt: np.ndarray, tta: int = 0) -> float:
    """Mean PSNR (peak 255) of the denoised frames against the ground truth (``tta``: with
    that many flipped/rotated passes averaged)."""
    return float(
        np.mean(
            [psnr(gt, denoise(f, model, tta=tta).astype(np.float64), peak=255.0) for f in frames]
        )
    )


def mode_options(spec: str, args: argparse.Namespace, train_gt: np.ndarray, shape: tuple) -> dict:
    """``finetune`` keyword options for a mode spec ``mode[:variant]``."""
    mode, _, variant = spec.partition(":")
    kw: dict[str, Any] = {"mode": mode}
    if mode == "paired":
        kw["clean"] = np.broadcast_to(train_gt, shape).copy()
    if mode == "n2n":
        kw["axis"] = 0
    if mode == "self-supervised" and variant:
        loss, _, adv = variant.partition("+")
        kw["ss_loss"] = loss or None
        if adv:
            kw["adversarial_weight"] = args.ss_adversarial_weight
    if mode == "two-stage" and variant:
        kw["surrogates"] = variant
    if mode == "two-stage" and args.stages > 1:
        kw["stages"] = args.stages
    if args.references and (mode == "two-stage" or kw.get("adversarial_weight")):
        kw["references"] = args.references
    return kw


def scratch_model(base: DenoiseModel) -> DenoiseModel:
    """A randomly initialised copy of ``base``'s network (Noise2Void from scratch)."""
    cfg = dict(base.card.get("config") or {})
    model = create_model(base.architecture, base.channels, normalisation=base.normalisation, **cfg)
    model.card["name"] = f"{base.architecture}-scratch"
    return model


def run(
    base: DenoiseModel, spec: str, train: np.ndarray, kw: dict, args: argparse.Namespace, **extra
) -> tuple[DenoiseModel, float, float]:
    """Fine-tune and return the model, its wall and CPU seconds."""
    iterations = extra.pop("iterations", args.iterations)
    opts: dict[str, Any] = {
        "iterations": iterations,
        "val_every": max(1, iterations // 6),
        "lr": args.lr,
        "time_budget": args.time_budget,
        "save": False,
    }
    opts.update(kw)
    opts.update(extra)
    start, cpu = time.perf_counter(), time.process_time()
    model = finetune(base, train, **opts)
    return model, time.perf_counter() - start, time.process_time() - cpu


def row(
    base_name: str,
    spec: str,
    model: DenoiseModel,
    before: float,
    after: float,
    wall: float,
    cpu: float,
) -> dict[str, Any]:
    """One JSON row of the report."""
    ft = model.card["finetune"]
    runs = max(1, ft["iterations_run"])
    return {
        "base": base_name,
        "mode": spec,
        "before": round(before, 2),
        "after": round(after, 2),
        "gain": round(after - before, 2),
        "iterations": ft["iterations_run"],
        "best_iteration": ft["best_iteration"],
        "batch": ft["batch_size"],
        "patch": ft["patch_size"],
        "precision": ft.get("precision"),
        "s_per_it_wall": ft.get("seconds_per_iteration"),
        "s_per_it_cpu": ft.get("cpu_seconds_per_iteration"),
        "cpu_per_it_all_in": round(cpu / runs, 3),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "noise_check": ft["data"].get("noise_check"),
        "self_supervised": ft["data"].get("self_supervised"),
    }


def main() -> None:
    """Run every base x mode combination and write a JSON report."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", action="append", required=True)
    ap.add_argument("--train-fov", default="3")
    ap.add_argument("--test-fov", default="11")
    ap.add_argument("--modes", default="paired,two-stage,n2n,self-supervised")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--time-budget", type=float, default=None, help="seconds per run")
    ap.add_argument("--lr", type=float, default=None, help="default: the mode's own")
    ap.add_argument("--ss-adversarial-weight", type=float, default=1e-3)
    ap.add_argument("--stages", type=int, default=1, help="two-stage: regenerations (seed 002)")
    ap.add_argument("--references", default=None, help="folder of unpaired clean images")
    ap.add_argument("--n2v-scratch", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tta", action="store_true", help="also score base and result with TTA 8")
    ap.add_argument("--seeds", default="0", help="e.g. 0,1,2: each mode once per seed")
    ap.add_argument("--out", default="docs/finetune-fmd.json")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    train, train_gt = load_field(args.train_fov)
    test, test_gt = load_field(args.test_fov)
    noisy_db = np.mean([psnr(test_gt, f.astype(np.float64), 255.0) for f in test])
    rows = []
    ss_wall: float | None = None
    for base_name in args.base:
        base = load_model(base_name)
        before = score(base, test, test_gt)
        before_tta = score(base, test, test_gt, 8) if args.tta else None
        print(f"{base.name}: before {before:.2f} dB (noisy {noisy_db:.2f} dB)", flush=True)
        for spec in args.modes.split(","):
            kw = mode_options(spec, args, train_gt, train.shape)
            gains = []
            for seed in seeds:
                model, wall, cpu = run(base, spec, train, kw, args, seed=seed)
                if spec.startswith("self-supervised") and ss_wall is None:
                    ss_wall = wall
                after = score(model, test, test_gt)
                r = row(base.name, spec, model, before, after, wall, cpu)
                r["seed"] = seed
                gains.append(after - before)
                if before_tta is not None:
                    after_tta = score(model, test, test_gt, 8)
                    r.update(before_tta8=round(before_tta, 2), after_tta8=round(after_tta, 2))
                    r["gain_tta8"] = round(after_tta - before_tta, 2)
                print(json.dumps(r), flush=True)
                rows.append(r)
            if len(seeds) > 1:
                print(
                    f"{base.name} {spec}: mean gain {np.mean(gains):+.3f} dB over seeds "
                    f"{args.seeds} ({', '.join(f'{g:+.2f}' for g in gains)})",
                    flush=True,
                )
    if args.n2v_scratch:
        first = load_model(args.base[0])
        model0 = scratch_model(first)
        before = score(model0, test, test_gt)
        budget = ss_wall or args.time_budget or 120.0
        kw = {"mode": "self-supervised", "ss_loss": "blind-spot", "lr": 4e-4, "noise_check": False}
        model, wall, cpu = run(
            model0,
            "n2v-scratch",
            train,
            kw,
            args,
            iterations=10**6,
            time_budget=budget,
            val_every=50,
        )
        r = row(
            f"scratch ({first.name} network)",
            "n2v-scratch",
            model,
            before,
            score(model, test, test_gt),
            wall,
            cpu,
        )
        print(json.dumps(r), flush=True)
        rows.append(r)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
