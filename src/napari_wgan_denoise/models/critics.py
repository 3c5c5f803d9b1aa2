"""Critics (Wasserstein discriminators) for seed 000 and seed 001."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class SRGANCriticConfig:
    """Width of the seed-000 critic: maps double every other layer up to ``max_features``."""

    features: int = 64
    max_features: int = 512
    negative_slope: float = 0.2


class SRGANCritic(nn.Module):
    """The seed-000 critic (Fig. 2): 7 convs with LeakyReLU, a 1x1 fusing conv, global max.

    The channel/stride progression follows the SRGAN discriminator (k3n64s1, k3n64s2,
    k3n128s1, k3n128s2, k3n256s1, k3n256s2, k3n512s1), with three stride-2 layers so any
    patch of at least 32 pixels works. No batch norm (it invalidates the gradient penalty)
    and no sigmoid (a Wasserstein critic outputs an unbounded score).
    """

    def __init__(self, channels: int = 1, config: SRGANCriticConfig | None = None) -> None:
        super().__init__()
        self.config = config or SRGANCriticConfig()
        f, fmax, s = self.config.features, self.config.max_features, self.config.negative_slope
        widths = [f, f, 2 * f, 2 * f, 4 * f, 4 * f, 8 * f]
        strides = [1, 2, 1, 2, 1, 2, 1]
        layers: list[nn.Module] = []
        cin = channels
        for w, st in zip(widths, strides):
            w = min(w, fmax)
            layers += [nn.Conv2d(cin, w, 3, stride=st, padding=1), nn.LeakyReLU(s)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.fuse = nn.Conv2d(cin, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One score per image: larger means 'looks clean'."""
        return torch.amax(self.fuse(self.features(x)), dim=(1, 2, 3))


@dataclass
class UNetCriticConfig:
    """Width of the seed-001 critic ``CL(K2) CBL(2K2) CBL(8K2) CBL(2K2) CBR(K2) CBR(K2)``."""

    features: int = 32
    norm: str = "none"
    negative_slope: float = 0.2


class UNetCritic(nn.Module):
    """The seed-001 critic: six conv units, then a 1x1 conv and a global average.

    The paper's units carry batch norm; batch norm couples the samples of a batch and so
    breaks the per-sample gradient penalty (Gulrajani et al.), hence ``norm="none"`` by
    default; ``norm="batch"`` reproduces the paper literally and ``"instance"`` is offered
    as a GP-safe middle ground. Strides of 2 on units 2-4 keep the cost low.
    """

    def __init__(self, channels: int = 1, config: UNetCriticConfig | None = None) -> None:
        super().__init__()
        self.config = config or UNetCriticConfig()
        k, s = self.config.features, self.config.negative_slope
        spec = [
            (k, 1, False, "l"),
            (2 * k, 2, True, "l"),
            (8 * k, 2, True, "l"),
            (2 * k, 2, True, "l"),
            (k, 1, True, "r"),
            (k, 1, True, "r"),
        ]
        layers: list[nn.Module] = []
        cin = channels
        for cout, stride, norm, act in spec:
            layers.append(nn.Conv2d(cin, cout, 3, stride=stride, padding=1))
            if norm and self.config.norm == "batch":
                layers.append(nn.BatchNorm2d(cout))
            elif norm and self.config.norm == "instance":
                layers.append(nn.InstanceNorm2d(cout, affine=True))
            layers.append(nn.LeakyReLU(s) if act == "l" else nn.ReLU())
            cin = cout
        self.features = nn.Sequential(*layers)
        self.fuse = nn.Conv2d(cin, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One score per image: larger means 'looks clean'."""
        return self.fuse(self.features(x)).mean(dim=(1, 2, 3))
