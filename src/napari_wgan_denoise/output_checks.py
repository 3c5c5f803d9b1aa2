"""Checks of where results go, made before any work starts: a writable folder, a free name
for a user model, a model file pair that is not there yet, an output folder that is not named
like an image file. The messages say what to do; nothing here imports napari or Qt."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import InvalidSetting
from .io import IMAGE_SUFFIXES


def check_model_name(name: Any, *, overwrite: bool = False) -> str:
    """Check a name for a new user model before any work: valid characters, not the name
    of a shipped model, and no existing user model of that name unless ``overwrite``."""
    from .models.model import model_paths
    from .models.registry import SHIPPED_DIR, user_models_dir

    if (
        not isinstance(name, str)
        or not name
        or any(c in name for c in "/\\:")
        or (name.startswith("."))
    ):
        raise InvalidSetting(
            f"Invalid model name {name!r}: use letters, digits, '-', '_' and '.' "
            "(not starting with '.')."
        )
    if (SHIPPED_DIR / f"{name}.json").exists():
        raise InvalidSetting(f"{name!r} is the name of a shipped model; choose another name.")
    target = user_models_dir() / name
    if not overwrite and any(p.exists() for p in model_paths(target)):
        raise FileExistsError(
            f"A user model named {name!r} already exists in {target.parent}; choose another "
            "name or pass overwrite=True (--overwrite)."
        )
    check_writable(target.parent, "the user model folder")
    return name


def check_model_output(path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Before training: neither half of the model pair ``PATH.safetensors`` + ``PATH.json``
    may exist (unless ``overwrite``) and its folder must be writable."""
    from .models.model import model_paths

    weights, card = model_paths(path)
    if not overwrite:
        for p in (weights, card):
            if p.exists():
                raise FileExistsError(f"{p} already exists; pass --overwrite or choose another -o.")
    check_writable(weights.parent, "the output folder")


def check_output_folder(folder: str | os.PathLike[str], writes: str = "<name>.tif") -> None:
    """Fail before any work when an output folder is named like an image file (``-o
    out.png``), which would become a folder called ``out.png``; an existing folder of that
    name is accepted. ``writes`` says what goes into the folder."""
    p = Path(folder)
    if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir():
        raise ValueError(
            f"The output {p} looks like a file name, but the output is a folder (each input "
            f"is written into it as {writes}); give a folder, e.g. -o {p.parent / 'denoised'}."
        )


def check_writable(folder: str | os.PathLike[str], what: str = "the output folder") -> None:
    """Fail now, not after hours of work, when ``folder`` cannot be created or written:
    a file in the way, no permission, a read-only disk. Creates nothing that stays."""
    p = Path(folder).expanduser().absolute()
    existing = p
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise NotADirectoryError(f"Cannot write {what} {p}: {existing} is a file, not a folder.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".wgan-denoise-write-test-", dir=existing)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise PermissionError(
            f"Cannot write {what} {p}: {reason} in {existing}. Choose another folder."
        ) from None
    os.close(fd)
    os.unlink(probe)
