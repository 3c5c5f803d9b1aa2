"""Tiled, normalised, device-aware inference."""

from .denoise import as_model, denoise, plan_axes
from .devices import available_devices, resolve_device
from .restore import restore

__all__ = ["as_model", "available_devices", "denoise", "plan_axes", "resolve_device", "restore"]
