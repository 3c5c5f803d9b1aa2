"""The Denoise and Compare widgets and the one-click action, in a real napari viewer."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari_wgan_denoise import load_model, save_user_model  # noqa: E402
from napari_wgan_denoise.napari._viewer import grid_of  # noqa: E402

PLUGIN = "napari-wgan-denoise"
DENOISE = "Denoise"
COMPARE = "Compare ID-MSE vs ID-MSE-WGAN"
TIMEOUT_MS = 60_000


@pytest.fixture
def models(tiny_gray, tiny_unet, tiny_rgb):
    """Two gray twins (family ``tiny``) and two RGB twins (family ``tinyrgb``)."""
    save_user_model(tiny_gray, "tiny-mse", modality="fluo")
    save_user_model(tiny_unet, "tiny-wgan", modality="fluo")
    save_user_model(tiny_rgb, "tinyrgb-mse", modality="cells")
    save_user_model(tiny_rgb, "tinyrgb-wgan", modality="cells")
    return ["tiny-mse", "tiny-wgan", "tinyrgb-mse", "tinyrgb-wgan"]


def _open(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def _run(qtbot, widget) -> str:
    """Start a run and wait for it; returns "done", "cancelled" or "error"."""
    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT_MS) as blocker:
        widget.run()
    return blocker.args[0]


def _uint16_image(rng, shape):
    yy, xx = np.mgrid[: shape[-2], : shape[-1]]
    base = 1000 + 800 * np.sin(xx / 6.0) * np.cos(yy / 9.0)
    return np.clip(base + rng.normal(0, 150, shape), 0, 65535).astype(np.uint16)


def test_denoise_widget_2d_uint16(make_napari_viewer, qtbot, models, rng):
    viewer = make_napari_viewer()
    data = _uint16_image(rng, (64, 64))
    layer = viewer.add_image(
        data,
        name="img",
        scale=(0.5, 0.25),
        translate=(10.0, -3.0),
        rotate=15,
        contrast_limits=(200, 2500),
    )
    widget = _open(viewer, DENOISE)
    assert widget.layer_picker.layer() is layer
    assert widget.device_picker.itemData(0) == "auto"
    assert widget.device_picker.itemText(0).startswith("auto (")  # what auto resolves to
    assert widget.model_picker.set_value("tiny-mse")
    widget.tile_size.setValue(64)

    assert _run(qtbot, widget) == "done"

    out = viewer.layers["img [tiny-mse]"]
    assert out is widget.last_layer
    assert out.data.shape == data.shape and out.data.dtype == np.uint16
    assert not np.array_equal(out.data, data)
    np.testing.assert_allclose(out.scale, layer.scale)
    np.testing.assert_allclose(out.translate, layer.translate)
    np.testing.assert_allclose(out.rotate, layer.rotate)
    np.testing.assert_allclose(out.affine.affine_matrix, layer.affine.affine_matrix)
    assert tuple(out.contrast_limits) == (200, 2500)
    meta = out.metadata["napari_wgan_denoise"]
    assert meta["model"] == "tiny-mse"
    assert meta["card_hash"] == load_model("tiny-mse").card_hash
    assert meta["settings"]["tile_size"] == 64
    assert meta["settings"]["device"] == "auto" and meta["settings"]["current_slice"] is False
    # the new layer sits just above its input; Run is available again
    assert viewer.layers.index(out) == viewer.layers.index(layer) + 1
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()

    # a second run reuses the cached model instead of reading the file again
    loads = widget.cache.loads
    assert _run(qtbot, widget) == "done"
    assert widget.cache.loads == loads


def test_denoise_widget_stack_and_current_slice(make_napari_viewer, qtbot, models, rng):
    viewer = make_napari_viewer()
    data = rng.normal(100, 10, (3, 48, 48)).astype(np.float32)
    layer = viewer.add_image(data, name="stack", scale=(2.0, 0.5, 0.5), translate=(5, 0, 0))
    widget = _open(viewer, DENOISE)
    widget.model_picker.set_value("tiny-wgan")

    assert _run(qtbot, widget) == "done"
    full = viewer.layers["stack [tiny-wgan]"]
    assert full.data.shape == (3, 48, 48) and full.data.dtype == np.float32

    viewer.dims.set_point(0, 5 + 2 * 2.0)  # world position of plane 2
    widget.current_slice.setChecked(True)
    assert _run(qtbot, widget) == "done"
    preview = widget.last_layer
    assert preview.name == "stack [tiny-wgan] (slice 2)"
    assert preview.data.shape == (1, 48, 48)
    np.testing.assert_allclose(preview.translate, (9.0, 0, 0))  # placed on plane 2
    np.testing.assert_allclose(preview.scale, layer.scale)
    meta = preview.metadata["napari_wgan_denoise"]["settings"]
    assert meta["current_slice"] is True and meta["slice"] == [2]
    # the preview equals plane 2 of the full run (denoising is per plane)
    np.testing.assert_allclose(preview.data[0], full.data[2], rtol=1e-5, atol=1e-3)


def test_rgb_layer_greys_out_gray_models(make_napari_viewer, qtbot, models, rng, no_shipped_models):
    viewer = make_napari_viewer()
    gray = viewer.add_image(rng.integers(0, 255, (40, 40), dtype=np.uint8), name="gray")
    rgb = viewer.add_image(rng.integers(0, 255, (40, 44, 3), dtype=np.uint8), name="rgb")
    assert rgb.rgb
    widget = _open(viewer, DENOISE)
    assert widget.layer_picker.layer() is rgb
    assert not widget.model_picker.is_enabled("tiny-mse")
    assert widget.model_picker.is_enabled("tinyrgb-wgan")
    assert widget.model_picker.value() == "tinyrgb-mse"  # no preferred name: first that fits
    labels = [widget.model_picker.itemText(i) for i in range(widget.model_picker.count())]
    assert any("cells" in t and "RGB" in t and "params" in t for t in labels)
    assert not widget.model_picker.set_value("tiny-mse")  # greyed out: cannot be picked

    assert _run(qtbot, widget) == "done"
    out = widget.last_layer
    assert out.rgb and out.data.shape == (40, 44, 3) and out.data.dtype == np.uint8

    widget.layer_picker.set_layer(gray)
    assert widget.model_picker.is_enabled("tiny-mse")
    assert not widget.model_picker.is_enabled("tinyrgb-mse")
    assert widget.model_picker.value() in ("tiny-mse", "tiny-wgan")


def test_layer_picker_follows_layer_list(make_napari_viewer, models, rng):
    viewer = make_napari_viewer()
    widget = _open(viewer, DENOISE)
    assert widget.layer_picker.layer() is None and not widget.run_button.isEnabled()
    a = viewer.add_image(rng.random((32, 32)), name="a")
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="labels")
    b = viewer.add_image(rng.random((32, 32)), name="b")
    names = [widget.layer_picker.itemText(i) for i in range(widget.layer_picker.count())]
    assert names == ["b", "a"]  # image layers only, top first
    assert widget.run_button.isEnabled()
    viewer.layers.selection.active = a
    assert widget.layer_picker.layer() is a
    a.name = "renamed"
    assert "renamed" in [widget.layer_picker.itemText(i) for i in range(2)]
    assert widget.layer_picker.layer() is a
    viewer.layers.remove(a)
    assert widget.layer_picker.layer() is b
    assert widget.layer_picker.count() == 1


def test_cancel_mid_run_adds_no_layer(make_napari_viewer, qtbot, models, notifications, rng):
    from napari.utils import progress

    viewer = make_napari_viewer()
    viewer.add_image(rng.normal(0, 1, (16, 128, 128)).astype(np.float32), name="big")
    widget = _open(viewer, DENOISE)
    widget.model_picker.set_value("tiny-mse")
    widget.tile_size.setValue(64)
    widget.batch_size = 1  # hundreds of small batches: time to cancel
    seen = []

    def on_step(step):
        assert not widget.run_button.isEnabled()  # Run is disabled while busy
        if widget.worker is not None:  # progress goes to a napari progress bar
            assert widget._pbar in progress._all_instances
        if step[0] > 0 and not seen:
            assert widget.cancel_button.isEnabled()
            widget.cancel_button.click()
            assert not widget.cancel_button.isEnabled()
            seen.append(step)

    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT_MS) as blocker:
        worker = widget.run()
        worker.yielded.connect(on_step)
    assert blocker.args[0] == "cancelled"
    assert seen
    assert [lyr.name for lyr in viewer.layers] == ["big"]
    assert any("cancel" in msg.lower() for _, msg in notifications)
    assert widget.run_button.isEnabled() and widget.worker is None

    # the viewer and the widget stay usable
    small = viewer.add_image(rng.random((32, 32)).astype(np.float32), name="small")
    widget.layer_picker.set_layer(small)
    widget.batch_size = None
    assert _run(qtbot, widget) == "done"
    assert viewer.layers[-1].name == "small [tiny-mse]"


def test_core_errors_become_notifications(make_napari_viewer, qtbot, models, notifications):
    viewer = make_napari_viewer()
    data = np.ones((32, 32), np.float32)
    data[3, 4] = np.nan
    viewer.add_image(data, name="nan")
    widget = _open(viewer, DENOISE)
    widget.model_picker.set_value("tiny-mse")
    assert _run(qtbot, widget) == "error"
    assert [lyr.name for lyr in viewer.layers] == ["nan"]
    errors = [msg for sev, msg in notifications if "error" in sev.lower()]
    assert any("NaN" in msg for msg in errors)
    assert widget.run_button.isEnabled()

    # an explicit device this machine lacks is reported too, before anything runs
    viewer.layers["nan"].data = np.ones((32, 32), np.float32)
    widget.device_picker.addItem("cuda:7")
    widget.device_picker.setCurrentText("cuda:7")
    assert _run(qtbot, widget) == "error"
    assert any("cuda:7" in msg for _, msg in notifications)


def test_current_slice_outside_layer_is_reported(make_napari_viewer, qtbot, models, rng):
    viewer = make_napari_viewer()
    viewer.add_image(rng.random((5, 32, 32)), name="long")
    short = viewer.add_image(rng.random((2, 32, 32)), name="short")
    viewer.dims.set_point(0, 4)
    widget = _open(viewer, DENOISE)
    widget.layer_picker.set_layer(short)
    widget.model_picker.set_value("tiny-mse")
    widget.current_slice.setChecked(True)
    assert _run(qtbot, widget) == "error"
    assert "outside layer 'short'" in widget.status.text()
    assert len(viewer.layers) == 2


def test_compare_widget_adds_three_layers_grid_and_metrics(
    make_napari_viewer, qtbot, models, rng, no_shipped_models
):
    viewer = make_napari_viewer()
    clean = _uint16_image(np.random.default_rng(1), (64, 64))
    noisy = np.clip(clean + rng.normal(0, 200, clean.shape), 0, 65535).astype(np.uint16)
    ref = viewer.add_image(clean, name="clean")
    layer = viewer.add_image(noisy, name="noisy", scale=(0.3, 0.3))
    widget = _open(viewer, COMPARE)
    assert widget.layer_picker.layer() is layer
    assert widget.family_picker.values(enabled_only=True) == ["tiny"]
    assert widget.family_picker.value() == "tiny"
    widget.reference_picker.set_layer(ref)

    assert _run(qtbot, widget) == "done"
    mse, wgan, diff = widget.last_layers
    assert [mse.name, wgan.name] == ["noisy MSE [tiny-mse]", "noisy WGAN [tiny-wgan]"]
    assert "|MSE − WGAN|" in diff.name
    assert len(viewer.layers) == 5
    for out in (mse, wgan):
        assert out.data.shape == noisy.shape and out.data.dtype == np.uint16
        np.testing.assert_allclose(out.scale, layer.scale)
    assert diff.data.shape == noisy.shape and diff.data.dtype == np.float32
    np.testing.assert_allclose(
        diff.data, np.abs(mse.data.astype(np.float32) - wgan.data.astype(np.float32))
    )
    assert grid_of(viewer).enabled
    # input and outputs are neighbours in the layer list (and so in the grid)
    i = viewer.layers.index(layer)
    assert list(viewer.layers)[i : i + 4] == [layer, mse, wgan, diff]
    # contrast limits are linked
    layer.contrast_limits = (300, 1700)
    assert tuple(mse.contrast_limits) == tuple(wgan.contrast_limits) == (300, 1700)
    # the metrics table: input + both models x readout (whiteness, grad corr) and PSNR,
    # SSIM, gradient ratio
    assert widget.table.isVisibleTo(widget)
    # (rows: input, ideal = noisy − reference, the two models)
    assert widget.table.rowCount() == 4 and widget.table.columnCount() == 5
    assert set(widget.last_readout) == {"ideal", "tiny-mse", "tiny-wgan"}
    assert widget.table.item(0, 0).text() == "–"  # no readout for the input itself
    assert widget.table.item(1, 2).text() == "–"  # no PSNR for the ideal residual
    assert set(widget.last_metrics) == {"input", "tiny-mse", "tiny-wgan"}
    for values in widget.last_metrics.values():
        assert np.isfinite(values["psnr"]) and -1 <= values["ssim"] <= 1
        assert values["grad_ratio"] > 0
    assert float(widget.table.item(2, 2).text().rstrip(" ▼")) == pytest.approx(
        widget.last_metrics["tiny-mse"]["psnr"], abs=0.01
    )
    assert float(widget.table.item(2, 0).text()) == pytest.approx(
        widget.last_readout["tiny-mse"]["whiteness"], abs=0.001
    )


def test_compare_widget_current_slice_of_rgb_stack(
    make_napari_viewer, qtbot, models, rng, no_shipped_models
):
    viewer = make_napari_viewer()
    data = rng.integers(0, 255, (3, 40, 40, 3), dtype=np.uint8)
    layer = viewer.add_image(data, name="rgbstack", rgb=True)
    viewer.dims.set_point(0, 1)
    widget = _open(viewer, COMPARE)
    assert widget.family_picker.value() == "tinyrgb"
    assert not widget.family_picker.is_enabled("tiny")
    widget.current_slice.setChecked(True)
    assert _run(qtbot, widget) == "done"
    mse, wgan, diff = widget.last_layers
    assert mse.data.shape == wgan.data.shape == (1, 40, 40, 3) and mse.rgb
    assert diff.data.shape == (1, 40, 40) and not diff.rgb
    np.testing.assert_allclose(mse.translate, (1, 0, 0))
    assert mse.name.endswith("(slice 1)")
    # no reference: the table shows only the readout of both models
    assert widget.table.isVisibleTo(widget) and widget.table.rowCount() == 2
    assert widget.last_metrics is None and set(widget.last_readout) == {
        "tinyrgb-mse",
        "tinyrgb-wgan",
    }
    assert [widget.table.isColumnHidden(c) for c in range(5)] == [False, False, True, True, True]
    assert widget.last_method_noise_layers == []
    assert grid_of(viewer).enabled and layer in viewer.layers


def test_compare_widget_without_family(make_napari_viewer, tiny_gray, rng, no_shipped_models):
    save_user_model(tiny_gray, "lonely-mse")
    viewer = make_napari_viewer()
    viewer.add_image(rng.random((32, 32)), name="x")
    widget = _open(viewer, COMPARE)
    assert widget.family_picker.value() is None
    assert not widget.run_button.isEnabled()
    assert "-mse and a -wgan" in widget.status.text()


def test_widgets_preselect_the_default_model_and_family(
    make_napari_viewer, tiny_gray, tiny_rgb, no_shipped_models
):
    for name in ("gray-mse", "gray-wgan", "fluo-mse-fast", "fluo-wgan-fast"):
        save_user_model(tiny_gray, name)
    save_user_model(tiny_rgb, "cells-wgan-fast")
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.uint8), name="gray")
    denoise = _open(viewer, DENOISE)
    assert denoise.model_picker.value() == "fluo-wgan-fast"
    assert _open(viewer, COMPARE).family_picker.value() == "fluo-fast"
    # a new RGB layer is selected; the picker follows and swaps to the default RGB model
    viewer.add_image(np.zeros((32, 32, 3), np.uint8), name="rgb")
    assert denoise.layer_picker.layer().name == "rgb"
    assert denoise.model_picker.value() == "cells-wgan-fast"


def test_one_click_action_uses_default_model(
    make_napari_viewer, qtbot, tiny_gray, rng, no_shipped_models
):
    from napari._app_model import get_app_model

    from napari_wgan_denoise.napari import _actions

    save_user_model(tiny_gray, "other-mse")
    save_user_model(tiny_gray, "fluo-wgan-fast", modality="fluo")
    viewer = make_napari_viewer()
    layer = viewer.add_image(_uint16_image(rng, (48, 48)), name="cells", scale=(2, 2))
    get_app_model().commands.execute_command("napari-wgan-denoise.denoise_selected_layer")
    qtbot.waitUntil(lambda: len(viewer.layers) == 2 and not _actions.RUNNING, timeout=TIMEOUT_MS)
    out = viewer.layers["cells [fluo-wgan-fast]"]
    assert out.data.dtype == np.uint16 and out.data.shape == layer.data.shape
    np.testing.assert_allclose(out.scale, (2, 2))
    assert out.metadata["napari_wgan_denoise"]["model"] == "fluo-wgan-fast"


def test_one_click_action_without_models(make_napari_viewer, notifications, rng, no_shipped_models):
    from napari_wgan_denoise.napari._actions import start_default_denoise

    viewer = make_napari_viewer()
    viewer.add_image(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), name="rgb")
    assert start_default_denoise(viewer) is None
    assert len(viewer.layers) == 1
    assert any("No denoising model for RGB images is installed" in m for _, m in notifications)


def test_manifest_contributions(make_napari_viewer):
    from napari._app_model import get_app_model
    from npe2 import PluginManager

    make_napari_viewer()
    manifest = PluginManager.instance().get_manifest(PLUGIN)
    assert [w.display_name for w in manifest.contributions.widgets] == [
        DENOISE,
        COMPARE,
        "Fine-tune on this stack",
        "Restore (inpaint + deblur + denoise)",
    ]
    assert {s.key for s in manifest.contributions.sample_data} == {"fluorescence", "cells"}
    items = get_app_model().menus.get_menu("napari/layers/filter")
    ids = [item.command.id for item in items if hasattr(item, "command")]
    assert "napari-wgan-denoise.denoise_selected_layer" in ids
