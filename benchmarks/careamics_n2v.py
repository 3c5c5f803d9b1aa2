"""CAREamics Noise2Void from scratch on the FMD field of ``finetune_fmd.py`` (issue 15's
peer comparison): train on the 10 raw frames of one held-out field, with a wall-time
budget, and score the raw frames of another field against its avg50 (PSNR, peak 255),
as ``finetune_fmd.py`` scores our modes.

CAREamics needs its own environment (it pins its own torch); this script imports
nothing from napari-wgan-denoise. From the repository root::

    python3 -m venv runs/cm-venv
    runs/cm-venv/bin/pip install torch==2.13.0 careamics scikit-image
    OMP_NUM_THREADS=2 runs/cm-venv/bin/python benchmarks/careamics_n2v.py --seconds 38 200

Prints one JSON line per budget: the budget, the steps and epochs it ran, the wall time
of training and the score.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage.io
import torch
from careamics import CAREamist
from careamics.config.factories.n2v_factory import create_n2v_config
from lightning.pytorch import Callback

FMD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fluo" / "fmd_confocal_bpae_b"


def load_field(fov: str) -> tuple[np.ndarray, np.ndarray]:
    """The raw frames ``(10, H, W)`` and the avg50 ground truth of one field, float32."""
    raws = sorted((FMD / "raw" / fov).glob("*.png"))
    stack = np.stack([skimage.io.imread(p) for p in raws]).astype(np.float32)
    return stack, skimage.io.imread(FMD / "gt" / fov / "avg50.png").astype(np.float64)


def psnr(clean: np.ndarray, estimate: np.ndarray) -> float:
    """PSNR with a peak of 255 (8-bit data)."""
    return float(10 * np.log10(255.0**2 / np.mean((clean - estimate) ** 2)))


class WallClock(Callback):
    """Stop training once ``seconds`` of wall time have passed since it began."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.start, self.steps = seconds, 0.0, 0

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:  # noqa: ANN001, ANN002
        self.steps += 1
        if time.perf_counter() - self.start > self.seconds:
            trainer.should_stop = True


def run(seconds: float, train: np.ndarray, test: np.ndarray, gt: np.ndarray) -> dict:
    """Train N2V from scratch for ``seconds`` of wall time and score it."""
    config = create_n2v_config(
        experiment_name="n2v_fmd",
        data_type="array",
        axes="SYX",
        patch_size=[64, 64],
        batch_size=16,
        num_epochs=10_000,  # the wall clock stops it
    )
    clock = WallClock(seconds)
    with tempfile.TemporaryDirectory() as work:
        careamist = CAREamist(config, work_dir=work, callbacks=[clock], enable_progress_bar=False)
        start = time.perf_counter()
        careamist.train(train_data=train)
        wall = time.perf_counter() - start
        preds, _ = careamist.predict(test, axes="SYX", data_type="array")
    out = np.concatenate([np.asarray(p).reshape(-1, *test.shape[-2:]) for p in preds])
    scores = [psnr(gt, frame.astype(np.float64)) for frame in out]
    return {
        "peer": "CAREamics N2V from scratch",
        "budget_s": seconds,
        "train_wall_s": round(wall, 1),
        "steps": clock.steps,
        "after": round(float(np.mean(scores)), 2),
        "frames": len(scores),
    }


def main() -> None:
    """Run each wall-time budget and print its JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[38.0])
    ap.add_argument("--train-fov", default="3")
    ap.add_argument("--test-fov", default="11")
    args = ap.parse_args()
    train, _ = load_field(args.train_fov)
    test, gt = load_field(args.test_fov)
    print(json.dumps({"raw": round(float(np.mean([psnr(gt, f) for f in test])), 2)}))
    for seconds in args.seconds:
        torch.manual_seed(0)
        print(json.dumps(run(seconds, train, test, gt)), flush=True)


if __name__ == "__main__":
    main()
