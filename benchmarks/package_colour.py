"""Write the colour photographs that installed packages ship, as PNG training images for the
cells models (issue 14, stage 8): natural colour structure (chroma edges that do not follow
brightness) that neither CellaVision nor the stained gray Train400 has.

    python benchmarks/package_colour.py runs/data/package_colour
    python benchmarks/package_colour.py runs/data/package_colour2 --extra   # stage 10

scikit-image's retina, rocket and matplotlib's grace_hopper; with ``--extra`` also
scikit-image's motorcycle_left (a garage scene: many small coloured objects and textures;
its right-hand stereo twin would repeat it). With ``--he`` (stage 12) also StarDist's H&E
example (``stardist/data/images/histo.jpg``, 300 x 500, a tissue of another stain; read from
an installed stardist or from its wheel, downloaded without dependencies). Not astronaut,
coffee, chelsea (= cat) or the immunohistochemistry image: ``zoo_eval cells-other`` tests on
those.

    python benchmarks/package_colour.py runs/data/package_he --only-he   # stage 12
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import skimage.data
import skimage.io
from matplotlib import cbook

HELD_OUT = ("astronaut", "coffee", "chelsea", "cat", "immunohistochemistry")
#: Where a stardist wheel keeps its H&E example.
HE_MEMBER = "stardist/data/images/histo.jpg"


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


def stardist_he(version: str = "0.9.2", wheel: Path | None = None) -> np.ndarray:
    """StarDist's H&E example image, RGB uint8: from ``wheel`` (a stardist wheel file) when
    given, else from the installed package, else from its wheel, downloaded without
    dependencies."""
    if wheel is None:
        try:
            import stardist

            folder = Path(stardist.__file__).parent / "data" / "images"
            return skimage.io.imread(folder / "histo.jpg")
        except ImportError:
            pass
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp,
                 f"stardist=={version}"],
                check=True,
            )  # fmt: skip
            wheel = next(Path(tmp).glob("stardist-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            return skimage.io.imread(io.BytesIO(z.read(HE_MEMBER)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--extra", action="store_true", help="add motorcycle_left (stage 10)")
    parser.add_argument("--he", action="store_true", help="add StarDist's H&E image (stage 12)")
    parser.add_argument("--only-he", action="store_true", help="write StarDist's H&E image only")
    args = parser.parse_args()
    folder = args.folder
    folder.mkdir(parents=True, exist_ok=True)
    chosen = {} if args.only_he else images(args.extra)
    if args.he or args.only_he:
        chosen["stardist_he"] = np.ascontiguousarray(stardist_he()[..., :3])
    for name, img in chosen.items():
        skimage.io.imsave(folder / f"{name}.png", img, check_contrast=False)
        print(f"{folder / name}.png {img.shape}")


if __name__ == "__main__":
    main()
