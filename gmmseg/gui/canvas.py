"""The image canvas: zoom around the cursor, drag to pan, fit and 100 %."""

import sys

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QImage, QPainter, QPixmap
from PySide6.QtWidgets import QFrame, QGraphicsPixmapItem, QGraphicsScene, QGraphicsView

# Rows converted at a time: numpy copies of this size release the GIL, so
# the GUI thread runs between them (QImage.convertToFormat holds the GIL for
# the whole image: 80-100 ms at 24 megapixels).
_CONVERT_ROWS_PIXELS = 1 << 20
# Format_RGB32 holds each pixel as the 32-bit number 0xffRRGGBB: in memory
# B, G, R, 255 on little-endian machines, 255, R, G, B on big-endian ones.
_RGB_BYTES, _ALPHA_BYTE = (slice(2, None, -1), 3) if sys.byteorder == "little" else (slice(1, 4), 0)


def qimage_for_display(rgb):
    """A 32-bit QImage (the format the screen draws without converting) of
    an (H, W, 3) uint8 array, filled by numpy strip by strip in the calling
    (worker) thread, so that neither making nor showing it stalls the GUI."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    image = QImage(w, h, QImage.Format.Format_RGB32)
    if h == 0 or w == 0:
        return image
    stride = image.bytesPerLine()
    rows = np.frombuffer(image.bits(), dtype=np.uint8, count=stride * h).reshape(h, stride)
    pixels = rows[:, : 4 * w].reshape(h, w, 4)
    step = max(1, _CONVERT_ROWS_PIXELS // w)
    for start in range(0, h, step):
        part = pixels[start:start + step]
        part[..., _RGB_BYTES] = rgb[start:start + step]
        part[..., _ALPHA_BYTE] = 255
    return image


def qimage_from_rgb(rgb):
    """A QImage holding a copy of an (H, W, 3) uint8 array.

    The pixels are copied into the QImage's own buffer (rows padded to 4
    bytes), so no Python buffer is shared with Qt; safe in worker threads.
    """
    rgb = np.asarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    image = QImage(w, h, QImage.Format.Format_RGB888)
    stride = image.bytesPerLine()
    rows = np.frombuffer(image.bits(), dtype=np.uint8, count=stride * h).reshape(h, stride)
    rows[:, : 3 * w] = rgb.reshape(h, 3 * w)
    return image


EMPTY_HINT = ("Open an image: File > Open (Ctrl+O), drag and drop a file here,\n"
              "or try File > Open Sample.\n\nThen press Run (Ctrl+R) to segment it.")


class ImageCanvas(QGraphicsView):
    """Shows one picture; emits the image pixel under the mouse."""

    hovered = Signal(int, int)  # x, y in image pixels; (-1, -1) when outside
    zoomChanged = Signal(float)

    MIN_SCALE, MAX_SCALE = 0.02, 64.0

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = QGraphicsScene(self)
        self._item = QGraphicsPixmapItem()
        self._item.setTransformationMode(Qt.TransformationMode.FastTransformation)
        self._scene.addItem(self._item)
        self.setScene(self._scene)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setBackgroundBrush(Qt.GlobalColor.darkGray)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        self.setMouseTracking(True)
        self._fit_on_resize = True
        self._size = (0, 0)
        self._strips = []

    # -- content ---------------------------------------------------------
    def set_image(self, qimage, reset_view=False, logical_size=None):
        """Show a QImage; keeps the zoom unless the size changed or asked.

        ``logical_size`` (width, height) shows a reduced preview stretched
        over the full image's area.
        """
        size = logical_size or (qimage.width(), qimage.height())
        self._clear_strips()
        pixmap = QPixmap.fromImage(qimage)  # a 32-bit QImage is shared, not copied
        self._item.setPixmap(pixmap)
        self._item.setScale(size[0] / max(qimage.width(), 1))
        self._scene.setSceneRect(QRectF(0, 0, size[0], size[1]))
        if reset_view or size != self._size:
            self._size = size
            self.fit_to_window()

    def add_strip(self, row, qimage):
        """Draw rows of the full-resolution picture from ``row`` down over
        what is shown (a preview), until the next :meth:`set_image`."""
        item = QGraphicsPixmapItem(QPixmap.fromImage(qimage))
        item.setTransformationMode(Qt.TransformationMode.FastTransformation)
        item.setPos(0, row)
        item.setZValue(1)
        self._scene.addItem(item)
        self._strips.append(item)

    def _clear_strips(self):
        for item in self._strips:
            self._scene.removeItem(item)
        self._strips = []

    def paintEvent(self, event):
        super().paintEvent(event)
        if not self.has_image():  # the empty start screen says what to do
            painter = QPainter(self.viewport())
            painter.setPen(Qt.GlobalColor.white)
            font = painter.font()
            font.setPointSizeF(font.pointSizeF() * 1.3)
            painter.setFont(font)
            painter.drawText(self.viewport().rect(), Qt.AlignmentFlag.AlignCenter, EMPTY_HINT)
            painter.end()

    def clear(self):
        self._clear_strips()
        self._item.setPixmap(QPixmap())
        self._size = (0, 0)

    def has_image(self):
        return self._size != (0, 0)

    def current_pixmap(self):
        return self._item.pixmap()

    # -- view ------------------------------------------------------------
    def scale_factor(self):
        return self.transform().m11()

    def fit_to_window(self):
        if self.has_image():
            self.fitInView(self._item, Qt.AspectRatioMode.KeepAspectRatio)
            self._fit_on_resize = True
            self.zoomChanged.emit(self.scale_factor())

    def actual_size(self):
        self.resetTransform()
        self._fit_on_resize = False
        self.zoomChanged.emit(1.0)

    def zoom_by(self, factor):
        current = self.scale_factor()
        factor = max(self.MIN_SCALE / current, min(self.MAX_SCALE / current, factor))
        self.scale(factor, factor)
        self._fit_on_resize = False
        self.zoomChanged.emit(self.scale_factor())

    def zoom_to_rect(self, x, y, w, h, margin=0.25):
        """Zoom onto an image rectangle (e.g. a region) with some margin."""
        rect = QRectF(x, y, w, h).adjusted(-w * margin - 4, -h * margin - 4, w * margin + 4, h * margin + 4)
        self.fitInView(rect, Qt.AspectRatioMode.KeepAspectRatio)
        self._fit_on_resize = False
        self.zoomChanged.emit(self.scale_factor())

    # -- events ----------------------------------------------------------
    def wheelEvent(self, event):
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.zoom_by(1.25**steps)
        event.accept()

    def resizeEvent(self, event):
        super().resizeEvent(event)
        if self._fit_on_resize:
            self.fit_to_window()

    def mouseMoveEvent(self, event):
        super().mouseMoveEvent(event)
        point = self.mapToScene(event.position().toPoint())
        self._emit_hover(point)

    def leaveEvent(self, event):
        super().leaveEvent(event)
        self.hovered.emit(-1, -1)

    def _emit_hover(self, point: QPointF):
        x, y = int(np.floor(point.x())), int(np.floor(point.y()))
        w, h = self._size
        if 0 <= x < w and 0 <= y < h:
            self.hovered.emit(x, y)
        else:
            self.hovered.emit(-1, -1)
