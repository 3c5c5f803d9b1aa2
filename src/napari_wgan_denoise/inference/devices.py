"""Choosing and describing torch devices."""

from __future__ import annotations

import torch


def available_devices() -> list[str]:
    """Devices that can run a model here, e.g. ``["auto", "cpu", "cuda:0", "mps"]``."""
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"`` (cuda, then mps, then cpu) or an explicit name into a usable device.

    An explicit device that this machine cannot use raises ``ValueError`` naming the
    devices that are available.
    """
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"Unknown device {device!r}; available: {', '.join(available_devices())}."
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"Device {device!r} was requested but CUDA is not available here; "
                f"available: {', '.join(available_devices())}."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"Device {device!r} does not exist; available: {', '.join(available_devices())}."
            )
    elif dev.type == "mps":
        if not (
            getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
        ):
            raise ValueError(
                f"Device 'mps' was requested but is not available here; available: "
                f"{', '.join(available_devices())}."
            )
    elif dev.type != "cpu":
        raise ValueError(
            f"Unsupported device {device!r}; available: {', '.join(available_devices())}."
        )
    return dev
