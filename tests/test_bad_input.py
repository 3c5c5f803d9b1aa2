"""Bad input through the Python API: a clear exception naming the argument, key or file,
or a correct result; never a traceback from deep inside, never a silent wrong result
(issue 19). Real tiny models and real files throughout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_wgan_denoise import create_model, denoise, load_model, save_model, save_user_model
from napari_wgan_denoise.errors import InvalidSetting, ModelFileError
from napari_wgan_denoise.io import read_image, read_image_series, write_tiff
from napari_wgan_denoise.output_checks import check_model_output, check_writable
from napari_wgan_denoise.training.finetune import finetune
from napari_wgan_denoise.validation import check_train_settings, load_config_file

PLANE = np.linspace(0, 1000, 48 * 48, dtype=np.float32).reshape(48, 48)

# ---------------------------------------------------------------- denoise arguments (7, 12)


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        (dict(overlap=-1), InvalidSetting, "overlap must be at least 0, got -1"),
        (dict(overlap=-3), InvalidSetting, "overlap must be at least 0, got -3"),
        (dict(overlap=100_000), InvalidSetting, "overlap=100000 is larger than the image"),
        (dict(overlap=2.5), InvalidSetting, "overlap must be a whole number"),
        (dict(tile_size=0), InvalidSetting, "tile_size must be at least 8, got 0"),
        (dict(tile_size="big"), TypeError, "tile_size must be an integer"),
        (dict(batch_size=0), InvalidSetting, "batch_size must be at least 1, got 0"),
        (dict(batch_size=-4), InvalidSetting, "batch_size must be at least 1, got -4"),
        (dict(value_range=(0, 1, 2)), InvalidSetting, "value_range must be two numbers"),
        (dict(value_range=(5, 5)), InvalidSetting, "low < high"),
        (dict(value_range="0,1"), TypeError, "value_range must be a pair"),
        (dict(axes=12), TypeError, "axes must be a string of axis letters"),
        (dict(axes=["Y", "X"]), TypeError, "axes must be a string of axis letters"),
    ],
)
def test_denoise_rejects_bad_arguments(tiny_gray, kwargs, error, fragment):
    with pytest.raises(error, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        denoise(PLANE, tiny_gray, device="cpu", **kwargs)


def test_restore_rejects_negative_overlap():
    from napari_wgan_denoise import restore

    cascade = create_model(
        "cascade", inpaint_features=4, inpaint_blocks=1, restore_features=8, restore_layers=3
    )
    with pytest.raises(InvalidSetting, match="overlap must be at least 0"):
        restore(PLANE, np.zeros(PLANE.shape, bool), cascade, overlap=-2, device="cpu")


def test_a_valid_overlap_still_works(tiny_gray):
    out = denoise(PLANE, tiny_gray, device="cpu", overlap=0, tile_size=16, batch_size=3)
    assert out.shape == PLANE.shape and np.isfinite(out).all()


# ---------------------------------------------------------------- huge intensities (4)


@pytest.mark.parametrize(
    "data",
    [
        np.linspace(1e39, 1e40, 48 * 48).reshape(48, 48),  # float64 above float32's max
        (np.linspace(-1, 1, 48 * 48).reshape(48, 48) * 3e38).astype(np.float32),
        np.linspace(-1, 1, 48 * 48).reshape(48, 48) * 1.7e308,  # float64 near its max
    ],
    ids=["float64-1e40", "float32-pm3e38", "float64-pm1.7e308"],
)
def test_huge_intensities_denoise_correctly(data):
    identity = create_model("srresnet", n_blocks=1, features=4)  # untrained: the identity
    out = denoise(data, identity, device="cpu")
    assert out.dtype == data.dtype and np.isfinite(out).all()
    scale = np.abs(data).max()
    assert np.abs(out / scale - data / scale).max() < 1e-5


def test_huge_intensities_with_a_real_network(tiny_gray):
    data = np.linspace(1e39, 1e40, 48 * 48).reshape(48, 48)
    out = denoise(data, tiny_gray, device="cpu")
    small = denoise(data / 1e36, tiny_gray, device="cpu")  # same image, float32-safe scale
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out / 1e36, small, rtol=1e-4)


# ---------------------------------------------------------------- TIFF series (5)


def test_multi_series_tiff_is_refused_by_single_image_readers(tmp_path):
    path = tmp_path / "two.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(np.zeros((2, 40, 40), np.uint16))
        tw.write(np.ones((30, 30), np.uint16))
    with pytest.raises(ValueError, match="holds 2 image series"):
        read_image(path)
    series = read_image_series(path)
    assert [s.shape for s in series] == [(2, 40, 40), (30, 30)]


def test_write_tiff_writes_every_series(tmp_path):
    arrays = [np.zeros((40, 40), np.uint16), np.full((3, 20, 20), 7, np.float32)]
    write_tiff(tmp_path / "out.tif", arrays)
    back = read_image_series(tmp_path / "out.tif")
    assert [a.shape for a in back] == [(40, 40), (3, 20, 20)]
    assert back[1].dtype == np.float32 and back[1].max() == 7


# ---------------------------------------------------------------- model cards (8, 12)


def _edit_card(path: Path, edit) -> Path:
    card_path = path.with_name(path.name + ".json")
    card = json.loads(card_path.read_text())
    edit(card)
    card_path.write_text(json.dumps(card))
    return card_path


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda c: c["config"].update(features=-4), "config.features must be an integer >= 1"),
        (lambda c: c["config"].update(features="many"), "config.features: expected an integer"),
        (lambda c: c["config"].update(colour=1), "Unknown config key(s) ['colour'] in config"),
        (
            lambda c: c.update(normalisation={"mode": "fixed", "low": 5, "high": 5}),
            "normalisation.high must be greater than normalisation.low",
        ),
        (
            lambda c: c.update(normalisation={"mode": "fixed", "high": 255}),
            "normalisation.low is missing",
        ),
        (lambda c: c.update(normalisation={"mode": "auto"}), "normalisation.mode must be"),
        (lambda c: c.update(channels=2), "channels must be 1 (gray) or 3 (RGB)"),
    ],
)
def test_corrupt_card_is_a_model_file_error(tiny_gray, tmp_path, edit, fragment):
    save_model(tiny_gray, tmp_path / "m")
    card_path = _edit_card(tmp_path / "m", edit)
    with pytest.raises(ModelFileError) as info:
        load_model(tmp_path / "m.safetensors")
    assert str(card_path) in str(info.value)
    assert fragment in str(info.value)


def test_a_broken_user_model_says_why_it_cannot_load(tiny_gray, _user_models):
    save_user_model(tiny_gray, "broken")
    _edit_card(_user_models / "broken", lambda c: c["config"].update(features=-4))
    with pytest.raises(ModelFileError, match="config.features") as info:
        load_model("broken")
    assert "No model named" not in str(info.value) and "broken.json" in str(info.value)
    save_user_model(tiny_gray, "no-weights")
    (_user_models / "no-weights.safetensors").unlink()
    with pytest.raises(ModelFileError, match="weights .* are missing"):
        load_model("no-weights")


def test_equal_fixed_range_in_a_programmatic_card_is_a_value_error(tiny_gray):
    tiny_gray.card["normalisation"] = {"mode": "fixed", "low": 5, "high": 5}
    with pytest.raises(ValueError, match="finite low < high"):
        denoise(PLANE, tiny_gray, device="cpu")


# ---------------------------------------------------------------- training settings (9)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('lr: "fast"\n', "lr: expected a number, got 'fast'"),
        ("iterations: five\n", "iterations: expected an integer, got 'five'"),
        ("iterations: 2.5\n", "iterations: expected an integer"),
        ("arch_config: {features: -3}\n", "arch_config.features must be an integer >= 1"),
        ("arch_config: {n_blocks: many}\n", "arch_config.n_blocks: expected an integer"),
        ("arch_config: 7\n", "arch_config: expected a mapping"),
        ("amp: maybe\n", "amp: expected true or false"),
        ("batch_size: 0\n", "batch_size must be >= 1"),
        ("lr: [1\n", "is not valid YAML at line"),
        ("- a\n- b\n", "must hold a mapping"),
    ],
)
def test_bad_training_config_names_the_key(tmp_path, text, fragment):
    path = tmp_path / "train.yaml"
    path.write_text(text)
    with pytest.raises(InvalidSetting) as info:
        check_train_settings(load_config_file(path), source=path)
    assert fragment in str(info.value) and str(path) in str(info.value)


def test_good_training_config_values_are_converted(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("lr: 1e-4\niterations: '200'\namp: false\narch_config: {features: 8}\n")
    settings = check_train_settings(load_config_file(path), source=path)
    assert settings["lr"] == 1e-4 and settings["iterations"] == 200
    assert settings["amp"] is False and settings["arch_config"] == {"features": 8}


def test_missing_config_file():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config_file("/nonexistent/train.yaml")


# ---------------------------------------------------------------- fine-tuning (1, 6, 10)


def _frames(n: int = 3) -> np.ndarray:
    yy, xx = np.mgrid[:64, :64]
    scene = (1000 + 800 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.float32)
    noise = np.random.default_rng(0).normal(0, 150, (n, 64, 64)).astype(np.float32)
    return scene + noise


SMALL = dict(batch_size=2, patch_size=32, val_every=2, save=False)


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        (dict(mode="two-stage", iterations=0), InvalidSetting, "iterations must be at least 1"),
        (dict(mode="two-stage", iterations=-5), InvalidSetting, "iterations must be at least 1"),
        (dict(mode="two-stage", iterations=2, stages=0), InvalidSetting, "stages must be at"),
        (dict(mode="two-stage", iterations=2, time_budget=-1), InvalidSetting, "time_budget"),
        (dict(mode="n2n", axis=0, iterations=2, single=True), InvalidSetting, "single image"),
    ],
)
def test_finetune_rejects_bad_arguments(tiny_gray, kwargs, error, fragment):
    noisy = _frames()[0] if kwargs.pop("single", False) else _frames()
    with pytest.raises(error, match=fragment):
        finetune(tiny_gray, noisy, **{**SMALL, **kwargs})


def test_finetune_refuses_a_cascade_base():
    cascade = create_model(
        "cascade", inpaint_features=4, inpaint_blocks=1, restore_features=8, restore_layers=3
    )
    with pytest.raises(InvalidSetting, match="fine-tuning adapts denoising models"):
        finetune(cascade, _frames(), mode="two-stage", iterations=2, **SMALL)


def test_finetune_never_replaces_a_user_model_silently(tiny_gray, _user_models):
    save_user_model(tiny_gray, "mine")
    before = (_user_models / "mine.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        finetune(tiny_gray, _frames(), mode="two-stage", iterations=2, name="mine", val_every=2)
    assert (_user_models / "mine.safetensors").read_bytes() == before
    with pytest.raises(InvalidSetting, match="shipped model"):
        finetune(tiny_gray, _frames(), mode="two-stage", iterations=2, name="fluo-mse-fast")
    model = finetune(
        tiny_gray,
        _frames(),
        mode="two-stage",
        iterations=2,
        name="mine",
        overwrite=True,
        batch_size=2,
        patch_size=32,
        val_every=2,
    )
    assert model.card["name"] == "mine"
    assert load_model("mine").card["finetune"]["iterations_run"] == 2


def test_finetune_stopped_between_validations_scores_the_last_weights(tiny_gray):
    import threading

    stop = threading.Event()

    def progress(info):
        if info["iteration"] >= 3:
            stop.set()

    model = finetune(
        tiny_gray,
        _frames(4),
        mode="paired",
        clean=_frames(4),
        iterations=50,
        batch_size=2,
        patch_size=32,
        val_every=40,
        save=False,
        cancel=stop,
        progress=progress,
    )
    ft = model.card["finetune"]
    assert ft["stopped"] == "cancelled" and ft["iterations_run"] == 3
    assert ft["history"][-1]["iteration"] == 3  # validated when it stopped


# ---------------------------------------------------------------- outputs (1, 3)


def test_model_output_checks_both_files(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(FileExistsError, match="x.json already exists"):
        check_model_output(tmp_path / "x")
    check_model_output(tmp_path / "x", overwrite=True)


def test_unwritable_outputs_are_reported_before_work(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        check_writable(tmp_path / "file" / "sub")
    check_writable(tmp_path / "new" / "deeper")  # creatable: fine, and nothing is left
    assert not (tmp_path / "new").exists()
    try:  # sysfs is read-only even for root; elsewhere there may be no such folder
        check_writable("/sys/wgan-denoise-test")
    except PermissionError as exc:
        assert "Cannot write the output folder /sys/wgan-denoise-test" in str(exc)
    else:
        pytest.skip("no read-only folder to test with")


# ---------------------------------------------------------------- napari API (12)


def test_denoise_layer_of_an_array_has_a_short_message():
    pytest.importorskip("napari")
    from napari_wgan_denoise.napari.api import denoise_layer

    data = np.arange(200 * 200, dtype=np.float32).reshape(200, 200)
    with pytest.raises(ValueError) as info:
        denoise_layer(data)
    message = str(info.value)
    assert "array of shape (200, 200) and dtype float32" in message
    assert len(message) < 300 and "[" not in message


@pytest.mark.parametrize(
    ("values", "error", "fragment"),
    [
        ({"lr": "fast"}, InvalidSetting, "lr: expected a number, got 'fast'"),
        ({"iterations": "five"}, InvalidSetting, "iterations: expected an integer"),
        ({"iterations": 0}, ValueError, "iterations must be >= 1, got 0"),
        ({"iterations": -5}, ValueError, "iterations must be >= 1, got -5"),
    ],
)
def test_train_and_cascade_configs_check_types_in_the_core(values, error, fragment):
    from napari_wgan_denoise.training.cascade import CascadeTrainConfig
    from napari_wgan_denoise.training.trainer import TrainConfig

    with pytest.raises(error, match=fragment):
        TrainConfig.from_dict(values).validate()
    if "lr" in values:
        with pytest.raises(error, match=fragment):
            CascadeTrainConfig.from_dict(values)


def test_denoise_lazy_checks_options_before_making_the_store(tiny_gray, tmp_path):
    pytest.importorskip("dask")
    pytest.importorskip("zarr")
    from napari_wgan_denoise.inference.lazy import denoise_lazy

    with pytest.raises(InvalidSetting, match="overlap must be at least 0"):
        denoise_lazy(np.stack([PLANE] * 2), tiny_gray, out=tmp_path / "o.zarr", overlap=-1)
    assert list(tmp_path.iterdir()) == []  # neither the store nor a .partial one


@pytest.mark.parametrize(
    ("exc", "status", "fragment"),
    [
        (InvalidSetting("overlap must be at least 0"), 2, "overlap must be at least 0"),
        (FileExistsError("out.tif already exists"), 2, "out.tif already exists"),
        (ModelFileError("Model card m.json: config.features"), 3, "m.json"),
        (FileNotFoundError("Input file a.tif does not exist."), 3, "a.tif does not exist"),
        (PermissionError(13, "Permission denied", "/data/out"), 1, "Permission denied: /data/out"),
        (MemoryError("Unable to allocate 149. GiB"), 1, "out of memory (Unable to allocate"),
        (RuntimeError("boom\nsecond line"), 1, "unexpected RuntimeError: boom second line"),
        (KeyboardInterrupt(), 130, "KeyboardInterrupt"),
    ],
)
def test_cli_error_statuses_and_one_line_messages(exc, status, fragment):
    from napari_wgan_denoise.errors import describe_error, exit_status

    assert exit_status(exc) == status
    text = describe_error(exc)
    assert fragment in text and "\n" not in text
