"""CPU inference with oneDNN's fused convolutions (conv + ReLU, conv + residual add)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_wgan_denoise import denoise
from napari_wgan_denoise.inference import optimise
from napari_wgan_denoise.inference.optimise import (
    FUSION_ENV,
    WINOGRAD_ENV,
    FusedBlock,
    FusedConv,
    WinogradConv,
    fuse_convolutions,
    fusion_works,
    winograd_convolutions,
    winograd_enabled,
    winograd_threads,
    winograd_works,
)
from napari_wgan_denoise.models.registry import load_model
from napari_wgan_denoise.models.shuffle import ShuffleConfig, ShuffleGenerator, _Block

needs_fusion = pytest.mark.skipif(not fusion_works(), reason="torch build without oneDNN fusion")
needs_bf16_fusion = pytest.mark.skipif(
    not fusion_works(torch.bfloat16), reason="no oneDNN bf16 fusion on this CPU (AVX2)"
)


def _generator(depth: int, plain_body: bool = False) -> ShuffleGenerator:
    torch.manual_seed(0)
    config = ShuffleConfig(features=16, depth=depth, noise_level=True, residual=not plain_body)
    net = ShuffleGenerator(1, config).eval()
    nn.init.normal_(net.tail.weight, std=0.05)  # the tail starts at zero: make it speak
    return net


@needs_fusion
@pytest.mark.parametrize("plain_body", [False, True])
def test_fused_generator_computes_what_the_plain_one_computes(plain_body):
    net = _generator(7, plain_body)
    fused = fuse_convolutions(net, torch.float32)
    assert fused is not net
    kinds = [type(m) for m in fused.modules()]
    assert FusedConv in kinds and nn.ReLU not in kinds
    assert (FusedBlock in kinds) == (not plain_body) and _Block not in kinds
    # the network it was given is untouched
    assert any(isinstance(m, nn.ReLU) for m in net.modules())
    x = torch.rand(2, 1, 40, 36).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected, got = net(x), fused(x)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_the_head_reads_the_image_in_fp32_under_bf16_autocast():
    """bf16's 8-bit mantissa would round the input image itself; only the head is spared."""
    net = _generator(7)
    seen: dict[str, torch.dtype] = {}
    for name in ("head", "body"):
        getattr(net, name).register_forward_hook(
            lambda _m, _i, out, name=name: seen.__setitem__(name, out.dtype)
        )
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        net(x)
    assert seen == {"head": torch.float32, "body": torch.bfloat16}
    if fusion_works(torch.bfloat16):
        fused = fuse_convolutions(net, torch.bfloat16)
        assert fused.head[0].weight.dtype == torch.float32
        assert fused.body[0].conv1.weight.dtype == torch.bfloat16
    net.full_precision = ()  # everything under autocast, as before
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        net(x)
    assert seen["head"] == torch.bfloat16
    if fusion_works(torch.bfloat16):
        assert fuse_convolutions(net, torch.bfloat16).head[0].weight.dtype == torch.bfloat16


@needs_bf16_fusion
def test_fused_bf16_generator_agrees_with_autocast():
    net = _generator(7)
    fused = fuse_convolutions(net, torch.bfloat16)
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        reference = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = fused(x)
    assert got.dtype == torch.float32
    assert (got - reference).abs().max() < 0.02
    assert (got - reference).abs().mean() < 2e-3


def test_fusion_can_be_switched_off_and_leaves_other_networks_alone(monkeypatch):
    net = _generator(5)
    monkeypatch.setenv(FUSION_ENV, "0")
    assert fuse_convolutions(net, torch.float32) is net
    monkeypatch.delenv(FUSION_ENV)
    lonely = nn.Conv2d(1, 1, 3, padding=1)  # nothing to fuse
    assert fuse_convolutions(lonely, torch.float32) is lonely
    # a Sequential with no conv -> ReLU pair is returned as is, without a needless copy
    plain = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 1, 1))

    def no_copy(_):
        raise AssertionError("copied a network with nothing to fuse")

    monkeypatch.setattr(optimise.copy, "deepcopy", no_copy)
    assert fuse_convolutions(plain, torch.float32) is plain


@needs_fusion
def test_denoise_with_fusion_matches_denoise_without(monkeypatch):
    model = load_model("cells-mse-fast")
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(128, 40, (96, 80, 3)), 0, 255).astype(np.uint8)
    fused = denoise(image, model, precision="fp32")
    monkeypatch.setenv(FUSION_ENV, "0")
    plain = denoise(image, model, precision="fp32")
    assert np.abs(fused.astype(int) - plain.astype(int)).max() <= 1
    assert not np.array_equal(fused, image)  # it denoised
    # the registry's network was not rewritten in place
    assert not any(isinstance(m, (FusedConv, FusedBlock)) for m in model.network.modules())


@needs_fusion
def test_denoise_reuses_its_prepared_copy_until_the_weights_change(monkeypatch):
    net = _generator(5)
    image = np.random.default_rng(1).normal(0.5, 0.2, (64, 48)).astype(np.float32)
    built = []
    real = optimise._prepare

    def counting(*args):
        built.append(1)
        return real(*args)

    monkeypatch.setattr(optimise, "_prepare", counting)
    first = denoise(image, net, precision="fp32")
    second = denoise(image, net, precision="fp32")
    assert len(built) == 1 and np.array_equal(first, second)
    with torch.no_grad():  # an in-place update, as an optimiser step makes
        net.tail.weight.mul_(3)
    third = denoise(image, net, precision="fp32")
    assert len(built) == 2 and np.abs(third - first).max() > 1e-3
    denoise(image, net, precision="bf16")  # another precision: another copy
    assert len(built) == 3
    # two callers at once never share a copy (hooks and noise fits stay with their caller)
    cpu = torch.device("cpu")
    with (
        optimise.prepared_network(net, cpu, torch.float32) as a,
        optimise.prepared_network(net, cpu, torch.float32) as b,
    ):
        assert a is not b and a is not net


def test_a_failed_preparation_leaves_the_network_in_its_mode(monkeypatch):
    net = _generator(5).train()

    def broken(*args):
        raise RuntimeError("no copy today")

    monkeypatch.setattr(optimise, "_prepare", broken)
    with pytest.raises(RuntimeError, match="no copy today"):
        denoise(np.zeros((32, 32), np.float32), net)
    assert net.training


# -- Winograd convolutions (NNPACK) for fp32 on AVX2 CPUs -----------------------------------
needs_winograd = pytest.mark.skipif(not winograd_works(), reason="torch build without NNPACK")


@needs_winograd
@pytest.mark.parametrize("batch", [1, 3])
def test_winograd_generator_computes_what_the_plain_one_computes(batch):
    torch.manual_seed(0)
    config = ShuffleConfig(features=32, depth=6, noise_level=True)
    net = ShuffleGenerator(3, config).eval()
    nn.init.normal_(net.tail.weight, std=0.05)
    fast = winograd_convolutions(net)
    # the body's 32 -> 32 convolutions, and only they: the head and tail are narrower
    assert sum(isinstance(m, WinogradConv) for m in fast.modules()) == 4
    assert isinstance(fast.head[0], nn.Conv2d) and isinstance(fast.tail, nn.Conv2d)
    assert not any(isinstance(m, WinogradConv) for m in net.modules())  # untouched
    x = torch.rand(batch, 3, 40, 36).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x), atol=1e-5, rtol=1e-4)


@needs_winograd
def test_denoise_with_winograd_matches_denoise_without(monkeypatch):
    model = load_model("gray-mse-fast")
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(128, 40, (96, 80)), 0, 255).astype(np.float32)
    monkeypatch.setenv(WINOGRAD_ENV, "0")
    assert not winograd_enabled()
    plain = denoise(image, model, precision="fp32", value_range=(0, 255))
    monkeypatch.setenv(WINOGRAD_ENV, "1")
    assert winograd_enabled()
    fast = denoise(image, model, precision="fp32", value_range=(0, 255))
    assert np.abs(fast - plain).max() < 0.01  # of 255
    assert np.abs(fast - image).mean() > 1  # it denoised
    assert not any(isinstance(m, WinogradConv) for m in model.network.modules())


@needs_winograd
def test_winograd_network_runs_with_one_openmp_thread_and_restores_the_count():
    """NNPACK has its own threads; OpenMP's spinning ones took its cores, so a network with
    Winograd convolutions runs with one OpenMP thread, and the count comes back after,
    also when the run stops with an exception (a cancel)."""
    torch.manual_seed(0)
    fast = winograd_convolutions(ShuffleGenerator(1, ShuffleConfig(features=32, depth=4)).eval())
    seen: list[int] = []
    hook = fast.body.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.rand(1, 1, 16, 16)
        with torch.no_grad(), winograd_threads(fast):
            fast(x)
        assert seen == [1] and torch.get_num_threads() == 2
        hook.remove()
        fast.body.register_forward_hook(lambda *_: (_ for _ in ()).throw(RuntimeError("stop")))
        with pytest.raises(RuntimeError, match="stop"), winograd_threads(fast):
            fast(x)
        assert torch.get_num_threads() == 2
        with winograd_threads(_generator(5)):  # no Winograd convolution: nothing changes
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
