"""Exceptions shared by the core, the CLI and the napari widgets."""

from __future__ import annotations


class Cancelled(Exception):
    """Raised when a long operation stops because the user asked it to."""


class ModelFileError(ValueError):
    """A model file is missing, truncated, corrupt or does not match its card."""
