"""Small painted widgets: line/point/bar plots, a colour bar, the
colour-space density view with component ellipses."""

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from .canvas import qimage_from_rgb
from .render import LUT


def _nice_ticks(lo, hi, count=4):
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    ticks = []
    t = first
    while t <= hi + 1e-9 * step:
        ticks.append(t)
        t += step
    return ticks


def _fmt(value):
    a = abs(value)
    if a >= 1e6:
        return f"{value / 1e6:.3g}M"
    if a >= 1e4:
        return f"{value / 1e3:.3g}k"
    if a >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.3g}"


class PlotWidget(QWidget):
    """A compact plot: lines, points and bars, an optional vertical marker.

    Clicking near a point of a clickable series emits ``pointClicked(x)``.
    """

    pointClicked = Signal(float)

    def __init__(self, title="", xlabel="", ylabel="", parent=None):
        super().__init__(parent)
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self._series = []
        self._vline = None
        self._marker = None
        self._clickable = False
        self.setMinimumSize(220, 150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def sizeHint(self):
        return QSize(300, 190)

    def set_series(self, series, clickable=False):
        """``series``: list of (label, xs, ys, QColor, kind) with kind in
        'line', 'points', 'bars'."""
        self._series = [(lbl, np.asarray(x, float), np.asarray(y, float), QColor(c), kind) for lbl, x, y, c, kind in series]
        self._clickable = clickable
        self.update()

    def set_vline(self, x, color=QColor(220, 40, 40)):
        self._vline = None if x is None else (float(x), QColor(color))
        self.update()

    def set_marker(self, x, y):
        self._marker = None if x is None else (float(x), float(y))
        self.update()

    def clear(self):
        self._series, self._vline, self._marker = [], None, None
        self.update()

    def _ranges(self):
        xs = [s[1] for s in self._series if s[1].size]
        ys = [s[2][np.isfinite(s[2])] for s in self._series if s[2].size]
        ys = [y for y in ys if y.size]
        if not xs or not ys:
            return None
        x_lo, x_hi = min(x.min() for x in xs), max(x.max() for x in xs)
        y_lo, y_hi = min(y.min() for y in ys), max(y.max() for y in ys)
        if any(kind == "bars" for *_, kind in self._series):
            y_lo = min(0.0, y_lo)
            step = np.median(np.diff(xs[0])) if xs[0].size > 1 else 1.0
            x_lo, x_hi = x_lo - step / 2, x_hi + step / 2
        if self._vline is not None:
            x_lo, x_hi = min(x_lo, self._vline[0]), max(x_hi, self._vline[0])
        if x_hi == x_lo:
            x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
        if y_hi == y_lo:
            y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
        pad = 0.06 * (y_hi - y_lo)
        return x_lo, x_hi, y_lo - (0 if y_lo == 0 else pad), y_hi + pad

    def _plot_rect(self):
        return QRectF(52, 22 if self.title else 8, max(10, self.width() - 62), max(10, self.height() - (52 if self.title else 38)))

    def paintEvent(self, event):
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), self.palette().base())
        text = self.palette().text().color()
        small = QFont(self.font())
        small.setPointSizeF(max(7.0, self.font().pointSizeF() * 0.85))
        p.setFont(small)
        if self.title:
            p.setPen(text)
            p.drawText(QRectF(0, 2, self.width(), 18), Qt.AlignmentFlag.AlignHCenter, self.title)
        rect = self._plot_rect()
        p.setPen(QPen(QColor(150, 150, 150)))
        p.drawRect(rect)
        ranges = self._ranges()
        if ranges is None:
            p.setPen(QColor(140, 140, 140))
            p.drawText(rect, Qt.AlignmentFlag.AlignCenter, "no data yet")
            return
        x_lo, x_hi, y_lo, y_hi = ranges

        def to_px(x, y):
            return QPointF(rect.left() + (x - x_lo) / (x_hi - x_lo) * rect.width(),
                           rect.bottom() - (y - y_lo) / (y_hi - y_lo) * rect.height())

        self._to_px = to_px
        p.setPen(QColor(120, 120, 120))
        for t in _nice_ticks(y_lo, y_hi):
            pt = to_px(x_lo, t)
            p.setPen(QColor(225, 225, 225))
            p.drawLine(QPointF(rect.left(), pt.y()), QPointF(rect.right(), pt.y()))
            p.setPen(text)
            p.drawText(QRectF(0, pt.y() - 8, rect.left() - 4, 16), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, _fmt(t))
        for t in _nice_ticks(x_lo, x_hi, 5):
            pt = to_px(t, y_lo)
            p.setPen(text)
            p.drawText(QRectF(pt.x() - 30, rect.bottom() + 2, 60, 14), Qt.AlignmentFlag.AlignHCenter, _fmt(t))
        if self.xlabel:
            p.drawText(QRectF(rect.left(), rect.bottom() + 14, rect.width(), 14), Qt.AlignmentFlag.AlignHCenter, self.xlabel)
        legend_x = rect.left() + 6
        for label, xs, ys, color, kind in self._series:
            if kind == "bars" and xs.size:
                width = (rect.width() / max(len(xs), 1)) * 0.95
                p.setPen(Qt.PenStyle.NoPen)
                p.setBrush(color)
                for x, y in zip(xs, ys):
                    top, base = to_px(x, y), to_px(x, max(y_lo, 0.0))
                    p.drawRect(QRectF(top.x() - width / 2, top.y(), width, base.y() - top.y()))
                continue
            finite = np.isfinite(ys)
            pts = [to_px(x, y) for x, y in zip(xs[finite], ys[finite])]
            if kind == "line" and len(pts) > 1:
                p.setPen(QPen(color, 2))
                path = QPainterPath(pts[0])
                for pt in pts[1:]:
                    path.lineTo(pt)
                p.setBrush(Qt.BrushStyle.NoBrush)
                p.drawPath(path)
            if kind in ("points", "line") and len(pts) <= 60:
                p.setPen(Qt.PenStyle.NoPen)
                p.setBrush(color)
                for pt in pts:
                    p.drawEllipse(pt, 3, 3)
            if label:
                p.setPen(QPen(color, 2))
                p.drawLine(QPointF(legend_x, rect.top() + 10), QPointF(legend_x + 14, rect.top() + 10))
                p.setPen(text)
                p.drawText(QPointF(legend_x + 18, rect.top() + 14), label)
                legend_x += 30 + p.fontMetrics().horizontalAdvance(label)
        if self._vline is not None:
            x, color = self._vline
            top, bottom = to_px(x, y_hi), to_px(x, y_lo)
            p.setPen(QPen(color, 2, Qt.PenStyle.DashLine))
            p.drawLine(top, bottom)
        if self._marker is not None:
            pt = to_px(*self._marker)
            p.setPen(QPen(QColor(200, 0, 0), 2))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawEllipse(pt, 7, 7)

    def mousePressEvent(self, event):
        if not self._clickable or not self._series or not hasattr(self, "_to_px"):
            return
        pos = event.position()
        best, best_d = None, 15.0
        for _, xs, ys, _, _ in self._series:
            for x, y in zip(xs, ys):
                if not np.isfinite(y):
                    continue
                pt = self._to_px(x, y)
                d = math.hypot(pt.x() - pos.x(), pt.y() - pos.y())
                if d < best_d:
                    best, best_d = x, d
        if best is not None:
            self.pointClicked.emit(float(best))


class ColorBar(QWidget):
    """A vertical colour bar for the soft and uncertainty maps."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.label = ""
        self.setFixedSize(96, 170)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self._image = qimage_from_rgb(LUT[::-1][:, None, :].repeat(12, axis=1))

    def set_label(self, text):
        self.label = text
        self.update()

    def paintEvent(self, event):
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(255, 255, 255, 215))
        bar = QRectF(8, 22, 14, self.height() - 32)
        p.drawImage(bar, self._image)
        p.setPen(QColor(60, 60, 60))
        p.drawRect(bar)
        font = QFont(self.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.8))
        p.setFont(font)
        p.drawText(QRectF(2, 2, self.width() - 4, 16), Qt.AlignmentFlag.AlignLeft, self.label)
        p.drawText(QPointF(26, bar.top() + 8), "1")
        p.drawText(QPointF(26, bar.center().y() + 4), "0.5")
        p.drawText(QPointF(26, bar.bottom()), "0")


class DensityView(QWidget):
    """Pixels as a 2-D density over two feature axes, with each component's
    mean and its 1- and 2-sigma ellipses (updated live during a fit)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumSize(220, 220)
        self._density = None  # QImage
        self._extent = None  # (x_lo, x_hi, y_lo, y_hi)
        self._ellipses = []  # (mean(2), cov(2,2), QColor)
        self.axis_names = ("", "")

    def sizeHint(self):
        return QSize(300, 300)

    def set_points(self, X, weights, axes, names):
        """Density of ``X[:, axes]`` weighted by ``weights``."""
        i, j = axes
        x, y = X[:, i], X[:, j]
        x_lo, x_hi = np.percentile(x, [0.2, 99.8]) if x.size > 10 else (x.min(), x.max())
        y_lo, y_hi = np.percentile(y, [0.2, 99.8]) if y.size > 10 else (y.min(), y.max())
        padx, pady = 0.08 * ((x_hi - x_lo) or 1.0), 0.08 * ((y_hi - y_lo) or 1.0)
        self._extent = (x_lo - padx, x_hi + padx, y_lo - pady, y_hi + pady)
        hist, _, _ = np.histogram2d(y, x, bins=128, range=[self._extent[2:], self._extent[:2]], weights=weights)
        logd = np.log1p(hist)[::-1]
        top = logd.max() or 1.0
        shade = (255 - np.clip(logd / top, 0, 1) * 215).astype(np.uint8)
        self._density = qimage_from_rgb(np.repeat(shade[..., None], 3, axis=2))
        self.axis_names = names
        self.update()

    def set_components(self, means, covariances, colors, axes):
        """Ellipses of the components projected on the two axes (full 2x2
        covariances; diag/spherical/tied already expanded by the caller)."""
        i, j = axes
        self._ellipses = []
        for k in range(len(means)):
            m = np.array([means[k][i], means[k][j]])
            c = np.array([[covariances[k][i, i], covariances[k][i, j]], [covariances[k][j, i], covariances[k][j, j]]])
            color = QColor(*[int(v) for v in np.clip(np.asarray(colors[k]) * 255, 0, 255)])
            self._ellipses.append((m, c, color))
        self.update()

    def clear(self):
        self._density, self._extent, self._ellipses = None, None, []
        self.update()

    def paintEvent(self, event):
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), self.palette().base())
        side = min(self.width() - 30, self.height() - 30)
        rect = QRectF(24, 6, side, side)
        p.setPen(QColor(150, 150, 150))
        p.drawRect(rect)
        if self._density is None:
            p.drawText(rect, Qt.AlignmentFlag.AlignCenter, "no image")
            return
        p.drawImage(rect, self._density)
        x_lo, x_hi, y_lo, y_hi = self._extent
        sx, sy = rect.width() / (x_hi - x_lo), rect.height() / (y_hi - y_lo)

        def to_px(x, y):
            return QPointF(rect.left() + (x - x_lo) * sx, rect.bottom() - (y - y_lo) * sy)

        p.setClipRect(rect)
        for mean, cov, color in self._ellipses:
            values, vectors = np.linalg.eigh(cov)
            values = np.maximum(values, 0)
            angle = np.linspace(0, 2 * np.pi, 64)
            circle = np.stack([np.cos(angle), np.sin(angle)])
            for n_sigma, style in ((1, Qt.PenStyle.SolidLine), (2, Qt.PenStyle.DashLine)):
                pts = mean[:, None] + vectors @ (np.sqrt(values)[:, None] * circle) * n_sigma
                path = QPainterPath(to_px(*pts[:, 0]))
                for q in pts.T[1:]:
                    path.lineTo(to_px(*q))
                path.closeSubpath()
                outline = QColor(color).darker(150)
                p.setPen(QPen(outline, 2, style))
                p.setBrush(Qt.BrushStyle.NoBrush)
                p.drawPath(path)
            p.setPen(QPen(Qt.GlobalColor.black, 1))
            p.setBrush(QBrush(color))
            p.drawEllipse(to_px(*mean), 4, 4)
        p.setClipping(False)
        p.setPen(self.palette().text().color())
        p.drawText(QRectF(rect.left(), rect.bottom() + 2, rect.width(), 16), Qt.AlignmentFlag.AlignHCenter, self.axis_names[0])
        p.save()
        p.translate(14, rect.center().y())
        p.rotate(-90)
        p.drawText(QRectF(-rect.height() / 2, -12, rect.height(), 16), Qt.AlignmentFlag.AlignHCenter, self.axis_names[1])
        p.restore()
