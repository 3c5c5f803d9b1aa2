"""Loading bioimage.io packages: ours exactly (from the attached card and safetensors),
simple foreign TorchScript ones with the reason when not; and validating a package with
``bioimageio.core`` (the optional ``bioimageio`` extra)."""

from __future__ import annotations

import hashlib
import io
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

from ..errors import ModelFileError
from .spec import CONFIG_KEY, RDF_NAMES, PackageError


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
