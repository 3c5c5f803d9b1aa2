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

This module writes packages; :mod:`.importing` loads and validates them and :mod:`.spec`
holds what both need (format constants, citations, the architecture's source, tiling and
processing). Their public names are importable from here.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
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
from ..errors import InvalidSetting
from .importing import is_bioimageio_package, load_bioimageio, validate_package
from .spec import (
    _ARCH_CITES,
    CITATIONS,
    CONFIG_KEY,
    DEFAULT_AUTHORS,
    FACTORY,
    FORMAT_VERSION,
    LICENSE,
    PackageError,
    architecture_source,
    processing_for,
    tiling_for,
)

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
