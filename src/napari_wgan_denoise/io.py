"""Reading and writing image files for the CLI and batch jobs (no napari needed)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp") + TIFF_SUFFIXES


def read_image_series(path: str | os.PathLike[str]) -> list[np.ndarray]:
    """Every image series of a TIFF (e.g. the images of a multi-image OME-TIFF, or pages
    of different shapes), in file order; a one-element list for other files."""
    p = Path(path)
    if p.suffix.lower() not in TIFF_SUFFIXES:
        return [read_image(p)]
    return _read_tiff(p, all_series=True)


def _read_tiff(p: Path, *, all_series: bool) -> list[np.ndarray]:
    """The series of a TIFF as arrays; without ``all_series`` a file with several series
    is refused, naming the count (never read as its first series only)."""
    import tifffile

    if not p.is_file():
        raise FileNotFoundError(f"Input file {p} does not exist.")
    try:
        with tifffile.TiffFile(p) as tif:
            series = list(tif.series)
            if all_series:
                return [s.asarray() for s in series]
            if len(series) <= 1:
                return [tif.asarray()]
            shapes = ", ".join(str(tuple(s.shape)) for s in series[:4])
    except Exception as exc:  # noqa: BLE001 - report any reader failure with the file name
        raise ValueError(f"Cannot read image {p}: {exc}") from exc
    raise ValueError(
        f"{p} holds {len(series)} image series (shapes {shapes}"
        f"{', ...' if len(series) > 4 else ''}) and this needs one image: save the "
        "series as separate files (`wgan-denoise denoise` denoises every series)."
    )


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a TIFF (with tifffile) or a PNG/JPEG/BMP (with scikit-image) into an array.

    A TIFF with several image series is refused with a ValueError naming the count
    (see :func:`read_image_series`), so no series is ever silently left out."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"Input file {p} does not exist.")
    suffix = p.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return _read_tiff(p, all_series=False)[0]
    try:
        if suffix in IMAGE_SUFFIXES:
            import skimage.io

            return np.asarray(skimage.io.imread(p))
    except Exception as exc:  # noqa: BLE001 - report any reader failure with the file name
        raise ValueError(f"Cannot read image {p}: {exc}") from exc
    raise ValueError(
        f"Unsupported image format {suffix!r} for {p}; use one of {', '.join(IMAGE_SUFFIXES)}."
    )


class MissingFolder(FileNotFoundError, ValueError):
    """A folder that should hold images does not exist (a ``FileNotFoundError``, and a
    ``ValueError`` for callers that treat it as bad input)."""


def natural_key(text: str) -> list[Any]:
    """Sort key that orders ``img2`` before ``img10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def list_images(folder: str | os.PathLike[str], role: str) -> list[Path]:
    """The image files directly inside ``folder`` (hidden files excluded), in natural sort
    order. ``role`` names the folder in messages (``"clean"``, ``"noisy"``, ...).

    Raises :class:`MissingFolder` when the folder does not exist and ``ValueError`` when it
    is a file or holds no images (saying what it holds instead).
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise MissingFolder(f"The {role} folder {root} does not exist; check the path.")
    if not root.is_dir():
        raise ValueError(f"The {role} folder {root} is a file, not a folder of images.")
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    files = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if files:
        return sorted(files, key=lambda p: natural_key(p.name))
    if (root / "raw").is_dir() and (root / "gt").is_dir():
        hint = " It looks like an FMD folder (raw/ and gt/): pass it as fmd= instead."
    elif any(p.is_dir() for p in entries):
        hint = " Subfolders are not searched: point to the folder that holds the images themselves."
    elif entries:
        hint = f" It holds {len(entries)} file(s) of other types (e.g. {entries[0].name})."
    else:
        hint = " It is empty."
    raise ValueError(
        f"The {role} folder {root} holds no images ({', '.join(IMAGE_SUFFIXES)}).{hint}"
    )


def files_by_stem(paths: list[Path], role: str) -> dict[str, Path]:
    """Index image files by name without extension, for matching noisy/clean pairs; two
    files of one folder with the same stem (``a.png``, ``a.tif``) are an error."""
    out: dict[str, Path] = {}
    for p in paths:
        if p.stem in out:
            raise ValueError(
                f"The {role} folder has two images named {p.stem!r} ({out[p.stem].name}, "
                f"{p.name}); pairs are matched by file name without extension, so keep one."
            )
        out[p.stem] = p
    return out


def pair_by_stem(noisy: list[Path], clean: list[Path]) -> dict[str, tuple[Path, Path]]:
    """Match noisy and clean image files by name without extension: ``{stem: (noisy,
    clean)}`` in natural order, or a ValueError naming the files that have no partner."""
    noisy_by = files_by_stem(noisy, "noisy")
    clean_by = files_by_stem(clean, "clean")

    def unmatched(by: dict[str, Path], other: dict[str, Path]) -> str:
        names = [by[s].name for s in sorted(set(by) - set(other), key=natural_key)]
        return ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")

    parts = [
        f"only in the {role} folder: {text}"
        for role, text in (
            ("noisy", unmatched(noisy_by, clean_by)),
            ("clean", unmatched(clean_by, noisy_by)),
        )
        if text
    ]
    if parts:
        raise ValueError(
            "The noisy and clean folders must hold the same image names (matched without "
            f"extension); {'; '.join(parts)}. Rename or remove the unmatched files."
        )
    return {s: (noisy_by[s], clean_by[s]) for s in sorted(noisy_by, key=natural_key)}


def write_tiff(
    path: str | os.PathLike[str],
    data: np.ndarray | list[np.ndarray],
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``data`` as TIFF with its own dtype, atomically; refuse to replace an existing
    file unless ``overwrite``. A list of arrays is written as that many image series."""
    import tifffile

    p = Path(path)
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p} already exists; pass --overwrite to replace it.")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.partial")
    arrays = list(data) if isinstance(data, (list, tuple)) else [data]

    def photometric(array: np.ndarray) -> str:
        rgb = array.ndim >= 3 and array.shape[-1] in (3, 4) and array.dtype == np.uint8
        return "rgb" if rgb else "minisblack"

    try:
        if len(arrays) == 1:
            tifffile.imwrite(tmp, arrays[0], photometric=photometric(arrays[0]))
        else:
            big = sum(a.nbytes for a in arrays) > 2**32 - 2**25
            with tifffile.TiffWriter(tmp, bigtiff=big) as tw:
                for array in arrays:
                    tw.write(array, photometric=photometric(array))
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p
