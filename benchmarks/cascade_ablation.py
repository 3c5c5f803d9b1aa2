"""Seed 004's Table 2 ablation on microscopy: train the cascade with the gradual strategy and
without pre-training, then score input, inpainting only and both cascades on held-out crops
with synthetic holes + blur + noise.

Usage (from the repository root; ``--data`` is ../shared/data)::

    python benchmarks/cascade_ablation.py train --variant gradual --out runs/cascade
    python benchmarks/cascade_ablation.py train --variant scratch --out runs/cascade
    python benchmarks/cascade_ablation.py evaluate --out runs/cascade
    python benchmarks/cascade_ablation.py ship --variant scratch --out runs/cascade
    python benchmarks/cascade_ablation.py ship --variant gradual --out runs/cascade \
        --name fluo-cascade-gradual-fast

Training data: fluo/clean (without the StarDist image) and the FMD Confocal_BPAE_B 50-frame
averages of every field except 3, 11 (held out for evaluation) and 20 (model selection).
Evaluation: the four 256x256 quadrants of FMD fields 3 and 11 and of the StarDist image,
each damaged with its own fixed seed. ``ship`` copies the chosen variant into the package as
a named model: the variant that scored higher on these crops ships as the default
``fluo-cascade-fast`` (see docs/benchmarks.md, section 6), and the gradual one, seed 004's
own strategy, as ``fluo-cascade-gradual-fast``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from napari_wgan_denoise import restore
from napari_wgan_denoise.data.degrade import (
    CleanPatchPool,
    DegradationConfig,
    damage_image,
    image_planes,
)
from napari_wgan_denoise.io import read_image
from napari_wgan_denoise.metrics import psnr, ssim
from napari_wgan_denoise.models import create_model, load_model, save_model
from napari_wgan_denoise.training.cascade import CascadeTrainConfig, CascadeTrainer, validation_set

HELD_OUT_FIELDS = ("3", "11")
#: The table's label of each trained cascade variant, in the table's order.
VARIANT_LABELS = {"scratch": "cascade, no pre-training", "gradual": "cascade, gradual"}
SELECTION_FIELD = "20"

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "zoo" / "fluo-cascade-fast.yaml"
FAST = yaml.safe_load(CONFIG.read_text())


def _gt(data: Path, field: str) -> Path:
    return data / "fluo" / "fmd_confocal_bpae_b" / "gt" / field / "avg50.png"


def training_pool(data: Path) -> CleanPatchPool:
    """Clean fluorescence planes for training (nothing held out is in it)."""
    planes = []
    for path in sorted((data / "fluo" / "clean").glob("*.tif")):
        if "stardist" in path.name.lower():
            continue
        planes += [(path.name, p) for p in image_planes(read_image(path))]
    fields = sorted(p.name for p in (data / "fluo" / "fmd_confocal_bpae_b" / "gt").iterdir())
    for field in fields:
        if field in HELD_OUT_FIELDS or field == SELECTION_FIELD:
            continue
        planes += [(f"fmd_gt_{field}", p) for p in image_planes(read_image(_gt(data, field)))]
    return CleanPatchPool(planes)


def held_out_crops(data: Path) -> list[tuple[str, np.ndarray]]:
    """The 256x256 quadrants of the held-out clean images (0-1 scale)."""
    sources = [(f"fmd{f}", _gt(data, f)) for f in HELD_OUT_FIELDS]
    sources.append(("stardist", data / "fluo" / "clean" / "stardist_img2d.tif"))
    crops = []
    for name, path in sources:
        (plane,) = image_planes(read_image(path))
        for q, (y, x) in enumerate([(0, 0), (0, 256), (256, 0), (256, 256)]):
            crops.append((f"{name}_q{q}", plane[y : y + 256, x : x + 256]))
    return crops


def cmd_train(args: argparse.Namespace) -> None:
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    values = dict(FAST, gradual=args.variant == "gradual", seed=args.seed)
    config = CascadeTrainConfig.from_dict(values)
    pool = training_pool(data)
    selection = image_planes(read_image(_gt(data, SELECTION_FIELD)))
    degradation = DegradationConfig.from_dict(config.degradation)
    trainer = CascadeTrainer(config, pool, validation_set(selection, 1000, degradation, 256))
    log = (out / f"{args.variant}.log").open("w")

    def progress(st) -> None:
        if st.iteration % 50 == 0 or st.val_psnr is not None:
            row = {k: v for k, v in vars(st).items() if v == v and v is not None}
            log.write(json.dumps(row) + "\n")
            log.flush()

    t0 = time.perf_counter()
    model = trainer.run(progress=progress)
    model.card.update(name=f"cascade-{args.variant}", modality="fluo")
    save_model(model, out / f"{args.variant}")
    if "inpaint-adv" in trainer.stage_states:
        snap = create_model("cascade", 1, **config.arch_config)
        snap.network.load_state_dict(trainer.stage_states["inpaint-adv"])
        snap.card.update(
            name="cascade-inpaint-only", modality="fluo", training=model.card["training"]
        )
        save_model(snap, out / "inpaint-only")
    print(f"{args.variant}: {time.perf_counter() - t0:.0f} s, {model.card['metrics']}")


def _scores(clean: np.ndarray, estimate: np.ndarray, holes: np.ndarray) -> dict[str, float]:
    return {
        "psnr": psnr(clean, estimate, peak=1.0),
        "ssim": ssim(clean, estimate, peak=1.0),
        "psnr_holes": psnr(clean[holes], estimate[holes], peak=1.0),
    }


def cmd_evaluate(args: argparse.Namespace) -> None:
    data, out = Path(args.data), Path(args.out)
    torch.set_num_threads(args.threads)
    models = {
        name: load_model(out / name)
        for name in ("inpaint-only", "scratch", "gradual")
        if (out / f"{name}.safetensors").exists()
    }
    degradation = DegradationConfig()
    crops = held_out_crops(data)
    rows: dict[str, list[dict[str, float]]] = {}
    for k, (_name, clean) in enumerate(crops):
        observed, holes = damage_image(clean, 5000 + k, degradation)
        results = {"input (holes = 0)": observed}
        if "inpaint-only" in models:
            results["inpainting only (stages 1-2)"] = restore(
                observed, holes, models["inpaint-only"], return_inpainted=True, device="cpu"
            )[1]
        for variant, label in VARIANT_LABELS.items():
            if variant in models:
                full, filled = restore(
                    observed, holes, models[variant], return_inpainted=True, device="cpu"
                )
                results[f"{label}: inpainting output"] = filled
                results[f"{label} (full)"] = full
        for label, estimate in results.items():
            rows.setdefault(label, []).append(_scores(clean, estimate, holes))
    summary = {
        label: {key: float(np.mean([r[key] for r in rs])) for key in rs[0]}
        for label, rs in rows.items()
    }
    summary["_meta"] = {"crops": len(crops), "degradation": degradation.to_dict()}
    (out / "ablation.json").write_text(json.dumps(summary, indent=2))
    print("| output | PSNR (dB) | SSIM | PSNR in holes (dB) |")
    print("|---|---:|---:|---:|")
    for label, s in summary.items():
        if not label.startswith("_"):
            print(f"| {label} | {s['psnr']:.2f} | {s['ssim']:.3f} | {s['psnr_holes']:.2f} |")


def cmd_ship(args: argparse.Namespace) -> None:
    """Copy a trained cascade variant into the package under ``--name``, with its held-out
    scores from ``ablation.json`` in the card."""
    out = Path(args.out)
    model = load_model(out / args.variant)
    summary = json.loads((out / "ablation.json").read_text())
    meta = summary["_meta"]
    label = VARIANT_LABELS[args.variant]
    held_out = {
        "crops": "256x256 quadrants of FMD Confocal_BPAE_B avg50 fields 3, 11 + StarDist image",
        "n": meta["crops"],
        "degradation": meta["degradation"],
        "input": summary["input (holes = 0)"],
        "inpainted": summary[f"{label}: inpainting output"],
        "restored": summary[f"{label} (full)"],
    }
    metrics = dict(model.card.get("metrics", {}), held_out=held_out)
    target = Path(__file__).resolve().parents[1] / "src" / "napari_wgan_denoise" / "weights"
    path = save_model(
        model,
        target / args.name,
        name=args.name,
        modality="fluo",
        metrics=metrics,
    )
    print(f"shipped {path}")


def main() -> None:
    """Train a cascade variant, evaluate the trained ones, or ship one into the package."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("train", "evaluate", "ship"):
        p = sub.add_parser(name)
        p.add_argument("--data", default="../shared/data")
        p.add_argument("--out", default="runs/cascade")
        p.add_argument("--threads", type=int, default=1)
        if name != "evaluate":
            p.add_argument("--variant", choices=tuple(VARIANT_LABELS), required=True)
        if name == "train":
            p.add_argument("--seed", type=int, default=0)
        if name == "ship":
            p.add_argument("--name", default="fluo-cascade-fast")
    args = ap.parse_args()
    {"train": cmd_train, "evaluate": cmd_evaluate, "ship": cmd_ship}[args.cmd](args)


if __name__ == "__main__":
    main()
