"""Fine-tune a model on the user's own stack: paired, two-stage (seed 002) or Noise2Noise."""

from __future__ import annotations

import copy
import datetime as _dt
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..inference.denoise import as_model, plan_axes
from ..inference.normalise import intensity_range, to_network
from ..models.model import DenoiseModel
from ..models.registry import save_user_model
from ..validation import (
    check_finetune_base,
    check_model_name,
    check_n2n_stack,
    check_training_length,
)
from .trainer import TrainConfig, Trainer, run_whole

MODES = ("paired", "two-stage", "n2n")
VAL_CROP = 256


def _planes(data: np.ndarray, model: DenoiseModel, axes: str | None = None) -> np.ndarray:
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


def _normalise(
    plane: np.ndarray, model: DenoiseModel, lo_hi: tuple[float, float] | None = None
) -> tuple[np.ndarray, tuple[float, float]]:
    """A plane on the network scale as ``(C, H, W)`` float32, plus the map used."""
    lo, hi = lo_hi or intensity_range(plane, model.normalisation)
    x = to_network(plane, lo, hi)
    x = np.moveaxis(x, -1, 0) if x.ndim == 3 else x[None]
    return np.ascontiguousarray(x), (lo, hi)


def _finetune_mode(network: torch.nn.Module) -> None:
    """Train mode with batch-norm statistics frozen: a few small batches from one stack
    would otherwise overwrite the running statistics learnt on the whole training set."""
    network.train()
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def _default_references(model: DenoiseModel) -> list[np.ndarray]:
    """Clean images that ship with the package (or scikit-image) for the model's modality."""
    from ..data import samples

    if model.channels == 3:
        return [samples.cells_clean()]
    modality = str(model.card.get("modality") or "")
    if modality.startswith("fluo") or not modality:
        return [samples.fluorescence_clean()]
    from skimage import data as skdata

    return [skdata.camera(), skdata.moon(), skdata.coins(), skdata.text()]


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
        """Validation is done by :func:`finetune` itself."""
        return []

    def describe(self) -> dict[str, Any]:
        """Description for the model card."""
        return dict(self._description)


def _split(n_planes: int, height: int) -> tuple[list[int], list[int], int]:
    """Held-out planes (stacks of 4 or more planes) or, for fewer, a bottom band of rows."""
    if n_planes >= 4:
        n_val = max(1, round(0.15 * n_planes))
        val = list(range(n_planes - n_val, n_planes))
        return list(range(n_planes - n_val)), val, height
    band = max(16, int(0.15 * height))
    return list(range(n_planes)), list(range(n_planes)), height - band


def finetune(
    base: DenoiseModel | str,
    noisy: Any,
    *,
    mode: str,
    clean: Any | None = None,
    references: Any | None = None,
    roi: np.ndarray | None = None,
    axis: int | None = None,
    axes: str | None = None,
    iterations: int = 500,
    time_budget: float | None = None,
    patch_size: int = 64,
    batch_size: int = 8,
    lr: float | None = None,
    adversarial_weight: float | None = None,
    stages: int = 1,
    device: str = "auto",
    seed: int = 0,
    val_every: int = 50,
    preview: np.ndarray | None = None,
    preview_every: int = 200,
    name: str | None = None,
    save: bool = True,
    overwrite: bool = False,
    progress: Callable[[dict[str, Any]], Any] | None = None,
    cancel: Any | None = None,
) -> DenoiseModel:
    """Adapt ``base`` to the user's data and (by default) save it as a user model.

    Modes:
    - ``"paired"``: ``noisy`` and a ``clean`` array of the same shape; MSE + WGAN as in
      Algorithm 1 (seed 000) on patches of the pair.
    - ``"two-stage"`` (seed 002): only ``noisy``. Surrogate targets ``X_s = G0(Y)`` come
      from the base model; ``G`` starts from ``G0``; loss = MSE(G(Y), X_s) (summed per
      patch, see the comment in the code) +
      ``adversarial_weight`` (1e-3) x adversarial, the critic judging G(Y) against unpaired
      clean ``references`` (default: clean images shipped for the model's modality);
      lr 1e-5. ``stages > 1`` regenerates X_s with the latest G between stages. A
      ``clean`` array, if given, is used for validation only.
    - ``"n2n"``: ``noisy`` holds repeated acquisitions of the same field along ``axis``;
      pairs of different frames are input and target (Noise2Noise), MSE plus an optional
      adversarial term (needs references).

    Patches come only from inside ``roi`` (a YX mask) when given. 15 % of the planes (or a
    band of rows for a single plane) is held out: validation PSNR against ``clean`` where
    known, else the Noise2Noise loss between held-out frames (n2n), else the MSE to the
    surrogate (two-stage, where the last weights are kept). The best weights are kept;
    ``cancel`` or ``time_budget`` stops early and returns the best so far.
    ``progress(info)`` receives iteration, loss, validation metric and, every
    ``preview_every`` iterations when ``preview`` (a plane) is given, the denoised preview.
    With ``save``, an existing user model ``name`` is replaced only with ``overwrite``
    (checked before training, like the other arguments).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}.")
    check_training_length(
        iterations,
        stages=stages,
        batch_size=batch_size,
        patch_size=patch_size,
        time_budget=time_budget,
        val_every=val_every,
    )
    if save and name is not None:
        check_model_name(name, overwrite=overwrite)
    base_model = as_model(base)
    check_finetune_base(base_model)
    model = DenoiseModel(
        network=copy.deepcopy(base_model.network).cpu(), card=copy.deepcopy(base_model.card)
    )
    noisy_arr = np.asarray(noisy)
    if mode == "n2n":
        check_n2n_stack(noisy_arr.shape, axis, base_model.channels)
        if axis is None:
            raise ValueError("Noise2Noise needs the axis of repeated acquisitions (axis=...).")
        if not -noisy_arr.ndim <= axis < noisy_arr.ndim:
            raise ValueError(f"axis={axis} is out of range for data of shape {noisy_arr.shape}.")
        if noisy_arr.shape[axis] < 2:
            raise ValueError(
                f"Noise2Noise needs at least 2 frames along axis {axis}; "
                f"got {noisy_arr.shape[axis]}."
            )
        noisy_arr = np.moveaxis(noisy_arr, axis, 0)
    planes = _planes(noisy_arr, model, axes)
    if mode == "paired" and clean is None:
        raise ValueError(
            "Paired fine-tuning needs a clean array (e.g. an averaged "
            "acquisition) of the same shape as the noisy one."
        )
    clean_planes = None
    if clean is not None:
        clean_arr = np.asarray(clean)
        if clean_arr.shape != np.asarray(noisy).shape:
            raise ValueError(
                f"The clean data has shape {clean_arr.shape} but the noisy data "
                f"has {np.asarray(noisy).shape}; they must match."
            )
        if mode == "n2n":
            clean_arr = np.moveaxis(clean_arr, axis, 0)
        clean_planes = _planes(clean_arr, model, axes)
    n, height, width = planes.shape[0], planes.shape[1], planes.shape[2]
    if roi is not None:
        roi = np.asarray(roi).astype(bool)
        if roi.shape != (height, width):
            raise ValueError(
                f"The ROI mask has shape {roi.shape} but the images are "
                f"{height}x{width}; draw it on a layer of the same size."
            )
        if not roi.any():
            raise ValueError("The ROI mask is empty; paint or draw a region first.")
    if min(height, width) < 32:
        raise ValueError(
            f"Images of {height}x{width} are too small to fine-tune on; "
            "at least 32x32 pixels are needed."
        )
    patch_size = int(min(patch_size, height, width) // 4 * 4)

    # Normalise every plane with the map inference will use (from the noisy plane).
    inputs, maps = [], []
    for i in range(n):
        x, m = _normalise(planes[i], model)
        inputs.append(x)
        maps.append(m)
    targets = None
    if clean_planes is not None:
        targets = [_normalise(clean_planes[i], model, maps[i])[0] for i in range(n)]
    fields = None
    if mode == "n2n":
        n_frames = np.asarray(noisy).shape[axis]
        per_field = n // n_frames
        # planes are frame-major: plane f * per_field + k is frame f of field k
        fields = [[f * per_field + k for f in range(n_frames)] for k in range(per_field)]

    train_idx, val_idx, band = _split(n if mode != "n2n" else len(fields), height)
    if mode == "n2n":  # split fields, or a band when there is only one field
        train_fields = [fields[k] for k in train_idx]
        val_fields = [fields[k] for k in val_idx]
    device_obj = torch.device("cpu")

    def run_network(x: np.ndarray) -> np.ndarray:
        net = model.network
        was = net.training
        net.eval()
        out = run_whole(net, x, device_obj)
        if was:
            _finetune_mode(net)
        return out

    def surrogates() -> list[np.ndarray]:
        return [run_network(x) for x in inputs]

    references_norm = None
    if mode == "two-stage" or (adversarial_weight and mode == "n2n"):
        refs = references if references is not None else _default_references(model)
        if isinstance(refs, (str, Path)):
            from ..io import read_image

            folder = Path(refs)
            files = (
                sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else [folder]
            )
            refs = [read_image(p) for p in files]
        if isinstance(refs, np.ndarray):
            refs = list(_planes(refs, model))
        references_norm = []
        for r in refs:
            for plane in _planes(np.asarray(r), model):
                references_norm.append(_normalise(plane, model)[0])
        if not references_norm:
            raise ValueError("No clean reference images were found for the critic.")

    def crop_val(img: np.ndarray) -> np.ndarray:
        c = img[:, band:, :] if band < height else img
        return c[:, :VAL_CROP, :VAL_CROP]

    def train_view(img: np.ndarray) -> np.ndarray:
        return img[:, :band, :] if band < height else img

    mask = roi[:band] if (roi is not None and band < height) else roi

    if mode == "paired":
        loss, reduction = "wgan", "sum"
        lr = lr or 1e-4
        alpha = 1.01 if adversarial_weight is None else adversarial_weight
    elif mode == "two-stage":
        # Seed 002 weighs lambda = 1e-3 against a per-pixel MSE with a -log D adversarial
        # term. Our critic is a WGAN-GP critic (input-gradient norm ~1 per image, unbounded
        # scores): against a per-pixel mean (~1e-4 on the 0-1 scale) it dominates and drags
        # the output away (-7.6 dB on FMD in our test). Against the per-patch summed MSE of
        # Algorithm 1 it acts as the small regulariser seed 002 intends.
        loss, reduction = "wgan", "sum"
        lr = lr or 1e-5
        alpha = 1e-3 if adversarial_weight is None else adversarial_weight
    else:
        alpha = adversarial_weight or 0.0
        loss, reduction = ("wgan" if alpha > 0 else "mse"), "mean"
        lr = lr or 1e-4
    cfg = TrainConfig(
        architecture=model.architecture,
        arch_config=dict(model.card.get("config") or {}),
        loss=loss,
        iterations=max(1, int(iterations)) * max(1, int(stages)),
        batch_size=batch_size,
        patch_size=max(32, patch_size) if loss != "mse" else patch_size,
        lr=lr,
        lr_final=lr,
        lr_drop_at=1.0,
        alpha=alpha,
        mse_reduction=reduction,
        seed=seed,
        device=device,
        checkpoint_every=10**9,
        val_every=10**9,
    )
    if loss != "mse" and min(height, width) < 32:
        raise ValueError("The adversarial term needs images of at least 32x32 pixels.")

    description = {
        "kind": "finetune",
        "mode": mode,
        "data_shape": list(np.asarray(noisy).shape),
        "data_dtype": str(np.asarray(noisy).dtype),
        "roi_pixels": int(roi.sum()) if roi is not None else None,
        "validation": "held-out planes" if band == height else f"rows {band}-{height}",
        "noise": {"type": "user data", "mode": mode},
    }

    def build_source(current_targets: list[np.ndarray] | None) -> ArraySource:
        if mode == "n2n":
            return ArraySource(
                [train_view(x) for x in inputs],
                None,
                fields=train_fields,
                references=references_norm,
                mask=mask,
                normalisation=model.normalisation,
                description=description,
            )
        ins = [train_view(inputs[i]) for i in train_idx]
        tgs = [train_view(current_targets[i]) for i in train_idx]
        return ArraySource(
            ins,
            tgs,
            references=references_norm,
            mask=mask,
            normalisation=model.normalisation,
            description=description,
        )

    def validate_now() -> tuple[str, float]:
        if clean_planes is not None:
            vals = []
            for i in val_idx if mode != "n2n" else sorted({i for f in val_fields for i in f}):
                est, ref = run_network(crop_val_input(i)), crop_val(targets[i])
                vals.append(10 * math.log10(1.0 / max(float(np.mean((est - ref) ** 2)), 1e-12)))
            return "val_psnr", float(np.mean(vals))
        if mode == "n2n":
            losses = []
            for f in val_fields:
                est = run_network(crop_val_input(f[0]))
                losses.append(float(np.mean((est - crop_val(inputs[f[1]])) ** 2)))
            return "val_n2n_mse", float(np.mean(losses))
        vals = [
            float(np.mean((run_network(crop_val_input(i)) - crop_val(current[i])) ** 2))
            for i in val_idx
        ]
        return "val_mse_to_surrogate", float(np.mean(vals))

    def crop_val_input(i: int) -> np.ndarray:
        x = inputs[i]
        x = x[:, band:, :] if band < height else x
        return np.ascontiguousarray(x[:, :VAL_CROP, :VAL_CROP])

    current = surrogates() if mode == "two-stage" else targets
    trainer = Trainer(cfg, build_source(current), init=model)
    _finetune_mode(trainer.generator)
    device_obj = trainer.device
    metric_name, before = validate_now()
    higher_better = metric_name == "val_psnr"
    best = {"value": before, "iteration": 0, "state": copy.deepcopy(trainer.generator.state_dict())}
    history: list[dict[str, Any]] = [{"iteration": 0, metric_name: before}]
    start = time.perf_counter()
    stopped = None
    total = cfg.iterations
    if progress is not None:
        progress({"iteration": 0, "total": total, metric_name: before, "metric": metric_name})
    for it in range(1, total + 1):
        if cancel is not None and cancel.is_set():
            stopped = "cancelled"
            break
        if time_budget is not None and time.perf_counter() - start > time_budget:
            stopped = "time budget"
            break
        if mode == "two-stage" and stages > 1 and it > 1 and (it - 1) % iterations == 0:
            current = surrogates()  # next stage: regenerate X_s with the latest G
            trainer.source = build_source(current)
        st = trainer.step()
        info: dict[str, Any] = {
            "iteration": it,
            "total": total,
            "loss": st.g_loss,
            "mse": st.mse,
            "metric": metric_name,
        }
        if it % val_every == 0 or it == total:
            _, value = validate_now()
            info[metric_name] = value
            history.append({"iteration": it, metric_name: value, "loss": st.g_loss})
            better = value > best["value"] if higher_better else value < best["value"]
            if metric_name == "val_mse_to_surrogate" or better:  # two-stage keeps the latest
                best = {
                    "value": value,
                    "iteration": it,
                    "state": copy.deepcopy(trainer.generator.state_dict()),
                }
        if preview is not None and (it % preview_every == 0 or it == total):
            pv, _ = _normalise(np.asarray(preview), model)
            info["preview"] = run_network(pv)
        if progress is not None:
            progress(info)
    if (
        stopped
        and trainer.iteration > best["iteration"]
        and history[-1]["iteration"] < trainer.iteration
    ):
        _, value = validate_now()  # stopped between validations: score the last weights too
        history.append({"iteration": trainer.iteration, metric_name: value})
        better = value > best["value"] if higher_better else value < best["value"]
        if metric_name == "val_mse_to_surrogate" or better:
            best = {
                "value": value,
                "iteration": trainer.iteration,
                "state": trainer.generator.state_dict(),
            }
    trainer.generator.load_state_dict(best["state"])
    trainer.generator.eval()
    model.network = trainer.generator.cpu()
    wall = time.perf_counter() - start
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    model.card.update(
        name=name or f"{base_model.name}-ft-{mode}-{stamp}",
        base_model={"name": base_model.name, "card_hash": base_model.card_hash},
        finetune={
            "mode": mode,
            "iterations_run": trainer.iteration,
            "iterations_asked": total,
            "stopped": stopped,
            "best_iteration": best["iteration"],
            "lr": lr,
            "adversarial_weight": alpha,
            "stages": stages,
            "patch_size": cfg.patch_size,
            "batch_size": batch_size,
            "wall_time_s": round(wall, 1),
            "device": str(trainer.device),
            "data": description,
            "history": history,
        },
        metrics={"validation_metric": metric_name, "before": before, "after": best["value"]},
    )
    if save:
        save_user_model(model, model.card["name"], overwrite=overwrite)
    return model
