"""Exceptions shared by the core, the CLI and the napari widgets, and how the CLI reports
them (one line and an exit status per kind of failure)."""

from __future__ import annotations

#: Exit statuses of ``wgan-denoise``: see docs/reliability.md.
EXIT_OK = 0
EXIT_FAILED = 1  # could not finish: out of memory, cannot write, missing package, a bug
EXIT_USAGE = 2  # the command line or a setting is wrong (argparse uses 2 as well)
EXIT_BAD_INPUT = 3  # an input file (image, model, data) is missing, unreadable or unusable
EXIT_INTERRUPTED = 130  # SIGINT / SIGTERM (what could be kept was saved first)


class Cancelled(Exception):
    """Raised when a long operation stops because the user asked it to."""


class ModelFileError(ValueError):
    """A model file is missing, truncated, corrupt or does not match its card."""


class InvalidSetting(ValueError):
    """An argument or setting (a keyword, an option, a key of a config file) has a value
    that cannot work; the message names the setting and what it accepts."""


def exit_status(exc: BaseException) -> int:
    """The ``wgan-denoise`` exit status for an exception that ended a command."""
    if isinstance(exc, (KeyboardInterrupt, Cancelled)):
        return EXIT_INTERRUPTED
    if isinstance(exc, (InvalidSetting, FileExistsError)):
        return EXIT_USAGE
    if isinstance(exc, (ValueError, FileNotFoundError)):
        return EXIT_BAD_INPUT
    return EXIT_FAILED


def describe_error(exc: BaseException) -> str:
    """One line for people about why a command failed (no traceback)."""
    if isinstance(exc, OSError) and exc.strerror and str(exc).startswith("[Errno"):
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    elif isinstance(exc, MemoryError):
        text = str(exc) or "out of memory"
        if not text.startswith("Not enough memory"):  # numpy's "Unable to allocate ..."
            text = (
                f"out of memory ({text}); use a smaller --tile-size, --overlap or "
                "--batch-size, process fewer files at once, or choose another --device"
            )
    else:
        text = str(exc) or type(exc).__name__
    if exit_status(exc) == EXIT_FAILED and not isinstance(exc, (OSError, MemoryError, ImportError)):
        text = f"unexpected {type(exc).__name__}: {text} (run with --debug for the traceback)"
    return " ".join(text.split())  # one line, even for multi-line messages
