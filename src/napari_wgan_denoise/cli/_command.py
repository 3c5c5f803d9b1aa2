"""How a subcommand joins the ``wgan-denoise`` parser."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["add_command"]


def add_command(
    sub: Any,
    name: str,
    func: Callable[[argparse.Namespace], int],
    summary: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` that runs ``func(args)``: ``summary`` is its line in
    ``wgan-denoise --help``, ``description`` (a triple-quoted text; argparse re-wraps it)
    heads its own ``--help``."""
    text = inspect.cleandoc(description) if description else None
    p = sub.add_parser(name, help=summary, description=text)
    p.set_defaults(func=func)
    return p
