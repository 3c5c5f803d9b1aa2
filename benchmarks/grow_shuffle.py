"""Deepen a trained ``shuffle`` model, or give it the noise-level input, without changing
what it computes (issue 14).

The new residual blocks go at the end of the body with their second convolution at zero,
so each is the identity; the noise-level channel enters the head with zero weights. The
grown model denoises exactly as the source did, and training continues from there
(``init_weights`` of a config that asks for the new network).

    python benchmarks/grow_shuffle.py gray-mse-fast runs/zoo/gray14-init --depth 14
    python benchmarks/grow_shuffle.py gray-mse-fast runs/zoo/graynl-init --noise-level
"""

from __future__ import annotations

import argparse

import torch

from napari_wgan_denoise.models.model import DenoiseModel, save_model
from napari_wgan_denoise.models.registry import load_model
from napari_wgan_denoise.models.shuffle import ShuffleConfig, ShuffleGenerator


def grow(
    model: DenoiseModel, depth: int | None = None, noise_level: bool = False, seed: int = 0
) -> DenoiseModel:
    """A copy of ``model`` (a residual shuffle network) at ``depth`` convolutions (default:
    its own), with the noise-level input if ``noise_level``."""
    old = model.network
    if model.architecture != "shuffle" or not old.config.residual:
        raise ValueError(f"{model.name} is not a residual shuffle network.")
    depth = old.config.depth if depth is None else depth
    if depth < old.config.depth or (depth - old.config.depth) % 2:
        raise ValueError(f"depth must exceed {old.config.depth} by a multiple of 2, got {depth}.")
    noise_level = noise_level or old.config.noise_level
    if depth == old.config.depth and noise_level == old.config.noise_level:
        raise ValueError("nothing to grow: give a greater depth or the noise-level input.")
    torch.manual_seed(seed)
    config = ShuffleConfig(old.config.features, depth, residual=True, noise_level=noise_level)
    new = ShuffleGenerator(model.channels, config)
    state = new.state_dict()
    head = state["head.0.weight"].zero_()  # the noise-level channel, if new, starts unheard
    old_state = old.state_dict()
    old_head = old_state.pop("head.0.weight")
    head[:, : old_head.shape[1]] = old_head
    state.update(old_state)  # the bias, the old blocks and the tail keep their names
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
    }
    return DenoiseModel(new, card)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source")
    ap.add_argument("output")
    ap.add_argument("--depth", type=int, default=None)
    ap.add_argument("--noise-level", action="store_true", help="add the noise-level input")
    args = ap.parse_args()
    model = grow(load_model(args.source), args.depth, args.noise_level)
    config = model.network.config
    save_model(model, args.output)
    print(f"wrote {args.output} ({config.depth} convolutions, noise level {config.noise_level})")


if __name__ == "__main__":
    main()
