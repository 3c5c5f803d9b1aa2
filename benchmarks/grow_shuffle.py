"""Deepen or widen a trained ``shuffle`` model, or give it the noise-level input, without
changing what it computes; or make it shallower by dropping residual blocks (issue 14).

The new residual blocks go at the end of the body with their second convolution at zero,
so each is the identity; the noise-level channel enters the head with zero weights. New
features (``--features``, Net2Net's "random in, zero out") get small random weights from
every feature but zero weights into the old features and the tail, so they start unheard
and learn from the first step. The grown model denoises exactly as the source did, and
training continues from there (``init_weights`` of a config that asks for the new network).

    python benchmarks/grow_shuffle.py gray-mse-fast runs/zoo/gray14-init --depth 14
    python benchmarks/grow_shuffle.py gray-mse-fast runs/zoo/graynl-init --noise-level
    python benchmarks/grow_shuffle.py runs/zoo/cells20b runs/zoo/cells96-init --features 96

Dropping (``--drop``) goes the other way, for speed: the named residual blocks are removed
(each is ``x + f(x)``, so the rest of the network still reads features of the same kind)
and training continues from there to win back what they added. ``--rank`` scores the
model with each block removed alone on validation images, the least missed first:

    python benchmarks/grow_shuffle.py cells-mse-fast --rank cells
    python benchmarks/grow_shuffle.py runs/zoo/cells-stage12 runs/zoo/cells16-init --drop 7,8,9,10
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import skimage.io
import torch

from napari_wgan_denoise import denoise
from napari_wgan_denoise.metrics import psnr
from napari_wgan_denoise.models.model import DenoiseModel, save_model
from napari_wgan_denoise.models.registry import load_model
from napari_wgan_denoise.models.shuffle import ShuffleConfig, ShuffleGenerator

#: Scale of the new features' random weights, relative to PyTorch's default initialisation.
NEW_FEATURE_SCALE = 0.1


def _widen(state: dict, old_state: dict, old_features: int) -> None:
    """Copy ``old_state`` into the wider ``state``: new features read everything (their
    random weights scaled by :data:`NEW_FEATURE_SCALE`) and write into nothing old."""
    f = old_features
    for name, old in old_state.items():
        new = state[name]
        if name.startswith("tail."):
            if name.endswith("weight"):
                new.zero_()
                new[:, :f] = old
            else:
                new.copy_(old)
            continue
        new.mul_(NEW_FEATURE_SCALE)
        if new.dim() == 4:
            new[:f].zero_()  # old features hear nothing new ...
            new[: old.shape[0], : old.shape[1]] = old  # ... and keep their own weights
        else:
            new[: old.shape[0]] = old


def grow(
    model: DenoiseModel,
    depth: int | None = None,
    noise_level: bool = False,
    seed: int = 0,
    features: int | None = None,
) -> DenoiseModel:
    """A copy of ``model`` (a residual shuffle network) at ``depth`` convolutions and
    ``features`` body features (default: its own), with the noise-level input if
    ``noise_level``."""
    old = model.network
    if model.architecture != "shuffle" or not old.config.residual:
        raise ValueError(f"{model.name} is not a residual shuffle network.")
    depth = old.config.depth if depth is None else depth
    if depth < old.config.depth or (depth - old.config.depth) % 2:
        raise ValueError(f"depth must exceed {old.config.depth} by a multiple of 2, got {depth}.")
    features = old.config.features if features is None else features
    if features < old.config.features:
        raise ValueError(f"features must be at least {old.config.features}, got {features}.")
    noise_level = noise_level or old.config.noise_level
    if (depth, features, noise_level) == (
        old.config.depth,
        old.config.features,
        old.config.noise_level,
    ):
        raise ValueError("nothing to grow: give a greater depth or width, or the noise level.")
    torch.manual_seed(seed)
    config = ShuffleConfig(features, depth, residual=True, noise_level=noise_level)
    new = ShuffleGenerator(model.channels, config)
    state = new.state_dict()
    old_state = old.state_dict()
    old_head = old_state.pop("head.0.weight")
    head = state["head.0.weight"].mul_(NEW_FEATURE_SCALE)
    head[: old_head.shape[0]].zero_()  # the noise-level channel, if new, starts unheard
    head[: old_head.shape[0], : old_head.shape[1]] = old_head
    _widen(state, old_state, old.config.features)  # old blocks and the tail keep their names
    n_old = (old.config.depth - 2) // 2
    for i in range(n_old, (depth - 2) // 2):
        state[f"body.{i}.conv2.weight"].zero_()
        state[f"body.{i}.conv2.bias"].zero_()
    new.load_state_dict(state)
    card = dict(model.card)
    card["grown_from"] = {
        "model": model.name,
        "depth": old.config.depth,
        "noise_level": old.config.noise_level,
        "features": old.config.features,
    }
    return DenoiseModel(new, card)


def drop_blocks(model: DenoiseModel, drop: list[int]) -> DenoiseModel:
    """A copy of ``model`` (a residual shuffle network with an even depth) without the
    residual blocks at the indices ``drop``: two convolutions fewer for each."""
    old = model.network
    n_old = (old.config.depth - 2) // 2
    if model.architecture != "shuffle" or not old.config.residual or old.config.depth % 2:
        raise ValueError(f"{model.name} is not a residual shuffle network of even depth.")
    if not drop or any(i < 0 or i >= n_old for i in drop) or len(set(drop)) >= n_old:
        raise ValueError(f"drop between 1 and {n_old - 1} of the blocks 0-{n_old - 1}, got {drop}.")
    kept = [i for i in range(n_old) if i not in drop]
    renumbered = {old_i: new_i for new_i, old_i in enumerate(kept)}  # body index: old -> new
    config = ShuffleConfig(
        old.config.features,
        2 + 2 * len(renumbered),
        residual=True,
        noise_level=old.config.noise_level,
    )
    new = ShuffleGenerator(model.channels, config)
    state = {}
    for name, value in old.state_dict().items():
        if name.startswith("body."):
            _, index, rest = name.split(".", 2)
            if int(index) not in renumbered:
                continue
            name = f"body.{renumbered[int(index)]}.{rest}"
        state[name] = value
    new.load_state_dict(state)
    card = dict(model.card)
    card["grown_from"] = {"model": model.name, "depth": old.config.depth, "dropped": drop}
    return DenoiseModel(new, card)


def _validation(modality: str) -> tuple[list[np.ndarray], list[float], tuple[float, float]]:
    """Clean images to rank blocks on for ``modality`` (cells: CellaVision 077-088, held out
    of training; gray: the last 12 Train400 images, which the gray models train on, so for
    ranking only, Set12 stays unseen), the noise levels to score and the value range."""
    if modality == "cells":
        files = sorted(Path("../shared/data/cells/cellavision_train").glob("*.png"))[-12:]
        return [skimage.io.imread(f)[..., :3].astype(np.float32) for f in files], [25, 50], (0, 255)
    files = sorted(Path("../shared/data/gray/train400").glob("*.png"))[-12:]
    return [skimage.io.imread(f).astype(np.float32) for f in files], [25, 50], (0, 255)


def rank_blocks(model: DenoiseModel, modality: str) -> list[tuple[int, float]]:
    """(block, mean PSNR loss in dB over the validation images and noise levels) with each
    residual block removed alone, the least missed first."""
    images, sigmas, value_range = _validation(modality)
    rng = np.random.default_rng(0)
    noisy = [(c, c + rng.normal(0, s, c.shape).astype(np.float32)) for s in sigmas for c in images]

    def score(m: DenoiseModel) -> float:
        return float(
            np.mean([psnr(c, denoise(y, m, value_range=value_range), 255.0) for c, y in noisy])
        )

    base = score(model)
    n = (model.network.config.depth - 2) // 2
    losses = [(i, base - score(drop_blocks(model, [i]))) for i in range(n)]
    return sorted(losses, key=lambda item: item[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source")
    ap.add_argument("output", nargs="?")
    ap.add_argument("--depth", type=int, default=None)
    ap.add_argument("--features", type=int, default=None, help="a wider body")
    ap.add_argument("--noise-level", action="store_true", help="add the noise-level input")
    ap.add_argument("--drop", default=None, help="residual blocks to remove, e.g. 7,8,9,10")
    ap.add_argument("--rank", choices=("cells", "gray"), help="score each block's removal")
    args = ap.parse_args()
    if args.rank:
        for block, loss in rank_blocks(load_model(args.source), args.rank):
            print(f"block {block:2d}: {-loss:+.3f} dB without it")
        return
    if args.output is None:
        ap.error("give the output path")
    if args.drop:
        model = drop_blocks(load_model(args.source), [int(i) for i in args.drop.split(",")])
    else:
        model = grow(load_model(args.source), args.depth, args.noise_level, features=args.features)
    config = model.network.config
    save_model(model, args.output)
    print(
        f"wrote {args.output} ({config.depth} convolutions of {config.features} features, "
        f"noise level {config.noise_level})"
    )


if __name__ == "__main__":
    main()
