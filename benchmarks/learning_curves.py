"""Learning curves of the CPU zoo (issue 14): validation PSNR against iteration and CPU
time, from model cards (``learning_curve``) or training checkpoints (``curve``).

Usage (from the repository root)::

    python -m benchmarks.learning_curves gray-mse-fast fluo-mse-fast \
        runs/zoo/gray-mse-checkpoints/last --plot docs/images/learning_curves.png

Each argument is a registered model name, a model file, or a checkpoint (``.../last``). A
model trained in stages (``--init-weights``) shows them all, one after the other.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from napari_wgan_denoise.models.model import full_learning_curve


def curve_of(source: str) -> tuple[str, list[dict[str, Any]]]:
    """The label and the validation records (iteration, val_psnr, cpu_time_s) of a model
    card or a training checkpoint."""
    path = Path(source)
    meta_path = path.with_suffix(".json")
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
    else:
        from napari_wgan_denoise.models.registry import find_model

        meta = find_model(source).card
    if "iteration" in meta:  # a checkpoint: name after its run folder
        label = f"{path.parent.name.replace('-checkpoints', '')} (it {meta['iteration']})"
        records = meta.get("curve", [])
    else:
        label = meta.get("name", path.stem)
        records = full_learning_curve(meta)[1]
    return label, [r for r in records if r.get("val_psnr") is not None]


def main() -> None:
    """Plot validation PSNR against iteration and against CPU time, side by side."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("sources", nargs="+")
    ap.add_argument("--plot", required=True)
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_it, by_cpu) = plt.subplots(1, 2, figsize=(9.6, 3.8), dpi=100, sharey=False)
    for source in args.sources:
        label, records = curve_of(source)
        if not records:
            print(f"{source}: no validation records")
            continue
        its = [r["iteration"] for r in records]
        psnr = [r["val_psnr"] for r in records]
        by_it.plot(its, psnr, marker="o", ms=2, label=label)
        cpu = [r.get("cpu_time_s") for r in records]
        if all(c is not None for c in cpu):
            by_cpu.plot([c / 3600 for c in cpu], psnr, marker="o", ms=2, label=label)
        print(f"{label}: {len(records)} validations, last {psnr[-1]:.2f} dB at it {its[-1]}")
    by_it.set_xlabel("iteration")
    by_cpu.set_xlabel("CPU time (hours, one thread)")
    for ax in (by_it, by_cpu):
        ax.set_ylabel("validation PSNR (dB)")
        ax.grid(alpha=0.3)
    by_it.legend(fontsize=7)
    fig.suptitle("Learning curves (validation on held-out data of each family)")
    fig.tight_layout()
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot)


if __name__ == "__main__":
    main()
