"""The fine-tuning widget's live plot of the training loss and the validation metric."""

from __future__ import annotations

import math
from typing import Any

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

from ._choices import METRIC_LABELS, format_metric

__all__ = ["LossPlot"]

#: Short names of the validation metrics for the plot's legend (the widget's status
#: line uses the long ones of ``METRIC_LABELS``).
SHORT_METRIC_LABELS = {
    "val_psnr": "val. PSNR",
    "val_n2n_mse": "val. N2N loss",
    "val_mse_to_surrogate": "val. MSE to base",
}


class LossPlot(QWidget):
    """A small live plot of the training loss and the validation metric, drawn with QPainter.

    The loss (blue) and the validation metric (orange dots and line) each use their own
    vertical range; the x axis is the iteration, 0 to the run's total.
    """

    LOSS_COLOR = QColor(80, 160, 230)
    METRIC_COLOR = QColor(240, 160, 50)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Training loss (blue) and validation metric (orange) by iteration.")
        self.clear()

    def clear(self, total: int = 0, metric: str = "") -> None:
        """Forget the curves; the next run has ``total`` iterations (0: not known yet)
        and ``metric``."""
        self.total = max(int(total), 0)
        self.metric = metric
        self.loss: list[tuple[int, float]] = []
        self.values: list[tuple[int, float]] = []
        self.update()

    def add(self, info: dict[str, Any]) -> None:
        """Add one progress dict of the core (loss and/or validation metric)."""
        it = int(info.get("iteration", 0))
        self.total = max(self.total, int(info.get("total", self.total)))
        if info.get("metric"):
            self.metric = info["metric"]
        loss = info.get("loss")
        if loss is not None and math.isfinite(loss):
            self.loss.append((it, float(loss)))
        value = info.get(self.metric) if self.metric else None
        if value is not None and math.isfinite(value):
            self.values.append((it, float(value)))

    def sizeHint(self) -> Any:  # noqa: N802 (Qt name)
        """Wide and short."""
        hint = super().sizeHint()
        hint.setHeight(120)
        return hint

    def _points(
        self, series: list[tuple[int, float]], x0: float, y0: float, w: float, h: float
    ) -> list[QPointF]:
        if not series:
            return []
        stride = max(1, len(series) // max(int(w), 1))
        pts = series[::stride] + ([series[-1]] if (len(series) - 1) % stride else [])
        ys = [v for _, v in pts]
        lo, hi = min(ys), max(ys)
        span = hi - lo if hi > lo else 1.0
        total = max(self.total, 1)
        return [
            QPointF(x0 + w * it / total, y0 + h - h * ((v - lo) / span if hi > lo else 0.5))
            for it, v in pts
        ]

    def paintEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        """Draw the frame, both curves and their latest values."""
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = self.palette().color(self.foregroundRole())
        line_h = painter.fontMetrics().height()
        x0, y0 = 4.0, line_h + 4.0
        w, h = self.width() - 8.0, self.height() - 2.0 * line_h - 8.0
        frame = QColor(text)
        frame.setAlpha(90)
        painter.setPen(QPen(frame, 1))
        painter.drawRect(int(x0), int(y0), int(w), int(h))
        loss_pts = self._points(self.loss, x0, y0, w, h)
        metric_pts = self._points(self.values, x0, y0, w, h)
        if len(loss_pts) > 1:
            painter.setPen(QPen(self.LOSS_COLOR, 1.5))
            painter.drawPolyline(QPolygonF(loss_pts))
        if metric_pts:
            painter.setPen(QPen(self.METRIC_COLOR, 1.5))
            if len(metric_pts) > 1:
                painter.drawPolyline(QPolygonF(metric_pts))
            painter.setBrush(self.METRIC_COLOR)
            for p in metric_pts:
                painter.drawEllipse(p, 2.5, 2.5)
        # legend with the latest values (top) and the iteration axis (bottom)
        loss_text, metric_text = self.legend()
        metrics = painter.fontMetrics()
        painter.setPen(self.LOSS_COLOR)
        painter.drawText(QPointF(x0, line_h), loss_text)
        if metric_text:  # right-aligned; shortened with "…" rather than cut off
            room = int(w - metrics.horizontalAdvance(loss_text + "  "))
            shown = metrics.elidedText(metric_text, Qt.TextElideMode.ElideLeft, max(room, 0))
            painter.setPen(self.METRIC_COLOR)
            painter.drawText(QPointF(x0 + w - metrics.horizontalAdvance(shown), line_h), shown)
        painter.setPen(text)
        bottom = self.height() - 4.0
        if self.total:
            painter.drawText(QPointF(x0, bottom), "0")
            end = f"{self.total} iteration{'s' if self.total != 1 else ''}"
            painter.drawText(QPointF(x0 + w - metrics.horizontalAdvance(end), bottom), end)
        painter.end()

    def legend(self) -> tuple[str, str]:
        """The two legend texts: the loss and the validation metric with their latest
        values (the metric's short name; ``""`` when the run has none)."""
        loss_text = f"loss {self.loss[-1][1]:.4g}" if self.loss else "loss"
        if not self.metric:
            return loss_text, ""
        label = (
            SHORT_METRIC_LABELS.get(self.metric)
            or METRIC_LABELS.get(self.metric, (self.metric, True))[0]
        )
        if self.values:
            label += f" {format_metric(self.metric, self.values[-1][1])}"
        return loss_text, label
