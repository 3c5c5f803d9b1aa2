"""Training pairs for the denoisers: patch sources drawn on demand from images in memory.

Three kinds of data, all behind the :class:`PatchSource` interface the trainer uses:

* **synthetic** - a folder of clean images plus a :class:`~.noise.NoiseModel`;
* **paired** - a folder of noisy images and a folder of clean ones, matched by file name;
* **FMD** - the Fluorescence Microscopy Denoising layout ``raw/<fov>/*.png`` +
  ``gt/<fov>/avg50.png``: every raw frame is paired with the average of its field of view;

and :class:`MixedSource`, which draws each batch element from one of several sources.
This module builds them (:func:`make_source`); the source classes live in :mod:`.sources`
and the in-memory planes, validation split and patch cutting in :mod:`.planes`.

Scales. The network sees data on the scale that inference (``inference/normalise.py``)
gives it, and each source says which one in ``normalisation`` (the trained model's card
must declare it):

* 8-bit images with Gaussian noise: fixed ``value / 255`` (``{"mode": "fixed", ...}``);
  noise is added on the 0-255 scale in float and not clipped (seed-000 protocol).
* everything else: per-plane percentiles (``{"mode": "percentile", "low": 0.1,
  "high": 99.9}``). Real pairs use the percentiles of the *noisy* plane for both images,
  exactly as inference will. Synthetic pairs normalise the clean plane by its own
  percentiles, add noise on that 0-1 scale and then apply a random intensity affine jitter
  (see :class:`SyntheticSource`).

Images are held in memory in their own dtype and patches are cut when asked for, with a
random position and one of the 8 flips/90° rotations (the same for noisy and clean). All
randomness comes from the ``torch.Generator`` passed to ``sample``, so a trainer that
saves and restores the generator state resumes with exactly the same batches.

Images smaller than the patch size are reflect-padded (with a one-time warning), not
skipped, so small images still contribute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..io import IMAGE_SUFFIXES, pair_by_stem
from ..io import list_images as _list_images
from ..io import natural_key as _natural_key
from .noise import NoiseModel, parse_noise
from .planes import (
    FIXED_8BIT_NORMALISATION,
    PERCENTILE_NORMALISATION,
    _ImageFile,
    _percentile_range,
    _Plane,
    _read_file,
    _resolve_channels,
    _split_planes,
)
from .sources import MixedSource, PairedSource, PatchSource, SyntheticSource

__all__ = [
    "FIXED_8BIT_NORMALISATION",
    "PERCENTILE_NORMALISATION",
    "MixedSource",
    "PairedSource",
    "PatchSource",
    "SyntheticSource",
    "make_source",
]

# --------------------------------------------------------------------------- builders


def _build_synthetic(
    folder: Path,
    noise: NoiseModel,
    channels: int | None,
    split: dict[str, Any],
    force_percentile: bool = False,
) -> tuple[SyntheticSource, set[str]]:
    files = [_read_file(p) for p in _list_images(folder, "clean")]
    where = f"the clean folder {folder}"
    n_channels = _resolve_channels(files, channels, where)
    fixed = (
        not force_percentile
        and noise.fixed_8bit_scale
        and all(pl.dtype == np.uint8 for f in files for pl in f.planes)
    )
    planes: list[_Plane] = []
    aliases: dict[str, str] = {}
    for f in files:
        aliases[f.path.name] = aliases.setdefault(f.path.stem, f.path.name)
        for z, arr in enumerate(f.planes):
            lo, hi = (0.0, 255.0) if fixed else _percentile_range(arr)
            name = f.path.name if len(f.planes) == 1 else f"{f.path.name}[{z}]"
            planes.append(_Plane(name, f.path.name, arr, None, lo, hi))
    train, val, matched = _split_planes(planes, aliases, where=where, **split)
    info = {
        "clean": str(folder),
        "files": {
            "train": len({p.group for p in train}),
            "val": len({p.group for p in val}),
        },
    }
    src = SyntheticSource(
        train, val, channels=n_channels, noise=noise, fixed=fixed, info=info, seed=split["seed"]
    )
    return src, matched


def _pair_planes(
    noisy: _ImageFile, clean: _ImageFile, group: str, label: str
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, noisy plane, clean plane) for a matched pair of files; a single clean plane
    serves every noisy plane (e.g. an average of repeated frames)."""
    if len(clean.planes) not in (1, len(noisy.planes)):
        raise ValueError(
            f"{label}: the noisy file has {len(noisy.planes)} planes but the clean one has "
            f"{len(clean.planes)}; give one clean plane per noisy plane, or a single one."
        )
    out = []
    for z, n in enumerate(noisy.planes):
        c = clean.planes[z if len(clean.planes) > 1 else 0]
        if n.shape != c.shape:
            raise ValueError(
                f"{label}: noisy and clean images differ in size ({n.shape[1:]} vs "
                f"{c.shape[1:]}); pairs must be pixel-aligned images of the same size."
            )
        out.append((group if len(noisy.planes) == 1 else f"{group}[{z}]", n, c))
    return out


def _build_paired(
    noisy_dir: Path, clean_dir: Path, channels: int | None, split: dict[str, Any]
) -> tuple[PairedSource, set[str]]:
    pairs = pair_by_stem(_list_images(noisy_dir, "noisy"), _list_images(clean_dir, "clean"))
    noisy = {s: n for s, (n, _) in pairs.items()}
    clean = {s: c for s, (_, c) in pairs.items()}
    stems = list(pairs)
    files_n = {s: _read_file(noisy[s]) for s in stems}
    files_c = {s: _read_file(clean[s]) for s in stems}
    where = f"the noisy ({noisy_dir}) and clean ({clean_dir}) folders"
    n_channels = _resolve_channels([*files_n.values(), *files_c.values()], channels, where)
    planes: list[_Plane] = []
    aliases: dict[str, str] = {}
    for s in stems:
        aliases.update({s: s, noisy[s].name: s, clean[s].name: s})
        for name, n, c in _pair_planes(files_n[s], files_c[s], s, f"Pair {s!r}"):
            lo, hi = _percentile_range(n)
            planes.append(_Plane(name, s, c, n, lo, hi))
    train, val, matched = _split_planes(planes, aliases, where=where, **split)
    info = {
        "noisy": str(noisy_dir),
        "clean": str(clean_dir),
        "files": {"train": len({p.group for p in train}), "val": len({p.group for p in val})},
    }
    return PairedSource(train, val, channels=n_channels, info=info, kind="paired"), matched


def _fmd_target(gt_dir: Path) -> Path:
    """The ground-truth image of one FMD field of view: avg50.png, else the only image."""
    preferred = gt_dir / "avg50.png"
    if preferred.is_file():
        return preferred
    images = (
        [
            p
            for p in gt_dir.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        ]
        if gt_dir.is_dir()
        else []
    )
    avg = [p for p in images if p.stem == "avg50"]
    if len(avg) == 1:
        return avg[0]
    if len(images) == 1:
        return images[0]
    raise ValueError(
        f"No ground truth for this field of view: expected {preferred} "
        f"({'missing folder' if not gt_dir.is_dir() else f'{len(images)} images found'})."
    )


def _build_fmd(
    folder: Path, channels: int | None, split: dict[str, Any]
) -> tuple[PairedSource, set[str]]:
    raw_root, gt_root = folder / "raw", folder / "gt"
    if not folder.is_dir():
        raise ValueError(f"The FMD folder {folder} does not exist or is not a folder.")
    if not raw_root.is_dir() or not gt_root.is_dir():
        raise ValueError(
            f"{folder} is not in the FMD layout: expected raw/<fov>/*.png (noisy frames) and "
            "gt/<fov>/avg50.png (their average) inside it. For two folders of matched images "
            "use noisy= and clean= instead."
        )
    fovs = sorted(
        (p.name for p in raw_root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=_natural_key,
    )
    if not fovs:
        raise ValueError(f"{raw_root} has no field-of-view subfolders (raw/<fov>/*.png).")
    missing = [f for f in fovs if not (gt_root / f).is_dir()]
    if missing:
        raise ValueError(
            f"Fields of view without a gt/ folder in {folder}: {', '.join(missing[:10])}. "
            "Each raw/<fov> needs gt/<fov>/avg50.png; add it or remove the raw folder."
        )
    targets: dict[str, _ImageFile] = {}
    frames: dict[str, list[_ImageFile]] = {}
    for fov in fovs:
        try:
            target = _fmd_target(gt_root / fov)
        except ValueError as exc:
            raise ValueError(f"FMD field of view {fov!r} in {folder}: {exc}") from exc
        targets[fov] = _read_file(target)
        if len(targets[fov].planes) != 1:
            raise ValueError(f"The ground truth {target} must be a single 2D image.")
        frames[fov] = [_read_file(p) for p in _list_images(raw_root / fov, f"FMD raw/{fov}")]
    all_files = [*targets.values(), *(f for fs in frames.values() for f in fs)]
    n_channels = _resolve_channels(all_files, channels, f"the FMD folder {folder}")
    planes: list[_Plane] = []
    for fov in fovs:
        for f in frames[fov]:
            label = f"FMD frame {fov}/{f.path.name}"
            for name, n, c in _pair_planes(f, targets[fov], f"{fov}/{f.path.name}", label):
                lo, hi = _percentile_range(n)
                planes.append(_Plane(name, fov, c, n, lo, hi))
    aliases = {fov: fov for fov in fovs}
    train, val, matched = _split_planes(
        planes, aliases, where=f"the FMD folder {folder}", unit="fields of view", **split
    )
    train_fovs = sorted({p.group for p in train}, key=_natural_key)
    val_fovs = sorted({p.group for p in val}, key=_natural_key)
    info = {
        "fmd": str(folder),
        "fields_of_view": {"train": train_fovs, "val": val_fovs},
        "files": {"train": len(train), "val": len(val)},
    }
    return PairedSource(train, val, channels=n_channels, info=info, kind="fmd"), matched


def make_source(
    *,
    clean: str | Path | None = None,
    noisy: str | Path | None = None,
    fmd: str | Path | None = None,
    noise: NoiseModel | str | None = None,
    channels: int | None = None,
    val_fraction: float = 0.1,
    val_names: list[str] | None = None,
    seed: int = 0,
    mix: float = 0.5,
) -> PatchSource:
    """Build the training data source from folders.

    * ``clean`` + ``noise``: synthetic pairs (:class:`SyntheticSource`);
    * ``noisy`` + ``clean``: real pairs matched by file name (:class:`PairedSource`);
    * ``fmd``: an FMD-layout folder, split by field of view (:class:`PairedSource`);
    * ``fmd`` + ``clean`` + ``noise``: a :class:`MixedSource` drawing a fraction ``mix``
      (default 0.5) of each batch from the real FMD pairs and the rest synthetic.

    ``channels`` forces 1 (gray) or 3 (RGB) and is checked against the data. The
    validation split holds out whole files (fields of view for FMD): ``val_names`` names
    them (file names with or without extension, or FMD field-of-view folder names), else
    a fraction ``val_fraction`` is chosen with ``seed``; ``val_fraction=0`` holds out
    nothing. Raises ValueError, naming the problem, for unusable input.
    """
    if channels is not None and channels not in (1, 3):
        raise ValueError(
            f"channels must be 1 (gray), 3 (RGB) or None (from the data), not {channels!r}."
        )
    if not (isinstance(val_fraction, (int, float)) and 0 <= val_fraction < 1):
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}.")
    if not 0 <= mix <= 1:
        raise ValueError(
            f"mix (the fraction of real pairs per batch) must be in [0, 1], got {mix!r}."
        )
    if isinstance(noise, str):
        noise = parse_noise(noise)
    elif noise is not None and not isinstance(noise, NoiseModel):
        raise ValueError(
            f"noise must be a NoiseModel or a spec string, not {type(noise).__name__}."
        )
    clean_dir = Path(clean).expanduser() if clean is not None else None
    noisy_dir = Path(noisy).expanduser() if noisy is not None else None
    fmd_dir = Path(fmd).expanduser() if fmd is not None else None

    if noisy_dir is not None:
        if clean_dir is None:
            raise ValueError("noisy= needs a matching clean= folder (pairs are matched by name).")
        if fmd_dir is not None:
            raise ValueError(
                "Give either noisy=/clean= folders or fmd=, not both; to combine them build "
                "the sources separately and use MixedSource."
            )
        if noise is not None:
            raise ValueError(
                "noise= adds synthetic noise to clean images, but noisy= already gives real "
                "noisy images: leave noise out (or drop noisy= for synthetic pairs)."
            )
    elif clean_dir is not None and noise is None:
        raise ValueError(
            "A clean folder alone is not training data: add noise= (e.g. 'gaussian:25' or "
            "'poisson-gaussian') for synthetic pairs, or noisy= for real pairs."
        )
    elif clean_dir is None and fmd_dir is None:
        raise ValueError("Give training data: clean= with noise=, noisy= with clean=, or fmd=.")
    elif clean_dir is None and noise is not None:
        raise ValueError(
            "noise= needs a clean= folder of images to add it to (FMD frames are already noisy)."
        )

    names = (
        None
        if val_names is None
        else ([val_names] if isinstance(val_names, str) else list(val_names))
    )
    mixed = fmd_dir is not None and clean_dir is not None
    split = {
        "val_fraction": float(val_fraction),
        "val_names": names,
        "seed": int(seed),
        "strict": not mixed,
    }

    if noisy_dir is not None:
        return _build_paired(noisy_dir, clean_dir, channels, split)[0]
    if not mixed:
        if fmd_dir is not None:
            return _build_fmd(fmd_dir, channels, split)[0]
        return _build_synthetic(clean_dir, noise, channels, split)[0]

    real, matched_real = _build_fmd(fmd_dir, channels, split)
    # The FMD pairs are on the percentile scale, so the synthetic half must be too.
    synthetic, matched_syn = _build_synthetic(
        clean_dir, noise, channels, split, force_percentile=True
    )
    if names:
        unmatched = [n for n in names if n not in matched_real | matched_syn]
        if unmatched:
            raise ValueError(
                f"val_names {unmatched} are neither FMD fields of view in {fmd_dir} nor files "
                f"in {clean_dir}."
            )
    return MixedSource([real, synthetic], [mix, 1.0 - mix])
