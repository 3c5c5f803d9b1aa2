"""The architecture registry: one place that maps names to network constructors and configs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import nn

from .cascade import CascadeConfig, CascadeNetwork, InpaintCritic, InpaintCriticConfig
from .critics import SRGANCritic, SRGANCriticConfig, UNetCritic, UNetCriticConfig
from .resunet import ResUNetConfig, ResUNetGenerator
from .shuffle import ShuffleConfig, ShuffleGenerator
from .srresnet import SRResNetConfig, SRResNetGenerator
from .unet import UNetConfig, UNetGenerator


@dataclass(frozen=True)
class Architecture:
    """A generator family with its config dataclass and the critic trained beside it."""

    name: str
    generator: type[nn.Module]
    config: type
    critic: type[nn.Module]
    critic_config: type
    description: str
    task: str = "denoise"  # "denoise" (image -> image) or "restore" (image + mask -> image)


ARCHITECTURES: dict[str, Architecture] = {
    "srresnet": Architecture(
        "srresnet",
        SRResNetGenerator,
        SRResNetConfig,
        SRGANCritic,
        SRGANCriticConfig,
        "seed 000: SRResNet-like residual generator, 16 blocks x 64 features",
    ),
    "unet": Architecture(
        "unet",
        UNetGenerator,
        UNetConfig,
        UNetCritic,
        UNetCriticConfig,
        "seed 001: encoder-decoder with two long shortcuts, predicts the noise",
    ),
    # The seed-000 critic: the blog's WGAN-MSE / WGAN-VGG / ResUNet runs share one
    # discriminator, and its three stride-2 layers suit any patch of 32 pixels or more.
    "resunet": Architecture(
        "resunet",
        ResUNetGenerator,
        ResUNetConfig,
        SRGANCritic,
        SRGANCriticConfig,
        "seed 003: residual U-Net (ResUNet), output added to the input",
    ),
    # The CPU zoo's generator (docs/benchmarks.md, the generator study): FFDNet-style
    # pixel-unshuffle body. Its critic is seed 000's, which suits patches of >= 32 pixels.
    "shuffle": Architecture(
        "shuffle",
        ShuffleGenerator,
        ShuffleConfig,
        SRGANCritic,
        SRGANCriticConfig,
        "pixel-unshuffle residual body at half resolution (FFDNet-like), CPU-efficient",
    ),
    "cascade": Architecture(
        "cascade",
        CascadeNetwork,
        CascadeConfig,
        InpaintCritic,
        InpaintCriticConfig,
        "seed 004: inpainting generator + deblurring-denoising auto-encoder (image + mask)",
        task="restore",
    ),
}


def get_architecture(name: str) -> Architecture:
    """Look up an architecture by name, with a message listing the known ones."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"Unknown architecture {name!r}; known architectures: {known}.") from None


def make_config(architecture: str, config: dict[str, Any] | None = None, *, critic: bool = False):
    """Build the config dataclass of an architecture (or of its critic) from a plain dict."""
    arch = get_architecture(architecture)
    cls = arch.critic_config if critic else arch.config
    config = dict(config or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise ValueError(
            f"Unknown config key(s) {unknown} for architecture {architecture!r}"
            f"{' critic' if critic else ''}; valid keys: {sorted(fields)}."
        )
    typed = {}
    for key, value in config.items():
        ftype = fields[key].type
        typed[key] = _coerce(value, ftype if isinstance(ftype, str) else ftype.__name__)
    return cls(**typed)


def _coerce(value: Any, type_name: str) -> Any:
    if isinstance(value, str) and type_name in ("int", "float", "bool"):
        if type_name == "bool":
            return value.lower() in ("1", "true", "yes")
        return int(value) if type_name == "int" else float(value)
    return value


def build_generator(
    architecture: str, channels: int = 1, config: dict[str, Any] | None = None
) -> nn.Module:
    """Construct an untrained generator of the named architecture."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (gray) or 3 (RGB), got {channels}.")
    return get_architecture(architecture).generator(channels, make_config(architecture, config))


def build_critic(
    architecture: str, channels: int = 1, config: dict[str, Any] | None = None
) -> nn.Module:
    """Construct an untrained critic that belongs with the named generator architecture."""
    arch = get_architecture(architecture)
    return arch.critic(channels, make_config(architecture, config, critic=True))
