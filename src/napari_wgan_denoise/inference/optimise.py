"""Inference-only rewrites of a network that give the same outputs faster."""

from __future__ import annotations

import copy
import functools
import itertools
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import nn


def _fold(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """Make ``conv`` compute ``scale * conv(x) + shift`` (per output channel)."""
    with torch.no_grad():
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
        new_bias = bias * scale + shift
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias)
        else:
            conv.bias.copy_(new_bias)


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale.detach(), (bn.bias - bn.running_mean * scale).detach()


def fold_batch_norm(network: nn.Module) -> nn.Module:
    """A copy of ``network`` (in eval mode) with each batch norm that directly follows a conv
    folded into that conv's weights: identical outputs up to float rounding, less work.

    Handles the U-Net's blocks (``conv -> bn`` and ``conv(x) + skip_conv(x) -> bn``); other
    batch norms are left in place. Networks without batch norm are returned unchanged.
    """
    if not any(isinstance(m, nn.BatchNorm2d) for m in network.modules()):
        return network
    net = copy.deepcopy(network).eval()
    for module in net.modules():
        conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            _fold(conv, *_bn_affine(bn))
            module.bn = nn.Identity()
            continue
        post, skip = getattr(module, "post", None), getattr(module, "skip", None)
        if (
            isinstance(conv, nn.Conv2d)
            and isinstance(skip, nn.Conv2d)
            and isinstance(post, nn.Sequential)
            and isinstance(post[0], nn.BatchNorm2d)
        ):
            scale, shift = _bn_affine(post[0])
            _fold(conv, scale, shift)
            _fold(skip, scale, torch.zeros_like(shift))
            post[0] = nn.Identity()
    return net


#: Set to "0" to run CPU inference without oneDNN's fused convolutions (for comparison, or
#: should a torch build misbehave); the fused and plain paths agree to bf16 rounding.
FUSION_ENV = "NAPARI_WGAN_DENOISE_FUSION"


def _pointwise() -> object | None:
    try:
        return torch.ops.mkldnn._convolution_pointwise
    except (AttributeError, RuntimeError):
        return None


class FusedConv(nn.Module):
    """A 2-D convolution whose following ReLU and/or residual add run inside oneDNN's
    convolution (post-ops), sparing the separate passes over the activations; CPU only."""

    def __init__(self, conv: nn.Conv2d, relu: bool, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("weight", conv.weight.detach().to(dtype).clone())
        bias = conv.bias.detach().to(dtype).clone() if conv.bias is not None else None
        self.register_buffer("bias", bias)
        self.padding = list(conv.padding)  # type: ignore[arg-type]
        self.stride = list(conv.stride)
        self.dilation = list(conv.dilation)
        self.groups = int(conv.groups)
        self.relu = relu

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        op = torch.ops.mkldnn._convolution_pointwise
        geometry = (self.padding, self.stride, self.dilation, self.groups)
        x = x.to(self.weight.dtype)
        if residual is None:
            attr = "relu" if self.relu else "none"
            return op(x, self.weight, self.bias, *geometry, attr, [], "")
        unary = "relu" if self.relu else None
        other = residual.to(self.weight.dtype)
        return op.binary(x, other, self.weight, self.bias, *geometry, "add", 1.0, unary, [], None)


class FusedBlock(nn.Module):
    """The shuffle generator's residual block, ``x + conv2(relu(conv1(x)))``, as two fused
    convolutions: the ReLU rides on the first and the skip addition on the second."""

    def __init__(self, conv1: FusedConv, conv2: FusedConv) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv1, conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x), residual=x)


def _fusable(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


@functools.cache
def fusion_works(dtype: torch.dtype = torch.float32) -> bool:
    """Whether this torch build has oneDNN's fused convolutions in ``dtype`` and they compute
    what the plain layers compute (checked once per dtype, on a small input). bf16 needs
    AVX-512 (or AVX-NE-CONVERT): on an AVX2 CPU only fp32 fuses."""
    if _pointwise() is None or not torch.backends.mkldnn.is_available():
        return False
    gen = torch.Generator().manual_seed(0)
    conv1, conv2 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 9, 7, generator=gen)
    tol = 0.1 if dtype == torch.bfloat16 else 1e-4
    try:
        with torch.no_grad():
            expected = conv2(torch.relu(conv1(x))) + x
            block = FusedBlock(FusedConv(conv1, True, dtype), FusedConv(conv2, False, dtype))
            got = block(x.contiguous(memory_format=torch.channels_last)).float()
    except RuntimeError:
        return False
    return got.shape == expected.shape and torch.allclose(got, expected, atol=tol)


def fusion_enabled(dtype: torch.dtype = torch.float32) -> bool:
    """Whether CPU inference in ``dtype`` fuses convolutions here: this torch build can
    (:func:`fusion_works`) and ``$NAPARI_WGAN_DENOISE_FUSION`` is not ``0``."""
    return os.environ.get(FUSION_ENV, "").strip() != "0" and fusion_works(dtype)


def _fusable_block(module: nn.Module) -> bool:
    """Whether ``module`` is a shuffle residual block whose two convolutions can fuse."""
    from ..models.shuffle import _Block

    return isinstance(module, _Block) and _fusable(module.conv1) and _fusable(module.conv2)


def _fusable_pair(sequence: nn.Sequential, i: int) -> bool:
    """Whether ``sequence[i]`` is a fusable convolution followed by a ReLU."""
    return _fusable(sequence[i]) and type(sequence[i + 1]) is nn.ReLU


def _has_fusable(network: nn.Module) -> bool:
    """Whether ``network`` holds a shuffle block or a ``conv -> ReLU`` pair to fuse (so a
    network with neither is not copied for nothing)."""
    return any(
        _fusable_block(m)
        or (isinstance(m, nn.Sequential) and any(_fusable_pair(m, i) for i in range(len(m) - 1)))
        for m in network.modules()
    )


def fuse_convolutions(network: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``network`` for CPU inference whose shuffle residual blocks and ``conv ->
    ReLU`` pairs run as oneDNN fused convolutions in ``dtype`` (bf16 where the CPU has it),
    or ``network`` itself where nothing is fusable, fusion is off (``$NAPARI_WGAN_DENOISE_FUSION``
    is ``0``) or this torch build lacks it. The children a network names in its
    ``full_precision`` stay fp32. Same outputs up to float rounding, less memory traffic:
    5-10 % faster on the shipped shuffle models, and +0.01 dB from the residual sum rounded
    once (docs/benchmarks.md §7m)."""
    if isinstance(network, torch.jit.ScriptModule):
        return network
    if not _has_fusable(network) or not fusion_enabled(dtype):
        return network
    net = copy.deepcopy(network)
    changed = False
    full = {  # the children a network keeps in fp32 (ShuffleGenerator.full_precision)
        id(getattr(m, name)) for m in net.modules() for name in getattr(m, "full_precision", ())
    }
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if _fusable_block(child):
                fused = FusedBlock(
                    FusedConv(child.conv1, True, dtype), FusedConv(child.conv2, False, dtype)
                )
                setattr(module, name, fused)
                changed = True
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if _fusable_pair(module, i):
                    kind = torch.float32 if id(module) in full else dtype
                    module[i] = FusedConv(module[i], True, kind)
                    module[i + 1] = nn.Identity()
                    changed = True
    return net if changed else network


#: Set to "0" to keep oneDNN's direct convolutions on CPUs where the Winograd ones would be
#: used (for comparison); set to "1" to use them on any CPU with NNPACK.
WINOGRAD_ENV = "NAPARI_WGAN_DENOISE_WINOGRAD"
#: The narrowest convolution (input and output features) that runs Winograd: NNPACK is
#: slower than oneDNN on the shuffle networks' head and tail (13 -> 64, 64 -> 12 features).
WINOGRAD_MIN_FEATURES = 32


class WinogradConv(nn.Module):
    """A 3x3, stride-1 convolution run by NNPACK's Winograd kernels in fp32: 2.25x fewer
    multiplies than the direct convolution, the same result up to float rounding; CPU only."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.register_buffer("weight", conv.weight.detach().float().contiguous().clone())
        bias = conv.bias.detach().float().clone() if conv.bias is not None else None
        self.register_buffer("bias", bias)
        self.padding = [int(conv.padding[1])] * 2 + [int(conv.padding[0])] * 2  # type: ignore[index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().contiguous()
        # one image per call: NNPACK's batched algorithm took 2x the time per image (AVX2)
        outs = [
            torch._nnpack_spatial_convolution(x[i : i + 1], self.weight, self.bias, self.padding)
            for i in range(x.shape[0])
        ]
        return outs[0] if len(outs) == 1 else torch.cat(outs)


def _winograd_able(conv: nn.Module) -> bool:
    return (
        _fusable(conv)  # a plain Conv2d with numeric zero padding
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and min(conv.in_channels, conv.out_channels) >= WINOGRAD_MIN_FEATURES
    )


@functools.lru_cache(maxsize=1)
def winograd_works() -> bool:
    """Whether this torch build has NNPACK and its convolution computes what the plain
    layer computes (checked once, on a small input)."""
    try:
        if not torch._nnpack_available():  # also initialises NNPACK
            return False
        gen = torch.Generator().manual_seed(0)
        conv = nn.Conv2d(32, 32, 3, padding=1)
        x = torch.randn(1, 32, 11, 9, generator=gen)
        with torch.no_grad():
            expected, got = conv(x), WinogradConv(conv)(x)
    except (AttributeError, RuntimeError):
        return False
    return got.shape == expected.shape and torch.allclose(got, expected, atol=1e-4)


def winograd_enabled() -> bool:
    """Whether fp32 CPU inference runs the wide 3x3 convolutions as Winograd ones: on CPUs
    whose widest vector unit is AVX2 (no AVX-512, so no bf16 either), where NNPACK ran the
    shuffle networks' body convolutions 1.5-1.6x faster than oneDNN and whole images
    1.2-1.3x faster on 2 threads (docs/benchmarks.md §7af); ``$NAPARI_WGAN_DENOISE_WINOGRAD``
    set to ``0`` or ``1`` overrides."""
    env = os.environ.get(WINOGRAD_ENV, "").strip()
    if env == "0":
        return False
    if env != "1" and torch.backends.cpu.get_cpu_capability() != "AVX2":
        return False
    return winograd_works()


@contextmanager
def winograd_threads(network: nn.Module) -> Iterator[None]:
    """Run ``network`` (a prepared copy) with one OpenMP thread where it holds Winograd
    convolutions: NNPACK runs them on its own pool of threads (sized by the thread count at
    its first use), and OpenMP's threads, spinning between their own operations, took its
    cores (on 2 cores, 2 OpenMP threads made the network slower than 1; the other
    operations are a few per cent of its work). Elsewhere nothing changes."""
    threads = torch.get_num_threads()
    if threads == 1 or not any(isinstance(m, WinogradConv) for m in network.modules()):
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def winograd_convolutions(network: nn.Module) -> nn.Module:
    """A copy of ``network`` for fp32 CPU inference whose wide 3x3 convolutions run as
    :class:`WinogradConv`, or ``network`` itself where it has none."""
    if isinstance(network, torch.jit.ScriptModule) or not any(
        _winograd_able(m) for m in network.modules()
    ):
        return network
    net = copy.deepcopy(network)
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if _winograd_able(child):
                setattr(module, name, WinogradConv(child))
    return net


#: Inference copies of networks (batch norm folded; on the CPU channels-last and fused), kept
#: between calls so that a stack of small images, a preview or an evaluation does not copy
#: and convert the weights for every call (0.02-0.05 s on 2 quiet cores, up to 0.5 s when
#: the cores are busy; docs/benchmarks.md §7s).
_PREPARED: weakref.WeakKeyDictionary[nn.Module, list[tuple[_Signature, nn.Module]]] = (
    weakref.WeakKeyDictionary()
)
_PREPARED_LOCK = threading.Lock()
#: Copies kept per network (one per concurrent caller, up to this many).
PREPARED_PER_NETWORK = 2


class _Signature(NamedTuple):
    """What a prepared copy depends on: the target, and each weight's storage and version."""

    device: str
    dtype: torch.dtype | None
    fused: bool
    winograd: bool
    weights: tuple


def _signature(network: nn.Module, device: torch.device, dtype: torch.dtype | None) -> _Signature:
    """The :class:`_Signature` of ``network`` now (an in-place update such as an optimiser
    step or ``load_state_dict`` changes a weight's version; weights made under
    ``torch.inference_mode`` have no version, and no optimiser can train them)."""
    tensors = itertools.chain(network.parameters(), network.buffers())
    return _Signature(
        str(device),
        dtype,
        fusion_enabled(dtype or torch.float32),
        winograd_enabled(),
        tuple(
            (t.data_ptr(), -1 if t.is_inference() else t._version, t.dtype, tuple(t.shape))
            for t in tensors
        ),
    )


def _prepare(network: nn.Module, device: torch.device, dtype: torch.dtype | None) -> nn.Module:
    net = fold_batch_norm(network).to(device)
    if device.type == "cpu" and dtype in (None, torch.float32) and winograd_enabled():
        # the rest fused in fp32; the copy keeps the default layout (NNPACK reads NCHW)
        return fuse_convolutions(winograd_convolutions(net), torch.float32)
    if device.type == "cpu":
        # fused first: the copy, not the caller's network, goes channels-last
        net = fuse_convolutions(net, dtype or torch.float32)
        net.to(memory_format=torch.channels_last)
    return net


@contextmanager
def prepared_network(
    network: nn.Module, device: torch.device, dtype: torch.dtype | None
) -> Iterator[nn.Module]:
    """``network`` ready for inference on ``device`` (in eval mode): batch norm folded and,
    on the CPU, channels-last with convolutions fused in ``dtype`` (bf16 or fp32). A copy
    made by an earlier call is reused while the weights are unchanged; each caller has its
    copy to itself while the block runs (hooks and noise fits do not cross threads)."""
    with _PREPARED_LOCK:
        pool = _PREPARED.get(network, [])
        signature = _signature(network, device, dtype)
        found = next((i for i, (sig, _) in enumerate(pool) if sig == signature), None)
        net = pool.pop(found)[1] if found is not None else None
    if net is None:
        net = _prepare(network, device, dtype)
        # building may convert the network itself (channels-last): read its state again
        signature = _signature(network, device, dtype)
    try:
        yield net
    finally:
        if net is not network:  # a copy (the network itself needs no keeping)
            with _PREPARED_LOCK:
                current = _signature(network, device, dtype) == signature
                pool = [  # copies of older weights are dropped
                    e for e in _PREPARED.get(network, []) if e[0].weights == signature.weights
                ]
                if current and len(pool) < PREPARED_PER_NETWORK:
                    pool.append((signature, net))
                _PREPARED[network] = pool
