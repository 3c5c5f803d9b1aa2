"""The "Fine-tune on this stack" widget in a real napari viewer (tiny models, few iterations)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari_wgan_denoise import list_models, load_model, save_user_model  # noqa: E402

PLUGIN = "napari-wgan-denoise"
FINETUNE = "Fine-tune on this stack"
TIMEOUT_MS = 60_000
#: Small and quick: 6 iterations of 2 patches of 32 px, validation every 3.
TINY = {"patch_size": 32, "batch_size": 2, "val_every": 3, "seed": 0}


@pytest.fixture
def base(tiny_gray, tiny_unet):
    """A gray base model ``tiny-mse`` and its twin ``tinyft-mse`` (a family once
    ``tinyft-wgan`` exists)."""
    save_user_model(tiny_gray, "tiny-mse", modality="fluo")
    save_user_model(tiny_unet, "tinyft-mse", modality="fluo")
    return "tiny-mse"


def _open(viewer, name=FINETUNE):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def _finetune_widget(viewer, base, *, mode, iterations=6):
    widget = _open(viewer)
    widget.train_options = dict(TINY)
    widget.set_mode(mode)
    assert widget.base_picker.set_value(base)
    widget.iterations.setValue(iterations)
    widget.preview_every.setValue(3)
    return widget


def _run(qtbot, widget, start=None) -> str:
    """Start a run (``widget.run`` by default) and wait for it; returns its outcome."""
    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT_MS) as blocker:
        (start or widget.run)()
    return blocker.args[0]


def _stack(rng, n=4, size=48):
    yy, xx = np.mgrid[:size, :size]
    clean = (1000 + 800 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.float32)
    clean = np.stack([clean] * n)
    noisy = clean + rng.normal(0, 150, clean.shape).astype(np.float32)
    return noisy.astype(np.float32), clean


def test_paired_finetune_preview_picker_refresh_and_apply(make_napari_viewer, qtbot, base, rng):
    viewer = make_napari_viewer()
    noisy, clean = _stack(rng)
    clean_layer = viewer.add_image(clean, name="clean")
    layer = viewer.add_image(noisy, name="noisy", scale=(2.0, 0.5, 0.5))
    denoise = _open(viewer, "Denoise")
    compare = _open(viewer, "Compare ID-MSE vs ID-MSE-WGAN")
    assert "tinyft-wgan" not in denoise.model_picker.values()
    assert "tinyft" not in compare.family_picker.values()  # only tinyft-mse so far

    widget = _finetune_widget(viewer, base, mode="paired")
    assert widget.layer_picker.layer() is layer
    assert widget.run_button.text() == "Fine-tune" and not widget.apply_button.isEnabled()
    assert not widget.run_button.isEnabled()  # paired mode without a clean layer
    widget.clean_picker.set_layer(clean_layer)
    assert widget.run_button.isEnabled()
    widget.save_as.setText("tinyft-wgan")
    viewer.dims.set_point(0, 2 * 2.0)  # plane 2

    steps = []

    def on_step(step):
        assert not widget.run_button.isEnabled() and not widget.apply_button.isEnabled()
        steps.append(step)

    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT_MS) as blocker:
        widget.run().yielded.connect(on_step)
    assert blocker.args[0] == "done"

    # the model is saved, with the paired card, and offered everywhere
    assert "tinyft-wgan" in list_models()
    card = load_model("tinyft-wgan").card
    assert card["finetune"]["mode"] == "paired" and card["finetune"]["iterations_run"] == 6
    assert card["base_model"]["name"] == "tiny-mse"
    assert card["metrics"]["validation_metric"] == "val_psnr"
    assert widget.last_model == "tinyft-wgan"
    assert "tinyft-wgan" in denoise.model_picker.values(enabled_only=True)
    assert "tinyft" in compare.family_picker.values(enabled_only=True)
    assert "tinyft-wgan" in widget.base_picker.values()
    text = widget.result_label.text()
    assert "tinyft-wgan" in text and "validation PSNR" in text and "→" in text

    # live plot: a loss per iteration, the metric at 0, 3 and 6
    assert [it for it, _ in widget.plot.loss] == [1, 2, 3, 4, 5, 6]
    assert [it for it, _ in widget.plot.values] == [0, 3, 6]
    assert widget.plot.metric == "val_psnr"
    assert "iteration 6 / 6" in widget.progress_label.text()

    # the preview of plane 2, updated in place (one layer), placed on that plane
    previews = [lyr for lyr in viewer.layers if lyr.name == "noisy [fine-tune preview]"]
    assert previews == [widget.preview_layer]
    preview = widget.preview_layer
    assert preview.data.shape == (1, 48, 48) and preview.data.dtype == np.float32
    np.testing.assert_allclose(preview.translate, (4.0, 0, 0))
    np.testing.assert_allclose(preview.scale, layer.scale)
    assert viewer.layers.index(preview) == viewer.layers.index(layer) + 1
    assert sum("preview" in info for step in steps for info in step.updates) == 2
    assert widget.layer_picker.layer() is layer  # the preview did not become the input

    # one click applies the new model to the layer
    assert widget.apply_button.isEnabled()
    n = len(viewer.layers)
    assert _run(qtbot, widget, widget.apply_button.click) == "done"
    assert len(viewer.layers) == n + 1
    out = viewer.layers["noisy [tinyft-wgan]"]
    assert out is widget.last_layer and out.data.shape == noisy.shape
    assert out.metadata["napari_wgan_denoise"]["model"] == "tinyft-wgan"
    assert widget.run_button.isEnabled() and widget.apply_button.isEnabled()


def test_two_stage_with_labels_roi_and_reference(make_napari_viewer, qtbot, base, rng):
    viewer = make_napari_viewer()
    noisy, clean = _stack(rng, n=2)
    ref = viewer.add_image(clean[0, :40, :44], name="unpaired clean")
    layer = viewer.add_image(noisy, name="noisy")
    labels = np.zeros((2, 48, 48), np.uint8)
    labels[1, 4:30, 8:40] = 2
    roi = viewer.add_labels(labels, name="roi")
    viewer.layers.selection.active = layer

    widget = _finetune_widget(viewer, base, mode="two-stage")
    assert widget.form.labelForField(widget.clean_picker).text() == "References:"
    assert widget.run_button.isEnabled()  # no clean layer needed
    names = [widget.roi_picker.itemText(i) for i in range(widget.roi_picker.count())]
    assert names == ["(none)", "roi"]  # Labels and Shapes only
    widget.roi_picker.set_layer(roi)
    widget.clean_picker.set_layer(ref)
    widget.preview_every.setValue(0)  # no preview layer

    assert _run(qtbot, widget) == "done"
    card = load_model(widget.last_model).card
    assert widget.last_model.startswith("tiny-mse-ft-two-stage-")
    assert card["finetune"]["data"]["roi_pixels"] == 26 * 32  # max projection of the labels
    assert card["metrics"]["validation_metric"] == "val_mse_to_surrogate"
    assert card["finetune"]["adversarial_weight"] == pytest.approx(1e-3)
    assert [lyr.name for lyr in viewer.layers] == ["unpaired clean", "noisy", "roi"]


def test_n2n_along_an_axis_with_a_shapes_roi(make_napari_viewer, qtbot, base, rng):
    viewer = make_napari_viewer()
    noisy, _ = _stack(rng, n=3)
    frames = np.moveaxis(np.stack([noisy] * 2), 0, 1)  # (3 frames, 2 z, 48, 48)
    frames = frames + rng.normal(0, 100, frames.shape).astype(np.float32)
    layer = viewer.add_image(frames, name="frames", axis_labels=("t", "z", "y", "x"))
    viewer.add_shapes([[[5, 5], [5, 40], [40, 40], [40, 5]]], shape_type="rectangle", name="box")
    viewer.layers.selection.active = layer

    widget = _finetune_widget(viewer, base, mode="n2n")
    assert widget.axis_picker.isEnabled()
    items = [widget.axis_picker.itemText(i) for i in range(widget.axis_picker.count())]
    assert items == ["t: axis 0 (3 frames)", "z: axis 1 (2 frames)"]
    assert widget.axis() == 0
    widget.roi_picker.set_layer(viewer.layers["box"])
    widget.save_as.setText("frames-n2n")

    assert _run(qtbot, widget) == "done"
    card = load_model("frames-n2n").card
    assert card["finetune"]["mode"] == "n2n"
    assert card["metrics"]["validation_metric"] == "val_n2n_mse"
    assert 30 * 30 <= card["finetune"]["data"]["roi_pixels"] <= 37 * 37
    assert card["finetune"]["adversarial_weight"] == 0  # no reference: plain Noise2Noise
    assert widget.preview_layer.data.shape == (1, 1, 48, 48)

    # a 2D layer has no frames axis: Noise2Noise cannot start
    viewer.add_image(noisy[0], name="single")
    widget.layer_picker.set_layer(viewer.layers["single"])
    assert widget.axis() is None and not widget.run_button.isEnabled()
    assert "no stack axis" in widget.status.text()


def test_stop_keeps_the_best_model_so_far(make_napari_viewer, qtbot, base, rng):
    viewer = make_napari_viewer()
    noisy, clean = _stack(rng)
    viewer.add_image(clean, name="clean")
    layer = viewer.add_image(noisy, name="noisy")
    widget = _finetune_widget(viewer, base, mode="paired", iterations=100_000)
    widget.clean_picker.set_layer(viewer.layers["clean"])
    widget.save_as.setText("stopped-early")
    widget.time_limit.setValue(5.0)  # minutes: a safety net, Stop comes first
    clicked = []

    def on_step(step):
        if not clicked and any(info.get("iteration", 0) >= 2 for info in step.updates):
            assert widget.cancel_button.text() == "Stop" and widget.cancel_button.isEnabled()
            widget.cancel_button.click()
            assert widget.status.text().startswith("Stopping")
            clicked.append(True)

    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT_MS) as blocker:
        widget.run().yielded.connect(on_step)
    assert blocker.args[0] == "done" and clicked
    card = load_model("stopped-early").card
    assert card["finetune"]["stopped"] == "cancelled"
    assert 2 <= card["finetune"]["iterations_run"] < 100_000
    assert "stopped (cancelled)" in widget.result_label.text()
    assert widget.run_button.isEnabled() and widget.worker is None

    # the viewer and the widget stay usable: apply the stopped model to the current slice
    widget.current_slice.setChecked(True)
    assert _run(qtbot, widget, widget.apply) == "done"
    assert widget.last_layer.data.shape == (1, 48, 48)
    assert layer in viewer.layers


def test_bad_inputs_are_reported_and_add_nothing(
    make_napari_viewer, qtbot, base, notifications, rng
):
    viewer = make_napari_viewer()
    noisy, clean = _stack(rng, n=2)
    viewer.add_image(noisy, name="noisy")
    widget = _finetune_widget(viewer, base, mode="paired")
    models = list_models()

    # paired without a clean layer
    assert _run(qtbot, widget) == "error"
    assert any("clean version" in m for s, m in notifications if "error" in s.lower())

    # an ROI painted on a layer of another size
    viewer.add_labels(np.ones((40, 40), np.uint8), name="small roi")
    widget.set_mode("two-stage")
    widget.roi_picker.set_layer(viewer.layers["small roi"])
    assert _run(qtbot, widget) == "error"
    assert "40 x 40" in widget.status.text() and "48 x 48" in widget.status.text()

    # a clean layer of another shape, and an empty shapes ROI
    viewer.add_image(clean[:1], name="wrong clean")
    widget.layer_picker.set_layer(viewer.layers["noisy"])  # the picker followed the new layer
    widget.set_mode("paired")
    widget.roi_picker.set_layer(None)
    widget.clean_picker.set_layer(viewer.layers["wrong clean"])
    assert _run(qtbot, widget) == "error"
    assert "has shape (1, 48, 48)" in widget.status.text()
    viewer.add_shapes(name="empty")
    widget.set_mode("two-stage")
    widget.roi_picker.set_layer(viewer.layers["empty"])
    assert _run(qtbot, widget) == "error"
    assert "has no shapes" in widget.status.text()

    # an error from the core (too small to fine-tune on) arrives from the worker
    viewer.add_image(noisy[:, :20, :20], name="tiny")
    widget.layer_picker.set_layer(viewer.layers["tiny"])
    widget.roi_picker.set_layer(None)
    assert _run(qtbot, widget) == "error"
    assert "too small" in widget.status.text()

    assert list_models() == models  # nothing was saved
    assert [lyr.name for lyr in viewer.layers] == [
        "noisy",
        "small roi",
        "wrong clean",
        "empty",
        "tiny",
    ]
    assert widget.run_button.isEnabled() and not widget.apply_button.isEnabled()


def test_manifest_has_the_finetune_widget(make_napari_viewer):
    from npe2 import PluginManager

    make_napari_viewer()
    manifest = PluginManager.instance().get_manifest(PLUGIN)
    names = [w.display_name for w in manifest.contributions.widgets]
    assert FINETUNE in names


def test_length_left_at_the_default_is_the_runs_own(make_napari_viewer, qtbot, rng):
    """The iterations box left at the mode's default hands the length to the run, as the
    CLI and the API do (the run takes the length of the loss it ends up with: on
    correlated noise, recorrupted pairs at the measured correlation, 300). A length the
    user typed is kept as typed."""
    from scipy import ndimage

    from napari_wgan_denoise.training.finetune.selfsupervised import SS_ITERATIONS

    viewer = make_napari_viewer()
    yy, xx = np.mgrid[:96, :96]
    clean = 20 * (60 + 40 * np.sin(xx / 9.0) * np.cos(yy / 11.0) + 0.2 * xx)
    noise = rng.normal(0, 150, (5, 96, 96))
    noisy = clean + np.stack([ndimage.uniform_filter(w, 3) * 3 for w in noise])
    viewer.add_image(noisy.astype(np.float32), name="noisy")
    widget = _open(viewer)
    widget.train_options = {"patch_size": 32, "batch_size": 2, "seed": 0}
    widget.set_mode("self-supervised")
    assert widget.base_picker.set_value("fluo-mse-fast")
    assert widget.iterations.value() == SS_ITERATIONS["recorrupted"]
    options = widget.make_job().options
    assert options["iterations"] is None and options["preview_every"] is None

    # an explicit loss shows its own default; a typed length and preview interval stay
    widget.ss_loss_picker.setCurrentIndex(widget.ss_loss_picker.findData("neighbor2neighbor"))
    assert widget.iterations.value() == SS_ITERATIONS["neighbor2neighbor"]
    widget.iterations.setValue(40)
    assert widget.make_job().options["iterations"] == 40
    widget.preview_every.setValue(7)
    assert widget.make_job().options["preview_every"] == 7

    widget.ss_loss_picker.setCurrentIndex(widget.ss_loss_picker.findData(None))
    widget.iterations.setValue(SS_ITERATIONS["recorrupted"])
    widget._on_mode_changed()  # the box is at the mode's default again
    widget.preview_every.setValue(0)  # no preview: quicker
    widget.time_limit.setValue(0.05)  # 3 s
    widget.save_as.setText("the-runs-own")
    totals = []
    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT_MS) as blocker:
        widget.run().yielded.connect(
            lambda step: totals.extend(i["total"] for i in step.updates if "total" in i)
        )
    assert blocker.args[0] == "done"
    assert "correlated" in widget.noise_message.lower()
    assert totals and set(totals) == {SS_ITERATIONS["recorrupted"]}
    assert widget.plot.total == SS_ITERATIONS["recorrupted"]
    assert f"/ {SS_ITERATIONS['recorrupted']}" in widget.progress_label.text()
