"""The bridge between a core function that reports progress by callback and a generator.

napari's ``thread_worker`` runs a generator in a worker thread and sends what it yields to
the main thread. The core (``denoise``, ``restore``, ``denoise_lazy``, ``finetune``)
instead calls ``progress(...)`` while it works. :func:`iter_progress` runs such a function
in a helper thread and yields, as they arrive, the arguments of its progress calls; the
runs in :mod:`._runs` turn those into one typed event, :class:`Progress`. Qt-free.
"""

from __future__ import annotations

import queue
import threading
import warnings
from collections.abc import Callable, Generator
from contextlib import nullcontext
from typing import Any, NamedTuple

__all__ = ["AnyFlag", "Progress", "drive", "iter_progress", "scaled", "where"]


class Progress(NamedTuple):
    """What every run yields: the fraction done in ``[0, 1]``, a message for the progress
    bar, for fine-tuning the core's progress dicts that arrived since the last event
    (loss, validation metric, ``"preview"`` as layer data, or ``"status"`` while loading)
    and a ``warning`` for people (e.g. tiles too small, noise the model was not trained
    for), shown once."""

    fraction: float
    message: str
    updates: tuple[dict[str, Any], ...] = ()
    warning: str = ""


class AnyFlag:
    """A cancel flag that is set when any of its flags (``threading.Event``-like) is."""

    def __init__(self, *flags: Any) -> None:
        self.flags = [f for f in flags if f is not None]

    def is_set(self) -> bool:
        """Whether any of the flags is set."""
        return any(f.is_set() for f in self.flags)


def iter_progress(
    function: Callable[..., Any],
    *args: Any,
    cancel: Any | None = None,
    lock: threading.Lock | None = None,
    **kwargs: Any,
) -> Generator[list[tuple[Any, ...]], None, Any]:
    """Run ``function(*args, progress=..., cancel=..., **kwargs)`` in a helper thread and
    yield the argument tuples of its ``progress`` calls, batched: each yield is the list of
    calls that arrived since the last one (callers that only need the newest take the last).

    The generator returns the function's result (``yield from`` gives it) and re-raises
    what it raised. ``cancel`` is passed on, joined with a flag set when the generator is
    closed early, so closing it stops the run. ``lock`` is held while the function runs.
    """
    updates: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            with lock if lock is not None else nullcontext():
                outcome["result"] = function(
                    *args,
                    progress=lambda *call: updates.put(call),
                    cancel=AnyFlag(cancel, stop),
                    **kwargs,
                )
        except BaseException as exc:  # re-raised in the generator's thread
            outcome["error"] = exc
        finally:
            updates.put(None)

    thread = threading.Thread(target=work, name="napari-wgan-denoise", daemon=True)
    thread.start()
    try:
        finished = False
        while not finished:
            batch: list[tuple[Any, ...]] = []
            item = updates.get()
            while item is not None:
                batch.append(item)
                try:
                    item = updates.get_nowait()
                except queue.Empty:
                    break
            finished = item is None
            if batch:
                yield batch
    finally:
        stop.set()
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def scaled(
    gen: Generator[list[tuple[Any, ...]], None, Any],
    start: float,
    span: float,
    message: str,
    planes: int | None = None,
) -> Generator[Progress, None, Any]:
    """Map the ``(done, total)`` tile progress of ``iter_progress`` onto ``[start, start +
    span]`` as :class:`Progress` events with ``message``, which says the plane and tile
    being worked on when the run has ``planes`` planes; returns what ``gen`` returns."""
    while True:
        try:
            batch = next(gen)
        except StopIteration as stop:
            return stop.value
        done, total = batch[-1][:2]
        text = message
        if planes and total:
            text = f"{message}: {where(done, int(total), planes)}"
        yield Progress(start + span * (done / total if total else 1.0), text)


def where(done: float, total: int, planes: int) -> str:
    """``"plane 2/5, tile 3/16"`` (or ``"tile 3/16"`` for one plane): the tile being worked
    on when ``done`` of ``total`` tiles over ``planes`` planes are done."""
    per_plane = max(-(-total // max(planes, 1)), 1)
    current = min(int(done), total - 1) if total else 0
    plane, tile = current // per_plane + 1, current % per_plane + 1
    tiles = f"tile {tile}/{per_plane}"
    return f"plane {min(plane, planes)}/{planes}, {tiles}" if planes > 1 else tiles


def drive(gen: Generator[Progress, None, Any], progress: Callable[[float, str], Any] | None) -> Any:
    """Run one of the runs of :mod:`._runs` to the end in this thread, calling
    ``progress(fraction, message)`` for each event (its warnings become Python warnings,
    which napari's console shows); return its result."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if event.warning:
            warnings.warn(event.warning, UserWarning, stacklevel=2)
        if progress is not None:
            progress(event.fraction, event.message)
