"""The CPU zoo's building blocks: bf16 autocast detection, the pixel-unshuffle generator,
correlated camera noise, stain augmentation, mixed-source recipes, cosine schedules,
warm starts (MSE pre-training for the WGAN twin) and CPU-time budgets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skimage.io
import torch

from napari_wgan_denoise import create_model, denoise, load_model
from napari_wgan_denoise.cli import main
from napari_wgan_denoise.data.colour import (
    _RGB_FROM_HED,
    VALIDATION_SHIFTS,
    ColourJitter,
    GrayStainer,
    apply_shift,
    colour_shifted_copies,
    restain,
    restain_rows,
)
from napari_wgan_denoise.data.noise import PoissonGaussianNoise, correlate, parse_noise
from napari_wgan_denoise.data.recipes import build_source
from napari_wgan_denoise.inference import devices
from napari_wgan_denoise.models.registry import SHIPPED_DIR
from napari_wgan_denoise.training import TrainConfig, Trainer, learning_rate


# -- precision --------------------------------------------------------------------------
def test_use_bf16_follows_the_cpu_and_the_overrides(monkeypatch):
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    monkeypatch.delenv(devices.PRECISION_ENV, raising=False)
    monkeypatch.setattr(devices, "_cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert devices.use_bf16(cpu) is True
    assert devices.use_bf16(cpu, "fp32") is False
    assert devices.use_bf16(mps, "bf16") is False
    monkeypatch.setattr(devices, "_cpu_flags", lambda: {"avx2"})
    assert devices.use_bf16(cpu) is False
    assert devices.use_bf16(cpu, "bf16") is True
    assert devices.use_bf16(cuda) is True
    monkeypatch.setenv(devices.PRECISION_ENV, "fp32")
    assert devices.use_bf16(cuda) is False
    with pytest.raises(ValueError, match="precision must be one of"):
        devices.use_bf16(cpu, "fp8")


def test_bf16_and_fp32_denoise_agree(rng):
    model = create_model("shuffle", channels=1, features=16, depth=5)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.network.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    img = rng.normal(100, 20, (64, 80)).astype(np.float32)
    a = denoise(img, model, precision="fp32")
    b = denoise(img, model, precision="bf16")
    span = float(img.max() - img.min())
    assert not np.array_equal(a, b)  # bf16 really ran
    assert np.abs(a - b).max() < 0.01 * span


# -- the pixel-unshuffle generator --------------------------------------------------------
@pytest.mark.parametrize("residual", [True, False])
def test_shuffle_generator_starts_as_identity_and_has_honest_radius(residual):
    model = create_model("shuffle", channels=3, features=8, depth=5, residual=residual)
    net = model.network.eval()
    x = torch.rand(1, 3, 48, 48)
    assert torch.equal(net(x), x)  # zero-initialised tail
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    radius = net.receptive_radius
    x = torch.rand(1, 3, 32, 4 * radius + 16)
    x2 = x.clone()
    k = 10
    x2[..., :k] = 0  # change the first k columns only
    y0, y2 = net(x), net(x2)
    assert torch.allclose(y2[..., k + radius :], y0[..., k + radius :])
    assert not torch.allclose(y2[..., k : k + 2], y0[..., k : k + 2])


def test_deep_shuffle_tiles_with_its_context_radius_and_matches_the_whole_image():
    """The shipped cells model (16 convolutions) reaches 34 px, but its tiles carry 16 px of
    context (+ the blend): the tiled output is the whole-image output within bf16 rounding."""
    from skimage import data

    from napari_wgan_denoise.inference.tiling import default_overlap
    from napari_wgan_denoise.metrics import psnr

    model = load_model("cells-mse-fast")
    net = model.network
    assert net.receptive_radius == 2 * net.config.depth + 2 > 16 == net.context_radius
    assert default_overlap(net, 32) == 24
    rng = np.random.default_rng(0)
    clean = data.astronaut()[:400, :360].astype(np.float32)
    noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.float32)
    whole = denoise(noisy, model, tile_size=1024, value_range=(0, 255))
    tiled = denoise(noisy, model, tile_size=160, value_range=(0, 255))
    assert np.abs(tiled - whole).max() <= 1.0  # one bf16 step of the output is 0.5 here
    assert psnr(whole, tiled, peak=255.0) > 70


def test_shuffle_rejects_a_bad_config():
    with pytest.raises(ValueError, match="depth >= 3"):
        create_model("shuffle", channels=1, depth=2)


# -- correlated noise ----------------------------------------------------------------------
@pytest.mark.parametrize("rho", [0.0, 0.3, 0.6])
def test_correlate_gives_the_neighbour_correlation_and_keeps_variance(rho):
    z = torch.randn(2, 1, 192, 192, generator=torch.Generator().manual_seed(1))
    c = correlate(z, torch.full((2,), rho))
    var = float(c.var())
    assert abs(var - 1) < 0.05
    horizontal = float((c[..., 1:] * c[..., :-1]).mean()) / var
    vertical = float((c[..., 1:, :] * c[..., :-1, :]).mean()) / var
    assert abs(horizontal - rho) < 0.03 and abs(vertical - rho) < 0.03


def test_correlated_spec_round_trips_and_plain_spec_is_unchanged():
    spec = "poisson-gaussian:peak=2-1000,read=0-0.03,corr=0-0.7,corr_p=0.5"
    model = parse_noise(spec)
    assert str(model) == spec and model == parse_noise(str(model))
    assert model.to_card()["correlation"] == [0.0, 0.7]
    plain = parse_noise("poisson-gaussian:peak=5-500,read=0-0.05")
    assert "correlation" not in plain.to_card() and "corr" not in str(plain)
    with pytest.raises(ValueError, match="corr"):
        PoissonGaussianNoise(corr=0.9)


# -- stain augmentation --------------------------------------------------------------------
def test_colour_jitter_is_seeded_and_in_range():
    x = torch.rand(4, 3, 32, 32) * 200 + 30
    a = ColourJitter()(x, torch.Generator().manual_seed(3))
    b = ColourJitter()(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert float(a.min()) >= 0 and float(a.max()) <= 255
    assert float((a - x).abs().mean()) > 1  # it changes the colours
    same = apply_shift(x, torch.ones(4, 3), torch.zeros(4, 3), torch.zeros(4), torch.ones(4))
    assert float((same - x).abs().max()) < 0.01


def test_restaining_keeps_the_structure_in_other_stain_colours():
    from skimage import data

    ihc = torch.from_numpy(data.immunohistochemistry().astype(np.float32)).permute(2, 0, 1)
    x = ihc[None, :, :96, :96].repeat(6, 1, 1, 1)
    # The stain colours the decomposition reads give the image back.
    same = restain(x, torch.from_numpy(_RGB_FROM_HED)[None].repeat(6, 1, 1))
    assert float((same - x.clamp(1, 255)).abs().max()) < 0.01
    # Eosin always as DAB: another image, in range, with the same edges.
    choice = torch.tensor([[0.0, 0.5, 0.0]]).repeat(6, 1)
    rows = restain_rows(choice, torch.ones(6, 3, 3))
    unit = rows / rows.norm(dim=2, keepdim=True)
    assert torch.allclose(unit[:, 1], unit[:, 2], atol=1e-6)  # eosin drawn in DAB's colour
    moved = restain(x, rows)
    assert float(moved.min()) >= 0 and float(moved.max()) <= 255
    assert float((moved - x).abs().mean()) > 1
    gray_in, gray_out = x.mean(1).flatten(), moved.mean(1).flatten()
    assert float(torch.corrcoef(torch.stack([gray_in, gray_out]))[0, 1]) > 0.8
    # In the jitter: seeded, and both options change what is drawn.
    jitter = ColourJitter(restain=1.0, gray=1.0)
    a, b = (jitter(x, torch.Generator().manual_seed(4)) for _ in range(2))
    assert torch.equal(a, b) and not torch.equal(
        a, ColourJitter()(x, torch.Generator().manual_seed(4))
    )
    sat = (a.max(1).values - a.min(1).values).mean()
    assert float(sat) < 0.3 * float((x.max(1).values - x.min(1).values).mean())  # colourless


def test_colour_shifted_copies_are_fixed():
    img = np.random.default_rng(0).uniform(40, 230, (24, 24, 3)).astype(np.float32)
    one, two = colour_shifted_copies(img), colour_shifted_copies(img)
    assert [n for n, _ in one] == [s[0] for s in VALIDATION_SHIFTS]
    for (_, a), (_, b) in zip(one, two):
        assert a.shape == img.shape and np.array_equal(a, b)


def test_gray_stainer_is_seeded_rgb_and_follows_the_structure():
    x = torch.zeros(6, 1, 32, 32)
    x[:, :, :, 16:] = 255.0  # left half black, right half white
    a = GrayStainer()(x, torch.Generator().manual_seed(5))
    b = GrayStainer()(x, torch.Generator().manual_seed(5))
    assert a.shape == (6, 3, 32, 32) and torch.equal(a, b)
    assert float(a.min()) >= 0 and float(a.max()) <= 255
    assert not torch.equal(a, GrayStainer()(x, torch.Generator().manual_seed(6)))
    # white stays near white (at most a faint background stain); dark areas take colour
    assert float(a.amax(dim=(1, 2, 3)).min()) > 200
    assert float(a[:, :, :, :16].mean()) < float(a[:, :, :, 16:].mean())
    chroma = a.amax(dim=1) - a.amin(dim=1)
    assert float(chroma.mean()) > 5  # RGB, not gray copied to three channels
    with pytest.raises(ValueError, match="gray"):
        GrayStainer()(torch.zeros(1, 3, 8, 8), torch.Generator())


# -- recipes ---------------------------------------------------------------------------------
@pytest.fixture
def folders(tmp_path):
    yy, xx = np.mgrid[:48, :48]
    gray, rgb = tmp_path / "gray", tmp_path / "rgb"
    gray.mkdir()
    rgb.mkdir()
    for i in range(4):
        g = 128 + 90 * np.sin(xx / (3 + i)) * np.cos(yy / 4)
        skimage.io.imsave(gray / f"{i}.png", g.astype(np.uint8), check_contrast=False)
        c = np.stack([g, 255 - g, np.full_like(g, 120.0)], -1)
        skimage.io.imsave(rgb / f"{i}.png", c.astype(np.uint8), check_contrast=False)
    big = np.stack([128 + 60 * np.sin(xx / 5 + z) for z in range(12)]).astype(np.uint16)
    skimage.io.imsave(gray / "stack.tif", big, check_contrast=False)
    return gray, rgb


def test_recipe_mixes_sources_and_balances_files(folders):
    gray, rgb = folders
    pg = "poisson-gaussian:peak=5-500,read=0-0.02,corr=0-0.6"
    source = build_source(
        {
            "sources": [
                {"clean": str(gray), "noise": pg, "weight": 3, "balance": "files"},
                {"clean": str(gray), "noise": "poisson-gaussian", "weight": 1},
            ]
        }
    )
    assert source.weights == [0.75, 0.25]
    first = source.sources[0]
    probs = np.diff(np.concatenate([[0.0], first._cumulative]))
    by_file: dict[str, float] = {}
    for plane, p in zip(first._train, probs):
        by_file[plane.group] = by_file.get(plane.group, 0.0) + p
    assert np.allclose(list(by_file.values()), 1.0)  # each file equally likely
    noisy, clean = source.sample(8, 32, torch.Generator().manual_seed(0))
    assert noisy.shape == clean.shape == (8, 1, 32, 32)
    assert source.describe()["sources"][0]["balance"] == "files"


def test_recipe_colour_jitter_and_errors(folders):
    gray, rgb = folders
    source = build_source({"clean": str(rgb), "noise": "gaussian:25", "colour_jitter": True})
    assert source.describe()["augment"]["hed_scale"] == ColourJitter().hed_scale
    noisy, clean = source.sample(4, 32, torch.Generator().manual_seed(0))
    assert clean.shape == (4, 3, 32, 32) and float(clean.max()) <= 1.0
    with pytest.raises(ValueError, match="RGB"):
        build_source({"clean": str(gray), "noise": "gaussian:25", "colour_jitter": True})
    with pytest.raises(ValueError, match="unknown key"):
        build_source({"sources": [{"clean": str(gray), "noise": "gaussian", "wieght": 2}]})
    with pytest.raises(ValueError, match="colour_jitter setting"):
        build_source({"clean": str(rgb), "noise": "gaussian", "colour_jitter": {"hues": 3}})


def test_recipe_stain_turns_gray_images_into_rgb_training_data(folders, tmp_path):
    gray, rgb = folders
    gray8 = tmp_path / "gray8"
    gray8.mkdir()
    for f in sorted(gray.glob("*.png")):
        (gray8 / f.name).write_bytes(f.read_bytes())
    spec = {"clean": str(gray8), "noise": "gaussian:25", "val_fraction": 0.5, "stain": True}
    stained = build_source({**spec, "colour_jitter": True})
    assert stained.channels == 3
    kinds = [part["type"] for part in stained.describe()["augment"]]
    assert kinds[0].startswith("gray-to-stain") and kinds[1].startswith("stain-jitter")
    pairs = stained.validation_pairs()
    assert pairs and all(n.shape[0] == 3 and c.shape[0] == 3 for n, c in pairs)
    assert np.array_equal(pairs[0][1], build_source(spec).validation_pairs()[0][1])
    mixed = build_source(
        {
            "sources": [
                {"clean": str(rgb), "noise": "gaussian:25", "weight": 1},
                {**spec, "weight": 1},
            ]
        }
    )
    noisy, clean = mixed.sample(8, 32, torch.Generator().manual_seed(0))
    assert noisy.shape == clean.shape == (8, 3, 32, 32)
    with pytest.raises(ValueError, match="stain needs gray 8-bit"):
        build_source({"clean": str(rgb), "noise": "gaussian:25", "stain": True})
    with pytest.raises(ValueError, match="stain needs gray 8-bit"):  # the uint16 stack
        build_source({"clean": str(gray), "noise": "gaussian:25", "stain": True})
    with pytest.raises(ValueError, match="stain setting"):
        build_source({**spec, "stain": {"densty": 1}})


# -- schedule, warm start, CPU budget --------------------------------------------------------
def test_cosine_schedule_runs_from_lr_to_lr_final():
    cfg = TrainConfig(iterations=100, lr=1e-3, lr_final=1e-5, lr_schedule="cosine")
    assert learning_rate(cfg, 0) == pytest.approx(1e-3)
    assert learning_rate(cfg, 50) == pytest.approx(0.5 * (1e-3 + 1e-5))
    assert learning_rate(cfg, 100) == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear").validate()


def _cfg(**kw):
    base = dict(
        architecture="shuffle",
        arch_config={"features": 8, "depth": 3},
        critic_config={"features": 4, "max_features": 16},
        iterations=6,
        batch_size=2,
        patch_size=32,
        val_every=3,
        checkpoint_every=3,
        keep_checkpoints=[3],
        lr=1e-3,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_grad_clip_bounds_the_generator_step(folders):
    gray, _ = folders
    source = build_source({"clean": str(gray), "noise": "gaussian:25"})
    free = Trainer(_cfg(loss="mse", keep_checkpoints=[]), source)
    assert free.step().grad_norm != free.step().grad_norm  # NaN: not measured without clip
    clipped = Trainer(_cfg(loss="mse", grad_clip=1e-3, keep_checkpoints=[]), source)
    st = clipped.step()
    assert st.grad_norm > 1e-3  # the norm before clipping is reported ...
    total = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in clipped.generator.parameters()))
    assert float(total) <= 1e-3 * 1.01  # ... and the step used the clipped gradient


def test_wgan_twin_warm_starts_from_the_mse_run(folders, tmp_path):
    gray, _ = folders
    source = build_source({"clean": str(gray), "noise": "gaussian:25"})
    mse = Trainer(_cfg(loss="mse"), source, checkpoint_dir=tmp_path / "mse")
    mse.run()
    assert (tmp_path / "mse" / "iter-3.json").is_file()
    twin = Trainer(_cfg(loss="wgan"), source, checkpoint_dir=tmp_path / "wgan")
    twin.warm_start(tmp_path / "mse" / "iter-3")
    assert twin.iteration == 3
    model = twin.run()
    assert twin.iteration == 6
    training = model.card["training"]
    assert training["warm_start"]["iteration"] == 3 and training["iterations"] == 6
    assert training["cpu_time_s"] > 0
    curve = model.card["learning_curve"]
    assert [c["iteration"] for c in curve] == [3, 6]  # the MSE part and the twin's own
    assert [c.get("loss") for c in curve] == ["mse", "wgan"]
    wrong = Trainer(_cfg(loss="wgan", patch_size=48), source)
    with pytest.raises(ValueError, match="patch_size"):
        wrong.warm_start(tmp_path / "mse" / "iter-3")


def test_cpu_budget_stops_with_a_checkpoint_and_resume_finishes(folders, tmp_path, capsys):
    gray, _ = folders
    out = tmp_path / "m"
    argv = [
        "train", "-o", str(out), "--clean", str(gray), "--noise", "gaussian:25",
        "--architecture", "shuffle", "--arch-config", "features=8,depth=3",
        "--loss", "mse", "--iterations", "5", "--batch-size", "2", "--patch-size", "32",
        "--checkpoint-every", "100", "--val-every", "100", "--precision", "fp32", "-q",
    ]  # fmt: skip
    assert main([*argv, "--cpu-budget", "0"]) == 0
    assert "CPU budget" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()
    last = tmp_path / "m-checkpoints" / "last.json"
    assert json.loads(last.read_text())["iteration"] == 0
    assert main([*argv, "--resume", str(last.with_suffix(""))]) == 0
    card = load_model(out).card
    assert card["training"]["iterations"] == 5 and card["training"]["precision"] == "fp32"


def test_a_second_stage_starts_from_a_trained_models_weights(folders, tmp_path, capsys):
    """--init-weights: a new stage (other patches, fresh schedule) from a trained model's
    generator; its card keeps the earlier stages' iterations and learning curves."""
    gray, _ = folders
    base = [
        "train", "--clean", str(gray), "--noise", "gaussian:25", "--architecture", "shuffle",
        "--loss", "mse", "--batch-size", "2", "--val-every", "2", "--precision", "fp32", "-q",
    ]  # fmt: skip
    first = tmp_path / "first"
    small = ["--arch-config", "features=8,depth=3"]
    assert main([*base, *small, "-o", str(first), "--iterations", "2", "--patch-size", "32"]) == 0
    second = tmp_path / "second"
    argv = [*base, *small, "-o", str(second), "--iterations", "3", "--patch-size", "48"]
    assert main([*argv, "--init-weights", str(first)]) == 0
    card = load_model(second).card
    init = card["training"]["init_weights"]
    assert init["model"] == str(first) and init["iterations"] == 2
    assert [c["iteration"] for c in init["learning_curve"]] == [2]
    assert card["training"]["iterations"] == 3
    third = tmp_path / "third"  # a third stage: the card counts from the first stage
    argv = [*base, *small, "-o", str(third), "--iterations", "1", "--patch-size", "32"]
    assert main([*argv, "--init-weights", str(second)]) == 0
    init = load_model(third).card["training"]["init_weights"]
    assert init["model"] == str(second) and init["iterations"] == 5
    own = [c["iteration"] + 2 for c in card["learning_curve"]]
    assert own and [c["iteration"] for c in init["learning_curve"]] == [2, *own]
    still = tmp_path / "still"  # a vanishing lr keeps the first stage's weights
    argv = [*base, *small, "-o", str(still), "--iterations", "1", "--lr", "1e-12"]
    assert main([*argv, "--init-weights", str(first)]) == 0
    a, b = load_model(first).network.state_dict(), load_model(still).network.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # each initialised stage scores its starting weights on its own validation set first
    assert [c["iteration"] for c in card["learning_curve"]][:1] == [0]
    start, end = (
        load_model(still).card["learning_curve"][0],
        load_model(still).card["learning_curve"][-1],
    )
    assert start["initial"] and start["iteration"] == 0 and end["iteration"] == 1
    assert start["val_psnr"] == pytest.approx(end["val_psnr"], abs=1e-3)
    wider = ["--arch-config", "features=16,depth=3", "-o", str(tmp_path / "x")]
    assert main([*base, *wider, "--iterations", "1", "--init-weights", str(first)]) == 3
    assert "same network" in capsys.readouterr().err


SHIPPED = sorted(
    p.stem
    for p in SHIPPED_DIR.glob("*.json")
    if "cascade" not in p.stem  # the cascade's config is checked in test_cascade
)


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_denoiser_has_the_config_that_made_it(name):
    """configs/zoo/NAME.yaml reproduces the shipped NAME: the settings that shape the
    network and its training are those its card records."""
    from napari_wgan_denoise.models.model import read_card
    from napari_wgan_denoise.validation import load_config_file

    path = Path(__file__).resolve().parents[1] / "configs" / "zoo" / f"{name}.yaml"
    assert path.is_file(), f"no config for the shipped model {name}"
    settings = load_config_file(path)
    config = TrainConfig.from_dict(
        {k: v for k, v in settings.items() if k in TrainConfig.__dataclass_fields__}
    ).to_dict()
    trained = read_card(SHIPPED_DIR / name)["training"]["config"]
    for key in (
        "architecture",
        "arch_config",
        "loss",
        "iterations",
        "batch_size",
        "patch_size",
        "lr",
        "lr_final",
        "seed",
    ):
        assert config[key] == trained[key], (name, key, config[key], trained[key])
