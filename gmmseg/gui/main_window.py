"""The gmmseg main window: assembles the session, the canvas and the panels,
and owns the file dialogs. The state and the work are the session's
(:mod:`gmmseg.gui.session`); the panels (:mod:`gmmseg.gui.panels`) read and
write it."""


from PySide6.QtCore import QSettings, QSize, Qt
from PySide6.QtGui import QAction, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSlider,
)

from .._version import __version__
from ..io import IMAGE_SUFFIXES
from ..paths import resource, sample_images_dir
from .canvas import ImageCanvas, qimage_for_display
from .file_actions import FileActions
from .inspection_panel import InspectionPanel
from .panels import (
    AnomalyPanel,
    ColourSpacePanel,
    ComponentsPanel,
    ConvergencePanel,
    ModelPanel,
    ModelSelectionPanel,
    ScrollingPanel,
    StatusArea,
)
from .render import VIEW_TITLES
from .session import VIEWS, Session
from .widgets import ColorBar
from .workers import QtRunner, WarmupWorker

SHORTCUTS = [
    ("Ctrl+O", "Open an image"), ("Ctrl+R", "Run the segmentation"), ("Esc", "Stop the running work"),
    ("Ctrl+K", "Auto K (sweep the K range, fit the K chosen)"), ("Ctrl+E", "Export..."), ("Ctrl+Shift+C", "Copy the view"),
    ("1 ... 6", "View: original, labels, soft map, uncertainty, anomaly, inspection"), ("T", "Toggle the overlay"),
    ("Page Down / Page Up", "Inspection: next / previous part of the folder"),
    ("Ctrl+0", "Fit to window"), ("Ctrl+1", "Actual size (100 %)"), ("Ctrl++ / Ctrl+-", "Zoom in / out"),
    ("Mouse wheel", "Zoom around the cursor"), ("Drag", "Pan"), ("Ctrl+Q", "Quit"),
]
VIEW_NAMES = {**VIEW_TITLES, "inspection": "Inspection"}
# Keys of releases before the settings table, read once so an upgrade keeps the Model panel.
_OLD_KEYS = {"k": "n_components", "covariance": "covariance_type", "color_space": "color_space",
             "spatial": "spatial_weight", "smoothing": "smoothing", "max_iter": "max_iter", "tol": "tol",
             "n_init": "n_init", "seed": "random_state"}


def _icon(name):
    try:
        return QIcon(str(resource(f"icons/{name}.svg")))
    except FileNotFoundError:
        return QIcon()


class MainWindow(QMainWindow):
    """The application window around a :class:`Session`."""

    def __init__(self, settings=None):
        super().__init__()
        self.settings = settings or QSettings("gmmseg", "gmmseg")
        self.setWindowTitle("gmmseg")
        self.setWindowIcon(QIcon(str(resource("gmmseg.svg"))))
        self.runner = QtRunner(self)
        self.session = session = Session(self.runner)
        session.convert_picture = qimage_for_display  # Qt images made in the worker that draws the view
        self.canvas = ImageCanvas(self)
        self.setCentralWidget(self.canvas)
        self.colorbar = ColorBar(self.canvas)
        self.colorbar.hide()
        self.canvas.hovered.connect(self._on_hover)
        self.setAcceptDrops(True)
        self.files = files = FileActions(self)
        # what tests and scripts call on the window
        self.open_image, self.load_model, self.save_view = files.open_image, files.load_model, files.save_view
        self._create_actions()
        self._create_menus()
        self._create_docks()
        self._create_toolbar()
        self.status = StatusArea(session)
        self.hover_label = QLabel()
        self.statusBar().addWidget(self.status, 3)
        self.statusBar().addWidget(self.hover_label, 2)
        events = session.events
        events.picture.connect(lambda picture: self.canvas.set_image(picture))
        events.preview.connect(self._on_preview)
        events.strip.connect(lambda start, stop, picture: self.canvas.add_strip(start, picture))
        events.image.connect(self._on_image)
        events.view.connect(self._on_view)
        events.message.connect(lambda title, text: QMessageBox.warning(self, title, text))
        for event in (events.busy, events.model, events.image):
            event.connect(self._update_enabled)
        self._read_settings()
        self._update_enabled()
        self._on_view()
        self.warmup = WarmupWorker(self)  # compiles the kernels while the user looks around (no message)
        self.warmup.start()

    # ------------------------------------------------------------------
    # construction
    def _action(self, text, slot, shortcut=None, icon=None, tip=None, checkable=False):
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

    def _create_actions(self):
        s, act = self.session, self._action
        self.act_open = act("&Open...", self.files.open_dialog, QKeySequence.StandardKey.Open, "open", "Open an image (Ctrl+O)")
        self.act_save_model = act("&Save Model...", self.files.save_model_dialog, None, None, "Save the shown model as JSON")
        self.act_load_model = act("&Load Model...", self.files.load_model_dialog, None, None, "Apply a saved model to the image")
        self.act_export = act("&Export...", self.files.export_dialog, "Ctrl+E", "export", "Write label maps, masks and probability maps")
        self.act_save_view = act("Save &View As Image...", self.files.save_view_dialog, None, None, "Save the view as a PNG")
        self.act_copy_view = act("&Copy View", self.files.copy_view, "Ctrl+Shift+C", None, "Copy the view to the clipboard")
        self.act_quit = act("&Quit", self.close, QKeySequence.StandardKey.Quit)
        self.act_run = act("&Run", lambda: s.run_fit(), "Ctrl+R", "run", "Fit the mixture and segment the image (Ctrl+R)")
        self.act_cancel = act("&Cancel", s.cancel, "Esc", "cancel", "Stop the running work (Esc)")
        self.act_autok = act("&Auto K", lambda: s.run_auto_k(), "Ctrl+K", "autok", "Sweep the K range, then fit the K chosen")
        self.act_maps = act("Compute &Maps", s.compute_maps, "Ctrl+M", None, "Compute the maps of a stopped fit's model")
        self.act_fit = act("&Fit to Window", self.canvas.fit_to_window, "Ctrl+0", "fit", "Fit the image to the window")
        self.act_100 = act("&Actual Size", self.canvas.actual_size, "Ctrl+1", None, "Show the image at 100 %")
        self.act_zoom_in = act("Zoom &In", lambda: self.canvas.zoom_by(1.25), QKeySequence.StandardKey.ZoomIn)
        self.act_zoom_out = act("Zoom &Out", lambda: self.canvas.zoom_by(0.8), QKeySequence.StandardKey.ZoomOut)
        self.act_overlay = act("Show &Overlay", lambda on: None, "T", None, "Toggle the overlay (T)", True)
        self.act_overlay.setChecked(True)
        self.act_next = act("&Next Part", lambda: self.files.step_part(1), "PgDown")
        self.act_previous = act("&Previous Part", lambda: self.files.step_part(-1), "PgUp")
        self.view_actions = {mode: act(VIEW_NAMES[mode], lambda checked=False, m=mode: s.set_view(m), str(i + 1),
                                       None, f"Show the {VIEW_NAMES[mode].lower()} ({i + 1})", True)
                             for i, mode in enumerate(VIEWS)}

    def _create_menus(self):
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addAction(self.act_open)
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.sample_menu = file_menu.addMenu("Open &Sample")
        folder = sample_images_dir()
        samples = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder else []
        for path in samples:
            self.sample_menu.addAction(path.name).triggered.connect(lambda checked=False, p=path: self.open_image(p))
        self.sample_menu.setEnabled(bool(samples))
        for group in ((self.act_save_model, self.act_load_model), (self.act_export, self.act_save_view,
                                                                    self.act_copy_view), (self.act_quit,)):
            file_menu.addSeparator()
            for a in group:
                file_menu.addAction(a)
        view_menu = bar.addMenu("&View")
        for a in [*self.view_actions.values(), None, self.act_overlay, None, self.act_fit, self.act_100,
                  self.act_zoom_in, self.act_zoom_out]:
            view_menu.addSeparator() if a is None else view_menu.addAction(a)
        self.docks_menu = view_menu.addMenu("&Panels")
        seg_menu = bar.addMenu("&Segment")
        for a in (self.act_run, self.act_cancel, self.act_autok, self.act_maps, self.act_next, self.act_previous):
            seg_menu.addAction(a)
        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self._action("&Keyboard Shortcuts", self.show_shortcuts))
        help_menu.addAction(self._action("&About gmmseg", self.show_about))

    def _create_toolbar(self):
        tb = self.addToolBar("Main")
        tb.setObjectName("toolbar_main")
        tb.setIconSize(QSize(20, 20))
        for a in (self.act_open, self.act_run, self.act_cancel, self.act_autok, self.act_export):
            tb.addAction(a)
        tb.addSeparator()
        tb.addWidget(QLabel(" View: "))
        self.view_combo = QComboBox()
        for mode in VIEWS:
            self.view_combo.addItem(VIEW_NAMES[mode], mode)
        self.view_combo.setToolTip("What the canvas shows (keys 1-6)")
        self.view_combo.activated.connect(lambda i: self.session.set_view(self.view_combo.itemData(i)))
        tb.addWidget(self.view_combo)
        tb.addWidget(QLabel("  Opacity: "))
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(int(self.session.opacity * 100))
        self.opacity_slider.setFixedWidth(110)
        self.opacity_slider.setToolTip("Opacity of the label and anomaly overlays")
        self.opacity_slider.valueChanged.connect(lambda v: self.session.set_opacity(v / 100.0))
        tb.addWidget(self.opacity_slider)
        # A check box, not a text-only toggle button: its state shows when it is off.
        self.overlay_check = QCheckBox("Overlay")
        self.overlay_check.setToolTip(self.act_overlay.toolTip())
        self.overlay_check.setChecked(True)
        self.overlay_check.toggled.connect(self.act_overlay.setChecked)
        self.act_overlay.toggled.connect(self.overlay_check.setChecked)
        self.act_overlay.toggled.connect(lambda on: self.session.set_overlay(on))
        tb.addWidget(self.overlay_check)
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
        s, left, right = self.session, Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea
        self.model_panel = ModelPanel(s, _icon)
        self.components = ComponentsPanel(s)
        self.convergence = ConvergencePanel(s)
        self.model_selection = ModelSelectionPanel(s)
        self.anomaly_panel = AnomalyPanel(s)
        self.colour_space = ColourSpacePanel(s)
        self.inspection = InspectionPanel(s, self.files)
        self.dock_model = self._dock("Model", self.model_panel, left, "dock_model")
        self.dock_conv = self._dock("Convergence", self.convergence, left, "dock_convergence")
        self.dock_bic = self._dock("Model selection", self.model_selection, left, "dock_bic")
        self.dock_components = self._dock("Components", self.components, right, "dock_components")
        self.dock_inspection = self._dock("Inspection", ScrollingPanel(self.inspection), right, "dock_inspection")
        self.dock_anomaly = self._dock("Anomaly", self.anomaly_panel, right, "dock_anomaly")
        self.dock_space = self._dock("Colour space", self.colour_space, right, "dock_space")
        s.events.auto_k.connect(lambda: s.k_rows and self.dock_bic.raise_())

    # ------------------------------------------------------------------
    # settings kept between sessions
    def _read_settings(self):
        st = self.settings
        geometry, state = st.value("window/geometry"), st.value("window/state")
        self.restoreGeometry(geometry) if geometry is not None else self.resize(1400, 900)
        if state is None or not self.restoreState(state):
            self._arrange_docks()
        self.files.recent = [p for p in (st.value("recent", []) or []) if isinstance(p, str)]
        for old, new in _OLD_KEYS.items():
            value = st.value(f"params/{old}")
            if value is not None and st.value(f"model/{new}") is None:
                st.setValue(f"model/{new}", value)
            st.remove(f"params/{old}")
        self.model_panel.form.restore(st, "model/")
        self.session.set_settings(self.model_panel.form.params())
        self.inspection.settings_form.restore(st, "inspection/")
        self.session.inspection_settings = self.inspection.settings_form.params(self.session.inspection_settings)
        self.inspection.model_form.restore(st, "inspection/")
        self.session.inspection_model = self.inspection.model_form.params(self.session.inspection_model)
        try:
            self.session.set_k_range(int(st.value("autok/from", 1)), int(st.value("autok/to", 8)))
        except (TypeError, ValueError):
            pass  # a damaged settings file keeps the default range
        self.files.update_recent_menu()

    def _arrange_docks(self):
        """The first-start dock layout: three tab groups, the image given the room.
        Only without a stored state: restoreState makes tab bars of its own and leaves
        those of groups made before it in the window (off the visible area, yet shown)."""
        # Qt (seen with 6.11) gives a new tab group its tab bar through a call that first
        # lays out the window; that layout meets the group without a bar, makes one, and the
        # outer call then replaces it: the first bar stays, shown, a stale copy over the docks.
        # A disabled layout does not lay out, so each group gets a single bar.
        self.layout().setEnabled(False)
        self.tabifyDockWidget(self.dock_components, self.dock_inspection)
        self.tabifyDockWidget(self.dock_anomaly, self.dock_space)
        self.tabifyDockWidget(self.dock_conv, self.dock_bic)
        self.layout().setEnabled(True)
        self.layout().invalidate()  # the tabified docks laid out at the next activation
        for dock in (self.dock_conv, self.dock_anomaly, self.dock_components):
            dock.raise_()
        self.resizeDocks([self.dock_model, self.dock_components], [330, 360], Qt.Orientation.Horizontal)
        # the Model panel's settings whole where the window is tall enough
        self.resizeDocks([self.dock_model, self.dock_conv], [self.model_panel.sizeHint().height() + 30, 220],
                         Qt.Orientation.Vertical)
        self.resizeDocks([self.dock_components, self.dock_anomaly], [560, 300], Qt.Orientation.Vertical)

    def _write_settings(self):
        st = self.settings
        st.setValue("window/geometry", self.saveGeometry())
        st.setValue("window/state", self.saveState())
        st.setValue("recent", self.files.recent)
        self.model_panel.form.save(st, "model/")
        self.inspection.settings_form.save(st, "inspection/")
        self.inspection.model_form.save(st, "inspection/")
        st.setValue("autok/from", self.session.k_range[0])
        st.setValue("autok/to", self.session.k_range[1])
        st.sync()

    # ------------------------------------------------------------------
    # images
    def _on_image(self):
        s = self.session
        self.setWindowTitle(f"{s.image_name} - gmmseg")
        self.canvas.set_image(s.base_picture, reset_view=True)

    def _on_preview(self, picture, size):
        if self.session.view in ("labels", "original"):
            self.canvas.set_image(picture, logical_size=size)

    def _on_view(self):
        s = self.session
        for mode, a in self.view_actions.items():
            a.setChecked(mode == s.view)
        self.view_combo.setCurrentIndex(self.view_combo.findData(s.view))
        colour = s.view in ("soft", "uncertainty") and s.segmentation is not None
        self.colorbar.setVisible(colour)
        if colour:
            self.colorbar.set_label("uncertainty" if s.view == "uncertainty" else f"P({s.names[s.component]})")
            self._place_colorbar()

    def _place_colorbar(self):
        self.colorbar.move(self.canvas.width() - self.colorbar.width() - 12, self.canvas.height() - self.colorbar.height() - 12)
        self.colorbar.raise_()

    def resizeEvent(self, event):
        super().resizeEvent(event)
        self._place_colorbar()

    def dragEnterEvent(self, event):
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event):
        urls = [u for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            self.files.open_image(urls[0].toLocalFile())
            event.acceptProposedAction()

    def _on_hover(self, x, y):
        self.hover_label.setText(self.session.describe_pixel(x, y) if x >= 0 else "")

    # ------------------------------------------------------------------
    def show_shortcuts(self):
        rows = "".join(f"<tr><td><b>{k}</b></td><td>&nbsp;&nbsp;{v}</td></tr>" for k, v in SHORTCUTS)
        QMessageBox.information(self, "Keyboard shortcuts", f"<table>{rows}</table>")

    def show_about(self):
        QMessageBox.about(self, "About gmmseg", f"<h3>gmmseg {__version__}</h3><p>Image segmentation with Gaussian "
                          "mixture models fitted by a Numba EM engine.</p><p>BSD-3-Clause licence.</p>")

    def _update_enabled(self):
        s = self.session
        has_image, has_maps = s.image is not None, s.segmentation is not None
        self.act_run.setEnabled(has_image and not s.is_running("fit"))
        self.act_cancel.setEnabled(s.busy)
        self.act_autok.setEnabled(has_image and not s.is_running("auto K"))
        self.act_maps.setEnabled(s.segmenter is not None and not has_maps and not s.busy)
        self.act_export.setEnabled(has_maps and not s.is_running("fit"))
        self.act_save_model.setEnabled(s.segmenter is not None and not s.is_running("fit"))
        self.act_copy_view.setEnabled(has_image)
        self.act_save_view.setEnabled(has_image)

    def closeEvent(self, event):
        self.session.cancel()
        self.runner.stop_all()
        self.warmup.wait(30000)
        self._write_settings()
        super().closeEvent(event)
