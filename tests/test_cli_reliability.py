"""The ``wgan-denoise`` command line under bad input, unwritable outputs and signals
(issue 19): one line per error with a distinct exit status and no traceback, nothing the
user made is overwritten, and SIGINT/SIGTERM keep the best (or last) model.

Real processes (``python -m napari_wgan_denoise.cli``), real tiny models and real files.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import skimage.io
import tifffile

from napari_wgan_denoise import create_model, load_model, save_model, save_user_model
from napari_wgan_denoise.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE
from napari_wgan_denoise.interrupt import GracefulStop

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``wgan-denoise ARGS`` in a new process; every expected error is one line."""
    result = subprocess.run(
        [sys.executable, "-m", "napari_wgan_denoise.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )
    if "--debug" not in args:
        assert "Traceback" not in result.stderr, result.stderr
    return result


def _error_line(result: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("wgan-denoise: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _scene(n: int = 3, size: int = 64, seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    clean = (1000 + 800 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.float32)
    noise = np.random.default_rng(seed).normal(0, 150, (n, size, size)).astype(np.float32)
    return clean + noise


@pytest.fixture
def files(tiny_gray, tmp_path):
    """A base model file, a noisy stack, a 2-D image and a clean-image folder."""
    save_model(tiny_gray, tmp_path / "base")
    tifffile.imwrite(tmp_path / "noisy.tif", _scene(), photometric="minisblack")
    tifffile.imwrite(tmp_path / "single.tif", _scene(1)[0])
    clean = tmp_path / "clean"
    clean.mkdir()
    for k in range(2):
        img = (np.random.default_rng(k).random((64, 64)) * 255).astype(np.uint8)
        skimage.io.imsave(clean / f"c{k}.png", img, check_contrast=False)
    return tmp_path


def _finetune_args(d: Path, *extra: str) -> list[str]:
    return [
        "finetune",
        "--model",
        str(d / "base"),
        "--noisy",
        str(d / "noisy.tif"),
        "--mode",
        "two-stage",
        "--batch-size",
        "2",
        "--patch-size",
        "32",
        "--device",
        "cpu",
        *extra,
    ]


# ---------------------------------------------------------------- data loss (1)


def test_finetune_never_overwrites_the_card_or_a_user_model(files, _user_models, tiny_gray):
    (files / "out.json").write_text('{"mine": true}\n')
    result = cli(*_finetune_args(files, "--iterations", "2", "-o", str(files / "out"), "-q"))
    assert result.returncode == EXIT_USAGE
    assert "out.json already exists" in _error_line(result)
    assert json.loads((files / "out.json").read_text()) == {"mine": True}

    save_user_model(tiny_gray, "taken")
    before = (_user_models / "taken.safetensors").read_bytes()
    for name, code, fragment in [
        ("taken", EXIT_USAGE, "already exists"),
        ("fluo-mse-fast", EXIT_USAGE, "name of a shipped model"),
        (".hidden", EXIT_USAGE, "Invalid model name"),
    ]:
        out = files / f"new-{code}"
        result = cli(
            *_finetune_args(files, "--iterations", "2", "-o", str(out), "--name", name, "-q")
        )
        assert result.returncode == code and fragment in _error_line(result)
        assert not out.with_suffix(".safetensors").exists()  # refused before training
    assert (_user_models / "taken.safetensors").read_bytes() == before


# ---------------------------------------------------------------- usage and bad input


@pytest.mark.parametrize(
    ("extra", "code", "fragment"),
    [
        (["--iterations", "0"], EXIT_USAGE, "iterations must be at least 1, got 0"),
        (["--iterations", "-5"], EXIT_USAGE, "iterations must be at least 1, got -5"),
        (["--batch-size", "0"], EXIT_USAGE, "batch_size must be at least 1"),
        (["--average", "1"], EXIT_USAGE, "average is the decay of the weight average"),
    ],
)
def test_finetune_usage_errors(files, extra, code, fragment):
    result = cli(*_finetune_args(files, "-o", str(files / "ft"), "-q", *extra))
    assert result.returncode == code and fragment in _error_line(result)
    assert not (files / "ft.safetensors").exists()


def test_finetune_n2n_on_one_image_and_a_cascade_base_are_refused(files):
    args = _finetune_args(files, "-o", str(files / "ft"), "-q")
    args[args.index("two-stage")] = "n2n"
    args[args.index(str(files / "noisy.tif"))] = str(files / "single.tif")
    result = cli(*args, "--axis", "0")
    assert result.returncode == EXIT_USAGE and "single image" in _error_line(result)
    cascade = create_model(
        "cascade", inpaint_features=4, inpaint_blocks=1, restore_features=8, restore_layers=3
    )
    save_model(cascade, files / "cascade")
    args = _finetune_args(files, "-o", str(files / "ft"), "-q")
    args[args.index(str(files / "base"))] = str(files / "cascade")
    result = cli(*args)
    assert result.returncode == EXIT_USAGE
    assert "fine-tuning adapts denoising models" in _error_line(result)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('lr: "fast"\n', "lr: expected a number, got 'fast'"),
        ("iterations: five\n", "iterations: expected an integer, got 'five'"),
        ("arch_config: {features: -3}\n", "arch_config.features must be an integer >= 1"),
        ("loss: mse\nlr: [1\n", "flow sequence that starts at line 2"),
    ],
)
def test_train_config_errors_name_the_key(files, text, fragment):
    config = files / "train.yaml"
    config.write_text(text)
    result = cli(
        "train", "--config", str(config), "-o", str(files / "m"), "--clean", str(files / "clean")
    )
    assert result.returncode == EXIT_USAGE
    line = _error_line(result)
    assert fragment in line and str(config) in line


def test_corrupt_card_is_bad_input_with_debug_traceback(files, tiny_gray, _user_models):
    save_user_model(tiny_gray, "broken")
    card = _user_models / "broken.json"
    card.write_text(card.read_text().replace('"mode": "percentile"', '"mode": "fixed"'))
    data = json.loads(card.read_text())
    data["normalisation"] = {"mode": "fixed", "low": 5, "high": 5}
    card.write_text(json.dumps(data))
    args = ("denoise", str(files / "single.tif"), "-o", str(files / "o"), "--model", "broken")
    result = cli(*args)
    assert result.returncode == EXIT_BAD_INPUT
    line = _error_line(result)
    assert "broken.json" in line and "normalisation.high" in line
    assert "No model named" not in line
    debug = cli(*args, "--debug")
    assert debug.returncode == EXIT_BAD_INPUT and "Traceback" in debug.stderr


# ---------------------------------------------------------------- unwritable outputs (3, 11)


def test_unwritable_outputs_fail_before_any_work(files):
    blocker = files / "a-file"
    blocker.write_text("")
    start = time.perf_counter()
    result = cli(*_finetune_args(files, "--iterations", "5000", "-o", str(blocker / "m"), "-q"))
    assert result.returncode == EXIT_FAILED
    assert "is a file, not a folder" in _error_line(result)
    result = cli(
        "denoise", str(files / "noisy.tif"), "-o", str(blocker / "out"), "--model",
        str(files / "base"),
    )  # fmt: skip
    assert result.returncode == EXIT_FAILED and "is a file" in _error_line(result)
    result = cli(
        "train", "-o", str(blocker / "m"), "--clean", str(files / "clean"), "--noise",
        "gaussian:25", "--iterations", "5000", "--loss", "mse", "--arch-config",
        "n_blocks=1,features=4",
    )  # fmt: skip
    assert result.returncode == EXIT_FAILED and "is a file" in _error_line(result)
    assert time.perf_counter() - start < 120  # nothing was trained or computed


def test_an_output_folder_named_like_an_image_is_refused_before_any_work(files):
    """``-o out.png`` would become a folder called out.png: one line says to give a folder,
    and nothing is created; an existing folder of that name is still accepted."""
    for command in ("denoise", "restore"):
        target = files / f"{command}-result.png"
        result = cli(
            command, str(files / "noisy.tif"), "-o", str(target), "--model", str(files / "base")
        )
        line = _error_line(result)
        assert result.returncode == EXIT_BAD_INPUT, line
        assert "looks like a file name" in line and "give a folder" in line
        assert not target.exists()
    folder = files / "kept.tif"
    folder.mkdir()
    result = cli(
        "denoise", str(files / "noisy.tif"), "-o", str(folder), "--model", str(files / "base")
    )
    assert result.returncode == 0, result.stderr
    assert (folder / "noisy.tif").is_file()


# ---------------------------------------------------------------- TIFF series (5)


def test_denoise_keeps_every_series_of_a_tiff(files):
    path = files / "two.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(_scene(2).astype(np.uint16))
        tw.write(_scene(1, size=48)[0].astype(np.uint16))
    result = cli("denoise", str(path), "-o", str(files / "out"), "--model", str(files / "base"))
    assert result.returncode == 0, result.stderr
    assert "2 image series" in result.stdout
    with tifffile.TiffFile(files / "out" / "two.tif") as tif:
        shapes = [s.shape for s in tif.series]
    assert shapes == [(2, 64, 64), (48, 48)]


# ---------------------------------------------------------------- signals (2, 12)


class _Watch:
    """Read a process's stderr in a thread; wait for a pattern to appear."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.text = proc, ""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            chunk = self.proc.stderr.read(1)
            if not chunk:
                return
            self.text += chunk

    def wait_for(self, pattern: str, timeout: float = 240) -> re.Match:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            match = re.search(pattern, self.text)
            if match:
                return match
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.proc.kill()
        raise AssertionError(f"{pattern!r} never appeared; stderr:\n{self.text}")

    def finish(self, timeout: float = 240) -> tuple[int, str]:
        rc = self.proc.wait(timeout=timeout)
        self.thread.join(timeout=10)
        assert "Traceback" not in self.text, self.text
        return rc, self.text


def _start(*args: str) -> _Watch:
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_wgan_denoise.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    return _Watch(proc)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_in_finetune_keeps_the_best_so_far(files, sig):
    watch = _start(*_finetune_args(files, "--iterations", "20000", "-o", str(files / "ft")))
    watch.wait_for(r"\b([3-9]|\d\d+)/20000\b")  # a few iterations done
    watch.proc.send_signal(sig)
    rc, err = watch.finish()
    assert rc == EXIT_INTERRUPTED
    assert "saved the best weights so far" in err and str(files / "ft.safetensors") in err
    card = load_model(files / "ft").card
    assert card["finetune"]["stopped"] == "cancelled"
    assert 0 < card["finetune"]["iterations_run"] < 20000


@pytest.fixture
def own_handlers():
    """Puts this process's SIGINT/SIGTERM handlers back after a test that changes them."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _wait_for(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_graceful_stop_restores_handlers_after_one_signal_and_goes_deaf_after_two(own_handlers):
    before, out = signal.getsignal(signal.SIGINT), io.StringIO()
    with GracefulStop("saving", stream=out) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert _wait_for(stop.event.is_set)
    assert "send it again to quit at once" in out.getvalue()
    assert stop.signal_name == "SIGINT" and signal.getsignal(signal.SIGINT) is before

    with pytest.raises(KeyboardInterrupt), GracefulStop("saving", stream=io.StringIO()):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)  # the second signal: quit at once
        time.sleep(5)
    # quitting: a third Ctrl-C can no longer interrupt the clean-up that follows
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN


def test_second_signal_quits_at_once(files):
    watch = _start(*_finetune_args(files, "--iterations", "20000", "-o", str(files / "ft")))
    watch.wait_for(r"\b([3-9]|\d\d+)/20000\b")
    watch.proc.send_signal(signal.SIGINT)
    watch.wait_for("send it again to quit at once")
    # keep pressing Ctrl-C until the process is gone: whenever a repeat lands (mid-save,
    # after the save, while the interpreter shuts down) the status is 130, never a kill
    deadline = time.monotonic() + 60
    while watch.proc.poll() is None and time.monotonic() < deadline:
        watch.proc.send_signal(signal.SIGINT)
        time.sleep(0.02)
    rc, err = watch.finish(timeout=60)
    assert rc == EXIT_INTERRUPTED and "interrupted" in err
    assert not list(files.glob(".ft*"))  # no half-written hidden files


def test_sigint_in_train_saves_the_model_and_says_how_to_resume(files):
    out = files / "trained"
    watch = _start(
        "train", "-o", str(out), "--clean", str(files / "clean"), "--noise", "gaussian:25",
        "--loss", "mse", "--iterations", "20000", "--batch-size", "2", "--patch-size", "32",
        "--arch-config", "n_blocks=1,features=4", "--device", "cpu", "--val-every", "5",
    )  # fmt: skip
    watch.wait_for(r"\b([3-9]|\d\d+)/20000\b")
    watch.proc.send_signal(signal.SIGINT)
    rc, err = watch.finish()
    assert rc == EXIT_INTERRUPTED and "--resume" in err and str(out) in err
    card = load_model(out).card
    assert card["training"]["stopped"] == "interrupted"
    assert 0 < card["training"]["iterations"] < 20000
    assert (files / "trained-checkpoints" / "last.safetensors").is_file()


def test_sigterm_in_cascade_train_keeps_the_model(files):
    out = files / "cas"
    watch = _start(
        "cascade-train", "--clean", str(files / "clean"), "-o", str(out),
        "--inpaint-mse-iterations", "20000", "--batch-size", "2", "--patch-size", "32",
        "--inpaint-features", "4", "--inpaint-blocks", "1", "--restore-features", "8",
        "--restore-layers", "3", "--device", "cpu",
    )  # fmt: skip
    watch.wait_for(r"\] 50/")
    watch.proc.send_signal(signal.SIGTERM)
    rc, err = watch.finish()
    assert rc == EXIT_INTERRUPTED and str(out) in err
    card = load_model(out).card
    assert card["training"]["stopped"] == "interrupted" and card["training"]["iterations"] >= 50


def test_sigterm_during_zarr_overwrite_leaves_no_partial_store(tmp_path):
    zarr = pytest.importorskip("zarr")
    slow = create_model("srresnet", n_blocks=4, features=32)
    save_model(slow, tmp_path / "slow")
    stack = (np.random.default_rng(0).random((200, 128, 128)) * 3000).astype(np.uint16)
    store = zarr.open(
        str(tmp_path / "in.zarr"), mode="w", shape=stack.shape, chunks=(1, 128, 128),
        dtype=stack.dtype,
    )  # fmt: skip
    store[:] = stack
    out = tmp_path / "out"
    (out / "in.zarr").mkdir(parents=True)
    (out / "in.zarr" / "old-result").write_text("kept until the new one is complete")
    watch = _start(
        "denoise", str(tmp_path / "in.zarr"), "-o", str(out), "--model", str(tmp_path / "slow"),
        "--overwrite", "--device", "cpu",
    )  # fmt: skip
    watch.wait_for(r"\b([2-9]|\d\d+)/\d+")
    watch.proc.send_signal(signal.SIGTERM)
    rc, err = watch.finish()
    assert rc == EXIT_INTERRUPTED and "interrupted" in err
    assert sorted(p.name for p in out.iterdir()) == ["in.zarr"]  # no .in.zarr.partial
    assert (out / "in.zarr" / "old-result").is_file()


def test_models_reports_user_models_it_cannot_list(tiny_gray, _user_models, capsys):
    from napari_wgan_denoise.cli import main

    save_user_model(tiny_gray, "fine")
    save_user_model(tiny_gray, "broken")
    card = _user_models / "broken.json"
    card.write_text(card.read_text().replace('"channels": 1', '"channels": 2'))
    assert main(["models"]) == 0
    out, err = capsys.readouterr()
    assert "fine" in out and "broken" not in out
    assert "not listed: broken" in err and "channels must be 1 (gray) or 3 (RGB)" in err


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--overlap", "-2"], "overlap must be at least 0, got -2"),
        (["--overlap", "100000"], "overlap=100000 is larger than the image (64x64 pixels)"),
        (["--tile-size", "0"], "tile_size must be at least 8, got 0"),
    ],
)
def test_denoise_option_errors_are_usage_errors(files, extra, fragment, capsys):
    from napari_wgan_denoise.cli import main

    args = ["denoise", str(files / "single.tif"), "-o", str(files / "o"), "--model"]
    for quiet in (["-q"], []):  # without -q too: a bar drawn before it is wiped
        assert main([*args, str(files / "base"), *quiet, *extra]) == EXIT_USAGE
        err = capsys.readouterr().err
        shown = err.rsplit("\r", 1)[-1]  # what the terminal shows after the last return
        assert fragment in shown and "Traceback" not in err and len(shown.splitlines()) == 1
        assert "tile/s" not in shown
    assert not (files / "o" / "single.tif").exists()


def test_cli_folder_inputs_are_listed_by_the_one_lister(tmp_path):
    """``finetune --noisy FOLDER`` and ``cascade-train --clean FOLDER`` list a folder as
    io.list_images does: natural order, hidden files skipped, an empty folder named."""
    from napari_wgan_denoise.cli.cascade import _image_files
    from napari_wgan_denoise.cli.finetune import read_stack

    frames = tmp_path / "frames"
    frames.mkdir()
    for k in (10, 2):
        tifffile.imwrite(frames / f"frame{k}.tif", np.full((8, 8), k, np.float32))
    tifffile.imwrite(frames / ".frame1.tif", np.zeros((8, 8), np.float32))
    assert read_stack(frames)[:, 0, 0].tolist() == [2, 10]
    assert [p.name for p in _image_files([str(frames)], "clean")] == ["frame2.tif", "frame10.tif"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="stack folder .* holds no images"):
        read_stack(empty)
    with pytest.raises(ValueError, match="clean folder .* holds no images"):
        _image_files([str(empty)], "clean")
