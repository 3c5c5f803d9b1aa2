"""The seed-003 generator: a residual U-Net (ResUNet) whose output is added to its input."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ResUNetConfig:
    """Size of the ResUNet generator.

    ``features`` is the width of the full-resolution level; each of the ``depth``
    down-steps halves the resolution and doubles the width (32, 64, 128, 256 for the
    defaults). Input height and width must be multiples of ``2 ** depth`` (the inference
    engine pads to that).
    """

    features: int = 32
    depth: int = 3


class _ConvBNReLU(nn.Module):
    """Conv 3x3 + batch norm + ReLU. The ``conv``/``bn`` attribute names are what
    :func:`~napari_wgan_denoise.inference.optimise.fold_batch_norm` looks for."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class _ConvBlock(nn.Sequential):
    """The blog's ConvBlock: two (conv 3x3 + batch norm + ReLU) layers."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(_ConvBNReLU(cin, cout), _ConvBNReLU(cout, cout))


class _ResidualUnit(nn.Module):
    """ConvBlock plus a 1x1 "bridge" conv (a projection of the unit's input), added
    element-wise to the ConvBlock's output."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.block = _ConvBlock(cin, cout)
        self.bridge = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + self.bridge(x)


class _UpResBlock(nn.Module):
    """Upsample the previous output (nearest x2 + conv 3x3 to the skip's width),
    concatenate the skip of the same level and run a residual unit on the result.

    Every conv is zero-padded to keep its size, so the skip has exactly the size of the
    upsampled map: no cropping is needed (the blog's version crops because its convs are
    unpadded)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up_conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.unit = _ResidualUnit(2 * cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.up_conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        return self.unit(torch.cat([up, skip], dim=1))


class ResUNetGenerator(nn.Module):
    """Residual U-Net denoiser (seed 003, "GAN with residual learning"): ``y + R(y)``.

    Contracting path: a residual unit at full resolution, then ``depth`` times max-pool 2
    and a residual unit of twice the width (the deepest one is the bottleneck). Expansive
    path: ``depth`` UpResBlocks, each upsampling the previous output, concatenating the
    contracting path's output of the same level and running a residual unit (the blog
    feeds the concatenation to a plain ConvBlock; the bridge conv we add there makes every
    unit residual, as in Zhang et al.'s ResUNet). A final 1x1 conv maps to the image
    channels and its output is added to the input (the blog adds "a middle slice of the
    source", which is the input itself here since no conv crops). That last conv starts
    at zero, so an untrained network is the identity.

    Choices where the blog is silent: 1x1 bridge convs, max-pool down, nearest + conv up,
    widths doubling per level. Input height and width must be multiples of
    ``size_multiple = 2 ** depth``.
    """

    def __init__(self, channels: int = 1, config: ResUNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or ResUNetConfig()
        f, depth = int(self.config.features), int(self.config.depth)
        if f < 1 or depth < 1:
            raise ValueError(f"ResUNet needs features >= 1 and depth >= 1; got {self.config}.")
        self.channels = channels
        self.size_multiple = 2**depth
        widths = [f * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList(
            [_ResidualUnit(channels, widths[0])]
            + [_ResidualUnit(widths[i - 1], widths[i]) for i in range(1, depth + 1)]
        )
        self.up = nn.ModuleList(
            [_UpResBlock(widths[i], widths[i - 1]) for i in range(depth, 0, -1)]
        )
        self.head = nn.Conv2d(widths[0], channels, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def receptive_radius(self) -> int:
        """Pixels of context on each side that influence one output pixel (conservative).

        A 3x3 conv at level ``l`` (resolution ``1 / 2**l``) reaches ``2**l`` input pixels
        further: two per residual unit on the way down (levels 0..depth), three per
        UpResBlock (its up-conv and residual unit, levels 0..depth-1), plus
        ``2 ** (depth + 1)`` for the alignment of pooling and upsampling.
        """
        depth = int(self.config.depth)
        down = sum(2 * 2**level for level in range(depth + 1))
        up = sum(3 * 2**level for level in range(depth))
        return down + up + 2 ** (depth + 1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        skips = []
        x = y
        for level, unit in enumerate(self.down):
            if level:
                x = F.max_pool2d(x, 2)
            x = unit(x)
            skips.append(x)
        skips.pop()  # the bottleneck is x itself
        for block in self.up:
            x = block(x, skips.pop())
        return y + self.head(x)
