"""The dock panels: each reads the session and calls its methods.

Model (the settings), Components, Convergence, Model selection (Auto K),
Anomaly, Colour space, and the status area. The Inspection panel lives in
:mod:`gmmseg.gui.inspection_panel`.
"""

import html
import weakref

import numpy as np
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..features import color_features, unique_colors
from ..params import MAX_COMPONENTS, SegmenterParams
from .plots import CriterionPlot, clear_convergence, convergence_plot, histogram_plot, reset_range
from .render import display_colors, full_covariances
from .settings_form import SettingsForm, set_combo_tips
from .widgets import DensityView

AXIS_NAMES = {
    "rgb": ("R", "G", "B"),
    "lab": ("L*/100", "a*/100", "b*/100"),
    "hsv": ("S cos H", "S sin H", "V"),
    "ycbcr": ("Y", "Cb", "Cr"),
    "gray": ("grey",),
}


class ScrollingPanel(QScrollArea):
    """A tall panel in a vertical scroll area: its dock then does not set the
    window's minimum height (the Model settings and the Inspection panel made
    it over 1000 pixels, more than many screens have), yet asks for the
    panel's whole height, so it scrolls only when the window is too short."""

    def __init__(self, panel):
        super().__init__()
        self.setWidget(panel)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setMinimumWidth(panel.minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width())

    def sizeHint(self):
        return self.widget().sizeHint() + QSize(self.verticalScrollBar().sizeHint().width(), 0)


class ModelPanel(QWidget):
    """Every setting of :class:`gmmseg.SegmenterParams`, Run / Cancel /
    Auto K, and a line saying which model is shown and whether the
    settings still match it."""

    def __init__(self, session, icon=lambda name: None):
        super().__init__()
        self.session = session
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.form = SettingsForm(SegmenterParams)
        self.widgets = self.form.widgets
        set_combo_tips(self.widgets["covariance_type"], {
            "full": "any ellipsoid per component", "tied": "one shared ellipsoid",
            "diag": "axis-aligned ellipsoids", "spherical": "round blobs"})
        layout.addWidget(ScrollingPanel(self.form), 1)  # the settings scroll; Run and the model line stay in sight
        row = QHBoxLayout()
        self.run_button = QPushButton(icon("run"), "Run")
        self.cancel_button = QPushButton(icon("cancel"), "Cancel")
        self.autok_button = QPushButton(icon("autok"), "Auto K")
        self.autok_button.setToolTip("Sweep K over the range of the Model selection panel, then fit the K chosen")
        for button in (self.run_button, self.cancel_button, self.autok_button):
            row.addWidget(button)
        layout.addLayout(row)
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.model_label.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.model_label)
        self.run_button.clicked.connect(lambda: session.run_fit())
        self.cancel_button.clicked.connect(session.cancel)
        self.autok_button.clicked.connect(lambda: session.run_auto_k())
        self.form.changed.connect(self._on_form_changed)
        for event in (session.events.settings, session.events.model, session.events.busy, session.events.image):
            event.connect(self.update_from_session)
        self.update_from_session()

    def _on_form_changed(self):
        try:
            self.session.set_settings(self.form.params())
        except ValueError as exc:
            self.session.set_status(str(exc))

    def update_from_session(self):
        s = self.session
        if self.form.params() != s.settings:
            self.form.blockSignals(True)
            self.form.set_values(s.settings)
            self.form.blockSignals(False)
        has_image = s.image is not None
        self.run_button.setEnabled(has_image and not s.is_running("fit"))
        self.autok_button.setEnabled(has_image and not s.is_running("auto K"))
        self.cancel_button.setEnabled(s.busy)
        if s.segmenter is None:
            self.model_label.setText("No model yet: press Run." if has_image else "")
            return
        text = f"Shown model: <b>K = {s.model_k()}</b> ({html.escape(s.model_source)})"
        if s.settings_differ:
            changed = [n for n in SegmenterParams.names() if getattr(s.settings, n) != getattr(s.model_params, n)]
            text += (f"<br><span style='color:#b26a00'>The settings differ from the shown model's "
                     f"({', '.join(changed)}): Run to apply them. Export and Save Model write the shown model.</span>")
        if s.model_note:
            text += f"<br><span style='color:#b26a00'>{html.escape(s.model_note[0].upper() + s.model_note[1:])}.</span>"
        self.model_label.setText(text)


class ComponentsPanel(QTableWidget):
    """One row per component: colour, name (editable), weight, pixels, area,
    shown or hidden. Selecting a row shows its soft map."""

    HEADERS = ["Colour", "Name", "Weight", "Pixels", "Area %", "Show"]

    def __init__(self, session):
        super().__init__(0, len(self.HEADERS))
        self.session = session
        self.setHorizontalHeaderLabels(self.HEADERS)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(40)
        self.verticalHeader().setVisible(False)
        self.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.itemSelectionChanged.connect(self._on_selected)
        self.itemChanged.connect(self._on_edited)
        session.events.model.connect(self.fill)
        self.fill()

    def fill(self):
        s = self.session
        self.blockSignals(True)
        if s.segmenter is None:
            self.setRowCount(0)
            self.blockSignals(False)
            return
        K = s.model_k()
        colors = s.display_colors()
        if colors is None:
            colors = s.segmenter.component_colors_
            if s.image is not None and s.image.is_gray:
                colors = display_colors(colors, True)
        stats = s.stats if len(s.stats) == K else [None] * K
        self.setRowCount(K)
        flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        for row in range(K):
            swatch = QTableWidgetItem()
            color = QColor(*[int(round(c * 255)) for c in colors[row]])
            swatch.setBackground(color)
            swatch.setFlags(flags)
            swatch.setToolTip(color.name())
            name = QTableWidgetItem(s.names[row])
            name.setToolTip("Double-click to rename")
            st = stats[row]
            weight = float(s.segmenter.gmm_.weights_[row])
            cells = [swatch, name, QTableWidgetItem(f"{weight:.3f}"),
                     QTableWidgetItem("-" if st is None else f"{st['pixel_count']:,}"),
                     QTableWidgetItem("-" if st is None else f"{100 * st['area_fraction']:.1f}")]
            for col, item in enumerate(cells):
                if col >= 2:
                    item.setFlags(flags)
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.setItem(row, col, item)
            show = QTableWidgetItem()
            show.setFlags(flags | Qt.ItemFlag.ItemIsUserCheckable)
            show.setCheckState(Qt.CheckState.Checked if s.visible[row] else Qt.CheckState.Unchecked)
            self.setItem(row, 5, show)
        self.blockSignals(False)

    def _on_selected(self):
        rows = {i.row() for i in self.selectedItems()}
        if rows and self.session.segmentation is not None:
            self.session.select_component(min(rows))

    def _on_edited(self, item):
        if item.column() == 1:
            self.session.rename(item.row(), item.text())
        elif item.column() == 5:
            self.session.set_visible(item.row(), item.checkState() == Qt.CheckState.Checked)


class ConvergencePanel(QWidget):
    """The running fit's log-likelihood per iteration (then the spatial
    fit's objective)."""

    def __init__(self, session):
        super().__init__()
        self.session = session
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        self.plot = convergence_plot()
        layout.addWidget(self.plot)
        session.events.fit_progress.connect(self._on_progress)
        session.events.image.connect(lambda: clear_convergence(self.plot))

    def _on_progress(self, progress, history):
        spatial = progress.phase == "spatial"
        self.plot.setLabel("left", "mean-field objective per pixel" if spatial else "log-likelihood per pixel")
        self.plot.setLabel("bottom", "spatial fit iteration" if spatial else "EM iteration")
        self.plot.curve.setData(np.arange(1, len(history) + 1), np.asarray(history))


class ModelSelectionPanel(QWidget):
    """Auto K: the range swept (editable), the criterion against K, the rule
    that chose K and a warning when it is at the edge of the range."""

    def __init__(self, session):
        super().__init__()
        self.session = session
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        row = QHBoxLayout()
        row.addWidget(QLabel("K from"))
        self.k_from, self.k_to = QSpinBox(), QSpinBox()
        for spin in (self.k_from, self.k_to):
            spin.setRange(1, MAX_COMPONENTS)
            row.addWidget(spin)
            if spin is self.k_from:
                row.addWidget(QLabel("to"))
        self.k_from.setValue(session.k_range[0])
        self.k_to.setValue(session.k_range[1])
        self.k_from.valueChanged.connect(self._on_range)
        self.k_to.valueChanged.connect(self._on_range)
        self.sweep_button = QPushButton("Sweep")
        self.sweep_button.setToolTip("Fit every K of the range, choose by the K criterion, then fit the K chosen")
        self.sweep_button.clicked.connect(lambda: session.run_auto_k())
        row.addWidget(self.sweep_button)
        row.addStretch(1)
        layout.addLayout(row)
        self.plot = CriterionPlot()
        self.plot.kClicked.connect(session.choose_k)
        layout.addWidget(self.plot, 1)
        self.rule_label = QLabel()
        self.rule_label.setWordWrap(True)
        self.rule_label.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.rule_label)
        session.events.auto_k.connect(self.update_from_session)
        session.events.busy.connect(lambda: self.sweep_button.setEnabled(
            session.image is not None and not session.is_running("auto K")))
        self.update_from_session()

    def _on_range(self):
        low, high = self.k_from.value(), self.k_to.value()
        if low < high:
            self.session.set_k_range(low, high)
            self.rule_label.setText(self._idle_text())
        else:
            self.rule_label.setText("<span style='color:#c62828'>The range needs 'from' below 'to'.</span>")

    def _idle_text(self):
        low, high = self.session.k_range
        return f"Auto K tries K = {low} to {high} and picks the lowest {self.session.settings.k_criterion.upper()}."

    def update_from_session(self):
        s = self.session
        if (self.k_from.value(), self.k_to.value()) != s.k_range:
            for spin, value in zip((self.k_from, self.k_to), s.k_range):
                spin.blockSignals(True)
                spin.setValue(value)
                spin.blockSignals(False)
        result = s.k_selection
        criterion = result.criterion if result is not None else s.settings.k_criterion
        self.plot.show_rows(s.k_rows, criterion, result.best_k if result is not None else None)
        if result is None:
            self.rule_label.setText(f"Sweeping K = {s.k_range[0]} to {s.k_range[1]}..." if s.k_rows
                                    else self._idle_text())
            return
        text = (f"<b>Chosen K = {result.best_k}</b> by {result.rule} (K = {s.k_range[0]}-{s.k_range[1]}); "
                "click a point to fit another K.")
        if result.at_edge:
            text += ("<br><span style='color:#c62828'>Warning: the chosen K is at the edge of the range; "
                     "a K outside it may be better. Widen the range and sweep again.</span>")
        self.rule_label.setText(text)


class AnomalyPanel(QWidget):
    """The share of least likely pixels flagged, and the log-likelihood
    histogram with the threshold."""

    def __init__(self, session):
        super().__init__()
        self.session = session
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        row = QHBoxLayout()
        row.addWidget(QLabel("Flag the least likely"))
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 200)  # 0.0 % .. 20.0 % in 0.1 % steps
        self.slider.setValue(int(round(session.percentile * 10)))
        self.slider.setToolTip("Percentile of this image's own log-likelihoods below which pixels are flagged")
        self.slider.valueChanged.connect(lambda v: session.set_percentile(v / 10.0))
        row.addWidget(self.slider, 1)
        layout.addLayout(row)
        # Its own line: the threshold and the share flagged do not fit beside the slider in a narrow dock.
        self.label = QLabel()
        self.label.setWordWrap(True)
        layout.addWidget(self.label)
        self.plot = histogram_plot()
        layout.addWidget(self.plot, 1)
        session.events.model.connect(self._on_model)
        session.events.threshold.connect(self._on_threshold)
        self._on_model()

    def _on_model(self):
        histogram = self.session.histogram
        if histogram is None:
            self.plot.bars.setOpts(x=[], height=[], width=1.0)
            self.plot.threshold.hide()
            reset_range(self.plot)
        else:
            counts, edges = histogram
            self.plot.bars.setOpts(x=(edges[:-1] + edges[1:]) / 2, height=np.log1p(counts), width=edges[1] - edges[0])
        self._on_threshold()

    def _on_threshold(self):
        s = self.session
        text = f"{s.percentile:.1f} %"
        if s.anomaly_threshold is not None:
            text += f" (log-likelihood < {s.anomaly_threshold:.2f})"
            if s.anomaly_fraction is not None and s.view == "anomaly":
                text += f": {100 * s.anomaly_fraction:.2f} % flagged"
            self.plot.threshold.setValue(s.anomaly_threshold)
            self.plot.threshold.show()
        self.label.setText(text)


#: Pixels of an image sampled for the colour-space density.
DENSITY_SAMPLE = 150_000


class ColourSpacePanel(QWidget):
    """The image's colours as a density over two feature axes, with each
    component's mean and 1- and 2-sigma ellipses (live during a fit)."""

    def __init__(self, session):
        super().__init__()
        self.session = session
        self._cache = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.axes_combo = QComboBox()
        self.axes_combo.setToolTip("The two feature axes of the density plot")
        self.axes_combo.currentIndexChanged.connect(lambda i: self.redraw(recompute=True))
        layout.addWidget(self.axes_combo)
        self.density = DensityView()
        layout.addWidget(self.density, 1)
        self._space = None
        session.events.settings.connect(self._on_settings)
        session.events.image.connect(lambda: self.redraw(recompute=True))
        session.events.model.connect(self.redraw)
        session.events.fit_progress.connect(lambda p, history: self.redraw(live=p))
        self._on_settings()

    def _on_settings(self):
        space = self.session.settings.color_space
        if space == self._space:
            return
        self._space = space
        names = AXIS_NAMES[space]
        self.axes_combo.blockSignals(True)
        self.axes_combo.clear()
        if len(names) == 1:
            self.axes_combo.addItem(f"{names[0]} / {names[0]}", (0, 0))
        else:
            for i in range(len(names)):
                for j in range(i + 1, len(names)):
                    self.axes_combo.addItem(f"{names[i]} / {names[j]}", (i, j))
            if space == "lab":
                self.axes_combo.setCurrentIndex(2)  # a*/b*: the chroma plane
        self.axes_combo.blockSignals(False)
        self.redraw(recompute=True)

    def _features(self):
        """Colour features of (a sample of) the image's distinct colours."""
        image, space = self.session.image, self._space
        if self._cache is not None and self._cache[0]() is image and self._cache[1] == space:
            return self._cache[2:]
        # An even sample, taken before the mask is applied: plenty for a
        # 128 x 128 density, and a few milliseconds in the GUI thread where
        # masking every pixel of a 24-megapixel image took seconds.
        pixels, mask = image.pixels.reshape(-1, image.pixels.shape[-1]), image.mask.ravel()
        step = max(1, pixels.shape[0] // DENSITY_SAMPLE)
        unique, counts, _ = unique_colors(pixels[::step][mask[::step]], image.bit_depth)
        X = color_features(unique, space)
        self._cache = (weakref.ref(image), space, X, counts)
        return X, counts

    def redraw(self, recompute=False, live=None):
        s = self.session
        if s.image is None:
            self.density.clear()
            return
        axes = self.axes_combo.currentData() or (0, 0)
        names = AXIS_NAMES[self._space]
        X, counts = self._features()
        if X.shape[1] == 1:
            axes = (0, 0)
        if recompute or self.density._density is None:
            self.density.set_points(X, counts, axes, (names[min(axes[0], len(names) - 1)],
                                                      names[min(axes[1], len(names) - 1)]))
        params = s.settings if live is not None else s.model_params
        source = None
        if live is not None and live.means is not None:
            source = (live.means, live.covariances, None, params.covariance_type)
        elif s.segmenter is not None:
            gm = s.segmenter.gmm_
            source = (gm.means_, gm.covariances_, s.segmenter.component_colors_, s.segmenter.covariance_type)
        if source is None or params is None or not params.features.uses_color or params.color_space != self._space:
            self.density.set_components([], [], [], axes)
            return
        means, covs, colours, covariance_type = source
        means = np.asarray(means)
        K, d = means.shape
        c = X.shape[1]
        if d < c:
            self.density.set_components([], [], [], axes)
            return
        full = full_covariances(np.asarray(covs), K, d, covariance_type)
        if d > c:  # position features follow the colours: draw the colour marginal
            means, full = means[:, :c], full[:, :c, :c]
        if colours is None:
            colours = np.tile([[0.95, 0.5, 0.1]], (K, 1))
        self.density.set_components(means, full, colours, axes)


class StatusArea(QWidget):
    """What the application is doing, in words, with a bar when the work
    has a measure (strips of maps, files written) and a busy bar when not."""

    def __init__(self, session):
        super().__init__()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.label = QLabel()
        self.label.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.bar = QProgressBar()
        self.bar.setTextVisible(False)
        self.bar.setFixedWidth(120)
        self.bar.hide()
        layout.addWidget(self.label, 1)
        layout.addWidget(self.bar)
        session.events.status.connect(self.show_status)
        self.show_status(session.status_text, -1.0)

    def show_status(self, text, fraction):
        self.label.setText(text)
        self.label.setToolTip(text)
        if fraction is None:
            self.bar.setRange(0, 0)  # busy, without a measure
            self.bar.show()
        elif fraction < 0:
            self.bar.hide()
        else:
            self.bar.setRange(0, 100)
            self.bar.setValue(int(round(100 * fraction)))
            self.bar.show()
