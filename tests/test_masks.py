"""The one mask / ROI rasteriser: Restore and Fine-tune read Shapes and Labels alike."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from napari.layers import Image, Labels, Shapes  # noqa: E402

from napari_wgan_denoise.napari._jobs import prepare_finetune, prepare_restore  # noqa: E402
from napari_wgan_denoise.napari._masks import mask_from_layer, roi_mask  # noqa: E402


def _scaled_image() -> Image:
    """A 2-plane 40 x 60 stack shown at twice its size and shifted."""
    return Image(np.zeros((2, 40, 60), np.float32), scale=(1, 2, 2), translate=(0, 10, -20))


def test_shapes_over_a_scaled_shifted_image_give_one_mask_to_both_widgets():
    image = _scaled_image()
    # drawn in world coordinates over image pixels y 5..15, x 10..30
    y0, y1, x0, x1 = 5 * 2 + 10, 15 * 2 + 10, 10 * 2 - 20, 30 * 2 - 20
    shapes = Shapes([[[y0, x0], [y0, x1], [y1, x1], [y1, x0]]], shape_type="rectangle")

    restore_mask = prepare_restore(image, shapes).mask
    finetune_roi = prepare_finetune(image, mode="two-stage", base="b", name="n", roi=shapes).roi
    assert restore_mask.shape == finetune_roi.shape == (40, 60)
    np.testing.assert_array_equal(finetune_roi, restore_mask)
    assert finetune_roi[6:15, 11:30].all()  # inside the drawn rectangle
    assert not finetune_roi[20:].any() and not finetune_roi[:, 35:].any()
    assert 9 * 19 <= finetune_roi.sum() <= 11 * 21  # the rectangle, not its world extent


def test_labels_roi_is_the_projection_of_the_mask():
    image = _scaled_image()
    labels = np.zeros((2, 40, 60), np.uint8)
    labels[1, 4:30, 8:40] = 2
    layer = Labels(labels)
    mask = mask_from_layer(layer, image)
    assert mask.shape == (2, 40, 60) and not mask[0].any()
    roi = roi_mask(layer, image)
    np.testing.assert_array_equal(roi, mask.any(axis=0))
    assert roi.sum() == 26 * 32

    with pytest.raises(ValueError, match=r"ROI layer .* is empty"):
        roi_mask(Labels(np.zeros((40, 60), np.uint8), name="blank"), image)
    with pytest.raises(ValueError, match=r"40 x 60"):
        roi_mask(Labels(np.zeros((30, 30), np.uint8), name="small"), image)
