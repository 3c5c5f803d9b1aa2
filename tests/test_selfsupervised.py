"""Self-supervised fine-tuning, the noise check, two-stage surrogates and the run's
bookkeeping (issue 15): real models (tiny ones and the shipped weights), real arrays."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_wgan_denoise import list_models, load_model
from napari_wgan_denoise.data.noise import correlate
from napari_wgan_denoise.training.finetune import finetune, noise_check
from napari_wgan_denoise.training.finetune.data import Session, normalise
from napari_wgan_denoise.training.finetune.noise import (
    correlated_noise_curve,
    stack_noise_curve,
    stack_noise_model,
)
from napari_wgan_denoise.training.finetune.selfsupervised import (
    SS_ITERATIONS,
    SS_LR,
    STRUCT_GRID,
    blind_spot_input,
    blind_spot_mask,
    mc_sure,
    neighbor_subsample,
    recorrupt,
)
from napari_wgan_denoise.training.trainer import run_whole

SMALL = dict(iterations=8, batch_size=2, patch_size=32, val_every=4)


def _scene(shape=(96, 96)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (60 + 40 * np.sin(xx / 9.0) * np.cos(yy / 11.0) + 0.2 * xx).astype(np.float64)


# ------------------------------------------------------------------ the losses' pieces


def test_neighbor_subsample_takes_two_different_neighbours_of_each_cell():
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    g1, g2, _ = neighbor_subsample(x, torch.Generator().manual_seed(0))
    assert g1.shape == g2.shape == (2, 1, 4, 4)
    # pixel value v sits at row (v % 64) // 8, column v % 8
    r1, c1 = (g1 % 64) // 8, g1 % 8
    r2, c2 = (g2 % 64) // 8, g2 % 8
    cell_rows, cell_cols = torch.arange(4).view(1, 1, 4, 1), torch.arange(4).view(1, 1, 1, 4)
    assert torch.equal(r1 // 2, cell_rows.expand_as(r1)) and torch.equal(
        c1 // 2, cell_cols.expand_as(c1)
    )
    assert torch.equal(r2 // 2, cell_rows.expand_as(r2)) and torch.equal(
        c2 // 2, cell_cols.expand_as(c2)
    )
    assert torch.all((r1 - r2).abs() + (c1 - c2).abs() == 1)  # 4-neighbours, never the same


@pytest.mark.parametrize("structured", [False, True])
def test_blind_spot_hides_the_masked_pixels(structured):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 36, 36, generator=g)
    mask = blind_spot_mask(tuple(x.shape), g, structured=structured)
    grid = STRUCT_GRID if structured else 4
    assert int(mask.sum()) == 2 * (36 // grid) ** 2  # one pixel per cell
    hidden = mask
    if structured:  # the whole 3x3 block around each masked pixel is hidden
        hidden = torch.nn.functional.max_pool2d(mask.float(), 3, stride=1, padding=1) > 0
    spiked = x.clone()
    spiked[hidden] = 100.0  # what the network must not see
    masked = blind_spot_input(spiked, mask, structured, g)
    assert float(masked[hidden].max()) < 2.0  # replaced by (a median of) neighbours
    if structured:  # random pixels of the ring (Chebyshev distance 2): the block is not flat
        assert float(masked[hidden].std()) > 0.1
        pos = torch.arange(36 * 36, dtype=torch.float32).reshape(1, 1, 36, 36)
        drawn = blind_spot_input(pos, mask[:1], True, g)
        for cy, cx in mask[0, 0].nonzero().tolist():
            for v in drawn[0, 0, cy - 1 : cy + 2, cx - 1 : cx + 2].flatten().tolist():
                py, px = divmod(int(v), 36)
                assert max(abs(py - cy), abs(px - cx)) == 2
    keep = ~hidden.expand_as(x)  # every other pixel is left as it was
    assert torch.equal(masked[keep], spiked[keep])


# ------------------------------------------------------------------ the noise check


def _check(noisy_planes):
    model = load_model("fluo-mse-fast")  # the shipped weights

    def run(x):
        return run_whole(model.network.eval(), x, torch.device("cpu"))

    planes = [normalise(p.astype(np.float32), model)[0] for p in noisy_planes]
    return noise_check(planes, run)


def test_noise_check_flags_correlated_noise():
    rng = np.random.default_rng(0)
    clean = _scene((128, 128))
    white = rng.normal(0, 12, (3, 128, 128))
    correlated = np.stack([ndimage.uniform_filter(w, 3) * 3 for w in white])  # 3x3 box
    corr = np.corrcoef(correlated[0, :, :-1].ravel(), correlated[0, :, 1:].ravel())[0, 1]
    assert corr > 0.5  # the synthetic noise itself
    report = _check(clean + correlated)
    assert report.correlated and report.correlation >= 0.3
    assert "spatially correlated" in report.message()


def test_noise_check_passes_poisson_gaussian_noise_and_sees_its_signal_dependence():
    rng = np.random.default_rng(1)
    clean = _scene((128, 128))
    noisy = np.stack([rng.poisson(clean) + rng.normal(0, 3, clean.shape) for _ in range(3)])
    report = _check(noisy)
    assert not report.correlated and abs(report.correlation) < 0.3
    assert report.gain > 0 and report.signal_dependent
    assert "pixel-independent" in report.message()


def test_noise_check_does_not_flag_weak_pixel_independent_noise_on_fine_structure():
    """Noise of 2 in 255 on a photograph: over the whole plane the reference model's
    residual is mostly the fine structure it smooths away (it read 0.20-0.31 and the check
    flagged it); inside the flattest blocks it is the noise."""
    import skimage.data

    rng = np.random.default_rng(4)
    clean = skimage.data.camera()[128:384, 128:384].astype(np.float64)
    report = _check(np.stack([clean + rng.normal(0, 2, clean.shape) for _ in range(3)]))
    assert not report.correlated and report.correlation < 0.12


def test_noise_check_says_when_the_base_already_removes_most_of_the_noise():
    """A base whose residual is (nearly) all of the stack's noise is flagged as matched and
    the message says to compare; one that leaves a quarter of it in (as the gray base does
    on FMD: 0.60-0.66 of the variance removed) is not."""
    rng = np.random.default_rng(3)
    clean = np.stack([_scene((128, 128))[None] / 255.0] * 3).astype(np.float32)
    noise = rng.normal(0, 0.05, clean.shape).astype(np.float32)
    planes = list(clean + noise)

    def perfect(y):  # the clean plane of the noisy plane y
        return next(c for p, c in zip(planes, clean) if np.array_equal(p, y))

    def partly(y):
        return perfect(y) + 0.25 * (y - perfect(y))  # removes 0.75^2 of the noise variance

    matched, partial = noise_check(planes, perfect), noise_check(planes, partly)
    assert matched.removed == pytest.approx(1.0, abs=0.15) and matched.matched
    assert "compare the result" in matched.message()
    assert partial.removed == pytest.approx(0.5625, abs=0.1) and not partial.matched
    assert "compare" not in partial.message()
    assert partial.as_dict()["removed"] == round(partial.removed, 4)


# ------------------------------------------------------------------ the mode


def _noisy_stack(rng, n=5, correlated=False):
    clean = np.stack([_scene()] * n) * 20
    noise = rng.normal(0, 150, clean.shape)
    if correlated:
        noise = np.stack([ndimage.uniform_filter(w, 3) * 3 for w in noise])
    return (clean + noise).astype(np.float32)


def test_stack_noise_model_measures_poisson_gaussian_noise_from_the_stack_alone():
    rng = np.random.default_rng(2)
    clean = _scene((256, 256)) / 255.0  # a piecewise-smooth scene, 0..~0.8
    gain, offset = 0.01, 4e-4  # var = gain * mean + offset, as the network scale has it
    planes = [
        (clean + rng.normal(0, 1, clean.shape) * np.sqrt(gain * clean + offset))[None]
        for _ in range(3)
    ]
    g, o = stack_noise_model([p.astype(np.float32) for p in planes])
    var_mid, fit_mid = gain * 0.4 + offset, g * 0.4 + o
    assert abs(fit_mid - var_mid) < 0.2 * var_mid, (g, o)
    assert abs(g - gain) < 0.3 * gain


def test_stack_noise_curve_follows_a_variance_that_is_not_a_line():
    # a camera's noise near its offset: no signal-dependent part below 0.2 (the darkest
    # 8-bit raw frames' clipping makes it so); the line through the bins misses that end,
    # the curve follows it
    rng = np.random.default_rng(6)
    clean = _scene((256, 256)) / 255.0 * 0.6 + 0.05  # bins from 0.14 to 0.36

    def true_var(x):
        return 0.02 * np.maximum(x - 0.2, 0) + 2e-5

    planes = [
        (clean + rng.normal(0, 1, clean.shape) * np.sqrt(true_var(clean)))[None].astype(np.float32)
        for _ in range(3)
    ]
    curve = stack_noise_curve(planes)
    g, o = stack_noise_model(planes)
    levels = np.array([0.15, 0.25, 0.3, 0.34])
    got = curve.variance(torch.tensor(levels)).numpy()
    want = true_var(levels)
    assert np.all(np.abs(got - want) < 0.1 * want + 5e-6), (got, want)
    assert g * 0.15 + o < 0  # the line: no noise at all where the stack has some
    assert curve.variance(torch.tensor([-1.0, 5.0])).min() >= curve.floor  # extrapolated
    assert curve.variance(torch.tensor([5.0])) > got[-1]  # the line's slope beyond the bins


def test_recorrupted_pairs_have_independent_noise():
    g = torch.Generator().manual_seed(0)
    clean = torch.full((4, 1, 64, 64), 0.5)
    sigma = 0.1
    noisy = clean + sigma * torch.randn(clean.shape, generator=g)
    source, target = recorrupt(noisy, (0.0, sigma**2), g, alpha=1.0)
    a, b = (source - clean).ravel(), (target - clean).ravel()
    assert abs(float(a.var()) - 2 * sigma**2) < 0.1 * sigma**2  # (1 + alpha^2) sigma^2
    cov = float(((a - a.mean()) * (b - b.mean())).mean())
    assert abs(cov) < 0.05 * sigma**2  # no shared noise: a Noise2Noise pair


def test_correlated_recorrupted_pairs_share_the_correlation_not_the_noise():
    g = torch.Generator().manual_seed(0)
    clean = torch.full((4, 1, 96, 96), 0.5)
    sigma, rho = 0.1, 0.6
    noisy = clean + sigma * correlate(torch.randn(clean.shape, generator=g), torch.full((4,), rho))
    source, target = recorrupt(noisy, (0.0, sigma**2), g, alpha=1.0, correlation=rho)
    a, b = source - clean, target - clean
    assert abs(float(a.var()) - 2 * sigma**2) < 0.1 * sigma**2
    assert abs(_lag1(a) - rho) < 0.05 and abs(_lag1(b) - rho) < 0.05
    cov = float(((a - a.mean()) * (b - b.mean())).mean())
    assert abs(cov) < 0.05 * sigma**2
    white, _ = recorrupt(noisy, (0.0, sigma**2), g, alpha=1.0)  # the white pair is not
    assert _lag1(white - clean) < rho - 0.2


def _lag1(x: torch.Tensor) -> float:
    return float(np.corrcoef(x[..., :-1].ravel(), x[..., 1:].ravel())[0, 1])


def test_correlated_noise_curve_reads_the_variance_the_high_pass_misses():
    rng = np.random.default_rng(4)
    clean = _scene((256, 256)) / 255.0
    gain, offset = 0.01, 4e-4
    std = np.sqrt(gain * clean + offset)
    planes = []
    for _ in range(3):
        w = torch.from_numpy(rng.normal(0, 1, (1, 1, 256, 256)).astype(np.float32))
        n = correlate(w, torch.tensor([0.6]))[0].numpy()
        planes.append((clean + n * std).astype(np.float32))
    var_mid = gain * 0.4 + offset
    curve = correlated_noise_curve(planes, 0.6)
    got = float(curve.variance(torch.tensor([0.4]))[0])
    assert abs(got - var_mid) < 0.25 * var_mid, curve
    g, o = stack_noise_model(planes)
    assert g * 0.4 + o < 0.3 * var_mid  # the high-pass estimate sees little of it


def test_mc_sure_with_correlated_noise_estimates_the_error():
    clean = (_scene((256, 256)) / 200.0).astype(np.float32)[None]
    w = torch.from_numpy(np.random.default_rng(5).normal(0, 1, (1, 1, 256, 256)))
    n = 0.05 * correlate(w.float(), torch.tensor([0.6]))[0].numpy()
    noisy = (clean + n).astype(np.float32)
    for width in (0.7, 2.0):

        def blur(x, width=width):
            return ndimage.gaussian_filter(x, (0, width, width)).astype(np.float32)

        true = float(np.mean((blur(noisy) - clean) ** 2))
        g = torch.Generator().manual_seed(0)
        est = mc_sure(blur, noisy, (0.0, 0.05**2), g, correlation=0.6)
        assert abs(est - true) < 0.25 * true, (width, est, true)
        white = mc_sure(blur, noisy, (0.0, 0.05**2), torch.Generator().manual_seed(0))
        assert abs(white - true) > abs(est - true)  # SURE for white noise misjudges it


def test_mc_sure_estimates_the_error_against_the_unseen_clean_image():
    clean = (_scene((256, 256)) / 200.0).astype(np.float32)[None]
    noisy = (clean + np.random.default_rng(3).normal(0, 0.05, clean.shape)).astype(np.float32)
    errors = {}
    for width in (0.5, 1.5, 4.0):

        def blur(x, width=width):
            return ndimage.gaussian_filter(x, (0, width, width)).astype(np.float32)

        true = float(np.mean((blur(noisy) - clean) ** 2))
        est = mc_sure(blur, noisy, (0.0, 0.05**2), torch.Generator().manual_seed(0))
        assert abs(est - true) < 0.25 * true, (width, est, true)
        errors[width] = est
    assert min(errors, key=errors.get) == 1.5  # it ranks the filters as the clean image does


def test_recorrupted_is_the_default_and_records_its_noise_model(rng):
    base = load_model("fluo-mse-fast")
    model = finetune(base, _noisy_stack(rng), mode="self-supervised", save=False, **SMALL)
    ft = model.card["finetune"]
    assert not ft["data"]["noise_check"]["correlated"]
    assert ft["data"]["self_supervised"]["loss"] == "recorrupted"
    curve = ft["data"]["self_supervised"]["noise_model"]  # the variance bin by bin
    assert len(curve["means"]) == len(curve["variances"]) >= 2
    assert curve["means"] == sorted(curve["means"])
    assert min(curve["variances"]) > 0  # Gaussian noise of sigma 150 on a ~0..5000 scene
    assert ft["lr"] == SS_LR["recorrupted"]
    assert model.card["metrics"]["validation_metric"] == "val_sure_mse"


def test_correlated_noise_recorrupts_with_the_measured_correlation(rng):
    white = finetune(
        load_model("fluo-mse-fast"), _noisy_stack(rng), mode="self-supervised", save=False, **SMALL
    )
    assert "correlation" not in white.card["finetune"]["data"]["self_supervised"]
    model = finetune(
        load_model("fluo-mse-fast"),
        _noisy_stack(rng, correlated=True),  # a 3x3 box: neighbour correlation 0.67
        mode="self-supervised",
        save=False,
        **SMALL,
    )
    ft = model.card["finetune"]
    ss = ft["data"]["self_supervised"]
    assert ft["data"]["noise_check"]["correlated"]
    assert ss["loss"] == "recorrupted" and 0.4 <= ss["correlation"] <= 0.7
    assert ft["lr"] == SS_LR["recorrupted"] and ft["lr_schedule"] == "cosine"
    assert model.card["metrics"]["validation_metric"] == "val_sure_mse"


def test_the_default_length_follows_the_loss(rng):
    progress = []
    model = finetune(
        load_model("fluo-mse-fast"),
        _noisy_stack(rng, correlated=True),
        mode="self-supervised",
        ss_loss="blind-spot",
        save=False,
        progress=progress.append,
        time_budget=1.0,  # the length is what is checked, not the run
        **{k: v for k, v in SMALL.items() if k != "iterations"},
    )
    assert model.card["finetune"]["data"]["self_supervised"]["loss"] == "blind-spot"
    assert progress[0]["total"] == SS_ITERATIONS["blind-spot"]  # the noise-check report
    assert model.card["finetune"]["iterations_asked"] == SS_ITERATIONS["blind-spot"]


@pytest.mark.parametrize("ss_loss", ["neighbor2neighbor", "blind-spot", "recorrupted"])
def test_self_supervised_runs_with_noisy_data_only(tiny_gray, rng, ss_loss):
    progress = []
    model = finetune(
        tiny_gray,
        _noisy_stack(rng),
        mode="self-supervised",
        ss_loss=ss_loss,
        save=False,
        progress=progress.append,
        lr=1e-3,
        **SMALL,
    )
    ft = model.card["finetune"]
    assert ft["data"]["self_supervised"]["loss"] == ss_loss
    metric = "val_sure_mse" if ss_loss == "recorrupted" else "val_ss_loss"
    assert model.card["metrics"]["validation_metric"] == metric
    assert ft["iterations_run"] == 8 and ft["batch_size"] == 2
    assert "noise_check" in progress[0] and progress[0]["message"].startswith("Noise check")
    timed = [p for p in progress if "eta_s" in p]
    assert timed and timed[-1]["eta_s"] == 0 and timed[0]["seconds_per_iteration"] > 0
    for a, b in zip(tiny_gray.network.parameters(), model.network.parameters()):
        assert a is not b


def test_correlated_noise_switches_blind_spot_to_a_structured_mask(tiny_gray, rng):
    kw = dict(mode="self-supervised", ss_loss="blind-spot", save=False, **SMALL)
    corr = finetune(load_model("fluo-mse-fast"), _noisy_stack(rng, correlated=True), **kw)
    assert corr.card["finetune"]["data"]["noise_check"]["correlated"]
    assert corr.card["finetune"]["data"]["self_supervised"]["structured"] is True
    forced = finetune(tiny_gray, _noisy_stack(rng), structured=False, **kw)
    assert forced.card["finetune"]["data"]["self_supervised"]["structured"] is False


def test_self_supervised_bad_loss_is_refused(tiny_gray, rng):
    with pytest.raises(ValueError, match="ss_loss must be one of"):
        finetune(tiny_gray, _noisy_stack(rng), mode="self-supervised", ss_loss="n2v", **SMALL)


# ------------------------------------------------------------------ two-stage surrogates


def test_flip_rotate_ensemble_is_equivariant(tiny_unet, rng):
    x = rng.random((1, 32, 32)).astype(np.float32)
    s = Session(tiny_unet, [x], None, None)
    tiny_unet.network.eval()
    out = s.run_ensemble(x)
    turned = s.run_ensemble(np.ascontiguousarray(np.rot90(x, 1, axes=(1, 2))))
    np.testing.assert_allclose(np.rot90(out, 1, axes=(1, 2)), turned, atol=1e-5)
    assert not np.allclose(out, s.run_network(x), atol=1e-6)  # an average, not one pass


@pytest.mark.parametrize("kind", ["base", "ensemble", "self-supervised"])
def test_two_stage_surrogate_kinds(tiny_gray, rng, kind):
    model = finetune(
        tiny_gray, _noisy_stack(rng, n=2), mode="two-stage", surrogates=kind, save=False, **SMALL
    )
    assert model.card["finetune"]["data"]["surrogates"] == kind


def test_two_stage_defaults_to_self_supervised_surrogates_and_reports_making_them(rng):
    progress, cancel = [], threading.Event()

    def on_progress(info):
        progress.append(info)
        if "status" in info and info["status"].endswith("20 / 30"):
            cancel.set()  # closing the widget while the surrogates are made

    kw = dict(mode="two-stage", save=False, cancel=cancel, progress=on_progress)
    model = finetune(
        load_model("fluo-mse-fast"), _noisy_stack(rng, n=2), **kw, **SMALL | {"iterations": 30}
    )
    ft = model.card["finetune"]
    assert ft["data"]["surrogates"] == "self-supervised"
    assert ft["data"]["self_supervised"]["loss"] == "recorrupted"
    statuses = [p["status"] for p in progress if "status" in p]
    assert statuses[0].startswith("Making the surrogate targets") and len(statuses) == 2
    assert ft["stopped"] == "cancelled" and ft["iterations_run"] == 0 and not ft["saved"]


# ------------------------------------------------------------------ nothing to save


def test_stopping_before_the_first_improvement_saves_nothing(tiny_gray, rng):
    cancel = threading.Event()

    def progress(info):
        cancel.set()  # at the noise check, before the first iteration

    model = finetune(
        tiny_gray,
        _noisy_stack(rng),
        mode="self-supervised",
        name="never-better",
        progress=progress,
        cancel=cancel,
        **SMALL,
    )
    ft = model.card["finetune"]
    assert ft["stopped"] == "cancelled" and ft["best_iteration"] == 0
    assert ft["saved"] is False and not ft["improved"]
    assert "never-better" not in list_models()


def test_mode_defaults_are_the_fast_sizes(tiny_gray, rng):
    noisy = _noisy_stack(rng, n=2)
    paired = finetune(tiny_gray, noisy, mode="paired", clean=noisy, iterations=1, save=False)
    ss = finetune(tiny_gray, noisy, mode="self-supervised", iterations=1, save=False)
    assert (paired.card["finetune"]["batch_size"], paired.card["finetune"]["patch_size"]) == (4, 48)
    assert (ss.card["finetune"]["batch_size"], ss.card["finetune"]["patch_size"]) == (8, 64)


def test_cli_self_supervised_writes_only_an_improved_model(tiny_gray, rng, tmp_path, capsys):
    import tifffile

    from napari_wgan_denoise import save_model
    from napari_wgan_denoise.cli import main

    save_model(tiny_gray, tmp_path / "base")
    tifffile.imwrite(tmp_path / "noisy.tif", _noisy_stack(rng, n=4))
    argv = ["finetune", "--model", str(tmp_path / "base"), "--noisy", str(tmp_path / "noisy.tif")]
    argv += ["--mode", "self-supervised", "--ss-loss", "blind-spot", "--iterations", "6"]
    argv += ["--batch-size", "2", "--patch-size", "32", "--lr", "1e-3", "-o", str(tmp_path / "ft")]
    rc = main(argv)
    err = capsys.readouterr().err
    assert "Noise check:" in err  # one line before training
    written = (tmp_path / "ft.safetensors").exists()
    assert rc in (0, 1) and written == (rc == 0)
    if written:
        ft = load_model(tmp_path / "ft").card["finetune"]
        assert ft["improved"] and ft["data"]["self_supervised"]["loss"] == "blind-spot"
    else:
        assert "nothing saved" in err


def test_cli_default_length_follows_the_loss(rng, tmp_path, capsys):
    """Without --iterations the CLI runs as long as the API does: the blind-spot loss's
    length (not the recorrupted loss's 300)."""
    import tifffile

    from napari_wgan_denoise.cli import main

    tifffile.imwrite(tmp_path / "noisy.tif", _noisy_stack(rng, correlated=True))
    argv = ["finetune", "--model", "fluo-mse-fast", "--noisy", str(tmp_path / "noisy.tif")]
    argv += ["--mode", "self-supervised", "--ss-loss", "blind-spot", "--time-budget", "1"]
    argv += ["--batch-size", "2"]
    argv += ["--patch-size", "32", "-o", str(tmp_path / "ft")]
    rc = main(argv)
    err = capsys.readouterr().err
    assert "correlated" in err.lower()
    assert f"/{SS_ITERATIONS['blind-spot']}" in err  # the progress bar's total
    if rc == 0:
        ft = load_model(tmp_path / "ft").card["finetune"]
        assert ft["iterations_asked"] == SS_ITERATIONS["blind-spot"]


def test_iterations_default_per_mode():
    """Left at None, the length is the mode's (and self-supervised loss's) default."""
    from napari_wgan_denoise.training.finetune import FinetuneConfig
    from napari_wgan_denoise.training.finetune.strategies import strategy_for

    assert strategy_for(FinetuneConfig(mode="self-supervised")).config.iterations == 300
    nb2nb = FinetuneConfig(mode="self-supervised", ss_loss="neighbor2neighbor")
    assert strategy_for(nb2nb).config.iterations == 1000
    assert strategy_for(FinetuneConfig(mode="paired")).config.iterations == 500
    assert strategy_for(FinetuneConfig(mode="two-stage")).config.iterations == 300
    assert strategy_for(FinetuneConfig(mode="n2n", iterations=7)).config.iterations == 7


@pytest.mark.parametrize("rho", [0.0, 0.3])
def test_noise_check_does_not_depend_on_a_base_that_leaves_correlated_noise_in(rho):
    """The gray base was trained on white noise: its residual on correlated noise is nearly
    white. The check must still flag correlation 0.3 and pass pixel-independent noise."""
    from napari_wgan_denoise.data.noise import correlate

    gen = torch.Generator().manual_seed(4)
    clean = torch.from_numpy(_scene((192, 192)) / 255.0).float()[None, None]
    noisy = torch.poisson(clean * 30, generator=gen) / 30
    noisy = clean + correlate(noisy - clean, torch.tensor([rho])) if rho else noisy
    gray = load_model("gray-mse-fast").network.eval()

    def run(x):
        return run_whole(gray, x, torch.device("cpu"))

    planes = [noisy[0].numpy(), noisy[0].numpy()[:, ::-1].copy()]
    report = noise_check(planes, run)
    assert report.correlated == (rho > 0), report
    if rho:
        assert report.base_correlation < report.correlation  # the base alone would miss it
