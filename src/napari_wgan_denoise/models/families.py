"""Model families (ID-MSE / ID-MSE-WGAN twins) and the default model choice. Qt-free.

A model's card says which family it belongs to and as which twin (``"family":
{"name": "fluo-fast", "kind": "wgan"}``) and whether it is the one-click default for its
channel count (``"default": true``). Cards without these fields (older or hand-made
models) fall back on their names, which follow ``{base}-{mse|wgan}[-{suffix}]``: family
``fluo`` holds ``fluo-mse`` and ``fluo-wgan``, family ``cells-fast`` holds
``cells-mse-fast`` and ``cells-wgan-fast``. The Compare widget runs both members of a family.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .registry import ModelEntry, model_entries

KINDS = ("mse", "wgan")

#: Preferred one-click models for gray (1) and RGB (3) images, best first, for registries
#: whose cards mark no default.
DEFAULT_PREFERENCE: dict[int, tuple[str, ...]] = {
    1: ("fluo-wgan-fast", "fluo-wgan", "gray-wgan-fast", "gray-wgan"),
    3: ("cells-wgan-fast", "cells-wgan"),
}


def split_model_name(name: str) -> tuple[str, str] | None:
    """``(family, kind)`` of a model name, e.g. ``"cells-wgan-fast" -> ("cells-fast", "wgan")``.

    ``kind`` is ``"mse"`` or ``"wgan"``; names without such a part (or with nothing else)
    belong to no family and give ``None``. The last ``-mse``/``-wgan`` part counts.
    """
    parts = name.split("-")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].lower() in KINDS:
            rest = parts[:i] + parts[i + 1 :]
            if rest and all(rest):
                return "-".join(rest), parts[i].lower()
            return None
    return None


def card_family(name: str, card: Mapping[str, Any] | None = None) -> tuple[str, str] | None:
    """``(family, kind)`` of a model: from its card's ``family`` field when it has one,
    else from its name (:func:`split_model_name`)."""
    field = (card or {}).get("family")
    if isinstance(field, Mapping) and field.get("name") and field.get("kind") in KINDS:
        return str(field["name"]), str(field["kind"])
    return split_model_name(name)


def _names(names: Iterable[str] | None) -> list[str]:
    if names is not None:
        return list(names)
    return [e.name for e in model_entries() if e.task == "denoise"]


def _cards(names: Iterable[str] | Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    """The cards known for ``names``: those of registry entries (a mapping of entries, or
    the registry itself when ``names`` is None); plain names have none."""
    if names is None:
        return {e.name: e.card for e in model_entries()}
    if isinstance(names, Mapping):
        return {n: getattr(e, "card", None) or {} for n, e in names.items()}
    return {}


def _members(
    names: list[str], cards: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, dict[str, str]]:
    """family -> {kind: name}; when two names map to the same slot the first one (registry
    order: shipped before user models) wins."""
    found: dict[str, dict[str, str]] = {}
    for name in names:
        split = card_family(name, (cards or {}).get(name))
        if split is None:
            continue
        family, kind = split
        slot = found.setdefault(family, {})
        slot.setdefault(kind, name)
    return found


def list_families(names: Iterable[str] | None = None) -> list[str]:
    """Families with both an ID-MSE and an ID-MSE-WGAN model, in registry order.

    ``names`` defaults to every model in the registry (shipped first, then the user's).
    """
    cards = _cards(names)
    names = _names(names)
    members = _members(names, cards)
    families: list[str] = []
    for name in names:
        split = card_family(name, cards.get(name))
        if split and split[0] not in families and len(members[split[0]]) == len(KINDS):
            families.append(split[0])
    return families


def family_members(family: str, names: Iterable[str] | None = None) -> tuple[str, str]:
    """The ``(mse_name, wgan_name)`` twins of a family, e.g. ``"fluo-fast"`` ->
    ``("fluo-mse-fast", "fluo-wgan-fast")``.

    Raises ``ValueError`` naming the families that do exist when the registry (or
    ``names``) lacks one of the two models.
    """
    cards = _cards(names)
    names = _names(names)
    slot = _members(names, cards).get(family, {})
    if all(kind in slot for kind in KINDS):
        return slot["mse"], slot["wgan"]
    complete = ", ".join(list_families(names)) or "(none installed)"
    if slot:
        have = next(iter(slot.values()))
        raise ValueError(
            f"Model family {family!r} is incomplete: only {have!r} is installed, but Compare "
            f"needs both its -mse and -wgan models. Complete families: {complete}."
        )
    raise ValueError(
        f"No model family named {family!r}. Families with both an -mse and a -wgan model: "
        f"{complete}."
    )


def entry_fits(entry: ModelEntry, channels: int) -> bool:
    """Whether a registered denoiser takes images with ``channels`` colours (1 gray, 3 RGB)."""
    return entry.channels == channels and entry.task == "denoise"


def default_model_for(channels: int) -> str | None:
    """The model the one-click action uses for images with ``channels`` colours (1 or 3).

    The first fitting model whose card says ``"default": true`` (shipped before user
    models), else the first installed model of ``DEFAULT_PREFERENCE[channels]`` that fits,
    else the first registry model with that many channels, else ``None``.
    """
    entries = model_entries()
    for entry in entries:
        if entry.card.get("default") is True and entry_fits(entry, channels):
            return entry.name
    by_name = {e.name: e for e in entries}
    for name in DEFAULT_PREFERENCE.get(channels, ()):
        entry = by_name.get(name)
        if entry is not None and entry_fits(entry, channels):
            return name
    for entry in entries:
        if entry_fits(entry, channels):
            return entry.name
    return None


def default_family_for(channels: int) -> str | None:
    """The family Compare uses when none is given: that of ``default_model_for(channels)``
    if both its twins are installed, else the first complete family whose models fit."""
    entries = {e.name: e for e in model_entries()}
    families = list_families(entries)
    preferred = default_model_for(channels)
    split = card_family(preferred, entries[preferred].card) if preferred else None
    first = [split[0]] if split and split[0] in families else []
    for family in first + families:
        mse, wgan = family_members(family, entries)
        if entry_fits(entries[mse], channels) and entry_fits(entries[wgan], channels):
            return family
    return None
