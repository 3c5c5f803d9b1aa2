"""The generator study of the CPU zoo (issue 14): three candidate generators trained for
the same CPU time on the same data, validation PSNR against CPU time, Set12 scores and
inference speed, and a plot.

Usage (from the repository root)::

    # train each candidate for 30 CPU-minutes (run side by side, one thread each)
    OMP_NUM_THREADS=1 wgan-denoise train --config configs/study/NAME.yaml \
        -o runs/study/NAME --cpu-budget 30
    # score the checkpoints and draw docs/images/generator_study.png
    python benchmarks/generator_study.py runs/study/shuffle12x64 runs/study/shuffle16x80 \
        runs/study/unet48 --json docs/generator_study.json --plot docs/images/generator_study.png

The x axis is the process's CPU time (``time.process_time``), not wall time, so runs that
shared the machine with other work compare fairly.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_wgan_denoise import create_model, denoise
from napari_wgan_denoise.evaluation import evaluate
from napari_wgan_denoise.training.checkpoint import load_checkpoint


def checkpoint_model(path: Path):
    """A model with the generator weights of a training checkpoint (``.../last``)."""
    meta = json.loads(path.with_suffix(".json").read_text())
    cfg = meta["config"]
    channels = int(meta["card"].get("channels", 1))  # RGB cell runs as well as gray ones
    model = create_model(cfg["architecture"], channels=channels, **cfg["arch_config"])
    load_checkpoint(path, modules={"generator": model.network}, optimizers={}, rng={})
    model.card["normalisation"] = meta["card"]["normalisation"]
    model.card["name"] = path.parent.name.replace("-checkpoints", "")
    return model.to("cpu"), meta


def curve(run: Path) -> list[dict]:
    """Validation records (iteration, val_psnr, cpu_time, elapsed) of a run's log."""
    log = Path(f"{run}-checkpoints") / "log.jsonl"
    out = []
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("val_psnr") is not None:
            out.append({k: rec[k] for k in ("iteration", "val_psnr", "cpu_time", "elapsed")})
    return out


def speed(model, threads: int = 2, size: int = 1024) -> float:
    """Seconds per megapixel of ``denoise`` on ``threads`` threads (after a warm-up)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        img = np.random.default_rng(0).normal(100, 20, (size, size)).astype(np.float32)
        denoise(img[:256, :256], model)
        t = time.perf_counter()
        denoise(img, model)
        return (time.perf_counter() - t) / (size * size / 1e6)
    finally:
        torch.set_num_threads(old)


def main() -> None:
    """Score each run and write the JSON summary and the plot."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--set12", default="../shared/data/gray/set12")
    ap.add_argument("--json")
    ap.add_argument("--plot")
    args = ap.parse_args()
    summary = []
    for run in map(Path, args.runs):
        model, meta = checkpoint_model(Path(f"{run}-checkpoints") / "last")
        rows = {}
        for sigma in (25, 50):
            rows[sigma] = evaluate([model], clean=args.set12, sigma=sigma, notify=lambda m: None)[0]
        entry = {
            "run": run.name,
            "architecture": meta["config"]["architecture"],
            "arch_config": meta["config"]["arch_config"],
            "parameters": model.n_parameters,
            "iteration": meta["iteration"],
            "planned_iterations": meta["config"]["iterations"],
            "cpu_time_s": meta.get("cpu_time"),
            "s_per_iteration": meta.get("cpu_time", 0) / max(1, meta["iteration"]),
            "set12_psnr": {s: round(r["psnr"], 3) for s, r in rows.items()},
            "s_per_mp_2_threads": round(speed(model), 3),
            "curve": curve(run),
        }
        summary.append(entry)
        print(
            f"{run.name}: {entry['parameters']} weights, it {entry['iteration']} in "
            f"{entry['cpu_time_s'] / 60:.1f} CPU-min, Set12 σ25 {entry['set12_psnr'][25]:.2f} "
            f"σ50 {entry['set12_psnr'][50]:.2f} dB, "
            f"{entry['s_per_mp_2_threads']:.2f} s/MP (2 threads)",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
        for entry in summary:
            c = entry["curve"]
            ax.plot(
                [r["cpu_time"] / 60 for r in c],
                [r["val_psnr"] for r in c],
                marker="o",
                ms=3,
                label=f"{entry['run']} ({entry['parameters'] / 1e3:.0f} k, "
                f"{entry['s_per_mp_2_threads']:.2f} s/MP)",
            )
        ax.set_xlabel("CPU time of the run (minutes, one thread)")
        ax.set_ylabel("validation PSNR (dB, held-out Train400, σ 0-55)")
        ax.set_title("Generator study: same data, same CPU time")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot)


if __name__ == "__main__":
    main()
