"""``denoise``: shapes, dtypes, tiling, devices, progress, cancellation and bad input."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_wgan_denoise import Cancelled, denoise
from napari_wgan_denoise.inference import resolve_device


def _noisy(rng, shape, dtype):
    base = np.linspace(0, 1, shape[-1])[None, :] * np.linspace(0.2, 1, shape[-2])[:, None]
    img = base + 0.1 * rng.standard_normal(shape)
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        top = 255 if dtype == np.uint8 else 4000
        return np.clip(
            img * top + (info.min if info.min < 0 else 0) * 0, info.min, info.max
        ).astype(dtype)
    return (img * 100).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
def test_dtype_and_shape_round_trip(tiny_gray, rng, dtype):
    img = _noisy(rng, (37, 45), dtype)
    out = denoise(img, tiny_gray, tile_size=64)
    assert out.shape == img.shape and out.dtype == img.dtype
    assert not np.array_equal(out, img)  # the random network changed something
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        assert out.min() >= info.min and out.max() <= info.max
    # intensities stay in the input's neighbourhood: the map back undoes the normalisation
    assert abs(float(out.mean()) - float(img.mean())) < 0.2 * (float(img.max()) - float(img.min()))


def test_uint8_is_clipped_not_wrapped(tiny_gray):
    img = np.zeros((32, 32), np.uint8)
    img[:, 16:] = 255
    out = denoise(img, tiny_gray, tile_size=64)
    assert out.dtype == np.uint8
    # a wrapped overflow would put dark pixels into the bright half
    assert out[:, 24:].mean() > 200 and out[:, :8].mean() < 55


@pytest.mark.parametrize("shape", [(3, 40, 36), (2, 3, 33, 40)])
def test_stacks_are_processed_plane_by_plane(tiny_gray, rng, shape):
    stack = _noisy(rng, shape, np.uint16)
    out = denoise(stack, tiny_gray, tile_size=64)
    assert out.shape == stack.shape and out.dtype == np.uint16
    first = denoise(stack[(0,) * (len(shape) - 2)], tiny_gray, tile_size=64)
    np.testing.assert_array_equal(out[(0,) * (len(shape) - 2)], first)


def test_rgb(tiny_rgb, rng):
    img = (rng.random((40, 50, 3)) * 255).astype(np.uint8)
    out = denoise(img, tiny_rgb, tile_size=64)
    assert out.shape == img.shape and out.dtype == np.uint8
    stack = np.stack([img, img])
    out2 = denoise(stack, tiny_rgb, tile_size=64)
    np.testing.assert_array_equal(out2[1], out)


def test_axes_override(tiny_gray, tiny_rgb, rng):
    cyx = _noisy(rng, (2, 40, 36), np.float32)
    yxc = np.moveaxis(cyx, 0, -1).copy()
    a = denoise(cyx, tiny_gray, axes="CYX", tile_size=64)
    b = denoise(yxc, tiny_gray, axes="YXC", tile_size=64)
    np.testing.assert_allclose(np.moveaxis(b, -1, 0), a, atol=1e-5)
    rgb = (rng.random((3, 30, 30)) * 255).astype(np.uint8)
    out = denoise(rgb, tiny_rgb, axes="CYX", tile_size=64)
    ref = denoise(np.moveaxis(rgb, 0, -1).copy(), tiny_rgb, tile_size=64)
    np.testing.assert_array_equal(np.moveaxis(out, 0, -1), ref)


@pytest.mark.parametrize("model_name", ["tiny_gray", "tiny_unet"])
def test_result_does_not_depend_on_tile_size(request, rng, model_name):
    model = request.getfixturevalue(model_name)
    img = _noisy(rng, (150, 210), np.float32)
    whole = denoise(img, model, tile_size=1024)
    for tile in (64, 96):
        tiled = denoise(img, model, tile_size=tile)
        span = float(img.max() - img.min())
        assert np.abs(tiled - whole).max() <= 1e-4 * span


def test_no_seams_with_small_overlap(tiny_gray, rng):
    """Even with less context than the receptive field, tiles are cross-faded: the error is
    spread smoothly instead of jumping at tile borders."""
    img = _noisy(rng, (128, 128), np.float32)
    whole = denoise(img, tiny_gray, tile_size=1024)
    tiled = denoise(img, tiny_gray, tile_size=48, overlap=4)
    err = np.abs(tiled - whole)
    assert err.max() < 0.05 * float(img.max() - img.min())


def test_small_images_are_padded(tiny_gray, tiny_unet):
    for model in (tiny_gray, tiny_unet):
        for shape in [(1, 5), (3, 3), (7, 2), (9, 13)]:
            img = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
            out = denoise(img, model)
            assert out.shape == shape


def test_progress_and_cancel(tiny_gray, rng):
    img = _noisy(rng, (4, 100, 100), np.float32)
    calls = []
    denoise(img, tiny_gray, tile_size=64, batch_size=1, progress=lambda d, t: calls.append((d, t)))
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] and len(calls) > 4
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)

    cancel = threading.Event()
    seen = []

    def progress(done, total):
        seen.append(done)
        if done >= 3:
            cancel.set()

    with pytest.raises(Cancelled, match="cancelled"):
        denoise(img, tiny_gray, tile_size=64, batch_size=1, progress=progress, cancel=cancel)
    assert max(seen) < calls[-1][1]  # stopped before the end


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="Unknown device|Unsupported device"):
        resolve_device("tpu7")


def test_explicit_cpu_device(tiny_gray, rng):
    img = _noisy(rng, (40, 40), np.float32)
    np.testing.assert_allclose(
        denoise(img, tiny_gray, device="cpu"), denoise(img, tiny_gray), atol=1e-5
    )


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (np.zeros((0, 10), np.float32), "empty"),
        (np.zeros(10, np.float32), "at least two axes"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), "NaN or infinite"),
        (np.zeros((8, 8), bool), "dtype bool"),
    ],
)
def test_bad_input(tiny_gray, data, match):
    with pytest.raises(ValueError, match=match):
        denoise(data, tiny_gray)


def test_rgb_gray_mismatch(tiny_gray, tiny_rgb):
    with pytest.raises(ValueError, match="looks like an RGB image.*single-channel"):
        denoise(np.zeros((20, 20, 3), np.uint8), tiny_gray)
    with pytest.raises(ValueError, match="expects RGB"):
        denoise(np.zeros((20, 20), np.uint8), tiny_rgb)
    with pytest.raises(ValueError, match="alpha"):
        denoise(np.zeros((20, 20, 4), np.uint8), tiny_rgb)


@pytest.mark.parametrize(
    ("axes", "match"),
    [("YX", "2 letters but the data has 3"), ("ZZX", "each axis once"), ("TZY", "include both")],
)
def test_bad_axes(tiny_gray, axes, match):
    with pytest.raises(ValueError, match=match):
        denoise(np.zeros((2, 8, 8), np.float32), tiny_gray, axes=axes)


def test_input_is_not_modified(tiny_gray, rng):
    img = _noisy(rng, (30, 30), np.float32)
    before = img.copy()
    denoise(img, tiny_gray)
    np.testing.assert_array_equal(img, before)


def test_denoise_by_name_and_path(tiny_gray, tmp_path, rng):
    from napari_wgan_denoise import save_model, save_user_model

    img = _noisy(rng, (30, 30), np.float32)
    ref = denoise(img, tiny_gray)
    save_model(tiny_gray, tmp_path / "m")
    np.testing.assert_allclose(denoise(img, str(tmp_path / "m.safetensors")), ref, atol=1e-6)
    save_user_model(tiny_gray, "tiny-user")
    np.testing.assert_allclose(denoise(img, "tiny-user"), ref, atol=1e-6)


class _PixelBudget(torch.nn.Module):
    """A real network that, like a GPU, runs out of memory above a pixel budget per call."""

    def __init__(self, inner: torch.nn.Module, budget: int) -> None:
        super().__init__()
        self.inner, self.budget = inner, budget
        self.channels = getattr(inner, "channels", 1)
        self.receptive_radius = inner.receptive_radius
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        if x.shape[0] * x.shape[-2] * x.shape[-1] > self.budget:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


def test_out_of_memory_halves_batch_then_tile(tiny_gray, rng):
    img = _noisy(rng, (300, 300), np.float32)
    reference = denoise(img, tiny_gray, tile_size=1024)
    limited = _PixelBudget(tiny_gray.network, budget=120 * 120)
    out = denoise(img, limited, tile_size=256, batch_size=4)
    span = float(img.max() - img.min())
    assert np.abs(out - reference).max() <= 1e-4 * span
    sizes = [s for s in limited.calls]
    assert sizes[0][0] == 4 and min(s[-1] for s in sizes) < 256  # batch, then tile shrank


def test_out_of_memory_with_no_room_left_is_a_clear_error(tiny_gray, rng):
    limited = _PixelBudget(tiny_gray.network, budget=10)
    with pytest.raises(MemoryError, match="Not enough memory"):
        denoise(_noisy(rng, (64, 64), np.float32), limited)


@pytest.mark.parametrize("length", [700, 726, 1000, 1300, 2048, 2500, 3001])
@pytest.mark.parametrize("tile", [512, 768, 1024])
def test_balanced_tiles_avoid_odd_widths_and_still_cover_the_axis(length, tile):
    """Tiles of 512 px and more, one per axis or several, are a multiple of TILE_STEP (some
    odd activation widths are 2-4x slower in oneDNN's bf16 convolutions), never larger than
    asked, and cover the padded axis."""
    from napari_wgan_denoise.inference.tiling import TILE_STEP, plan_axis

    plan = plan_axis(length, tile, 32, 2, 0)
    assert plan.tile % TILE_STEP == 0 and plan.tile <= tile
    starts = plan.starts
    assert starts[0] == 0 and starts[-1] + plan.tile == plan.padded >= length
    assert all(b - a <= plan.tile - 2 * plan.overlap for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("length", [33, 300, 510])
def test_a_small_plane_in_one_tile_keeps_its_own_size(length):
    """Below STEP_SINGLE_FROM a one-tile plane is run at its own (even) size, so its result
    is the plain whole-plane pass."""
    from napari_wgan_denoise.inference.tiling import plan_axis

    plan = plan_axis(length, 512, 32, 2, 0)
    assert plan.n_tiles == 1 and plan.tile == plan.padded == length + length % 2


def test_progress_moves_inside_a_one_tile_plane():
    """Progress is reported as the layers of a tile run, not only when the tile is done."""
    rng = np.random.default_rng(0)
    stack = rng.normal(0.5, 0.1, (2, 64, 64)).astype(np.float32)
    calls = []
    denoise(stack, "gray-mse-fast", progress=lambda done, total: calls.append((done, total)))
    assert {t for _, t in calls} == {2}  # one tile per plane
    inside = sorted({d for d, _ in calls if 0 < d < 1})
    assert len(inside) >= 5, inside  # 5 % steps through the first tile's layers
    assert calls[-1] == (2, 2)
