"""A denoiser together with its card, and the safe on-disk model format."""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from .._version import __version__
from ..errors import ModelFileError
from ..validation import check_model_card
from .architectures import build_generator, get_architecture

CARD_FORMAT = 1

DEFAULT_NORMALISATION: dict[str, Any] = {"mode": "percentile", "low": 0.1, "high": 99.9}


@dataclass
class DenoiseModel:
    """A generator network plus the card that says what it is, how it was trained and how
    its input must be normalised."""

    network: nn.Module
    card: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        """The model's registered or file name."""
        return str(self.card.get("name") or (self.path.name if self.path else "unsaved"))

    @property
    def architecture(self) -> str:
        """The architecture name in the registry (``srresnet``, ``unet``)."""
        return str(self.card["architecture"])

    @property
    def channels(self) -> int:
        """1 for gray models, 3 for RGB models."""
        return int(self.card["channels"])

    @property
    def task(self) -> str:
        """``"denoise"`` (image in, image out) or ``"restore"`` (image + hole mask in)."""
        return card_task(self.card)

    @property
    def normalisation(self) -> dict[str, Any]:
        """How input intensities are mapped for the network (see ``denoise``)."""
        return dict(self.card.get("normalisation") or DEFAULT_NORMALISATION)

    @property
    def n_parameters(self) -> int:
        """Number of trainable weights of the generator."""
        return sum(p.numel() for p in self.network.parameters())

    @property
    def card_hash(self) -> str:
        """A short hash of the card (which includes the weights' hash) to identify the model."""
        return card_hash(self.card)

    def to(self, device: str | torch.device) -> DenoiseModel:
        """Move the network to a device and return self."""
        self.network.to(device)
        return self


def card_task(card: dict[str, Any]) -> str:
    """What a model described by ``card`` does: ``"denoise"`` or ``"restore"``."""
    if card.get("task"):
        return str(card["task"])
    try:
        return get_architecture(str(card.get("architecture"))).task
    except ValueError:
        return "denoise"


def full_learning_curve(card: dict[str, Any]) -> tuple[int | None, list[dict[str, Any]]]:
    """A model's training length and validation records counted from the start of its first
    stage: the curves of the models it was initialised from (``init_weights``) come first,
    and its own follow, shifted by their iterations and CPU time."""
    training = card.get("training", {})
    own = list(card.get("learning_curve", []))
    own_its = training.get("iterations")
    first = training.get("init_weights")
    if not first or not first.get("learning_curve"):
        return own_its, own
    before = first["learning_curve"]
    its = int(first.get("iterations") or before[-1]["iteration"])
    cpu = float(before[-1].get("cpu_time_s") or 0.0)
    shifted = [
        {
            **r,
            "iteration": r["iteration"] + its,
            **({"cpu_time_s": r["cpu_time_s"] + cpu} if r.get("cpu_time_s") is not None else {}),
        }
        for r in own
    ]
    return (its + own_its if own_its is not None else None), [*before, *shifted]


def init_record(source: str, card: dict[str, Any]) -> dict[str, Any]:
    """What a card records of the model whose weights started its training: where it came
    from, and its iterations and learning curve over all its own stages."""
    iterations, curve = full_learning_curve(card)
    return {"model": str(source), "iterations": iterations, "learning_curve": curve}


def _config_dict(network: nn.Module) -> dict[str, Any]:
    cfg = getattr(network, "config", None)
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else {}


def create_model(architecture: str = "srresnet", channels: int = 1, **config: Any) -> DenoiseModel:
    """Create an untrained denoiser of the named architecture (e.g. ``n_blocks=2, features=16``)."""
    normalisation = config.pop("normalisation", None)
    network = build_generator(architecture, channels, config)
    card = {
        "format_version": CARD_FORMAT,
        "name": None,
        "architecture": architecture,
        "task": get_architecture(architecture).task,
        "config": _config_dict(network),
        "channels": channels,
        "normalisation": dict(normalisation or DEFAULT_NORMALISATION),
        "noise": None,
        "training": {"iterations": 0},
        "metrics": {},
        "package_version": __version__,
    }
    return DenoiseModel(network=network, card=card)


def model_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The ``(weights, card)`` file pair for a model path given with or without a suffix."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def _atomic_write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; models are meant to be shared
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: DenoiseModel, path: str | os.PathLike[str], **card_updates: Any) -> Path:
    """Write ``PATH.safetensors`` and ``PATH.json`` atomically; returns the weights path.

    ``card_updates`` are merged into the card first (e.g. ``metrics=...``). The weights go
    first and the card, which records the weights' hash, last, so a crash in between is
    detected on the next load rather than silently pairing mismatched files.
    """
    weights_path, card_path = model_paths(path)
    state = {
        k: v.detach().to("cpu").contiguous().clone() for k, v in model.network.state_dict().items()
    }
    blob = st_save(state, metadata={"format": "pt", "architecture": model.architecture})
    card = copy.deepcopy(model.card)
    card.update(card_updates)
    card["name"] = card_updates.get("name") or weights_path.stem
    card["format_version"] = CARD_FORMAT
    card["package_version"] = __version__
    card["config"] = _config_dict(model.network) or card.get("config", {})
    card["parameters"] = sum(p.numel() for p in model.network.parameters())
    card["weights_file"] = weights_path.name
    card["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    card["saved"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    _atomic_write(weights_path, blob)
    _atomic_write(
        card_path, (json.dumps(card, indent=2, sort_keys=True, default=str) + "\n").encode()
    )
    model.card = card
    model.path = weights_path.with_suffix("")
    return weights_path


def read_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a model card (the JSON half of a model) without loading weights."""
    _, card_path = model_paths(path)
    if not card_path.is_file():
        raise ModelFileError(
            f"Model card {card_path} not found: a model is NAME.safetensors plus NAME.json "
            "side by side; check the path or re-save the model."
        )
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(
            f"Model card {card_path} is not valid JSON ({exc}); the file is "
            "corrupt or truncated: restore or re-download it."
        ) from None
    if not isinstance(card, dict):
        raise ModelFileError(f"Model card {card_path} must hold a JSON object.")
    missing = [k for k in ("architecture", "channels") if k not in card]
    if missing:
        raise ModelFileError(f"Model card {card_path} lacks required key(s) {missing}.")
    try:
        get_architecture(card["architecture"])
    except ValueError as exc:
        raise ModelFileError(f"Model card {card_path}: {exc} Is the package up to date?") from None
    check_model_card(card, card_path)
    return card


def load_model_file(path: str | os.PathLike[str], map_location: str = "cpu") -> DenoiseModel:
    """Load a model from its file pair; never unpickles anything (safetensors + JSON only)."""
    weights_path, card_path = model_paths(path)
    card = read_card(path)
    if not weights_path.is_file():
        raise ModelFileError(
            f"Model weights {weights_path} not found next to its card {card_path.name}."
        )
    blob = weights_path.read_bytes()
    expected = card.get("weights_sha256")
    if expected and hashlib.sha256(blob).hexdigest() != expected:
        raise ModelFileError(
            f"Model weights {weights_path} do not match the hash recorded in {card_path.name}: "
            "the file is truncated, corrupt or from another model. Restore both files together."
        )
    try:
        state = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        raise ModelFileError(
            f"Model weights {weights_path} cannot be read as safetensors ({exc}); the file is "
            "truncated or corrupt."
        ) from None
    try:
        network = build_generator(card["architecture"], int(card["channels"]), card.get("config"))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"Model card {card_path} has an invalid config: {exc}") from None
    expected_state = network.state_dict()
    missing = [k for k in expected_state if k not in state]
    unexpected = [k for k in state if k not in expected_state]
    wrong_shape = [k for k, v in expected_state.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong_shape:
        raise ModelFileError(
            f"Model weights {weights_path} do not fit the architecture in {card_path.name} "
            f"({card['architecture']}, {card.get('config')}): missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shape {wrong_shape[:5]}."
        )
    network.load_state_dict(state, strict=True)
    network.eval().to(map_location)
    return DenoiseModel(network=network, card=card, path=weights_path.with_suffix(""))


def card_hash(card: dict[str, Any]) -> str:
    """A short hash of a model card (which includes the weights' hash) to identify a model."""
    blob = json.dumps(card, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
