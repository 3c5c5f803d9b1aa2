"""Qt pickers shared by the widgets: image / mask layers and model / family choices."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QStandardItem, QStandardItemModel
from qtpy.QtWidgets import (
    QComboBox,
    QStyle,
    QStyleOptionComboBox,
    QStylePainter,
    QWidget,
)

from ._jobs import METADATA_KEY, is_image_layer

__all__ = ["ChoiceBox", "ChoicePicker", "LayerPicker", "refresh_model_pickers"]


class ChoiceBox(QComboBox):
    """A combo box that never cuts its text: when the dock is too narrow the shown choice
    ends in "…" (its full text is in the tooltip), and the open list is as wide as its
    longest choice."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(10)
        self._auto_tip: str | None = None
        self.currentIndexChanged.connect(self._tip_full_text)

    def _tip_full_text(self, index: int) -> None:
        """Give the shown choice its full text as item tooltip, unless it has its own."""
        if 0 <= index < self.count() and not self.itemData(index, Qt.ItemDataRole.ToolTipRole):
            self.setItemData(index, self.itemText(index), Qt.ItemDataRole.ToolTipRole)
        if not self.toolTip() or self.toolTip() == self._auto_tip:
            self._auto_tip = self.currentText()
            self.setToolTip(self._auto_tip)

    def shown_text(self) -> str:
        """The text drawn in the closed box: the current choice, elided to fit."""
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        field = self.style().subControlRect(
            QStyle.ComplexControl.CC_ComboBox,
            option,
            QStyle.SubControl.SC_ComboBoxEditField,
            self,
        )
        return self.fontMetrics().elidedText(
            option.currentText, Qt.TextElideMode.ElideRight, field.width()
        )

    def paintEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        """Draw the box with the current choice elided to the room there is."""
        painter = QStylePainter(self)
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        painter.drawComplexControl(QStyle.ComplexControl.CC_ComboBox, option)
        option.currentText = self.shown_text()
        painter.drawControl(QStyle.ControlElement.CE_ComboBoxLabel, option)

    def showPopup(self) -> None:  # noqa: N802 (Qt name)
        """Open the list at least as wide as its longest choice."""
        view = self.view()
        widest = view.sizeHintForColumn(0) if self.count() else 0
        view.setMinimumWidth(widest + view.verticalScrollBar().sizeHint().width() + 8)
        super().showPopup()


class LayerPicker(ChoiceBox):
    """The viewer's Image layers, kept in step with the layer list.

    Choices follow layers being added, removed, moved and renamed; with ``follow=True``
    the picker also jumps to an image layer the user selects in the layer list (but not
    to outputs of this plugin, so that a new result does not become the next input).
    ``allow_none`` adds a first ``(none)`` choice (the Compare widget's reference).
    ``accepts`` lists other kinds of layers instead (e.g. Labels and Shapes for an ROI).
    """

    layer_changed = Signal(object)

    def __init__(
        self,
        viewer: Any,
        *,
        allow_none: bool = False,
        follow: bool = True,
        accepts: Callable[[Any], bool] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.allow_none = allow_none
        self.follow = follow
        #: Which layers are listed (default: Image layers).
        self.accepts: Callable[[Any], bool] = accepts or is_image_layer
        self._layers: list[Any] = []
        self._refreshing = False
        events = viewer.layers.events
        for name in ("inserted", "removed", "moved", "reordered"):
            getattr(events, name).connect(self.refresh)
        viewer.layers.selection.events.active.connect(self._on_active)
        self.currentIndexChanged.connect(self._emit_changed)
        self.refresh()
        if follow:
            self._on_active()

    def layer(self) -> Any | None:
        """The picked layer, or None."""
        i = self.currentIndex()
        return self._layers[i] if 0 <= i < len(self._layers) else None

    def set_layer(self, layer: Any | None) -> None:
        """Pick ``layer`` (None picks ``(none)`` where allowed)."""
        for i, lyr in enumerate(self._layers):
            if lyr is layer or (layer is not None and lyr is not None and lyr == layer):
                self.setCurrentIndex(i)
                return

    def refresh(self, event: Any = None) -> None:
        """Rebuild the choices from the layer list, keeping the picked layer if it is there."""
        current = self.layer()
        layers: list[Any] = [None] if self.allow_none else []
        for lyr in reversed(list(self.viewer.layers)):  # top of the layer list first
            if self.accepts(lyr):
                layers.append(lyr)
                lyr.events.name.connect(self.refresh)
        self._refreshing = True
        try:
            self.clear()
            self._layers = layers
            for lyr in layers:
                self.addItem("(none)" if lyr is None else lyr.name)
            if current is not None and current in layers:
                self.setCurrentIndex(layers.index(current))
            elif layers:  # prefer the user's own data over this plugin's outputs
                inputs = [
                    i
                    for i, lyr in enumerate(layers)
                    if lyr is not None and METADATA_KEY not in lyr.metadata
                ]
                self.setCurrentIndex(inputs[0] if inputs and not self.allow_none else 0)
        finally:
            self._refreshing = False
        if self.layer() is not current:
            self.layer_changed.emit(self.layer())

    def _on_active(self, event: Any = None) -> None:
        if not self.follow:
            return
        active = self.viewer.layers.selection.active
        if (
            active is not None
            and self.accepts(active)
            and METADATA_KEY not in active.metadata
            and active in self._layers
        ):
            self.set_layer(active)

    def _emit_changed(self, index: int) -> None:
        if not self._refreshing:
            self.layer_changed.emit(self.layer())


class ChoicePicker(ChoiceBox):
    """A combo box of ``(value, label, tooltip, enabled)`` choices; disabled ones are grey
    and cannot be picked. ``source`` is called again each time the list opens; the picked
    choice is kept while it stays enabled, else ``preferred()`` or the first enabled one."""

    def __init__(
        self,
        source: Callable[[], list[tuple[str, str, str, bool]]],
        *,
        empty_text: str,
        preferred: Callable[[], str | None] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.source = source
        #: Picked when the current choice is gone or greyed out (e.g. the default model).
        self.preferred: Callable[[], str | None] = preferred or (lambda: None)
        self.empty_text = empty_text
        self._model = QStandardItemModel(self)
        self.setModel(self._model)
        self.setMinimumContentsLength(12)
        self.currentIndexChanged.connect(self._update_tooltip)
        self.refresh()

    def value(self) -> str | None:
        """The picked choice's value, or None if nothing usable is picked."""
        item = self._model.item(self.currentIndex()) if self.currentIndex() >= 0 else None
        if item is None or not item.isEnabled():
            return None
        return item.data(Qt.ItemDataRole.UserRole)

    def values(self, *, enabled_only: bool = False) -> list[str]:
        """All choice values (optionally only the enabled ones), in order."""
        out = []
        for row in range(self._model.rowCount()):
            item = self._model.item(row)
            value = item.data(Qt.ItemDataRole.UserRole)
            if value is not None and (item.isEnabled() or not enabled_only):
                out.append(value)
        return out

    def is_enabled(self, value: str) -> bool:
        """Whether the choice ``value`` is listed and can be picked."""
        return value in self.values(enabled_only=True)

    def set_value(self, value: str) -> bool:
        """Pick ``value`` if it is listed and enabled; returns whether it was."""
        for row in range(self._model.rowCount()):
            item = self._model.item(row)
            if item.data(Qt.ItemDataRole.UserRole) == value and item.isEnabled():
                self.setCurrentIndex(row)
                return True
        return False

    def refresh(self) -> None:
        """Re-read the choices, keeping the picked one if it is still enabled."""
        current = self.value()
        self.blockSignals(True)
        try:
            self._model.clear()
            choices = self.source()
            if not choices:
                placeholder = QStandardItem(self.empty_text)
                placeholder.setEnabled(False)
                self._model.appendRow(placeholder)
            for value, label, tip, enabled in choices:
                item = QStandardItem(label)
                item.setData(value, Qt.ItemDataRole.UserRole)
                item.setToolTip(tip)
                item.setEnabled(enabled)
                self._model.appendRow(item)
            self.setCurrentIndex(0)
            if not (current and self.set_value(current)):
                preferred = self.preferred()
                if not (preferred and self.set_value(preferred)):
                    enabled = self.values(enabled_only=True)
                    if enabled:
                        self.set_value(enabled[0])
        finally:
            self.blockSignals(False)
        self.currentIndexChanged.emit(self.currentIndex())

    def _update_tooltip(self, index: int) -> None:
        item = self._model.item(index) if index >= 0 else None
        self.setToolTip(item.toolTip() if item is not None else "")

    def showPopup(self) -> None:  # noqa: N802 (Qt name)
        """Re-scan (e.g. for models saved since) before the list opens (as wide as its
        longest choice)."""
        self.refresh()
        super().showPopup()


def refresh_model_pickers(viewer: Any) -> int:
    """Re-read the model registry in every model/family picker docked in ``viewer``'s
    window (e.g. after a fine-tuned model was saved); returns how many were refreshed."""
    window = getattr(viewer, "window", None)
    docked = getattr(window, "dock_widgets", None)
    if docked is not None:
        roots = [w for w in docked.values() if isinstance(w, QWidget)]
        pickers = [p for w in roots for p in w.findChildren(ChoicePicker)]
    else:  # older napari: every picker whose widget belongs to this viewer
        from qtpy.QtWidgets import QApplication

        pickers = [
            w
            for w in QApplication.allWidgets()
            if isinstance(w, ChoicePicker) and getattr(w.parent(), "viewer", None) is viewer
        ]
    for picker in pickers:
        picker.refresh()
    return len(pickers)
