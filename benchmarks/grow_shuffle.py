"""Deepen a trained ``shuffle`` model without changing what it computes (issue 14).

The new residual blocks go at the end of the body with their second convolution at zero,
so each is the identity and the grown model denoises exactly as the source did; training
then continues from there (``init_weights`` of a config that asks for the new depth).

    python benchmarks/grow_shuffle.py gray-mse-fast runs/zoo/gray14-init --depth 14
"""

from __future__ import annotations

import argparse

import torch

from napari_wgan_denoise.models.model import DenoiseModel, save_model
from napari_wgan_denoise.models.registry import load_model
from napari_wgan_denoise.models.shuffle import ShuffleConfig, ShuffleGenerator


def grow(model: DenoiseModel, depth: int, seed: int = 0) -> DenoiseModel:
    """A copy of ``model`` (a residual shuffle network) at ``depth`` convolutions."""
    old = model.network
    if model.architecture != "shuffle" or not old.config.residual:
        raise ValueError(f"{model.name} is not a residual shuffle network.")
    if depth <= old.config.depth or (depth - old.config.depth) % 2:
        raise ValueError(f"depth must exceed {old.config.depth} by a multiple of 2, got {depth}.")
    torch.manual_seed(seed)
    config = ShuffleConfig(features=old.config.features, depth=depth, residual=True)
    new = ShuffleGenerator(model.channels, config)
    state = new.state_dict()
    state.update(old.state_dict())  # head, the old blocks and the tail keep their names
    n_old = (old.config.depth - 2) // 2
    for i in range(n_old, (depth - 2) // 2):
        state[f"body.{i}.conv2.weight"].zero_()
        state[f"body.{i}.conv2.bias"].zero_()
    new.load_state_dict(state)
    card = dict(model.card)
    card["grown_from"] = {"model": model.name, "depth": old.config.depth}
    return DenoiseModel(new, card)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source")
    ap.add_argument("output")
    ap.add_argument("--depth", type=int, required=True)
    args = ap.parse_args()
    model = grow(load_model(args.source), args.depth)
    save_model(model, args.output)
    print(f"wrote {args.output} ({model.network.config.depth} convolutions)")


if __name__ == "__main__":
    main()
