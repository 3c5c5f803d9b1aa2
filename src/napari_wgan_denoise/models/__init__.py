"""Generator and critic architectures, the model file format and the model registry."""

from .architectures import ARCHITECTURES, build_critic, build_generator, get_architecture
from .model import DenoiseModel, create_model, load_model_file, read_card, save_model
from .registry import (
    ModelEntry,
    find_model,
    list_models,
    load_model,
    model_entries,
    save_user_model,
    user_models_dir,
)

__all__ = [
    "ARCHITECTURES",
    "DenoiseModel",
    "ModelEntry",
    "build_critic",
    "build_generator",
    "create_model",
    "find_model",
    "get_architecture",
    "list_models",
    "load_model",
    "load_model_file",
    "model_entries",
    "read_card",
    "save_model",
    "save_user_model",
    "user_models_dir",
]
