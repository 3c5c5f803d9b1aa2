"""The fine-tuning data on the network scale: planes, patches and the run's shared state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...inference.denoise import plan_axes
from ...inference.normalise import from_network, intensity_range, to_network
from ...models.model import DenoiseModel
from ..trainer import run_whole

#: Edge of the validation crops (pixels).
VAL_CROP = 256


def planes_of(data: np.ndarray, model: DenoiseModel, axes: str | None = None) -> np.ndarray:
    """The YX(C) planes of ``data`` as an ``(N, H, W[, C])`` view/array for this model."""
    arr = np.asarray(data)
    if arr.size == 0:
        raise ValueError(f"The data is empty (shape {arr.shape}); pick a layer with pixels.")
    if arr.ndim < 2:
        raise ValueError(f"Fine-tuning needs images with Y and X axes; got shape {arr.shape}.")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(
            "The data contains NaN or infinite values; replace them first "
            "(e.g. numpy.nan_to_num) and fine-tune again."
        )
    plan = plan_axes(arr.shape, axes, model.channels)
    view = arr.transpose(plan.order)
    tail = view.shape[plan.n_leading :]
    return view.reshape((-1, *tail))


def normalise(
    plane: np.ndarray, model: DenoiseModel, lo_hi: tuple[float, float] | None = None
) -> tuple[np.ndarray, tuple[float, float]]:
    """A plane on the network scale as ``(C, H, W)`` float32, plus the map used."""
    lo, hi = lo_hi or intensity_range(plane, model.normalisation)
    x = to_network(plane, lo, hi)
    x = np.moveaxis(x, -1, 0) if x.ndim == 3 else x[None]
    return np.ascontiguousarray(x), (lo, hi)


def finetune_mode(network: torch.nn.Module) -> None:
    """Train mode with batch-norm statistics frozen: a few small batches from one stack
    would otherwise overwrite the running statistics learnt on the whole training set."""
    network.train()
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def default_references(model: DenoiseModel) -> list[np.ndarray]:
    """Clean images that ship with the package (or scikit-image) for the model's modality."""
    from ...data import samples

    if model.channels == 3:
        return [samples.cells_clean()]
    modality = str(model.card.get("modality") or "")
    if modality.startswith("fluo") or not modality:
        return [samples.fluorescence_clean()]
    from skimage import data as skdata

    return [skdata.camera(), skdata.moon(), skdata.coins(), skdata.text()]


def reference_planes(references: Any | None, model: DenoiseModel) -> list[np.ndarray]:
    """Unpaired clean references for the critic on the network scale: arrays, a list of
    arrays, an image file or a folder of images (None: :func:`default_references`)."""
    refs = references if references is not None else default_references(model)
    if isinstance(refs, (str, Path)):
        from ...io import read_image

        folder = Path(refs)
        files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else [folder]
        refs = [read_image(p) for p in files]
    if isinstance(refs, np.ndarray):
        refs = list(planes_of(refs, model))
    out = [normalise(plane, model)[0] for r in refs for plane in planes_of(np.asarray(r), model)]
    if not out:
        raise ValueError("No clean reference images were found for the critic.")
    return out


def split(n_planes: int, height: int) -> tuple[list[int], list[int], int]:
    """Held-out planes (stacks of 4 or more planes) or, for fewer, a bottom band of rows:
    ``(train indices, validation indices, first validation row)``."""
    if n_planes >= 4:
        n_val = max(1, round(0.15 * n_planes))
        val = list(range(n_planes - n_val, n_planes))
        return list(range(n_planes - n_val)), val, height
    band = max(16, int(0.15 * height))
    return list(range(n_planes)), list(range(n_planes)), height - band


class Session:
    """One fine-tuning run's data on the network scale and the helpers its strategy uses.

    ``inputs[i]`` is noisy plane ``i`` and ``targets[i]`` its clean plane (None without
    clean data), both ``(C, H, W)``; a strategy's ``split`` fills ``train``, ``val`` and
    ``band`` (rows from ``band`` on are held out when there are too few planes) and, for
    Noise2Noise, ``fields``. ``model`` is the copy being trained.
    """

    def __init__(
        self,
        model: DenoiseModel,
        inputs: list[np.ndarray],
        targets: list[np.ndarray] | None,
        roi: np.ndarray | None,
    ) -> None:
        self.model = model
        self.inputs, self.targets, self.roi = inputs, targets, roi
        self.height, self.width = inputs[0].shape[1:]
        self.train: list[int] = []
        self.val: list[int] = []
        self.band = self.height
        self.fields: list[list[int]] | None = None
        self.references: list[np.ndarray] | None = None
        self.description: dict[str, Any] = {}
        self.device = torch.device("cpu")
        #: the run's progress callback and cancel event, for work before the first
        #: iteration (e.g. the self-supervised surrogates of two-stage)
        self.progress: Any = None
        self.cancel: Any = None

    def set_split(self, train: list[int], val: list[int], band: int) -> None:
        """Record the split (indices into planes, or into ``fields`` for Noise2Noise)."""
        self.train, self.val, self.band = train, val, band

    @property
    def mask(self) -> np.ndarray | None:
        """The ROI over the training rows."""
        if self.roi is not None and self.band < self.height:
            return self.roi[: self.band]
        return self.roi

    def run_network(self, x: np.ndarray) -> np.ndarray:
        """The model being trained on one ``(C, H, W)`` image, in eval mode."""
        net = self.model.network
        was = net.training
        net.eval()
        out = run_whole(net, x, self.device)
        if was:
            finetune_mode(net)
        return out

    def run_ensemble(self, x: np.ndarray) -> np.ndarray:
        """The mean of the model's outputs over the 8 flips / rotations of ``x``."""
        total = np.zeros_like(x, dtype=np.float32)
        for k in range(4):
            for flip in (False, True):
                t = np.rot90(x, k, axes=(1, 2))
                t = t[:, :, ::-1] if flip else t
                out = self.run_network(np.ascontiguousarray(t))
                out = out[:, :, ::-1] if flip else out
                total += np.rot90(out, -k, axes=(1, 2))
        return total / 8

    def surrogates(self, ensemble: bool = False) -> list[np.ndarray]:
        """The model's outputs for every noisy plane (two-stage targets), or with
        ``ensemble`` the mean over 8 flips / rotations of each plane."""
        run = self.run_ensemble if ensemble else self.run_network
        return [np.ascontiguousarray(run(x)) for x in self.inputs]

    def train_view(self, img: np.ndarray) -> np.ndarray:
        """The training rows of a plane."""
        return img[:, : self.band, :] if self.band < self.height else img

    def crop_val(self, img: np.ndarray) -> np.ndarray:
        """The validation crop of a plane."""
        c = img[:, self.band :, :] if self.band < self.height else img
        return c[:, :VAL_CROP, :VAL_CROP]

    def validation_output(self, i: int) -> np.ndarray:
        """The model's output on the validation crop of noisy plane ``i``."""
        return self.run_network(np.ascontiguousarray(self.crop_val(self.inputs[i])))

    def source(self, targets: list[np.ndarray] | None) -> ArraySource:
        """Training patches: noisy plane ``i`` against ``targets[i]``, or (``fields``) two
        frames of one field against each other."""
        if self.fields is not None:
            inputs = [self.train_view(x) for x in self.inputs]
            pairs: list[np.ndarray] | None = None
            fields = [self.fields[k] for k in self.train]
        else:
            assert targets is not None
            inputs = [self.train_view(self.inputs[i]) for i in self.train]
            pairs, fields = [self.train_view(targets[i]) for i in self.train], None
        return ArraySource(
            inputs,
            pairs,
            fields=fields,
            references=self.references,
            mask=self.mask,
            normalisation=self.model.normalisation,
            description=self.description,
        )

    def preview(self, plane: np.ndarray) -> np.ndarray:
        """``plane`` (YX or YXC) denoised by the model being trained, in the plane's own
        dtype and intensity scale."""
        x, (lo, hi) = normalise(np.asarray(plane), self.model)
        out = self.run_network(x)
        values = np.moveaxis(out, 0, -1) if self.model.channels == 3 else out[0]
        return from_network(values, lo, hi, np.asarray(plane).dtype)


class ArraySource:
    """Patches sampled on demand from in-memory planes, in the ``PatchSource`` interface.

    ``inputs[i]`` is paired with ``targets[i]`` (or, for Noise2Noise, with a random other
    frame of the same field); ``references`` are unpaired clean images for the critic;
    ``mask`` limits where patch centres may fall.
    """

    def __init__(
        self,
        inputs: list[np.ndarray],
        targets: list[np.ndarray] | None,
        *,
        fields: list[list[int]] | None = None,
        references: list[np.ndarray] | None = None,
        mask: np.ndarray | None = None,
        normalisation: dict[str, Any],
        description: dict[str, Any],
    ) -> None:
        self.inputs, self.targets, self.fields = inputs, targets, fields
        self.references = references
        self.unpaired_references = bool(references)
        self.channels = int(inputs[0].shape[0])
        self.normalisation = dict(normalisation)
        self._description = description
        self.mask = mask

    def __len__(self) -> int:
        return len(self.inputs)

    def _positions(
        self, shape: tuple[int, int], patch: int, n: int, g: torch.Generator
    ) -> list[tuple[int, int]]:
        h, w = shape
        if self.mask is not None and self.mask.shape == (h, w):
            ys, xs = np.nonzero(self.mask)
            pick = torch.randint(0, len(ys), (n,), generator=g).numpy()
            return [
                (
                    int(np.clip(ys[k] - patch // 2, 0, max(h - patch, 0))),
                    int(np.clip(xs[k] - patch // 2, 0, max(w - patch, 0))),
                )
                for k in pick
            ]
        ys = torch.randint(0, max(h - patch, 0) + 1, (n,), generator=g).tolist()
        xs = torch.randint(0, max(w - patch, 0) + 1, (n,), generator=g).tolist()
        return list(zip(ys, xs))

    @staticmethod
    def _crop(img: np.ndarray, y: int, x: int, patch: int) -> np.ndarray:
        out = img[:, y : y + patch, x : x + patch]
        ph, pw = patch - out.shape[1], patch - out.shape[2]
        if ph > 0 or pw > 0:
            out = np.pad(out, ((0, 0), (0, max(ph, 0)), (0, max(pw, 0))), mode="reflect")
        return out

    @staticmethod
    def _augment(arrays: list[np.ndarray], k: int, flip: bool) -> list[np.ndarray]:
        out = [np.rot90(a, k, axes=(1, 2)) for a in arrays]
        return [np.ascontiguousarray(a[:, :, ::-1] if flip else a) for a in out]

    def sample(
        self, batch_size: int, patch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input, target)`` patches ``(B, C, P, P)`` on the network scale."""
        xs, ys = [], []
        for _ in range(batch_size):
            if self.fields is not None:  # Noise2Noise: two different frames of one field
                pick = int(torch.randint(0, len(self.fields), (1,), generator=generator))
                field = self.fields[pick]
                a, b = torch.randperm(len(field), generator=generator)[:2].tolist()
                src, tgt = self.inputs[field[a]], self.inputs[field[b]]
            else:
                assert self.targets is not None
                i = int(torch.randint(0, len(self.inputs), (1,), generator=generator))
                src, tgt = self.inputs[i], self.targets[i]
            ((y0, x0),) = self._positions(src.shape[1:], patch_size, 1, generator)
            k = int(torch.randint(0, 4, (1,), generator=generator))
            flip = bool(torch.randint(0, 2, (1,), generator=generator))
            a, b = self._augment(
                [self._crop(src, y0, x0, patch_size), self._crop(tgt, y0, x0, patch_size)], k, flip
            )
            xs.append(a)
            ys.append(b)
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))

    def sample_real(
        self, batch_size: int, patch_size: int, generator: torch.Generator
    ) -> torch.Tensor:
        """Unpaired clean reference patches for the critic."""
        assert self.references
        out = []
        for _ in range(batch_size):
            ref = self.references[
                int(torch.randint(0, len(self.references), (1,), generator=generator))
            ]
            h, w = ref.shape[1:]
            y0 = int(torch.randint(0, max(h - patch_size, 0) + 1, (1,), generator=generator))
            x0 = int(torch.randint(0, max(w - patch_size, 0) + 1, (1,), generator=generator))
            k = int(torch.randint(0, 4, (1,), generator=generator))
            out.append(self._augment([self._crop(ref, y0, x0, patch_size)], k, False)[0])
        return torch.from_numpy(np.stack(out))

    def validation_pairs(self) -> list:
        """Validation is done by the fine-tuning loop itself."""
        return []

    def describe(self) -> dict[str, Any]:
        """Description for the model card."""
        return dict(self._description)
