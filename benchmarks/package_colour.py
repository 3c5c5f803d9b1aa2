"""Write the colour photographs that installed packages ship, as PNG training images for the
cells models (issue 14, stage 8): natural colour structure (chroma edges that do not follow
brightness) that neither CellaVision nor the stained gray Train400 has.

    python benchmarks/package_colour.py runs/data/package_colour
    python benchmarks/package_colour.py runs/data/package_colour2 --extra   # stage 10

scikit-image's retina, rocket and matplotlib's grace_hopper; with ``--extra`` also
scikit-image's motorcycle_left (a garage scene: many small coloured objects and textures;
its right-hand stereo twin would repeat it). Not astronaut, coffee, chelsea
(= cat) or the immunohistochemistry image: ``zoo_eval cells-other`` tests on those.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import skimage.data
import skimage.io
from matplotlib import cbook

HELD_OUT = ("astronaut", "coffee", "chelsea", "cat", "immunohistochemistry")


def images(extra: bool = False) -> dict[str, np.ndarray]:
    """The training photographs by name, RGB uint8 (``extra``: stage 10's addition too)."""
    retina = skimage.data.retina()
    rows, cols = np.nonzero(retina.max(axis=2) > 20)  # crop the black surround of the fundus
    out = {
        "retina": retina[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1],
        "rocket": skimage.data.rocket(),
    }
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        out["grace_hopper"] = skimage.io.imread(f)
    if extra:
        out["motorcycle_left"] = skimage.data.stereo_motorcycle()[0]
    return {k: np.ascontiguousarray(v[..., :3]) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--extra", action="store_true", help="add motorcycle_left (stage 10)")
    args = parser.parse_args()
    folder = args.folder
    folder.mkdir(parents=True, exist_ok=True)
    for name, img in images(args.extra).items():
        skimage.io.imsave(folder / f"{name}.png", img, check_contrast=False)
        print(f"{folder / name}.png {img.shape}")


if __name__ == "__main__":
    main()
