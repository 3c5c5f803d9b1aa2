"""The colour photographs that installed packages ship, as training images
(benchmarks/package_colour.py), keep out the images the cells models are tested on."""

from __future__ import annotations

import numpy as np
import skimage.data
import skimage.io
from benchmarks.package_colour import HELD_OUT, images, main


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
