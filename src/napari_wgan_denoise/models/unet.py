"""The seed-001 generator: a symmetric encoder-decoder with two long shortcuts (Gong et al.)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class UNetConfig:
    """Size of the seed-001 generator.

    ``features`` is K in ``CBL(K)x4 - CBL(K/2) - CBL(b) - RBL(K/2) - RBL(K)x4 - RBL(C)``;
    ``bottleneck`` is b (the paper writes ``CBL(1)``; a wider bottleneck is allowed).
    """

    features: int = 64
    bottleneck: int = 1
    negative_slope: float = 0.2


class _CBL(nn.Module):
    """Conv 3x3 + batch norm + LeakyReLU."""

    def __init__(self, cin: int, cout: int, slope: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.LeakyReLU(slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class _RBL(nn.Module):
    """The decoder twin of CBL: a residual conv layer (conv 3x3 + projected identity),
    batch norm and LeakyReLU; the last block of the network has no norm or activation."""

    def __init__(self, cin: int, cout: int, slope: float, last: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=last)
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1, bias=False)
        self.post = (
            nn.Identity() if last else nn.Sequential(nn.BatchNorm2d(cout), nn.LeakyReLU(slope))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.conv(x) + self.skip(x))


class UNetGenerator(nn.Module):
    """Encoder-decoder denoiser that outputs the noise map and subtracts it from the input.

    Twelve blocks (seed 001): the encoder ``CBL(K) CBL(K) | pool | CBL(K) CBL(K) | pool |
    CBL(K/2) CBL(b)`` and the decoder ``RBL(K/2) | up | RBL(K) RBL(K) | up | RBL(K) RBL(K)
    RBL(C)``. The paper's shortcuts join encoder block 2 to decoder block 10 and encoder
    block 4 to decoder block 8; where the figure is silent we add them to those blocks'
    outputs (ResNet style) and place the two max-pools after blocks 2 and 4, with nearest
    upsampling mirrored. Most convolutions run at 1/2 and 1/4 resolution, which is what
    makes this network cheap. Input height and width must be multiples of 4.
    """

    size_multiple = 4

    def __init__(self, channels: int = 1, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or UNetConfig()
        k, b, s = self.config.features, self.config.bottleneck, self.config.negative_slope
        h = max(k // 2, 1)
        self.channels = channels
        self.b1, self.b2 = _CBL(channels, k, s), _CBL(k, k, s)
        self.b3, self.b4 = _CBL(k, k, s), _CBL(k, k, s)
        self.b5, self.b6 = _CBL(k, h, s), _CBL(h, b, s)
        self.b7 = _RBL(b, h, s)
        self.b8, self.b9 = _RBL(h, k, s), _RBL(k, k, s)
        self.b10, self.b11 = _RBL(k, k, s), _RBL(k, k, s)
        self.b12 = _RBL(k, channels, s, last=True)
        nn.init.zeros_(self.b12.conv.weight)
        nn.init.zeros_(self.b12.conv.bias)
        if isinstance(self.b12.skip, nn.Conv2d):
            nn.init.zeros_(self.b12.skip.weight)

    @property
    def receptive_radius(self) -> int:
        """Pixels of context on each side that influence one output pixel."""
        # full res: b1,b2 (2) + b10..b12 (3); half res: b3,b4,b8,b9 (4, x2);
        # quarter res: b5,b6,b7 (3, x4); plus pooling/upsampling alignment slack.
        return 2 + 3 + 4 * 2 + 3 * 4 + 6

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        e2 = self.b2(self.b1(y))
        e4 = self.b4(self.b3(F.max_pool2d(e2, 2)))
        z = self.b7(self.b6(self.b5(F.max_pool2d(e4, 2))))
        d8 = self.b8(F.interpolate(z, scale_factor=2, mode="nearest")) + e4
        d10 = self.b10(F.interpolate(self.b9(d8), scale_factor=2, mode="nearest")) + e2
        noise = self.b12(self.b11(d10))
        return y - noise
