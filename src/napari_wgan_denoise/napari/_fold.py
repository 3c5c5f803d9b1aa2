"""Qt helpers that keep the docks compact: a foldable "Advanced" section and the scroll area
every widget's form lives in."""

from __future__ import annotations

from qtpy.QtCore import QSize, Qt
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


class _FormScroll(QScrollArea):
    """A vertical scroll area that is never narrower than its form plus the scroll bar
    (so the dock does not need a horizontal scroll bar) but may be much shorter."""

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt name)
        """The form's minimum width (plus the vertical scroll bar); a few rows' height."""
        hint = super().minimumSizeHint()
        content = self.widget()
        if content is not None:
            width = content.minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width()
            hint.setWidth(max(hint.width(), width + 2 * self.frameWidth()))
        return hint

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt name)
        """The form's own size (plus the vertical scroll bar)."""
        hint = super().sizeHint()
        return hint.expandedTo(QSize(self.minimumSizeHint().width(), 0))


def scrolling(content: QWidget, parent: QWidget | None = None) -> QScrollArea:
    """A frameless vertical scroll area around ``content``: the dock can be shorter than
    the form, which then scrolls instead of pushing the controls off-screen."""
    area = _FormScroll(parent)
    area.setWidget(content)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
    return area
