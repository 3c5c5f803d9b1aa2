"""A CPU-efficient denoiser: pixel-unshuffle, a residual body at half resolution, shuffle.

FFDNet's design (Zhang et al. 2018) without its noise-level map: the image is split into
its four half-resolution sub-images (``pixel_unshuffle``), a plain 3x3 convolutional body
works on them, and ``pixel_shuffle`` puts the predicted noise back at full resolution; the
estimate is ``y - r`` (residual learning, as seeds 000 and 001). At a quarter of the
pixels per convolution it costs about a quarter of a full-resolution body of the same
depth and width. Our additions, chosen by the study in ``docs/benchmarks.md``: the middle
convolutions are grouped into residual blocks (conv-ReLU-conv + identity, as EDSR), which
trains faster than FFDNet's plain chain on our short CPU budgets, and the last
convolution starts at zero so an untrained model is the identity. No batch norm, so
inference does not depend on the batch and nothing needs folding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ShuffleConfig:
    """Size of the pixel-unshuffle denoiser.

    ``depth`` counts every 3x3 convolution (head, body and tail; FFDNet uses 15 for gray
    images); ``features`` is the body width; ``residual`` groups the body convolutions in
    pairs with identity skips (otherwise a plain conv-ReLU chain, FFDNet's body).
    ``noise_level`` gives the body FFDNet's noise-level map, estimated from the input
    itself (see :func:`estimated_sigma`), so the model stays blind to its caller.
    """

    features: int = 64
    depth: int = 12
    residual: bool = True
    noise_level: bool = False


def estimated_sigma(sub: torch.Tensor, channels: int) -> torch.Tensor:
    """Per-image Gaussian noise estimate (Donoho's MAD of the finest diagonal Haar detail),
    shape ``(N, 1, 1, 1)``, from the pixel-unshuffled input ``sub`` (``4 * channels``
    sub-images in the order ``pixel_unshuffle`` gives)."""
    detail, _ = _haar(sub, channels)
    return (detail.flatten(1).abs().median(dim=1).values / 0.6745)[:, None, None, None]


def _haar(sub: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The finest diagonal Haar detail and the 2x2 mean, each ``(N, channels, h, w)``."""
    s = sub.detach().float().unflatten(1, (channels, 4))
    return (s[:, :, 0] - s[:, :, 1] - s[:, :, 2] + s[:, :, 3]) / 2, s.mean(2)


#: The fitted noise model of one image: the global MAD estimate, and the slope, offset and
#: use (whether the signal dependence matters) of ``variance = slope * mean + offset``,
#: each of shape ``(N,)``.
NoiseFit = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _local_mean(mean: torch.Tensor, smooth: int) -> torch.Tensor:
    """The 2x2 means smoothed over ``smooth``² neighbours, averaged over channels."""
    return F.avg_pool2d(mean, smooth, 1, smooth // 2, count_include_pad=False).mean(1)


def noise_fit(
    sub: torch.Tensor, channels: int, bins: int = 16, smooth: int = 5, stride: int = 1
) -> NoiseFit:
    """Fit the signal-dependent noise model that :func:`sigma_map` reads, from the
    pixel-unshuffled input ``sub``: one fit per image of the batch. ``stride`` > 1 fits on
    every ``stride``-th position of each axis (after the local smoothing), for large images."""
    detail, mean = _haar(sub, channels)
    local = _local_mean(mean, smooth)
    if stride > 1:
        detail, local = detail[..., ::stride, ::stride], local[..., ::stride, ::stride]
    return _fit(detail, local, bins)


def _fit(detail: torch.Tensor, local: torch.Tensor, bins: int) -> NoiseFit:
    """:func:`noise_fit` from the Haar detail and the local mean, once they are computed."""
    flat, mag = local.flatten(1), detail.flatten(2).abs()  # (N, P), (N, C, P)
    channels = detail.shape[1]
    glob = mag.flatten(1).median(dim=1).values / 0.6745
    # equal-count bins of the local mean; tensor operations only, so that the network
    # traces (TorchScript export) for any image size
    sorted_mean, order = flat.sort(dim=1)
    n = flat.shape[1]
    positions = torch.arange(n, device=flat.device)
    which = positions * bins // n  # the bin of each sorted position
    per_bin = torch.bincount(which, minlength=bins)
    starts = torch.cumsum(per_bin, 0) - per_bin
    levels = sorted_mean[:, starts + per_bin // 2]  # bin medians
    # the median |detail| of each bin over its pixels in every channel (the middle element,
    # upper for even counts): one row per bin holds the bin's values, with -inf before and
    # +inf after them so that the row's median is that element (a selection per row, not a
    # sort of every value: 40 % of the map's time on RGB)
    row = (n + bins - 1) // bins * channels + 1
    below = (row - 1) // 2 - per_bin * channels // 2
    slot_sorted = which * row + below[which] + (positions - starts[which]) * channels
    slot = torch.empty_like(order).scatter_(1, order, slot_sorted.expand_as(order))
    slot = slot[:, None, :] + torch.arange(channels, device=flat.device)[None, :, None]
    cols = torch.arange(row, device=flat.device)
    pads = torch.where(cols[None, :] < below[:, None], float("-inf"), float("inf"))
    table = pads.to(mag.dtype).flatten()[None].repeat(mag.shape[0], 1)
    table = table.scatter(1, slot.flatten(1), mag.flatten(1)).unflatten(1, (bins, row))
    median = table.median(dim=2).values
    var = (median / 0.6745) ** 2
    # least-squares line through (level, variance), and whether it changes enough to matter
    dl = levels - levels.mean(1, keepdim=True)
    slope = (dl * (var - var.mean(1, keepdim=True))).sum(1) / (dl**2).sum(1).clamp_min(1e-20)
    offset = (var.mean(1) - slope * levels.mean(1)).clamp_min(0.0)
    use = slope * (levels[:, -1] - levels[:, 0]) > 0.5 * glob**2
    return glob, slope, offset, use


def sigma_map(
    sub: torch.Tensor,
    channels: int,
    fit: NoiseFit | None = None,
    bins: int = 16,
    smooth: int = 5,
) -> torch.Tensor:
    """Per-pixel noise estimate for signal-dependent (Poisson-Gaussian) noise, shape
    ``(N, 1, h, w)`` at the resolution of the pixel-unshuffled input ``sub``.

    Fits ``variance = a * mean + b`` to the robust (MAD) variance of the diagonal Haar
    detail in ``bins`` equal-count intensity bins of the locally smoothed 2x2 mean (Foi
    et al.'s signal-dependent model), then reads the fit at each pixel's local mean.
    Where the fitted variance changes by less than half the global variance over the
    image's intensities (Gaussian noise), the map is the constant global MAD estimate of
    :func:`estimated_sigma`, as the network saw in training on Gaussian noise; elsewhere one
    global number under-reads the noise of bright structures on dark microscopy backgrounds.

    ``fit`` (of shape ``(1,)`` each, from :func:`noise_fit` on the whole image) replaces the
    fit on ``sub`` itself, so that the tiles of one image read one noise model.
    """
    if fit is not None and not bool(fit[3].any()):  # a Gaussian fit: the constant map
        level = fit[0].float()[:, None, None, None]
        return level.expand(sub.shape[0], 1, sub.shape[-2], sub.shape[-1])
    detail, mean = _haar(sub, channels)
    mean = _local_mean(mean, smooth)
    glob, slope, offset, use = _fit(detail, mean, bins) if fit is None else fit
    glob, slope, offset = glob[:, None, None], slope[:, None, None], offset[:, None, None]
    fitted = (slope * mean + offset).clamp_min((glob / 4) ** 2).sqrt()
    return torch.where(use[:, None, None], fitted, glob.expand_as(mean))[:, None]


class _Block(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in place: neither the first convolution's output nor the second's is needed for
        # the backward pass, and skipping two block-sized temporaries is ~5 % faster
        return self.conv2(F.relu(self.conv1(x), inplace=True)).add_(x)


#: The context a tile carries beyond which the trained shuffle networks' outputs no longer
#: move: at 16 px (+ 8 px of blend) tiled outputs of the shipped gray, cells and fluo models
#: differ from the whole-image output by at most one bf16 step (0.5 of 255) and score the
#: same against the clean image to 0.001 dB, and 2048² planes take 6-9 % less time than at
#: 24 px (docs/benchmarks.md §7p, §7y).
CONTEXT_RADIUS = 16


class ShuffleGenerator(nn.Module):
    """Predicts the noise of ``y`` at half resolution and returns ``y - r``."""

    size_multiple = 2
    #: Children that run in fp32 under autocast (and stay fp32 when CPU inference fuses the
    #: convolutions): the head reads the image itself, and bf16's 8-bit mantissa rounds it
    #: by up to 1/512 of the range, an error the network does not remove (cells-mse-fast:
    #: -0.02 dB at σ 25; docs/benchmarks.md §7v). It is ~1 % of the work. An instance set to
    #: ``()`` runs everything under autocast (the behaviour before; for comparisons).
    full_precision: tuple[str, ...] = ("head",)

    def __init__(self, channels: int = 1, config: ShuffleConfig | None = None) -> None:
        super().__init__()
        self.config = config or ShuffleConfig()
        f, depth = int(self.config.features), int(self.config.depth)
        if f < 1 or depth < 3:
            raise ValueError(
                f"shuffle needs features >= 1 and depth >= 3, got features={f}, depth={depth}."
            )
        self.channels = channels
        sub = 4 * channels
        self.noise_level = bool(self.config.noise_level)
        inputs = sub + int(self.noise_level)
        self.head = nn.Sequential(nn.Conv2d(inputs, f, 3, padding=1), nn.ReLU(inplace=True))
        n_body = depth - 2
        layers: list[nn.Module] = []
        if self.config.residual:
            layers += [_Block(f) for _ in range(n_body // 2)]
            if n_body % 2:
                layers += [nn.Conv2d(f, f, 3, padding=1), nn.ReLU(inplace=True)]
        else:
            for _ in range(n_body):
                layers += [nn.Conv2d(f, f, 3, padding=1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.tail = nn.Conv2d(f, sub, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)
        #: The noise model that every input's map reads instead of its own fit (see
        #: :func:`fit_whole_image`); None: each input (tile) is fitted by itself.
        self.fixed_fit: NoiseFit | None = None

    @property
    def receptive_radius(self) -> int:
        """Pixels of context on each side that influence one output pixel."""
        return 2 * int(self.config.depth) + 2

    @property
    def context_radius(self) -> int:
        """Pixels of context on each side that a tile needs for its output to match the
        whole-image output within bf16 rounding (the tiling's default overlap, before the
        blend band): the receptive radius, at most :data:`CONTEXT_RADIUS`."""
        return min(self.receptive_radius, CONTEXT_RADIUS)

    def _head(self, sub: torch.Tensor) -> torch.Tensor:
        if "head" not in self.full_precision:
            return self.head(sub)
        with torch.autocast(device_type=sub.device.type, enabled=False):
            return self.head(sub.to(self.head[0].weight.dtype))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        sub = F.pixel_unshuffle(y, 2)
        if self.noise_level:
            noise = sigma_map(sub, self.channels, self.fixed_fit)
            sub = torch.cat([sub, noise.to(sub.dtype)], dim=1)
        r = self.tail(self.body(self._head(sub)))
        return y - F.pixel_shuffle(r, 2).to(y.dtype)


#: Images larger than this many pixels are fitted on a mosaic of evenly spread crops.
FIT_PIXELS = 1 << 20
_FIT_CROP = 256
#: Half-resolution positions a whole-image fit reads at most: beyond them it reads every
#: second (third, ...) position of each axis, spread over the whole image. 64 k positions
#: (x 4 Haar samples x channels) pin each of the 16 bins' robust variance to about 1 %, and
#: the fit of a megapixel then takes a quarter of the time (~0.07 of 0.8 s/MP on 2 cores).
FIT_POSITIONS = 1 << 16


def fit_whole_image(network: ShuffleGenerator, image: torch.Tensor) -> NoiseFit:
    """The noise model of a whole ``(1, C, H, W)`` image (in the network's input scale), for
    :attr:`ShuffleGenerator.fixed_fit` while its tiles are denoised: the map then depends
    on the image, not on how it is tiled. Images over :data:`FIT_PIXELS` pixels are fitted
    on a mosaic of crops spread evenly over them."""
    _, c, h, w = image.shape
    if h * w > FIT_PIXELS and min(h, w) >= 2 * _FIT_CROP:
        per_axis = int((FIT_PIXELS // _FIT_CROP**2) ** 0.5)
        ys = _spread(h, per_axis)
        xs = _spread(w, per_axis)
        rows = [
            torch.cat([image[..., y : y + _FIT_CROP, x : x + _FIT_CROP] for x in xs], -1)
            for y in ys
        ]
        image = torch.cat(rows, -2)
    image = image[..., : image.shape[-2] // 2 * 2, : image.shape[-1] // 2 * 2]
    positions = image.shape[-2] * image.shape[-1] // 4
    stride = max(1, math.ceil((positions / FIT_POSITIONS) ** 0.5))
    with torch.no_grad():
        return noise_fit(F.pixel_unshuffle(image.float(), 2), network.channels, stride=stride)


def _spread(length: int, count: int) -> list[int]:
    """``count`` even crop starts spread evenly over ``length`` (fewer if it is short)."""
    count = max(1, min(count, length // _FIT_CROP))
    last = length - _FIT_CROP
    return sorted({(last * i // max(count - 1, 1)) // 2 * 2 for i in range(count)})
