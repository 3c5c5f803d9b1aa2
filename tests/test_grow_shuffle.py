"""Deepening a trained shuffle model keeps what it computes, and dropping blocks removes
just them (benchmarks/grow_shuffle.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from benchmarks.grow_shuffle import drop_blocks, grow

from napari_wgan_denoise.models.model import create_model, load_model_file, save_model


def test_grown_model_denoises_as_before_and_trains_its_new_blocks(tmp_path):
    torch.manual_seed(0)
    model = create_model("shuffle", channels=1, features=8, depth=4)
    for p in model.network.parameters():  # a "trained" model: no zero tail
        torch.nn.init.normal_(p, std=0.1)
    grown = grow(model, 8)
    assert grown.network.config.depth == 8 and len(grown.network.body) == 3
    x = torch.rand(2, 1, 24, 20)
    with torch.no_grad():
        assert torch.allclose(model.network(x), grown.network(x), atol=1e-6)
    # the new blocks learn: their zeroed second convolution gets a gradient
    grown.network(x).square().mean().backward()
    assert grown.network.body[2].conv2.weight.grad.abs().sum() > 0

    save_model(grown, tmp_path / "grown")  # and it round-trips as a model file
    again = load_model_file(tmp_path / "grown")
    assert again.card["config"]["depth"] == 8 and again.card["grown_from"]["depth"] == 4


def test_widened_model_denoises_as_before_and_its_new_features_learn():
    torch.manual_seed(0)
    model = create_model("shuffle", channels=3, features=8, depth=6, noise_level=True)
    for p in model.network.parameters():
        torch.nn.init.normal_(p, std=0.1)
    wide = grow(model, 8, features=12)
    net = wide.network
    assert (net.config.features, net.config.depth) == (12, 8)
    assert net.head[0].weight.shape[0] == 12 and net.tail.weight.shape[1] == 12
    x = torch.rand(2, 3, 24, 20)
    with torch.no_grad():
        assert torch.allclose(model.network(x), net(x), atol=1e-6)
    net(x).square().mean().backward()
    # the new features are heard from the first step: the weights from them into the old
    # features and the tail (zero at the start) get gradients
    assert net.tail.weight.grad[:, 8:].abs().sum() > 0
    assert net.body[0].conv2.weight.grad[:8, 8:].abs().sum() > 0
    assert wide.card["grown_from"]["features"] == 8
    with pytest.raises(ValueError, match="features must be at least 8"):
        grow(model, features=6)


def test_grow_refuses_what_it_cannot_do():
    model = create_model("shuffle", channels=1, features=8, depth=4)
    with pytest.raises(ValueError, match="multiple of 2"):
        grow(model, 5)
    with pytest.raises(ValueError, match="multiple of 2"):
        grow(model, 2)
    with pytest.raises(ValueError, match="nothing to grow"):
        grow(model, 4)
    with pytest.raises(ValueError, match="not a residual shuffle"):
        grow(create_model("unet", channels=1), 8)


def test_noise_level_input_starts_unheard_and_learns(tmp_path):
    torch.manual_seed(0)
    model = create_model("shuffle", channels=1, features=8, depth=4)
    for p in model.network.parameters():
        torch.nn.init.normal_(p, std=0.1)
    grown = grow(model, noise_level=True)
    assert grown.network.config.noise_level and grown.network.config.depth == 4
    assert grown.network.head[0].weight.shape[1] == 5  # 4 sub-images + the noise level
    x = torch.rand(2, 1, 24, 20)
    with torch.no_grad():
        assert torch.allclose(model.network(x), grown.network(x), atol=1e-6)
    grown.network(x).square().mean().backward()
    assert grown.network.head[0].weight.grad[:, 4].abs().sum() > 0
    save_model(grown, tmp_path / "nl")
    again = load_model_file(tmp_path / "nl")
    assert again.card["config"]["noise_level"] is True
    with torch.no_grad():
        assert torch.allclose(again.network(x), grown.network(x), atol=1e-6)
    with pytest.raises(ValueError, match="nothing to grow"):
        grow(grown, noise_level=True)


def test_estimated_sigma_reads_gaussian_noise_per_image():
    import torch.nn.functional as F

    from napari_wgan_denoise.models.shuffle import estimated_sigma

    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, 128).expand(128, 128)  # smooth structure: no detail
    y = torch.stack([ramp + s * torch.randn(128, 128, generator=g) for s in (0.02, 0.1)])
    sigma = estimated_sigma(F.pixel_unshuffle(y[:, None], 2), 1).flatten()
    assert sigma.shape == (2,)
    assert abs(sigma[0] - 0.02) < 0.002 and abs(sigma[1] - 0.1) < 0.01, sigma


def test_sigma_map_is_the_global_estimate_for_gaussian_noise():
    import torch.nn.functional as F

    from napari_wgan_denoise.models.shuffle import estimated_sigma, sigma_map

    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, 128).expand(128, 128)
    y = torch.stack([ramp + s * torch.randn(128, 128, generator=g) for s in (0.02, 0.1)])
    sub = F.pixel_unshuffle(y[:, None], 2)
    maps = sigma_map(sub, 1)
    assert maps.shape == (2, 1, 64, 64)
    assert torch.equal(maps, estimated_sigma(sub, 1).expand_as(maps))


def test_sigma_map_follows_poisson_gaussian_noise():
    import torch.nn.functional as F

    from napari_wgan_denoise.models.shuffle import estimated_sigma, sigma_map

    g = torch.Generator().manual_seed(0)
    # A dark background (70 % of the image) and a bright band, shot noise at peak 100.
    clean = torch.full((1, 3, 128, 128), 0.02)
    clean[..., 90:, :] = 0.8
    peak, read = 100.0, 0.01
    noisy = torch.poisson(clean * peak, generator=g) / peak
    noisy = noisy + read * torch.randn(clean.shape, generator=g)
    sub = F.pixel_unshuffle(noisy, 2)
    maps = sigma_map(sub, 3)[0, 0]
    dark, bright = maps[5:35].median(), maps[50:].median()
    expected_bright = (0.8 / peak + read**2) ** 0.5
    assert abs(bright - expected_bright) < 0.25 * expected_bright, (bright, expected_bright)
    assert dark < 0.5 * bright
    # One global number reads the dark background and under-reads the bright band.
    assert estimated_sigma(sub, 3).item() < 0.5 * expected_bright


def test_noise_level_network_traces_for_other_image_sizes():
    """The map is built from tensor operations only, so a TorchScript trace (bioimage.io
    export) follows the data and the image size instead of baking in the traced ones."""
    import warnings

    from napari_wgan_denoise.models.shuffle import ShuffleConfig, ShuffleGenerator

    torch.manual_seed(0)
    net = ShuffleGenerator(1, ShuffleConfig(features=8, depth=3, noise_level=True)).eval()
    torch.nn.init.normal_(net.tail.weight, std=0.1)
    torch.nn.init.normal_(net.head[0].weight, std=0.3)
    g = torch.Generator().manual_seed(0)

    def frame(h: int, w: int, peak: float) -> torch.Tensor:
        clean = torch.full((1, 1, h, w), 0.02)
        clean[..., h // 2 :, :] = 0.8
        return torch.poisson(clean * peak, generator=g) / peak

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, frame(64, 64, 100.0))
    with torch.no_grad():
        for h, w, peak in ((96, 160, 30.0), (128, 72, 300.0)):
            y = frame(h, w, peak)
            assert torch.allclose(traced(y), net(y), atol=1e-6)


def test_sigma_map_bin_medians_match_a_plain_reference():
    """The map's per-bin medians (a padded selection per bin, not one big sort) are those of
    a plain numpy computation: equal-count bins of the smoothed local mean, and the middle
    |diagonal Haar detail| of each bin over all its pixels and channels."""
    import numpy as np
    import torch.nn.functional as F

    from napari_wgan_denoise.models.shuffle import _haar, sigma_map

    g = torch.Generator().manual_seed(3)
    # a dark-to-bright ramp under Poisson noise; 23 x 31 sub-images: bins of unequal size
    clean = torch.linspace(0.01, 1.0, 62).expand(1, 3, 46, 62)
    y = torch.poisson(clean * 20, generator=g) / 20
    sub = F.pixel_unshuffle(y, 2)
    detail, mean = _haar(sub, 3)
    mean = F.avg_pool2d(mean, 5, 1, 2, count_include_pad=False).mean(1)[0].flatten().numpy()
    mag = detail[0].abs().flatten(1).numpy()  # (C, P)
    order = np.argsort(mean, kind="stable")
    which = np.arange(order.size) * 16 // order.size  # the bin of each sorted position
    bins = [order[which == k] for k in range(16)]  # 45 or 44 pixels each
    levels = np.array([np.sort(mean[b])[len(b) // 2] for b in bins])
    medians = np.array([np.sort(mag[:, b].ravel())[mag[:, b].size // 2] for b in bins])
    var = (medians / 0.6745) ** 2
    slope, offset = np.polyfit(levels, var, 1)
    got = sigma_map(sub, 3)[0, 0].numpy()
    want = np.sqrt(np.maximum(slope * mean + max(offset, 0), 0)).reshape(got.shape)
    assert slope > 0  # the signal-dependent branch is the one compared
    np.testing.assert_allclose(got, want, rtol=1e-3)


def _poisson_plane(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A float32 plane in [0, 1] with shot noise: bright stripes on a dark background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    clean = 0.05 + 0.8 * (np.sin(xx / 17.0) * np.cos(yy / 11.0) > 0.3)
    return (rng.poisson(clean * 60.0) / 60.0 + rng.normal(0, 0.01, clean.shape)).astype(np.float32)


def test_noise_level_model_result_does_not_depend_on_the_tiling():
    """Every tile reads the noise model fitted on the whole plane, so a model with the
    noise-level map gives the same result for any tile size (with a map fitted per tile,
    the shipped gray model's output moved by up to 10 grey levels of 255 here)."""
    from napari_wgan_denoise import denoise

    noisy = _poisson_plane(300, 420)
    whole = denoise(noisy, "gray-mse-fast", tile_size=1024, value_range=(0, 1))
    for tile in (96, 200):
        tiled = denoise(noisy, "gray-mse-fast", tile_size=tile, value_range=(0, 1))
        # below one grey level of 255 (bf16 rounding where the tiles meet), not the 10 levels
        assert np.abs(tiled - whole).max() < 3e-3, tile
    # and the network is left fitting each input by itself afterwards
    from napari_wgan_denoise.models.registry import load_model

    assert load_model("gray-mse-fast").network.fixed_fit is None


def test_whole_image_fit_of_a_large_image_reads_a_mosaic_of_crops(monkeypatch):
    """Over FIT_PIXELS the fit reads evenly spread crops; it agrees with the fit of every
    pixel."""
    import torch.nn.functional as F

    from napari_wgan_denoise.models import shuffle

    net = shuffle.ShuffleGenerator(1, shuffle.ShuffleConfig(8, 3, noise_level=True))
    image = torch.from_numpy(_poisson_plane(1024, 1280))[None, None]
    full = shuffle.noise_fit(F.pixel_unshuffle(image, 2), 1)
    monkeypatch.setattr(shuffle, "FIT_PIXELS", 1 << 18)  # 2 x 2 crops of 256^2
    mosaic = shuffle.fit_whole_image(net, image)
    assert bool(full[3]) and bool(mosaic[3])  # signal-dependent noise found in both
    for a, b in zip(full[:3], mosaic[:3]):
        assert torch.allclose(a, b, rtol=0.15, atol=1e-5), (a, b)
    assert shuffle._spread(1024, 4) == [0, 256, 512, 768]


def test_whole_image_fit_of_a_large_image_reads_spread_positions():
    """Over FIT_POSITIONS the fit reads every second (third, ...) position; it agrees with
    the fit of every position, and a Gaussian fit gives the constant map without a Haar
    transform of each tile."""
    import torch.nn.functional as F

    from napari_wgan_denoise.models import shuffle

    net = shuffle.ShuffleGenerator(1, shuffle.ShuffleConfig(8, 3, noise_level=True))
    image = torch.from_numpy(_poisson_plane(1024, 1024))[None, None]
    sub = F.pixel_unshuffle(image, 2)
    full = shuffle.noise_fit(sub, 1)
    spread = shuffle.fit_whole_image(net, image)  # 262 k positions: every second one
    assert bool(full[3]) and bool(spread[3])
    for a, b in zip(full[:3], spread[:3]):
        assert torch.allclose(a, b, rtol=0.05, atol=1e-5), (a, b)
    gaussian = (
        torch.tensor([0.1]),
        torch.tensor([0.0]),
        torch.tensor([0.0]),
        torch.tensor([False]),
    )
    flat = shuffle.sigma_map(sub[..., :40, :30].repeat(2, 1, 1, 1), 1, gaussian)
    assert flat.shape == (2, 1, 40, 30) and torch.all(flat == 0.1)


def test_dropping_blocks_removes_just_them():
    """A model without block 1 computes what the original computes with that block made the
    identity (its residual zeroed), and keeps the other blocks' weights in order."""
    torch.manual_seed(0)
    model = create_model("shuffle", channels=3, features=8, depth=8, noise_level=True)
    for p in model.network.parameters():
        torch.nn.init.normal_(p, std=0.1)
    short = drop_blocks(model, [1])
    assert short.network.config.depth == 6 and len(short.network.body) == 2
    assert torch.equal(short.network.body[1].conv1.weight, model.network.body[2].conv1.weight)
    assert short.card["grown_from"] == {"model": model.name, "depth": 8, "dropped": [1]}
    x = torch.rand(2, 3, 24, 20)
    with torch.no_grad():
        before = model.network(x)
        model.network.body[1].conv2.weight.zero_()
        model.network.body[1].conv2.bias.zero_()
        assert torch.allclose(short.network(x), model.network(x), atol=1e-6)
        assert not torch.allclose(short.network(x), before, atol=1e-3)
    with pytest.raises(ValueError, match="drop between 1 and 2"):
        drop_blocks(model, [0, 1, 2])
    with pytest.raises(ValueError, match="drop between"):
        drop_blocks(model, [3])
