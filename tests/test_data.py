"""Training data: noise models, patch sources (synthetic, paired, FMD, mixed), bad input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from skimage import io as skio

from napari_wgan_denoise.data.datasets import (
    FIXED_8BIT_NORMALISATION,
    PERCENTILE_NORMALISATION,
    MixedSource,
    PatchSource,
    make_source,
)
from napari_wgan_denoise.data.noise import (
    GaussianNoise,
    NoiseModel,
    PoissonGaussianNoise,
    parse_noise,
)

SHARED_DATA = Path(__file__).parents[2] / "shared" / "data"


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    skio.imsave(path, arr, check_contrast=False)
    return path


def _dihedral(img: np.ndarray) -> list[np.ndarray]:
    """The 8 flips/rotations of a (C, H, W) image."""
    out = []
    for k in range(4):
        r = np.rot90(img, k, axes=(1, 2))
        out += [r, r[:, :, ::-1]]
    return out


@pytest.fixture
def gray8(tmp_path: Path) -> Path:
    """Ten 8-bit gray PNGs, 40x48, random texture on a ramp."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "gray8"
    for i in range(10):
        ramp = np.linspace(20, 230, 48)[None, :] * np.ones((40, 1))
        img = np.clip(ramp + rng.normal(0, 15, (40, 48)), 0, 255).astype(np.uint8)
        _png(folder / f"img_{i:02d}.png", img)
    return folder


@pytest.fixture
def tiff16(tmp_path: Path) -> Path:
    """A 5-plane uint16 stack and two single 16-bit images (one float32)."""
    rng = np.random.default_rng(2)
    folder = tmp_path / "tiff16"
    folder.mkdir()
    tifffile.imwrite(folder / "stack.tif", rng.integers(100, 4000, (5, 48, 40), dtype=np.uint16))
    tifffile.imwrite(folder / "single.tiff", rng.integers(0, 60000, (50, 44), dtype=np.uint16))
    tifffile.imwrite(folder / "float.tif", rng.random((40, 40), dtype=np.float32) * 7.5)
    return folder


@pytest.fixture
def rgb8(tmp_path: Path) -> Path:
    """Four RGB PNGs and one RGBA PNG."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "rgb8"
    for i in range(4):
        _png(folder / f"cell{i}.png", rng.integers(0, 256, (36, 40, 3), dtype=np.uint8))
    _png(folder / "cell_alpha.png", rng.integers(0, 256, (36, 40, 4), dtype=np.uint8))
    return folder


def _make_fmd(root: Path, n_fov: int = 5, frames: int = 3, size: int = 48) -> Path:
    rng = np.random.default_rng(4)
    for f in range(1, n_fov + 1):
        gt = rng.uniform(10, 150, (size, size))
        _png(root / "gt" / str(f) / "avg50.png", gt.astype(np.uint8))
        for k in range(frames):
            raw = np.clip(rng.poisson(gt), 0, 255).astype(np.uint8)
            _png(root / "raw" / str(f) / f"HV110_P05005100{k:02d}.png", raw)
    return root


@pytest.fixture
def fmd(tmp_path: Path) -> Path:
    return _make_fmd(tmp_path / "fmd")


# --------------------------------------------------------------------------- noise


def test_parse_noise_forms_and_round_trip():
    g = parse_noise("gaussian:25")
    assert isinstance(g, GaussianNoise) and g.sigma == (25.0, 25.0) and not g.blind
    assert str(g) == "gaussian:25"
    b = parse_noise("gaussian:0-55")
    assert b.sigma == (0.0, 55.0) and b.blind and str(b) == "gaussian:0-55"
    assert parse_noise("gaussian") == b
    pg = parse_noise("poisson-gaussian:peak=5-500,read=0-0.05")
    assert isinstance(pg, PoissonGaussianNoise)
    assert pg.peak == (5.0, 500.0) and pg.read == (0.0, 0.05)
    default = parse_noise("poisson-gaussian")
    assert default.peak == (2.0, 1000.0) and default.read == (0.0, 0.03)
    assert parse_noise("poisson-gaussian:read=0.01").peak == (2.0, 1000.0)
    for model in (g, b, pg, default, parse_noise("poisson-gaussian:peak=1e2,read=1e-3")):
        assert parse_noise(str(model)) == model
        card = model.to_card()
        assert json.loads(json.dumps(card)) == card
        assert card["spec"] == str(model)
    assert g.to_card()["sigma"] == 25.0 and g.to_card()["scale"] == "0-255"
    assert b.to_card()["sigma"] == [0.0, 55.0]


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "uniform:3",
        "gaussian:abc",
        "gaussian:-5",
        "gaussian:50-10",
        "poisson-gaussian:gain=3",
        "poisson-gaussian:peak=0-10",
        "poisson-gaussian:peak=5,peak=6",
        "poisson-gaussian:read",
    ],
)
def test_parse_noise_rejects_bad_specs(spec):
    with pytest.raises(ValueError, match="noise|peak|sigma"):
        parse_noise(spec)


def test_gaussian_noise_std_and_scale():
    clean = torch.full((8, 1, 64, 64), 100.0)
    noisy = GaussianNoise(25).apply(clean, _gen())
    assert noisy.dtype == torch.float32 and noisy.shape == clean.shape
    assert abs(float((noisy - clean).std()) - 25.0) < 0.5
    unit = GaussianNoise(25, data_max=1.0).apply(clean / 255, _gen())
    assert abs(float((unit - clean / 255).std()) - 25 / 255) < 0.002
    blind = GaussianNoise((10, 40)).apply(torch.zeros(64, 1, 32, 32), _gen())
    stds = blind.flatten(1).std(dim=1)
    assert float(stds.min()) > 9 and float(stds.max()) < 41 and float(stds.std()) > 3
    # same generator state, same noise; other seed, other noise
    assert torch.equal(
        GaussianNoise(25).apply(clean, _gen(3)), GaussianNoise(25).apply(clean, _gen(3))
    )
    assert not torch.equal(GaussianNoise(25).apply(clean, _gen(3)), noisy)


def test_poisson_gaussian_variance_grows_with_intensity():
    levels = torch.tensor([0.05, 0.2, 0.5, 0.9]).view(-1, 1, 1, 1)
    clean = levels.expand(-1, 1, 96, 96).contiguous()
    noisy = PoissonGaussianNoise(peak=100, read=0).apply(clean, _gen())
    var = noisy.flatten(1).var(dim=1)
    assert torch.all(var[1:] > var[:-1])
    np.testing.assert_allclose(var.numpy(), levels.flatten().numpy() / 100, rtol=0.15)
    np.testing.assert_allclose(noisy.flatten(1).mean(dim=1).numpy(), levels.flatten(), atol=0.01)
    read = PoissonGaussianNoise(peak=100, read=0.02).apply(torch.zeros(2, 1, 96, 96), _gen())
    assert abs(float(read.std()) - 0.02) < 0.002
    assert isinstance(PoissonGaussianNoise(), NoiseModel)


def test_noise_rejects_non_batches():
    with pytest.raises(ValueError, match="batch"):
        GaussianNoise(5).apply(torch.zeros(8, 8), _gen())


# --------------------------------------------------------------------------- synthetic


def test_synthetic_8bit_gaussian_is_fixed_scale(gray8):
    src = make_source(clean=gray8, noise="gaussian:25", val_fraction=0.2)
    assert isinstance(src, PatchSource)
    assert src.channels == 1 and src.normalisation == FIXED_8BIT_NORMALISATION
    assert len(src) == 8
    noisy, clean = src.sample(64, 32, _gen())
    assert noisy.shape == clean.shape == (64, 1, 32, 32)
    assert noisy.dtype == clean.dtype == torch.float32
    # clean is value/255 of 8-bit data; noise is sigma/255, unclipped
    assert float(clean.min()) >= 0 and float(clean.max()) <= 1
    np.testing.assert_allclose((clean * 255).numpy(), np.round((clean * 255).numpy()), atol=1e-4)
    assert abs(float((noisy - clean).std()) - 25 / 255) < 0.003
    assert abs(float((noisy - clean).mean())) < 0.003
    assert float(noisy.min()) < 0 or float(noisy.max()) > 1
    d = src.describe()
    assert json.loads(json.dumps(d)) == d
    assert d["kind"] == "synthetic" and d["files"] == {"train": 8, "val": 2}
    assert d["noise"]["sigma"] == 25.0 and d["normalisation"]["mode"] == "fixed"
    assert len(d["val_split"]) == 2


def test_sample_is_deterministic_and_resumable(gray8, tiff16, fmd):
    for src in (
        make_source(clean=gray8, noise="gaussian:0-55"),
        make_source(clean=tiff16, noise="poisson-gaussian"),
        make_source(fmd=fmd),
        make_source(fmd=fmd, clean=tiff16, noise="poisson-gaussian"),
    ):
        a = src.sample(8, 24, _gen(5))
        b = src.sample(8, 24, _gen(5))
        c = src.sample(8, 24, _gen(6))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert not torch.equal(a[0], c[0])
        g = _gen(7)
        src.sample(4, 24, g)
        state = g.get_state()
        first = src.sample(4, 24, g)
        g.set_state(state)
        again = src.sample(4, 24, g)
        assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_augmentation_keeps_pairs_aligned_and_varies(tmp_path):
    rng = np.random.default_rng(9)
    img = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    _png(tmp_path / "one" / "a.png", img)
    _png(tmp_path / "one" / "b.png", img)
    src = make_source(clean=tmp_path / "one", noise="gaussian:0", val_fraction=0)
    noisy, clean = src.sample(48, 32, _gen())
    assert torch.equal(noisy, clean)  # zero noise: identical after the same transform
    variants = _dihedral(img[None].astype(np.float32) / 255)
    seen = set()
    for patch in clean.numpy():
        hits = [k for k, v in enumerate(variants) if np.array_equal(v, patch)]
        assert hits, "a full-size patch must be a flip/rotation of the image"
        seen.add(hits[0])
    assert len(seen) >= 4


def test_percentile_source_16bit_stack_and_jitter(tiff16):
    src = make_source(clean=tiff16, noise="gaussian:0", val_fraction=0)
    assert src.normalisation == PERCENTILE_NORMALISATION
    assert len(src) == 7  # 5 planes of the stack + 2 single images
    noisy, clean = src.sample(64, 32, _gen())
    assert torch.equal(noisy, clean)  # jitter is the same for noisy and clean
    assert float(clean.min()) >= -0.1 - 1e-6 and float(clean.max()) <= 1.25 + 0.1 + 1e-6
    lows = clean.flatten(1).min(dim=1).values
    highs = clean.flatten(1).max(dim=1).values
    assert float(lows.std()) > 0.01 and float(highs.std()) > 0.01  # per-sample jitter


def test_poisson_gaussian_source_and_validation(tiff16):
    src = make_source(clean=tiff16, noise="poisson-gaussian:peak=20-50,read=0.01", seed=3)
    assert src.normalisation["mode"] == "percentile"
    noisy, clean = src.sample(16, 32, _gen())
    assert torch.isfinite(noisy).all() and not torch.equal(noisy, clean)
    pairs = src.validation_pairs()
    assert pairs, "three files: one is held out"
    again = make_source(clean=tiff16, noise="poisson-gaussian:peak=20-50,read=0.01", seed=3)
    for (n1, c1), (n2, c2) in zip(pairs, again.validation_pairs()):
        assert n1.dtype == c1.dtype == np.float32 and n1.ndim == 3
        np.testing.assert_array_equal(n1, n2)
        np.testing.assert_array_equal(c1, c2)
        # mapped as inference maps the noisy input: its own 0.1/99.9 percentiles -> 0/1
        np.testing.assert_allclose(np.percentile(n1, [0.1, 99.9]), [0, 1], atol=1e-5)


def test_rgb_source_drops_alpha(rgb8):
    src = make_source(clean=rgb8, noise="gaussian:35", val_fraction=0)
    assert src.channels == 3 and len(src) == 5
    noisy, clean = src.sample(4, 32, _gen())
    assert noisy.shape == (4, 3, 32, 32)
    assert make_source(clean=rgb8, noise="gaussian:35", channels=3).channels == 3


def test_validation_pairs_are_capped_and_fixed(tmp_path):
    rng = np.random.default_rng(5)
    for i in range(20):
        _png(tmp_path / "big" / f"{i}.png", rng.integers(0, 256, (300, 270), dtype=np.uint8))
    src = make_source(clean=tmp_path / "big", noise="gaussian:50", val_fraction=0.5)
    pairs = src.validation_pairs()
    assert len(pairs) == 8
    for noisy, clean in pairs:
        assert noisy.shape == clean.shape == (1, 256, 256)
        assert abs(float((noisy - clean).std()) - 50 / 255) < 0.01
    again = src.validation_pairs()
    for (n1, _), (n2, _) in zip(pairs, again):
        np.testing.assert_array_equal(n1, n2)
    pairs[0][0][:] = 0  # callers get copies
    assert src.validation_pairs()[0][0].any()


def test_small_images_are_reflect_padded(tmp_path):
    _png(tmp_path / "s" / "tiny.png", np.arange(20 * 12, dtype=np.uint8).reshape(20, 12))
    src = make_source(clean=tmp_path / "s", noise="gaussian:0", val_fraction=0)
    with pytest.warns(UserWarning, match="reflect-padded"):
        noisy, clean = src.sample(4, 32, _gen())
    assert clean.shape == (4, 1, 32, 32) and torch.equal(noisy, clean)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        src.sample(2, 32, _gen())  # warned once per patch size


# --------------------------------------------------------------------------- pairs


def test_paired_folders_aligned_and_scaled(tmp_path):
    rng = np.random.default_rng(6)
    for i in range(4):
        base = rng.integers(1000, 3000, (40, 40), dtype=np.uint16)
        tifffile.imwrite(_mk(tmp_path / "clean") / f"p{i}.tif", base)
        _png(tmp_path / "noisy" / f"p{i}.png", base + np.uint16(500))
    src = make_source(noisy=tmp_path / "noisy", clean=tmp_path / "clean", val_names=["p3"])
    assert src.normalisation == PERCENTILE_NORMALISATION and len(src) == 3
    assert src.describe()["val_split"] == ["p3"]
    noisy, clean = src.sample(16, 24, _gen())
    diff = (noisy - clean).flatten(1)
    # the constant offset survives any flip/rotation only if both are transformed alike
    assert float((diff.max(dim=1).values - diff.min(dim=1).values).max()) < 1e-4
    ((vn, vc),) = src.validation_pairs()
    np.testing.assert_allclose(np.percentile(vn, [0.1, 99.9]), [0, 1], atol=1e-5)


def _mk(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --------------------------------------------------------------------------- FMD


def test_fmd_split_by_field_of_view(fmd):
    src = make_source(fmd=fmd, val_fraction=0.4, seed=1)
    d = src.describe()
    assert d["kind"] == "fmd" and json.loads(json.dumps(d)) == d
    train_fovs, val_fovs = d["fields_of_view"]["train"], d["fields_of_view"]["val"]
    assert len(val_fovs) == 2 and not set(train_fovs) & set(val_fovs)
    assert set(train_fovs) | set(val_fovs) == {"1", "2", "3", "4", "5"}
    assert len(src) == 9  # 3 fovs x 3 frames
    assert all(n.split("/")[0] in val_fovs for n in src.val_names)
    assert all(n.split("/")[0] in train_fovs for n in src.train_names)
    assert make_source(fmd=fmd, val_fraction=0.4, seed=1).describe() == d
    other = make_source(fmd=fmd, val_names=["2", "5"])
    assert other.describe()["fields_of_view"]["val"] == ["2", "5"]
    pairs = other.validation_pairs()
    assert len(pairs) == 6
    for noisy, clean in pairs:
        assert noisy.shape == clean.shape == (1, 48, 48)
        np.testing.assert_allclose(np.percentile(noisy, [0.1, 99.9]), [0, 1], atol=1e-5)
    noisy, clean = other.sample(8, 32, _gen())
    assert noisy.shape == (8, 1, 32, 32)
    # raw and gt share the raw frame's map: the gt is close to the raw frame's mean level
    assert abs(float(noisy.mean()) - float(clean.mean())) < 0.05


def test_mixed_source(fmd, gray8):
    src = make_source(fmd=fmd, clean=gray8, noise="gaussian:25", mix=0.5)
    assert isinstance(src, MixedSource) and src.normalisation["mode"] == "percentile"
    noisy, clean = src.sample(16, 32, _gen())
    assert noisy.shape == (16, 1, 32, 32)
    d = src.describe()
    assert json.loads(json.dumps(d)) == d and d["noise"]["type"] == "mixed"
    assert [s["kind"] for s in d["sources"]] == ["fmd", "synthetic"]
    assert len(src.validation_pairs()) <= 8
    only_real = make_source(fmd=fmd, clean=gray8, noise="gaussian:25", mix=1.0)
    real = make_source(fmd=fmd)
    a, b = only_real.sources[0].sample(4, 32, _gen(1)), real.sample(4, 32, _gen(1))
    assert torch.equal(a[0], b[0])
    fixed = make_source(clean=gray8, noise="gaussian:25")
    with pytest.raises(ValueError, match="normalisation"):
        MixedSource([real, fixed])


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_give_helpful_errors(tmp_path, gray8, rgb8, fmd):
    empty = _mk(tmp_path / "empty")
    with pytest.raises(ValueError, match="no images.*empty"):
        make_source(clean=empty, noise="gaussian:25")
    with pytest.raises(ValueError, match="does not exist"):
        make_source(clean=tmp_path / "nope", noise="gaussian:25")
    with pytest.raises(ValueError, match="fmd="):
        make_source(clean=fmd, noise="gaussian:25")

    bad = _mk(tmp_path / "bad")
    _png(bad / "ok.png", np.zeros((32, 32), np.uint8))
    (bad / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match="broken.png"):
        make_source(clean=bad, noise="gaussian:25")

    mixed = _mk(tmp_path / "mixed")
    _png(mixed / "g.png", np.zeros((32, 32), np.uint8))
    _png(mixed / "c.png", np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"mixes gray and RGB.*g\.png.*c\.png"):
        make_source(clean=mixed, noise="gaussian:25")
    with pytest.raises(ValueError, match="holds RGB images"):
        make_source(clean=rgb8, noise="gaussian:25", channels=1)
    with pytest.raises(ValueError, match="holds gray images"):
        make_source(clean=gray8, noise="gaussian:25", channels=3)
    with pytest.raises(ValueError, match="channels must be"):
        make_source(clean=gray8, noise="gaussian:25", channels=2)

    _png(tmp_path / "n" / "img_00.png", np.zeros((40, 48), np.uint8))
    _png(tmp_path / "n" / "extra.png", np.zeros((40, 48), np.uint8))
    with pytest.raises(ValueError, match=r"only in the noisy folder: extra.*only in the clean"):
        make_source(noisy=tmp_path / "n", clean=gray8)
    _png(tmp_path / "n2" / "img_00.png", np.zeros((30, 30), np.uint8))
    few = _mk(tmp_path / "few")
    _png(few / "img_00.png", np.zeros((40, 48), np.uint8))
    with pytest.raises(ValueError, match="differ in size"):
        make_source(noisy=tmp_path / "n2", clean=few)

    with pytest.raises(ValueError, match="noise="):
        make_source(clean=gray8)
    with pytest.raises(ValueError, match="clean="):
        make_source(noisy=gray8)
    with pytest.raises(ValueError, match="Give training data"):
        make_source()
    with pytest.raises(ValueError, match="noise"):
        make_source(clean=gray8, noise="gaussian:oops")
    with pytest.raises(ValueError, match="val_names"):
        make_source(clean=gray8, noise="gaussian:25", val_names=["img_99"])
    with pytest.raises(ValueError, match="nothing to train"):
        make_source(fmd=fmd, val_names=["1", "2", "3", "4", "5"])
    with pytest.raises(ValueError, match="val_fraction"):
        make_source(clean=gray8, noise="gaussian:25", val_fraction=1.0)

    broken_fmd = _make_fmd(tmp_path / "fmd2", n_fov=2)
    (broken_fmd / "gt" / "2" / "avg50.png").unlink()
    with pytest.raises(ValueError, match="'2'.*avg50"):
        make_source(fmd=broken_fmd)
    with pytest.raises(ValueError, match="FMD layout"):
        make_source(fmd=gray8)

    src = make_source(clean=gray8, noise="gaussian:25")
    with pytest.raises(ValueError, match="patch_size"):
        src.sample(4, 0, _gen())


# --------------------------------------------------------------------------- real data


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared data folder not present")
def test_real_shared_data_smoke():
    set12 = make_source(clean=SHARED_DATA / "gray" / "set12", noise="gaussian:25")
    assert set12.normalisation["mode"] == "fixed" and set12.channels == 1
    noisy, clean = set12.sample(4, 40, _gen())
    assert noisy.shape == (4, 1, 40, 40)
    assert abs(float((noisy - clean).std()) - 25 / 255) < 0.01
    fmd = make_source(fmd=SHARED_DATA / "fluo" / "fmd_confocal_bpae_b")
    d = fmd.describe()
    assert not set(d["fields_of_view"]["train"]) & set(d["fields_of_view"]["val"])
    assert "19" not in d["fields_of_view"]["train"]
    noisy, clean = fmd.sample(4, 64, _gen())
    assert noisy.shape == (4, 1, 64, 64) and torch.isfinite(noisy).all()
    assert 1 <= len(fmd.validation_pairs()) <= 8
