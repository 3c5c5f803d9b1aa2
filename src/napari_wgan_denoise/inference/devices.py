"""Choosing and describing torch devices."""

from __future__ import annotations

import os

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


#: Environment variable that forces the precision of CPU work ("fp32" or "bf16").
PRECISION_ENV = "NAPARI_WGAN_DENOISE_PRECISION"
PRECISIONS = ("auto", "bf16", "fp32")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), so that bf16
    autocast is faster than fp32 rather than an emulation. Unknown platforms say no."""
    flags = _cpu_flags()
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def use_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether work on ``device`` runs under bf16 autocast.

    ``precision`` is ``"auto"`` (CUDA always; CPU when it has native bf16; never on MPS),
    ``"bf16"`` or ``"fp32"``. The environment variable ``NAPARI_WGAN_DENOISE_PRECISION``
    overrides ``"auto"``, so a user can keep fp32 everywhere without changing code.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    if precision == "auto":
        env = os.environ.get(PRECISION_ENV, "").strip().lower()
        if env in ("bf16", "fp32"):
            precision = env
    if device.type not in ("cpu", "cuda"):
        return False
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    return device.type == "cuda" or cpu_has_bf16()
