"""The application's plots, drawn with pyqtgraph (see the README for why).

Each plot has axis labels, a legend where there is more than one series,
and integer ticks on integer axes (K, iterations).
"""

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal

from ..plot import criterion_series

pg.setConfigOptions(background="w", foreground="#333", antialias=True)

BIC_STYLE = {"pen": pg.mkPen("#1f77b4", width=2), "symbol": "o", "symbolBrush": "#1f77b4", "symbolPen": "w",
             "symbolSize": 8}
AIC_STYLE = {"pen": pg.mkPen("#ff7f0e", width=2, style=pg.QtCore.Qt.PenStyle.DashLine), "symbol": "t",
             "symbolBrush": "#ff7f0e", "symbolPen": "w", "symbolSize": 9}
STYLES = {"bic": BIC_STYLE, "bic_300": BIC_STYLE, "aic": AIC_STYLE}


class IntegerAxis(pg.AxisItem):
    """An axis whose ticks fall on integers only (K, iterations)."""

    def tickValues(self, minVal, maxVal, size):
        lo, hi = int(np.ceil(minVal)), int(np.floor(maxVal))
        if hi < lo:
            return []
        span = hi - lo + 1
        step = max(1, int(np.ceil(span / max(2, size / 40))))  # about one tick per 40 pixels
        return [(step, list(range(lo - lo % step + (step if lo % step else 0), hi + 1, step)) or [lo])]


def _plot(xlabel, ylabel, integer_x=False):
    axes = {"bottom": IntegerAxis("bottom")} if integer_x else {}
    widget = pg.PlotWidget(axisItems=axes)
    widget.setLabel("bottom", xlabel)
    widget.setLabel("left", ylabel)
    widget.setMenuEnabled(False)
    widget.setMouseEnabled(False, False)
    widget.hideButtons()
    widget.showGrid(x=False, y=True, alpha=0.2)
    widget.setMinimumSize(240, 170)
    return widget


def convergence_plot():
    """Log-likelihood (or the spatial fit's objective) per EM iteration."""
    widget = _plot("EM iteration", "log-likelihood per pixel", integer_x=True)
    widget.curve = widget.plot([], [], pen=pg.mkPen("#1f77b4", width=2))
    return widget


class CriterionPlot(pg.PlotWidget):
    """The K criterion against K; BIC and AIC each relative to its own
    minimum (their raw values differ by far less than their size), the
    chosen K marked. Clicking a point emits ``kClicked(k)``."""

    kClicked = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent, axisItems={"bottom": IntegerAxis("bottom")})
        self.setLabel("bottom", "number of components K")
        self.setLabel("left", "criterion - its minimum")
        self.setMenuEnabled(False)
        self.setMouseEnabled(False, False)
        self.hideButtons()
        self.showGrid(x=True, y=True, alpha=0.2)
        self.setMinimumSize(240, 190)
        self.addLegend(offset=(-10, 10))
        self.curves = {}
        self.best_line = pg.InfiniteLine(angle=90, pen=pg.mkPen("#c62828", width=1.5, style=pg.QtCore.Qt.PenStyle.DotLine))
        self.best_mark = pg.ScatterPlotItem(symbol="star", size=18, brush="#c62828", pen="w")

    def show_rows(self, rows, criterion, best_k=None):
        """Curves of the criterion that chooses K (BIC and AIC for those two)."""
        for item in list(self.curves.values()) + [self.best_line, self.best_mark]:
            self.removeItem(item)
        self.plotItem.legend.clear()
        self.curves = {}
        if not rows:
            return
        ks = np.array([r["k"] for r in rows], dtype=float)
        for key, label, _colour in criterion_series(criterion):
            values = np.array([r[key] for r in rows], dtype=float)
            curve = self.plot(ks, values - values.min(), name=label, **STYLES[key])
            curve.scatter.sigClicked.connect(self._clicked)
            self.curves[key] = curve
        if best_k is not None:
            key = criterion.replace("-", "_")
            values = np.array([r[key] for r in rows], dtype=float)
            best = values[list(ks).index(best_k)] - values.min()
            self.best_line.setValue(best_k)
            self.best_mark.setData([best_k], [best])
            self.addItem(self.best_line)
            self.addItem(self.best_mark)
            self.plotItem.legend.addItem(self.best_mark, f"chosen K = {best_k}")
        self.setXRange(ks.min() - 0.5, ks.max() + 0.5, padding=0)

    def _clicked(self, scatter, points, *args):
        if len(points):
            self.kClicked.emit(int(round(points[0].pos().x())))


def histogram_plot():
    """Per-pixel log-likelihood histogram with the anomaly threshold."""
    widget = _plot("log-likelihood per pixel", "pixels, log(1 + count)")
    widget.bars = pg.BarGraphItem(x=[], height=[], width=1.0, brush="#7890aa", pen=None)
    widget.addItem(widget.bars)
    widget.threshold = pg.InfiniteLine(angle=90, pen=pg.mkPen("#c62828", width=2, style=pg.QtCore.Qt.PenStyle.DashLine))
    widget.addItem(widget.threshold)
    widget.threshold.hide()
    return widget
