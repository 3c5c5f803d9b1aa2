"""The command line's one progress adapter: tqdm bars on stderr fed by core callbacks."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

__all__ = ["advance_to", "counting", "progress_bar"]


def progress_bar(
    *,
    total: int = 1,
    desc: str | None = None,
    unit: str = "tile",
    quiet: bool = False,
    initial: int = 0,
    wide: bool = False,
) -> Any:
    """A tqdm bar on stderr (disabled when ``quiet``); use it as a context manager, which
    erases the bar when the block fails. ``wide`` lets it follow the terminal's width
    (training runs)."""
    from tqdm import tqdm

    class _Bar(tqdm):
        def __exit__(self, kind: Any, *rest: Any) -> Any:
            if kind is not None:  # a failure: wipe the bar so the message stands alone
                self.leave = False
            return super().__exit__(kind, *rest)

    return _Bar(
        total=total,
        desc=desc,
        unit=unit,
        disable=quiet,
        file=sys.stderr,
        initial=initial,
        dynamic_ncols=wide,
    )


def counting(bar: Any) -> Callable[[float, int], None]:
    """A ``progress(done, total)`` callback of the core that moves ``bar``."""

    def progress(done: float, total: int) -> None:
        bar.total = total
        bar.n = int(done)  # whole tiles (the core reports fractions within a batch)
        bar.refresh()

    return progress


def advance_to(bar: Any, n: int) -> None:
    """Move ``bar`` forward to ``n`` steps (an iteration count)."""
    bar.update(n - bar.n)
