"""Exchange with other tools: bioimage.io model packages (export and import)."""

from .bioimageio import (
    PackageError,
    export_bioimageio,
    is_bioimageio_package,
    load_bioimageio,
    validate_package,
)

__all__ = [
    "PackageError",
    "export_bioimageio",
    "is_bioimageio_package",
    "load_bioimageio",
    "validate_package",
]
