"""What the pickers offer and how it is labelled: models, families, fine-tuning modes.

Qt-free and napari-free: ``(value, label, tooltip, enabled)`` choices for
:class:`~._pickers.ChoicePicker`, the messages shown when nothing fits, the fine-tuning
modes and the names of their validation metrics.
"""

from __future__ import annotations

import math
from typing import Any

from ..inference.devices import resolve_device
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
        "Only noisy images, no pairs or repeats, starting from the base model: fresh noise "
        "at the stack's own measured level makes Noise2Noise-like pairs (Recorrupted-to-"
        "Recorrupted). A noise check runs first; for correlated noise the fresh noise "
        "takes its measured correlation. A reference layer adds a critic.",
    ),
)

#: What the validation metrics are called in the widget, and whether higher is better.
METRIC_LABELS: dict[str, tuple[str, bool]] = {
    "val_psnr": ("validation PSNR", True),
    "val_n2n_mse": ("validation Noise2Noise loss", False),
    "val_mse_to_surrogate": ("validation MSE to the base model's output", False),
    "val_ss_loss": ("validation self-supervised loss", False),
    "val_sure_mse": ("validation MSE (SURE estimate)", False),
}


def device_label(device: str) -> str:
    """How the device picker shows ``device``: ``"auto"`` says what it resolves to here,
    e.g. ``"auto (cpu)"`` or ``"auto (cuda:0)"``."""
    if device != "auto":
        return device
    resolved = resolve_device("auto")
    if resolved.type == "cuda" and resolved.index is None:
        import torch

        return f"auto (cuda:{torch.cuda.current_device()})"
    return f"auto ({resolved})"


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
    """Longer description of a registry model: architecture and source, then its card
    (training noise, data, iterations, validation metrics) and its file."""
    lines = [
        f"{entry.name}: {entry.architecture}, {kind(entry.channels)}, "
        f"{entry.parameters:,} parameters, {entry.source} model",
    ]
    if entry.modality:
        lines.append(f"modality: {entry.modality}")
    lines += card_lines(entry.card)
    lines.append(str(entry.path))
    return "\n".join(lines)


def card_lines(card: dict[str, Any]) -> list[str]:
    """What a model card says about how the model was trained, one line each: the noise,
    the data, the iterations (and loss, time) and the validation metrics."""
    lines = []
    if card.get("description"):
        lines.append(str(card["description"]))
    if card.get("noise"):
        lines.append(f"training noise: {describe_noise(card['noise'])}")
    training, finetune = card.get("training") or {}, card.get("finetune") or {}
    data = describe_data(training.get("data") or finetune.get("data"))
    if data:
        lines.append(f"data: {data}")
    iterations = training.get("iterations") or finetune.get("iterations_run")
    if iterations:
        bits = [f"iterations: {iterations}"]
        loss = training.get("loss") or (f"fine-tuned ({finetune['mode']})" if finetune else "")
        if loss:
            bits.append(f"loss {loss}")
        wall = training.get("wall_time_s") or finetune.get("wall_time_s")
        if wall:
            device = training.get("device") or finetune.get("device") or "?"
            bits.append(f"{float(wall) / 60:.0f} min on {device}")
        lines.append(", ".join(bits))
    metrics = describe_metrics(card.get("metrics") or {})
    if metrics:
        lines.append(f"validation metrics: {metrics}")
    return lines


def describe_noise(noise: dict[str, Any]) -> str:
    """A card's noise model for people: its spec (``gaussian:0-55 on 0-255``), the
    components of a mixture with their weights, or a restore model's degradations."""
    if noise.get("components"):
        weights = list(noise.get("weights") or [])
        parts = []
        for k, component in enumerate(noise["components"]):
            share = f" ({weights[k]:.0%})" if k < len(weights) else ""
            parts.append(describe_noise(component) + share)
        return " + ".join(parts)
    if noise.get("spec"):
        scale = f" on {noise['scale']}" if noise.get("scale") else ""
        return f"{noise['spec']}{scale}"
    if noise.get("type") == "real":
        return "real (paired noisy / clean acquisitions)"
    parts = []
    for key, value in noise.items():
        if (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, (int, float)) for v in value)
        ):
            parts.append(f"{key} {value[0]:g}-{value[1]:g}")
        elif isinstance(value, list):
            parts.append(f"{key} {', '.join(map(str, value))}")
        elif isinstance(value, (int, float, str)):
            parts.append(f"{key} {value}")
    return "; ".join(parts) or "?"


def describe_data(data: Any) -> str:
    """A card's training data in a few words (kind, images or planes for training and
    validation, where from)."""
    if not data:
        return ""
    if isinstance(data, str):
        return data
    bits = [str(data["kind"])] if data.get("kind") else []
    images = data.get("images")
    if isinstance(images, dict):
        bits.append(", ".join(f"{n} {split}" for split, n in images.items()) + " images")
    elif isinstance(data.get("files"), list):
        bits.append(f"{len(data['files'])} files")
    if data.get("planes"):
        bits.append(f"{data['planes']} planes")
    if data.get("clean"):
        bits.append(f"from {str(data['clean']).rstrip('/').rsplit('/', 1)[-1]}")
    return ", ".join(bits)


def describe_metrics(metrics: dict[str, Any]) -> str:
    """A card's validation metrics: PSNR of the output and of the input, or a fine-tuned
    model's metric before and after."""
    if "validation_metric" in metrics and "after" in metrics:
        name = str(metrics["validation_metric"])
        label = METRIC_LABELS.get(name, (name, True))[0]
        after = format_metric(name, float(metrics["after"]))
        if "before" not in metrics:
            return f"{label} {after}"
        return f"{label} {format_metric(name, float(metrics['before']))} → {after}"
    psnr = [
        f"{label} {float(metrics[key]):.2f} dB"
        for key, label in PSNR_LABELS.items()
        if isinstance(metrics.get(key), (int, float))
    ]
    return f"PSNR {', '.join(psnr)}" if psnr else ""


#: The validation PSNRs a card's metrics may hold, and what they measure.
PSNR_LABELS = {
    "val_psnr": "output",
    "val_cascade_psnr": "output",
    "val_inpaint_psnr": "inpainting only",
    "val_input_psnr": "input",
}


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
    """The first of ``stem-1``, ``stem-2``, ... that names no model yet (the fine-tuning
    widget's short default names, e.g. ``fluo-mse-fast-ft-paired-1``)."""
    names = set(list_models())
    k = 1
    while f"{stem}-{k}" in names:
        k += 1
    return f"{stem}-{k}"
