"""Training checkpoints as safetensors + JSON: resumable, atomic, and never unpickled."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import ModelFileError
from ..models.model import _atomic_write, model_paths


def _flatten_optimizer(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        meta["state"][str(pid)] = {}
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{pid}.{key}"] = value.detach().cpu().contiguous()
                meta["state"][str(pid)][key] = "tensor"
            else:
                meta["state"][str(pid)][key] = value
    return tensors, meta


def _unflatten_optimizer(prefix: str, meta: dict, tensors: dict) -> dict:
    state = {}
    for pid, entries in meta["state"].items():
        state[int(pid)] = {
            key: tensors[f"{prefix}.{pid}.{key}"] if value == "tensor" else value
            for key, value in entries.items()
        }
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    rng: dict[str, torch.Generator],
    meta: dict[str, Any],
) -> Path:
    """Write ``PATH.safetensors`` (weights, optimiser moments, RNG states) and ``PATH.json``
    (everything else) atomically, tensors first; returns the tensors' path."""
    tensors: dict[str, torch.Tensor] = {}
    meta = dict(meta)
    meta["optimizers"] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"{name}/{key}"] = value.detach().cpu().contiguous().clone()
    for name, opt in optimizers.items():
        t, m = _flatten_optimizer(f"opt/{name}", opt)
        tensors.update(t)
        meta["optimizers"][name] = m
    for name, gen in rng.items():
        tensors[f"rng/{name}"] = gen.get_state().clone()
    meta["modules"] = sorted(modules)
    meta["rng"] = sorted(rng)
    weights, card = model_paths(path)
    _atomic_write(weights, st_save(tensors))
    _atomic_write(card, (json.dumps(meta, indent=1, default=str) + "\n").encode())
    return weights


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    rng: dict[str, torch.Generator],
) -> dict[str, Any]:
    """Restore modules, optimisers and RNGs in place from a checkpoint; returns its metadata."""
    weights, card = model_paths(path)
    for f in (weights, card):
        if not f.is_file():
            raise ModelFileError(
                f"Checkpoint file {f} not found; give the path of a checkpoint "
                "written by `wgan-denoise train` (NAME.safetensors + NAME.json)."
            )
    try:
        meta = json.loads(card.read_text())
        tensors = st_load(weights.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError, ValueError) as exc:
        raise ModelFileError(f"Checkpoint {weights} is corrupt or truncated: {exc}") from None
    for name, module in modules.items():
        prefix = f"{name}/"
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelFileError(
                f"Checkpoint {weights} does not fit this network ({name}): {str(exc)[:300]}"
            ) from None
    for name, opt in optimizers.items():
        if name in meta.get("optimizers", {}):
            opt.load_state_dict(
                _unflatten_optimizer(f"opt/{name}", meta["optimizers"][name], tensors)
            )
    for name, gen in rng.items():
        if f"rng/{name}" in tensors:
            gen.set_state(tensors[f"rng/{name}"])
    return meta
