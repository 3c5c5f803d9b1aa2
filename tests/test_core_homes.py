"""The core's shared pieces: one image lister, one channel check, one model cache, and
fine-tuning modes as strategies that plug into one loop."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.io

from napari_wgan_denoise import save_model
from napari_wgan_denoise.inference.cache import ModelCache, card_key
from napari_wgan_denoise.inference.channels import check_channels, merge_alpha, split_alpha
from napari_wgan_denoise.io import MissingFolder, list_images
from napari_wgan_denoise.training.finetune import (
    STRATEGIES,
    FinetuneConfig,
    Paired,
    finetune,
    register_mode,
)


def test_list_images_natural_order_and_clear_errors(tmp_path):
    for name in ("img10.png", "img2.png", "img1.png", ".hidden.png"):
        skimage.io.imsave(tmp_path / name, np.zeros((8, 8), np.uint8), check_contrast=False)
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in list_images(tmp_path, "clean")] == ["img1.png", "img2.png", "img10.png"]

    with pytest.raises(MissingFolder, match="does not exist") as missing:
        list_images(tmp_path / "absent", "clean")
    assert isinstance(missing.value, FileNotFoundError) and isinstance(missing.value, ValueError)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images.*It is empty"):
        list_images(tmp_path / "empty", "noisy")
    with pytest.raises(ValueError, match="is a file"):
        list_images(tmp_path / "img1.png", "clean")


def test_one_channel_check_and_alpha():
    check_channels(3, 3, model="m", image="Layer 'x'")
    with pytest.raises(ValueError, match="Layer 'x' is RGB but model 'm' is a gray"):
        check_channels(1, 3, model="m", image="Layer 'x'")
    with pytest.raises(ValueError, match="single-channel but restore model 'm' expects RGB"):
        check_channels(3, 1, model="m", image="Layer 'x'", kind="restore model")

    rgba = np.arange(2 * 4 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 4)
    colours, alpha = split_alpha(rgba, rgb=True)
    assert colours.shape == (2, 4, 4, 3) and alpha.shape == (2, 4, 4, 1)
    np.testing.assert_array_equal(merge_alpha(colours, alpha), rgba)
    gray = np.zeros((4, 4, 4))  # a gray stack whose last axis happens to be 4 long
    assert split_alpha(gray, rgb=False) == (gray, None)


def test_model_cache_loads_a_file_once_and_notices_a_changed_file(tiny_gray, tiny_unet, tmp_path):
    path = str(save_model(tiny_gray, tmp_path / "m").with_suffix(""))
    cache = ModelCache(maxsize=1)
    first = cache.get_file(path, tiny_gray.card_hash)
    assert cache.get_file(path, tiny_gray.card_hash) is first and cache.loads == 1
    assert card_key(first.card) == first.card_hash
    assert cache.lock_for(first) is cache.lock_for(first)
    with pytest.raises(RuntimeError, match="changed while the job was running"):
        cache.get_file(path, "0" * 16)


def test_a_new_finetune_mode_plugs_in_as_one_class(tiny_gray, rng):
    class Gentle(Paired):
        """Paired, but with a smaller learning rate."""

        mode = "gentle"

        def loss(self):
            settings = super().loss()
            return type(settings)(settings.loss, settings.reduction, settings.alpha, 1e-6)

    register_mode(Gentle)
    try:
        clean = rng.uniform(100, 1000, (4, 48, 48)).astype(np.float32)
        noisy = clean + rng.normal(0, 50, clean.shape).astype(np.float32)
        previews = []
        model = finetune(
            tiny_gray,
            noisy,
            mode="gentle",
            clean=clean,
            iterations=2,
            patch_size=32,
            batch_size=2,
            val_every=1,
            preview=noisy[0],
            preview_every=1,
            save=False,
            progress=lambda info: previews.append(info.get("preview")),
        )
    finally:
        STRATEGIES.pop("gentle")
    assert model.card["finetune"]["mode"] == "gentle" and model.card["finetune"]["lr"] == 1e-6
    assert model.card["metrics"]["validation_metric"] == "val_psnr"
    preview = [p for p in previews if p is not None][-1]
    # the preview comes back like the input plane: its shape, dtype and intensity scale
    assert preview.shape == (48, 48) and preview.dtype == np.float32
    assert 0 < float(preview.mean()) < 2000

    with pytest.raises(ValueError, match="mode must be one of paired, two-stage, n2n"):
        finetune(tiny_gray, noisy, mode="gentle", save=False)
    with pytest.raises(TypeError, match="Unknown fine-tuning option"):
        FinetuneConfig.from_options("paired", iteratons=3)


def test_family_and_default_come_from_the_card(tiny_gray):
    """A model joins a family and becomes the default by what its card says, whatever its
    name; the shipped cards declare theirs."""
    import copy

    from napari_wgan_denoise import save_user_model
    from napari_wgan_denoise.models.families import (
        default_family_for,
        default_model_for,
        family_members,
        list_families,
    )
    from napari_wgan_denoise.models.registry import find_model

    assert find_model("fluo-wgan-fast").card["family"] == {"name": "fluo-fast", "kind": "wgan"}
    assert default_model_for(1) == "fluo-wgan-fast"  # marked default in its card
    assert default_model_for(3) == "cells-wgan-fast"
    plain = copy.deepcopy(tiny_gray)
    plain.card["family"] = {"name": "lab", "kind": "mse"}
    save_user_model(plain, "plain-denoiser")
    adv = copy.deepcopy(tiny_gray)
    adv.card["family"] = {"name": "lab", "kind": "wgan"}
    adv.card["default"] = True
    save_user_model(adv, "sharp-denoiser")
    assert "lab" in list_families()
    assert family_members("lab") == ("plain-denoiser", "sharp-denoiser")
    # shipped models come first, so a user's default does not displace the shipped one
    assert default_model_for(1) == "fluo-wgan-fast"
    assert default_family_for(1) == "fluo-fast"
