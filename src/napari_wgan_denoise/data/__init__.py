"""Training data (noise models, patch sources) and sample images.

The names below are imported lazily, so that ``napari_wgan_denoise.data.samples`` (used by
napari's sample-data menu) loads without pulling in the training-data machinery.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "NoiseModel": "noise",
    "GaussianNoise": "noise",
    "PoissonGaussianNoise": "noise",
    "parse_noise": "noise",
    "PatchSource": "sources",
    "SyntheticSource": "sources",
    "PairedSource": "sources",
    "MixedSource": "sources",
    "make_source": "datasets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import an exported name from its submodule on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
