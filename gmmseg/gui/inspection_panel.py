"""The Inspection panel: references, fit or load a reference model, step
through a folder of parts, the verdict and the regions of the shown image.

With a reference model in use every image shown is inspected (the session
does it); the verdict line names the image it belongs to.
"""

import math

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..params import INSPECTION_MODEL_SETTINGS, INSPECTION_PANEL_SETTINGS, INSPECTION_REFIT_SETTINGS, InspectionParams, SegmenterParams
from .settings_form import SettingsForm

FAR_MIN_EXP, FAR_MAX_EXP = -6.0, -1.0  # false-alarm rate slider: 1e-6 .. 1e-1


class InspectionPanel(QWidget):
    """Reads and drives the session's inspection state.

    ``dialogs`` is the window: it owns the file dialogs
    (``choose_references``, ``load_inspector_dialog``,
    ``save_inspector_dialog``, ``open_folder_dialog``, ``report_dialog``)
    and zooming (``canvas.zoom_to_rect``).
    """

    def __init__(self, session, dialogs):
        super().__init__()
        self.session = session
        self.dialogs = dialogs
        v = QVBoxLayout(self)
        v.setContentsMargins(4, 4, 4, 4)
        row = QHBoxLayout()
        self.refs_button = QPushButton("References...")
        self.refs_button.setToolTip("Choose images of defect-free parts")
        self.fit_button = QPushButton("Fit")
        self.fit_button.setToolTip("Fit the reference model and calibrate the image and pixel thresholds")
        self.load_button = QPushButton("Load...")
        self.load_button.setToolTip("Load an inspection model saved by 'gmmseg fit' or Save")
        self.save_button = QPushButton("Save...")
        for button, slot in ((self.refs_button, dialogs.choose_references), (self.fit_button, session.fit_inspector),
                             (self.load_button, dialogs.load_inspector_dialog),
                             (self.save_button, dialogs.save_inspector_dialog)):
            button.clicked.connect(lambda checked=False, f=slot: f())
            row.addWidget(button)
        v.addLayout(row)
        self.model_label = QLabel("No reference model yet.")
        self.model_label.setToolTip("Reference models use the Model panel's settings without smoothing or spatial "
                                    "weight (defects are judged pixel by pixel), with the features and samples set here")
        self.model_label.setWordWrap(True)
        self.model_label.setTextFormat(Qt.TextFormat.PlainText)  # it names model files, which may hold '<'
        v.addWidget(self.model_label)
        self.settings_form = SettingsForm(InspectionParams, names=INSPECTION_PANEL_SETTINGS)
        self.settings_form.set_values(session.inspection_settings)
        k_range = InspectionParams().k_range
        self.settings_form.form.labelForField(self.settings_form.widgets["auto_k"]).setText(
            f"Choose K ({k_range[0]}-{k_range[-1]})")
        self.settings_form.form.setContentsMargins(0, 0, 0, 0)
        # Inspection's own features and training sample (grey parts need
        # texture whatever the Model panel segments with): see
        # reference_fit_params.
        self.model_form = SettingsForm(SegmenterParams, names=INSPECTION_MODEL_SETTINGS)
        self.model_form.set_values(session.inspection_model)
        self.model_form.form.setContentsMargins(0, 0, 0, 0)
        for form, names in ((self.model_form, INSPECTION_MODEL_SETTINGS),
                            (self.settings_form, INSPECTION_REFIT_SETTINGS)):
            for name in names:  # the model and its thresholds are fitted for them
                widget = form.widgets[name]
                widget.setToolTip(widget.toolTip() + " (takes effect at the next Fit)")
        self.settings_form.changed.connect(
            lambda: session.set_inspection_settings(self.settings_form.params(session.inspection_settings)))
        self.model_form.changed.connect(
            lambda: setattr(session, "inspection_model", self.model_form.params(session.inspection_model)))
        v.addWidget(self.model_form)
        v.addWidget(self.settings_form)
        row = QHBoxLayout()
        row.addWidget(QLabel("False-alarm rate"))
        self.far_slider = QSlider(Qt.Orientation.Horizontal)
        self.far_slider.setRange(int(FAR_MIN_EXP * 10), int(FAR_MAX_EXP * 10))
        self.far_slider.setValue(-40)
        self.far_slider.setToolTip("Expected fraction of good pixels above the pixel threshold, over which defect "
                                   "masks grow; re-thresholds the shown image live")
        self.far_slider.valueChanged.connect(lambda value: session.set_false_alarm_rate(10 ** (value / 10.0)))
        row.addWidget(self.far_slider, 1)
        self.far_label = QLabel()
        self.far_label.setMinimumWidth(70)
        row.addWidget(self.far_label)
        v.addLayout(row)
        row = QHBoxLayout()
        self.folder_button = QPushButton("Open folder...")
        self.folder_button.setToolTip("Images to inspect; step with Page Up / Page Down")
        self.folder_button.clicked.connect(lambda: dialogs.open_folder_dialog())
        self.prev_button = QPushButton("< Prev")
        self.prev_button.clicked.connect(lambda: dialogs.step_part(-1))
        self.next_button = QPushButton("Next >")
        self.next_button.clicked.connect(lambda: dialogs.step_part(1))
        for button in (self.folder_button, self.prev_button, self.next_button):
            row.addWidget(button)
        v.addLayout(row)
        self.position_label = QLabel()
        v.addWidget(self.position_label)
        self.verdict_label = QLabel()
        self.verdict_label.setTextFormat(Qt.TextFormat.RichText)
        self.verdict_label.setWordWrap(True)
        v.addWidget(self.verdict_label)
        self.regions = QTableWidget(0, 6)
        self.regions.setHorizontalHeaderLabels(["#", "Area", "x", "y", "w x h", "Max score"])
        header = self.regions.horizontalHeader()
        # Six equal columns cut "Max score" and wrapped "181 x 82" in a dock of usual width:
        # the short columns take what their header and values need, the two long ones the rest.
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        for col in (4, 5):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Stretch)
        self.regions.verticalHeader().setVisible(False)
        self.regions.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.regions.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.regions.setToolTip("Click a region to zoom to it")
        self.regions.cellClicked.connect(lambda row, col: self.zoom_to_region(row))
        self.regions.setMinimumHeight(150)  # a few regions visible however crowded the dock area is
        v.addWidget(self.regions, 1)
        self.report_button = QPushButton("Export report...")
        self.report_button.setToolTip("Inspect every image of the folder (or, without a folder, the images "
                                      "inspected so far) and write a CSV report")
        self.report_button.clicked.connect(lambda: dialogs.report_dialog())
        v.addWidget(self.report_button)
        events = session.events
        for event in (events.inspector, events.folder, events.busy, events.image):
            event.connect(self.update_controls)
        events.inspection.connect(self.show_result)
        self.update_controls()

    def rate(self):
        return 10 ** (self.far_slider.value() / 10.0)

    def update_controls(self):
        s = self.session
        has_model = s.inspector is not None
        self.fit_button.setEnabled(bool(s.references) and not s.is_running("reference fit"))
        self.save_button.setEnabled(has_model)
        self.far_slider.setEnabled(has_model)
        self.prev_button.setEnabled(s.index > 0)
        self.next_button.setEnabled(0 <= s.index < len(s.folder_images) - 1)
        self.report_button.setEnabled(has_model and bool(s.report_paths()))
        if has_model and abs(math.log10(s.false_alarm_rate) * 10 - self.far_slider.value()) > 0.5:
            exp = np.clip(round(math.log10(s.false_alarm_rate) * 10), self.far_slider.minimum(), self.far_slider.maximum())
            self.far_slider.blockSignals(True)
            self.far_slider.setValue(int(exp))
            self.far_slider.blockSignals(False)
        for form, name in ((self.settings_form, "inspection_settings"), (self.model_form, "inspection_model")):
            shown = getattr(s, name)
            if form.params(shown) == shown:
                continue
            form.blockSignals(True)
            unshown = form.set_values(shown)  # a model's values, e.g. a loaded one's
            form.blockSignals(False)
            if unshown:
                # No hidden values: as with the Model panel, the next Fit uses
                # what the panel shows (loading a model says which differ).
                setattr(s, name, form.params(shown))
        self.far_label.setText(f"{self.rate():.1e}")
        if s.folder_images and s.index >= 0:
            self.position_label.setText(f"part {s.index + 1} of {len(s.folder_images)}: {s.folder_images[s.index].name}")
        else:
            self.position_label.setText("")
        if s.is_running("reference fit"):
            self.model_label.setText("fitting the reference model...")
        elif has_model:
            ins = s.inspector
            how = "held-out references" if ins.held_out_ else "the reference itself (optimistic)"
            self.model_label.setText(
                f"Reference model ({s.inspector_source}): K = {ins.segmenter_.n_components} "
                f"({ins.segmenter_.covariance_type}, {ins.segmenter_.color_space}, "
                f"{ins.segmenter_.features.feature_set}); image threshold "
                f"{ins.image_threshold_:.2f} for a false-reject rate of {ins.false_reject_rate:g}, calibrated on "
                f"{how}. Every image shown is inspected."
                + (f" {s.inspector_note[0].upper()}{s.inspector_note[1:]}." if s.inspector_note else ""))
        elif s.references:
            self.model_label.setText(f"{len(s.references)} reference image(s) chosen; press Fit.")

    def unshown_values(self, inspector) -> list[str]:
        """``name=value`` of the model's settings that this panel cannot show."""
        return [f"{n}={getattr(model, n)!r}" for form, model in ((self.model_form, inspector.params),
                                                               (self.settings_form, inspector.inspection))
                for n in form.unshown(model)]

    def show_result(self):
        s = self.session
        r = s.inspection
        self.update_controls()
        if r is None:
            self.regions.setRowCount(0)
            busy = s.inspector is not None and s.image is not None and s.is_running("score")
            self.verdict_label.setText(f"inspecting {s.image_name}..." if busy else "")
            return
        colour = "#2e7d32" if r.passed else "#c62828"
        sign = "&le;" if r.passed else "&gt;"
        note = " (one of the references)" if s.image_path in s.references else ""
        self.verdict_label.setText(
            f"{s.image_name}{note}: <b style='color:{colour}'>{r.verdict.upper()}</b> &nbsp; image score "
            f"{r.image_score:.2f} {sign} image threshold {r.image_threshold:.2f}; {len(r.regions)} region(s), "
            f"{r.defect_area} px (pixel threshold {r.pixel_threshold:.2f})")
        self.regions.setRowCount(len(r.regions))
        for row, region in enumerate(r.regions):
            x, y, w, h = region.bbox
            for col, text in enumerate((region.label, region.area, x, y, f"{w} x {h}", f"{region.max_score:.1f}")):
                item = QTableWidgetItem(str(text))
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.regions.setItem(row, col, item)

    def zoom_to_region(self, row):
        r = self.session.inspection
        if r is None or not 0 <= row < len(r.regions):
            return
        x, y, w, h = r.regions[row].bbox
        self.dialogs.canvas.zoom_to_rect(x, y, w, h)
