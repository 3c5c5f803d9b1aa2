"""The seed-004 cascade: networks, synthetic damage, gradual training, restore() and CLI."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tifffile
import torch

from napari_wgan_denoise import create_model, denoise, load_model, restore, save_model
from napari_wgan_denoise.cli import main
from napari_wgan_denoise.data.degrade import (
    CleanPatchPool,
    DegradationConfig,
    damage,
    damage_image,
    gaussian_blur,
    normalise_plane,
    random_masks,
)
from napari_wgan_denoise.data.samples import fluorescence_clean
from napari_wgan_denoise.errors import Cancelled
from napari_wgan_denoise.metrics import psnr
from napari_wgan_denoise.models import build_critic, list_models, model_entries
from napari_wgan_denoise.training.cascade import (
    CascadeTrainConfig,
    CascadeTrainer,
    train_cascade,
    validation_set,
)

TINY = {"inpaint_features": 4, "inpaint_blocks": 1, "restore_features": 8, "restore_layers": 3}


def _tiny(channels: int = 1, seed: int = 0):
    model = create_model("cascade", channels=channels, **TINY)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.network.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def _blobs(n: int = 3, size: int = 96, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        img = np.zeros((size, size), np.float32)
        for _ in range(6):
            cy, cx, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(4, 12)]
            img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        out.append((img / img.max()).astype(np.float32))
    return out


def _pool() -> CleanPatchPool:
    return CleanPatchPool([(f"blob{k}", b) for k, b in enumerate(_blobs())])


def _config(**over) -> CascadeTrainConfig:
    values = dict(
        arch_config=TINY,
        critic_config={"features": 4, "hidden": 8},
        inpaint_mse_iterations=3,
        inpaint_adv_iterations=2,
        restore_iterations=3,
        joint_iterations=3,
        batch_size=2,
        patch_size=32,
        val_every=2,
        device="cpu",
    )
    values.update(over)
    return CascadeTrainConfig(**values)


# ---------------------------------------------------------------- networks


def test_cascade_is_a_restore_model_in_the_registry():
    model = create_model("cascade", channels=1, **TINY)
    assert model.task == "restore" and model.card["task"] == "restore"
    assert create_model("unet", channels=1, features=4, bottleneck=2).task == "denoise"


def test_inpainting_keeps_known_pixels_and_shapes():
    model = _tiny()
    x = torch.rand(2, 1, 32, 48)
    mask = torch.zeros(2, 1, 32, 48)
    mask[:, :, 8:16, 8:24] = 1
    net_in = torch.cat([x * (1 - mask), mask], 1)
    model.network.eval()
    filled, out = model.network.stages(net_in)
    assert filled.shape == out.shape == x.shape
    keep = mask == 0
    assert torch.equal(filled[keep], x[keep])
    assert not torch.equal(filled[~keep], torch.zeros_like(filled[~keep]))
    assert torch.equal(model.network(net_in), out)


def test_critic_scores_any_patch_of_32_or_more():
    critic = build_critic("cascade", 1, {"features": 4, "hidden": 8})
    assert critic(torch.rand(3, 1, 32, 32)).shape == (3,)
    assert critic(torch.rand(2, 1, 48, 64)).shape == (2,)


def test_cascade_model_file_round_trip(tmp_path):
    model = _tiny()
    save_model(model, tmp_path / "c")
    again = load_model(tmp_path / "c.safetensors")
    assert again.task == "restore"
    x = torch.rand(1, 2, 32, 32)
    model.network.eval()
    again.network.eval()
    assert torch.allclose(model.network(x), again.network(x))


def test_denoise_refuses_a_cascade_model():
    with pytest.raises(ValueError, match="needs a hole mask"):
        denoise(np.zeros((32, 32), np.float32), _tiny())


# ---------------------------------------------------------------- damage


def test_masks_respect_the_hole_budget_and_kinds():
    g = torch.Generator().manual_seed(0)
    cfg = DegradationConfig(max_hole_fraction=0.1)
    masks = random_masks(16, 64, g, cfg)
    assert masks.shape == (16, 1, 64, 64)
    assert set(np.unique(masks.numpy())) <= {0.0, 1.0}
    assert float(masks.mean(dim=(1, 2, 3)).max()) <= 0.1 + 1e-6
    assert float(masks.sum()) > 0
    for kind in ("dead", "spots", "scratches", "blocks"):
        m = random_masks(4, 64, torch.Generator().manual_seed(1), DegradationConfig(kinds=(kind,)))
        assert float(m.sum()) > 0, kind


def test_bad_degradation_settings_are_named():
    with pytest.raises(ValueError, match="hole kind"):
        DegradationConfig(kinds=("craters",))
    with pytest.raises(ValueError, match="blur_sigma"):
        DegradationConfig(blur_sigma=(2.0, 1.0))
    with pytest.raises(ValueError, match="Unknown degradation"):
        DegradationConfig.from_dict({"blurr": 1})


def test_blur_keeps_the_mean_and_smooths():
    x = torch.rand(2, 1, 40, 40)
    y = gaussian_blur(x, torch.tensor([1.0, 2.0]))
    assert torch.allclose(x.mean(), y.mean(), atol=0.01)
    assert float(y[1].std()) < float(y[0].std()) < float(x.std())


def test_damage_is_seeded_and_consistent():
    clean = torch.rand(3, 1, 32, 32)
    a = damage(clean, torch.Generator().manual_seed(5))
    b = damage(clean, torch.Generator().manual_seed(5))
    assert torch.equal(a.network_input, b.network_input)
    holes = a.mask > 0.5
    assert float(a.network_input[:, :1][holes].abs().max()) == 0.0
    assert torch.equal(a.network_input[:, 1:], a.mask)
    assert not torch.equal(a.observed, clean)
    obs, mask = damage_image(_blobs(1, 50)[0], 3)
    obs2, mask2 = damage_image(_blobs(1, 50)[0], 3)
    assert obs.shape == mask.shape == (50, 50) and mask.dtype == bool
    assert np.array_equal(obs, obs2) and np.array_equal(mask, mask2)


def test_patch_pool_samples_every_file_evenly():
    pool = CleanPatchPool(
        [("big", p) for p in _blobs(20, 40, seed=1)] + [("small", _blobs(1, 40, seed=2)[0])]
    )
    g = torch.Generator().manual_seed(0)
    batch = pool.sample(200, 32, g)
    small = _blobs(1, 40, seed=2)[0]
    hits = sum(
        any(
            np.allclose(np.rot90(p, k)[:, ::f], small[y : y + 32, x : x + 32])
            for k in range(4)
            for f in (1, -1)
            for y in range(9)
            for x in range(9)
        )
        for p in batch[:, 0].numpy()[:60]
    )
    assert 15 <= hits <= 45  # about half, not 1/21
    with pytest.raises(ValueError, match="smaller than patches"):
        pool.sample(1, 64, g)


# ---------------------------------------------------------------- training


def test_gradual_training_runs_every_stage_and_records_them():
    cfg = _config()
    states = []
    val = validation_set(_blobs(2, 64, seed=3), 100, DegradationConfig(), 64)
    trainer = CascadeTrainer(cfg, _pool(), val)
    before = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    model = trainer.run(progress=states.append)
    assert [s.stage for s in states] == ["inpaint-mse"] * 3 + ["inpaint-adv"] * 2 + [
        "restore"
    ] * 3 + ["joint"] * 3
    assert all(np.isfinite(s.loss) for s in states)
    assert any(np.isfinite(s.wasserstein) for s in states if s.stage == "inpaint-adv")
    assert set(trainer.stage_states) == {"inpaint-mse", "inpaint-adv", "restore", "joint"}
    after = model.network.state_dict()
    for part in ("inpaint.e1.conv.weight", "restore.first.0.weight"):
        assert not torch.equal(before[part], after[part]), part
    card = model.card
    assert card["task"] == "restore" and card["training"]["strategy"] == "gradual"
    assert card["training"]["iterations"] == 11
    assert {"val_cascade_psnr", "val_inpaint_psnr", "val_input_psnr"} <= set(card["metrics"])


def test_no_pretraining_ablation_spends_everything_end_to_end():
    cfg = _config(gradual=False)
    assert cfg.schedule() == [("joint", 11)]
    states = []
    train_cascade(cfg, _pool(), progress=states.append)
    assert {s.stage for s in states} == {"joint"} and len(states) == 11


def test_bad_training_settings_are_refused():
    with pytest.raises(ValueError, match="patch_size"):
        _config(patch_size=30).validate()
    with pytest.raises(ValueError, match="no iterations"):
        _config(
            inpaint_mse_iterations=0,
            inpaint_adv_iterations=0,
            restore_iterations=0,
            joint_iterations=0,
        ).validate()
    with pytest.raises(ValueError, match="Unknown cascade setting"):
        CascadeTrainConfig.from_dict({"iterations": 5})


def test_stopping_keeps_a_usable_model():
    cancel = threading.Event()

    def progress(st):
        if st.iteration == 4:
            cancel.set()

    with pytest.raises(Cancelled) as info:
        train_cascade(_config(), _pool(), progress=progress, cancel=cancel)
    model = info.value.model
    assert model.card["training"]["iterations"] == 4
    out = restore(np.ones((40, 40), np.float32), np.zeros((40, 40), bool), model, device="cpu")
    assert np.isfinite(out).all()


def test_perceptual_term_with_a_random_vgg():
    pytest.importorskip("napari_wgan_denoise.training.perceptual")
    cfg = _config(
        lambda_per=0.5,
        vgg_random_init=True,
        inpaint_adv_iterations=1,
        restore_iterations=1,
        joint_iterations=1,
        inpaint_mse_iterations=1,
    )
    states = []
    model = train_cascade(cfg, _pool(), progress=states.append)
    assert all(np.isfinite(s.perceptual) for s in states)
    assert "random" in str(model.card["training"]["perceptual"])


# ---------------------------------------------------------------- restore()


def test_restore_shapes_dtypes_and_inpainted_output():
    model = _tiny()
    img = (np.random.default_rng(0).random((2, 50, 70)) * 4000).astype(np.uint16)
    mask = np.zeros((50, 70), bool)
    mask[10:20, 5:30] = True
    before = img.copy()
    out, filled = restore(img, mask, model, return_inpainted=True, device="cpu")
    assert out.shape == img.shape and out.dtype == img.dtype
    assert np.array_equal(img, before)
    assert np.array_equal(filled[:, ~mask], img[:, ~mask])
    assert not np.array_equal(filled[:, mask], img[:, mask])
    # a per-plane mask equal to the broadcast 2-D one gives the same result
    again = restore(img, np.broadcast_to(mask, img.shape), model, device="cpu")
    assert np.array_equal(again, out)


def test_restore_is_independent_of_the_tile_size():
    model = _tiny()
    img = np.random.default_rng(1).random((120, 100)).astype(np.float32)
    mask = np.zeros_like(img, bool)
    mask[30:40, 30:60] = True
    whole = restore(img, mask, model, tile_size=512, device="cpu")
    tiled = restore(img, mask, model, tile_size=8, overlap=48, device="cpu")
    assert np.abs(whole - tiled).max() < 1e-3


def test_restore_treats_nan_as_holes_and_validates_input():
    model = _tiny()
    img = np.random.default_rng(2).random((40, 40)).astype(np.float32)
    img[5, 5] = np.nan
    out = restore(img, np.zeros((40, 40), bool), model, device="cpu")
    assert np.isfinite(out).all()
    with pytest.raises(ValueError, match="mask has shape"):
        restore(img, np.zeros((40, 41), bool), model)
    with pytest.raises(ValueError, match="covers the whole image"):
        restore(img, np.ones((40, 40), bool), model)
    with pytest.raises(ValueError, match="not an inpaint"):
        restore(img, np.zeros((40, 40), bool), create_model("unet", 1, features=4, bottleneck=2))


def test_restore_rgb_cascade():
    model = _tiny(channels=3)
    img = (np.random.default_rng(3).random((36, 44, 3)) * 255).astype(np.uint8)
    mask = np.zeros((36, 44), bool)
    mask[4:10, 4:10] = True
    out = restore(img, mask, model, device="cpu")
    assert out.shape == img.shape and out.dtype == np.uint8


def test_restore_progress_and_cancel():
    model = _tiny()
    img = np.random.default_rng(4).random((64, 64)).astype(np.float32)
    calls = []
    restore(img, np.zeros((64, 64), bool), model, progress=lambda d, t: calls.append((d, t)))
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] > 0
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        restore(img, np.zeros((64, 64), bool), model, cancel=stop)


# ---------------------------------------------------------------- CLI


def test_cli_trains_lists_and_restores(tmp_path, capsys):
    clean = tmp_path / "clean"
    clean.mkdir()
    for k, b in enumerate(_blobs(2, 80)):
        tifffile.imwrite(clean / f"b{k}.tif", (b * 60000).astype(np.uint16))
    flags = [
        "--inpaint-mse-iterations",
        "2",
        "--inpaint-adv-iterations",
        "1",
        "--restore-iterations",
        "2",
        "--joint-iterations",
        "2",
        "--batch-size",
        "2",
        "--patch-size",
        "32",
        "--inpaint-features",
        "4",
        "--inpaint-blocks",
        "1",
        "--restore-features",
        "8",
        "--restore-layers",
        "3",
        "--device",
        "cpu",
        "-q",
    ]
    rc = main(
        [
            "cascade-train",
            "--clean",
            str(clean),
            "--name",
            "my-cascade",
            "-o",
            str(tmp_path / "cas"),
            "--modality",
            "fluo",
            *flags,
        ]
    )
    assert rc == 0
    assert (tmp_path / "cas.safetensors").is_file() and "my-cascade" in list_models()
    entry = next(e for e in model_entries() if e.name == "my-cascade")
    assert entry.task == "restore"
    capsys.readouterr()
    assert main(["models"]) == 0
    assert "restore" in capsys.readouterr().out

    image = (_blobs(1, 64, seed=9)[0] * 1000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "img.tif", image)
    mask = np.zeros((64, 64), np.uint8)
    mask[20:30, 20:30] = 1
    tifffile.imwrite(tmp_path / "mask.tif", mask)
    out = tmp_path / "out"
    rc = main(
        [
            "restore",
            str(tmp_path / "img.tif"),
            "--mask",
            str(tmp_path / "mask.tif"),
            "--model",
            "my-cascade",
            "-o",
            str(out),
            "--save-inpainted",
            "-q",
        ]
    )
    assert rc == 0
    restored = tifffile.imread(out / "img.tif")
    filled = tifffile.imread(out / "img_inpainted.tif")
    assert restored.shape == image.shape and restored.dtype == np.uint16
    assert np.array_equal(filled[mask == 0], image[mask == 0])
    # existing outputs are not replaced without --overwrite; a wrong mask is reported
    assert (
        main(["restore", str(tmp_path / "img.tif"), "--model", "my-cascade", "-o", str(out), "-q"])
        == 2
    )
    tifffile.imwrite(tmp_path / "bad.tif", np.zeros((10, 10), np.uint8))
    assert (
        main(
            [
                "restore",
                str(tmp_path / "img.tif"),
                "--mask",
                str(tmp_path / "bad.tif"),
                "--model",
                "my-cascade",
                "-o",
                str(tmp_path / "o2"),
                "-q",
            ]
        )
        == 3  # bad input
    )
    assert "mask has shape" in capsys.readouterr().err
    # a denoising model is refused for restore, a cascade for denoise
    assert (
        main(
            [
                "denoise",
                str(tmp_path / "img.tif"),
                "--model",
                "my-cascade",
                "-o",
                str(tmp_path / "o3"),
                "-q",
            ]
        )
        == 3  # bad input
    )
    assert "hole mask" in capsys.readouterr().err


def test_shipped_cascade_config_is_valid():
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[1] / "configs" / "zoo" / "fluo-cascade-fast.yaml"
    config = CascadeTrainConfig.from_dict(yaml.safe_load(path.read_text()))
    config.validate()
    assert not config.gradual and config.total_iterations() == 2500


@pytest.mark.parametrize("name", ["fluo-cascade-fast", "fluo-cascade-gradual-fast"])
def test_shipped_cascade_restores_the_fluorescence_sample(name):
    """A shipped cascade on a damaged crop of the bundled sample image (which was among its
    training images: this checks the file works, the benchmark measures it)."""
    assert name in list_models()
    clean = normalise_plane(fluorescence_clean())[64:192, 64:192]
    observed, holes = damage_image(clean, 7)
    assert holes.any()
    out, filled = restore(observed, holes, name, return_inpainted=True, device="cpu")
    # Pixels outside the holes pass through (up to float round-off of the normalisation).
    np.testing.assert_allclose(filled[~holes], observed[~holes], atol=1e-5)
    # Measured when shipped: holes 11.3 -> 21.2 / 20.9 dB, whole crop 24.9 -> 30.0 / 29.6 dB.
    assert psnr(clean[holes], filled[holes], 1.0) > psnr(clean[holes], observed[holes], 1.0) + 5
    assert psnr(clean, out, 1.0) > psnr(clean, filled, 1.0) + 2
