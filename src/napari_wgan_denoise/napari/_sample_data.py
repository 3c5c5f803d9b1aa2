"""npe2 sample-data hooks: each gives the noisy image and, hidden below it, the clean one
(usable as the Compare widget's reference)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.samples import cells_sample, fluorescence_sample

LayerDataTuple = tuple[Any, dict[str, Any], str]


def fluorescence() -> list[LayerDataTuple]:
    """Noisy fluorescence nuclei (Poisson-Gaussian noise on a CC0 ExampleHuman crop)."""
    noisy, clean = fluorescence_sample(seed=0)
    limits = (float(clean.min()), float(np.percentile(clean, 99.9)))
    return [
        (
            clean,
            {"name": "fluorescence (clean)", "visible": False, "contrast_limits": limits},
            "image",
        ),
        (noisy, {"name": "fluorescence (noisy)", "contrast_limits": limits}, "image"),
    ]


def cells() -> list[LayerDataTuple]:
    """Noisy RGB stained cells (Gaussian sigma 25 on scikit-image's IHC image)."""
    noisy, clean = cells_sample(seed=0)
    return [
        (clean, {"name": "stained cells (clean)", "visible": False, "rgb": True}, "image"),
        (noisy, {"name": "stained cells (noisy)", "rgb": True}, "image"),
    ]
