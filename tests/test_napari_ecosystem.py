"""In a real viewer: the hallucination readout and method noise layers of Compare, and the
Denoise widget's model-file picker and bioimage.io Export button."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari_wgan_denoise import save_user_model  # noqa: E402
from napari_wgan_denoise.data.samples import fluorescence_sample  # noqa: E402
from napari_wgan_denoise.export.bioimageio import load_bioimageio  # noqa: E402

PLUGIN = "napari-wgan-denoise"
TIMEOUT_MS = 120_000


def _open(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def _run(qtbot, widget) -> str:
    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT_MS) as blocker:
        widget.run()
    return blocker.args[0]


def test_compare_readout_and_method_noise_layers(make_napari_viewer, qtbot, tiny_gray, tiny_unet):
    save_user_model(tiny_gray, "tiny-mse")
    save_user_model(tiny_unet, "tiny-wgan")
    noisy, clean = fluorescence_sample()
    viewer = make_napari_viewer()
    layer = viewer.add_image(noisy[:96, :96], name="noisy")
    widget = _open(viewer, "Compare ID-MSE vs ID-MSE-WGAN")
    widget.family_picker.set_value("tiny")
    widget.method_noise.setChecked(True)
    assert _run(qtbot, widget) == "done"
    layers = widget.last_method_noise_layers
    assert [lyr.name for lyr in layers] == [
        "noisy method noise [tiny-mse]",
        "noisy method noise [tiny-wgan]",
    ]
    mse_out = widget.last_layers[0].data
    np.testing.assert_allclose(
        layers[0].data, layer.data.astype(np.float32) - mse_out.astype(np.float32)
    )
    assert all(lyr in viewer.layers for lyr in layers)
    lo, hi = layers[0].contrast_limits
    assert lo == pytest.approx(-hi)
    # readout without a reference: two rows, only the readout columns
    assert widget.last_metrics is None
    assert widget.table.rowCount() == 2
    for name in ("tiny-mse", "tiny-wgan"):
        row = widget.last_readout[name]
        assert -1 <= row["whiteness"] <= 1 and -1 <= row["grad_corr"] <= 1
    assert layers[0].metadata["napari_wgan_denoise"]["readout"] == widget.last_readout["tiny-mse"]


def test_denoise_widget_opens_a_package_and_exports(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(fluorescence_sample()[0][:64, :64], name="noisy")
    widget = _open(viewer, "Denoise")
    assert widget.model_picker.set_value("gray-mse-fast")
    out = widget.export_model(str(tmp_path / "gray.zip"))
    assert out is not None and out.is_file()
    assert load_bioimageio(out).card["name"] == "gray-mse-fast"

    path = widget.open_model_file(str(out))
    assert path is not None and widget.model_picker.value() == path
    assert "(file, gray)" in widget.model_picker.currentText()
    assert _run(qtbot, widget) == "done"
    assert widget.last_layer.data.shape == (64, 64)

    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip at all")
    assert widget.open_model_file(str(broken)) is None
    assert widget.model_picker.value() == path  # still the good one


def test_console_compare_layer_readout_without_viewer(tiny_gray, tiny_unet):
    from napari.layers import Image

    from napari_wgan_denoise.napari import compare_layer

    save_user_model(tiny_gray, "tiny-mse")
    save_user_model(tiny_unet, "tiny-wgan")
    noisy, clean = fluorescence_sample()
    result = compare_layer(
        Image(noisy[:64, :64], name="n"),
        "tiny",
        Image(clean[:64, :64], name="c"),
        method_noise=True,
        add_to_viewer=False,
    )
    assert set(result.readout) == {"ideal", "tiny-mse", "tiny-wgan"}
    assert abs(result.readout["ideal"]["whiteness"]) < 0.2  # the true noise is nearly white
    assert [lyr.data.shape for lyr in result.method_noise] == [(64, 64), (64, 64)]
