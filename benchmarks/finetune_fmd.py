"""Fine-tuning evidence on real FMD confocal data (issue 6).

Fine-tunes each base model on the 10 raw frames of one FMD Confocal_BPAE_B field of view
and scores PSNR against that field's avg50 on the raw frames of *another* field (both
fields are held out of the shipped fluorescence models' training), before and after, for
each mode. Usage (from the repository root)::

    python benchmarks/finetune_fmd.py --base runs/ablation/srresnet3x32-mse \
        --base fluo-wgan-fast --iterations 200 --out docs/finetune-fmd.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import skimage.io

from napari_wgan_denoise import denoise, load_model
from napari_wgan_denoise.metrics import psnr
from napari_wgan_denoise.training.finetune import finetune

FMD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fluo" / "fmd_confocal_bpae_b"


def load_field(fov: str) -> tuple[np.ndarray, np.ndarray]:
    """The raw frames ``(10, H, W)`` uint8 and the avg50 ground truth of one field."""
    raws = sorted((FMD / "raw" / fov).glob("*.png"))
    stack = np.stack([skimage.io.imread(p) for p in raws])
    return stack, skimage.io.imread(FMD / "gt" / fov / "avg50.png")


def score(model, frames: np.ndarray, gt: np.ndarray) -> float:
    """Mean PSNR (peak 255) of the denoised frames against the ground truth."""
    return float(
        np.mean([psnr(gt, denoise(f, model).astype(np.float64), peak=255.0) for f in frames])
    )


def main() -> None:
    """Run every base x mode combination and write a JSON report."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", action="append", required=True)
    ap.add_argument("--train-fov", default="3")
    ap.add_argument("--test-fov", default="11")
    ap.add_argument("--modes", default="paired,two-stage,n2n")
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--patch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=None, help="default: the mode's own")
    ap.add_argument("--adversarial-weight", type=float, default=None)
    ap.add_argument("--out", default="docs/finetune-fmd.json")
    args = ap.parse_args()
    train, train_gt = load_field(args.train_fov)
    test, test_gt = load_field(args.test_fov)
    rows = []
    for base_name in args.base:
        base = load_model(base_name)
        before = score(base, test, test_gt)
        print(
            f"{base.name}: before {before:.2f} dB (noisy "
            f"{np.mean([psnr(test_gt, f.astype(np.float64), 255.0) for f in test]):.2f} dB)"
        )
        for mode in args.modes.split(","):
            kwargs = {}
            if mode == "paired":
                kwargs["clean"] = np.broadcast_to(train_gt, train.shape).copy()
            if mode == "n2n":
                kwargs["axis"] = 0
            start = time.perf_counter()
            model = finetune(
                base,
                train,
                mode=mode,
                iterations=args.iterations,
                batch_size=args.batch_size,
                patch_size=args.patch_size,
                val_every=max(1, args.iterations // 4),
                lr=args.lr,
                adversarial_weight=args.adversarial_weight,
                save=False,
                **kwargs,
            )
            wall = time.perf_counter() - start
            after = score(model, test, test_gt)
            row = {
                "base": base.name,
                "mode": mode,
                "before": round(before, 2),
                "after": round(after, 2),
                "gain": round(after - before, 2),
                "iterations": args.iterations,
                "lr": model.card["finetune"].get("lr"),
                "adversarial_weight": model.card["finetune"].get("adversarial_weight"),
                "wall_s": round(wall, 1),
                "device": model.card["finetune"]["device"],
                "best_iteration": model.card["finetune"]["best_iteration"],
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
