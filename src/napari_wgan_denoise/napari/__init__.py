"""The napari plugin: Denoise, Compare and Restore widgets, sample data, a one-click action
and the console API.

Only this subpackage imports napari. The widgets (``_denoise``, ``_compare``, ``_restore``,
``_finetune``) and the action (``_actions``) import Qt; the console API below and the
Qt-free layers under it (``_jobs``, ``_masks``, ``_bridge``, ``_runs``, ``_viewer``,
``_choices``; see docs/architecture.md) do not::

    from napari_wgan_denoise.napari import denoise_layer, compare_layer, restore_layer
"""

from .api import Comparison, compare_layer, denoise_layer, restore_layer

__all__ = ["Comparison", "compare_layer", "denoise_layer", "restore_layer"]
