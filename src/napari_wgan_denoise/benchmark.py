"""``wgan-denoise benchmark``: speed, peak memory, arithmetic rate and quality of models.

For every model (the ``models`` given, else every registered model, else the two reference
architectures with random weights: the fast U-Net ``unet(features=32, bottleneck=16)`` and
the paper-size ``srresnet``) the harness measures, on a synthetic image of the given size:

``s_per_mp``, ``mp_per_s``
    the median over ``repeats`` timed :func:`~napari_wgan_denoise.denoise` calls, after
    ``warmup`` untimed calls on the same image, of wall seconds per megapixel (and its
    inverse); ``s_min``/``s_max`` are the fastest and slowest call in seconds.
``peak_mb``
    the largest extra memory of one call, MB (1e6 bytes). CPU: peak resident set size of
    the process during the call minus the RSS just before it. On Linux the kernel's
    high-water mark (``VmHWM``) is reset before the call and read after it, which is exact
    and catches short spikes; elsewhere a thread samples the RSS every 2 ms (``psutil``
    if installed), which can miss spikes (``mem_method`` says which). CUDA:
    ``torch.cuda.max_memory_allocated`` during the call (tensors only, not the cache).
``mflop_per_px``
    the model's multiply-add work per output pixel, 2 FLOPs per multiply-add, counted
    exactly with forward hooks on every ``Conv2d``/``ConvTranspose2d``/``Linear`` during
    one pass over a small input (2·Cin/groups·Cout·kh·kw per output position, so
    layers at half or quarter resolution count a quarter or a sixteenth per pixel).
``gflops``, ``gflops_executed``, ``tile_overhead``
    useful GFLOP/s (per image pixel) and the GFLOP/s actually executed, which includes
    the overlapping halo of the tiles (``tile_overhead`` = tile pixels run / image pixels).
``matmul_gflops`` (per run)
    the machine's measured ``torch.mm`` rate on 2048 x 2048 float32 matrices (median of 5
    after a warm-up): the practical compute roof to compare ``gflops_executed`` with.
``psnr``, ``ssim``, ``grad_ratio``
    with ``clean`` and ``sigma`` (or ``noisy``): the scores of
    :func:`~napari_wgan_denoise.evaluation.evaluate` on that test set.

The markdown report records the exact command, the machine (CPU model, cores, torch version
and threads, GPU), the load average at the start and the date; ``--append FILE`` appends it
to a file such as ``docs/benchmarks.md``.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .machine import PeakRSS, current_rss, machine_info, matmul_gflops, sync_device

__all__ = [
    "REFERENCE_MODELS",
    "PeakRSS",
    "benchmark_model",
    "current_rss",
    "flops_per_pixel",
    "format_markdown",
    "machine_info",
    "matmul_gflops",
    "reference_models",
    "resolve_models",
    "run_benchmark",
    "synthetic_image",
    "tile_overhead",
]

REFERENCE_MODELS = {
    "unet-fast (random)": ("unet", {"features": 32, "bottleneck": 16}),
    "srresnet (random)": ("srresnet", {}),
}


# --------------------------------------------------------------------------- FLOPs


def flops_per_pixel(network: Any, channels: int = 1, size: int = 64) -> float:
    """FLOPs (2 per multiply-add) of one forward pass per output pixel, counted with
    forward hooks on convolutions and linear layers over a ``size x size`` input."""
    import torch
    from torch import nn

    multiple = int(getattr(network, "size_multiple", 1))
    size = int(math.ceil(size / multiple) * multiple)
    total = [0]

    def conv_hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        kernel = math.prod(module.kernel_size)
        if isinstance(module, nn.ConvTranspose2d):  # work scales with the input positions
            positions = inputs[0].numel() // inputs[0].shape[1]
            total[0] += (
                2 * positions * module.in_channels * module.out_channels * kernel // (module.groups)
            )
            return
        positions = output.numel() // output.shape[1]
        total[0] += (
            2 * positions * module.out_channels * module.in_channels * kernel // (module.groups)
        )

    def linear_hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        total[0] += (
            2 * (output.numel() // module.out_features) * module.in_features * (module.out_features)
        )

    handles = []
    for module in network.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    param = next(network.parameters(), None)
    x = torch.zeros(1, channels, size, size)
    if param is not None:
        x = x.to(param.device)
    was_training = network.training
    network.eval()
    try:
        with torch.inference_mode():
            network(x)
    finally:
        network.train(was_training)
        for h in handles:
            h.remove()
    return total[0] / (size * size)


def tile_overhead(network: Any, height: int, width: int, device: Any, tile_size: int | None):
    """Pixels the tiled pass runs through the network per image pixel (>= 1), as
    :func:`~napari_wgan_denoise.denoise` plans its tiles with default overlap."""
    from .inference.tiling import DEFAULT_TILE, EDGE_BORDER, tile_geometry, tiled_pixels

    g = tile_geometry(network, tile_size, None, DEFAULT_TILE.get(device.type, 512))
    pixels = tiled_pixels(height, width, g.tile, g.overlap, g.multiple, EDGE_BORDER)
    return pixels / (height * width)


# --------------------------------------------------------------------------- models


def reference_models() -> list[tuple[str, Any]]:
    """The two reference architectures with random weights: the fast U-Net and the
    paper-size SRResNet (speed and memory do not depend on the weights)."""
    from .models import create_model

    return [(label, create_model(a, **cfg)) for label, (a, cfg) in REFERENCE_MODELS.items()]


def resolve_models(
    models: Sequence[Any] | None = None, reference: bool = False
) -> list[tuple[str, Any]]:
    """``(label, DenoiseModel)`` for the given names/paths/models (plus the reference
    architectures when ``reference``); with neither, every registered model, else the
    reference architectures."""
    from .inference import as_model
    from .models.registry import load_model, model_entries

    if models or reference:
        out = []
        for m in models or []:
            dm = as_model(m)
            out.append((str(m) if isinstance(m, (str, Path)) else dm.name, dm))
        return out + (reference_models() if reference else [])
    entries = [e for e in model_entries() if e.task == "denoise"]
    if entries:
        return [(e.name, load_model(e.name)) for e in entries]
    return reference_models()


def synthetic_image(height: int, width: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A noisy smooth test image: uint16 ``(H, W)`` for gray models, uint8 ``(H, W, 3)``
    for RGB models (the speed does not depend on the content)."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    base = 0.5 + 0.25 * np.sin(12 * x) * np.cos(9 * y)
    if channels == 3:
        img = base[..., None] + rng.normal(0, 0.1, (height, width, 3)).astype(np.float32)
        return np.clip(img * 255, 0, 255).astype(np.uint8)
    img = base + rng.normal(0, 0.1, (height, width)).astype(np.float32)
    return np.clip(img * 4000, 0, 65535).astype(np.uint16)


# --------------------------------------------------------------------------- core


def benchmark_model(
    model: Any,
    *,
    size: tuple[int, int] = (1024, 1024),
    repeats: int = 3,
    warmup: int = 1,
    device: str = "auto",
    tile_size: int | None = None,
    tta: bool | int = False,
) -> dict[str, Any]:
    """Speed, memory and arithmetic rate of one model on a synthetic image (with ``tta``:
    averaged over that many flips/rotations, as ``denoise(..., tta=)``)."""
    import torch

    from .inference import as_model, denoise, resolve_device
    from .inference.optimise import fold_batch_norm
    from .validation import check_tta

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    passes = check_tta(tta)
    dm = as_model(model)
    dev = resolve_device(device)
    height, width = size
    image = synthetic_image(height, width, dm.channels)
    megapixels = height * width / 1e6
    net = fold_batch_norm(dm.network.eval())
    flops = flops_per_pixel(net, dm.channels) * passes
    overhead = tile_overhead(net, height, width, dev, tile_size)
    for _ in range(max(0, warmup)):
        denoise(image, dm, device=dev, tile_size=tile_size, tta=passes)
    sync_device(dev)
    times, peaks, method = [], [], "cuda"
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
            start = time.perf_counter()
            denoise(image, dm, device=dev, tile_size=tile_size, tta=passes)
            sync_device(dev)
            times.append(time.perf_counter() - start)
            peaks.append(torch.cuda.max_memory_allocated(dev) - base)
        else:
            with PeakRSS() as peak:
                start = time.perf_counter()
                denoise(image, dm, device=dev, tile_size=tile_size, tta=passes)
                times.append(time.perf_counter() - start)
            peaks.append(peak.extra)
            method = peak.method
    seconds = statistics.median(times)
    gflops = flops * height * width / seconds / 1e9
    return {
        "parameters": sum(p.numel() for p in dm.network.parameters()),
        "architecture": dm.card.get("architecture", "?"),
        "size": [height, width],
        "channels": dm.channels,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "tile_size": tile_size,
        "tta": passes,
        "repeats": repeats,
        "seconds": seconds,
        "s_min": min(times),
        "s_max": max(times),
        "s_per_mp": seconds / megapixels,
        "mp_per_s": megapixels / seconds,
        "mflop_per_px": flops / 1e6,
        "gflops": gflops,
        "tile_overhead": overhead,
        "gflops_executed": gflops * overhead,
        "peak_mb": max(peaks) / 1e6,
        "mem_method": method,
    }


def run_benchmark(
    models: Sequence[Any] | None = None,
    *,
    size: tuple[int, int] = (1024, 1024),
    repeats: int = 3,
    warmup: int = 1,
    device: str = "auto",
    tile_size: int | None = None,
    threads: int | None = None,
    clean: str | Path | None = None,
    sigma: float | None = None,
    noisy: str | Path | None = None,
    limit: int | None = None,
    matmul: bool | int = True,
    command: str | None = None,
    notify: Any = None,
    reference: bool = False,
    tta: bool | int = False,
) -> dict[str, Any]:
    """Benchmark ``models`` (see :func:`resolve_models`); returns ``{"machine", "command",
    "matmul_gflops", "rows"}`` with one row per model (keys in the module docstring).
    ``matmul`` is True (measure the ``torch.mm`` rate at 2048), a matrix size or False."""
    import torch

    from .inference import resolve_device

    if threads:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    info = machine_info(dev)  # load average before the run
    if dev.type == "cpu":
        from .inference.devices import use_bf16
        from .inference.optimise import fusion_enabled

        bf16 = use_bf16(dev)
        info["cpu_precision"] = "bf16" if bf16 else "fp32"
        info["fused_convolutions"] = fusion_enabled(torch.bfloat16 if bf16 else torch.float32)
    named = resolve_models(models, reference)
    result: dict[str, Any] = {"machine": info, "command": command, "rows": []}
    if matmul:
        n = 2048 if matmul is True else int(matmul)
        result["matmul_gflops"] = matmul_gflops(n, device=dev)
        result["matmul_size"] = n
    else:
        result["matmul_gflops"] = None
    for label, dm in named:
        if notify is not None:
            notify(f"benchmarking {label} on {size[0]}x{size[1]} ...")
        row = {"model": label}
        row.update(
            benchmark_model(
                dm,
                size=size,
                repeats=repeats,
                warmup=warmup,
                device=dev,
                tile_size=tile_size,
                tta=tta,
            )
        )
        if result["matmul_gflops"]:
            row["roof_fraction"] = row["gflops_executed"] / result["matmul_gflops"]
        result["rows"].append(row)
    if clean is not None:
        from .evaluation import evaluate

        quality = evaluate(
            [dm for _, dm in named],
            clean=clean,
            sigma=sigma,
            noisy=noisy,
            device=str(dev),
            tile_size=tile_size,
            limit=limit,
            notify=notify,
            tta=tta,
        )
        for row, q in zip(result["rows"], quality):
            for key in ("psnr", "ssim", "grad_ratio", "noisy_psnr", "n"):
                row[key] = q.get(key)
            row["eval_s_per_mp"] = q.get("s_per_mp")
        result["quality"] = {"clean": str(clean), "sigma": sigma, "noisy": noisy, "limit": limit}
    result["machine"]["load_average_end"] = (
        [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    )
    return result


# --------------------------------------------------------------------------- report

COLUMNS = (
    ("model", "model", "{}"),
    ("params", "parameters", "{:,}"),
    ("MFLOP/px", "mflop_per_px", "{:.3f}"),
    ("image", "size", "{}"),
    ("device", "device", "{}"),
    ("threads", "threads", "{}"),
    ("TTA", "tta", "{}"),
    ("s/MP", "s_per_mp", "{:.3f}"),
    ("MP/s", "mp_per_s", "{:.3f}"),
    ("GFLOP/s", "gflops", "{:.1f}"),
    ("GFLOP/s run (tiles)", "gflops_executed", "{:.1f}"),
    ("% of mm", "roof_fraction", "{:.0%}"),
    ("peak MB", "peak_mb", "{:.0f}"),
    ("PSNR", "psnr", "{:.2f}"),
    ("SSIM", "ssim", "{:.4f}"),
    ("grad ratio", "grad_ratio", "{:.3f}"),
)


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, list):
        return "x".join(str(v) for v in value)
    return fmt.format(value)


def format_markdown(result: dict[str, Any]) -> str:
    """The report: command, machine, matmul rate, then a markdown table, one model a row."""
    m = result["machine"]
    rows = result["rows"]
    lines = [f"### Benchmark {m['date']}", ""]
    if result.get("command"):
        lines += [f"Command: `{result['command']}`", ""]
    load = m.get("load_average")
    load_end = m.get("load_average_end")
    machine = (
        f"Machine: {m['cpu']}, {m['usable_cores']} usable of {m['cores']} cores, "
        f"torch {m['torch']} with {m['torch_threads']} threads, numpy {m['numpy']}, "
        f"Python {m['python']}, {m['platform']}"
    )
    if m.get("gpu"):
        machine += f", GPU {m['gpu']}"
    if m.get("cpu_precision"):
        fused = " with fused convolutions" if m.get("fused_convolutions") else ""
        machine += f", inference in {m['cpu_precision']}{fused}"
    lines.append(machine + ".")
    if load:
        extra = f", {' / '.join(f'{v:g}' for v in load_end)} at the end" if load_end else ""
        lines.append(
            f"Load average (1/5/15 min) at the start: {' / '.join(f'{v:g}' for v in load)}{extra}."
        )
    if result.get("matmul_gflops"):
        lines.append(
            f"torch.mm {result.get('matmul_size', 2048)}² float32 (median of 5): "
            f"{result['matmul_gflops']:.1f} GFLOP/s, the practical roof."
        )
    if rows:
        r = rows[0]
        how = "RSS high-water mark" if r["mem_method"] == "vmhwm" else r["mem_method"]
        lines.append(
            f"Speed: median of {r['repeats']} calls of `denoise` on a synthetic "
            f"{r['size'][0]}x{r['size'][1]} image after a warm-up; peak MB = largest extra "
            f"memory of one call ({how})."
        )
    q = result.get("quality")
    if q:
        what = f"σ={q['sigma']:g}" if q.get("sigma") is not None else f"paired {q['noisy']}"
        lines.append(f"Quality: `evaluate` on {q['clean']} ({what}).")
    lines.append("")
    present = [c for c in COLUMNS if any(r.get(c[1]) is not None for r in rows)]
    lines.append("| " + " | ".join(c[0] for c in present) + " |")
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(present))) + "|")
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(key), fmt) for _, key, fmt in present) + " |")
    return "\n".join(lines) + "\n"
