"""The seed-004 cascade (Zhao et al. 2017): an inpainting generator followed by a
deblurring-denoising auto-encoder, trained as one network, with a VGG-like critic."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class CascadeConfig:
    """Size of the two networks of the cascade.

    ``inpaint_features`` is the width w of the inpainting generator's first layer (its
    encoder runs at w, 2w, 2w, 4w, 4w with two stride-2 convs, then ``inpaint_blocks``
    residual blocks at 4w); ``restore_features`` and ``restore_layers`` size the
    deblurring-denoising auto-encoder (seed 004: 96 channels, 4 + 4 layers).
    """

    inpaint_features: int = 32
    inpaint_blocks: int = 7
    restore_features: int = 96
    restore_layers: int = 8


class _ConvBN(nn.Module):
    """Conv 3x3 + batch norm + activation (named ``conv``/``bn`` so inference folds the norm)."""

    def __init__(self, cin: int, cout: int, act: nn.Module, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class _UpBN(nn.Module):
    """Transposed conv (x2) + batch norm + ReLU: the decoder's upsampling layer."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.up(x)))


class _ResBlock(nn.Module):
    """Seed 004 Fig. 3: conv-BN-ReLU-conv-BN plus an identity shortcut."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.first = _ConvBN(width, width, nn.ReLU())
        self.second = _ConvBN(width, width, nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.second(self.first(x))


class InpaintGenerator(nn.Module):
    """Encoder-decoder with residual blocks and mirrored additive skips that fills holes.

    Input: the image (holes set to 0) and the hole mask as an extra channel. Five encoder
    convs (BN, LeakyReLU), seven residual blocks, five decoder layers (BN, ReLU; two of
    them transposed convs), each decoder layer's output added to its mirrored encoder
    layer's; the last layer's output is added to the input image. Only hole pixels take
    the generated values: everywhere else the input passes through unchanged.
    """

    def __init__(self, channels: int, features: int = 32, blocks: int = 7) -> None:
        super().__init__()
        w = features
        lrelu = nn.LeakyReLU(0.2)
        self.channels = channels
        self.e1 = _ConvBN(channels + 1, w, lrelu)
        self.e2 = _ConvBN(w, 2 * w, lrelu, stride=2)
        self.e3 = _ConvBN(2 * w, 2 * w, lrelu)
        self.e4 = _ConvBN(2 * w, 4 * w, lrelu, stride=2)
        self.e5 = _ConvBN(4 * w, 4 * w, lrelu)
        self.blocks = nn.Sequential(*[_ResBlock(4 * w) for _ in range(blocks)])
        self.d1 = _ConvBN(4 * w, 4 * w, nn.ReLU())
        self.d2 = _UpBN(4 * w, 2 * w)
        self.d3 = _ConvBN(2 * w, 2 * w, nn.ReLU())
        self.d4 = _UpBN(2 * w, w)
        self.d5 = nn.Conv2d(w, channels, 3, padding=1)
        nn.init.zeros_(self.d5.weight)
        nn.init.zeros_(self.d5.bias)
        self.n_blocks = blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image, mask = x[:, : self.channels], x[:, self.channels :]
        e1 = self.e1(x)
        e2 = self.e2(e1)
        e3 = self.e3(e2)
        e4 = self.e4(e3)
        e5 = self.e5(e4)
        d1 = self.d1(self.blocks(e5)) + e4
        d2 = self.d2(d1) + e3
        d3 = self.d3(d2) + e2
        d4 = self.d4(d3) + e1
        filled = image + self.d5(d4)
        return image * (1 - mask) + filled * mask


class DeblurDenoiseAE(nn.Module):
    """Seed 004's second network: ``layers`` 3x3 convs of ``features`` channels, all at full
    resolution, BN except on the first and last, LeakyReLU(0.001); residual output
    ``y = x - R(x)``."""

    def __init__(self, channels: int, features: int = 96, layers: int = 8) -> None:
        super().__init__()
        if layers < 2:
            raise ValueError(f"restore_layers must be at least 2, got {layers}.")
        act = nn.LeakyReLU(0.001)
        self.first = nn.Sequential(nn.Conv2d(channels, features, 3, padding=1), act)
        self.middle = nn.Sequential(
            *[_ConvBN(features, features, nn.LeakyReLU(0.001)) for _ in range(layers - 2)]
        )
        self.last = nn.Conv2d(features, channels, 3, padding=1)
        nn.init.zeros_(self.last.weight)
        nn.init.zeros_(self.last.bias)
        self.n_layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.last(self.middle(self.first(x)))


class CascadeNetwork(nn.Module):
    """Inpainting generator and deblurring-denoising auto-encoder in series.

    Takes ``(B, C + 1, H, W)``: the image on the network scale with holes set to 0, and
    the hole mask (1 = missing) as the last channel; returns the restored ``(B, C, H, W)``.
    :meth:`stages` returns the inpainting-only output too. H and W must be multiples of 4.
    """

    size_multiple = 4
    task = "restore"

    def __init__(self, channels: int = 1, config: CascadeConfig | None = None) -> None:
        super().__init__()
        self.config = config or CascadeConfig()
        c = self.config
        self.channels = channels
        self.inpaint = InpaintGenerator(channels, c.inpaint_features, c.inpaint_blocks)
        self.restore = DeblurDenoiseAE(channels, c.restore_features, c.restore_layers)

    @property
    def receptive_radius(self) -> int:
        """Pixels of context on each side that influence one output pixel."""
        c = self.config
        # e1 (1) + e2..e3 (2 at /2) + e4..e5, blocks, d1 (at /4) + d2..d3 (/2) + d4, d5 (1)
        quarter = 1 + 1 + 2 * c.inpaint_blocks + 1
        inpaint = 1 + 2 * 2 + 4 * quarter + 2 * 3 + 2 + 1
        return inpaint + c.restore_layers + 4

    def stages(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The inpainted image and the final (inpainted, deblurred, denoised) image."""
        filled = self.inpaint(x)
        return filled, self.restore(filled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)[1]


@dataclass
class InpaintCriticConfig:
    """Width of the seed-004 critic: five conv groups doubling from ``features`` up to
    ``max_features``, then two fully connected layers of ``hidden`` and 1 units."""

    features: int = 64
    max_features: int = 512
    hidden: int = 256
    negative_slope: float = 0.2


class InpaintCritic(nn.Module):
    """The VGG-16-like Wasserstein critic of seed 004: five groups of two 3x3 convs, the
    second with stride 2 instead of max-pooling, widths 64 to 512, then two fully connected
    layers and no sigmoid. A global average before the first FC layer lets it score any
    patch of at least 32 pixels; no batch norm, so the gradient penalty stays per sample."""

    def __init__(self, channels: int = 1, config: InpaintCriticConfig | None = None) -> None:
        super().__init__()
        self.config = config or InpaintCriticConfig()
        f, fmax, s = self.config.features, self.config.max_features, self.config.negative_slope
        layers: list[nn.Module] = []
        cin = channels
        for group in range(5):
            w = min(f * 2**group, fmax)
            layers += [nn.Conv2d(cin, w, 3, padding=1), nn.LeakyReLU(s)]
            layers += [nn.Conv2d(w, w, 3, stride=2, padding=1), nn.LeakyReLU(s)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Linear(cin, self.config.hidden), nn.LeakyReLU(s), nn.Linear(self.config.hidden, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One score per image: larger means 'looks like a real, unholed image'."""
        return self.head(self.features(x).mean(dim=(2, 3)))[:, 0]
