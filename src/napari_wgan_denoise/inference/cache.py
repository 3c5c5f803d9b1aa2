"""Loaded models kept in memory, so repeated runs do not read the weights again.

One least-recently-used cache serves the napari plugin (widgets, console API, one-click
action) and the dask workers of :mod:`~napari_wgan_denoise.inference.distributed`. Models
are keyed by (name or file path, card hash): a model file that is replaced (e.g. a
fine-tuned user model saved again) gets a new card hash and is loaded afresh.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..models.model import DenoiseModel, card_hash
from ..models.registry import find_model, load_model

__all__ = ["SHARED_CACHE", "ModelCache", "card_key"]


def card_key(card: dict[str, Any]) -> str:
    """Short hash of a model card, the same digest as ``DenoiseModel.card_hash``."""
    return card_hash(card)


def _looks_like_path(text: str) -> bool:
    return any(sep in text for sep in "/\\") or text.endswith((".json", ".safetensors", ".zip"))


class ModelCache:
    """Loaded models by (name or path, card hash), the least recently used dropped first.

    ``get`` takes a registry name, a model file path or a loaded model; ``get_file`` loads
    a file whose card hash the caller already knows (the dask workers). ``lock_for(model)``
    serialises runs of one model object across threads (its network is moved between
    devices and switched to eval mode while it runs). ``loads`` counts weight reads.
    """

    def __init__(self, maxsize: int = 4) -> None:
        self.maxsize = maxsize
        self._models: OrderedDict[tuple[str, str], DenoiseModel] = OrderedDict()
        self._locks: dict[int, threading.Lock] = {}
        self._lock = threading.Lock()
        self.loads = 0  # how many times weights were read from disk (tests check this)

    def _cached(self, key: tuple[str, str], load: Callable[[], DenoiseModel]) -> DenoiseModel:
        """The model under ``key``, loaded with ``load()`` (once) if it is not cached."""
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            loaded = load()
            self.loads += 1
            self._models[key] = loaded
            while len(self._models) > self.maxsize:
                self._models.popitem(last=False)
            return loaded

    def get(self, model: str | DenoiseModel) -> DenoiseModel:
        """A registered model by name (cached), a model file by path, or ``model`` itself."""
        if isinstance(model, DenoiseModel):
            return model
        try:
            entry = find_model(str(model))
        except ValueError:
            if _looks_like_path(str(model)):
                with self._lock:
                    self.loads += 1
                return load_model(model)
            raise
        return self._cached((entry.name, card_key(entry.card)), lambda: load_model(entry.path))

    def get_file(self, path: str, expected_hash: str) -> DenoiseModel:
        """The model file at ``path`` (cached), checked to have the card hash ``expected_hash``
        (RuntimeError when the file changed since the caller looked at it)."""

        def load() -> DenoiseModel:
            loaded = load_model(path)
            if loaded.card_hash != expected_hash:
                raise RuntimeError(
                    f"The model file {path} changed while the job was running (its card "
                    "hash differs from the client's); run the job again."
                )
            return loaded

        return self._cached((path, expected_hash), load)

    def lock_for(self, model: DenoiseModel) -> threading.Lock:
        """The lock that serialises runs of ``model``."""
        with self._lock:
            return self._locks.setdefault(id(model), threading.Lock())

    def clear(self) -> None:
        """Forget every loaded model."""
        with self._lock:
            self._models.clear()
            self._locks.clear()


#: Cache used by the console API, the one-click action and (one per process) dask workers.
SHARED_CACHE = ModelCache()
