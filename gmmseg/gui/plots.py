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
    widget.default_range = widget.getViewBox().viewRange()
    return widget


def reset_range(widget) -> None:
    """The axes of a plot with no data (emptying its items alone keeps the
    last data's range); the next data sets the range again."""
    (x0, x1), (y0, y1) = widget.default_range
    widget.setRange(xRange=(x0, x1), yRange=(y0, y1), padding=0)
    widget.enableAutoRange()


def clear_convergence(widget) -> None:
    """Back to the empty plot of a new image: no curve, EM's labels, the
    axes of no data."""
    widget.curve.setData([], [])
    widget.setLabel("bottom", "EM iteration")
    widget.setLabel("left", "log-likelihood per pixel")
    reset_range(widget)


class CriterionPlot(pg.GraphicsLayoutWidget):
    """The K criterion against K: BIC and AIC in a panel each, one above
    the other with the same K axis (at image sizes their values differ by
    far less than their size, so on one axis one would hide the other), the
    chosen K marked. Clicking a point emits ``kClicked(k)``."""

    kClicked = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumSize(240, 200)
        self.panels = []
        self._shown = None

    def _panel(self, row, label, last):
        item = self.addPlot(row=row, col=0, axisItems={"bottom": IntegerAxis("bottom")})
        item.setLabel("left", label)
        item.setMenuEnabled(False)
        item.setMouseEnabled(False, False)
        item.hideButtons()
        item.showGrid(x=True, y=True, alpha=0.2)
        item.addLegend(offset=(-10, 5))
        if last:
            item.setLabel("bottom", "number of components K")
        else:
            item.getAxis("bottom").setStyle(showValues=False)
        return item

    def show_rows(self, rows, criterion, best_k=None):
        """Curves of the criterion that chooses K (BIC and AIC for those two)."""
        shown = (criterion, best_k, [dict(r) for r in rows])
        if shown == self._shown:  # rebuilding the panels costs tens of milliseconds of GUI time
            return
        self._shown = shown
        self.clear()
        series = criterion_series(criterion)
        self.panels = [self._panel(i, label, i == len(series) - 1) for i, (_, label, _) in enumerate(series)]
        for panel in self.panels[1:]:
            panel.setXLink(self.panels[0])
        if not rows:
            return
        ks = np.array([r["k"] for r in rows], dtype=float)
        chosen = criterion.replace("-", "_")
        for panel, (key, label, _colour) in zip(self.panels, series):
            values = np.array([r[key] for r in rows], dtype=float)
            curve = panel.plot(ks, values, name=label, **STYLES[key])
            curve.scatter.sigClicked.connect(self._clicked)
            if best_k is not None:
                panel.addItem(pg.InfiniteLine(best_k, angle=90, pen=pg.mkPen(
                    "#c62828", width=1.5, style=pg.QtCore.Qt.PenStyle.DotLine)))
                if key == chosen:
                    mark = pg.ScatterPlotItem([best_k], [values[list(ks).index(best_k)]], symbol="star", size=18,
                                              brush="#c62828", pen="w")
                    panel.addItem(mark)
                    panel.legend.addItem(mark, f"chosen K = {best_k}")
            panel.setXRange(ks.min() - 0.5, ks.max() + 0.5, padding=0)

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
    widget.default_range = widget.getViewBox().viewRange()
    return widget
