"""bioimage.io model packages: export our denoisers, import ours and simple foreign ones.

Export (:func:`export_bioimageio`) writes a zip in the bioimage.io model description
format 0.5 that Fiji/deepImageJ, ilastik, QuPath and ``bioimageio.core`` can run:

* weights twice: ``pytorch_state_dict`` (with the architecture's source file and its
  kwargs, taken from the architecture registry, so any registered generator exports) and
  ``torchscript``;
* test input/output tensors made from a bundled sample image, a cover image;
* axes ``b, c, y, x`` with the tiling constraints of the network (minimum size and step
  from its ``size_multiple``, a halo from its ``receptive_radius``);
* pre/post-processing that reproduce our normalisation where the spec can (see
  :func:`processing_for`);
* a README with the card's training data, noise model and metrics; authors, licence and
  the seed papers as citations; our own card and safetensors weights as attachments, so
  that :func:`load_bioimageio` gets back exactly the model that was exported.

Import (:func:`load_bioimageio`) needs neither ``bioimageio.spec`` nor ``bioimageio.core``:
it reads the package's YAML itself. Our packages load from the attached card and
safetensors (nothing is unpickled); a foreign package is run when it has TorchScript
weights for a 2-D image with one channel in and one out, and is refused otherwise with the
reason. ``bioimageio.spec``/``core`` (the ``bioimageio`` extra) are only imported, lazily,
by :func:`validate_package`.
"""

from __future__ import annotations

import ast
import datetime as _dt
import hashlib
import importlib
import inspect
import io
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from .._version import __version__
from ..errors import InvalidSetting, ModelFileError

__all__ = [
    "PackageError",
    "architecture_source",
    "export_bioimageio",
    "is_bioimageio_package",
    "load_bioimageio",
    "processing_for",
    "tiling_for",
    "validate_package",
]

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
        "Information Hiding and Privacy Protection 2(4) (2020).",
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


def _sample_input(channels: int) -> tuple[np.ndarray, str]:
    """A bundled noisy sample as float32 ``(1, C, Y, X)`` and a sentence about it."""
    from ..data.samples import cells_sample, fluorescence_sample

    if channels == 1:
        noisy, _ = fluorescence_sample(seed=0)
        what = "the plugin's fluorescence sample (CellProfiler ExampleHuman crop, CC0)"
        arr = noisy[None, None]
    else:
        noisy, _ = cells_sample(seed=0)
        what = "the plugin's stained-cell sample (scikit-image immunohistochemistry)"
        arr = np.moveaxis(noisy, -1, 0)[None]
    return arr.astype(np.float32), what + " with its synthetic noise"


def _fit_size(length: int, tiling: dict[str, int], limit: int = 256) -> int:
    """The largest valid size (``min + k * step``) not above ``min(length, limit)``."""
    top = min(length, limit)
    if top < tiling["min"]:
        raise ValueError(f"The sample ({length} px) is smaller than the minimum {tiling['min']}.")
    return tiling["min"] + (top - tiling["min"]) // tiling["step"] * tiling["step"]


def _apply_processing(ops: Sequence[dict[str, Any]], x: np.ndarray, channels: int) -> np.ndarray:
    """Run the pre/post-processing we write, with bioimage.io's semantics (numpy)."""
    for op in ops:
        kw = op["kwargs"]
        if op["id"] == "scale_linear":
            x = x * np.float32(kw["gain"]) + np.float32(kw["offset"])
        elif op["id"] == "scale_range":
            reduce = (1, 2, 3) if "channel" in kw["axes"] else (2, 3)
            lo = np.percentile(x, kw["min_percentile"], axis=reduce, keepdims=True)
            hi = np.percentile(x, kw["max_percentile"], axis=reduce, keepdims=True)
            x = (x - lo) / (hi - lo + kw["eps"])
        else:  # pragma: no cover - we only write the two above
            raise ValueError(f"Unsupported processing {op['id']!r}.")
    return x.astype(np.float32)


def _torchscript(network: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """Script the network (trace when scripting fails) and check that it agrees with the
    eager network on the example and on a second, larger size."""
    try:
        scripted = torch.jit.script(network)
    except Exception:  # scripting rejects some Python; tracing covers plain conv nets
        scripted = torch.jit.trace(network, example, check_trace=False)
    step = int(getattr(network, "size_multiple", 1))
    other = torch.nn.functional.pad(example, (0, 2 * step, 0, step), mode="reflect")
    with torch.inference_mode():
        for x in (example, other):
            ref, got = network(x), scripted(x)
            if ref.shape != got.shape or not torch.allclose(ref, got, atol=1e-4, rtol=1e-4):
                raise RuntimeError(
                    "The TorchScript version of the network does not reproduce it; cannot "
                    "export this architecture."
                )
    return scripted


def _cover(x: np.ndarray, y: np.ndarray, path: Path) -> None:
    """A 2:1 cover image: the test input (left) and output (right), same contrast."""
    import imageio.v3 as iio

    def rgbish(a: np.ndarray) -> np.ndarray:
        a = a[0]
        return np.moveaxis(a, 0, -1) if a.shape[0] == 3 else a[0]

    left, right = rgbish(x), rgbish(y)
    lo, hi = np.percentile(left, [0.5, 99.5])
    if not hi > lo:
        hi = lo + 1

    def to8(a: np.ndarray) -> np.ndarray:
        return (np.clip((a - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)

    # the output may be on the normalised scale: stretch it by its own percentiles then
    r_lo, r_hi = np.percentile(right, [0.5, 99.5])
    if abs(r_hi - r_lo) < 0.5 * (hi - lo) and r_hi <= 2:
        right = lo + (right - r_lo) / max(r_hi - r_lo, 1e-6) * (hi - lo)
    sep = np.full((left.shape[0], 4, *left.shape[2:]), 255, np.uint8)
    iio.imwrite(path, np.concatenate([to8(left), sep, to8(right)], axis=1))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _file(path: Path) -> dict[str, str]:
    return {"source": path.name, "sha256": _sha256(path)}


def _markdown_table(rows: list[list[str]]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def _noise_text(noise: Any) -> str:
    """One line per noise component of a card's ``noise`` entry."""
    if not noise:
        return "not recorded in the model card"
    if noise.get("type") == "mixed":
        parts = []
        for comp, w in zip(noise.get("components", []), noise.get("weights", [])):
            what = comp.get("spec") or (
                "real noisy/clean pairs" if comp.get("type") == "real" else comp.get("type")
            )
            parts.append(f"{w:.0%} {what}")
        return "mixture of " + ", ".join(parts)
    return str(noise.get("spec") or noise.get("type")) + (
        f" (on the {noise['scale']} scale)" if noise.get("scale") else ""
    )


def _metrics_text(metrics: dict[str, Any]) -> str:
    rows = [["data", "input PSNR", "PSNR (dB)", "SSIM", "gradient ratio", "images"]]
    for name, m in sorted((metrics.get("held_out") or {}).items()):
        rows.append(
            [
                name,
                f"{m.get('noisy_psnr', float('nan')):.2f}",
                f"{m.get('psnr', float('nan')):.2f}",
                f"{m.get('ssim', float('nan')):.3f}",
                f"{m.get('grad_ratio', float('nan')):.3f}",
                str(m.get("n", "")),
            ]
        )
    text = ""
    if len(rows) > 1:
        text += "Held-out evaluation (from the model card):\n\n" + _markdown_table(rows) + "\n\n"
    if "val_psnr" in metrics:
        text += (
            f"Validation PSNR {metrics['val_psnr']:.2f} dB "
            f"(input {metrics.get('val_input_psnr', float('nan')):.2f} dB).\n"
        )
    return text or "No metrics recorded in the model card.\n"


def _training_text(card: dict[str, Any]) -> str:
    training = card.get("training") or {}
    data = training.get("data") or {}
    lines = []
    cfg = training.get("config") or {}
    if training.get("loss") or cfg.get("loss"):
        loss = training.get("loss") or cfg.get("loss")
        lines.append(
            f"- loss: {'MSE + WGAN-GP critic (ID-MSE-WGAN)' if loss == 'wgan' else 'MSE (ID-MSE)'}"
            f", {training.get('iterations', cfg.get('iterations', '?'))} iterations, "
            f"patches of {cfg.get('patch_size', '?')} px, batch {cfg.get('batch_size', '?')}"
        )
    sources = data.get("sources") or ([data] if data else [])
    for s in sources:
        where = s.get("fmd") or s.get("clean") or s.get("kind", "?")
        images = s.get("images") or {}
        lines.append(
            f"- {s.get('kind', 'data')} from `{Path(str(where)).name}`: "
            f"{images.get('train', '?')} training / {images.get('val', '?')} validation images; "
            f"noise: {_noise_text(s.get('noise'))}"
        )
    if training.get("device_name"):
        lines.append(
            f"- trained on {training['device_name']} in {training.get('wall_time_s', '?')} s "
            f"with torch {training.get('torch', '?')}"
        )
    return "\n".join(lines) or "- not recorded in the model card"


def _readme(card: dict[str, Any], proc: dict[str, Any], tiling: dict[str, int], sample: str) -> str:
    name = card.get("name") or "model"
    loss = (card.get("training") or {}).get("loss")
    kind = "ID-MSE-WGAN (MSE + Wasserstein critic)" if loss == "wgan" else "ID-MSE (MSE only)"
    norm = (
        f"fixed: intensities {proc['low']:g}..{proc['high']:g} are mapped to 0..1"
        if proc["mode"] == "fixed"
        else f"per image, the {proc['low']:g} and {proc['high']:g} percentiles are mapped "
        "to 0 and 1"
    )
    fixed_note = ""
    if proc["mode"] == "fixed" and proc.get("dtypes"):
        fixed_note = (
            f" (The plugin applies this fixed scale to {', '.join(proc['dtypes'])} images "
            "and the 0.1/99.9 percentiles to other dtypes; this package applies it to all.)"
        )
    return f"""# {name}

A {card.get("modality") or ""} image denoiser, {kind}, exported from
napari-wgan-denoise {__version__}: architecture `{card.get("architecture")}`,
{card.get("parameters", "?")} weights, {"RGB" if card.get("channels") == 3 else "gray"} in and out.

## Use

Input: a 2-D image, axes `b, c, y, x`, any size of at least {tiling["min"]} pixels that is
{tiling["min"]} + a multiple of {tiling["step"]}; tiles need a halo of {tiling["halo"]} pixels.

Normalisation: {norm}. The output is on {proc["output_scale"]}.{fixed_note}
{
        ""
        if proc["mode"] == "fixed"
        else '''
**Difference from the plugin:** bioimage.io's processing cannot map the output back with
the input's percentiles, so this package's output is the normalised image. In
napari-wgan-denoise (which reads this package: `load_model("this.zip")`) the output is
mapped back to the input's intensities: `output * (high - low) + low`, where `low` and
`high` are the input's percentiles above. Contrast-wise the two are the same image.
'''
    }
## Training data and noise model

{_training_text(card)}

Noise model of the model card: {_noise_text(card.get("noise"))}.

## Metrics

{_metrics_text(card.get("metrics") or {})}
## Test data

The test tensors are {sample}.

## How to read the output

A denoiser trained with an adversarial critic (ID-MSE-WGAN) keeps more texture than the
MSE twin but may invent some. Compare it with the ID-MSE twin, and look at the method noise
(input minus output): it should look like noise, with no edges or shapes in it.
"""


def export_bioimageio(
    model: Any,
    output: str | os.PathLike[str],
    *,
    name: str | None = None,
    authors: Sequence[dict[str, str]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a bioimage.io model package (format 0.5) of a denoising model to ``output``.

    ``model`` is a :class:`~napari_wgan_denoise.DenoiseModel`, a registered name or a
    model file path. Returns the path of the zip. The package validates and passes
    ``bioimageio.core``'s ``test_model`` (see :func:`validate_package`).
    """
    from ..models.model import _config_dict
    from ..models.registry import load_model

    dmodel = load_model(model)
    if dmodel.task != "denoise":  # a usage error (exit 2), like fine-tuning a cascade
        raise InvalidSetting(
            f"Model {dmodel.name} is a {dmodel.task} model (image + mask in); only denoising "
            "models (one image in, one out) can be exported to bioimage.io for now."
        )
    out = Path(output)
    if out.suffix != ".zip":
        out = out.with_name(out.name + ".zip")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite).")
    network = dmodel.network.eval().to("cpu")
    card = json.loads(json.dumps(dmodel.card, default=str))
    channels = dmodel.channels
    architecture = dmodel.architecture
    config = _config_dict(network) or dict(card.get("config") or {})
    tiling = tiling_for(network)
    proc = processing_for(dmodel.normalisation, channels)
    model_name = name or dmodel.name

    x, sample_text = _sample_input(channels)
    size = [_fit_size(n, tiling) for n in x.shape[2:]]
    x = np.ascontiguousarray(x[:, :, : size[0], : size[1]])
    with torch.inference_mode():
        y_net = network(torch.from_numpy(_apply_processing(proc["preprocessing"], x, channels)))
    y = _apply_processing(proc["postprocessing"], y_net.numpy(), channels)

    with tempfile.TemporaryDirectory(prefix="wgan-bioimageio-") as tmp:
        root = Path(tmp)
        np.save(root / "test_input.npy", x)
        np.save(root / "test_output.npy", y)
        state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
        torch.save(state, root / "weights.pt")
        example = torch.from_numpy(_apply_processing(proc["preprocessing"], x, channels))
        _torchscript(network, example).save(str(root / "weights_torchscript.pt"))
        (root / "architecture.py").write_text(architecture_source(architecture), "utf-8")
        _cover(x, y, root / "cover.png")
        # our own format beside the spec's: load_bioimageio gets back exactly this model
        from ..models.model import DenoiseModel, save_model

        save_model(DenoiseModel(network=network, card=dict(card)), root / "model", name=model_name)
        card_saved = json.loads((root / "model.json").read_text("utf-8"))
        (root / "README.md").write_text(_readme(card_saved, proc, tiling, sample_text), "utf-8")

        cites = ["core", "wgan-gp", *_ARCH_CITES.get(architecture, [])]
        channel_names = ["gray"] if channels == 1 else ["red", "green", "blue"]
        space_in = [
            {"type": "space", "id": ax, "size": {"min": tiling["min"], "step": tiling["step"]}}
            for ax in ("y", "x")
        ]
        space_out = [
            {
                "type": "space",
                "id": ax,
                "size": {"tensor_id": "raw", "axis_id": ax},
                "halo": tiling["halo"],
            }
            for ax in ("y", "x")
        ]
        loss = (card.get("training") or {}).get("loss")
        rdf: dict[str, Any] = {
            "type": "model",
            "format_version": FORMAT_VERSION,
            "name": model_name,
            "description": (
                f"{'ID-MSE-WGAN' if loss == 'wgan' else 'ID-MSE'} denoiser for "
                f"{card.get('modality') or 'microscopy'} images ({architecture}, "
                f"{'RGB' if channels == 3 else 'gray'}), exported from napari-wgan-denoise. "
                f"Noise model: {_noise_text(card.get('noise'))}."
            )[:1000],
            "authors": [dict(a) for a in (authors or DEFAULT_AUTHORS)],
            "cite": [dict(CITATIONS[c]) for c in dict.fromkeys(cites)],
            "license": LICENSE,
            "documentation": "README.md",
            "covers": ["cover.png"],
            "tags": [
                "denoising",
                "2d",
                "pytorch",
                "wgan",
                "napari-wgan-denoise",
                *([card["modality"]] if card.get("modality") else []),
            ],
            "version": "0.1.0",
            "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "attachments": [_file(root / "model.json"), _file(root / "model.safetensors")],
            "inputs": [
                {
                    "id": "raw",
                    "description": "noisy image",
                    "axes": [
                        {"type": "batch"},
                        {"type": "channel", "channel_names": channel_names},
                        *space_in,
                    ],
                    "test_tensor": _file(root / "test_input.npy"),
                    "data": {"type": "float32"},
                    "preprocessing": proc["preprocessing"],
                }
            ],
            "outputs": [
                {
                    "id": "denoised",
                    "description": f"denoised image, on {proc['output_scale']}",
                    "axes": [
                        {"type": "batch"},
                        {"type": "channel", "channel_names": list(channel_names)},
                        *space_out,
                    ],
                    "test_tensor": _file(root / "test_output.npy"),
                    "data": {"type": "float32"},
                    "postprocessing": proc["postprocessing"],
                }
            ],
            "weights": {
                "pytorch_state_dict": {
                    **_file(root / "weights.pt"),
                    "architecture": {
                        **_file(root / "architecture.py"),
                        "callable": FACTORY,
                        "kwargs": {"channels": channels, **config},
                    },
                    "pytorch_version": torch.__version__.split("+")[0],
                },
                "torchscript": {
                    **_file(root / "weights_torchscript.pt"),
                    "pytorch_version": torch.__version__.split("+")[0],
                    "parent": "pytorch_state_dict",
                },
            },
            "config": {
                CONFIG_KEY: {
                    "version": __version__,
                    "card": "model.json",
                    "weights": "model.safetensors",
                    "architecture": architecture,
                    "normalisation": dmodel.normalisation,
                    "output_scale": proc["output_scale"],
                },
                "bioimageio": {"model_parameter_count": int(dmodel.n_parameters)},
            },
        }
        (root / "rdf.yaml").write_text(
            yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True), "utf-8"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.partial")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(root.iterdir()):
                zf.write(f, f.name)
        os.replace(partial, out)
    return out


# ============================================================================ import


def is_bioimageio_package(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a bioimage.io package (a ``.zip`` file or a description YAML)."""
    text = str(path)
    return text.endswith(".zip") or text.endswith(("bioimageio.yaml", "rdf.yaml"))


class _Package:
    """Read access to a package's files, zipped or in a folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        if path.suffix == ".zip":
            if not path.is_file():
                raise PackageError(f"Package {path} not found.")
            try:
                self.zip = zipfile.ZipFile(path)
                bad = self.zip.testzip()
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise PackageError(
                    f"{path} is not a readable zip file ({exc}): the download is truncated or "
                    "corrupt. Download or export the package again."
                ) from None
            if bad is not None:
                raise PackageError(
                    f"{path} is corrupt: {bad} fails its checksum. Download or export it again."
                )
            names = self.zip.namelist()
            rdf = next((n for n in RDF_NAMES if n in names), None)
            rdf = rdf or next((n for n in names if n.endswith(".bioimageio.yaml")), None)
            if rdf is None:
                raise PackageError(
                    f"{path} is a zip file but not a bioimage.io package: it has no "
                    f"{' or '.join(RDF_NAMES)}."
                )
            self.rdf_name = rdf
        else:
            if not path.is_file():
                raise PackageError(f"Package description {path} not found.")
            self.rdf_name = path.name

    def read(self, name: str) -> bytes:
        """The bytes of one file of the package (relative name)."""
        if "://" in name:
            raise PackageError(
                f"The package refers to a remote file ({name}); only self-contained packages "
                "can be loaded (no downloads)."
            )
        try:
            if self.zip is not None:
                return self.zip.read(name)
            return (self.path.parent / name).read_bytes()
        except (KeyError, OSError):
            raise PackageError(f"Package {self.path} lacks its file {name!r}.") from None

    def rdf(self) -> dict[str, Any]:
        """The parsed description."""
        try:
            rdf = yaml.safe_load(self.read(self.rdf_name))
        except yaml.YAMLError as exc:
            raise PackageError(f"{self.path}: {self.rdf_name} is not valid YAML ({exc}).") from None
        if not isinstance(rdf, dict):
            raise PackageError(f"{self.path}: {self.rdf_name} does not describe a resource.")
        if rdf.get("type") != "model":
            raise PackageError(
                f"{self.path} describes a bioimage.io {rdf.get('type')!r}, not a model."
            )
        return rdf


def _checked(pkg: _Package, entry: Any, what: str) -> bytes:
    """The bytes of a file entry (``{source, sha256}`` or a plain string), hash checked."""
    source = entry.get("source") if isinstance(entry, dict) else entry
    if not isinstance(source, str):
        raise PackageError(f"{pkg.path}: the {what} entry has no source file.")
    data = pkg.read(source)
    expected = entry.get("sha256") if isinstance(entry, dict) else None
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise PackageError(
            f"{pkg.path}: {source} does not match its sha256 in the description; the package "
            "is corrupt or was edited. Download or export it again."
        )
    return data


def load_bioimageio(path: str | os.PathLike[str]) -> Any:
    """Load a bioimage.io model package as a :class:`~napari_wgan_denoise.DenoiseModel`.

    Packages exported by this plugin come back exactly (card and safetensors weights are
    attached). Other packages are run when they have TorchScript weights for a 2-D image
    with one channel in and one out, and pre/post-processing we can reproduce; anything
    else raises :class:`PackageError` saying why.
    """
    pkg = _Package(Path(path))
    rdf = pkg.rdf()
    ours = (rdf.get("config") or {}).get(CONFIG_KEY)
    if isinstance(ours, dict) and ours.get("card") and ours.get("weights"):
        return _load_ours(pkg, rdf, ours)
    return _load_foreign(pkg, rdf)


def _load_ours(pkg: _Package, rdf: dict[str, Any], ours: dict[str, Any]) -> Any:
    from ..models.model import load_model_file

    attachments = {
        (a.get("source") if isinstance(a, dict) else a): a for a in rdf.get("attachments") or []
    }
    with tempfile.TemporaryDirectory(prefix="wgan-bioimageio-") as tmp:
        for key, suffix in (("card", ".json"), ("weights", ".safetensors")):
            name = ours[key]
            data = _checked(pkg, attachments.get(name, name), key)
            (Path(tmp) / f"model{suffix}").write_bytes(data)
        try:
            model = load_model_file(Path(tmp) / "model")
        except ModelFileError as exc:
            raise PackageError(f"{pkg.path}: {exc}") from None
    model.path = None
    model.card["source_package"] = str(pkg.path)
    return model


def _axes_of(tensor: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(kind, entry)`` per axis for format 0.5 (list of dicts) and 0.4 (a string)."""
    axes = tensor.get("axes")
    if isinstance(axes, str):  # format 0.4: "bcyx"
        kinds = {"b": "batch", "c": "channel", "y": "y", "x": "x", "z": "z", "t": "time"}
        return [(kinds.get(a, a), None) for a in axes]
    out = []
    for ax in axes or []:
        kind = ax.get("type")
        if kind == "space":
            kind = str(ax.get("id"))
        out.append((kind, ax))
    return out


def _channel_count(tensor: dict[str, Any], axes: list[tuple[str, Any]]) -> int:
    for i, (kind, entry) in enumerate(axes):
        if kind == "channel":
            if entry is not None:
                names = entry.get("channel_names") or []
                return len(names) or int(entry.get("size", 0) or 0)
            shape = tensor.get("shape")  # format 0.4: a list, or {min, step} / reference
            if isinstance(shape, dict) and isinstance(shape.get("min"), list):
                step = shape.get("step") or [0] * len(shape["min"])
                return int(shape["min"][i]) if not step[i] else -1
            if isinstance(shape, dict) and shape.get("reference_tensor"):
                scale = (shape.get("scale") or [1] * (i + 1))[i]
                offset = (shape.get("offset") or [0] * (i + 1))[i]
                return 0 if (scale, offset) == (1, 0) else -1  # 0: as the reference tensor
            if isinstance(shape, list):
                return int(shape[i])
            return -1
    return 1


def _op(entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return str(entry.get("id") or entry.get("name")), dict(entry.get("kwargs") or {})


class _ForeignNetwork(nn.Module):
    """A foreign TorchScript model behind the interface ``denoise`` expects:
    ``(N, 1, Y, X)`` in and out, ``size_multiple`` and ``receptive_radius``."""

    def __init__(
        self, module: Any, in_axes: str, out_axes: str, multiple: int, radius: int, post: list
    ) -> None:
        super().__init__()
        self.module = module
        self.in_axes, self.out_axes = in_axes, out_axes
        self.size_multiple = multiple
        self.receptive_radius = radius
        self.channels = 1
        self.post = post

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x is (N, 1, Y, X); build the package's layout (e.g. "bcyx", "byxc", "yx")
        t = x
        if "c" not in self.in_axes:
            t = t[:, 0]
        elif self.in_axes.index("c") > self.in_axes.index("y"):
            t = t.permute(0, 2, 3, 1)
        if "b" not in self.in_axes:
            if t.shape[0] != 1:
                return torch.cat([self.forward(x[i : i + 1]) for i in range(x.shape[0])])
            t = t[0]
        y = self.module(t)
        if isinstance(y, (tuple, list)):
            y = y[0]
        if "b" not in self.out_axes:
            y = y[None]
        if "c" not in self.out_axes:
            y = y[:, None]
        elif self.out_axes.replace("b", "").index("c") > self.out_axes.replace("b", "").index("y"):
            y = y.permute(0, 3, 1, 2)
        for gain, offset in self.post:
            y = y * gain + offset
        return y


def _load_foreign(pkg: _Package, rdf: dict[str, Any]) -> Any:
    from ..models.model import DenoiseModel

    name = str(rdf.get("name") or pkg.path.stem)
    refuse = f"Cannot run the bioimage.io model {name!r} ({pkg.path.name}): "
    weights = rdf.get("weights") or {}
    if "torchscript" not in weights:
        raise PackageError(
            refuse + f"it has no TorchScript weights (it has {', '.join(weights) or 'none'}); "
            "this plugin runs foreign packages through TorchScript only. Run it with "
            "bioimageio.core, or ask its authors for TorchScript weights."
        )
    inputs, outputs = rdf.get("inputs") or [], rdf.get("outputs") or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise PackageError(
            refuse + f"it has {len(inputs)} inputs and {len(outputs)} outputs; only models "
            "with one image in and one image out can be used as denoisers."
        )
    layouts = []
    for role, tensor in (("input", inputs[0]), ("output", outputs[0])):
        axes = _axes_of(tensor)
        kinds = [k for k, _ in axes]
        extra = [k for k in kinds if k not in ("batch", "channel", "y", "x")]
        if extra or "y" not in kinds or "x" not in kinds:
            raise PackageError(
                refuse + f"its {role} has axes {kinds}; only 2-D images (y, x, optionally "
                "batch and channel) are supported."
            )
        n_ch = _channel_count(tensor, axes)
        if n_ch == 0 and role == "output":  # format 0.4: sized like the input, which has 1
            n_ch = 1
        if n_ch != 1:
            raise PackageError(
                refuse + f"its {role} has {n_ch if n_ch > 0 else 'several'} channels; only "
                "single-channel (gray) models are supported."
            )
        short = {"batch": "b", "channel": "c", "y": "y", "x": "x"}
        layouts.append("".join(short[k] for k in kinds))
    multiple, radius = _size_constraints(inputs[0], outputs[0])
    normalisation, post = _foreign_processing(refuse, inputs[0], outputs[0])
    data = _checked(pkg, weights["torchscript"], "torchscript weights")
    try:
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError or ValueError on bad archives
        raise PackageError(refuse + f"its TorchScript weights cannot be loaded ({exc}).") from None
    module.eval()
    network = _ForeignNetwork(module, layouts[0], layouts[1], multiple, radius, post)
    card = {
        "name": name,
        "architecture": "bioimageio-torchscript",
        "task": "denoise",
        "channels": 1,
        "normalisation": normalisation,
        "source_package": str(pkg.path),
        "description": rdf.get("description"),
        "license": rdf.get("license"),
    }
    return DenoiseModel(network=network.eval(), card=card, path=None)


def _size_constraints(inp: dict[str, Any], out: dict[str, Any]) -> tuple[int, int]:
    """``(size multiple, receptive radius)`` from a package's input steps and output halo."""
    steps, halos = [], []
    for _, ax in _axes_of(inp):
        size = (ax or {}).get("size") if isinstance(ax, dict) else None
        if isinstance(size, dict) and size.get("step"):
            steps.append(int(size["step"]))
    shape = inp.get("shape")
    if isinstance(shape, dict) and isinstance(shape.get("step"), list):  # format 0.4
        steps += [int(s) for s in shape["step"] if s]
    for _, ax in _axes_of(out):
        if isinstance(ax, dict) and ax.get("halo"):
            halos.append(int(ax["halo"]))
    if isinstance(out.get("halo"), list):  # format 0.4
        halos += [int(h) for h in out["halo"]]
    multiple = max(steps) if steps else 1
    return multiple, max(halos) if halos else 32


def _foreign_processing(
    refuse: str, inp: dict[str, Any], out: dict[str, Any]
) -> tuple[dict[str, Any], list[tuple[float, float]]]:
    """Our normalisation for a foreign package's preprocessing, and the pointwise
    ``(gain, offset)`` steps left for after the network; refuses what we cannot reproduce."""
    pre = [_op(e) for e in inp.get("preprocessing") or [] if _op(e)[0] != "ensure_dtype"]
    post = [_op(e) for e in out.get("postprocessing") or [] if _op(e)[0] != "ensure_dtype"]
    supported = "none, scale_linear, or scale_range with per-image percentiles"
    if len(pre) > 1:
        raise PackageError(
            refuse + f"its preprocessing has {len(pre)} steps; supported: {supported}."
        )
    if not pre:
        normalisation = {"mode": "fixed", "low": 0.0, "high": 1.0}
    elif pre[0][0] == "scale_linear" and np.isscalar(pre[0][1].get("gain", 1.0)):
        gain, offset = float(pre[0][1].get("gain", 1.0)), float(pre[0][1].get("offset", 0.0))
        normalisation = {"mode": "fixed", "low": -offset / gain, "high": (1 - offset) / gain}
    elif pre[0][0] == "scale_range" and pre[0][1].get("mode", "per_sample") == "per_sample":
        kw = pre[0][1]
        normalisation = {
            "mode": "percentile",
            "low": float(kw.get("min_percentile", 0.0)),
            "high": float(kw.get("max_percentile", 100.0)),
        }
    else:
        raise PackageError(
            refuse + f"its preprocessing {pre[0][0]!r} ({pre[0][1]}) is not supported; "
            f"supported: {supported}."
        )
    steps: list[tuple[float, float]] = []
    if pre and pre[0][0] == "scale_linear" and len(post) == 1 and post[0][0] == "scale_linear":
        # the usual pair: scale in, scale back out; our normalisation maps back already
        g = float(post[0][1].get("gain", 1.0))
        o = float(post[0][1].get("offset", 0.0))
        lo, hi = normalisation["low"], normalisation["high"]
        if not (math.isclose(g, hi - lo, rel_tol=1e-5) and math.isclose(o, lo, abs_tol=1e-6)):
            # a different output scale: express it relative to ours
            steps.append((g / (hi - lo), (o - lo) / (hi - lo)))
        return normalisation, steps
    if post:
        raise PackageError(
            refuse + f"its postprocessing {[p[0] for p in post]} is not supported together "
            f"with preprocessing {[p[0] for p in pre] or 'none'}."
        )
    return normalisation, steps


# ============================================================================ validation


def validate_package(
    path: str | os.PathLike[str], *, test: bool = True, devices: Sequence[str] = ("cpu",)
) -> tuple[bool, str]:
    """Validate a package with ``bioimageio.spec`` and (``test``) run ``bioimageio.core``'s
    ``test_model`` on its test tensors, offline. Returns ``(passed, report)``.

    Needs the ``bioimageio`` extra (``pip install "napari-wgan-denoise[bioimageio]"``).
    """
    os.environ.setdefault("BIOIMAGEIO_PERFORM_IO_CHECKS", "false")
    try:
        from bioimageio.spec import ValidationContext, load_description
    except ImportError as exc:
        raise ImportError(
            "Validating bioimage.io packages needs bioimageio.spec and bioimageio.core: "
            'pip install "napari-wgan-denoise[bioimageio]".'
        ) from exc
    with ValidationContext(perform_io_checks=False):
        descr = load_description(str(path), perform_io_checks=False)
    summary = descr.validation_summary
    if summary.status == "failed" or not test:
        return summary.status != "failed", summary.format()
    from bioimageio.core import test_model

    result = test_model(str(path), devices=list(devices))
    return result.status != "failed", result.format()
