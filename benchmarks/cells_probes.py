"""Checks of what limits the cells models: does the network's own noise estimate cost quality
(``oracle``), does averaging the weights of models that share their initialisation help
(``soup``; both docs/benchmarks.md §7u), and how do the network's errors relate to CBM3D's
and to another network's (``gap``, §7v)? Whole CellaVision validation images (077-088), bf16,
no tiling, seeded Gaussian noise as ``zoo_eval``.

OMP_NUM_THREADS=2 python3 benchmarks/cells_probes.py oracle cells-mse-fast
OMP_NUM_THREADS=1 python3 benchmarks/cells_probes.py soup runs/zoo/cells8a runs/zoo/cells8b
OMP_NUM_THREADS=2 python3 benchmarks/cells_probes.py gap runs/zoo/cells11-log runs/zoo/cells96d20
OMP_NUM_THREADS=2 python3 benchmarks/cells_probes.py validation runs/zoo/cells11-log \
    cells-mse-fast --config configs/zoo/cells-stage9.yaml --config configs/zoo/cells-stage10.yaml

``validation`` scores models on the validation sets that training configs draw (the trainer's
own ``validate``), to compare learning curves of stages that drew different sets (§7v).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from napari_wgan_denoise.evaluation.samples import _samples
from napari_wgan_denoise.metrics import psnr
from napari_wgan_denoise.models.registry import load_model
from napari_wgan_denoise.models.shuffle import fit_whole_image

CELLS = Path("../shared/data/cells/cellavision_train")
HELD_OUT = 12


def _images(sigma: float) -> list[tuple[np.ndarray, torch.Tensor]]:
    """(clean, noisy network input) of each validation image: evaluate's own seeded samples,
    so the inputs are zoo_eval's."""
    pairs = []
    for sample in _samples(CELLS, sigma, None, seed=0, limit=None, last=HELD_OUT):
        x = torch.from_numpy(sample.noisy / 255).permute(2, 0, 1)[None]
        pairs.append((sample.clean.astype(np.float64), x))
    return pairs


def _output(network: torch.nn.Module, x: torch.Tensor, fit=None) -> np.ndarray:
    """The network's whole-image output on the 0-255 scale, bf16, with the noise ``fit``
    (default: the image's own, as ``denoise`` fits it)."""
    network.fixed_fit = fit_whole_image(network, x) if fit is None else fit
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return network(x).float()[0].permute(1, 2, 0).numpy() * 255


def _psnr(network: torch.nn.Module, ref: np.ndarray, x: torch.Tensor, fit=None) -> float:
    return psnr(ref, _output(network, x, fit), peak=255.0)


def _constant(level: float):
    """A Gaussian noise fit of ``level`` (network scale): the constant noise map."""
    return (torch.tensor([level]), torch.zeros(1), torch.zeros(1), torch.tensor([False]))


def oracle(model: str) -> None:
    """Mean PSNR with the network's own noise fit, the true σ, and σ 10 % low / high."""
    network = load_model(model).network.eval()
    for sigma in (25, 35, 50):
        scores: dict[str, list[float]] = {"own": [], "true": [], "0.9x": [], "1.1x": []}
        estimates = []
        for ref, x in _images(sigma):
            fit = fit_whole_image(network, x)
            estimates.append(float(fit[0]) * 255)
            scores["own"].append(_psnr(network, ref, x, fit))
            for key, factor in (("true", 1.0), ("0.9x", 0.9), ("1.1x", 1.1)):
                scores[key].append(_psnr(network, ref, x, _constant(sigma / 255 * factor)))
        means = {k: round(float(np.mean(v)), 3) for k, v in scores.items()}
        spread = f"{min(estimates):.2f}-{max(estimates):.2f}"
        print(f"σ {sigma}: estimate {np.mean(estimates):.2f} ({spread})", means)


def soup(models: list[str], sigma: float = 25) -> None:
    """Mean PSNR of each model and of the average of their weights."""
    loaded = [load_model(m).network.eval() for m in models]
    pairs = _images(sigma)

    def score(network: torch.nn.Module) -> float:
        return float(np.mean([_psnr(network, r, x) for r, x in pairs]))

    for name, network in zip(models, loaded):
        print(name, round(score(network), 3))
    states = [n.state_dict() for n in loaded]
    averaged = load_model(models[0]).network.eval()
    mean = {k: sum(s[k].float() for s in states) / len(states) for k in states[0]}
    averaged.load_state_dict(mean)
    print("average of the weights", round(score(averaged), 3))


def gap(model: str, other: str, sigma: float = 25) -> None:
    """Mean PSNR of ``model``, CBM3D and ``other``, of the pixel mean of ``model`` with each,
    and the share of ``model``'s and CBM3D's squared error in flat and in detailed regions
    (below and above the median gradient of the clean image)."""
    import bm3d
    from scipy import ndimage

    net, second = (load_model(m).network.eval() for m in (model, other))
    rows = []
    for ref, x in _images(sigma):
        ours, theirs = _output(net, x), _output(second, x)
        cbm3d = bm3d.bm3d_rgb(x[0].permute(1, 2, 0).numpy(), sigma_psd=sigma / 255) * 255
        gray = ref.mean(-1)
        flat = np.hypot(ndimage.sobel(gray, 0), ndimage.sobel(gray, 1))
        flat = flat < np.median(flat)
        outputs = (ours, cbm3d, theirs, (ours + cbm3d) / 2, (ours + theirs) / 2)
        rows.append(
            [psnr(ref, out, peak=255.0) for out in outputs]
            + [np.mean((out - ref)[m] ** 2) for out in (ours, cbm3d) for m in (flat, ~flat)]
        )
    mean = np.mean(rows, axis=0)
    names = [model, "CBM3D", other, f"mean of {model} and CBM3D", f"mean of {model} and {other}"]
    for name, value in zip(names, mean):
        print(f"σ {sigma:g}: {name}: {value:.3f} dB")
    print(
        f"MSE flat / detailed: {model} {mean[5]:.2f} / {mean[6]:.2f}, "
        f"CBM3D {mean[7]:.2f} / {mean[8]:.2f}"
    )


def validation(models: list[str], configs: list[str]) -> None:
    """Each model's validation PSNR on each config's validation set, as its training saw it."""
    from napari_wgan_denoise.cli.train import DATA_KEYS
    from napari_wgan_denoise.data.recipes import build_source
    from napari_wgan_denoise.training.trainer import validate
    from napari_wgan_denoise.validation import load_config_file

    sets = {}
    for path in configs:
        settings = load_config_file(path)
        data = {k: settings[k] for k in DATA_KEYS if k in settings}
        sets[path] = build_source(data, seed=settings.get("seed", 0)).validation_pairs()
    for model in models:
        network = load_model(model).network.eval()
        for path, pairs in sets.items():
            score = validate(network, pairs, torch.device("cpu"))["val_psnr"]
            print(f"{model} on {path}: {score:.3f} dB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    o = sub.add_parser("oracle", help="own noise estimate against the true σ")
    o.add_argument("model")
    s = sub.add_parser("soup", help="averaged weights of models with one initialisation")
    s.add_argument("models", nargs="+")
    g = sub.add_parser("gap", help="errors against CBM3D's and another network's")
    g.add_argument("model")
    g.add_argument("other")
    g.add_argument("--sigma", type=float, default=25)
    v = sub.add_parser("validation", help="models on the validation sets of training configs")
    v.add_argument("models", nargs="+")
    v.add_argument("--config", action="append", required=True)
    args = parser.parse_args()
    if args.what == "oracle":
        oracle(args.model)
    elif args.what == "soup":
        soup(args.models)
    elif args.what == "validation":
        validation(args.models, args.config)
    else:
        gap(args.model, args.other, args.sigma)


if __name__ == "__main__":
    main()
