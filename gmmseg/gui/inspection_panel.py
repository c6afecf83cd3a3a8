"""The inspection mode: references, fit, step through a folder, regions."""

import math
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..export import inspection_overlay
from ..inspection import Inspector
from ..io import list_images
from ..params import InspectionParams
from .settings_form import SettingsForm
from .workers import InspectorFitWorker, ReportWorker, ScoreWorker

FAR_MIN_EXP, FAR_MAX_EXP = -6.0, -1.0  # false-alarm rate slider: 1e-6 .. 1e-1


class InspectionPanel(QObject):
    """Owns the Inspection dock and drives the window's inspection view.

    Signals let tests wait: ``fitted()`` after the references are fitted,
    ``inspected(str)`` when an image's regions are shown,
    ``reportWritten(str)`` when the report CSV is written.
    """

    fitted = Signal()
    inspected = Signal(str)
    reportWritten = Signal(str)

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.inspector = None
        self.references = []
        self.folder_images = []
        self.index = -1
        self.score = None  # calibrated score map of the shown image
        self.raw = None  # its unsmoothed score
        self.result = None
        self.widget = self._build()
        for keys, slot in (("PgDown", self.next_image), ("PgUp", self.previous_image)):
            shortcut = QShortcut(QKeySequence(keys), window)
            shortcut.activated.connect(slot)
        self._update()

    # ------------------------------------------------------------------
    def _build(self):
        w = QWidget()
        v = QVBoxLayout(w)
        row = QHBoxLayout()
        self.refs_button = QPushButton("References...")
        self.refs_button.setToolTip("Choose images of defect-free parts")
        self.refs_button.clicked.connect(self.choose_references)
        self.fit_button = QPushButton("Fit")
        self.fit_button.setToolTip("Fit the reference model and calibrate the image and pixel thresholds")
        self.fit_button.clicked.connect(self.fit)
        self.load_button = QPushButton("Load...")
        self.load_button.setToolTip("Load an inspection model saved by 'gmmseg fit' or Save")
        self.load_button.clicked.connect(self.load_dialog)
        self.save_button = QPushButton("Save...")
        self.save_button.clicked.connect(self.save_dialog)
        for b in (self.refs_button, self.fit_button, self.load_button, self.save_button):
            row.addWidget(b)
        v.addLayout(row)
        self.model_label = QLabel("No reference model yet.")
        self.model_label.setToolTip("Reference models use the Model panel's settings on colours only: "
                                    "no smoothing and no spatial weight (defects are judged pixel by pixel)")
        self.model_label.setWordWrap(True)
        v.addWidget(self.model_label)
        # Inspection settings from the settings table; the Model panel gives
        # the rest (K, covariance, colour space, iterations...) except the
        # spatial prior and positions (see fit_settings).
        self.settings_form = SettingsForm(InspectionParams, names=("auto_k", "smoothing_sigma", "min_area",
                                                                   "false_reject_rate"))
        self.settings_form.widgets["auto_k"].setChecked(False)  # by default the Model panel's K is fitted
        k_range = InspectionParams().k_range
        self.settings_form.form.labelForField(self.settings_form.widgets["auto_k"]).setText(
            f"Choose K ({k_range[0]}-{k_range[-1]})")
        self.settings_form.form.setContentsMargins(0, 0, 0, 0)
        for name in ("auto_k", "smoothing_sigma"):  # the threshold is calibrated for them
            widget = self.settings_form.widgets[name]
            widget.setToolTip(widget.toolTip() + " (takes effect at the next Fit)")
        self.settings_form.changed.connect(self._on_settings_changed)
        v.addWidget(self.settings_form)
        row = QHBoxLayout()
        row.addWidget(QLabel("False-alarm rate"))
        self.far_slider = QSlider(Qt.Orientation.Horizontal)
        self.far_slider.setRange(int(FAR_MIN_EXP * 10), int(FAR_MAX_EXP * 10))
        self.far_slider.setValue(-40)
        self.far_slider.setToolTip("Expected fraction of good pixels above the pixel threshold, over which defect "
                                   "masks grow; re-thresholds the shown image live")
        self.far_slider.valueChanged.connect(self._on_rate_changed)
        row.addWidget(self.far_slider, 1)
        self.far_label = QLabel()
        self.far_label.setMinimumWidth(70)
        row.addWidget(self.far_label)
        v.addLayout(row)
        row = QHBoxLayout()
        self.folder_button = QPushButton("Open folder...")
        self.folder_button.setToolTip("Images to inspect; step with Page Up / Page Down")
        self.folder_button.clicked.connect(self.open_folder_dialog)
        self.prev_button = QPushButton("< Prev")
        self.prev_button.clicked.connect(self.previous_image)
        self.next_button = QPushButton("Next >")
        self.next_button.clicked.connect(self.next_image)
        for b in (self.folder_button, self.prev_button, self.next_button):
            row.addWidget(b)
        v.addLayout(row)
        self.position_label = QLabel()
        v.addWidget(self.position_label)
        self.verdict_label = QLabel()
        self.verdict_label.setTextFormat(Qt.TextFormat.RichText)
        v.addWidget(self.verdict_label)
        self.regions = QTableWidget(0, 6)
        self.regions.setHorizontalHeaderLabels(["#", "Area", "x", "y", "w x h", "Max score"])
        self.regions.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.regions.verticalHeader().setVisible(False)
        self.regions.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.regions.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.regions.setToolTip("Click a region to zoom to it")
        self.regions.cellClicked.connect(lambda row, col: self.zoom_to_region(row))
        v.addWidget(self.regions, 1)
        self.report_button = QPushButton("Export report...")
        self.report_button.setToolTip("Inspect every image of the folder and write a CSV report")
        self.report_button.clicked.connect(self.report_dialog)
        v.addWidget(self.report_button)
        return w

    def _update(self):
        has_model = self.inspector is not None
        self.fit_button.setEnabled(bool(self.references))
        self.save_button.setEnabled(has_model)
        self.far_slider.setEnabled(has_model)
        self.prev_button.setEnabled(self.index > 0)
        self.next_button.setEnabled(0 <= self.index < len(self.folder_images) - 1)
        self.report_button.setEnabled(has_model and bool(self.folder_images))
        self.far_label.setText(f"{self.rate():.1e}")
        if self.folder_images and self.index >= 0:
            self.position_label.setText(f"image {self.index + 1} of {len(self.folder_images)}: {self.folder_images[self.index].name}")

    def rate(self):
        return 10 ** (self.far_slider.value() / 10.0)

    def threshold(self):
        if self.inspector is None:
            return math.inf
        return self.inspector.threshold_for(self.rate())

    # ------------------------------------------------------------------
    def choose_references(self):
        paths, _ = QFileDialog.getOpenFileNames(self.window, "Defect-free reference images",
                                                self.window._last_dir("open"), "Images (*.png *.jpg *.jpeg *.tif *.tiff *.bmp)")
        if paths:
            self.set_references(paths)

    def set_references(self, paths):
        self.references = [Path(p) for p in paths]
        self.model_label.setText(f"{len(self.references)} reference image(s) chosen; press Fit.")
        self._update()

    def fit(self):
        if not self.references:
            return
        try:
            params, inspection = self.fit_settings()
        except ValueError as exc:
            QMessageBox.critical(self.window, "Cannot fit", str(exc))
            return
        # Paths: the Inspector loads each reference when it needs it (an
        # unreadable one fails the fit with its message).
        worker = InspectorFitWorker(self.references, params, inspection)
        worker.finished_inspector.connect(self._on_fitted)
        worker.failed.connect(lambda message: self.model_label.setText(f"fit failed: {message}"))
        self.model_label.setText("fitting the reference model...")
        self.window._track(worker).start()

    def _on_settings_changed(self):
        """The minimum area and the false-reject rate apply at once to the
        model in use (the rate re-thresholds images from the calibration);
        the rest wait for the next Fit."""
        if self.inspector is None:
            return
        values = self.settings_form.values()
        changed = False
        if values["min_area"] != self.inspector.inspection.min_area:
            self.inspector.set_params(min_area=values["min_area"])
            changed = True
        if values["false_reject_rate"] != self.inspector.inspection.false_reject_rate:
            try:
                self.inspector.set_false_reject_rate(values["false_reject_rate"])
                changed = True
            except ValueError as exc:  # a model file without image scores
                self.window.statusBar().showMessage(str(exc), 8000)
        if changed:
            self._describe_model()
            if self.score is not None:
                self._rethreshold()

    def fit_settings(self):
        """What a Fit uses: the Model panel's settings without the spatial
        prior and positions (inspection models the colours of good pixels
        wherever they are, over several references; as ``gmmseg fit``) and
        this panel's inspection settings (with the slider's false-alarm rate)."""
        inspection = self.settings_form.params().replace(false_alarm_rate=self.rate())
        return self.window.current_params().replace(smoothing=0.0, spatial_weight=0.0), inspection

    def _on_fitted(self, inspector):
        self.inspector = inspector
        self._describe_model()
        self._update()
        self.fitted.emit()
        if self.window.image is not None:
            self.inspect_current()

    def _describe_model(self):
        ins = self.inspector
        K = ins.segmenter_.n_components
        how = "held-out references" if ins.held_out_ else "the reference itself (optimistic)"
        self.model_label.setText(f"K = {K} ({ins.segmenter_.covariance_type}, {ins.segmenter_.color_space}); "
                                 f"image threshold {ins.image_threshold_:.2f} for a false-reject rate of "
                                 f"{ins.false_reject_rate:g}, calibrated on {how}.")

    def load_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self.window, "Load inspection model", self.window._last_dir("model"),
                                              "gmmseg model (*.json);;All files (*)")
        if path:
            self.load(path)

    def load(self, path):
        try:
            self.inspector = Inspector.load(path)
        except (OSError, ValueError) as exc:
            QMessageBox.critical(self.window, "Cannot load inspection model", str(exc))
            return False
        self.settings_form.blockSignals(True)
        self.settings_form.set_values(self.inspector.inspection)
        self.settings_form.blockSignals(False)
        exp = np.clip(round(math.log10(self.inspector.false_alarm_rate) * 10), self.far_slider.minimum(), self.far_slider.maximum())
        self.far_slider.blockSignals(True)
        self.far_slider.setValue(int(exp))
        self.far_slider.blockSignals(False)
        self._describe_model()
        self._update()
        if self.window.image is not None:
            self.inspect_current()
        return True

    def save_dialog(self):
        path, _ = QFileDialog.getSaveFileName(self.window, "Save inspection model",
                                              str(Path(self.window._last_dir("model")) / "inspection.json"), "gmmseg model (*.json)")
        if path:
            self.inspector.set_false_alarm_rate(self.rate())
            self.inspector.save(path, overwrite=True)

    # ------------------------------------------------------------------
    def open_folder_dialog(self):
        folder = QFileDialog.getExistingDirectory(self.window, "Folder of images to inspect", self.window._last_dir("open"))
        if folder:
            self.open_folder(folder)

    def open_folder(self, folder):
        self.folder_images = list_images(folder)
        if not self.folder_images:
            QMessageBox.information(self.window, "Inspection", f"{folder} holds no images.")
            return False
        self.show_image(0)
        return True

    def show_image(self, index):
        if not 0 <= index < len(self.folder_images):
            return
        self.index = index
        self._update()
        if self.window.open_image(self.folder_images[index]):
            self.inspect_current()

    def next_image(self):
        self.show_image(self.index + 1)

    def previous_image(self):
        self.show_image(self.index - 1)

    def inspect_current(self):
        if self.inspector is None or self.window.image is None:
            return
        worker = ScoreWorker(self.inspector, self.window.image)
        worker.scored.connect(self._on_scored)
        self.window._track(worker).start()

    def _on_scored(self, image, raw, score):
        if image is not self.window.image:
            return  # the user moved on
        self.raw, self.score = raw, score
        self._rethreshold()

    def _on_rate_changed(self, value):
        self._update()
        if self.score is not None:
            self._rethreshold()

    def _rethreshold(self):
        self.result = self.inspector.find_regions(self.score, self.threshold(), raw=self.raw)
        r = self.result
        colour = "#2e7d32" if r.passed else "#c62828"
        sign = "&gt;" if r.image_score > r.image_threshold else "&le;"
        self.verdict_label.setText(f"<b style='color:{colour}'>{r.verdict.upper()}</b> &nbsp; image score "
                                   f"{r.image_score:.2f} {sign} image threshold {r.image_threshold:.2f}; "
                                   f"{len(r.regions)} region(s), {r.defect_area} px (pixel threshold "
                                   f"{r.pixel_threshold:.2f})")
        self.regions.setRowCount(len(r.regions))
        for row, region in enumerate(r.regions):
            x, y, w, h = region.bbox
            for col, text in enumerate((region.label, region.area, x, y, f"{w} x {h}", f"{region.max_score:.1f}")):
                item = QTableWidgetItem(str(text))
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.regions.setItem(row, col, item)
        self.window.set_view_mode("inspection")
        self.inspected.emit(str(self.window.image_path))

    def overlay_rgb(self, base_rgb):
        if self.result is None or self.result.mask.shape != base_rgb.shape[:2]:
            return base_rgb
        return inspection_overlay(base_rgb, self.result)

    def zoom_to_region(self, row):
        if self.result is None or not 0 <= row < len(self.result.regions):
            return
        x, y, w, h = self.result.regions[row].bbox
        self.window.canvas.zoom_to_rect(x, y, w, h)

    def clear_result(self):
        self.score = None
        self.raw = None
        self.result = None
        self.regions.setRowCount(0)
        self.verdict_label.setText("")

    # ------------------------------------------------------------------
    def report_dialog(self):
        path, _ = QFileDialog.getSaveFileName(self.window, "Inspection report", str(Path(self.window._last_dir("export")) / "report.csv"), "CSV (*.csv)")
        if path:
            self.write_report(path)

    def write_report(self, path):
        worker = ReportWorker(self.inspector, self.folder_images, self.threshold(), path)
        worker.step.connect(lambda done, total, name: self.window.progress_label.setText(f"inspecting {done + 1}/{total}: {name}"))
        worker.finished_report.connect(self._on_report)
        self.window._track(worker).start()

    def _on_report(self, path, images, defective):
        self.window.progress_label.setText(f"report: {defective} of {images} images with defects -> {path}")
        self.reportWritten.emit(path)
