"""The fine-tuning loop: one loop for every mode, owning the best weights, the time
budget, the preview and the progress reports; the mode's :class:`~.strategies.Strategy`
supplies targets, validation and loss settings."""

from __future__ import annotations

import copy
import datetime as _dt
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch

from ...inference.denoise import as_model
from ...models.model import DenoiseModel
from ...models.registry import save_user_model
from ...output_checks import check_model_name
from ...validation import check_finetune_base, check_n2n_stack, check_training_length
from ..trainer import TrainConfig, Trainer
from .config import FinetuneConfig, FinetuneData
from .data import Session, finetune_mode, normalise, planes_of, reference_planes
from .noise import noise_check
from .strategies import Strategy, strategy_for

ProgressFn = Callable[[dict[str, Any]], Any]


class WeightAverage:
    """An exponential moving average of the generator's weights, updated after every
    step; validation, previews and the kept weights use it, so that one batch that kicks
    the weights (a bright patch of real data: ten times the loss of the dark ones) does
    not decide which iteration is kept."""

    def __init__(self, network: torch.nn.Module, decay: float) -> None:
        self.network, self.decay = network, float(decay)
        self.state = {k: v.detach().clone() for k, v in network.state_dict().items()}

    def update(self) -> None:
        """Fold the current weights into the average."""
        with torch.no_grad():
            for k, v in self.network.state_dict().items():
                if v.is_floating_point():
                    self.state[k].mul_(self.decay).add_(v, alpha=1.0 - self.decay)
                else:
                    self.state[k].copy_(v)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the network for the duration, then the trained ones."""
        current = {k: v.detach().clone() for k, v in self.network.state_dict().items()}
        self.network.load_state_dict(self.state)
        try:
            yield
        finally:
            self.network.load_state_dict(current)


def _session(
    strategy: Strategy,
    model: DenoiseModel,
    noisy: np.ndarray,
    clean: Any | None,
    roi: np.ndarray | None,
) -> Session:
    """Check the inputs and bring them to the network scale, as the strategy arranges them."""
    config = strategy.config
    planes = planes_of(strategy.arrange(noisy), model, config.axes)
    strategy.check(clean)
    clean_planes = None
    if clean is not None:
        clean_arr = np.asarray(clean)
        if clean_arr.shape != noisy.shape:
            raise ValueError(
                f"The clean data has shape {clean_arr.shape} but the noisy data "
                f"has {noisy.shape}; they must match."
            )
        clean_planes = planes_of(strategy.arrange(clean_arr), model, config.axes)
    height, width = planes.shape[1], planes.shape[2]
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
    # Normalise every plane with the map inference will use (from the noisy plane).
    inputs, maps = zip(*(normalise(plane, model) for plane in planes))
    targets = None
    if clean_planes is not None:
        targets = [normalise(c, model, m)[0] for c, m in zip(clean_planes, maps)]
    session = Session(model, list(inputs), targets, roi)
    strategy.split(session)
    return session


def run_finetune(
    base: DenoiseModel | str,
    data: FinetuneData,
    config: FinetuneConfig,
    *,
    progress: ProgressFn | None = None,
    cancel: Any | None = None,
) -> DenoiseModel:
    """Fine-tune ``base`` on ``data`` as ``config`` says and return the new model (saved as
    a user model when ``config.save``); see :func:`.finetune` for the modes, the
    validation and the progress reports."""
    strategy = strategy_for(config)
    batch_size, patch_size = strategy.sizes()
    check_training_length(
        config.iterations,
        stages=config.stages,
        batch_size=batch_size,
        patch_size=patch_size,
        time_budget=config.time_budget,
        val_every=config.val_every,
        average=config.average,
    )
    if config.save and config.name is not None:
        check_model_name(config.name, overwrite=config.overwrite)
    base_model = as_model(base)
    check_finetune_base(base_model)
    if config.mode == "n2n":
        check_n2n_stack(np.shape(data.noisy), config.axis, base_model.channels)
    model = DenoiseModel(
        network=copy.deepcopy(base_model.network).cpu(), card=copy.deepcopy(base_model.card)
    )
    noisy_arr = np.asarray(data.noisy)
    s = _session(strategy, model, noisy_arr, data.clean, data.roi)
    patch_size = int(min(patch_size, s.height, s.width) // 4 * 4)
    if strategy.uses_critic():
        s.references = reference_planes(data.references, model)
    s.description = {
        "kind": "finetune",
        "mode": config.mode,
        "data_shape": list(noisy_arr.shape),
        "data_dtype": str(noisy_arr.dtype),
        "roi_pixels": int(s.roi.sum()) if s.roi is not None else None,
        "validation": "held-out planes" if s.band == s.height else f"rows {s.band}-{s.height}",
        "noise": {"type": "user data", "mode": config.mode},
    }
    report = None
    if config.noise_check and strategy.checks_noise:
        report = noise_check(s.inputs, s.run_network)
        s.description["noise_check"] = report.as_dict()
    strategy.prepare(s)  # sees the noise report (self-supervised: the mask, the noise model)
    total_it = max(1, int(config.iterations)) * max(1, int(config.stages))
    if progress is not None and report is not None:
        progress(
            {
                "iteration": 0,
                "total": total_it,
                "noise_check": report.as_dict(),
                "message": report.message(),
            }
        )
    loss = strategy.loss()
    cfg = TrainConfig(
        architecture=model.architecture,
        arch_config=dict(model.card.get("config") or {}),
        loss=loss.loss,
        iterations=total_it,
        batch_size=batch_size,
        patch_size=max(32, patch_size) if loss.loss != "mse" else patch_size,
        lr=loss.lr,
        lr_final=loss.lr if loss.lr_final is None else loss.lr_final,
        lr_drop_at=1.0,
        lr_schedule="step" if loss.lr_final is None else "cosine",
        alpha=loss.alpha,
        mse_reduction=loss.reduction,
        seed=config.seed,
        device=config.device,
        checkpoint_every=10**9,
        val_every=10**9,
    )
    s.progress, s.cancel = progress, cancel
    targets = strategy.targets(s)
    trainer = Trainer(cfg, strategy.source(s, targets), init=model)
    finetune_mode(trainer.generator)
    s.device = trainer.device
    result = _loop(strategy, s, trainer, targets, data.preview, progress, cancel)
    trainer.generator.load_state_dict(result["best"]["state"])
    trainer.generator.eval()
    model.network = trainer.plain_generator().cpu()
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    model.card.update(
        name=config.name or f"{base_model.name}-ft-{config.mode}-{stamp}",
        base_model={"name": base_model.name, "card_hash": base_model.card_hash},
        finetune={
            "mode": config.mode,
            "iterations_run": trainer.iteration,
            "iterations_asked": cfg.iterations,
            "stopped": result["stopped"],
            "best_iteration": result["best"]["iteration"],
            "lr": loss.lr,
            **({"lr_final": loss.lr_final, "lr_schedule": "cosine"} if loss.lr_final else {}),
            "adversarial_weight": loss.alpha,
            "stages": config.stages,
            "weight_average": config.average,
            "patch_size": cfg.patch_size,
            "batch_size": batch_size,
            "precision": "bf16" if trainer.amp else "fp32",
            "seconds_per_iteration": result["per_iteration"],
            "cpu_seconds_per_iteration": result["cpu_per_iteration"],
            "improved": result["best"]["iteration"] > 0,
            "wall_time_s": round(result["wall"], 1),
            "device": str(trainer.device),
            "data": s.description,
            "history": result["history"],
        },
        metrics={
            "validation_metric": result["metric"],
            "before": result["before"],
            "after": result["best"]["value"],
        },
    )
    # no improvement over the base: nothing to save (a copy of the base under a new name
    # would only mislead)
    improved = result["best"]["iteration"] > 0
    if config.save and improved:
        save_user_model(model, model.card["name"], overwrite=config.overwrite)
    model.card["finetune"]["saved"] = bool(config.save and improved)
    return model


def _loop(
    strategy: Strategy,
    s: Session,
    trainer: Trainer,
    targets: list[np.ndarray] | None,
    preview: np.ndarray | None,
    progress: ProgressFn | None,
    cancel: Any | None,
) -> dict[str, Any]:
    """Train until the last iteration, the time budget or ``cancel``; validate every
    ``val_every`` iterations keeping the best weights (or the latest, as the strategy
    says), report progress and the preview. Returns what the model card records."""
    config = strategy.config
    average = WeightAverage(trainer.generator, config.average) if config.average else None
    evaluated = average.applied if average is not None else nullcontext
    metric, before = strategy.validate(s, targets)
    higher_better = metric == "val_psnr"
    best = {"value": before, "iteration": 0, "state": copy.deepcopy(trainer.generator.state_dict())}
    history: list[dict[str, Any]] = [{"iteration": 0, metric: before}]

    def score(iteration: int, **record: Any) -> float:
        """Validate the weights that would be kept, record it, and keep them if better."""
        nonlocal best
        with evaluated():
            _, value = strategy.validate(s, targets)
            history.append({"iteration": iteration, metric: value, **record})
            better = value > best["value"] if higher_better else value < best["value"]
            if strategy.keep_latest(metric) or better:
                state = copy.deepcopy(trainer.generator.state_dict())
                best = {"value": value, "iteration": iteration, "state": state}
        return value

    start = time.perf_counter()
    stopped = None
    total = trainer.config.iterations
    preview_every = config.preview_every or max(1, total // 10)
    timed: list[float] = []  # wall time of each training step (validation excluded)
    cpu_timed: list[float] = []  # and its CPU time (all threads of the process)
    if progress is not None:
        progress({"iteration": 0, "total": total, metric: before, "metric": metric})
    for it in range(1, total + 1):
        if cancel is not None and cancel.is_set():
            stopped = "cancelled"
            break
        if config.time_budget is not None and time.perf_counter() - start > config.time_budget:
            stopped = "time budget"
            break
        fresh = strategy.next_targets(s, it)
        if fresh is not None:
            targets = fresh
            trainer.source = strategy.source(s, targets)
        t0, c0 = time.perf_counter(), time.process_time()
        st = trainer.step()
        if average is not None:
            average.update()
        timed.append(time.perf_counter() - t0)
        cpu_timed.append(time.process_time() - c0)
        info: dict[str, Any] = {
            "iteration": it,
            "total": total,
            "loss": st.g_loss,
            "mse": st.mse,
            "metric": metric,
        }
        if it % config.val_every == 0 or it == total:
            info[metric] = score(it, loss=st.g_loss)
        if len(timed) >= 4:  # the first steps warm up; then estimate the rest of the run
            per_it = float(np.median(timed[1:]))
            info["seconds_per_iteration"] = per_it
            left = (total - it) * per_it
            if config.time_budget is not None:
                left = min(left, max(0.0, config.time_budget - (time.perf_counter() - start)))
            info["eta_s"] = left
        if preview is not None and (it % preview_every == 0 or it == total):
            with evaluated():
                info["preview"] = s.preview(preview)
        if progress is not None:
            progress(info)
    last = trainer.iteration
    if stopped and last > best["iteration"] and history[-1]["iteration"] < last:
        score(last)  # stopped between validations: score it too
    wall = time.perf_counter() - start
    return {
        "metric": metric,
        "before": before,
        "best": best,
        "history": history,
        "stopped": stopped,
        "wall": wall,
        "per_iteration": round(float(np.median(timed[1:] or timed or [0.0])), 4),
        "cpu_per_iteration": round(float(np.median(cpu_timed[1:] or cpu_timed or [0.0])), 4),
    }
