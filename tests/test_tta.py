"""Test-time augmentation (``tta``): the average over flips/rotations of the input, in the
core with tiling, channels-last and bf16, progress and cancel, the command line and the
napari widgets and console API. Real (tiny, random-weight) torch models throughout."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import tifffile
import torch
from torch import nn

from napari_wgan_denoise import denoise, save_model
from napari_wgan_denoise.errors import EXIT_USAGE, Cancelled, InvalidSetting
from napari_wgan_denoise.inference.augment import DihedralEnsemble
from napari_wgan_denoise.inference.tiling import EDGE_BORDER

#: The transforms each pass count averages, written out independently of the module:
#: (quarter turns, horizontal flip first).
EXPECTED = {
    2: [(0, False), (0, True)],
    4: [(k, False) for k in range(4)],
    8: [(k, f) for f in (False, True) for k in range(4)],
}


def _explicit_average(network: nn.Module, image: np.ndarray, passes: int, pad: int) -> np.ndarray:
    """The average of ``inverse(network(transform(image)))`` over the transforms, run on the
    whole image mirror-padded by ``pad`` (as the tiles see its edges) and cropped back."""
    padded = torch.from_numpy(np.pad(image, pad, mode="reflect"))[None, None]
    outs = []
    with torch.no_grad():
        for turns, flip in EXPECTED[passes]:
            t = padded.flip(-1) if flip else padded
            y = network(torch.rot90(t, turns, dims=(-2, -1)))
            y = torch.rot90(y, -turns, dims=(-2, -1))
            outs.append(y.flip(-1) if flip else y)
    mean = torch.stack(outs).mean(0)[0, 0].numpy()
    return mean[pad : pad + image.shape[0], pad : pad + image.shape[1]]


@pytest.mark.parametrize("passes", [2, 4, 8])
def test_tta_equals_the_explicit_average_over_several_nonsquare_tiles(tiny_gray, rng, passes):
    image = rng.random((70, 45), dtype=np.float32)
    options = {"value_range": (0.0, 1.0), "tile_size": 48, "precision": "fp32"}
    out = denoise(image, tiny_gray, tta=passes, **options)
    pad = EDGE_BORDER  # the plane's edges: no mirrored frame by default
    expected = _explicit_average(tiny_gray.network.eval(), image, passes, pad)
    np.testing.assert_allclose(out, expected, atol=2e-5)
    plain = denoise(image, tiny_gray, **options)
    assert np.abs(out - plain).max() > 1e-3  # the random network is not equivariant
    if passes == 8:
        assert np.array_equal(denoise(image, tiny_gray, tta=True, **options), out)


def test_tta_under_bf16_autocast_stays_close_to_fp32(tiny_gray, rng):
    image = rng.random((40, 56), dtype=np.float32)
    options = {"value_range": (0.0, 1.0), "tile_size": 40, "tta": 8}
    fp32 = denoise(image, tiny_gray, precision="fp32", **options)
    bf16 = denoise(image, tiny_gray, precision="bf16", **options)
    assert bf16.dtype == np.float32
    assert 0 < np.abs(bf16 - fp32).max() < 0.05


def test_the_wrapper_keeps_channels_last_and_the_tiling_attributes(tiny_rgb):
    network = tiny_rgb.network.eval()
    seen = []
    network.register_forward_pre_hook(
        lambda m, args: seen.append(
            (tuple(args[0].shape[-2:]), args[0].is_contiguous(memory_format=torch.channels_last))
        )
    )
    ensemble = DihedralEnsemble(network, 8)
    assert ensemble.size_multiple == int(getattr(network, "size_multiple", 1))
    assert ensemble.receptive_radius == network.receptive_radius
    assert ensemble.channels == 3 and ensemble.passes == 8
    x = torch.rand(2, 3, 20, 12).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = ensemble(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert [shape for shape, _ in seen] == [(20, 12), (12, 20)] * 4
    assert all(cl for _, cl in seen)
    bare = DihedralEnsemble(nn.Identity(), 2)  # no attributes: the tiling's fallbacks apply
    assert bare.size_multiple == 1 and not hasattr(bare, "receptive_radius")


def _symmetric_blur() -> nn.Module:
    """A network equivariant to flips and rotations by construction: one 3x3 convolution
    with a symmetric kernel (zero padding is symmetric too)."""
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    with torch.no_grad():
        conv.weight.copy_(kernel[None, None])
    return nn.Sequential(conv)


def test_an_equivariant_network_gives_the_same_output_with_and_without_tta(rng):
    image = rng.random((52, 37), dtype=np.float32)
    net = _symmetric_blur()
    options = {"value_range": (0.0, 1.0), "tile_size": 80, "precision": "fp32"}
    plain = denoise(image, net, **options)
    assert np.abs(plain - image).max() > 0.1  # the blur does change the image
    for passes in (2, 4, 8):
        np.testing.assert_allclose(denoise(image, net, tta=passes, **options), plain, atol=1e-6)


def test_bad_pass_counts_are_rejected_clearly(tiny_gray, rng, tmp_path):
    with pytest.raises(ValueError, match=r"passes must be 1, 2, 4 or 8.*got 3"):
        DihedralEnsemble(tiny_gray.network, passes=3)
    calls = []
    image = rng.random((32, 32), dtype=np.float32)
    with pytest.raises(InvalidSetting, match=r"tta must be True \(8 passes\), False.*got 3"):
        denoise(image, tiny_gray, tta=3, progress=lambda *a: calls.append(a))
    assert calls == []  # before any work
    with pytest.raises(TypeError, match="tta must be"):
        denoise(image, tiny_gray, tta="8")
    from napari_wgan_denoise.inference.distributed import denoise_files_distributed

    with pytest.raises(InvalidSetting, match="tta must be"):  # before any cluster starts
        denoise_files_distributed([tmp_path / "a.tif"], tmp_path / "out", "gray", tta=5)


def test_progress_spreads_over_the_passes_and_cancel_stops_within_a_layer(tiny_gray, rng):
    image = rng.random((40, 40), dtype=np.float32)
    started = []
    tiny_gray.network.register_forward_pre_hook(lambda m, a: started.append(1))
    seen: list[tuple[float, int]] = []

    def progress(done: float, total: int) -> None:
        if 0 < done < total:
            seen.append((done, len(started)))

    denoise(image, tiny_gray, tta=8, tile_size=256, progress=progress)  # one tile
    assert len(started) == 8 and len(seen) >= 10
    # after k of the 8 passes started, at most k/8 of the tile is reported done
    assert all(done <= passes / 8 + 1e-9 for done, passes in seen), seen

    started.clear()
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        denoise(
            image,
            tiny_gray,
            tta=8,
            tile_size=256,
            cancel=cancel,
            progress=lambda *a: cancel.set() if 0 < a[0] < 1 else None,
        )
    assert len(started) == 1  # stopped inside the first pass


def test_lazy_denoising_passes_tta_on(tiny_gray, rng):
    pytest.importorskip("dask")
    pytest.importorskip("zarr")
    from napari_wgan_denoise.inference.lazy import denoise_lazy

    stack = (rng.random((2, 40, 30)) * 1000).astype(np.uint16)
    lazy = np.asarray(denoise_lazy(stack, tiny_gray, tile_size=40, tta=2))
    np.testing.assert_array_equal(lazy, denoise(stack, tiny_gray, tile_size=40, tta=2))
    assert not np.array_equal(lazy, denoise(stack, tiny_gray, tile_size=40))


# --------------------------------------------------------------------------- command line


def _noisy_file(path, rng) -> np.ndarray:
    yy, xx = np.mgrid[:48, :40]
    image = 1000 + 800 * np.sin(xx / 5.0) * np.cos(yy / 7.0) + rng.normal(0, 150, (48, 40))
    image = image.astype(np.float32)
    tifffile.imwrite(path, image)
    return image


def test_cli_tta_runs_end_to_end_and_rejects_bad_values(tiny_gray, tmp_path, rng, capsys):
    from napari_wgan_denoise.cli import main

    save_model(tiny_gray, tmp_path / "m")
    image = _noisy_file(tmp_path / "img.tif", rng)
    base = ["denoise", str(tmp_path / "img.tif"), "--model", str(tmp_path / "m"), "-q"]
    assert main([*base, "-o", str(tmp_path / "a"), "--tile-size", "32", "--tta"]) == 0
    assert main([*base, "-o", str(tmp_path / "b"), "--tta", "2", "--tile-size", "32"]) == 0
    eight = tifffile.imread(tmp_path / "a" / "img.tif")
    two = tifffile.imread(tmp_path / "b" / "img.tif")
    np.testing.assert_array_equal(eight, denoise(image, tiny_gray, tile_size=32, tta=8))
    np.testing.assert_array_equal(two, denoise(image, tiny_gray, tile_size=32, tta=2))
    assert not np.array_equal(eight, two)
    capsys.readouterr()
    assert main([*base, "-o", str(tmp_path / "c"), "--tta", "3"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("wgan-denoise: error: --tta takes") and "got '3'." in err, err
    assert not (tmp_path / "c").exists()
    # the flag alone before a file name: the name is an input, not the number of passes
    first = ["denoise", "--tta", str(tmp_path / "img.tif"), "--model", str(tmp_path / "m")]
    assert main([*first, "-q", "-o", str(tmp_path / "d"), "--tile-size", "32"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "d" / "img.tif"), eight)


def test_cli_tta_reaches_the_chunked_zarr_path(tiny_gray, tmp_path, rng):
    zarr = pytest.importorskip("zarr")
    pytest.importorskip("dask")
    from napari_wgan_denoise.cli import main
    from napari_wgan_denoise.inference.lazy import read_any

    save_model(tiny_gray, tmp_path / "m")
    arr = (rng.random((2, 40, 30)) * 4000).astype(np.uint16)
    store = str(tmp_path / "in.zarr")
    zarr.open_array(store, mode="w", shape=arr.shape, chunks=(1, 40, 30), dtype=arr.dtype)[:] = arr
    argv = ["denoise", store, "-o", str(tmp_path / "out"), "--model", str(tmp_path / "m")]
    assert main([*argv, "-q", "--tta", "4"]) == 0
    result = read_any(tmp_path / "out" / "in.zarr").compute()
    np.testing.assert_array_equal(result, denoise(arr, tiny_gray, tta=4))


def test_evaluate_labels_tta_rows(tiny_gray, tmp_path, rng, capsys):
    import skimage.io

    from napari_wgan_denoise.evaluation import evaluate

    (tmp_path / "clean").mkdir()
    img = (rng.random((32, 40)) * 255).astype(np.uint8)
    skimage.io.imsave(tmp_path / "clean" / "a.png", img, check_contrast=False)
    save_model(tiny_gray, tmp_path / "tiny")
    model = str(tmp_path / "tiny")
    kw = {"clean": tmp_path / "clean", "sigma": 25, "notify": lambda m: None}
    plain, tta = evaluate([model], **kw)[0], evaluate([model], tta=4, **kw)[0]
    assert tta["model"] == plain["model"] + " (tta 4)"
    assert tta["psnr"] != plain["psnr"]

    from napari_wgan_denoise.cli import main

    argv = ["evaluate", "--model", model, "--clean", str(tmp_path / "clean"), "--sigma", "25"]
    assert main([*argv, "-q", "--json", "--tta", "4"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["model"] == tta["model"] and row["psnr"] == pytest.approx(tta["psnr"])


# --------------------------------------------------------------------------- napari


@pytest.fixture
def tiny_user_models(tiny_gray, tiny_unet):
    pytest.importorskip("napari")
    from napari_wgan_denoise import save_user_model

    save_user_model(tiny_gray, "tiny-mse", modality="fluo")
    save_user_model(tiny_unet, "tiny-wgan", modality="fluo")
    return tiny_gray


def test_widget_checkbox_reaches_the_core_and_the_metadata(
    make_napari_viewer, qtbot, tiny_user_models, rng
):
    from napari_wgan_denoise.napari._restore import RestoreWidget

    viewer = make_napari_viewer()
    data = rng.random((48, 40), dtype=np.float32) * 1000
    viewer.add_image(data, name="img")
    _, widget = viewer.window.add_plugin_dock_widget("napari-wgan-denoise", "Denoise")
    assert widget.model_picker.set_value("tiny-mse")
    widget.tile_size.setValue(32)
    assert widget.options_form.indexOf(widget.tta) >= 0  # under Advanced, by the tile size
    assert not widget.tta.isChecked()  # off by default
    assert "8× slower" in widget.tta.toolTip()
    for checked, passes in ((True, 8), (False, 1)):
        widget.tta.setChecked(checked)
        with qtbot.waitSignal(widget.run_finished, timeout=60_000) as blocker:
            widget.run()
        assert blocker.args[0] == "done"
        out = widget.last_layer
        assert out.metadata["napari_wgan_denoise"]["settings"]["tta"] == passes
        expected = denoise(data, tiny_user_models, tile_size=32, tta=passes)
        np.testing.assert_allclose(out.data, expected, rtol=1e-5, atol=1e-3)
        viewer.layers.remove(out)
    assert RestoreWidget(viewer).tta.isHidden()  # restore runs take no TTA


def test_console_api_takes_tta(make_napari_viewer, tiny_user_models, rng):
    from napari_wgan_denoise.napari import compare_layer, denoise_layer

    viewer = make_napari_viewer()
    data = rng.random((40, 36), dtype=np.float32) * 1000
    layer = viewer.add_image(data, name="img")
    out = denoise_layer(layer, "tiny-mse", viewer=viewer, tta=2)
    assert out.metadata["napari_wgan_denoise"]["settings"]["tta"] == 2
    expected = denoise(data, tiny_user_models, tta=2)
    np.testing.assert_allclose(out.data, expected, rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match="tta must be"):
        denoise_layer(layer, "tiny-mse", viewer=viewer, tta=6)
    result = compare_layer(layer, "tiny", viewer=viewer, tta=True, grid=False)
    for member in (result.mse, result.wgan):
        assert member.metadata["napari_wgan_denoise"]["settings"]["tta"] == 8
    np.testing.assert_allclose(
        result.mse.data, denoise(data, tiny_user_models, tta=8), rtol=1e-5, atol=1e-3
    )
