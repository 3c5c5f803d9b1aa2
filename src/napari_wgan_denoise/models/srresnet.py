"""The seed-000 generator: an SRResNet-like residual denoiser (Chen et al. 2020, Fig. 3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class SRResNetConfig:
    """Size of the seed-000 generator; the paper uses 16 blocks of 64 feature maps."""

    n_blocks: int = 16
    features: int = 64


class _ResidualBlock(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.act = nn.PReLU(features)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class SRResNetGenerator(nn.Module):
    """Predicts the noise residual r of a noisy image y and returns the estimate ``y - r``.

    Layout (seed 000, Fig. 3): conv + PReLU for the initial features; one long skip around
    ``n_blocks`` residual blocks (conv-PReLU-conv + identity) and one conv; then three convs
    with two PReLUs that reconstruct the residual. The paper does not state batch norm in
    the blocks; following EDSR (its ref. [41]) we leave it out, which also keeps inference
    independent of the batch. All convolutions are 3x3, stride 1, zero padded.
    """

    size_multiple = 1

    def __init__(self, channels: int = 1, config: SRResNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or SRResNetConfig()
        f = self.config.features
        self.channels = channels
        self.head = nn.Sequential(nn.Conv2d(channels, f, 3, padding=1), nn.PReLU(f))
        self.blocks = nn.Sequential(*[_ResidualBlock(f) for _ in range(self.config.n_blocks)])
        self.body_conv = nn.Conv2d(f, f, 3, padding=1)
        self.tail = nn.Sequential(
            nn.Conv2d(f, f, 3, padding=1),
            nn.PReLU(f),
            nn.Conv2d(f, f, 3, padding=1),
            nn.PReLU(f),
            nn.Conv2d(f, channels, 3, padding=1),
        )
        # Start as (almost) the identity: a zero residual.
        nn.init.zeros_(self.tail[-1].weight)
        nn.init.zeros_(self.tail[-1].bias)

    @property
    def receptive_radius(self) -> int:
        """Pixels of context on each side that influence one output pixel."""
        return 1 + 2 * self.config.n_blocks + 1 + 3

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        feats = self.head(y)
        feats = feats + self.body_conv(self.blocks(feats))
        return y - self.tail(feats)
