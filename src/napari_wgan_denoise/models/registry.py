"""The model registry: the one place that knows every shipped and user-trained model."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelFileError
from .model import DenoiseModel, card_task, load_model_file, model_paths, read_card, save_model

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "weights"


def user_models_dir() -> Path:
    """Where user-trained and fine-tuned models live.

    ``$NAPARI_WGAN_DENOISE_MODELS`` wins; otherwise the platform's per-user data folder
    (``~/.local/share/napari-wgan-denoise/models`` on Linux).
    """
    env = os.environ.get("NAPARI_WGAN_DENOISE_MODELS")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "napari-wgan-denoise" / "models"


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about a model without loading its weights."""

    name: str
    path: Path
    source: str  # "shipped" or "user"
    card: dict[str, Any]

    @property
    def channels(self) -> int:
        """1 for gray models, 3 for RGB models."""
        return int(self.card.get("channels", 1))

    @property
    def architecture(self) -> str:
        """Architecture name in the registry."""
        return str(self.card.get("architecture", "?"))

    @property
    def task(self) -> str:
        """``"denoise"`` for denoisers, ``"restore"`` for inpaint + deblur + denoise cascades."""
        return card_task(self.card)

    @property
    def modality(self) -> str:
        """What images the model is for (gray, cells, fluo, ...), as its card says."""
        return str(self.card.get("modality") or "")

    @property
    def parameters(self) -> int:
        """Number of weights, as recorded in the card."""
        return int(self.card.get("parameters") or 0)


def _scan(folder: Path, source: str) -> list[ModelEntry]:
    if not folder.is_dir():
        return []
    entries = []
    for card_path in sorted(folder.glob("*.json")):
        weights = card_path.with_suffix(".safetensors")
        if not weights.is_file():
            continue
        try:
            card = read_card(card_path)
        except ModelFileError:
            continue  # unreadable cards are reported when someone loads them by path
        entries.append(ModelEntry(card_path.stem, card_path.with_suffix(""), source, card))
    return entries


def unreadable_models() -> list[tuple[str, str]]:
    """User models that the registry leaves out, each with why (a corrupt card, missing
    weights), for ``wgan-denoise models`` to report instead of hiding them."""
    out = []
    folder = user_models_dir()
    for card_path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            _explain_unlisted(card_path.stem)
        except ModelFileError as exc:
            out.append((card_path.stem, str(exc)))
    return out


def model_entries() -> list[ModelEntry]:
    """All registered models: shipped ones first, then the user's (which cannot shadow them)."""
    shipped = _scan(SHIPPED_DIR, "shipped")
    names = {e.name for e in shipped}
    user = [e for e in _scan(user_models_dir(), "user") if e.name not in names]
    return shipped + user


def list_models() -> list[str]:
    """Names of every shipped and user model, usable wherever a model name is accepted."""
    return [e.name for e in model_entries()]


def _explain_unlisted(name: str) -> None:
    """Raise why a model file named ``name`` in the shipped or user folder cannot load
    (a corrupt card, missing weights) instead of reporting that no such model exists."""
    for folder in (SHIPPED_DIR, user_models_dir()):
        weights, card = model_paths(folder / name)
        if card.is_file() or weights.is_file():
            if not weights.is_file():
                raise ModelFileError(
                    f"Model {name!r} cannot load: its weights {weights} are missing next to "
                    f"its card {card.name}. Restore both files together."
                )
            read_card(card)  # raises ModelFileError saying what is wrong with the card


def find_model(name: str) -> ModelEntry:
    """The registry entry for a model name, or a ValueError listing the known names."""
    for entry in model_entries():
        if entry.name == name:
            return entry
    _explain_unlisted(name)
    known = ", ".join(list_models()) or "(none installed)"
    raise ValueError(
        f"No model named {name!r}. Known models: {known}. Pass a path to NAME.safetensors "
        "or NAME.json to load a model file directly."
    )


def load_model(name_or_path: str | os.PathLike[str] | DenoiseModel) -> DenoiseModel:
    """Load a registered model by name, a model file pair by path, or a bioimage.io
    package (``.zip``) by path."""
    if isinstance(name_or_path, DenoiseModel):
        return name_or_path
    text = str(name_or_path)
    if text.endswith((".zip", "bioimageio.yaml", "rdf.yaml")):  # a bioimage.io package
        from ..export.bioimageio import load_bioimageio

        return load_bioimageio(text)
    weights, card = model_paths(text)
    looks_like_path = os.sep in text or "/" in text or text.endswith((".json", ".safetensors"))
    if weights.exists() or card.exists() or looks_like_path:
        return load_model_file(text)
    return load_model_file(find_model(text).path)


def save_user_model(
    model: DenoiseModel, name: str, *, overwrite: bool = False, **card_updates: Any
) -> Path:
    """Save a model into the user folder so that ``list_models()`` and the widgets show it."""
    if not name or any(c in name for c in "/\\:") or name.startswith("."):
        raise ValueError(f"Invalid model name {name!r}: use letters, digits, '-', '_' and '.'.")
    if (SHIPPED_DIR / f"{name}.json").exists():
        raise ValueError(f"{name!r} is the name of a shipped model; choose another name.")
    target = user_models_dir() / name
    if model_paths(target)[1].exists() and not overwrite:
        raise ValueError(
            f"A user model named {name!r} already exists in {target.parent}; "
            "choose another name or pass overwrite=True."
        )
    card_updates.setdefault("name", name)
    return save_model(model, target, **card_updates)
