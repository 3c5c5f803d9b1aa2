"""What the pickers offer and how it is labelled: models, families, fine-tuning modes.

Qt-free and napari-free: ``(value, label, tooltip, enabled)`` choices for
:class:`~._pickers.ChoicePicker`, the messages shown when nothing fits, the fine-tuning
modes and the names of their validation metrics.
"""

from __future__ import annotations

import math

from ..models.families import family_members, list_families
from ..models.registry import ModelEntry, list_models, model_entries, user_models_dir

#: One picker choice: ``(value, label, tooltip, enabled)``.
Choice = tuple[str, str, str, bool]

#: The Restore mask picker's "no mask" choice.
NO_MASK_TEXT = "(none: deblur + denoise only)"

#: What to tell users when no restore (cascade) model is installed.
NO_RESTORE_MODEL = "No restore model installed; train one with `wgan-denoise cascade-train`."

#: ``(mode, label, tooltip)`` of the core's fine-tuning modes, in picker order.
FINETUNE_MODES: tuple[tuple[str, str, str], ...] = (
    (
        "paired",
        "paired (noisy + clean layer)",
        "You have a clean version of the same stack (e.g. an averaged acquisition): MSE + "
        "Wasserstein critic on patches of the pair; validation PSNR on held-out planes.",
    ),
    (
        "two-stage",
        "two-stage (noisy only)",
        "Only noisy images: the base model's output is the target and a critic compares "
        "the result with unpaired clean references (your reference layer, else images "
        "shipped with the package).",
    ),
    (
        "n2n",
        "Noise2Noise (repeated frames)",
        "Repeated acquisitions of the same field along an axis (time, repeats): pairs of "
        "different frames are input and target. A reference layer adds a critic.",
    ),
    (
        "self-supervised",
        "self-supervised (noisy only)",
        "Only noisy images, no pairs or repeats: Neighbor2Neighbor sub-sampling (or a "
        "blind-spot loss) on the noisy images themselves, starting from the base model. "
        "A noise check runs first. A reference layer adds a critic.",
    ),
)

#: What the validation metrics are called in the widget, and whether higher is better.
METRIC_LABELS: dict[str, tuple[str, bool]] = {
    "val_psnr": ("validation PSNR", True),
    "val_n2n_mse": ("validation Noise2Noise loss", False),
    "val_mse_to_surrogate": ("validation MSE to the base model's output", False),
    "val_ss_loss": ("validation self-supervised loss", False),
}


def kind(channels: int | None) -> str:
    """``"RGB"`` for 3 channels, ``"gray"`` otherwise."""
    return "RGB" if channels == 3 else "gray"


def model_choices(channels: int | None, task: str = "denoise") -> list[Choice]:
    """Picker choices for every registered model of a task (``"denoise"`` or
    ``"restore"``); models that do not fit a layer with ``channels`` (RGB vs gray) are
    marked as not fitting."""
    out = []
    for entry in model_entries():
        if entry.task != task:
            continue
        fits = channels is None or entry.channels == channels
        tip = entry_tooltip(entry)
        if not fits:
            tip = f"Does not fit the {kind(channels)} layer.\n{tip}"
        out.append((entry.name, describe_entry(entry), tip, fits))
    return out


def family_choices(channels: int | None) -> list[Choice]:
    """Picker choices for every complete model family (an -mse and a -wgan model)."""
    entries = {e.name: e for e in model_entries()}
    out = []
    for family in list_families(entries):
        mse, wgan = family_members(family, entries)
        e_mse, e_wgan = entries[mse], entries[wgan]
        fits = channels is None or (e_mse.channels == channels == e_wgan.channels)
        label = f"{family}  ({mse} vs {wgan}, {kind(e_mse.channels)})"
        tip = f"{entry_tooltip(e_mse)}\n\n{entry_tooltip(e_wgan)}"
        if not fits:
            tip = f"Does not fit the {kind(channels)} layer.\n{tip}"
        out.append((family, label, tip, fits))
    return out


def describe_entry(entry: ModelEntry) -> str:
    """One-line label of a registry model for pickers: name, modality, size and channels."""
    bits = [entry.modality] if entry.modality else []
    if entry.parameters:
        bits.append(_human_count(entry.parameters) + " params")
    bits.append(kind(entry.channels))
    if entry.source == "user":
        bits.append("user")
    return f"{entry.name}  ({', '.join(bits)})"


def entry_tooltip(entry: ModelEntry) -> str:
    """Longer description of a registry model (architecture, source, card description)."""
    card = entry.card
    lines = [
        f"{entry.name}: {entry.architecture}, {kind(entry.channels)}, "
        f"{entry.parameters:,} parameters, {entry.source} model",
    ]
    if entry.modality:
        lines.append(f"modality: {entry.modality}")
    for key in ("description", "loss"):
        if card.get(key):
            lines.append(f"{key}: {card[key]}")
    lines.append(str(entry.path))
    return "\n".join(lines)


def _human_count(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f} M"
    if n >= 1_000:
        return f"{n / 1e3:.0f} k"
    return str(n)


def no_model_message(channels: int) -> str:
    """What to tell users when no installed model fits their image."""
    what = "RGB" if channels == 3 else "gray (single-channel)"
    return (
        f"No denoising model for {what} images is installed. The shipped models come with "
        "the napari-wgan-denoise package (reinstall or upgrade it: pip install -U "
        f"napari-wgan-denoise); models you train or fine-tune are stored in "
        f"{user_models_dir()} (set NAPARI_WGAN_DENOISE_MODELS to use another folder)."
    )


def default_restore_model(channels: int) -> str | None:
    """The first installed restore model for images with ``channels`` (1 or 3), or None."""
    for entry in model_entries():
        if entry.task == "restore" and entry.channels == channels:
            return entry.name
    return None


def format_metric(name: str, value: float) -> str:
    """A validation metric's value for people: PSNR in dB, losses with 4 digits."""
    if name == "val_psnr":
        return "inf dB" if math.isinf(value) else f"{value:.2f} dB"
    return f"{value:.4g}"


def format_duration(seconds: float) -> str:
    """A time left for people: ``"40 s"``, ``"2 min 5 s"``."""
    s = max(0, int(round(seconds)))
    return f"{s} s" if s < 60 else f"{s // 60} min {s % 60} s"


def unique_model_name(stem: str) -> str:
    """``stem``, or ``stem-2``, ``stem-3``, ... if a model of that name exists."""
    names = set(list_models())
    name, k = stem, 1
    while name in names:
        k += 1
        name = f"{stem}-{k}"
    return name
