"""The GPU script of issue 14 item 7 (benchmarks/gpu_zoo.py), run on the CPU with tiny
networks: a call stopped at its deadline keeps a checkpoint, the state travels as parts and
comes back, and the next call resumes the MSE run and trains the WGAN twin from its kept
checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import skimage.io
from benchmarks import gpu_zoo

from napari_wgan_denoise.models.model import read_card

REPO = Path(__file__).resolve().parents[1]
CONFIG = """clean: runs/gpu/data/gray/train400
noise: "gaussian:0-55"
modality: gray
architecture: srresnet
arch_config: {{n_blocks: 1, features: 8}}
critic_config: {{features: 8, max_features: 16}}
loss: {loss}
iterations: {iterations}
batch_size: 2
patch_size: 32
lr: 1.0e-3
seed: 0
val_every: 10
checkpoint_every: 10
{extra}
"""


def _configs(folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "gray-mse.yaml").write_text(
        CONFIG.format(loss="mse", iterations=200, extra="keep_checkpoints: [40]")
    )
    warm = "warm_start: runs/gpu/gray/gray-mse-checkpoints/iter-40"
    (folder / "gray-wgan.yaml").write_text(CONFIG.format(loss="wgan", iterations=200, extra=warm))


def test_a_stopped_call_resumes_in_the_next_and_the_twin_starts_from_the_kept_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = Path("runs/gpu/data/gray/train400")
    data.mkdir(parents=True)
    camera = skimage.data.camera()
    for i in range(6):
        skimage.io.imsave(data / f"{i}.png", camera[i * 60 : i * 60 + 96, 100:196])
    root, configs = Path("runs/gpu"), Path("configs")

    # call 1: stopped (as by its deadline) once the MSE run is past its kept checkpoint
    _configs(configs)
    assert gpu_zoo.train("gray", root, configs, minutes=3, out=Path("out1"), stop_after=40) == 0
    mse = root / "gray/gray-mse"
    reached = gpu_zoo._iteration(Path(f"{mse}-checkpoints/last"))
    assert 40 <= reached < 200
    assert Path(f"{mse}-checkpoints/iter-40.safetensors").exists()
    assert not Path(f"{root}/gray/gray-wgan-checkpoints").exists()
    parts = sorted(Path("out1").glob("state.tar.*"))
    assert parts and all(p.stat().st_size <= gpu_zoo.PART for p in parts)

    # the device machine is given back: only what came back through $OUT is left
    shutil.rmtree(root / "gray")
    assert gpu_zoo.collect("gray", root, Path("out1")) == 0
    assert gpu_zoo._iteration(Path(f"{mse}-checkpoints/last")) == reached

    # call 2: the MSE run resumes and ends, then its twin trains from iteration 40
    assert gpu_zoo.train("gray", root, configs, minutes=3, out=Path("out2")) == 0
    mse_card, wgan_card = read_card(mse), read_card(root / "gray/gray-wgan")
    assert mse_card["training"]["iterations"] == 200
    assert wgan_card["training"]["iterations"] == 200
    assert wgan_card["training"]["loss"] == "wgan"
    mse_curve = {p["iteration"]: p["val_psnr"] for p in mse_card["learning_curve"]}
    wgan_curve = {p["iteration"]: p["val_psnr"] for p in wgan_card["learning_curve"]}
    assert wgan_curve[40] == pytest.approx(mse_curve[40])  # the same run up to the switch
    assert wgan_curve[200] != pytest.approx(mse_curve[200])  # then another
    assert np.isfinite(wgan_curve[200])
    # finished runs keep their checkpoint's JSON (it says so), not its weights
    for run in ("gray-mse", "gray-wgan"):
        ckpt = root / "gray" / f"{run}-checkpoints"
        assert (ckpt / "last.json").exists()
        assert not (ckpt / "last.safetensors").exists()
        assert not list(ckpt.glob("iter-*"))

    # call 3: nothing left to train
    assert gpu_zoo.train("gray", root, configs, minutes=1, out=None) == 0


def test_prepare_copies_the_first_fmd_frames_of_each_field(tmp_path: Path) -> None:
    src = tmp_path / "fmd"
    for field in ("1", "3", "11"):
        (src / "raw" / field).mkdir(parents=True)
        (src / "gt" / field).mkdir(parents=True)
        (src / "gt" / field / "avg50.png").write_bytes(b"gt")
        for k in range(10):
            (src / "raw" / field / f"HV110_P0500510{k:03d}.png").write_bytes(b"frame")
    gpu_zoo._copy_tree(src, tmp_path / "copy", fmd_frames=4)
    copied = {f.name: len(list(f.iterdir())) for f in (tmp_path / "copy/raw").iterdir()}
    assert copied == {"1": 4, "3": 4, "11": 4}
    assert sorted(f.name for f in (tmp_path / "copy/raw/3").iterdir())[-1].endswith("003.png")
    assert (tmp_path / "copy/gt/1/avg50.png").read_bytes() == b"gt"


def test_the_gpu_configs_are_valid_and_name_the_data_that_prepare_copies() -> None:
    from napari_wgan_denoise.validation import check_train_settings, load_config_file

    for family, folders in gpu_zoo.FAMILY_DATA.items():
        copied = {f"runs/gpu/data/{dst}" for _, dst in folders}
        for kind in ("mse", "wgan"):
            path = REPO / "configs" / "gpu" / f"{family}-{kind}.yaml"
            settings = check_train_settings(load_config_file(path), path)
            assert settings["loss"] == kind
            text = path.read_text()
            named = {
                line.split(":", 1)[1].strip()
                for line in text.splitlines()
                if line.strip().startswith(("clean:", "- clean:", "- fmd:"))
            }
            assert named == copied, (family, kind)
            assert "architecture: srresnet" in text
            assert "n_blocks: 16, features: 64" in text


def test_a_run_that_fails_makes_the_call_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _configs(Path("configs"))  # its data folder does not exist
    assert gpu_zoo.train("gray", Path("runs/gpu"), Path("configs"), minutes=2, out=None) == 1
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["mse"].startswith("exit ") and not report["mse"].startswith("exit 0")
    assert report["wgan"] == "waits for the MSE run to finish"
