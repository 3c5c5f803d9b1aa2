"""Ctrl-C (SIGINT) and SIGTERM for long command-line runs.

Two behaviours, both for the main thread only (elsewhere they do nothing):

- :func:`terminate_as_interrupt`: SIGTERM raises ``KeyboardInterrupt`` like Ctrl-C, so the
  clean-up that Ctrl-C runs (removing half-written ``.NAME.partial`` files) runs for
  ``kill`` too instead of the process dying on the spot.
- :class:`GracefulStop`: for training. The first SIGINT/SIGTERM only sets an event that
  the training loops poll (``cancel=``), so they stop after the current iteration and
  the command can save the best (or last) weights and say where; a second signal raises
  ``KeyboardInterrupt`` at once.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TextIO

_SIGNALS = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None)) if s is not None)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt`` (as SIGINT does)."""
    sigterm = getattr(signal, "SIGTERM", None)
    if sigterm is None or not _main_thread():
        yield
        return
    previous = signal.signal(sigterm, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(sigterm, previous)


def ignore_signals() -> None:
    """From now on SIGINT/SIGTERM do nothing (main thread only): for a command whose run
    was interrupted and has kept what it could, so that a repeated Ctrl-C, even one sent
    while the interpreter shuts down (when Python puts the default handler back), cannot
    kill it by signal."""
    if _main_thread():
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


class GracefulStop:
    """Context manager: the first SIGINT/SIGTERM sets :attr:`event` and prints ``note``;
    a second one raises ``KeyboardInterrupt`` immediately, and from then on both signals
    are ignored (so a third cannot cut short the clean-up of half-written files while the
    interrupt unwinds). Otherwise the handlers are restored on exit.

    ``with GracefulStop("saving the best weights so far") as stop: run(cancel=stop.event)``
    then ``stop.signal_name`` says whether (and by which signal) the run was stopped.
    """

    def __init__(self, note: str, stream: TextIO | None = None) -> None:
        self.note = note
        self.stream = stream
        self.event = threading.Event()
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}
        self._quitting = False

    @property
    def stopped(self) -> bool:
        """Whether a signal asked the run to stop."""
        return self.signal_name is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.event.is_set():  # second signal: leave now, deaf to any further one
            self._quitting = True
            ignore_signals()
            raise KeyboardInterrupt(name)
        self.signal_name = name
        self.event.set()
        stream = self.stream or sys.stderr
        print(
            f"\nwgan-denoise: {name} received: stopping after this iteration and "
            f"{self.note} (send it again to quit at once, keeping nothing).",
            file=stream,
            flush=True,
        )

    def __enter__(self) -> GracefulStop:
        if _main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._quitting:  # after a second signal the process is quitting: stay deaf
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
        self._previous.clear()


def finish_interrupted_training(trainer: Any) -> Any:
    """The model of a :class:`~napari_wgan_denoise.training.trainer.Trainer` whose run was
    cancelled: the current weights, with the card filled in as after a complete run (and
    validated on the source's validation pairs) and marked ``training.stopped``."""
    model = trainer._finish(trainer.source.validation_pairs())  # the end-of-run card
    model.card["training"]["stopped"] = "interrupted"
    model.card["training"]["iterations_asked"] = int(trainer.config.iterations)
    return model
