"""What a bioimage.io package says about a network: format constants, citations, the
architecture's standalone source, tiling constraints and the pre/post-processing that
reproduces our normalisation."""

from __future__ import annotations

import ast
import importlib
import inspect
import math
from typing import Any

from torch import nn

from .._version import __version__
from ..errors import ModelFileError

#: The model description format version we write (readers of any 0.5.x accept it).
FORMAT_VERSION = "0.5.4"
#: Key under ``config`` that marks a package as exported by this plugin.
CONFIG_KEY = "napari_wgan_denoise"
#: The callable in the packaged architecture file.
FACTORY = "build_generator"
#: Names a package's description file may have (bioimage.io accepts all of these).
RDF_NAMES = ("bioimageio.yaml", "rdf.yaml")
#: ``eps`` of the ``scale_range`` preprocessing (bioimage.io's default).
SCALE_RANGE_EPS = 1e-6

DEFAULT_AUTHORS = ({"name": "napari-wgan-denoise developers"},)
LICENSE = "BSD-3-Clause"

#: The papers behind the method (see docs and the seeds); each model cites the core
#: paper, WGAN-GP, and the paper of its architecture.
#: The seed papers (checked 2026-12-04 against the seed texts and the publishers' pages:
#: IEEE Access, techscience.com/jihpp/v2n4/41147, link.springer.com/10.1007/s11042-017-5320-7,
#: arxiv.org/abs/1811.07268).
CITATIONS: dict[str, dict[str, str]] = {
    "core": {
        "text": "Chen S, Shi D, Sadiq M, Cheng X. Image Denoising With Generative Adversarial "
        "Networks and Its Application to Cell Image Enhancement. IEEE Access 8 (2020).",
        "doi": "10.1109/ACCESS.2020.2988284",
    },
    "wgan-gp": {
        "text": "Gulrajani I, Ahmed F, Arjovsky M, Dumoulin V, Courville A. Improved Training "
        "of Wasserstein GANs. NeurIPS 2017.",
        "url": "https://arxiv.org/abs/1704.00028",
    },
    "unet": {
        "text": "Gong P, Liu J, Lv S. Image Denoising with GAN Based Model. Journal of "
        "Information Hiding and Privacy Protection 2(4):155-163 (2020).",
        "doi": "10.32604/jihpp.2020.010453",
    },
    "cascade": {
        "text": "Zhao G, Liu J, Jiang J, Wang W. A deep cascade of neural networks for image "
        "inpainting, deblurring and denoising. Multimedia Tools and Applications (2018).",
        "doi": "10.1007/s11042-017-5320-7",
    },
    "inaccurate-data": {
        "text": "Liu B, Shu X, Wu X. Deep Learning with Inaccurate Training Data for Image "
        "Restoration. arXiv:1811.07268 (2018).",
        "url": "https://arxiv.org/abs/1811.07268",
    },
}
_ARCH_CITES = {"srresnet": ["core"], "unet": ["unet"], "resunet": [], "cascade": ["cascade"]}


class PackageError(ModelFileError):
    """A bioimage.io package is corrupt, not a model, or cannot be run by this plugin."""


# ============================================================================ export


def architecture_source(architecture: str) -> str:
    """A self-contained Python file that builds the named generator from plain kwargs.

    It holds the source of the module that defines the architecture's generator (and of
    its config class), with any imports from inside this package inlined, plus a
    ``build_generator(channels=1, **config)`` factory: what bioimage.io's
    ``pytorch_state_dict`` weights need, for every architecture in the registry.
    """
    from ..models.architectures import get_architecture

    arch = get_architecture(architecture)
    modules: list[str] = []
    for cls in (arch.config, arch.generator):
        _collect_module(cls.__module__, modules)
    parts = [
        f'"""Architecture {architecture!r} of napari-wgan-denoise {__version__}, generated for '
        'bioimage.io.\n\nCall build_generator(channels, **config) to construct the network."""',
        "from __future__ import annotations",
    ]
    for name in modules:
        parts.append(f"# ---- from {name}\n{_strip_internal_imports(name)}")
    gen, cfg = arch.generator.__name__, arch.config.__name__
    parts.append(
        f"def {FACTORY}(channels: int = 1, **config):\n"
        f'    """Build an untrained {gen} (1 gray or 3 RGB channels) from {cfg} kwargs."""\n'
        f"    return {gen}(channels, {cfg}(**config))\n"
    )
    return "\n\n".join(parts)


def _internal_imports(module_name: str) -> list[tuple[ast.ImportFrom, str]]:
    """The ``from <package module> import ...`` statements of a module, resolved."""
    module = importlib.import_module(module_name)
    tree = ast.parse(inspect.getsource(module))
    package = module.__package__ or ""
    root = __name__.split(".")[0]
    found = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == root or target.startswith(root + "."):
                found.append((node, target))
        elif isinstance(node, ast.Import) and any(
            a.name == root or a.name.startswith(root + ".") for a in node.names
        ):
            raise ValueError(
                f"{module_name} imports {root} as a module; cannot make a standalone "
                "architecture file from it."
            )
    return found


def _collect_module(module_name: str, out: list[str]) -> None:
    """Append ``module_name`` and (first) the package modules it imports from, once each."""
    if module_name in out:
        return
    for _, target in _internal_imports(module_name):
        _collect_module(target, out)
    out.append(module_name)


def _is_internal(node: ast.AST) -> bool:
    """Whether a top-level statement imports from inside this package."""
    root = __name__.split(".")[0]
    return isinstance(node, ast.ImportFrom) and (
        bool(node.level) or (node.module or "").split(".")[0] == root
    )


def _strip_internal_imports(module_name: str) -> str:
    """The module's source without ``from __future__`` and package-internal imports; names
    imported ``as`` another name get an alias assignment instead."""
    source = inspect.getsource(importlib.import_module(module_name))
    lines = source.splitlines()
    drop: set[int] = set()
    aliases = []
    for node in ast.parse(source).body:
        future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
        if future or _is_internal(node):
            drop.update(range(node.lineno - 1, node.end_lineno or node.lineno))
            if not future:
                aliases += [f"{a.asname} = {a.name}" for a in node.names if a.asname]
    kept = [line for i, line in enumerate(lines) if i not in drop]
    return "\n".join(kept + aliases) + "\n"


def tiling_for(network: nn.Module) -> dict[str, int]:
    """The tiling constraints of a generator: ``halo`` (pixels to crop on each side, its
    receptive radius rounded up to the size multiple), ``step`` (the size multiple) and
    ``min`` (the smallest input size: room for both halos plus 16 pixels, on the grid)."""
    step = max(1, int(getattr(network, "size_multiple", 1)))
    radius = int(getattr(network, "receptive_radius", 32))
    halo = max(1, math.ceil(radius / step) * step)
    minimum = math.ceil((2 * halo + max(16, step)) / step) * step
    return {"halo": halo, "step": step, "min": minimum}


def processing_for(normalisation: dict[str, Any], channels: int) -> dict[str, Any]:
    """bioimage.io pre/post-processing for a card's normalisation, and how exact it is.

    * ``fixed`` (e.g. 0..255 for 8-bit models): ``scale_linear`` before and its inverse
      after: the package's output is on the input's scale, exactly as in the plugin (which
      applies the fixed scale only to the dtypes the card lists, and otherwise the
      percentile mode; the package applies it to every input).
    * ``percentile`` (our default, 0.1/99.9 per plane; over the three colours together
      for RGB): ``scale_range`` with the same percentiles over the same axes. The spec has
      no operation that maps the output back with the *input's* percentiles, so the
      package's output stays on the normalised scale (the input's low percentile is 0,
      its high percentile 1); the plugin maps it back: ``out * (high - low) + low``.
      Both use linear interpolation between ranks for the percentiles.
    """
    mode = normalisation.get("mode", "percentile")
    axes = ["channel", "y", "x"] if channels == 3 else ["y", "x"]
    if mode == "fixed":
        lo, hi = float(normalisation["low"]), float(normalisation["high"])
        gain = 1.0 / (hi - lo)
        return {
            "mode": "fixed",
            "low": lo,
            "high": hi,
            "dtypes": list(normalisation.get("dtypes") or []),
            "preprocessing": [
                {"id": "scale_linear", "kwargs": {"gain": gain, "offset": -lo * gain}}
            ],
            "postprocessing": [{"id": "scale_linear", "kwargs": {"gain": hi - lo, "offset": lo}}],
            "output_scale": "the input's intensity scale",
        }
    if mode != "percentile":
        raise ValueError(f"Cannot export normalisation mode {mode!r}.")
    p_lo, p_hi = float(normalisation.get("low", 0.1)), float(normalisation.get("high", 99.9))
    return {
        "mode": "percentile",
        "low": p_lo,
        "high": p_hi,
        "preprocessing": [
            {
                "id": "scale_range",
                "kwargs": {
                    "axes": axes,
                    "min_percentile": p_lo,
                    "max_percentile": p_hi,
                    "eps": SCALE_RANGE_EPS,
                },
            }
        ],
        "postprocessing": [],
        "output_scale": (
            f"the normalised scale: the input's {p_lo:g} and {p_hi:g} percentiles are 0 and 1"
        ),
    }
