"""Fine-tuning on the user's own stack: paired, two-stage and Noise2Noise."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_wgan_denoise import list_models, load_model
from napari_wgan_denoise.training.finetune import finetune

SMALL = dict(iterations=12, batch_size=2, patch_size=32, val_every=6)


def _scene(rng, shape=(64, 64)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (1000 + 800 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.float32)


def _stack(rng, n=5, sigma=150.0):
    clean = np.stack([_scene(rng)] * n)
    noisy = clean + rng.normal(0, sigma, clean.shape).astype(np.float32)
    return noisy.astype(np.float32), clean


def test_paired_improves_and_registers(tiny_gray, rng):
    noisy, clean = _stack(rng)
    progress = []
    model = finetune(
        tiny_gray,
        noisy,
        mode="paired",
        clean=clean,
        name="ft-paired",
        progress=progress.append,
        lr=1e-3,
        **SMALL,
    )
    assert "ft-paired" in list_models()
    card = load_model("ft-paired").card
    assert card["base_model"]["name"] == tiny_gray.name
    assert card["finetune"]["mode"] == "paired" and card["finetune"]["iterations_run"] == 12
    assert card["metrics"]["validation_metric"] == "val_psnr"
    assert card["metrics"]["after"] >= card["metrics"]["before"]  # best weights are kept
    assert progress[-1]["iteration"] == 12 and "val_psnr" in progress[0]
    assert model.network is not tiny_gray.network  # the base is untouched


def test_two_stage_uses_unpaired_references(tiny_gray, rng):
    noisy, _ = _stack(rng, n=2)
    refs = [_scene(rng, (80, 80))]
    model = finetune(tiny_gray, noisy, mode="two-stage", references=refs, save=False, **SMALL)
    ft = model.card["finetune"]
    assert ft["adversarial_weight"] == 1e-3 and ft["lr"] == 1e-5
    assert model.card["metrics"]["validation_metric"] == "val_mse_to_surrogate"


def test_two_stage_default_references(tiny_gray, rng):
    noisy, _ = _stack(rng, n=1)
    model = finetune(tiny_gray, noisy[0], mode="two-stage", save=False, stages=2, **SMALL)
    assert model.card["finetune"]["iterations_run"] == 24


def test_n2n_on_repeated_frames(tiny_gray, rng):
    clean = np.stack([_scene(rng)] * 4)  # 4 fields
    frames = np.stack([clean + rng.normal(0, 150, clean.shape) for _ in range(3)], axis=1)
    model = finetune(tiny_gray, frames.astype(np.float32), mode="n2n", axis=1, save=False, **SMALL)
    assert model.card["metrics"]["validation_metric"] == "val_n2n_mse"


def test_roi_and_stop_returns_best(tiny_gray, rng):
    noisy, clean = _stack(rng)
    roi = np.zeros(noisy.shape[1:], bool)
    roi[10:40, 10:40] = True
    cancel = threading.Event()

    def progress(info):
        if info["iteration"] >= 3:
            cancel.set()

    model = finetune(
        tiny_gray,
        noisy,
        mode="paired",
        clean=clean,
        roi=roi,
        cancel=cancel,
        progress=progress,
        save=False,
        **SMALL,
    )
    assert model.card["finetune"]["stopped"] == "cancelled"
    assert model.card["finetune"]["iterations_run"] < 12


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(mode="paired"), "needs a clean array"),
        (dict(mode="n2n"), "axis of repeated"),
        (dict(mode="bogus"), "mode must be one of"),
        (dict(mode="paired", clean=np.zeros((2, 8, 8))), "must match"),
        (dict(mode="two-stage", roi=np.zeros((64, 64), bool)), "ROI mask is empty"),
        (dict(mode="n2n", axis=0, average=1.0), "decay of the weight average"),
    ],
)
def test_bad_input(tiny_gray, rng, kwargs, match):
    noisy, _ = _stack(rng, n=3)
    with pytest.raises(ValueError, match=match):
        finetune(tiny_gray, noisy, save=False, **{**SMALL, **kwargs})


def test_finetune_cli(tiny_gray, rng, tmp_path):
    import tifffile

    from napari_wgan_denoise import save_model
    from napari_wgan_denoise.cli import main

    save_model(tiny_gray, tmp_path / "base")
    noisy, clean = _stack(rng, n=4)
    tifffile.imwrite(tmp_path / "noisy.tif", noisy)
    tifffile.imwrite(tmp_path / "clean.tif", clean)
    argv = [
        "finetune",
        "--model",
        str(tmp_path / "base"),
        "--noisy",
        str(tmp_path / "noisy.tif"),
        "--clean",
        str(tmp_path / "clean.tif"),
        "--mode",
        "paired",
        "--iterations",
        "4",
        "--batch-size",
        "2",
        "--patch-size",
        "32",
        "-o",
        str(tmp_path / "ft"),
        "--name",
        "ft-cli",
        "-q",
    ]
    assert main(argv) == 0
    assert load_model(tmp_path / "ft").card["finetune"]["mode"] == "paired"
    assert "ft-cli" in list_models()
    assert main(argv) == 2  # no overwrite


def test_batch_norm_statistics_are_frozen(tiny_unet, rng):
    """Fine-tuning on a few small batches must not overwrite BN running statistics."""
    import torch

    noisy, clean = _stack(rng, n=4)
    before = {k: v.clone() for k, v in tiny_unet.network.state_dict().items() if "running" in k}
    model = finetune(tiny_unet, noisy, mode="paired", clean=clean, save=False, **SMALL)
    after = {k: v for k, v in model.network.state_dict().items() if "running" in k}
    assert before and all(torch.equal(before[k], after[k]) for k in before)


def test_weight_average_is_validated_kept_and_restored():
    import torch

    from napari_wgan_denoise.training.finetune.loop import WeightAverage

    net = torch.nn.Linear(2, 1)
    start = net.weight.detach().clone()
    average = WeightAverage(net, 0.75)
    with torch.no_grad():
        net.weight.add_(4.0)
    average.update()
    trained = net.weight.detach().clone()
    with average.applied():  # validation and previews see the average
        assert torch.allclose(net.weight, start + 1.0)
    assert torch.equal(net.weight, trained)  # training goes on from its own weights


def test_paired_keeps_a_weight_average_by_default(tiny_gray, rng):
    noisy, clean = _stack(rng, n=3)
    model = finetune(tiny_gray, noisy, mode="paired", clean=clean, save=False, iterations=50)
    ft = model.card["finetune"]
    assert ft["weight_average"] == 0.95
    assert [h["iteration"] for h in ft["history"]] == [0, 25, 50]  # scored every 25
    off = finetune(tiny_gray, noisy, mode="paired", clean=clean, save=False, average=0, **SMALL)
    assert off.card["finetune"]["weight_average"] == 0
    n2n = finetune(tiny_gray, noisy, mode="n2n", axis=0, save=False, iterations=50)
    assert n2n.card["finetune"]["weight_average"] is None
    assert [h["iteration"] for h in n2n.card["finetune"]["history"]] == [0, 50]
