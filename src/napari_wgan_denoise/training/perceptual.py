"""Perceptual (VGG feature) loss: seed 003's CNN-VGG / WGAN-VGG and seed 004's eq. 2-3.

ImageNet-pretrained VGG weights cannot be downloaded on the machines this runs on, so the
loss reads them from a file the user provides: torchvision's ``vgg16-397923af.pth`` or
``vgg19-dcbb9e9d.pth`` (``--vgg-weights PATH`` or ``$NAPARI_WGAN_DENOISE_VGG``). Files
are read with ``torch.load(..., weights_only=True)`` (tensors only, never arbitrary
pickles) or as safetensors with the same keys.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

VGG_ENV = "NAPARI_WGAN_DENOISE_VGG"

#: torchvision's layer plans (configurations "D" and "E"): widths, "M" = max-pool.
_PLANS: dict[str, list[int | str]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M"]
    + [512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M"]
    + [512, 512, 512, 512, "M"],
}

#: torchvision's file names and download addresses of the ImageNet weights.
WEIGHT_FILES: dict[str, str] = {
    "vgg16": "vgg16-397923af.pth",
    "vgg19": "vgg19-dcbb9e9d.pth",
}
WEIGHT_URL = "https://download.pytorch.org/models/{}"

#: Default layers: seed 004 (eq. 3) averages phi_{1,2}, phi_{2,2}, phi_{3,3}, phi_{4,3} of
#: VGG-16; WGAN-VGG (seed 003's ref. [5], Yang et al.) uses the last conv of VGG-19
#: (conv5_4) after its ReLU, as SRGAN's "VGG54" does.
DEFAULT_LAYERS: dict[str, tuple[str, ...]] = {
    "vgg16": ("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
    "vgg19": ("relu5_4",),
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RANDOM_INIT = "random (test only)"
_RANDOM_SEED = 20240603


def _check_arch(arch: str) -> str:
    if arch not in _PLANS:
        raise ValueError(f"Unknown VGG architecture {arch!r}; use one of {', '.join(_PLANS)}.")
    return arch


def layer_names(arch: str = "vgg16") -> dict[str, int]:
    """Names of the layers of ``vgg_features(arch)`` -> their index in the Sequential:
    ``convB_K`` and ``reluB_K`` (block B, conv K, both from 1) and ``poolB``."""
    names: dict[str, int] = {}
    block, conv, index = 1, 0, 0
    for item in _PLANS[_check_arch(arch)]:
        if item == "M":
            names[f"pool{block}"] = index
            index += 1
            block, conv = block + 1, 0
        else:
            conv += 1
            names[f"conv{block}_{conv}"] = index
            names[f"relu{block}_{conv}"] = index + 1
            index += 2
    return names


def vgg_features(arch: str = "vgg16") -> nn.Sequential:
    """The ``features`` part of torchvision's VGG16/VGG19 without batch norm, with the same
    module indices, so that torchvision's ``features.N.weight``/``features.N.bias`` load into
    it. Weights are PyTorch's default init (load a file for anything meaningful); ReLUs are
    not in-place, so that intermediate feature maps can be kept."""
    layers: list[nn.Module] = []
    cin = 3
    for item in _PLANS[_check_arch(arch)]:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(cin, int(item), kernel_size=3, padding=1), nn.ReLU()]
            cin = int(item)
    return nn.Sequential(*layers)


def _missing_message(arch: str) -> str:
    name = WEIGHT_FILES[_check_arch(arch)]
    return (
        f"The perceptual (VGG) loss needs ImageNet-pretrained {arch.upper()} weights, which "
        f"cannot be downloaded here. Get torchvision's {name} ({WEIGHT_URL.format(name)}) "
        f"on a machine with internet, copy it here, and pass --vgg-weights PATH or set "
        f"{VGG_ENV}=PATH."
    )


def resolve_vgg_weights(path: str | os.PathLike[str] | None, arch: str = "vgg16") -> Path:
    """The VGG weights file to use: ``path``, else ``$NAPARI_WGAN_DENOISE_VGG``.

    Raises ``FileNotFoundError`` saying which file to get, where from and how to pass it
    when neither is given or the named file does not exist.
    """
    _check_arch(arch)
    source = "--vgg-weights"
    if path is None or str(path) == "":
        path = os.environ.get(VGG_ENV) or None
        source = f"${VGG_ENV}"
    if path is None:
        raise FileNotFoundError(_missing_message(arch))
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise FileNotFoundError(
            f"VGG weights file {resolved} (from {source}) does not exist. " + _missing_message(arch)
        )
    return resolved


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _reason(exc: BaseException) -> str:
    """The informative line of a loading error: torch's weights_only refusal starts with
    advice to load unsafely, which does not apply here."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line:
            return line.split(" Please use")[0][:300]
    useful = [line for line in lines if not line.startswith("Weights only load failed")]
    return (useful or lines or [type(exc).__name__])[0][:300]


def _read_state(path: Path) -> dict[str, Any]:
    """Tensors of a ``.pth`` (weights_only) or ``.safetensors`` file, as a flat dict."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ValueError(
                f"VGG weights file {path} is not a readable safetensors file: {exc}"
            ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as exc:
        raise ValueError(
            f"VGG weights file {path} cannot be read as a PyTorch state dict of tensors "
            f"(only plain weights are loaded, never pickled objects): {_reason(exc)}"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(
            f"VGG weights file {path} holds a {type(state).__name__}, not a state dict; "
            "use torchvision's vgg16-397923af.pth / vgg19-dcbb9e9d.pth."
        )
    return state


def _features_state(state: dict[str, Any]) -> dict[str, Any]:
    """The ``features.*`` entries without their prefix (classifier keys are ignored); a file
    holding only the features part (keys ``N.weight``) is accepted too."""
    feats = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    if feats:
        return feats
    return {k: v for k, v in state.items() if k.split(".", 1)[0].isdigit()}


def _guess_arch(feats: dict[str, Any]) -> str | None:
    for arch in _PLANS:
        expected = vgg_shapes(arch)
        if all(k in feats and tuple(feats[k].shape) == s for k, s in expected.items()):
            return arch
    return None


def vgg_shapes(arch: str = "vgg16") -> dict[str, tuple[int, ...]]:
    """Parameter names (without ``features.``) and shapes of ``vgg_features(arch)``."""
    shapes: dict[str, tuple[int, ...]] = {}
    cin, index = 3, 0
    for item in _PLANS[_check_arch(arch)]:
        if item == "M":
            index += 1
            continue
        shapes[f"{index}.weight"] = (int(item), cin, 3, 3)
        shapes[f"{index}.bias"] = (int(item),)
        cin, index = int(item), index + 2
    return shapes


def load_vgg_features(path: Path, arch: str, upto: int) -> nn.Sequential:
    """``vgg_features(arch)[: upto + 1]`` with the weights of ``path`` (see module doc).

    Raises ``ValueError`` naming the file when it is not a tensor-only state dict, lacks
    ``features.*`` entries of the layers used, or holds tensors of the wrong shape."""
    feats = _features_state(_read_state(path))
    if not feats:
        raise ValueError(
            f"VGG weights file {path} holds no 'features.N.weight' entries: it is not a "
            f"torchvision VGG state dict (expected {WEIGHT_FILES[arch]})."
        )
    net = _empty_features(arch, upto)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing = [k for k in expected if k not in feats]
    wrong = [
        f"{k} {tuple(getattr(feats[k], 'shape', ()))} (expected {s})"
        for k, s in expected.items()
        if k in feats and (not torch.is_tensor(feats[k]) or tuple(feats[k].shape) != s)
    ]
    if missing or wrong:
        guess = _guess_arch(feats)
        hint = (
            f" It looks like {guess.upper()} weights: pass --vgg-arch {guess}."
            if guess and guess != arch
            else ""
        )
        problems = []
        if missing:
            problems.append(f"missing features.{', features.'.join(missing[:4])}")
        if wrong:
            problems.append(f"wrong shape for features.{', features.'.join(wrong[:3])}")
        raise ValueError(
            f"VGG weights file {path} does not fit {arch.upper()}: {'; '.join(problems)}." + hint
        )
    net.load_state_dict({k: feats[k].float() for k in expected}, strict=True)
    return net


def _empty_features(arch: str, upto: int) -> nn.Sequential:
    """``vgg_features(arch)[: upto + 1]`` with uninitialised weights, built without
    spending time on (or drawing from the global RNG for) an init that is overwritten."""
    with torch.device("meta"):
        net = vgg_features(arch)[: upto + 1]
    return net.to_empty(device="cpu")


def _random_features(arch: str, upto: int) -> nn.Sequential:
    """Seeded (deterministic) random VGG features, for tests: He-normal convs, zero bias.
    The global torch RNG is left untouched."""
    net = _empty_features(arch, upto)
    gen = torch.Generator().manual_seed(_RANDOM_SEED)
    with torch.no_grad():
        for module in net:
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(
                    torch.randn(module.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5
                )
                module.bias.zero_()
    return net


class PerceptualLoss(nn.Module):
    """Mean squared distance between VGG feature maps of an estimate and its target.

    ``L = mean over the chosen layers of  ||phi(target) - phi(estimate)||^2 / (H W C)``
    (seed 004, eq. 2-3), with ``phi`` the feature map after a layer of torchvision's
    VGG16/VGG19. Layers are named ``reluB_K``, ``convB_K`` or ``poolB``; the defaults are
    ``relu1_2, relu2_2, relu3_3, relu4_3`` for VGG16 (seed 004) and ``relu5_4`` for VGG19
    (WGAN-VGG). The network runs only up to the deepest chosen layer.

    Inputs are ``(B, C, H, W)`` on the network scale (about 0..1); gray (C = 1) is repeated
    to three channels, then ImageNet's mean/std normalisation is applied. The VGG weights
    are frozen, the module stays in eval mode, and it is never part of a model file.
    ``weights`` is the file (see :func:`resolve_vgg_weights`); ``random_init=True`` uses a
    seeded random VGG instead, for tests only.
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        *,
        arch: str = "vgg16",
        layers: Sequence[str] | None = None,
        random_init: bool = False,
    ) -> None:
        super().__init__()
        self.arch = _check_arch(str(arch).lower())
        if isinstance(layers, str):
            layers = [s for s in (p.strip() for p in layers.split(",")) if s]
        self.layers = tuple(layers) if layers else DEFAULT_LAYERS[self.arch]
        names = layer_names(self.arch)
        unknown = [n for n in self.layers if n not in names]
        if unknown:
            relus = ", ".join(n for n in names if n.startswith("relu"))
            raise ValueError(
                f"Unknown {self.arch.upper()} layer(s) {unknown}; use names like {relus} "
                "(or convB_K, poolB)."
            )
        self._index = {n: names[n] for n in self.layers}
        upto = max(self._index.values())
        if random_init:
            self.features = _random_features(self.arch, upto)
            self.weights_file, self.weights_sha256 = RANDOM_INIT, None
        else:
            path = resolve_vgg_weights(weights, self.arch)
            self.features = load_vgg_features(path, self.arch, upto)
            self.weights_file, self.weights_sha256 = path.name, _sha256(path)
        self.features.requires_grad_(False)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        super().train(False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        """Stays in eval mode whatever is asked: the VGG is a fixed feature extractor."""
        return super().train(False)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(
                f"The perceptual loss takes (B, C, H, W) images with C = 1 or 3; got "
                f"{tuple(x.shape)}."
            )
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The chosen layers' feature maps of an image batch on the network scale."""
        wanted = {i: n for n, i in self._index.items()}
        out: dict[str, torch.Tensor] = {}
        h = self._prepare(x)
        for i, module in enumerate(self.features):
            h = module(h)
            if i in wanted:
                out[wanted[i]] = h
        return out

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss: the mean over the chosen layers of the mean squared feature distance
        (eq. 2-3 of seed 004). Gradients flow to ``estimate``; ``target`` is constant."""
        if estimate.shape != target.shape:
            raise ValueError(
                f"estimate {tuple(estimate.shape)} and target {tuple(target.shape)} differ."
            )
        with torch.no_grad():
            ref = self.feature_maps(target)
        got = self.feature_maps(estimate)
        terms = [((got[n].float() - ref[n].float()) ** 2).mean() for n in self.layers]
        return torch.stack(terms).mean()

    def describe(self) -> dict[str, Any]:
        """What the loss used, for the model card: arch, layers, weights file and its hash."""
        return {
            "arch": self.arch,
            "layers": list(self.layers),
            "weights": self.weights_file,
            "weights_sha256": self.weights_sha256,
        }
