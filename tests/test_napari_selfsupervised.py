"""The Fine-tune widget's self-supervised mode, noise-check line, time estimate and preview
cadence (issue 15), in a real napari viewer with a tiny real model."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari_wgan_denoise import list_models, load_model, save_user_model  # noqa: E402

PLUGIN = "napari-wgan-denoise"
TINY = {"patch_size": 32, "batch_size": 2, "val_every": 3, "seed": 0}


def _stack(rng, n=4, size=48):
    yy, xx = np.mgrid[:size, :size]
    clean = (1000 + 800 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.float32)
    return (np.stack([clean] * n) + rng.normal(0, 150, (n, size, size))).astype(np.float32)


def test_defaults_length_and_preview_cadence(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune on this stack")
    assert widget.time_limit.value() == 3.0  # minutes: the default run is short
    assert widget.preview_every.value() == widget.iterations.value() // 10
    widget.iterations.setValue(1000)
    assert widget.preview_every.value() == 100  # follows the run length: every 10 %
    widget.preview_every.setValue(7)
    widget.iterations.setValue(400)
    assert widget.preview_every.value() == 7  # ... until the user sets it
    widget.set_mode("self-supervised")
    assert widget.iterations.value() == 400  # set by the user: kept when the mode changes
    widget.set_mode("paired")
    widget.iterations.setValue(500)
    widget.set_mode("self-supervised")
    assert widget.iterations.value() == 300  # the mode's default length replaced paired's
    assert widget.form.labelForField(widget.clean_picker).text() == "Reference:"


def test_self_supervised_run_shows_noise_check_and_time_left(
    make_napari_viewer, qtbot, tiny_gray, rng
):
    save_user_model(tiny_gray, "tiny-mse", modality="fluo")
    viewer = make_napari_viewer()
    viewer.add_image(_stack(rng), name="noisy")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune on this stack")
    widget.train_options = dict(TINY)
    widget.set_mode("self-supervised")
    assert widget.base_picker.set_value("tiny-mse")
    widget.iterations.setValue(12)
    widget.preview_every.setValue(0)
    widget.save_as.setText("tiny-ss")
    assert widget.run_button.isEnabled()  # noisy only: nothing else needed
    texts = []

    def on_step(step):
        texts.append(widget.progress_label.text())

    with qtbot.waitSignal(widget.run_finished, timeout=60_000) as blocker:
        widget.run().yielded.connect(on_step)
    assert blocker.args[0] == "done"
    assert widget.noise_message.startswith("Noise check:")
    assert any("left" in t for t in texts)  # the estimate once iterations are measured
    assert any("Noise check:" in t for t in texts)
    if "tiny-ss" in list_models():  # saved only when it improved on the base
        card = load_model("tiny-ss").card
        assert card["finetune"]["mode"] == "self-supervised" and card["finetune"]["improved"]
        assert card["metrics"]["validation_metric"] in ("val_ss_loss", "val_sure_mse")
    else:
        assert "nothing was saved" in widget.result_label.text()
        assert widget.last_model is None


def test_the_self_supervised_loss_is_picked_in_the_advanced_options(
    make_napari_viewer, tiny_gray, rng
):
    save_user_model(tiny_gray, "tiny-mse", modality="fluo")
    viewer = make_napari_viewer()
    viewer.add_image(_stack(rng), name="noisy")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune on this stack")
    assert widget.base_picker.set_value("tiny-mse")
    widget.set_mode("paired")
    assert not widget.ss_loss_picker.isEnabled()  # no self-supervised part in paired mode
    widget.set_mode("self-supervised")
    assert widget.ss_loss_picker.isEnabled()
    assert widget.make_job().options["ss_loss"] is None  # automatic: the core decides
    widget.ss_loss_picker.setCurrentIndex(widget.ss_loss_picker.findData("neighbor2neighbor"))
    assert widget.make_job().options["ss_loss"] == "neighbor2neighbor"
    widget.set_mode("two-stage")  # its surrogates come from a self-supervised fine-tune
    assert widget.make_job().options["ss_loss"] == "neighbor2neighbor"
