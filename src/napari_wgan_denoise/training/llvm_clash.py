"""Keep torch from importing Triton where that would crash the process.

Creating a torch optimizer imports ``torch._dynamo``, which imports Triton when it is
installed (the default CUDA builds of torch on Linux ship it). Triton carries its own LLVM.
When a copy of LLVM is already loaded, as Mesa's OpenGL drivers load it for napari's
canvas (llvmpipe software rendering, AMD's radeonsi), importing Triton afterwards ends the
process with a segmentation fault: napari and everything open in it are gone. Training on
the CPU does not need Triton, so in that one case its import is blocked (torch then
behaves as without Triton) and the reason is logged.
"""

from __future__ import annotations

import importlib.util
import logging
import sys

logger = logging.getLogger(__name__)

#: Where Linux lists the shared libraries loaded into this process.
MAPS = "/proc/self/maps"


def llvm_loaded(maps: str | None = None) -> bool:
    """Whether a shared LLVM library (``libLLVM``) is loaded into this process; ``maps``:
    the text of ``/proc/self/maps`` (read when not given; False where it does not exist)."""
    if maps is None:
        try:
            with open(MAPS, encoding="utf-8", errors="replace") as f:
                maps = f.read()
        except OSError:
            return False
    return "libLLVM" in maps


def avoid_triton_llvm_clash(maps: str | None = None) -> bool:
    """Block the import of Triton when it is installed, not yet imported and a shared LLVM
    is already loaded (``maps`` as for :func:`llvm_loaded`); True when it was blocked.
    Call before creating an optimizer."""
    if "triton" in sys.modules or not llvm_loaded(maps):
        return False
    try:
        installed = importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        installed = False
    if not installed:
        return False
    sys.modules["triton"] = None  # type: ignore[assignment]  # import triton: ImportError
    logger.warning(
        "Triton is installed and a shared LLVM (OpenGL's) is already loaded: importing "
        "Triton now would crash the process, so torch runs without it here."
    )
    return True
