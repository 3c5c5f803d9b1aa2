"""The machine a benchmark runs on: peak memory of a call, CPU / GPU description and the
practical arithmetic roof (``torch.mm`` rate). Used by :mod:`.benchmark` and
``benchmarks/memory.py``."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import threading
import time
from typing import Any

import numpy as np

# --------------------------------------------------------------------------- memory


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss() -> int:
    """Resident set size of this process in bytes (Linux /proc, else psutil, else 0)."""
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb * 1024
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # pragma: no cover - neither /proc nor psutil
        return 0


class PeakRSS:
    """Context manager: the peak resident set size of this process while it is open.

    ``before`` and ``peak`` are bytes; ``method`` is ``"vmhwm"`` (Linux: the kernel's
    high-water mark, reset on entry with ``/proc/self/clear_refs``: exact) or ``"sampled"``
    (a thread reading the RSS every ``interval`` seconds: may miss short spikes).
    """

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.before = 0
        self.peak = 0
        self.method = "sampled"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampled = 0

    @property
    def extra(self) -> int:
        """Peak minus the RSS on entry, bytes."""
        return max(0, self.peak - self.before)

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            return False
        return _status_kb("VmHWM") is not None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._sampled = max(self._sampled, current_rss())

    def __enter__(self) -> PeakRSS:
        self.before = current_rss()
        self._sampled = self.before
        if self._reset_hwm():
            self.method = "vmhwm"
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sampled = max(self._sampled, current_rss())
        hwm = _status_kb("VmHWM") if self.method == "vmhwm" else None
        self.peak = max(hwm * 1024, self._sampled) if hwm is not None else self._sampled


# --------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform.processor())."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info(device: Any = None) -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    try:
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        info["load_average"] = None
    if device is not None and getattr(device, "type", "") == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def sync_device(device: Any) -> None:
    """Wait for the GPU to finish queued work (timing a CUDA call needs it)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(n: int = 2048, repeats: int = 5, device: Any = "cpu") -> float:
    """Measured ``torch.mm`` rate of ``n x n`` float32 matrices, GFLOP/s (median)."""
    import torch

    from .inference import resolve_device

    dev = resolve_device(device) if isinstance(device, str) else device
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dev)
    b = torch.randn(n, n, generator=gen).to(dev)
    times = []
    with torch.inference_mode():
        torch.mm(a, b)
        sync_device(dev)
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            sync_device(dev)
            times.append(time.perf_counter() - start)
    return 2.0 * n**3 / statistics.median(times) / 1e9
