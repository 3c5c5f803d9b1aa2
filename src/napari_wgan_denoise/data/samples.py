"""Noisy sample images (with their clean originals) for trying the denoisers.

Qt-free: the napari sample-data hooks in :mod:`napari_wgan_denoise.napari._sample_data`
wrap these functions. Both images ship with the package or with scikit-image, so they load
offline:

* ``fluorescence_sample``: a 256 x 256 crop of the DNA (Hoechst) channel of CellProfiler's
  ExampleHuman image set (CC0), stored as ``samples/fluo_examplehuman_crop.tif``, with
  Poisson-Gaussian noise added at load time.
* ``cells_sample``: scikit-image's bundled ``immunohistochemistry()`` image (RGB colonic
  glands, IHC/DAB with hematoxylin counterstain, acquired at the Center for Microscopy And
  Molecular Imaging; "no known copyright restrictions" per scikit-image), with Gaussian
  noise of sigma 25 on the 0-255 scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
FLUO_CROP = SAMPLES_DIR / "fluo_examplehuman_crop.tif"

#: Expected photon count at the brightest pixel of the fluorescence sample.
FLUO_PEAK_PHOTONS = 20.0
#: Read-noise sigma of the fluorescence sample on the 0-255 scale.
FLUO_READ_SIGMA = 4.0
#: Gaussian noise sigma of the stained-cell sample on the 0-255 scale.
CELLS_SIGMA = 25.0


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Round and clip to 0-255, as an 8-bit camera or file would store the noisy image."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def fluorescence_clean() -> np.ndarray:
    """The clean 256 x 256 uint8 fluorescence crop (nuclei, CellProfiler ExampleHuman, CC0)."""
    import tifffile

    return np.asarray(tifffile.imread(FLUO_CROP))


def fluorescence_sample(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy fluorescence image and its clean original, both 256 x 256 uint8.

    The noise is Poisson-Gaussian: photon shot noise at ``FLUO_PEAK_PHOTONS`` photons for
    the brightest pixel plus Gaussian read noise (``FLUO_READ_SIGMA`` on the 0-255 scale),
    drawn from a generator seeded with ``seed`` so that the sample is reproducible.
    """
    clean = fluorescence_clean()
    rng = np.random.default_rng(seed)
    gain = 255.0 / FLUO_PEAK_PHOTONS
    photons = rng.poisson(clean.astype(np.float64) / gain)
    noisy = photons * gain + rng.normal(0.0, FLUO_READ_SIGMA, clean.shape)
    return _to_uint8(noisy), clean


def cells_clean() -> np.ndarray:
    """The clean 512 x 512 x 3 uint8 stained-tissue image bundled with scikit-image."""
    from skimage import data

    return np.asarray(data.immunohistochemistry())


def cells_sample(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy RGB stained-cell image and its clean original, both 512 x 512 x 3 uint8.

    Gaussian noise of sigma ``CELLS_SIGMA`` (0-255 scale, seeded with ``seed``) is added
    to every colour channel, then rounded and clipped to 8 bits like a saved RGB file.
    """
    clean = cells_clean()
    rng = np.random.default_rng(seed)
    noisy = clean.astype(np.float64) + rng.normal(0.0, CELLS_SIGMA, clean.shape)
    return _to_uint8(noisy), clean
