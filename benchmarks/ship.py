"""Copy trained models into the package's weights/ with held-out evaluation in their cards.

Usage (from the repository root)::

    # SRC=NAME ships SRC under the name NAME, replacing the shipped NAME's weights and
    # keeping that card's family, default and modality (so defaults and families hold)
    python benchmarks/ship.py runs/zoo/gray-mse=gray-mse-fast runs/zoo/gray-wgan=gray-wgan-fast \
        --clean ../shared/data/gray/set12 --sigma 25 --sigma 50 --label set12

    python benchmarks/ship.py runs/zoo/fluo-mse-fast runs/zoo/fluo-wgan-fast \
        --noisy runs/fmd_val/noisy --clean runs/fmd_val/clean --label fmd_confocal_fov3_11
    python benchmarks/ship.py runs/zoo/cells-mse-fast \
        --clean ../shared/data/cells/cellavision_train \
        --last 12 --sigma 25 --sigma 35 --sigma 50 --label cellavision_077_088
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_wgan_denoise import load_model, save_model
from napari_wgan_denoise.evaluation import evaluate
from napari_wgan_denoise.models.model import init_record, model_paths, read_card
from napari_wgan_denoise.models.registry import SHIPPED_DIR


def recomposed_card(path: str, depth: int = 0) -> dict:
    """The card at ``path`` with its ``init_weights`` record rebuilt, stage by stage, from
    the cards of the models it was initialised from where they are on disk (a card trained
    from a model that was itself not yet recomposed records only that model's own stages)."""
    card = read_card(path)
    init = card.get("training", {}).get("init_weights")
    if init and depth < 16 and model_paths(init["model"])[1].is_file():
        card["training"]["init_weights"] = init_record(
            init["model"], recomposed_card(init["model"], depth + 1)
        )
    return card


def main() -> None:
    """Evaluate each model on held-out data, record it in the card and copy it to weights/
    (with the learning curves of all the stages before it, where their cards are here)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--clean", required=True)
    ap.add_argument("--noisy")
    ap.add_argument("--sigma", type=float, action="append")
    ap.add_argument("--last", type=int)
    ap.add_argument("--label", required=True)
    args = ap.parse_args()
    for spec in args.models:
        path, _, name = spec.partition("=")
        name = name or Path(path).name
        model = load_model(path)
        results = {}
        for sigma in args.sigma or [None]:
            (row,) = evaluate(
                [model], clean=args.clean, noisy=args.noisy, sigma=sigma, last=args.last, seed=0
            )
            key = args.label if sigma is None else f"{args.label}_sigma{sigma:g}"
            results[key] = {k: row[k] for k in ("n", "psnr", "ssim", "grad_ratio", "noisy_psnr")}
            print(model.name, key, results[key])
        on_disk = model_paths(path)[1].is_file()
        rebuilt = recomposed_card(path)["training"].get("init_weights") if on_disk else None
        if rebuilt:  # count from its first stage
            model.card["training"]["init_weights"] = rebuilt
        metrics = dict(model.card.get("metrics") or {})
        metrics.setdefault("held_out", {}).update(results)
        kept = {}
        if (SHIPPED_DIR / f"{name}.json").is_file():  # the model this replaces: its place
            old = read_card(SHIPPED_DIR / name)
            kept = {k: old[k] for k in ("family", "default", "modality") if k in old}
        save_model(model, SHIPPED_DIR / name, metrics=metrics, **kept)


if __name__ == "__main__":
    main()
