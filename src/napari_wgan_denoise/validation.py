"""Argument, setting and file checks shared by the Python API, the CLI and the widgets.

Each check raises before any work starts, with a message that names the argument (or the
config key, or the file and key) and what it accepts: :class:`TypeError` for a value of the
wrong kind passed through the Python API, :class:`~napari_wgan_denoise.errors.InvalidSetting`
for a value that cannot work (also for config files), and
:class:`~napari_wgan_denoise.errors.ModelFileError` for a model card that cannot be used.
The entry points call them with one line each; nothing here imports napari or Qt.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import InvalidSetting, ModelFileError

# ----------------------------------------------------------------------------- numbers


def _kind(value: Any) -> str:
    """A short description of a value for messages: never the repr of a whole array."""
    shape = getattr(value, "shape", None)
    if shape is not None and getattr(value, "ndim", 0):
        return f"a {type(value).__name__} of shape {tuple(shape)}"
    text = repr(value)
    return f"{text[:60]}{'...' if len(text) > 60 else ''} ({type(value).__name__})"


def check_int(
    value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as an ``int`` (integral floats are accepted), or an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be an integer, got {_kind(value)}.")
    if not isinstance(value, numbers.Integral) and not float(value).is_integer():
        raise InvalidSetting(f"{name} must be a whole number, got {value!r}.")
    number = int(value)
    if minimum is not None and number < minimum:
        raise InvalidSetting(f"{name} must be at least {minimum}, got {number}.")
    if maximum is not None and number > maximum:
        raise InvalidSetting(f"{name} must be at most {maximum}, got {number}.")
    return number


def check_number(
    value: Any, name: str, *, minimum: float | None = None, positive: bool = False
) -> float:
    """``value`` as a finite ``float``, or an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {_kind(value)}.")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidSetting(f"{name} must be a finite number, got {value!r}.")
    if positive and number <= 0:
        raise InvalidSetting(f"{name} must be greater than 0, got {value!r}.")
    if minimum is not None and number < minimum:
        raise InvalidSetting(f"{name} must be at least {minimum}, got {value!r}.")
    return number


# ----------------------------------------------------------------------------- denoise


def check_axes(axes: Any) -> str | None:
    """``axes`` must be None or a string of axis letters such as ``"TZYX"``."""
    if axes is None or isinstance(axes, str):
        return axes
    raise TypeError(
        f"axes must be a string of axis letters such as 'TZYX' or 'YXC' (or None), "
        f"got {_kind(axes)}."
    )


def check_denoise_options(
    *,
    tile_size: Any = None,
    overlap: Any = None,
    batch_size: Any = None,
    value_range: Any = None,
    plane: tuple[int, int] | None = None,
    tta: Any = False,
) -> None:
    """Check the tiling options of ``denoise``/``restore``/``denoise_lazy`` before any work.

    ``tile_size`` >= 8, ``overlap`` >= 0 and no larger than the plane (``plane`` = its
    height and width: wider context is only mirrored image, and it would make tiles of
    hundreds of GiB), ``batch_size`` >= 1, ``value_range`` two finite numbers low < high,
    ``tta`` as :func:`check_tta` accepts it.
    """
    check_tta(tta)
    if tile_size is not None:
        check_int(tile_size, "tile_size", minimum=8)
    if overlap is not None:
        overlap = check_int(overlap, "overlap", minimum=0)
        if plane is not None and overlap > max(plane):
            raise InvalidSetting(
                f"overlap={overlap} is larger than the image ({plane[0]}x{plane[1]} pixels); "
                "context beyond the image is only mirrored. Use a value between 0 and "
                f"{max(plane)}, or leave it out for the model's default."
            )
    if batch_size is not None:
        check_int(batch_size, "batch_size", minimum=1)
    if value_range is not None:
        if isinstance(value_range, (str, bytes)) or not hasattr(value_range, "__len__"):
            raise TypeError(f"value_range must be a pair (low, high), got {_kind(value_range)}.")
        if len(value_range) != 2:
            raise InvalidSetting(
                f"value_range must be two numbers (low, high), got {len(value_range)}: "
                f"{_kind(value_range)}."
            )
        low = check_number(value_range[0], "value_range[0] (low)")
        high = check_number(value_range[1], "value_range[1] (high)")
        if not high > low:
            raise InvalidSetting(f"value_range must have low < high, got ({low}, {high}).")


#: How many flips/rotations test-time augmentation may average (1: none).
TTA_PASSES = (1, 2, 4, 8)


def check_tta(tta: Any) -> int:
    """The number of passes ``denoise(..., tta=tta)`` averages: ``False`` (or None, 0, 1)
    one plain pass, ``True`` all 8 flips/rotations, 2 / 4 / 8 that many."""
    if tta is None or tta is False:
        return 1
    if tta is True:
        return TTA_PASSES[-1]
    accepts = "True (8 passes), False, or the number of flipped/rotated passes: 1, 2, 4 or 8"
    if not isinstance(tta, numbers.Real):
        raise TypeError(f"tta must be {accepts}; got {_kind(tta)}.")
    if tta not in (0, *TTA_PASSES):
        raise InvalidSetting(f"tta must be {accepts}; got {tta!r}.")
    return max(1, int(tta))


# ----------------------------------------------------------------------------- configs


def _type_name(annotation: Any) -> tuple[str, bool]:
    """``("int", optional)`` from a dataclass field annotation such as ``"int | None"``."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    parts = [p.strip() for p in str(text).split("|")]
    optional = "None" in parts
    parts = [p for p in parts if p != "None"]
    return (parts[0] if parts else "", optional)


_EXPECTED = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
}


def _coerce(value: Any, type_name: str, optional: bool, key: str, where: str) -> Any:
    """A config value converted to its field's type, or InvalidSetting naming the key."""
    if value is None and optional:
        return None
    base = type_name.split("[")[0]

    def fail(expected: str) -> InvalidSetting:
        return InvalidSetting(f"{where}{key}: expected {expected}, got {_kind(value)}.")

    if base == "int":
        if isinstance(value, str):
            try:
                value_f = float(value.strip())
            except ValueError:
                raise fail("an integer") from None
            if not value_f.is_integer():
                raise fail("an integer")
            return int(value_f)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise fail("an integer")
        if not float(value).is_integer():
            raise fail("an integer")
        return int(value)
    if base == "float":
        if isinstance(value, str):
            try:
                value = float(value.strip())  # YAML reads 1e-4 (no dot) as a string
            except ValueError:
                raise fail("a number") from None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise fail("a number")
        if not math.isfinite(float(value)):
            raise fail("a finite number")
        return float(value)
    if base == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no"):
            return value.strip().lower() in ("true", "yes")
        if isinstance(value, numbers.Integral) and value in (0, 1):
            return bool(value)
        raise fail("true or false")
    if base == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return str(value)
        raise fail("a string")
    if base == "dict":
        if isinstance(value, Mapping):
            return dict(value)
        raise fail("a mapping of key: value")
    if base == "tuple":
        if isinstance(value, (list, tuple)):
            n = type_name.count(",") + 1
            if len(value) != n:
                raise fail(f"a list of {n} numbers")
            return tuple(_coerce(v, "float", False, key, where) for v in value)
        raise fail("a list of numbers")
    return value


def coerce_settings(
    values: Mapping[str, Any], config_cls: type, source: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Check (and convert, e.g. ``"1e-4"`` to 1e-4) the values of a settings dict against
    the field types of the dataclass ``config_cls``; unknown keys are passed through for
    the config's own ``from_dict`` to report. Errors name the key and the expected type."""
    where = f"Config file {source}: " if source else "Setting "
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    out = dict(values)
    for key, value in values.items():
        if key in fields:
            type_name, optional = _type_name(fields[key].type)
            out[key] = _coerce(value, type_name, optional, key, where)
    return out


def check_config_values(
    config_cls: type, values: Mapping[str, Any] | None, prefix: str, where: str = ""
) -> dict[str, Any]:
    """Check a network config dict (``arch_config``, a card's ``config``) against its
    dataclass: known keys, the right types, sizes >= 1 (counts such as ``n_blocks``
    >= 0). Raises InvalidSetting naming ``prefix.key``; returns the converted dict."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise InvalidSetting(
            f"{where}{prefix}: expected a mapping of key: value, got {_kind(values)}."
        )
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InvalidSetting(
            f"{where}Unknown config key(s) {unknown} in {prefix}; valid keys: {sorted(fields)}."
        )
    out = {}
    for key, value in values.items():
        type_name, optional = _type_name(fields[key].type)
        value = _coerce(value, type_name, optional, f"{prefix}.{key}", where)
        if type_name == "int" and value is not None:
            minimum = 0 if key.startswith("n_") or key.endswith("_blocks") else 1
            if value < minimum:
                raise InvalidSetting(
                    f"{where}{prefix}.{key} must be an integer >= {minimum}, got {value}."
                )
        out[key] = value
    return out


def check_arch_config(
    architecture: str,
    values: Mapping[str, Any] | None,
    prefix: str = "arch_config",
    *,
    critic: bool = False,
    where: str = "",
) -> dict[str, Any]:
    """Check a generator (or critic) config dict for an architecture; see
    :func:`check_config_values`."""
    from .models.architectures import get_architecture

    try:
        arch = get_architecture(str(architecture))
    except ValueError as exc:
        raise InvalidSetting(f"{where}architecture: {exc}") from None
    cls = arch.critic_config if critic else arch.config
    return check_config_values(cls, values, prefix, where)


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML settings file into a dict with clear errors: a missing file, a syntax
    error (with its line and column) or a file that is not a mapping of ``key: value``."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"Config file {p} does not exist.")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InvalidSetting(f"Config file {p} is not a text (UTF-8) file.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and start is not None and (mark is None or start.line != mark.line):
            problem += f" ({context} that starts at line {start.line + 1})"
        raise InvalidSetting(f"Config file {p} is not valid YAML{at}: {problem}.") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
        raise InvalidSetting(f"Config file {p} must hold a mapping of option: value.")
    return {k.replace("-", "_"): v for k, v in loaded.items()}


def check_train_settings(
    settings: Mapping[str, Any], source: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Check the settings of ``wgan-denoise train`` (a config file merged with the command
    line) against :class:`~napari_wgan_denoise.training.trainer.TrainConfig`: each value of
    the right type (``lr: "fast"`` is refused, ``lr: "1e-4"`` accepted) and the generator
    and critic configs valid for the architecture."""
    from .training.trainer import TrainConfig

    where = f"Config file {source}: " if source else ""
    out = coerce_settings(settings, TrainConfig, source)
    architecture = out.get("architecture", "srresnet")
    for key, critic in (("arch_config", False), ("critic_config", True)):
        if isinstance(out.get(key), Mapping):
            out[key] = check_arch_config(architecture, out[key], key, critic=critic, where=where)
    _validate_as(TrainConfig, out, where)
    return out


def _validate_as(config_cls: type, values: Mapping[str, Any], where: str) -> None:
    """Run the config's own ``validate()`` on the known keys, as an InvalidSetting."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    try:
        config_cls.from_dict({k: v for k, v in values.items() if k in names}).validate()
    except InvalidSetting:
        raise
    except (ValueError, TypeError) as exc:
        raise InvalidSetting(f"{where}{exc}") from None


def check_cascade_settings(
    settings: Mapping[str, Any], source: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Like :func:`check_train_settings` for ``wgan-denoise cascade-train``."""
    from .training.cascade import CascadeTrainConfig

    where = f"Config file {source}: " if source else ""
    out = coerce_settings(settings, CascadeTrainConfig, source)
    for key, critic in (("arch_config", False), ("critic_config", True)):
        if isinstance(out.get(key), Mapping):
            out[key] = check_arch_config("cascade", out[key], key, critic=critic, where=where)
    _validate_as(CascadeTrainConfig, out, where)
    return out


# ----------------------------------------------------------------------------- model cards


def check_model_card(card: Mapping[str, Any], card_path: str | os.PathLike[str]) -> None:
    """Check a model card's values (channels, task, config, normalisation) so that a
    corrupt or hand-edited card is a :class:`ModelFileError` naming the file and the key,
    not a failure deep inside the network or the normalisation."""
    where = f"Model card {card_path}: "
    hint = " The card is corrupt or was edited by hand: restore it or re-save the model."
    try:
        channels = card.get("channels")
        if isinstance(channels, bool) or channels not in (1, 3):
            raise InvalidSetting(f"{where}channels must be 1 (gray) or 3 (RGB), got {channels!r}.")
        task = card.get("task")
        if task is not None and task not in ("denoise", "restore"):
            raise InvalidSetting(f"{where}task must be 'denoise' or 'restore', got {task!r}.")
        check_arch_config(card.get("architecture"), card.get("config"), "config", where=where)
        _check_normalisation(card.get("normalisation"), where)
    except (InvalidSetting, TypeError) as exc:
        raise ModelFileError(f"{exc}{hint}") from None


def _check_normalisation(norm: Any, where: str) -> None:
    if norm is None:
        return
    if not isinstance(norm, Mapping):
        raise InvalidSetting(f"{where}normalisation must be a mapping, got {_kind(norm)}.")
    mode = norm.get("mode", "percentile")
    if mode not in ("fixed", "percentile"):
        raise InvalidSetting(
            f"{where}normalisation.mode must be 'fixed' or 'percentile', got {mode!r}."
        )
    for key in ("low", "high"):
        if key not in norm:
            if mode == "fixed":
                raise InvalidSetting(
                    f"{where}normalisation.{key} is missing; a 'fixed' normalisation needs "
                    "both low and high."
                )
            continue
        check_number(norm[key], f"{where}normalisation.{key}")
    low = float(norm.get("low", 0.1))
    high = float(norm.get("high", 99.9))
    if not high > low:
        raise InvalidSetting(
            f"{where}normalisation.high must be greater than normalisation.low, "
            f"got low={low:g}, high={high:g}."
        )
    if mode == "percentile" and not (low >= 0 and high <= 100):
        raise InvalidSetting(
            f"{where}normalisation low/high are percentiles between 0 and 100, "
            f"got low={low:g}, high={high:g}."
        )
    dtypes = norm.get("dtypes")
    if dtypes is not None and (
        not isinstance(dtypes, list) or not all(isinstance(d, str) for d in dtypes)
    ):
        raise InvalidSetting(f"{where}normalisation.dtypes must be a list of dtype names.")


# ----------------------------------------------------------------------------- training


def check_training_length(
    iterations: Any,
    *,
    stages: Any = 1,
    batch_size: Any = 1,
    patch_size: Any = 32,
    time_budget: Any = None,
    val_every: Any = 1,
    average: Any = None,
) -> None:
    """Check the length and batch options of a fine-tuning run before any data is touched:
    ``iterations``, ``stages``, ``batch_size``, ``val_every`` >= 1, ``patch_size`` >= 8,
    ``time_budget`` > 0 when given, ``average`` (a weight-average decay) in [0, 1)."""
    check_int(iterations, "iterations", minimum=1)
    check_int(stages, "stages", minimum=1)
    check_int(batch_size, "batch_size", minimum=1)
    check_int(patch_size, "patch_size", minimum=8)
    check_int(val_every, "val_every", minimum=1)
    if time_budget is not None:
        check_number(time_budget, "time_budget", positive=True)
    if average is not None and not 0 <= check_number(average, "average") < 1:
        raise InvalidSetting(
            f"average is the decay of the weight average, from 0 (off) to below 1 "
            f"(e.g. 0.95), got {average!r}."
        )


def check_finetune_base(model: Any) -> None:
    """Fine-tuning adapts a denoiser: refuse a restore (cascade) model up front."""
    task = getattr(model, "task", "denoise")
    if task != "denoise":
        raise InvalidSetting(
            f"Model {getattr(model, 'name', '?')!r} is a {task} (inpaint + deblur + denoise "
            "cascade) model; fine-tuning adapts denoising models. Pick a denoising base "
            "model, or train a cascade with `wgan-denoise cascade-train`."
        )


def check_n2n_stack(shape: tuple[int, ...], axis: Any, channels: int = 1) -> None:
    """Noise2Noise needs an axis of repeated frames besides the image axes (Y, X and, for
    RGB models, C): refuse a single image, whose every axis is an image axis."""
    image_axes = 3 if channels == 3 else 2
    if axis is None:
        raise InvalidSetting("Noise2Noise needs the axis of repeated acquisitions (axis=...).")
    axis = check_int(axis, "axis")
    if not -len(shape) <= axis < len(shape):
        raise InvalidSetting(f"axis={axis} is out of range for data of shape {tuple(shape)}.")
    if len(shape) < image_axes + 1:
        raise InvalidSetting(
            f"Noise2Noise needs a stack of repeated frames of the same field, but the data "
            f"of shape {tuple(shape)} is a single image (its axes are all image axes). "
            "Load the repeated acquisitions as a stack, or use --mode two-stage."
        )


# ----------------------------------------------------------------------------- outputs
