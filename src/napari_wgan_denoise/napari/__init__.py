"""The napari plugin: Denoise, Compare and Restore widgets, sample data, a one-click action
and the console API.

Only this subpackage imports napari; the widgets (``_widgets``, ``_compare``, ``_restore``)
and the action (``_actions``) import Qt, while the console API below does not::

    from napari_wgan_denoise.napari import denoise_layer, compare_layer, restore_layer
"""

from .api import Comparison, compare_layer, denoise_layer, restore_layer

__all__ = ["Comparison", "compare_layer", "denoise_layer", "restore_layer"]
