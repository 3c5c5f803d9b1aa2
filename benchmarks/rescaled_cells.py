"""Write the CellaVision training images at smaller scales, as PNG training images for the
cells models (issue 14, stage 11): the same stain at the magnifications of other
microscopes, smaller cells and more of them in a patch.

    python benchmarks/rescaled_cells.py runs/data/cellavision_scaled

Only the training images (001-076); 077-088 stay held out for validation. Each is
resized, with anti-aliasing, to 0.5 and 0.7 of its size (``<name>_s50.png``,
``<name>_s70.png``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import skimage.io
import skimage.transform

SHARED = Path(__file__).resolve().parents[2] / "shared"
CELLAVISION = SHARED / "data" / "cells" / "cellavision_train"
#: The scales written, and the last training image (the rest are validation).
SCALES, LAST_TRAIN = (0.5, 0.7), 76


def rescaled(image: np.ndarray, scale: float) -> np.ndarray:
    """An RGB uint8 image resized by ``scale`` (anti-aliased, cubic), RGB uint8."""
    out = skimage.transform.rescale(
        image[..., :3], scale, channel_axis=-1, anti_aliasing=True, order=3
    )
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--source", type=Path, default=CELLAVISION)
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    names = sorted(p for p in args.source.glob("*.png") if int(p.stem) <= LAST_TRAIN)
    for path in names:
        image = skimage.io.imread(path)
        for scale in SCALES:
            out = args.folder / f"{path.stem}_s{round(scale * 100)}.png"
            skimage.io.imsave(out, rescaled(image, scale), check_contrast=False)
    print(f"{len(names) * len(SCALES)} images in {args.folder}")


if __name__ == "__main__":
    main()
