"""Training-data recipes: several sources mixed by weight, with per-source options.

A training config either names one source (``clean``/``noisy``/``fmd``/``noise``, see
:func:`~napari_wgan_denoise.data.datasets.make_source`) or lists ``sources``, each a
mapping with the same keys plus:

* ``weight`` - share of each batch drawn from it (default: equal);
* ``balance: files`` - every file equally likely, whatever its size or plane count;
* ``colour_jitter`` - ``true`` (default strengths) or a mapping of
  :class:`~napari_wgan_denoise.data.colour.ColourJitter` fields: stain augmentation of the
  clean patches before noise (RGB synthetic sources only);
* ``stain`` - ``true`` or a mapping of :class:`~napari_wgan_denoise.data.colour.GrayStainer`
  fields: turns a gray 8-bit synthetic source into stained-looking RGB (structure variety
  for a stained-cell model), applied before ``colour_jitter`` if both are given.

The same options may sit at the top level of a single-source config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .colour import ColourJitter, GrayStainer
from .datasets import MixedSource, PatchSource, SyntheticSource, make_source

SOURCE_KEYS = ("clean", "noisy", "fmd", "noise", "val_fraction", "val_names", "channels", "mix")
RECIPE_KEYS = ("weight", "balance", "colour_jitter", "stain")


def _options(source: PatchSource, spec: Mapping[str, Any], where: str) -> PatchSource:
    balance = spec.get("balance")
    if balance not in (None, "files", "area"):
        raise ValueError(f"{where}: balance must be 'files' or 'area', got {balance!r}.")
    if balance == "files":
        parts = source.sources if isinstance(source, MixedSource) else [source]
        for part in parts:
            part.balance_files()
    stain = spec.get("stain")
    if stain:
        if not isinstance(source, SyntheticSource) or source.channels != 1 or not source.fixed:
            raise ValueError(
                f"{where}: stain needs gray 8-bit clean images with Gaussian noise (it turns "
                "them into RGB); RGB images are already coloured (use colour_jitter)."
            )
        source.augment = _make(GrayStainer, stain, where, "stain")
        source.channels = 3
    jitter = spec.get("colour_jitter")
    if jitter:
        if not isinstance(source, SyntheticSource) or source.channels != 3:
            raise ValueError(f"{where}: colour_jitter needs RGB clean images with synthetic noise.")
        colour = _make(ColourJitter, jitter, where, "colour_jitter")
        source.augment = colour if source.augment is None else _Chain(source.augment, colour)
    return source


def _make(kind: type, setting: Any, where: str, key: str) -> Any:
    fields = dict(setting) if isinstance(setting, Mapping) else {}
    try:
        return kind(**fields)
    except TypeError:
        raise ValueError(
            f"{where}: unknown {key} setting(s) {sorted(fields)}; valid: "
            f"{sorted(kind.__dataclass_fields__)}."
        ) from None


class _Chain:
    """Two clean-patch augmentations, one after the other (stain, then colour jitter)."""

    def __init__(self, first: Any, second: Any) -> None:
        self.first, self.second = first, second
        if hasattr(first, "validate"):  # only the first part applies to validation crops
            self.validate = first.validate

    def __call__(self, clean: Any, generator: Any) -> Any:
        return self.second(self.first(clean, generator), generator)

    def to_card(self) -> list[Any]:
        return [self.first.to_card(), self.second.to_card()]


def build_source(data: Mapping[str, Any], seed: int = 0) -> PatchSource:
    """The training source a config describes (one source, or ``sources`` mixed)."""
    data = dict(data)
    sources = data.pop("sources", None)
    if sources is None:
        opts = {k: data.pop(k) for k in RECIPE_KEYS if k in data}
        if "weight" in opts:
            raise ValueError("weight only applies inside a sources list.")
        return _options(make_source(**data, seed=seed), opts, "config")
    if data:
        raise ValueError(
            f"Give either sources: [...] or top-level data keys, not both (found {sorted(data)})."
        )
    if not isinstance(sources, Sequence) or isinstance(sources, str) or not sources:
        raise ValueError("sources must be a non-empty list of mappings.")
    built, weights = [], []
    for n, spec in enumerate(sources, 1):
        where = f"sources[{n}]"
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where} must be a mapping (clean:, noise:, weight:, ...).")
        unknown = sorted(set(spec) - set(SOURCE_KEYS) - set(RECIPE_KEYS))
        if unknown:
            raise ValueError(
                f"{where}: unknown key(s) {unknown}; valid: {sorted(SOURCE_KEYS + RECIPE_KEYS)}."
            )
        args = {k: spec[k] for k in SOURCE_KEYS if k in spec}
        built.append(_options(make_source(**args, seed=seed), spec, where))
        weights.append(float(spec.get("weight", 1.0)))
    return built[0] if len(built) == 1 else MixedSource(built, weights)
