"""Qt helpers that keep the docks compact: a foldable "Advanced" section and the scroll area
every widget's form lives in."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFormLayout,
    QFrame,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

__all__ = ["Foldout", "scrolling"]


class Foldout(QWidget):
    """A titled section whose rows (``self.form``) are hidden until its arrow is clicked.

    Used for the options most runs leave alone (device, tile size, time limit, ...), so
    that a dock stays short on a laptop screen.
    """

    def __init__(self, title: str, parent: QWidget | None = None, *, tip: str = "") -> None:
        super().__init__(parent)
        self.toggle = QToolButton(self)
        self.toggle.setText(title)
        self.toggle.setCheckable(True)
        self.toggle.setChecked(False)
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.toggle.setAutoRaise(True)
        self.toggle.setToolTip(tip or f"Show or hide the {title.lower()} options.")
        self.body = QWidget(self)
        self.form = QFormLayout(self.body)
        self.form.setContentsMargins(8, 0, 0, 0)
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.body.setVisible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.toggle)
        layout.addWidget(self.body)
        self.toggle.toggled.connect(self.set_open)

    def is_open(self) -> bool:
        """Whether the section's rows are shown."""
        return self.toggle.isChecked()

    def set_open(self, open_: bool) -> None:
        """Show (``True``) or fold away the section's rows."""
        if self.toggle.isChecked() != open_:
            self.toggle.setChecked(open_)  # comes back here through ``toggled``
            return
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if open_ else Qt.ArrowType.RightArrow)
        self.body.setVisible(open_)


def scrolling(content: QWidget, parent: QWidget | None = None) -> QScrollArea:
    """A frameless vertical scroll area around ``content``: the dock can be shorter than
    the form, which then scrolls instead of pushing the controls off-screen."""
    area = QScrollArea(parent)
    area.setWidget(content)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
    return area
