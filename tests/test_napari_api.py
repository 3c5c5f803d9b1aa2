"""Model families, the default model, the Qt-free engine and the console API."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from napari_wgan_denoise import Cancelled, load_model, save_user_model
from napari_wgan_denoise.models.families import (
    default_family_for,
    default_model_for,
    family_members,
    list_families,
    split_model_name,
)

# ----------------------------------------------------------------------------- families


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fluo-mse", ("fluo", "mse")),
        ("fluo-wgan", ("fluo", "wgan")),
        ("cells-wgan-fast", ("cells-fast", "wgan")),
        ("gray-mse-fast", ("gray-fast", "mse")),
        ("my-data-wgan-ft", ("my-data-ft", "wgan")),
        ("mse", None),
        ("plain", None),
        ("a--mse", None),
    ],
)
def test_split_model_name(name, expected):
    assert split_model_name(name) == expected


def test_families_from_names():
    names = ["fluo-mse", "fluo-wgan", "cells-mse-fast", "cells-wgan-fast", "gray-mse", "x"]
    assert list_families(names) == ["fluo", "cells-fast"]
    assert family_members("fluo", names) == ("fluo-mse", "fluo-wgan")
    assert family_members("cells-fast", names) == ("cells-mse-fast", "cells-wgan-fast")
    with pytest.raises(ValueError, match="incomplete.*'gray-mse'.*fluo, cells-fast"):
        family_members("gray", names)
    with pytest.raises(ValueError, match="No model family named 'zz'"):
        family_members("zz", names)


def test_families_from_the_registry(tiny_gray, tiny_rgb, no_shipped_models):
    assert list_families() == []
    with pytest.raises(ValueError, match=r"\(none installed\)"):
        family_members("fluo")
    save_user_model(tiny_gray, "fluo-mse-fast")
    save_user_model(tiny_gray, "fluo-wgan-fast")
    save_user_model(tiny_rgb, "cells-mse")
    save_user_model(tiny_rgb, "cells-wgan")
    assert sorted(list_families()) == ["cells", "fluo-fast"]
    assert family_members("fluo-fast") == ("fluo-mse-fast", "fluo-wgan-fast")
    assert default_family_for(1) == "fluo-fast"
    assert default_family_for(3) == "cells"


def test_default_model_preference(tiny_gray, tiny_rgb, no_shipped_models):
    assert default_model_for(1) is None and default_model_for(3) is None
    save_user_model(tiny_rgb, "aaa-rgb")
    save_user_model(tiny_gray, "zzz-gray")
    assert default_model_for(1) == "zzz-gray"  # no preferred name: first model that fits
    assert default_model_for(3) == "aaa-rgb"
    save_user_model(tiny_gray, "gray-wgan")
    assert default_model_for(1) == "gray-wgan"
    save_user_model(tiny_gray, "fluo-wgan")
    assert default_model_for(1) == "fluo-wgan"
    save_user_model(tiny_gray, "fluo-wgan-fast")
    assert default_model_for(1) == "fluo-wgan-fast"
    save_user_model(tiny_rgb, "cells-wgan")
    assert default_model_for(3) == "cells-wgan"
    # a preferred name that does not fit the channels is skipped
    save_user_model(tiny_gray, "cells-wgan-fast")
    assert default_model_for(3) == "cells-wgan"


# ----------------------------------------------------------------------------- import


def test_console_api_imports_without_qt():
    code = (
        "import sys\n"
        "from napari_wgan_denoise.napari import denoise_layer, compare_layer\n"
        "import napari_wgan_denoise.models.families, napari_wgan_denoise.data.samples\n"
        "bad = [m for m in ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- engine


@pytest.fixture
def twins(tiny_gray, tiny_unet, tiny_rgb):
    save_user_model(tiny_gray, "tiny-mse", modality="fluo")
    save_user_model(tiny_unet, "tiny-wgan", modality="fluo")
    save_user_model(tiny_rgb, "tinyrgb-mse", modality="cells")
    save_user_model(tiny_rgb, "tinyrgb-wgan", modality="cells")


def test_model_cache_reuses_and_notices_new_files(twins, tiny_unet):
    from napari_wgan_denoise.inference.cache import ModelCache, card_key

    cache = ModelCache()
    first = cache.get("tiny-mse")
    assert cache.get("tiny-mse") is first and cache.loads == 1
    assert card_key(first.card) == first.card_hash
    save_user_model(tiny_unet, "tiny-mse", overwrite=True)  # the file changed
    second = cache.get("tiny-mse")
    assert second is not first and second.architecture == "unet" and cache.loads == 2
    with pytest.raises(ValueError, match="No model named 'nope'"):
        cache.get("nope")


def test_iter_progress_yields_progress_and_cancels(twins, rng):
    from napari_wgan_denoise import denoise
    from napari_wgan_denoise.napari._bridge import iter_progress

    model = load_model("tiny-mse")
    data = rng.normal(0, 1, (2, 70, 70)).astype(np.float32)
    gen = iter_progress(denoise, data, model, tile_size=64, batch_size=1)
    steps = []
    while True:
        try:
            steps.extend(next(gen))
        except StopIteration as stop:
            out = stop.value
            break
    assert steps and steps[-1][0] == steps[-1][1]
    np.testing.assert_array_equal(out, denoise(data, model, tile_size=64, batch_size=1))

    cancel = threading.Event()
    gen = iter_progress(denoise, data, model, tile_size=64, batch_size=1, cancel=cancel)
    next(gen)
    cancel.set()
    with pytest.raises(Cancelled):
        for _ in gen:
            pass


def test_quality_metrics_per_plane(rng):
    from napari_wgan_denoise.metrics import psnr, quality_metrics, ssim

    clean = rng.integers(0, 255, (3, 32, 32), dtype=np.uint8)
    noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    m = quality_metrics(clean, noisy, rgb=False)
    assert m["psnr"] == pytest.approx(psnr(clean, noisy))
    assert m["ssim"] == pytest.approx(np.mean([ssim(c, n) for c, n in zip(clean, noisy)]))
    assert quality_metrics(clean, clean, rgb=False)["grad_ratio"] == pytest.approx(1.0)
    rgb = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
    assert quality_metrics(rgb, rgb, rgb=True)["ssim"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- console API


def test_denoise_layer_without_viewer(twins, rng, no_shipped_models):
    from napari.layers import Image

    from napari_wgan_denoise.napari import denoise_layer

    data = rng.integers(0, 4000, (3, 40, 40)).astype(np.uint16)
    layer = Image(data, name="stack", scale=(3, 0.5, 0.5), translate=(1, 2, 3))
    layer.metadata["source"] = "microscope"
    out = denoise_layer(layer, model="tiny-mse", tile_size=64)
    assert isinstance(out, Image)
    assert out.name == "stack [tiny-mse]"
    assert out.data.shape == data.shape and out.data.dtype == np.uint16
    np.testing.assert_allclose(out.scale, layer.scale)
    np.testing.assert_allclose(out.translate, layer.translate)
    assert out.metadata["source"] == "microscope"
    meta = out.metadata["napari_wgan_denoise"]
    assert meta["model"] == "tiny-mse" and meta["source_layer"] == "stack"
    assert meta["card_hash"] == load_model("tiny-mse").card_hash

    # default model, a loaded model object, and errors with the core's messages
    assert denoise_layer(layer).metadata["napari_wgan_denoise"]["model"] == "tiny-mse"
    model = load_model("tiny-wgan")
    assert denoise_layer(layer, model=model).name == "stack [tiny-wgan]"
    with pytest.raises(ValueError, match="is RGB but model 'tiny-mse' is a gray"):
        denoise_layer(Image(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)), model="tiny-mse")
    bad = Image(np.full((32, 32), np.nan, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        denoise_layer(bad, model="tiny-mse")
    with pytest.raises(ValueError, match="No model named 'missing'"):
        denoise_layer(layer, model="missing")


def test_denoise_layer_rgba_keeps_alpha(twins, rng):
    from napari.layers import Image

    from napari_wgan_denoise.napari import denoise_layer

    data = rng.integers(0, 255, (32, 36, 4), dtype=np.uint8)
    out = denoise_layer(Image(data, name="rgba"), model="tinyrgb-mse")
    assert out.rgb and out.data.shape == data.shape and out.data.dtype == np.uint8
    np.testing.assert_array_equal(out.data[..., 3], data[..., 3])


def test_denoise_layer_without_any_model(rng, no_shipped_models):
    from napari.layers import Image

    from napari_wgan_denoise.napari import denoise_layer

    with pytest.raises(ValueError, match="No denoising model for gray"):
        denoise_layer(Image(rng.random((16, 16))))


def test_compare_layer_without_viewer(twins, rng, no_shipped_models):
    from napari.layers import Image

    from napari_wgan_denoise.napari import compare_layer

    clean = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
    result = compare_layer(Image(noisy, name="n"), reference=Image(clean, name="c"))
    assert result.family == "tinyrgb"
    mse, wgan, diff = result.layers
    assert mse.name == "n MSE [tinyrgb-mse]" and wgan.name == "n WGAN [tinyrgb-wgan]"
    assert mse.data.shape == noisy.shape and mse.rgb
    assert diff.data.shape == (40, 40) and diff.colormap.name == "magma"
    assert set(result.metrics) == {"input", "tinyrgb-mse", "tinyrgb-wgan"}
    with pytest.raises(ValueError, match="Reference layer 'c' has shape"):
        compare_layer(Image(noisy, name="n"), "tinyrgb", Image(clean[:20], name="c"))
    with pytest.raises(ValueError, match="No model family named 'nope'"):
        compare_layer(Image(noisy), family="nope")


def test_console_api_in_a_viewer(make_napari_viewer, twins, rng):
    """From napari's console: layers by name, the current viewer, current slice, grid."""
    from napari_wgan_denoise.napari import compare_layer, denoise_layer
    from napari_wgan_denoise.napari._viewer import grid_of

    viewer = make_napari_viewer()
    clean = rng.random((3, 40, 40)).astype(np.float32)
    viewer.add_image(clean, name="clean")
    noisy = viewer.add_image(clean + rng.normal(0, 0.1, clean.shape).astype(np.float32))
    noisy.name = "noisy"
    viewer.dims.set_point(0, 2)

    out = denoise_layer("noisy", model="tiny-mse", current_slice=True)
    assert out in viewer.layers and out.name == "noisy [tiny-mse] (slice 2)"
    assert out.data.shape == (1, 40, 40)
    np.testing.assert_allclose(out.translate, (2, 0, 0))

    steps = []
    result = compare_layer(
        noisy, family="tiny", reference="clean", progress=lambda f, m: steps.append(f)
    )
    assert all(layer in viewer.layers for layer in result.layers)
    assert grid_of(viewer).enabled
    assert steps[0] == 0.0 and steps[-1] == 1.0 and steps == sorted(steps)
    assert result.metrics["tiny-mse"]["psnr"] > 0
    assert len(viewer.layers) == 6

    with pytest.raises(ValueError, match="no layer named 'nope'"):
        denoise_layer("nope")


def test_current_slice_of_a_layer_with_fewer_dims_than_the_viewer(make_napari_viewer, twins, rng):
    from napari_wgan_denoise.napari import compare_layer, denoise_layer
    from napari_wgan_denoise.napari._viewer import grid_of

    viewer = make_napari_viewer()
    viewer.add_image(rng.random((2, 6, 16, 16)), name="tzyx")
    zyx = viewer.add_image(rng.random((3, 16, 16)), name="zyx", scale=(2, 1, 1))
    viewer.dims.set_point(0, 1)  # T: not an axis of "zyx"
    viewer.dims.set_point(1, 4)  # Z world 4 = plane 2 of "zyx" (scale 2)
    out = denoise_layer(zyx, model="tiny-mse", current_slice=True)
    assert out.data.shape == (1, 16, 16) and out.name == "zyx [tiny-mse] (slice 2)"
    np.testing.assert_allclose(out.translate, (4, 0, 0))
    np.testing.assert_array_equal(
        out.data[0], denoise_layer(zyx, model="tiny-mse", add_to_viewer=False).data[2]
    )
    # a single clean plane is a valid reference for a current-slice comparison
    plane = viewer.add_image(zyx.data[2], name="plane 2")
    result = compare_layer(zyx, "tiny", reference=plane, current_slice=True, grid=False)
    assert result.mse.data.shape == (1, 16, 16) and not grid_of(viewer).enabled
    assert np.isfinite(result.metrics["tiny-wgan"]["psnr"])


def test_shipped_default_model_on_the_sample(make_napari_viewer):
    """End to end with the real zoo: open the bundled sample, denoise with the default model."""
    from napari_wgan_denoise.metrics import psnr
    from napari_wgan_denoise.models.families import default_model_for
    from napari_wgan_denoise.napari import denoise_layer

    if default_model_for(1) is None:
        pytest.skip("no shipped gray model")
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-wgan-denoise", "fluorescence")
    noisy = next(lyr for lyr in layers if "clean" not in lyr.name)
    clean = next(lyr for lyr in layers if "clean" in lyr.name)
    out = denoise_layer(noisy, viewer=viewer)
    assert out in viewer.layers and out.data.dtype == noisy.data.dtype
    assert out.metadata["napari_wgan_denoise"]["model"] == default_model_for(1)
    assert psnr(clean.data, out.data) > psnr(clean.data, noisy.data) + 3
