"""PSNR against iteration for one self-supervised loss and setting (issue 15).

The study behind the self-supervised defaults (``docs/benchmarks.md`` §8): a plain loop
fine-tunes a base on random 64² patches (batch 8, flips and rotations, Adam, bf16
autocast where the CPU has it) of the 10 raw frames of FMD Confocal_BPAE_B field 3 and
scores, every ``--every`` iterations, the first 4 raw frames of field 11 against their
avg50 — the held-out score itself, which the fine-tuning widget cannot see, so the curve
shows where each setting peaks and whether it drifts. Usage (from the repository root)::

    OMP_NUM_THREADS=1 python -m benchmarks.selfsupervised_curve --loss recorrupted \\
        --lr 3e-5 --alpha 1.0 --iterations 1000
    # --noise-scale 1.25 multiplies the measured noise model (sensitivity)
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from benchmarks.finetune_fmd import load_field
from napari_wgan_denoise import load_model
from napari_wgan_denoise.inference.devices import cpu_has_bf16
from napari_wgan_denoise.training.finetune import selfsupervised as ss
from napari_wgan_denoise.training.finetune.noise import stack_noise_model


def main() -> None:
    """Print ``iteration PSNR`` lines (and the run as JSON at the end)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="gray-mse-fast")
    ap.add_argument("--loss", choices=ss.SS_LOSSES, default="recorrupted")
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--alpha", type=float, default=ss.R2R_ALPHA)
    ap.add_argument("--noise-scale", type=float, default=1.0)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--every", type=int, default=100)
    args = ap.parse_args()
    torch.manual_seed(0)
    train = [f.astype(np.float32) / 255 for f in load_field("3")[0]]
    test, gt = load_field("11")
    test = [f.astype(np.float32) / 255 for f in test[:4]]
    gt = gt.astype(np.float32) / 255
    net = load_model(args.base).network
    gain, offset = stack_noise_model([t[None] for t in train])
    noise = (gain * args.noise_scale, offset * args.noise_scale)
    dtype = torch.bfloat16 if cpu_has_bf16() else torch.float32

    def autocast():
        return torch.autocast("cpu", dtype=dtype, enabled=dtype == torch.bfloat16)

    def held_out() -> float:
        net.eval()
        with torch.no_grad(), autocast():
            outs = [net(torch.from_numpy(y)[None, None]).float()[0, 0].numpy() for y in test]
        net.train()
        return float(np.mean([10 * np.log10(1 / np.mean((o - gt) ** 2)) for o in outs]))

    curve = [(0, held_out())]
    print(f"noise model {noise}; 0 {curve[0][1]:.3f}", flush=True)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    rng, g = np.random.default_rng(0), torch.Generator().manual_seed(1)
    for it in range(1, args.iterations + 1):
        patches = []
        for _ in range(8):
            t = train[rng.integers(len(train))]
            i, j = rng.integers(0, t.shape[0] - 64), rng.integers(0, t.shape[1] - 64)
            p = np.rot90(t[i : i + 64, j : j + 64], rng.integers(4))
            patches.append(np.ascontiguousarray(p[:, ::-1] if rng.integers(2) else p))
        y = torch.from_numpy(np.stack(patches))[:, None]
        if args.loss == "recorrupted":
            source, target = ss.recorrupt(y, noise, g, args.alpha)
            with autocast():
                loss = ((net(source).float() - target) ** 2).mean()
        elif args.loss == "blind-spot":
            loss = ss.blind_spot_loss(net, y, g, autocast)[1]
        else:
            loss = ss.neighbor2neighbor_loss(net, y, g, autocast)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % args.every == 0:
            curve.append((it, held_out()))
            print(f"{it} {curve[-1][1]:.3f}", flush=True)
    print(json.dumps({**vars(args), "noise_model": noise, "curve": curve}))


if __name__ == "__main__":
    main()
