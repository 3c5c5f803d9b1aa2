"""The CellaVision training images at other magnifications (benchmarks/rescaled_cells.py):
training images only, at the scales named, RGB uint8."""

from __future__ import annotations

import numpy as np
import skimage.io
from benchmarks.rescaled_cells import LAST_TRAIN, SCALES, main, rescaled


def test_rescaled_images_keep_colour_and_leave_the_validation_images_out(tmp_path, monkeypatch):
    source = tmp_path / "cells"
    source.mkdir()
    yy, xx = np.mgrid[:100, :120]
    image = np.stack([xx * 2, yy * 2, (xx + yy)], axis=-1).astype(np.uint8)
    for name in ("001", f"{LAST_TRAIN:03d}", f"{LAST_TRAIN + 1:03d}"):
        skimage.io.imsave(source / f"{name}.png", image, check_contrast=False)
    half = rescaled(image, 0.5)
    assert half.shape == (50, 60, 3) and half.dtype == np.uint8
    # a smooth ramp keeps its values where it is smooth: same colours, smaller
    assert abs(int(half[25, 30, 0]) - int(image[50, 60, 0])) <= 3

    out = tmp_path / "scaled"
    monkeypatch.setattr("sys.argv", ["rescaled_cells.py", str(out), "--source", str(source)])
    main()
    written = sorted(p.name for p in out.iterdir())
    expected = sorted(
        f"{n}_s{round(s * 100)}.png" for n in ("001", f"{LAST_TRAIN:03d}") for s in SCALES
    )
    assert written == expected  # 077 and later (validation) are not written
    assert skimage.io.imread(out / "001_s70.png").shape == (70, 84, 3)
