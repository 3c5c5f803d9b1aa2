"""The trainer (Algorithm 1), checkpoints and the ``train`` CLI on tiny real data."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest
import skimage.io
import torch

from napari_wgan_denoise import Cancelled, load_model
from napari_wgan_denoise.cli import main
from napari_wgan_denoise.data.datasets import make_source
from napari_wgan_denoise.training import TrainConfig, Trainer, learning_rate, train
from napari_wgan_denoise.training.losses import gradient_penalty, patch_mse

TINY = {"n_blocks": 1, "features": 8}
TINY_CRITIC = {"features": 4, "max_features": 16}


@pytest.fixture
def clean_dir(tmp_path):
    """Eight smooth 8-bit gray images of 64x64."""
    folder = tmp_path / "clean"
    folder.mkdir()
    yy, xx = np.mgrid[:64, :64]
    for i in range(8):
        img = 128 + 90 * np.sin(xx / (3 + i)) * np.cos(yy / (4 + i / 2))
        skimage.io.imsave(folder / f"{i:02d}.png", img.astype(np.uint8), check_contrast=False)
    return folder


def _config(**kw):
    base = dict(
        arch_config=TINY,
        critic_config=TINY_CRITIC,
        iterations=6,
        batch_size=4,
        patch_size=32,
        val_every=3,
        checkpoint_every=3,
        lr=1e-3,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_defaults_are_the_papers():
    cfg = TrainConfig()
    assert cfg.betas == (0.0, 0.9) and cfg.gp_lambda == 10.0 and cfg.alpha == 1.01
    assert cfg.lr == 1e-4 and cfg.lr_final == 1e-5 and cfg.lr_drop_at == 0.6
    assert cfg.loss == "wgan" and cfg.mse_reduction == "sum" and cfg.critic_steps == 1
    assert learning_rate(cfg, 0) == 1e-4 and learning_rate(cfg, int(0.6 * cfg.iterations)) == 1e-5


def test_patch_mse_sums_over_pixels():
    a, b = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    assert patch_mse(a, b).item() == 16.0
    assert patch_mse(a, b, "mean").item() == 1.0


def test_log_mse_weighs_each_patch_alike_in_db():
    """Under "log" a patch with 100x the error gets 1/100 of the gradient per unit of error,
    so each patch pulls alike in dB; the summed MSE lets the noisier patch dominate."""
    from napari_wgan_denoise.training.losses import LOG_MSE_FLOOR

    target = torch.zeros(2, 1, 4, 4)
    estimate = torch.cat([torch.full((1, 1, 4, 4), 0.1), torch.full((1, 1, 4, 4), 0.01)])
    estimate.requires_grad_(True)
    loss = patch_mse(estimate, target, "log")
    expected = (math.log(0.01 + LOG_MSE_FLOOR) + math.log(1e-4 + LOG_MSE_FLOOR)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    g = estimate.grad.flatten(1)[:, 0]
    # d/dx log(x² + f) = 2x / (x² + f): 0.2 / 0.0101 against 0.02 / 0.0002
    assert g[1] / g[0] == pytest.approx((0.02 / 2e-4) / (0.2 / 0.0101), rel=1e-4)
    with pytest.raises(ValueError, match="use it with --loss mse or wgan"):
        TrainConfig(loss="vgg", mse_reduction="log").validate()
    TrainConfig(loss="wgan", mse_reduction="log").validate()
    with pytest.raises(ValueError, match="mse_reduction must be one of"):
        TrainConfig(loss="mse", mse_reduction="median").validate()


def test_gradient_penalty_is_zero_for_unit_slope_critic():
    class Linear(torch.nn.Module):
        def forward(self, x):  # ||grad|| = 1 everywhere
            return x.flatten(1)[:, 0]

    real, fake = torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert gradient_penalty(Linear(), real, fake, g).item() == pytest.approx(0.0, abs=1e-6)

    class Double(torch.nn.Module):
        def forward(self, x):  # ||grad|| = 2 -> penalty (2-1)^2 = 1
            return 2 * x.flatten(1)[:, 0]

    assert gradient_penalty(Double(), real, fake, g).item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("loss", ["mse", "wgan", "wgan-wf"])
def test_each_loss_trains(clean_dir, loss):
    source = make_source(clean=clean_dir, noise="gaussian:25", seed=0)
    trainer = Trainer(_config(loss=loss), source)
    before = [p.detach().clone() for p in trainer.generator.parameters()]
    states = [trainer.step() for _ in range(3)]
    for st in states:
        assert np.isfinite(st.g_loss) and np.isfinite(st.mse)
        if loss == "mse":
            assert trainer.critic is None and np.isnan(st.d_loss)
        else:
            assert np.isfinite(st.d_loss) and np.isfinite(st.wasserstein)
            assert st.gp > 0  # the gradient penalty is present
            assert st.g_loss == pytest.approx(st.mse + 1.01 * st.adv, rel=1e-4)
    after = list(trainer.generator.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_freezing_input_uses_one_minibatch(clean_dir):
    """WGAN draws one batch per iteration; the WF ablation draws a second for the generator."""
    calls = {"n": 0}
    source = make_source(clean=clean_dir, noise="gaussian:25", seed=0)
    original = source.sample

    def counting(*a, **k):
        calls["n"] += 1
        return original(*a, **k)

    source.sample = counting
    Trainer(_config(loss="wgan"), source).step()
    assert calls["n"] == 1
    Trainer(_config(loss="wgan-wf"), source).step()
    assert calls["n"] == 3


def test_resume_continues_identically(clean_dir, tmp_path):
    cfg = _config(loss="wgan", iterations=6, lr_drop_at=0.5)
    src = lambda: make_source(clean=clean_dir, noise="gaussian:0-55", seed=0)  # noqa: E731
    straight = Trainer(cfg, src())
    straight.run()
    part = Trainer(cfg, src(), checkpoint_dir=tmp_path / "ck")
    part.run(iterations=3)
    resumed = Trainer(cfg, src(), checkpoint_dir=tmp_path / "ck")
    resumed.resume(tmp_path / "ck" / "last")
    assert resumed.iteration == 3
    resumed.run()
    for (k, a), b in zip(
        straight.generator.state_dict().items(), resumed.generator.state_dict().values()
    ):
        assert torch.equal(a, b), k


def _layout_conv(network: torch.nn.Module) -> torch.nn.Conv2d:
    """A convolution whose weight differs between the two memory layouts (one of a single
    input channel is contiguous in both)."""
    return next(
        m
        for m in network.modules()
        if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1 and m.kernel_size[0] > 1
    )


def test_cpu_training_runs_channels_last(clean_dir):
    """On the CPU the networks and their batches are channels-last (oneDNN's faster layout
    there); a step in that layout computes what a step in the default layout does, and the
    trained model comes back in the default layout."""
    cfg = _config(loss="wgan", iterations=1, precision="fp32")
    fast = Trainer(cfg, make_source(clean=clean_dir, noise="gaussian:25", seed=0))
    conv = _layout_conv(fast.generator)
    assert fast.channels_last
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    noisy, _ = fast._batch()
    assert noisy.is_contiguous(memory_format=torch.channels_last)
    plain = Trainer(cfg, make_source(clean=clean_dir, noise="gaussian:25", seed=0))
    plain.set_channels_last(False)
    fast.rng.manual_seed(1)
    plain.rng.manual_seed(1)
    a, b = fast.step(), plain.step()
    assert a.g_loss == pytest.approx(b.g_loss, rel=1e-4)
    for p, q in zip(fast.generator.parameters(), plain.generator.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    # the trained model leaves in the default layout, as its file loads
    assert fast.run().network is fast.generator and conv.weight.is_contiguous()


def test_run_in_parts_trains_channels_last_each_part(clean_dir):
    """A run in parts trains every part in the trainer's layout, though each part hands its
    model back in the default one."""
    cfg = _config(iterations=2, precision="fp32")
    trainer = Trainer(cfg, make_source(clean=clean_dir, noise="gaussian:25", seed=0))
    conv = _layout_conv(trainer.generator)
    trainer.run(iterations=1)
    assert conv.weight.is_contiguous()
    layouts = []
    trainer.run(
        progress=lambda st: layouts.append(
            conv.weight.is_contiguous(memory_format=torch.channels_last)
        )
    )
    assert layouts == [True]
    assert conv.weight.is_contiguous()


def test_deterministic_for_a_seed(clean_dir):
    runs = []
    for _ in range(2):
        t = Trainer(
            _config(loss="mse", iterations=3), make_source(clean=clean_dir, noise="gaussian:25")
        )
        t.run()
        runs.append(torch.cat([p.flatten() for p in t.generator.parameters()]))
    assert torch.equal(*runs)


def test_cancel_writes_checkpoint(clean_dir, tmp_path):
    cancel = threading.Event()
    t = Trainer(
        _config(loss="mse", iterations=50),
        make_source(clean=clean_dir, noise="gaussian:25"),
        checkpoint_dir=tmp_path / "ck",
    )
    with pytest.raises(Cancelled, match="resume"):
        t.run(progress=lambda st: cancel.set() if st.iteration == 2 else None, cancel=cancel)
    assert (tmp_path / "ck" / "last.safetensors").is_file()


def test_train_beats_noisy_input(clean_dir, tmp_path):
    """A few hundred iterations of a tiny model already beat the noisy input clearly."""
    cfg = _config(
        loss="mse",
        iterations=150,
        batch_size=8,
        patch_size=32,
        val_every=150,
        arch_config={"n_blocks": 2, "features": 16},
        lr=2e-3,
        lr_drop_at=0.8,
    )
    model = train(cfg, make_source(clean=clean_dir, noise="gaussian:25", seed=0), tmp_path / "m")
    m = model.card["metrics"]
    assert m["val_psnr"] > m["val_input_psnr"] + 3
    card = json.loads((tmp_path / "m.json").read_text())
    assert card["training"]["loss"] == "mse" and card["training"]["iterations"] == 150
    assert card["noise"] and card["normalisation"]["mode"] == "fixed"
    assert "wall_time_s" in card["training"] and card["training"]["device"] == "cpu"
    assert load_model(tmp_path / "m").card["metrics"]["val_psnr"] == pytest.approx(m["val_psnr"])


def test_train_cli_and_resume(clean_dir, tmp_path):
    out = tmp_path / "cli-model"
    argv = [
        "train",
        "-o",
        str(out),
        "--clean",
        str(clean_dir),
        "--noise",
        "gaussian:25",
        "--arch-config",
        "n_blocks=1,features=8",
        "--critic-config",
        "features=4,max_features=16",
        "--loss",
        "wgan",
        "--iterations",
        "4",
        "--batch-size",
        "2",
        "--patch-size",
        "32",
        "--checkpoint-every",
        "2",
        "--val-every",
        "2",
        "-q",
    ]
    assert main(argv) == 0
    assert (tmp_path / "cli-model.safetensors").is_file()
    assert (tmp_path / "cli-model-checkpoints" / "last.json").is_file()
    assert main(argv) == 2  # refuses to overwrite
    yaml_cfg = tmp_path / "cfg.yaml"
    yaml_cfg.write_text(
        f"clean: {clean_dir}\nnoise: gaussian:25\nloss: mse\niterations: 3\n"
        "batch_size: 2\npatch_size: 32\narch_config: {n_blocks: 1, features: 8}\n"
    )
    assert main(["train", "--config", str(yaml_cfg), "-o", str(tmp_path / "y"), "-q"]) == 0
    assert load_model(tmp_path / "y").card["training"]["loss"] == "mse"


def test_train_cli_names_the_log_mse_in_its_progress(clean_dir, tmp_path, capsys):
    """Under mse_reduction "log" the progress bar calls the (negative) term log_mse, and the
    card records the reduction."""
    cfg = tmp_path / "log.yaml"
    cfg.write_text(
        f"clean: {clean_dir}\nnoise: gaussian:25\nloss: mse\nmse_reduction: log\n"
        "iterations: 3\nbatch_size: 2\npatch_size: 32\n"
        "arch_config: {n_blocks: 1, features: 8}\n"
    )
    assert main(["train", "--config", str(cfg), "-o", str(tmp_path / "z")]) == 0
    err = capsys.readouterr().err
    assert "log_mse=-" in err and " mse=" not in err
    card = load_model(tmp_path / "z").card
    assert card["training"]["config"]["mse_reduction"] == "log"


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--loss", "bogus"], None),
        (["--patch-size", "16"], "at least 32"),
        (["--arch-config", "depth=3"], "Unknown config key"),
    ],
)
def test_train_cli_errors(clean_dir, tmp_path, extra, match, capsys):
    argv = [
        "train",
        "-o",
        str(tmp_path / "m"),
        "--clean",
        str(clean_dir),
        "--noise",
        "gaussian:25",
        "--iterations",
        "1",
        "-q",
        *extra,
    ]
    if match is None:
        with pytest.raises(SystemExit):
            main(argv)
    else:
        assert main(argv) == 2
        assert match in capsys.readouterr().err


def test_train_cli_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert (
        main(
            [
                "train",
                "-o",
                str(tmp_path / "m"),
                "--clean",
                str(tmp_path / "empty"),
                "--noise",
                "gaussian:25",
                "-q",
            ]
        )
        == 3  # bad input: no images
    )
    assert "empty" in capsys.readouterr().err.lower() or "no " in capsys.readouterr().err.lower()


SHARED = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "gray" / "set12").is_dir(), reason="../shared/data not present")
def test_tiny_model_on_set12_beats_noisy_input_in_evaluate(tmp_path):
    """Issue 3's acceptance check: a few hundred iterations on Set12 crops, scored by evaluate."""
    from napari_wgan_denoise.evaluation import evaluate

    cfg = TrainConfig(
        architecture="srresnet",
        arch_config={"n_blocks": 2, "features": 16},
        loss="mse",
        iterations=300,
        batch_size=8,
        patch_size=40,
        lr=2e-3,
        lr_final=2e-4,
        val_every=300,
        seed=0,
    )
    source = make_source(clean=SHARED / "gray" / "set12", noise="gaussian:25", seed=0)
    model = train(cfg, source, tmp_path / "tiny-set12")
    (row,) = evaluate([model], clean=SHARED / "gray" / "set12", sigma=25, seed=0, limit=3)
    assert row["psnr"] > row["noisy_psnr"] + 5, row
