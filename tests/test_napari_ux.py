"""The widgets as a first-time user meets them (issue 16), in a real napari viewer with the
shipped models: closing a dock stops its job, the docks fit a laptop screen, messages and
labels say the right thing."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari_wgan_denoise import list_models  # noqa: E402

TIMEOUT_MS = 60_000


def _dock(viewer, cls, name):
    """A widget docked the way napari docks plugin widgets; returns (dock, widget)."""
    widget = cls(viewer)
    dock = viewer.window.add_dock_widget(widget, name=name)
    return dock, widget


def _stack(rng, n=4, size=64, sigma=0.1):
    yy, xx = np.mgrid[:size, :size]
    clean = (0.5 + 0.3 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.float32)
    clean = np.stack([clean] * n)
    noisy = clean + rng.normal(0, sigma, clean.shape).astype(np.float32)
    return noisy.astype(np.float32), clean


def test_closing_the_denoise_dock_mid_run_stops_it_and_adds_nothing(make_napari_viewer, qtbot, rng):
    from napari_wgan_denoise.napari._denoise import DenoiseWidget

    viewer = make_napari_viewer()
    viewer.add_image(_stack(rng, n=6, size=256)[0], name="noisy")
    dock, widget = _dock(viewer, DenoiseWidget, "Denoise")
    assert widget.model_picker.set_value("gray-mse-fast")
    widget.tile_size.setValue(96)
    widget.batch_size = 1  # many small steps: the run is surely still going when closed
    seen = []

    def on_step(step):
        if not seen and 0.0 < step.fraction < 0.5:
            seen.append(step.fraction)
            dock.title.close_button.click()  # the dock's ×: napari's remove_dock_widget

    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT_MS) as blocker:
        widget.run().yielded.connect(on_step)
    assert seen, "the run ended before the dock could be closed"
    assert widget.closed.is_set() and widget.parent() is None
    assert blocker.args[0] == "cancelled"
    qtbot.wait(50)
    assert [lyr.name for lyr in viewer.layers] == ["noisy"]
    assert "Denoise" not in viewer.window.dock_widgets


def test_removing_the_finetune_dock_mid_run_saves_nothing(make_napari_viewer, qtbot, rng):
    from napari_wgan_denoise.napari._finetune import FinetuneWidget

    viewer = make_napari_viewer()
    noisy, clean = _stack(rng, n=4, size=64)
    viewer.add_image(clean, name="clean")
    viewer.add_image(noisy, name="noisy")
    dock, widget = _dock(viewer, FinetuneWidget, "Fine-tune")
    widget.train_options = {"patch_size": 32, "batch_size": 2, "val_every": 2, "seed": 0}
    widget.set_mode("paired")
    widget.clean_picker.set_layer(viewer.layers["clean"])
    assert widget.base_picker.set_value("gray-mse-fast")
    widget.iterations.setValue(100_000)
    widget.time_limit.setValue(5.0)  # minutes: a safety net, the removal comes first
    widget.preview_every.setValue(1)
    widget.save_as.setText("closed-mid-run")
    models = list_models()
    at_removal: dict = {}

    def on_step(step):
        if not at_removal and any(info.get("iteration", 0) >= 2 for info in step.updates):
            viewer.window.remove_dock_widget(widget)
            preview = widget.preview_layer
            at_removal["layers"] = [lyr.name for lyr in viewer.layers]
            at_removal["preview"] = None if preview is None else np.array(preview.data)

    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT_MS) as blocker:
        widget.run().yielded.connect(on_step)
    assert at_removal, "the run ended before the dock was removed"
    assert blocker.args[0] == "cancelled"
    qtbot.wait(50)
    assert "closed-mid-run" not in list_models() and list_models() == models
    assert [lyr.name for lyr in viewer.layers] == at_removal["layers"]
    if at_removal["preview"] is not None:  # the preview was not updated after the removal
        np.testing.assert_array_equal(widget.preview_layer.data, at_removal["preview"])
    assert widget.last_model is None


def test_the_four_docks_fit_a_laptop_screen(make_napari_viewer):
    from napari_wgan_denoise.napari._compare import CompareWidget
    from napari_wgan_denoise.napari._denoise import DenoiseWidget
    from napari_wgan_denoise.napari._finetune import FinetuneWidget
    from napari_wgan_denoise.napari._restore import RestoreWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 64, 64), np.float32), name="x")
    classes = (DenoiseWidget, CompareWidget, FinetuneWidget, RestoreWidget)
    docks = [_dock(viewer, cls, cls.__name__) for cls in classes]
    heights = [dock.minimumSizeHint().height() for dock, _ in docks]
    assert sum(heights) <= 1000, heights
    for dock, widget in docks:
        # the form scrolls; Run stays below it, in view
        assert widget.run_button.isVisibleTo(dock)
        assert not widget.advanced.is_open()
        assert not widget.device_picker.isVisibleTo(widget)
        widget.advanced.set_open(True)
        assert widget.device_picker.isVisibleTo(widget)


def test_paired_finetune_names_gray_and_rgb_the_right_way_round(make_napari_viewer, rng):
    from napari_wgan_denoise.napari._jobs import prepare_finetune

    viewer = make_napari_viewer()
    gray = viewer.add_image(rng.random((32, 32)).astype(np.float32), name="gray noisy")
    rgb = viewer.add_image(rng.random((32, 32, 3)).astype(np.float32), name="rgb clean")
    with pytest.raises(ValueError, match="Layer 'rgb clean' is RGB but 'gray noisy' is gray"):
        prepare_finetune(gray, mode="paired", base="gray-mse-fast", name="x", other=rgb)
    with pytest.raises(ValueError, match="Layer 'gray noisy' is gray but 'rgb clean' is RGB"):
        prepare_finetune(rgb, mode="paired", base="cells-mse-fast", name="x", other=gray)


def test_short_default_finetune_names_and_device_label(make_napari_viewer):
    from napari_wgan_denoise.inference import resolve_device
    from napari_wgan_denoise.napari._choices import unique_model_name
    from napari_wgan_denoise.napari._denoise import DenoiseWidget

    assert unique_model_name("gray-mse-fast-ft-paired") == "gray-mse-fast-ft-paired-1"
    viewer = make_napari_viewer()
    widget = DenoiseWidget(viewer)
    assert widget.device_picker.itemText(0).startswith("auto (")
    assert resolve_device("auto").type in widget.device_picker.itemText(0)
    assert widget.device() == "auto" and widget.options().device == "auto"


def _run_recording(qtbot, widget, on_step=None):
    """Run ``widget`` to the end; returns (outcome, the Progress events it yielded)."""
    steps = []

    def record(step):
        steps.append(step)
        if on_step is not None:
            on_step(step)

    widget.progressed.connect(record)  # before the start: the first events included
    try:
        with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT_MS) as blocker:
            widget.run()
    finally:
        widget.progressed.disconnect(record)
    return blocker.args[0], steps


def test_restore_cancels_inside_a_one_tile_plane_within_2_s(make_napari_viewer, qtbot, rng):
    import time

    from napari_wgan_denoise.napari._restore import RestoreWidget

    viewer = make_napari_viewer()
    viewer.add_image(_stack(rng, n=3, size=256)[0], name="damaged")
    _, widget = _dock(viewer, RestoreWidget, "Restore")
    assert widget.model_picker.value() == "fluo-cascade-fast"
    assert widget.tile_size.value() == 0  # auto: each 256 x 256 plane is one tile
    clicked = {}

    def on_step(step):
        if not clicked and 0.0 < step.fraction < 1 / 3:  # inside the first plane's tile
            clicked["at"], clicked["fraction"] = time.perf_counter(), step.fraction
            widget.cancel_button.click()

    outcome, steps = _run_recording(qtbot, widget, on_step)
    elapsed = time.perf_counter() - clicked["at"]
    assert outcome == "cancelled" and elapsed < 2.0, elapsed
    assert "plane 1/3, tile 1/1" in steps[-1].message  # stopped within the first tile
    assert [lyr.name for lyr in viewer.layers] == ["damaged"]


def test_progress_names_planes_and_tiles_and_moves_within_a_tile(make_napari_viewer, qtbot, rng):
    from napari_wgan_denoise.napari._denoise import DenoiseWidget

    viewer = make_napari_viewer()
    viewer.add_image(_stack(rng, n=3, size=64)[0], name="stack")
    _, widget = _dock(viewer, DenoiseWidget, "Denoise")
    assert widget.model_picker.set_value("gray-mse-fast")
    outcome, steps = _run_recording(qtbot, widget)
    assert outcome == "done"
    messages = [s.message for s in steps]
    for plane in (1, 2, 3):
        assert any(f"plane {plane}/3, tile 1/1" in m for m in messages), messages
    # each plane is one tile, yet the fraction moves inside it. The widget shows the newest
    # of the reports that arrived since its last update, so on a busy machine the reports
    # inside one small tile can arrive together: the core's reports are checked as well
    # (test_denoise.py::test_progress_moves_inside_a_one_tile_plane)
    assert any(0.0 < s.fraction < 1.0 and s.fraction * 3 % 1 for s in steps), steps
    assert "5/1000" not in widget.status.text()


def test_small_tiles_are_warned_about(make_napari_viewer, qtbot, rng, notifications):
    from napari_wgan_denoise.napari._denoise import DenoiseWidget

    viewer = make_napari_viewer()
    viewer.add_image(_stack(rng, n=1, size=128)[0][0], name="plane")
    _, widget = _dock(viewer, DenoiseWidget, "Denoise")
    assert widget.model_picker.set_value("gray-mse-fast")
    widget.tile_size.setValue(0)
    outcome, _ = _run_recording(qtbot, widget)
    assert outcome == "done" and not widget.warning_label.isVisibleTo(widget)
    widget.tile_size.setValue(32)
    outcome, steps = _run_recording(qtbot, widget)
    assert outcome == "done"
    warned = [s.warning for s in steps if s.warning]
    assert len(warned) == 1 and "Tile size 32 px is small" in warned[0]
    assert "Tile size 32 px is small" in widget.warning_label.text()
    assert widget.warning_label.isVisibleTo(widget)
    assert any("Tile size 32 px" in m for s, m in notifications if "warning" in s.lower())


def _gray_image(rng, sigma, size=128):
    yy, xx = np.mgrid[:size, :size]
    clean = 128 + 60 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    return np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255).astype(np.uint8)


def test_noise_outside_the_models_training_is_warned_about(
    make_napari_viewer, qtbot, rng, notifications
):
    from napari_wgan_denoise.napari._denoise import DenoiseWidget

    viewer = make_napari_viewer()
    viewer.add_image(_gray_image(rng, 25), name="sigma 25")  # gray-mse-fast: sigma 0-55
    _, widget = _dock(viewer, DenoiseWidget, "Denoise")
    assert widget.model_picker.set_value("gray-mse-fast")
    outcome, steps = _run_recording(qtbot, widget)
    assert outcome == "done" and not any(s.warning for s in steps)
    assert widget.warning_label.text() == ""

    viewer.add_image(_gray_image(rng, 200), name="sigma 200")
    widget.layer_picker.set_layer(viewer.layers["sigma 200"])
    assert widget.model_picker.set_value("gray-mse-fast")
    outcome, steps = _run_recording(qtbot, widget)
    assert outcome == "done"
    assert "noisier than gray-mse-fast was trained for" in widget.warning_label.text()
    assert any("noisier than gray-mse-fast" in m for s, m in notifications)


def test_model_tooltips_show_the_card(make_napari_viewer):
    from napari_wgan_denoise.napari._denoise import DenoiseWidget
    from napari_wgan_denoise.napari._restore import RestoreWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="x")
    for widget in (DenoiseWidget(viewer), RestoreWidget(viewer)):
        picker = widget.model_picker
        tips = {
            picker.itemData(row, 256): picker.itemData(row, 3)  # UserRole, ToolTipRole
            for row in range(picker.count())
        }
        assert tips
        for name, tip in tips.items():
            for what in ("training noise:", "data:", "iterations:", "validation metrics:"):
                assert what in tip, (name, tip)
            assert "dB" in tip, tip
    fluo = DenoiseWidget(viewer)
    assert fluo.model_picker.set_value("fluo-wgan-fast")
    assert "poisson-gaussian:peak=2-1000" in fluo.model_picker.toolTip()
    from napari_wgan_denoise.models.model import read_card
    from napari_wgan_denoise.models.registry import SHIPPED_DIR

    trained = read_card(SHIPPED_DIR / "fluo-wgan-fast")["training"]
    assert f"iterations: {trained['iterations']}, loss wgan" in fluo.model_picker.toolTip()


def test_narrow_docks_elide_instead_of_cutting(make_napari_viewer, qtbot):
    from napari_wgan_denoise.napari._denoise import DenoiseWidget
    from napari_wgan_denoise.napari._loss_plot import LossPlot

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="a layer with a rather long name")
    widget = DenoiseWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.model_picker.set_value("fluo-wgan-fast")
    widget.model_picker.setFixedWidth(120)
    shown = widget.model_picker.shown_text()
    assert shown.endswith("…") and shown != widget.model_picker.currentText()
    assert widget.model_picker.toolTip().startswith("fluo-wgan-fast:")

    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(260, 120)
    assert plot.total == 0  # an empty plot names no iteration count
    plot.clear(500, "val_mse_to_surrogate")
    plot.add({"iteration": 10, "total": 500, "loss": 0.0123, "val_mse_to_surrogate": 0.00456})
    loss_text, metric_text = plot.legend()
    assert metric_text == "val. MSE to base 0.00456"
    width = plot.fontMetrics().horizontalAdvance(f"{loss_text}  {metric_text}")
    assert width <= plot.width() - 8  # the legend fits a narrow dock uncut


def test_finetune_run_checks_the_name_before_training(make_napari_viewer, rng):
    from napari_wgan_denoise.napari._bridge import drive
    from napari_wgan_denoise.napari._finetune_run import run_finetune
    from napari_wgan_denoise.napari._jobs import prepare_finetune

    viewer = make_napari_viewer()
    noisy, clean = _stack(rng, n=2, size=64)
    layer = viewer.add_image(noisy, name="noisy")
    other = viewer.add_image(clean, name="clean")
    job = prepare_finetune(
        layer,
        mode="paired",
        base="gray-mse-fast",
        name="gray-wgan-fast",  # a shipped model's name: refused before any training
        other=other,
        options={"iterations": 1000, "patch_size": 32, "batch_size": 2},
    )
    seen = []
    with pytest.raises(ValueError, match="gray-wgan-fast"):
        drive(run_finetune(job), lambda fraction, message: seen.append(fraction))
    assert all(fraction == 0.0 for fraction in seen)
