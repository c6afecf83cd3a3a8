"""The gmmseg main window: open, steer, watch, inspect and export."""

import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QColor, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .._fileio import atomic_write
from .._version import __version__
from ..features import color_features, unique_colors
from ..io import ImageLoadError, ImageTooLargeError, available_memory, load_image, size_text
from ..params import SegmenterParams
from ..paths import resource, sample_images_dir
from ..plot import criterion_series
from ..segment import Segmenter
from .canvas import ImageCanvas, qimage_from_rgb
from .dialogs import ExportDialog
from .inspection_panel import InspectionPanel
from .render import VIEW_MODES, VIEW_TITLES, checkerboard_under, full_covariances, render
from .settings_form import SettingsForm, set_combo_tips
from .widgets import ColorBar, DensityView, PlotWidget
from .workers import AutoKWorker, ExportWorker, FitWorker, PredictWorker, WarmupWorker

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.tif *.tiff *.bmp *.webp *.gif);;All files (*)"
MAX_RECENT = 10
AXIS_NAMES = {
    "rgb": ("R", "G", "B"),
    "lab": ("L*/100", "a*/100", "b*/100"),
    "hsv": ("S cos H", "S sin H", "V"),
    "ycbcr": ("Y", "Cb", "Cr"),
    "gray": ("grey",),
}
SHORTCUTS = [
    ("Ctrl+O", "Open an image"), ("Ctrl+R", "Run the segmentation"), ("Esc", "Cancel the running fit"),
    ("Ctrl+K", "Auto K (sweep K, choose by the K criterion)"), ("Ctrl+E", "Export..."), ("Ctrl+Shift+C", "Copy the view"),
    ("1 ... 5", "View: original, labels, soft map, uncertainty, anomaly"), ("T", "Toggle the overlay"),
    ("Page Down / Page Up", "Inspection: next / previous image of the folder"),
    ("Ctrl+0", "Fit to window"), ("Ctrl+1", "Actual size (100 %)"), ("Ctrl++ / Ctrl+-", "Zoom in / out"),
    ("Mouse wheel", "Zoom around the cursor"), ("Drag", "Pan"), ("Ctrl+Q", "Quit"),
]


def _icon(name):
    try:
        return QIcon(str(resource(f"icons/{name}.svg")))
    except FileNotFoundError:
        return QIcon()


class MainWindow(QMainWindow):
    """The application window. Signals let tests wait for work to finish."""

    imageLoaded = Signal(str)
    fitFinished = Signal(bool)  # cancelled?
    fitFailed = Signal(str)
    autoKFinished = Signal(int)
    exportFinished = Signal(list)
    viewRendered = Signal(str)

    def __init__(self, settings=None):
        super().__init__()
        self.settings = settings or QSettings("gmmseg", "gmmseg")
        self.setWindowTitle("gmmseg")
        self.setWindowIcon(QIcon(str(resource("gmmseg.svg"))))
        self.image = None
        self.image_path = None
        self.base_rgb = None
        self.segmenter = None
        self.segmentation = None
        self.anomaly = None
        self.view_mode = "original"
        self.component = 0
        self.visible = None
        self.workers = set()
        self.fit_worker = None
        self.autok_worker = None
        self.ll_history = []
        self.autok_rows = []
        self.autok_criterion = SegmenterParams().k_criterion
        self._density_cache = None
        self.last_cancel_latency = None
        self._cancel_time = None
        self._fit_params = SegmenterParams()

        self.canvas = ImageCanvas(self)
        self.setCentralWidget(self.canvas)
        self.colorbar = ColorBar(self.canvas)
        self.colorbar.hide()
        self.canvas.hovered.connect(self._on_hover)
        self.setAcceptDrops(True)

        self._create_actions()
        self._create_menus()
        self._create_toolbar()
        self._create_docks()
        self._create_status_bar()
        self._read_settings()
        self._update_enabled()
        self._start_warmup()

    # ------------------------------------------------------------------
    # construction
    def _create_actions(self):
        def action(text, slot, shortcut=None, icon=None, tip=None, checkable=False):
            a = QAction(text, self)
            if shortcut:
                a.setShortcut(QKeySequence(shortcut))
            if icon:
                a.setIcon(_icon(icon))
            if tip:
                a.setStatusTip(tip)
                a.setToolTip(tip)
            a.setCheckable(checkable)
            a.triggered.connect(slot)
            return a

        self.act_open = action("&Open...", self.open_dialog, QKeySequence.StandardKey.Open, "open", "Open an image (Ctrl+O)")
        self.act_save_model = action("&Save Model...", self.save_model_dialog, None, None, "Save the fitted model as JSON")
        self.act_load_model = action("&Load Model...", self.load_model_dialog, None, None, "Apply a saved model to the current image")
        self.act_export = action("&Export...", self.export_dialog, "Ctrl+E", "export", "Write label maps, masks and probability maps")
        self.act_save_view = action("Save &View As Image...", self.save_view_dialog, None, None, "Save what the canvas shows as a PNG")
        self.act_copy_view = action("&Copy View", self.copy_view, "Ctrl+Shift+C", None, "Copy the current view to the clipboard")
        self.act_quit = action("&Quit", self.close, QKeySequence.StandardKey.Quit)
        self.act_run = action("&Run", self.run_fit, "Ctrl+R", "run", "Fit the mixture and segment the image (Ctrl+R)")
        self.act_cancel = action("&Cancel", self.cancel_work, "Esc", "cancel", "Stop the running fit (Esc)")
        self.act_autok = action("&Auto K", self.run_auto_k, "Ctrl+K", "autok", "Sweep K and choose it by the K criterion (Ctrl+K)")
        self.act_fit = action("&Fit to Window", self.canvas.fit_to_window, "Ctrl+0", "fit", "Fit the image to the window")
        self.act_100 = action("&Actual Size", self.canvas.actual_size, "Ctrl+1", None, "Show the image at 100 %")
        self.act_zoom_in = action("Zoom &In", lambda: self.canvas.zoom_by(1.25), QKeySequence.StandardKey.ZoomIn)
        self.act_zoom_out = action("Zoom &Out", lambda: self.canvas.zoom_by(0.8), QKeySequence.StandardKey.ZoomOut)
        self.act_overlay = action("Show &Overlay", self._on_overlay_toggled, "T", None, "Toggle the label/anomaly overlay (T)", checkable=True)
        self.act_overlay.setChecked(True)
        self.act_shortcuts = action("&Keyboard Shortcuts", self.show_shortcuts)
        self.act_about = action("&About gmmseg", self.show_about)
        self.view_actions = {}
        for i, mode in enumerate(VIEW_MODES):
            a = action(VIEW_TITLES[mode], lambda checked=False, m=mode: self.set_view_mode(m), str(i + 1), None,
                       f"Show the {VIEW_TITLES[mode].lower()} ({i + 1})", checkable=True)
            self.view_actions[mode] = a
        self.view_actions["original"].setChecked(True)

    def _create_menus(self):
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addAction(self.act_open)
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.sample_menu = file_menu.addMenu("Open &Sample")
        folder = sample_images_dir()
        samples = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif")) if folder else []
        for path in samples:
            a = self.sample_menu.addAction(path.name)
            a.triggered.connect(lambda checked=False, p=path: self.open_image(p))
        self.sample_menu.setEnabled(bool(samples))
        file_menu.addSeparator()
        file_menu.addAction(self.act_save_model)
        file_menu.addAction(self.act_load_model)
        file_menu.addSeparator()
        file_menu.addAction(self.act_export)
        file_menu.addAction(self.act_save_view)
        file_menu.addAction(self.act_copy_view)
        file_menu.addSeparator()
        file_menu.addAction(self.act_quit)
        view_menu = bar.addMenu("&View")
        for a in self.view_actions.values():
            view_menu.addAction(a)
        view_menu.addSeparator()
        view_menu.addAction(self.act_overlay)
        view_menu.addSeparator()
        for a in (self.act_fit, self.act_100, self.act_zoom_in, self.act_zoom_out):
            view_menu.addAction(a)
        self.docks_menu = view_menu.addMenu("&Panels")
        seg_menu = bar.addMenu("&Segment")
        for a in (self.act_run, self.act_cancel, self.act_autok):
            seg_menu.addAction(a)
        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self.act_shortcuts)
        help_menu.addAction(self.act_about)

    def _create_toolbar(self):
        tb = self.addToolBar("Main")
        tb.setObjectName("toolbar_main")
        tb.setIconSize(QSize(20, 20))
        for a in (self.act_open, self.act_run, self.act_cancel, self.act_autok, self.act_export):
            tb.addAction(a)
        tb.addSeparator()
        tb.addWidget(QLabel(" View: "))
        self.view_combo = QComboBox()
        for mode in VIEW_MODES:
            self.view_combo.addItem(VIEW_TITLES[mode], mode)
        self.view_combo.addItem("Inspection", "inspection")  # shown once an inspection ran
        self.view_combo.setToolTip("What the canvas shows (keys 1-5)")
        self.view_combo.currentIndexChanged.connect(lambda i: self.set_view_mode(self.view_combo.itemData(i)))
        tb.addWidget(self.view_combo)
        tb.addWidget(QLabel("  Opacity: "))
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(60)
        self.opacity_slider.setFixedWidth(110)
        self.opacity_slider.setToolTip("Opacity of the label and anomaly overlays")
        self.opacity_slider.valueChanged.connect(lambda v: self.refresh_view())
        tb.addWidget(self.opacity_slider)
        tb.addAction(self.act_overlay)
        tb.addSeparator()
        tb.addAction(self.act_fit)

    def _dock(self, title, widget, area, name):
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        self.docks_menu.addAction(dock.toggleViewAction())
        return dock

    def _create_docks(self):
        # Model controls: one widget per setting, from the settings table
        self.model_panel = SettingsForm(SegmenterParams)
        w = self.model_panel.widgets
        # Names the rest of the window (and its tests) use for the main controls.
        self.k_spin, self.cov_combo, self.space_combo = w["n_components"], w["covariance_type"], w["color_space"]
        self.spatial_spin, self.smooth_spin, self.iter_spin = w["spatial_weight"], w["smoothing"], w["max_iter"]
        self.tol_spin, self.init_spin, self.seed_spin = w["tol"], w["n_init"], w["random_state"]
        set_combo_tips(self.cov_combo, {"full": "any ellipsoid per component", "tied": "one shared ellipsoid",
                                        "diag": "axis-aligned ellipsoids", "spherical": "round blobs"})
        controls = self.model_panel
        form = self.model_panel.form
        buttons = QHBoxLayout()
        self.run_button = QPushButton(_icon("run"), "Run")
        self.run_button.clicked.connect(self.run_fit)
        self.cancel_button = QPushButton(_icon("cancel"), "Cancel")
        self.cancel_button.clicked.connect(self.cancel_work)
        self.autok_button = QPushButton(_icon("autok"), "Auto K")
        self.autok_button.clicked.connect(self.run_auto_k)
        for b in (self.run_button, self.cancel_button, self.autok_button):
            buttons.addWidget(b)
        form.addRow(buttons)
        self.dock_controls = self._dock("Model", controls, Qt.DockWidgetArea.LeftDockWidgetArea, "dock_model")

        # Convergence
        self.ll_plot = PlotWidget("log-likelihood per pixel", "iteration")
        self.dock_conv = self._dock("Convergence", self.ll_plot, Qt.DockWidgetArea.LeftDockWidgetArea, "dock_convergence")

        # Model selection
        self.bic_plot = PlotWidget("K criterion (click a point to pick K)", "K")
        self.bic_plot.pointClicked.connect(lambda k: self.k_spin.setValue(int(round(k))))
        self.dock_bic = self._dock("Model selection", self.bic_plot, Qt.DockWidgetArea.LeftDockWidgetArea, "dock_bic")

        # Components
        self.table = QTableWidget(0, 6)
        self.table.setHorizontalHeaderLabels(["", "Name", "Weight", "Pixels", "Area %", "Show"])
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.itemSelectionChanged.connect(self._on_component_selected)
        self.table.itemChanged.connect(self._on_component_edited)
        self.dock_components = self._dock("Components", self.table, Qt.DockWidgetArea.RightDockWidgetArea, "dock_components")

        # Anomaly
        anomaly = QWidget()
        v = QVBoxLayout(anomaly)
        row = QHBoxLayout()
        row.addWidget(QLabel("Flag the least likely"))
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0, 200)  # 0.0 % .. 20.0 % in 0.1 % steps
        self.threshold_slider.setValue(10)
        self.threshold_slider.setToolTip("Percentile of this image's own log-likelihoods below which pixels are flagged")
        self.threshold_slider.valueChanged.connect(self._on_threshold_changed)
        row.addWidget(self.threshold_slider)
        self.threshold_label = QLabel("1.0 %")
        self.threshold_label.setMinimumWidth(150)
        row.addWidget(self.threshold_label)
        v.addLayout(row)
        self.hist_plot = PlotWidget("per-pixel log-likelihood", "log-likelihood")
        v.addWidget(self.hist_plot)
        self.dock_anomaly = self._dock("Anomaly", anomaly, Qt.DockWidgetArea.RightDockWidgetArea, "dock_anomaly")

        # Colour space
        space = QWidget()
        v = QVBoxLayout(space)
        self.axes_combo = QComboBox()
        self.axes_combo.setToolTip("The two feature axes of the density plot")
        self.axes_combo.currentIndexChanged.connect(lambda i: self._update_density(recompute=True))
        v.addWidget(self.axes_combo)
        self.density = DensityView()
        v.addWidget(self.density)
        self.dock_space = self._dock("Colour space", space, Qt.DockWidgetArea.RightDockWidgetArea, "dock_space")
        self.tabifyDockWidget(self.dock_anomaly, self.dock_space)
        self.tabifyDockWidget(self.dock_conv, self.dock_bic)
        self.dock_conv.raise_()
        self.dock_anomaly.raise_()
        self.space_combo.currentTextChanged.connect(self._fill_axes_combo)
        self._fill_axes_combo()

        # Inspection
        self.inspection = InspectionPanel(self)
        self.dock_inspection = self._dock("Inspection", self.inspection.widget, Qt.DockWidgetArea.RightDockWidgetArea,
                                          "dock_inspection")
        self.tabifyDockWidget(self.dock_components, self.dock_inspection)
        self.dock_components.raise_()

    def _create_status_bar(self):
        sb = self.statusBar()
        self.hover_label = QLabel()
        sb.addWidget(self.hover_label, 1)
        self.progress_label = QLabel()
        sb.addPermanentWidget(self.progress_label)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(200)
        self.progress.setTextVisible(True)
        self.progress.hide()
        sb.addPermanentWidget(self.progress)

    # ------------------------------------------------------------------
    # settings
    def _read_settings(self):
        s = self.settings
        geometry = s.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1400, 900)
        state = s.value("window/state")
        if state is not None:
            self.restoreState(state)
        self.recent = [p for p in (s.value("recent", []) or []) if isinstance(p, str)]
        self._migrate_settings(s)
        self.model_panel.restore(s, "model/")
        self.inspection.settings_form.restore(s, "inspection/")
        self._update_recent_menu()

    # Keys of releases before the settings table, read once so an upgrade keeps
    # the user's Model panel.
    _OLD_KEYS = {"k": "n_components", "covariance": "covariance_type", "color_space": "color_space",
                 "spatial": "spatial_weight", "smoothing": "smoothing", "max_iter": "max_iter", "tol": "tol",
                 "n_init": "n_init", "seed": "random_state"}

    def _migrate_settings(self, s):
        for old, new in self._OLD_KEYS.items():
            value = s.value(f"params/{old}")
            if value is not None and s.value(f"model/{new}") is None:
                s.setValue(f"model/{new}", value)
            s.remove(f"params/{old}")

    def _write_settings(self):
        s = self.settings
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.setValue("recent", self.recent)
        self.model_panel.save(s, "model/")
        self.inspection.settings_form.save(s, "inspection/")
        s.sync()

    def _last_dir(self, key):
        return str(self.settings.value(f"dirs/{key}", str(Path.home())))

    def _remember_dir(self, key, path):
        self.settings.setValue(f"dirs/{key}", str(Path(path).parent if Path(path).suffix else path))

    def _update_recent_menu(self):
        self.recent_menu.clear()
        for path in self.recent:
            a = self.recent_menu.addAction(path)
            a.triggered.connect(lambda checked=False, p=path: self.open_image(p))
        self.recent_menu.setEnabled(bool(self.recent))

    # ------------------------------------------------------------------
    # opening
    def open_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self, "Open image", self._last_dir("open"), IMAGE_FILTER)
        if path:
            self.open_image(path)

    def open_image(self, path):
        """Load an image; on failure show why and keep the current work."""
        if self.fit_worker is not None or self.autok_worker is not None:
            self.cancel_work()
            self._wait_workers()
        try:
            try:
                image = load_image(path)
            except ImageTooLargeError as exc:
                # Larger than the memory available can segment (by the
                # estimate): the person decides, knowing what it needs.
                available = available_memory()
                text = (f"{Path(path).name} is {exc.width} x {exc.height} pixels "
                        f"({exc.width * exc.height / 1e6:.1f} megapixels). Segmenting it needs about "
                        f"{size_text(exc.bytes_needed)} of memory"
                        + (f", and {size_text(available)} is available." if available is not None else "."))
                answer = QMessageBox.question(
                    self, "Very large image", f"{text}\n\nOpen it anyway?",
                    QMessageBox.StandardButton.Open | QMessageBox.StandardButton.Cancel,
                    QMessageBox.StandardButton.Cancel)
                if answer != QMessageBox.StandardButton.Open:
                    return False
                image = load_image(path, max_pixels=exc.width * exc.height)
        except (ImageLoadError, OSError, ValueError) as exc:
            QMessageBox.critical(self, "Cannot open image", str(exc))
            return False
        self.image = image
        self.image_path = Path(path)
        self.base_rgb = checkerboard_under(image.to_uint8(), image.mask)
        self.segmenter = None
        self.segmentation = None
        self.anomaly = None
        self.visible = None
        self.inspection.clear_result()
        self.ll_history = []
        self.ll_plot.clear()
        self.hist_plot.clear()
        self.table.setRowCount(0)
        self._density_cache = None
        self.set_view_mode("original", render_now=False)
        self.canvas.set_image(qimage_from_rgb(self.base_rgb), reset_view=True)
        # The density plot is not needed to see the image: draw it just after.
        QTimer.singleShot(0, lambda: self._update_density(recompute=True))
        self.setWindowTitle(f"{self.image_path.name} - gmmseg")
        path = str(Path(path).resolve())
        self.recent = [path] + [p for p in self.recent if p != path]
        self.recent = self.recent[:MAX_RECENT]
        self._update_recent_menu()
        self._remember_dir("open", path)
        notes = f" ({'; '.join(image.notes)})" if image.notes else ""
        self.statusBar().showMessage(f"{image.width} x {image.height}, {image.mode}{notes}", 5000)
        self._update_enabled()
        self.imageLoaded.emit(path)
        return True

    def dragEnterEvent(self, event):
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event):
        urls = [u for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            self.open_image(urls[0].toLocalFile())
            event.acceptProposedAction()

    # ------------------------------------------------------------------
    # fitting
    def current_params(self):
        """The Model panel's settings (a :class:`gmmseg.SegmenterParams`)."""
        return self.model_panel.params()

    def _track(self, worker):
        self.workers.add(worker)
        worker.finished.connect(lambda w=worker: self._forget(w))
        worker.failed.connect(self._on_worker_failed)
        return worker

    def _forget(self, worker):
        self.workers.discard(worker)
        worker.deleteLater()
        self._update_enabled()

    def _wait_workers(self, timeout_ms=30000):
        for w in list(self.workers):
            w.wait(timeout_ms)

    def run_fit(self):
        if self.image is None or self.fit_worker is not None:
            return
        self.ll_history = []
        self.ll_plot.clear()
        self._fit_params = self.current_params()
        worker = FitWorker(self.image, self._fit_params, self.base_rgb, self.opacity_slider.value() / 100.0)
        worker.progress.connect(self._on_fit_progress)
        worker.preview.connect(self._on_fit_preview)
        worker.stopped.connect(self._on_fit_stopped)
        worker.finished_fit.connect(self._on_fit_finished)
        self.fit_worker = self._track(worker)
        worker.finished.connect(lambda w=worker: self._clear_fit_worker(w))
        self.progress.setRange(0, self.iter_spin.value())
        self.progress.setValue(0)
        self.progress.setFormat("initialising...")
        self.progress.show()
        self.progress_label.setText("fitting...")
        self._cancel_time = None
        worker.start()
        self._update_enabled()

    def _clear_fit_worker(self, worker):
        if self.fit_worker is worker:
            self.fit_worker = None
            self.progress.hide()
        self._update_enabled()

    def cancel_work(self):
        if self.fit_worker is not None:
            self._cancel_time = time.perf_counter()
            self.fit_worker.cancel()
            self.progress_label.setText("cancelling...")
        if self.autok_worker is not None:
            self.autok_worker.cancel()

    def _on_fit_progress(self, p):
        spatial = p.get("phase") == "spatial"
        if p["iteration"] == 1:
            # The spatial prior's EM has its own objective: a new curve, named.
            self.ll_history = []
            self.ll_plot.title = "mean-field objective per pixel (spatial fit)" if spatial else "log-likelihood per pixel"
        self.ll_history.append(p["lower_bound"])
        self.progress.setValue(min(p["iteration"], self.progress.maximum()))
        self.progress.setFormat(f"{'spatial ' if spatial else ''}iteration {p['iteration']}  {p['lower_bound']:.4f}")
        xs = np.arange(1, len(self.ll_history) + 1)
        self.ll_plot.set_series([("", xs, self.ll_history, QColor(31, 119, 180), "line")])
        self._show_components_live(p)

    def _on_fit_preview(self, preview):
        qimage, size = preview
        if self.view_mode in ("labels", "original") and self.fit_worker is not None:
            self.canvas.set_image(qimage, logical_size=size)

    def _on_fit_stopped(self):
        if self._cancel_time is not None:
            self.last_cancel_latency = time.perf_counter() - self._cancel_time
        self.progress_label.setText("stopped; finishing the maps...")

    def _on_fit_finished(self, segmenter, segmentation, cancelled):
        # The worker's run() ends right after this signal: accept a new Run now.
        self.fit_worker = None
        self.progress.hide()
        self.segmenter = segmenter
        self.segmentation = segmentation
        self.visible = [True] * segmentation.n_components
        self.component = min(self.component, segmentation.n_components - 1)
        gm = segmenter.gmm_
        state = "stopped" if cancelled else ("converged" if gm.converged_ else "not converged")
        self.progress_label.setText(f"{state} after {gm.n_iter_} iterations, ll {gm.lower_bound_:.4f}")
        self._fill_component_table()
        self._update_anomaly()
        if self.view_mode == "original":
            self.set_view_mode("labels", render_now=False)
        self.refresh_view()
        self._update_density()
        self._update_enabled()
        self.fitFinished.emit(cancelled)

    def _on_worker_failed(self, message):
        self.progress_label.setText("failed")
        QMessageBox.warning(self, "gmmseg", message)
        self.fitFailed.emit(message)

    # ------------------------------------------------------------------
    # model files
    def save_model_dialog(self):
        if self.segmenter is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save model", str(Path(self._last_dir("model")) / "model.json"), "gmmseg model (*.json)")
        if not path:
            return
        # The file dialog already asked about overwriting.
        try:
            self.segmenter.rename_components(self.segmentation.names)
            self.segmenter.save(path, overwrite=True)
        except (OSError, ValueError) as exc:
            QMessageBox.critical(self, "Cannot save model", str(exc))
            return
        self._remember_dir("model", path)
        self.statusBar().showMessage(f"model saved to {path}", 5000)

    def load_model_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self, "Load model", self._last_dir("model"), "gmmseg model (*.json);;All files (*)")
        if path:
            self.load_model(path)

    def load_model(self, path):
        try:
            segmenter = Segmenter.load(path)
        except (OSError, ValueError) as exc:
            QMessageBox.critical(self, "Cannot load model", str(exc))
            return False
        self._remember_dir("model", path)
        self._apply_params(segmenter)
        if self.image is None:
            self.segmenter = segmenter
            return True
        worker = PredictWorker(segmenter, self.image)
        worker.finished_predict.connect(lambda s, r: self._on_fit_finished(s, r, False))
        self._track(worker).start()
        return True

    def _apply_params(self, segmenter):
        """Show a (loaded) model's settings in the Model panel."""
        unshown = self.model_panel.set_values(segmenter.params)
        if unshown:
            values = ", ".join(f"{name}={getattr(segmenter.params, name)!r}" for name in unshown)
            self.statusBar().showMessage(
                f"the model's {values} cannot be shown in the Model panel; a new Run uses the panel's values", 15000)

    # ------------------------------------------------------------------
    # auto K
    def run_auto_k(self):
        if self.image is None or self.autok_worker is not None:
            return
        self.autok_rows = []
        self.bic_plot.clear()
        self.dock_bic.show()
        self.dock_bic.raise_()
        k_max = max(8, self.k_spin.value() + 2)
        params = self.current_params()
        self.autok_criterion = params.k_criterion  # the sweep's, whatever the panel says later
        worker = AutoKWorker(self.image, range(1, k_max + 1), params)
        worker.row.connect(self._on_autok_row)
        worker.finished_sweep.connect(self._on_autok_finished)
        worker.finished.connect(lambda w=worker: self._clear_autok_worker(w))
        self.autok_worker = self._track(worker)
        self.progress_label.setText("Auto K: sweeping...")
        worker.start()
        self._update_enabled()

    def _clear_autok_worker(self, worker):
        if self.autok_worker is worker:
            self.autok_worker = None
        self._update_enabled()

    def _plot_autok(self, best=None):
        ks = [r["k"] for r in self.autok_rows]
        series = criterion_series(self.autok_criterion)
        self.bic_plot.set_series([
            (label, ks, [r[key] for r in self.autok_rows], QColor(*colour), "line") for key, label, colour in series
        ], clickable=True)
        if best is not None:
            row = next(r for r in self.autok_rows if r["k"] == best)
            self.bic_plot.set_marker(best, row[self.autok_criterion.replace("-", "_")])

    def _on_autok_row(self, row):
        self.autok_rows.append(row)
        self._plot_autok()
        self.progress_label.setText(f"Auto K: K = {row['k']} done")

    def _on_autok_finished(self, result):
        self.autok_worker = None
        self._plot_autok(result.best_k)
        self.k_spin.setValue(result.best_k)
        self.progress_label.setText(f"Auto K: {result.summary()} (click a point to choose another)")
        self.autoKFinished.emit(result.best_k)

    # ------------------------------------------------------------------
    # views
    def set_view_mode(self, mode, render_now=True):
        """Show one of VIEW_MODES, or "inspection" (the inspection overlay)."""
        if mode not in VIEW_MODES and mode != "inspection":
            return
        self.view_mode = mode
        for m, a in self.view_actions.items():
            a.setChecked(m == mode)
        index = self.view_combo.findData(mode)
        if index >= 0 and self.view_combo.currentIndex() != index:
            self.view_combo.blockSignals(True)
            self.view_combo.setCurrentIndex(index)
            self.view_combo.blockSignals(False)
        if render_now:
            self.refresh_view()

    def _on_overlay_toggled(self):
        self.refresh_view()

    def current_rgb(self):
        if self.base_rgb is None:
            return None
        if self.view_mode == "inspection":
            return self.inspection.overlay_rgb(self.base_rgb)
        return render(self.view_mode, self.base_rgb, self.segmentation, component=self.component,
                      opacity=self.opacity_slider.value() / 100.0, overlay=self.act_overlay.isChecked(),
                      visible=self.visible, anomaly=self.anomaly)

    def refresh_view(self):
        rgb = self.current_rgb()
        if rgb is None:
            return
        self.canvas.set_image(qimage_from_rgb(rgb))
        colour_mode = self.view_mode in ("soft", "uncertainty") and self.segmentation is not None
        self.colorbar.setVisible(colour_mode)
        if colour_mode:
            name = self.segmentation.names[self.component] if self.view_mode == "soft" else "uncertainty"
            self.colorbar.set_label(name if self.view_mode == "uncertainty" else f"P({name})")
            self._place_colorbar()
        self.viewRendered.emit(self.view_mode)

    def _place_colorbar(self):
        self.colorbar.move(self.canvas.width() - self.colorbar.width() - 12, self.canvas.height() - self.colorbar.height() - 12)
        self.colorbar.raise_()

    def resizeEvent(self, event):
        super().resizeEvent(event)
        self._place_colorbar()

    def _on_hover(self, x, y):
        if x < 0 or self.image is None:
            self.hover_label.setText("")
            return
        parts = [f"x {x}, y {y}"]
        rgb = self.image.rgb()[y, x]
        if self.image.is_gray:
            parts.append(f"grey {self.image.pixels[y, x, 0] * 255:.0f}")
        else:
            parts.append("RGB " + " ".join(f"{v * 255:.0f}" for v in rgb))
        if not self.image.mask[y, x]:
            parts.append("masked out")
        elif self.segmentation is not None:
            seg = self.segmentation
            k = int(seg.labels[y, x])
            parts.append(f"label {k} ({seg.names[k]})")
            probs = seg.probabilities[y, x]
            parts.append("P " + " ".join(f"{v:.2f}" for v in probs[:12]) + (" ..." if len(probs) > 12 else ""))
            parts.append(f"log-lik {seg.log_likelihood[y, x]:.2f}")
        self.hover_label.setText("   ".join(parts))

    # ------------------------------------------------------------------
    # components
    def _fill_component_table(self):
        seg = self.segmentation
        self.table.blockSignals(True)
        self.table.setRowCount(seg.n_components)
        for row, stats in enumerate(seg.component_stats()):
            swatch = QTableWidgetItem()
            color = QColor(*[int(round(c * 255)) for c in stats["color"]])
            swatch.setBackground(color)
            swatch.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            swatch.setToolTip(color.name())
            name = QTableWidgetItem(stats["name"])
            name.setToolTip("Double-click to rename")
            cells = [swatch, name, QTableWidgetItem(f"{stats['weight']:.3f}"), QTableWidgetItem(f"{stats['pixel_count']:,}"),
                     QTableWidgetItem(f"{100 * stats['area_fraction']:.1f}")]
            for col, item in enumerate(cells):
                if col >= 2:
                    item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, col, item)
            show = QTableWidgetItem()
            show.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsSelectable)
            show.setCheckState(Qt.CheckState.Checked if self.visible[row] else Qt.CheckState.Unchecked)
            self.table.setItem(row, 5, show)
        self.table.resizeColumnsToContents()
        self.table.setColumnWidth(0, 26)
        self.table.blockSignals(False)

    def _show_components_live(self, p):
        """Weights and colours-to-be while fitting (ellipses in the density)."""
        self._update_density(live=p)

    def _on_component_selected(self):
        rows = {i.row() for i in self.table.selectedItems()}
        if rows and self.segmentation is not None:
            self.component = min(rows)
            self.set_view_mode("soft")

    def _on_component_edited(self, item):
        if self.segmentation is None:
            return
        row = item.row()
        if item.column() == 1:
            self.segmentation.names[row] = item.text().strip() or f"Component {row}"
        elif item.column() == 5:
            self.visible[row] = item.checkState() == Qt.CheckState.Checked
            self.refresh_view()

    # ------------------------------------------------------------------
    # anomaly
    def percentile(self):
        return self.threshold_slider.value() / 10.0

    def _on_threshold_changed(self, value):
        self._update_anomaly()
        if self.view_mode == "anomaly":
            self.refresh_view()

    def _update_anomaly(self):
        seg = self.segmentation
        if seg is None:
            self.threshold_label.setText(f"{self.percentile():.1f} %")
            return
        threshold = seg.anomaly_threshold(self.percentile())
        self.anomaly = seg.anomaly_mask(threshold=threshold)
        flagged = self.anomaly.sum() / max(int(seg.mask.sum()), 1)
        self.threshold_label.setText(f"{self.percentile():.1f} %: {100 * flagged:.2f} % flagged (ll < {threshold:.2f})")
        values = seg.log_likelihood[seg.mask]
        if values.size:
            lo, hi = np.percentile(values, [0.05, 100])
            counts, edges = np.histogram(values, bins=60, range=(lo, hi))
            centres = (edges[:-1] + edges[1:]) / 2
            self.hist_plot.set_series([("", centres, np.log1p(counts), QColor(120, 140, 170), "bars")])
            self.hist_plot.ylabel = "log(1 + count)"
            self.hist_plot.set_vline(threshold)

    # ------------------------------------------------------------------
    # colour-space view
    def _fill_axes_combo(self):
        names = AXIS_NAMES[self.space_combo.currentText()]
        self.axes_combo.blockSignals(True)
        self.axes_combo.clear()
        if len(names) == 1:
            self.axes_combo.addItem(f"{names[0]} / {names[0]}", (0, 0))
        else:
            for i in range(len(names)):
                for j in range(i + 1, len(names)):
                    self.axes_combo.addItem(f"{names[i]} / {names[j]}", (i, j))
            if self.space_combo.currentText() == "lab":
                self.axes_combo.setCurrentIndex(2)  # a*/b*: the chroma plane
        self.axes_combo.blockSignals(False)
        self._density_cache = None
        self._update_density(recompute=True)

    def _density_features(self):
        """Colour features of (a sample of) the image's unique colours."""
        space = self.space_combo.currentText()
        if self._density_cache is not None and self._density_cache[0] == space:
            return self._density_cache[1:]
        colors = self.image.pixels[self.image.mask]
        if colors.shape[0] > 400_000:  # an even sample is plenty for a 128 x 128 density
            colors = colors[:: colors.shape[0] // 400_000]
        unique, counts, _ = unique_colors(colors, self.image.bit_depth)
        X = color_features(unique, space)
        self._density_cache = (space, X, counts)
        return X, counts

    def _update_density(self, recompute=False, live=None):
        if self.image is None:
            self.density.clear()
            return
        axes = self.axes_combo.currentData() or (0, 0)
        names = AXIS_NAMES[self.space_combo.currentText()]
        X, counts = self._density_features()
        if X.shape[1] == 1:
            axes = (0, 0)
        if recompute or self.density._density is None:
            self.density.set_points(X, counts, axes, (names[min(axes[0], len(names) - 1)], names[min(axes[1], len(names) - 1)]))
        source = None
        covariance_type = None
        if live is not None:
            features = self._fit_params.features
            if features.color_space != self.space_combo.currentText() or not features.uses_color:
                return  # the plot shows another colour space than the running fit, or it has no colour
            source = (live["means"], live["covariances"], None)
            covariance_type = self._fit_params.covariance_type
        elif (self.segmenter is not None and self.segmenter.features.uses_color
              and self.segmenter.features.color_space == self.space_combo.currentText()):
            gm = self.segmenter.gmm_
            source = (gm.means_, gm.covariances_, self.segmenter.component_colors_)
            covariance_type = self.segmenter.covariance_type
        if source is None:
            self.density.set_components([], [], [], axes)
            return
        means, covs, colours = source
        K, d = np.asarray(means).shape
        full = full_covariances(np.asarray(covs), K, d, covariance_type)
        c = X.shape[1]
        if d > c:  # position features follow the colours: draw the colour marginal
            means, full = np.asarray(means)[:, :c], full[:, :c, :c]
        if colours is None:
            colours = np.tile([[0.95, 0.5, 0.1]], (K, 1))
        self.density.set_components(np.asarray(means), full, colours, axes)

    # ------------------------------------------------------------------
    # export, clipboard, view image
    def export_dialog(self):
        if self.segmentation is None:
            return
        folder = Path(self._last_dir("export")) / (self.image_path.stem if self.image_path else "segmentation")
        dialog = ExportDialog(self, folder, self.segmentation.n_components)
        if dialog.exec():
            self.start_export(dialog.folder(), dialog.outputs(), dialog.overwrite)

    def start_export(self, folder, outputs, overwrite):
        worker = ExportWorker(self.segmentation, self.image, folder, tuple(outputs), overwrite, self.percentile(),
                              self.segmenter)
        worker.step.connect(lambda done, total, name: (self.progress.show(), self.progress.setRange(0, total),
                                                       self.progress.setValue(done), self.progress.setFormat(f"writing {name}")))
        worker.finished_export.connect(self._on_export_finished)
        self._remember_dir("export", str(Path(folder).parent) + "/")
        self._track(worker).start()

    def _on_export_finished(self, written):
        self.progress.hide()
        folder = written[0].parent if written else ""
        self.statusBar().showMessage(f"exported {len(written)} files to {folder}", 8000)
        self.exportFinished.emit([str(p) for p in written])

    def copy_view(self):
        pixmap = self.canvas.current_pixmap()
        if not pixmap.isNull():
            QApplication.clipboard().setPixmap(pixmap)
            self.statusBar().showMessage("view copied to the clipboard", 3000)

    def save_view_dialog(self):
        if not self.canvas.has_image():
            return
        stem = self.image_path.stem if self.image_path else "view"
        path, _ = QFileDialog.getSaveFileName(self, "Save view", str(Path(self._last_dir("view")) / f"{stem}_{self.view_mode}.png"), "PNG image (*.png)")
        if path:
            self.save_view(path)

    def save_view(self, path):
        image = self.canvas.current_pixmap().toImage()

        def write(tmp):
            if not image.save(tmp, "PNG"):
                raise OSError(f"Qt could not write a PNG to {path}")

        try:
            atomic_write(path, write, overwrite=True)
        except OSError as exc:
            QMessageBox.critical(self, "Cannot save view", str(exc))
            return False
        self._remember_dir("view", path)
        return True

    # ------------------------------------------------------------------
    # help
    def show_shortcuts(self):
        rows = "".join(f"<tr><td><b>{k}</b></td><td>&nbsp;&nbsp;{v}</td></tr>" for k, v in SHORTCUTS)
        QMessageBox.information(self, "Keyboard shortcuts", f"<table>{rows}</table>")

    def show_about(self):
        QMessageBox.about(
            self, "About gmmseg",
            f"<h3>gmmseg {__version__}</h3><p>Image segmentation with Gaussian mixture models fitted by a "
            "Numba EM engine.</p><p>BSD-3-Clause licence.</p>",
        )

    # ------------------------------------------------------------------
    def _update_enabled(self):
        has_image = self.image is not None
        has_seg = self.segmentation is not None
        fitting = self.fit_worker is not None
        sweeping = self.autok_worker is not None
        self.act_run.setEnabled(has_image and not fitting)
        self.run_button.setEnabled(has_image and not fitting)
        self.act_cancel.setEnabled(fitting or sweeping)
        self.cancel_button.setEnabled(fitting or sweeping)
        self.act_autok.setEnabled(has_image and not sweeping)
        self.autok_button.setEnabled(has_image and not sweeping)
        for a in (self.act_export, self.act_save_model):
            a.setEnabled(has_seg)
        self.act_copy_view.setEnabled(has_image)
        self.act_save_view.setEnabled(has_image)

    def _start_warmup(self):
        worker = WarmupWorker()
        worker.warmed.connect(lambda s: self.statusBar().showMessage(f"kernels ready ({s:.1f} s)", 3000))
        self._track(worker).start()

    def closeEvent(self, event):
        for w in list(self.workers):
            w.cancel()
        self._wait_workers()
        self._write_settings()
        super().closeEvent(event)


