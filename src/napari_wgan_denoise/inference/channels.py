"""Colour channels of images and models: the one channel-fit check and RGBA alpha handling."""

from __future__ import annotations

import numpy as np

__all__ = ["check_channels", "merge_alpha", "split_alpha"]


def check_channels(
    model_channels: int, image_channels: int, *, model: str, image: str, kind: str = "model"
) -> None:
    """ValueError with one clear message when a model's channels (1 gray, 3 RGB) do not fit
    an image's; ``image`` names the image for people (e.g. ``"Layer 'cells'"``), ``kind``
    the model (``"model"``, ``"restore model"``, ``"base model"``)."""
    if model_channels == image_channels:
        return
    if image_channels == 3:
        raise ValueError(
            f"{image} is RGB but {kind} {model!r} is a gray (single-channel) model; choose an "
            "RGB model (e.g. a 'cells' model), or split the image into its channels."
        )
    raise ValueError(
        f"{image} is single-channel but {kind} {model!r} expects RGB images; choose a gray "
        "model (e.g. a 'fluo' or 'gray' model)."
    )


def split_alpha(data: np.ndarray, rgb: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``(colours, alpha)`` of an RGBA image (last axis 4); other images come back whole
    with ``alpha=None``. Models see the colours; the alpha is carried over unchanged."""
    if rgb and data.shape[-1] == 4:
        return data[..., :3], data[..., 3:]
    return data, None


def merge_alpha(out: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Put back the alpha that :func:`split_alpha` took off (a no-op without one)."""
    return out if alpha is None else np.concatenate([out, alpha], axis=-1)
