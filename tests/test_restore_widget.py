"""The Restore (inpaint + deblur + denoise) widget and ``restore_layer``, in a real viewer."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari_wgan_denoise import create_model, load_model, restore, save_user_model  # noqa: E402
from napari_wgan_denoise.errors import Cancelled  # noqa: E402

PLUGIN = "napari-wgan-denoise"
RESTORE = "Restore (inpaint + deblur + denoise)"
TIMEOUT_MS = 60_000
CASCADE = "tiny-cascade"
NO_MODEL = "No restore model installed; train one with `wgan-denoise cascade-train`."


def _cascade(channels: int = 1, seed: int = 0):
    model = create_model(
        "cascade",
        channels=channels,
        inpaint_features=8,
        inpaint_blocks=1,
        restore_features=8,
        restore_layers=3,
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.network.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


@pytest.fixture
def models(no_shipped_models):
    """A tiny gray cascade (a restore model) and a tiny U-Net (a denoise model); the shipped
    zoo is hidden so that runs stay fast and the tiny cascade is the only choice."""
    save_user_model(_cascade(), CASCADE, modality="fluo")
    save_user_model(create_model("unet", 1, features=4, bottleneck=2), "tiny-unet")
    return CASCADE


def _open(viewer):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, RESTORE)
    return widget


def _run(qtbot, widget) -> str:
    """Start a run and wait for it; returns "done", "cancelled" or "error"."""
    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT_MS) as blocker:
        widget.run()
    return blocker.args[0]


def _image(shape=(64, 64), seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[-2], : shape[-1]]
    base = 1000 + 800 * np.sin(xx / 6.0) * np.cos(yy / 9.0)
    return np.clip(base + rng.normal(0, 150, shape), 0, 65535).astype(np.uint16)


def _expected(data, mask, **kw):
    return restore(data, mask, load_model(CASCADE), device="cpu", **kw)


def test_labels_mask_restored_and_inpainted_layers(make_napari_viewer, qtbot, models):
    viewer = make_napari_viewer()
    data = _image()
    before = data.copy()
    layer = viewer.add_image(
        data, name="img", scale=(0.5, 0.25), translate=(10.0, -3.0), contrast_limits=(200, 2500)
    )
    holes = np.zeros((64, 64), np.uint8)
    holes[20:30, 8:40] = 3
    holes[50, 50] = 1
    labels = viewer.add_labels(holes, name="holes", scale=(0.5, 0.25), translate=(10.0, -3.0))
    widget = _open(viewer)

    # only restore models are listed: not the U-Net nor the shipped denoisers
    assert widget.model_picker.values() == [CASCADE]
    assert widget.model_picker.value() == CASCADE
    assert widget.layer_picker.layer() is layer
    assert widget.mask_picker.itemText(0) == "(none: deblur + denoise only)"
    assert widget.mask_picker.layer() is labels  # followed the new Labels layer
    assert widget.device_picker.itemData(0) == "auto"
    assert widget.device_picker.itemText(0).startswith("auto (")  # what auto resolves to
    widget.add_inpainted.setChecked(True)

    assert _run(qtbot, widget) == "done"

    restored = viewer.layers[f"img restored ({CASCADE})"]
    inpainted = viewer.layers[f"img inpainted ({CASCADE})"]
    assert widget.last_layers == [restored, inpainted] and widget.last_layer is restored
    mask = holes != 0
    for out in (restored, inpainted):
        assert out.data.shape == data.shape and out.data.dtype == np.uint16
        np.testing.assert_allclose(out.scale, layer.scale)
        np.testing.assert_allclose(out.translate, layer.translate)
        assert tuple(out.contrast_limits) == (200, 2500)
        assert out.colormap.name == layer.colormap.name
    # the inpainting stage keeps the known pixels and fills the holes
    assert np.array_equal(inpainted.data[~mask], data[~mask])
    assert not np.array_equal(inpainted.data[mask], data[mask])
    assert not np.array_equal(restored.data, data)
    exp_restored, exp_inpainted = _expected(data, mask, return_inpainted=True)
    assert np.array_equal(restored.data, exp_restored)
    assert np.array_equal(inpainted.data, exp_inpainted)
    # the input is untouched; the outputs sit just above it, the main result on top
    assert layer.data is data and np.array_equal(data, before)
    i = viewer.layers.index(layer)
    assert list(viewer.layers)[i : i + 3] == [layer, inpainted, restored]
    meta = restored.metadata["napari_wgan_denoise"]
    assert meta["model"] == CASCADE and meta["mask_layer"] == "holes"
    assert meta["output"] == "restored" and meta["settings"]["mask_pixels"] == int(mask.sum())
    assert inpainted.metadata["napari_wgan_denoise"]["output"] == "inpainted"
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_shapes_mask_matches_the_rectangle(make_napari_viewer, qtbot, models):
    viewer = make_napari_viewer()
    data = _image(seed=1)
    layer = viewer.add_image(data, name="img")
    rect = np.array([[10, 12], [10, 30], [25, 30], [25, 12]], float)
    shapes = viewer.add_shapes([rect], shape_type="rectangle", name="scratch")
    widget = _open(viewer)
    widget.layer_picker.set_layer(layer)
    widget.mask_picker.set_layer(shapes)
    assert not widget.add_inpainted.isChecked()

    assert _run(qtbot, widget) == "done"
    assert widget.last_layers == [viewer.layers[f"img restored ({CASCADE})"]]
    assert f"img inpainted ({CASCADE})" not in viewer.layers

    mask = np.asarray(shapes.to_masks((64, 64))).any(axis=0)
    assert mask[11:25, 13:30].all() and not mask[:9].any() and not mask[:, 32:].any()
    assert np.array_equal(widget.last_layer.data, _expected(data, mask))
    # and a different mask would have given a different result
    assert not np.array_equal(widget.last_layer.data, _expected(data, np.zeros_like(mask)))


def test_shapes_on_a_scaled_image_use_world_coordinates(make_napari_viewer, models):
    from napari_wgan_denoise.napari._masks import mask_from_layer

    viewer = make_napari_viewer()
    image = viewer.add_image(_image(), name="img", scale=(0.5, 0.5), translate=(10, 4))
    # drawn in world coordinates (the Shapes layer has no scale): y 10..25, x 12..30 world
    shapes = viewer.add_shapes([[[10, 12], [10, 30], [25, 30], [25, 12]]], shape_type="rectangle")
    mask = mask_from_layer(shapes, image)
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max()) == (0, 30)  # (10 - 10) / 0.5 .. (25 - 10) / 0.5
    assert (cols.min(), cols.max()) == (16, 52)  # (12 - 4) / 0.5 .. (30 - 4) / 0.5


def test_stack_with_a_2d_labels_mask_and_current_slice(make_napari_viewer, qtbot, models):
    viewer = make_napari_viewer()
    data = np.stack([_image(seed=k) for k in range(3)]).astype(np.float32)
    layer = viewer.add_image(data, name="stack")
    holes = np.zeros((64, 64), np.uint8)
    holes[5:15, 40:60] = 1
    viewer.add_labels(holes, name="holes")
    widget = _open(viewer)
    widget.layer_picker.set_layer(layer)
    assert _run(qtbot, widget) == "done"
    full = widget.last_layer
    assert full.data.shape == (3, 64, 64) and full.data.dtype == np.float32
    assert np.array_equal(full.data, _expected(data, holes != 0))

    viewer.dims.set_point(0, 2)
    widget.current_slice.setChecked(True)
    assert _run(qtbot, widget) == "done"
    preview = widget.last_layer
    assert preview.name == f"stack restored ({CASCADE}) (slice 2)"
    assert preview.data.shape == (1, 64, 64)
    np.testing.assert_allclose(preview.data[0], full.data[2], rtol=1e-5, atol=1e-3)


def test_cancel_adds_no_layer(make_napari_viewer, qtbot, models, notifications, monkeypatch):
    from napari_wgan_denoise.napari import _runs

    real = _runs.restore

    def slow_restore(*args, progress=None, cancel=None, **kwargs):
        """The real restore, but waiting after each plane until Cancel is pressed."""

        def on_progress(done, total):
            progress(done, total)
            deadline = time.monotonic() + 20
            while done and not cancel.is_set() and time.monotonic() < deadline:
                time.sleep(0.01)

        return real(*args, progress=on_progress, cancel=cancel, **kwargs)

    monkeypatch.setattr(_runs, "restore", slow_restore)
    viewer = make_napari_viewer()
    data = np.stack([_image(seed=k) for k in range(8)])
    before = data.copy()
    layer = viewer.add_image(data, name="big")
    labels = np.zeros((64, 64), np.uint8)
    labels[3:9, 3:9] = 1
    viewer.add_labels(labels, name="holes")
    widget = _open(viewer)
    widget.layer_picker.set_layer(layer)
    widget.add_inpainted.setChecked(True)
    seen = []

    def on_step(step):
        assert not widget.run_button.isEnabled()
        if step[0] > 0 and not seen:
            assert widget.cancel_button.isEnabled()
            widget.cancel_button.click()
            seen.append(step)

    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT_MS) as blocker:
        worker = widget.run()
        worker.yielded.connect(on_step)
    assert blocker.args[0] == "cancelled" and seen
    assert [lyr.name for lyr in viewer.layers] == ["big", "holes"]
    assert np.array_equal(layer.data, before)
    assert any("cancelled" in msg.lower() for _, msg in notifications)
    assert widget.status.text() == "Cancelled; no layer was added."
    assert widget.run_button.isEnabled() and widget.worker is None


def test_bad_masks_are_reported_and_add_nothing(make_napari_viewer, qtbot, models, notifications):
    viewer = make_napari_viewer()
    data = _image()
    layer = viewer.add_image(data, name="img")
    widget = _open(viewer)

    # a mask painted on a Labels layer of another size
    small = viewer.add_labels(np.ones((40, 40), np.uint8), name="small")
    widget.layer_picker.set_layer(layer)
    widget.mask_picker.set_layer(small)
    assert _run(qtbot, widget) == "error"
    assert "has shape (40, 40)" in widget.status.text()
    assert "(64, 64)" in widget.status.text()
    errors = [m for s, m in notifications if "error" in s.lower()]
    assert any("(40, 40)" in m for m in errors)

    # an empty Labels layer (nothing painted yet) and an empty Shapes layer are errors
    empty = viewer.add_labels(np.zeros((64, 64), np.uint8), name="empty")
    widget.mask_picker.set_layer(empty)
    assert _run(qtbot, widget) == "error"
    assert "Mask layer 'empty' is empty" in widget.status.text()
    no_shapes = viewer.add_shapes(name="no shapes")
    widget.mask_picker.set_layer(no_shapes)
    assert _run(qtbot, widget) == "error"
    assert "is empty" in widget.status.text() and "no shapes" in widget.status.text()

    # a mask over every pixel: the core's error arrives from the worker
    everything = viewer.add_labels(np.ones((64, 64), np.uint8), name="everything")
    widget.mask_picker.set_layer(everything)
    assert _run(qtbot, widget) == "error"
    assert "covers the whole image" in widget.status.text()

    assert [lyr.name for lyr in viewer.layers] == [
        "img",
        "small",
        "empty",
        "no shapes",
        "everything",
    ]
    assert np.array_equal(layer.data, data)
    assert widget.run_button.isEnabled()

    # no mask: deblur + denoise only, nothing is filled
    widget.mask_picker.set_layer(None)
    widget.add_inpainted.setChecked(True)
    assert _run(qtbot, widget) == "done"
    restored, inpainted = widget.last_layers
    assert np.array_equal(inpainted.data, data)
    assert np.array_equal(restored.data, _expected(data, np.zeros((64, 64), bool)))
    assert restored.metadata["napari_wgan_denoise"]["mask_layer"] is None


def test_shipped_cascade_is_offered_for_gray_layers(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(_image(), name="img")
    widget = _open(viewer)
    # the shipped restore models, and none of the shipped denoisers
    assert widget.model_picker.values() == ["fluo-cascade-fast", "fluo-cascade-gradual-fast"]
    assert widget.model_picker.value() == "fluo-cascade-fast"
    assert widget.run_button.isEnabled()
    viewer.add_image(np.zeros((32, 32, 3), np.uint8), name="rgb", rgb=True)
    assert widget.layer_picker.layer().name == "rgb"
    assert widget.model_picker.value() is None and not widget.run_button.isEnabled()


def test_without_restore_models(make_napari_viewer, qtbot, tiny_unet, no_shipped_models):
    save_user_model(tiny_unet, "only-a-denoiser")
    viewer = make_napari_viewer()
    viewer.add_image(_image(), name="img")
    widget = _open(viewer)
    assert widget.model_picker.values() == []
    assert widget.model_picker.value() is None
    assert not widget.run_button.isEnabled()
    assert widget.status.text() == NO_MODEL

    # a model saved later shows up when the list is refreshed (as when it opens)
    save_user_model(_cascade(), CASCADE)
    widget.model_picker.refresh()
    assert widget.model_picker.value() == CASCADE and widget.run_button.isEnabled()


def test_rgb_layers_need_rgb_restore_models(make_napari_viewer, qtbot, models):
    viewer = make_napari_viewer()
    data = np.random.default_rng(0).integers(0, 255, (40, 44, 3), dtype=np.uint8)
    viewer.add_image(data, name="rgb")
    widget = _open(viewer)
    assert widget.layer_picker.layer().rgb
    assert widget.model_picker.values() == [CASCADE]
    assert not widget.model_picker.is_enabled(CASCADE)
    assert not widget.run_button.isEnabled()
    assert "'rgb' is RGB but every installed restore model is gray" in widget.status.text()

    # with an RGB cascade installed, the RGB layer is restored (2-D mask on every colour)
    save_user_model(_cascade(channels=3, seed=1), "tiny-cascade-rgb")
    widget.model_picker.refresh()
    assert widget.model_picker.value() == "tiny-cascade-rgb"
    holes = np.zeros((40, 44), np.uint8)
    holes[4:10, 4:12] = 1
    widget.mask_picker.set_layer(viewer.add_labels(holes, name="holes"))
    widget.add_inpainted.setChecked(True)
    assert _run(qtbot, widget) == "done"
    restored, inpainted = widget.last_layers
    assert restored.rgb and restored.data.shape == data.shape and restored.data.dtype == np.uint8
    assert np.array_equal(inpainted.data[holes == 0], data[holes == 0])


def test_restore_layer_console_api(make_napari_viewer, models):
    from napari_wgan_denoise.napari import restore_layer

    viewer = make_napari_viewer()
    data = _image(seed=3)
    layer = viewer.add_image(data, name="damaged", scale=(2, 2))
    holes = np.zeros((64, 64), np.uint8)
    holes[30:40, 10:20] = 1
    viewer.add_labels(holes, name="holes", scale=(2, 2))

    steps = []
    out = restore_layer(
        "damaged", mask="holes", model=CASCADE, progress=lambda f, m: steps.append(f)
    )
    assert out in viewer.layers and out.name == f"damaged restored ({CASCADE})"
    assert np.array_equal(out.data, _expected(data, holes != 0))
    np.testing.assert_allclose(out.scale, (2, 2))
    assert steps[0] == 0.0 and steps[-1] == 1.0 and steps == sorted(steps)

    # the default model, an array mask, the inpainting-only layer too, not added
    n = len(viewer.layers)
    restored, inpainted = restore_layer(
        layer, holes.astype(bool), return_inpainted=True, add_to_viewer=False
    )
    assert len(viewer.layers) == n
    assert np.array_equal(restored.data, out.data)
    assert inpainted.name == f"damaged inpainted ({CASCADE})"
    assert np.array_equal(inpainted.data[holes == 0], data[holes == 0])

    # a Shapes layer object, no viewer needed
    from napari.layers import Image, Shapes

    shapes = Shapes([[[5, 5], [5, 20], [12, 20], [12, 5]]], shape_type="rectangle")
    alone = restore_layer(Image(data, name="alone"), shapes, model=CASCADE)
    mask = np.asarray(shapes.to_masks((64, 64))).any(axis=0)
    assert np.array_equal(alone.data, _expected(data, mask))

    # errors
    with pytest.raises(ValueError, match="not an inpaint"):
        restore_layer(layer, holes, model="tiny-unet", add_to_viewer=False)
    with pytest.raises(ValueError, match="No layer named 'nope'"):
        restore_layer(layer, "nope")
    with pytest.raises(ValueError, match="has shape"):
        restore_layer(layer, viewer.add_labels(np.ones((8, 8), np.uint8), name="tiny"))
    with pytest.raises(ValueError, match="not a Labels or Shapes layer"):
        restore_layer(layer, layer)
    cancel = __import__("threading").Event()
    cancel.set()
    with pytest.raises(Cancelled, match="Restoring was cancelled"):
        restore_layer(layer, None, model=CASCADE, cancel=cancel)


def test_restore_layer_without_restore_models(make_napari_viewer, no_shipped_models):
    from napari_wgan_denoise.napari import restore_layer

    viewer = make_napari_viewer()
    layer = viewer.add_image(_image(), name="img")
    with pytest.raises(ValueError, match="No restore model installed"):
        restore_layer(layer)


def test_manifest_has_the_restore_widget(make_napari_viewer):
    from npe2 import PluginManager

    make_napari_viewer()
    manifest = PluginManager.instance().get_manifest(PLUGIN)
    names = [w.display_name for w in manifest.contributions.widgets]
    assert RESTORE in names
    commands = {c.id: c.python_name for c in manifest.contributions.commands}
    assert commands["napari-wgan-denoise.restore_widget"].endswith("_restore:RestoreWidget")
