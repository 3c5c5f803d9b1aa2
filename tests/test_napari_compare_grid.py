"""Compare's grid as a user sees it, in a real viewer (issue 16, item 3 and the metrics flag
of item 8): exactly input, MSE, WGAN and difference, labelled with their names and the view
reset; no pile-up of "… [1]" layers on repeated runs; outputs worse than the input flagged."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari_wgan_denoise import save_user_model  # noqa: E402
from napari_wgan_denoise.napari._viewer import grid_of  # noqa: E402

PLUGIN = "napari-wgan-denoise"
COMPARE = "Compare ID-MSE vs ID-MSE-WGAN"
TIMEOUT_MS = 60_000


@pytest.fixture
def twins(tiny_gray, tiny_unet, no_shipped_models):
    """The gray family ``tiny`` (random weights: its outputs are worse than a clean-ish input)."""
    save_user_model(tiny_gray, "tiny-mse")
    save_user_model(tiny_unet, "tiny-wgan")
    return "tiny"


def _compare(viewer):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, COMPARE)
    return widget


def _run(qtbot, widget) -> str:
    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT_MS) as blocker:
        widget.run()
    return blocker.args[0]


def _camera(viewer):
    """``viewer.scene.camera`` since napari 0.9, else ``viewer.camera``."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def _scene(viewer, rng, sigma: float):
    yy, xx = np.mgrid[:64, :96]
    clean = (100 + 60 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.float32)
    noisy = (clean + rng.normal(0, sigma, clean.shape)).astype(np.float32)
    ref = viewer.add_image(clean, name="clean")
    other = viewer.add_image(rng.random((64, 96)).astype(np.float32), name="other")
    layer = viewer.add_image(noisy, name="noisy")
    return layer, ref, other


def test_grid_shows_exactly_the_four_labelled_panels_with_the_view_reset(
    make_napari_viewer, qtbot, twins, rng
):
    from napari_wgan_denoise.napari import denoise_layer

    viewer = make_napari_viewer()
    layer, ref, other = _scene(viewer, rng, sigma=10)
    earlier = denoise_layer(layer, model="tiny-mse", viewer=viewer)  # a Denoise output
    assert earlier.name == "noisy [tiny-mse]"
    camera = _camera(viewer)
    camera.zoom = 25.0  # zoomed into a corner, as a user may be
    camera.center = (0, 5, 5)
    widget = _compare(viewer)
    widget.layer_picker.set_layer(layer)
    widget.reference_picker.set_layer(ref)
    widget.method_noise.setChecked(True)
    assert _run(qtbot, widget) == "done"

    mse, wgan, diff = widget.last_layers
    panels = [layer, mse, wgan, diff]
    assert [p.name for p in panels] == [
        "noisy",
        "noisy MSE [tiny-mse]",
        "noisy WGAN [tiny-wgan]",
        "noisy |MSE − WGAN| [tiny]",
    ]
    grid = grid_of(viewer)
    assert grid.enabled
    # exactly these four are visible and each has a grid cell of its own, name shown
    assert [lyr for lyr in viewer.layers if lyr.visible] == panels
    layers = list(viewer.layers)
    cells = {lyr.name: grid.position(i, layers) for i, lyr in enumerate(layers)}
    assert {cells[p.name] for p in panels} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    hidden = [ref, other, earlier, *widget.last_method_noise_layers]
    assert len(hidden) == 5 and all(cells[h.name] == (-1, -1) for h in hidden)
    assert grid.actual_shape(layers) == (2, 2)
    assert all(p.name_overlay.visible for p in panels)
    # the view was reset: resetting again changes nothing, and it is not the zoomed crop
    zoom, center = camera.zoom, tuple(camera.center)
    assert zoom < 25.0
    viewer.reset_view()
    assert camera.zoom == pytest.approx(zoom)
    np.testing.assert_allclose(camera.center, center)

    # grid off: the hidden layers come back, the labels go away
    grid.enabled = False
    assert all(h.visible for h in hidden)
    assert not any(p.name_overlay.visible for p in panels)
    assert all(p.visible for p in panels)


def test_repeated_compare_replaces_its_own_layers(make_napari_viewer, qtbot, twins, rng):
    from napari_wgan_denoise.napari import compare_layer, denoise_layer

    viewer = make_napari_viewer()
    layer, ref, _ = _scene(viewer, rng, sigma=10)
    earlier = denoise_layer(layer, model="tiny-wgan", viewer=viewer)
    widget = _compare(viewer)
    widget.layer_picker.set_layer(layer)
    assert _run(qtbot, widget) == "done"
    first = widget.last_layers
    names = [lyr.name for lyr in viewer.layers]
    assert _run(qtbot, widget) == "done"
    assert [lyr.name for lyr in viewer.layers] == names  # replaced in place, not piled up
    assert not any(lyr in viewer.layers for lyr in first)
    assert all(lyr in viewer.layers for lyr in widget.last_layers)
    assert not any(" [1]" in name for name in names)
    # the Denoise output of the same model is untouched and keeps its name
    assert earlier in viewer.layers and earlier.name == "noisy [tiny-wgan]"
    # the console API replaces the widget's layers of the same comparison too
    result = compare_layer(layer, "tiny", viewer=viewer)
    assert [lyr.name for lyr in viewer.layers] == names
    assert all(lyr in viewer.layers for lyr in result.layers)
    # contrast limits stay linked between input and the new outputs
    layer.contrast_limits = (10.0, 150.0)
    assert tuple(result.mse.contrast_limits) == (10.0, 150.0)


def test_metrics_flag_an_output_worse_than_the_input(make_napari_viewer, qtbot, twins, rng):
    viewer = make_napari_viewer()
    # nearly clean input (σ = 0.5 on a 40..160 image): random-weight models can only lose
    layer, ref, _ = _scene(viewer, rng, sigma=0.5)
    widget = _compare(viewer)
    widget.layer_picker.set_layer(layer)
    widget.reference_picker.set_layer(ref)
    assert _run(qtbot, widget) == "done"
    metrics = widget.last_metrics
    worse = [n for n in ("tiny-mse", "tiny-wgan") if metrics[n]["psnr"] < metrics["input"]["psnr"]]
    assert worse and widget.worse_than_input == worse
    assert widget.flag.isVisibleTo(widget)
    assert all(name in widget.flag.text() for name in worse)
    rows = [widget.table.verticalHeaderItem(r).text() for r in range(widget.table.rowCount())]
    psnr_col = 2
    for name in worse:
        assert widget.table.item(rows.index(name), psnr_col).text().endswith("▼")
    assert not widget.table.item(rows.index("input"), psnr_col).text().endswith("▼")

    # outputs better than the input: no flag
    better = {
        "input": {"psnr": 20.0, "ssim": 0.5, "grad_ratio": 1.5},
        "tiny-mse": {"psnr": 25.0, "ssim": 0.7, "grad_ratio": 0.9},
        "tiny-wgan": {"psnr": 24.0, "ssim": 0.7, "grad_ratio": 1.0},
    }
    widget.show_metrics(better, widget.last_readout)
    assert widget.worse_than_input == [] and not widget.flag.isVisibleTo(widget)
    assert not any(
        widget.table.item(r, psnr_col).text().endswith("▼") for r in range(widget.table.rowCount())
    )
