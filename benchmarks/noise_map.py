"""The noise-level input's estimate, global against per-pixel (issue 14, benchmarks.md §7g).

Scores each noise-level ``shuffle`` model on the raw frames of the held-out FMD confocal
fields 11 and 3 (against their avg50) and on Set12 at σ 25 and 50 (Gaussian noise,
``benchmarks.zoo_eval``'s data and seed), twice: with the network's per-pixel,
signal-dependent map (``models.shuffle.sigma_map``, what ships) and with the single global
MAD estimate per image it replaced. Models without the noise-level input score the same
both ways and show the reference. Usage (from the repository root)::

    OMP_NUM_THREADS=2 python -m benchmarks.noise_map runs/zoo/graynl-long gray-mse-fast \
        --json runs/eval/noise_map.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import napari_wgan_denoise.models.shuffle as shuffle
from benchmarks.finetune_fmd import load_field, score
from benchmarks.zoo_eval import DATA
from napari_wgan_denoise import load_model
from napari_wgan_denoise.evaluation import evaluate


def _global(sub: torch.Tensor, channels: int, fit: object = None) -> torch.Tensor:
    """The estimate before the map: one MAD value per image (tile), spread over the map."""
    return shuffle.estimated_sigma(sub, channels).expand(sub.shape[0], 1, *sub.shape[2:])


def main() -> None:
    """Score every model with both estimates and print a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--json")
    args = ap.parse_args()
    fields = {fov: load_field(fov) for fov in ("11", "3")}
    per_pixel = shuffle.sigma_map
    rows = []
    print("| model | estimate | FMD field 11 | FMD field 3 | Set12 σ 25 | Set12 σ 50 |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.models:
        model = load_model(name)
        for label, estimate in (("per-pixel map", per_pixel), ("global", _global)):
            shuffle.sigma_map = estimate
            try:
                fmd = [score(model, *fields[fov]) for fov in fields]
                set12 = [
                    evaluate([model], clean=DATA / "gray/set12", sigma=s, notify=lambda m: None)[0][
                        "psnr"
                    ]
                    for s in (25, 50)
                ]
            finally:
                shuffle.sigma_map = per_pixel
            rows.append({"model": name, "estimate": label, "fmd": fmd, "set12": set12})
            cells = " | ".join(f"{v:.2f}" for v in [*fmd, *set12])
            print(f"| {name} | {label} | {cells} |", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
