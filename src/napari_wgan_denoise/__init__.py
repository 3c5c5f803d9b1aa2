"""napari-wgan-denoise: CNN denoisers trained with MSE and a Wasserstein critic.

The public API needs neither napari nor Qt::

    from napari_wgan_denoise import list_models, load_model, save_model, denoise, restore
"""

from ._version import __version__
from .errors import Cancelled, ModelFileError
from .inference import available_devices, denoise, restore
from .models import (
    DenoiseModel,
    create_model,
    list_models,
    load_model,
    save_model,
    save_user_model,
)

__all__ = [
    "Cancelled",
    "DenoiseModel",
    "ModelFileError",
    "__version__",
    "available_devices",
    "create_model",
    "denoise",
    "list_models",
    "load_model",
    "restore",
    "save_model",
    "save_user_model",
]
