"""Sample images: the Qt-free builders and the napari sample-data entries."""

from __future__ import annotations

import numpy as np
import pytest

from napari_wgan_denoise.data.samples import (
    CELLS_SIGMA,
    FLUO_CROP,
    cells_sample,
    fluorescence_sample,
)


def test_fluorescence_crop_is_small_and_shipped():
    assert FLUO_CROP.is_file()
    assert FLUO_CROP.stat().st_size < 200_000


def test_fluorescence_sample_is_reproducible_poisson_gaussian_noise():
    noisy, clean = fluorescence_sample(seed=0)
    assert noisy.shape == clean.shape == (256, 256)
    assert noisy.dtype == clean.dtype == np.uint8
    again, _ = fluorescence_sample(seed=0)
    np.testing.assert_array_equal(noisy, again)
    assert not np.array_equal(noisy, fluorescence_sample(seed=1)[0])
    # unbiased, and noisier where the signal is brighter (shot noise)
    diff = noisy.astype(float) - clean
    assert abs(diff.mean()) < 2
    bright, dark = clean > np.percentile(clean, 95), clean < np.percentile(clean, 50)
    assert diff[bright].std() > 2 * diff[dark].std()


def test_cells_sample_is_rgb_with_sigma_25():
    noisy, clean = cells_sample(seed=0)
    assert noisy.shape == clean.shape == (512, 512, 3)
    assert noisy.dtype == clean.dtype == np.uint8
    np.testing.assert_array_equal(noisy, cells_sample(seed=0)[0])
    mid = (clean > 40) & (clean < 215)  # away from clipping
    assert (noisy.astype(float) - clean)[mid].std() == pytest.approx(CELLS_SIGMA, rel=0.05)


@pytest.mark.parametrize(
    ("key", "noisy_name", "clean_name", "rgb"),
    [
        ("fluorescence", "fluorescence (noisy)", "fluorescence (clean)", False),
        ("cells", "stained cells (noisy)", "stained cells (clean)", True),
    ],
)
def test_sample_data_loads_in_napari(make_napari_viewer, key, noisy_name, clean_name, rgb):
    pytest.importorskip("qtpy")
    viewer = make_napari_viewer()
    viewer.open_sample("napari-wgan-denoise", key)
    assert [layer.name for layer in viewer.layers] == [clean_name, noisy_name]
    noisy, clean = viewer.layers[noisy_name], viewer.layers[clean_name]
    assert noisy.rgb is rgb and clean.rgb is rgb
    assert noisy.data.shape == clean.data.shape and noisy.data.dtype == np.uint8
    assert noisy.visible and not clean.visible
    assert viewer.layers.selection.active is noisy
