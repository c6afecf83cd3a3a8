"""The dock widget: segment, apply a saved model to and inspect an Image layer.

Long work runs in napari's thread workers (:mod:`napari.qt.threading`) and
goes through :mod:`gmmseg.workflows`, the :class:`gmmseg.Segmenter` and the
:class:`gmmseg.Inspector`; this module only moves layers in and results out.
The settings forms are built from the settings table
(:mod:`gmmseg.params`) by the application's :class:`SettingsForm`, which
is written for PySide6: napari must run on PySide6 too (``qtpy`` picks the
binding; two bindings in one process do not share widgets).
"""

import threading
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import qtpy

if qtpy.API_NAME != "PySide6":
    raise ImportError(
        f"gmmseg's napari plugin needs napari running on PySide6, but napari uses {qtpy.API_NAME}: install "
        "napari with pip install 'gmmseg[napari]' (napari[pyside6]) or set QT_API=pyside6."
    )

import numpy as np
from napari.layers import Image, Layer
from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .. import workflows
from ..engine import ConvergenceWarning, EMProgress
from ..gui.settings_form import SettingsForm
from ..inspection import InspectionResult, Inspector
from ..io import ImageData
from ..params import INSPECTION_MODEL_SETTINGS, INSPECTION_PANEL_SETTINGS, INSPECTOR_MODEL_DEFAULTS, InspectionParams, SegmenterParams, reference_fit_params
from ..persistence import ModelFileError
from ..segment import Segmentation, Segmenter
from ._layer_data import RESULT_KEY, LayerData, LayerError, anomaly_layer, image_from_layer, inspection_layers, segmentation_layers

#: The settings shown at once; the others are under "More settings".
MAIN_SETTINGS = ("n_components", "covariance_type", "color_space", "spatial_weight", "smoothing")
REGION_COLUMNS = ("region", "area", "x", "y", "width", "height", "mean_score", "max_score")
PACKAGE = Path(__file__).resolve().parent.parent
PROGRESS_INTERVAL_S = 0.05  # at most 20 progress reports a second reach the widget
MODEL_FILTER = "gmmseg model (*.json);;All files (*)"


class _Relay(QObject):
    """Carries progress from a worker thread to the widget (a signal emitted
    in another thread is queued to the receiver's thread)."""

    progress = Signal(object)


def _fit_job(image: ImageData, params: SegmenterParams, report: Callable[[dict], None],
             stop: threading.Event) -> tuple[Segmenter, Segmentation, list[str]]:
    """Fit and segment (in a worker thread); ``stop`` ends the fit early."""
    last = [0.0]

    def callback(p: EMProgress) -> bool:
        now = time.perf_counter()
        if now - last[0] >= PROGRESS_INTERVAL_S or p.converged:
            last[0] = now
            report({"phase": p.phase, "init": p.init, "iteration": p.iteration, "lower_bound": p.lower_bound})
        return stop.is_set()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        _, segmenter, segmentation = workflows.segment_file(image, params, callback=callback)
    notes = []
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        notes.append(f"EM did not converge within max_iter={params.max_iter} iterations")
    return segmenter, segmentation, notes


def _apply_job(image: ImageData, segmenter: Segmenter) -> tuple[Segmenter, Segmentation, list[str]]:
    return segmenter, workflows.apply_model(image, segmenter)[1], []


def _reference_job(references: list[ImageData], params: SegmenterParams, inspection: InspectionParams
                   ) -> tuple[Inspector, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)  # e.g. one reference: optimistic thresholds
        inspector = Inspector(params=params, inspection=inspection).fit(references)
    # The record is process-wide while it lasts: keep gmmseg's own warnings,
    # not those the main thread (napari) gave meanwhile.
    notes = sorted({str(w.message) for w in caught
                    if not issubclass(w.category, ConvergenceWarning) and Path(w.filename).is_relative_to(PACKAGE)})
    return inspector, notes


def _inspect_job(image: ImageData, inspector: Inspector) -> InspectionResult:
    return inspector.inspect(image)


def _disconnect(connections: list[tuple[Any, Callable]]) -> None:
    for emitter, callback in connections:
        try:
            emitter.disconnect(callback)
        except (RuntimeError, TypeError, ValueError):
            pass  # the viewer went first


class SegmentationWidget(QWidget):
    """gmmseg in napari: segment the active Image layer with a Gaussian
    mixture, apply a saved model, inspect with a reference model.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        Given by napari when the widget is docked.

    Results are layers named after the image layer (see
    :data:`gmmseg.napari._layer_data.SUFFIXES`); a second run replaces them.
    ``done`` is emitted with ``"segmented"``, ``"inspected"``,
    ``"reference"``, ``"cancelled"`` or ``"failed"`` when a task ends
    (after its layers are added), so scripts and tests can wait for it.
    """

    done = Signal(str)

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.segmenter: Segmenter | None = None  # the model Apply uses: the last fitted or loaded
        self.inspector: Inspector | None = None
        self.segmentation: Segmentation | None = None  # the last result, and its layer placement
        self._result_source: tuple[str, dict] | None = None
        self.regions: list = []  # of the last inspection, as in the table
        self._regions_placement: dict = {}
        self.worker = None  # the running napari worker, None when idle
        self.last_traceback = ""  # of the last failure, for bug reports
        self._stop = threading.Event()
        # Without a parent: a worker still reporting after the widget is gone
        # (the viewer closed) must find the relay alive.
        self._relay = _Relay()
        self._relay.progress.connect(self._on_progress)
        self._task = ""
        self._outcome = ""
        self._on_result: Callable[[Any], None] | None = None
        self._started = 0.0
        self._build()
        layers = self.viewer.layers
        connections = [(layers.events.inserted, self._refresh_layers), (layers.events.removed, self._refresh_layers),
                       (layers.events.moved, self._refresh_layers), (layers.events.renamed, self._refresh_layers),
                       (layers.selection.events.active, self._on_active_layer)]
        for emitter, callback in connections:
            emitter.connect(callback)
        # The viewer outlives a removed widget: it must not call a deleted one.
        self.destroyed.connect(lambda *_: _disconnect(connections))
        self._refresh_layers()

    # ------------------------------------------------------------------
    # building
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        outer.addWidget(scroll)
        body = QWidget()
        scroll.setWidget(body)
        v = QVBoxLayout(body)

        row = QFormLayout()
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("The Image layer to segment or inspect; follows the active layer")
        row.addRow("Image layer", self.layer_combo)
        v.addLayout(row)

        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_segment_tab(), "Segment")
        self.tabs.addTab(self._build_inspect_tab(), "Inspect")
        v.addWidget(self.tabs)

        row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)
        row.addWidget(self.progress, 1)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running task; nothing is added")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.cancel_button)
        v.addLayout(row)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        v.addWidget(self.message)
        v.addStretch(1)

    def _build_segment_tab(self) -> QWidget:
        tab = QWidget()
        v = QVBoxLayout(tab)
        self.form = SettingsForm(SegmenterParams, names=MAIN_SETTINGS)
        v.addWidget(self.form)
        self.more_button = QToolButton()
        self.more_button.setText("More settings")
        self.more_button.setCheckable(True)
        self.more_button.setArrowType(Qt.ArrowType.RightArrow)
        self.more_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        v.addWidget(self.more_button)
        self.more_form = SettingsForm(SegmenterParams, names=[n for n in SegmenterParams.names() if n not in MAIN_SETTINGS])
        self.more_form.setVisible(False)
        self.more_button.toggled.connect(self._toggle_more)
        v.addWidget(self.more_form)

        row = QFormLayout()
        self.percentile_spin = QDoubleSpinBox()
        self.percentile_spin.setRange(0.0, 100.0)
        self.percentile_spin.setDecimals(2)
        self.percentile_spin.setSingleStep(0.1)
        self.percentile_spin.setValue(1.0)
        self.percentile_spin.setSuffix(" %")
        self.percentile_spin.setToolTip("The anomaly layer flags this share of the pixels: those of lowest "
                                        "log-likelihood under the model (changes the shown result at once)")
        self.percentile_spin.valueChanged.connect(self._update_anomaly)
        row.addRow("Anomalous pixels", self.percentile_spin)
        v.addLayout(row)

        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Fit a Gaussian mixture on the image layer and segment it")
        self.run_button.clicked.connect(self.run)
        v.addWidget(self.run_button)

        box = QGroupBox("Saved model")
        b = QVBoxLayout(box)
        row = QHBoxLayout()
        self.load_button = QPushButton("Load...")
        self.load_button.setToolTip("Load a gmmseg model file (from Save, 'gmmseg fit' or the application)")
        self.load_button.clicked.connect(self._load_dialog)
        self.apply_button = QPushButton("Apply")
        self.apply_button.setToolTip("Segment the image layer with the model, without fitting")
        self.apply_button.clicked.connect(self.apply)
        self.save_button = QPushButton("Save...")
        self.save_button.setToolTip("Save the model of the last run (or the loaded one)")
        self.save_button.clicked.connect(self._save_dialog)
        for button in (self.load_button, self.apply_button, self.save_button):
            row.addWidget(button)
        b.addLayout(row)
        self.model_label = QLabel("No model yet: Run fits one.")
        self.model_label.setWordWrap(True)
        b.addWidget(self.model_label)
        v.addWidget(box)
        v.addStretch(1)
        return tab

    def _build_inspect_tab(self) -> QWidget:
        tab = QWidget()
        v = QVBoxLayout(tab)
        v.addWidget(QLabel("Defect-free references (Image layers):"))
        self.reference_list = QListWidget()
        self.reference_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.reference_list.setToolTip("Select the layers of good parts; the reference model is fitted on them "
                                       "with the Segment tab's settings, without smoothing or position, and with "
                                       "the features and samples set below")
        self.reference_list.setMaximumHeight(90)
        v.addWidget(self.reference_list)
        # Inspection's own features (texture for grey parts) and sample, as the application.
        self.inspection_model_form = SettingsForm(SegmenterParams, names=INSPECTION_MODEL_SETTINGS)
        self.inspection_model_form.set_values(INSPECTOR_MODEL_DEFAULTS)
        v.addWidget(self.inspection_model_form)
        self.inspection_form = SettingsForm(InspectionParams, names=INSPECTION_PANEL_SETTINGS)
        self.inspection_form.widgets["auto_k"].setChecked(False)  # as the application: the Segment tab's K
        v.addWidget(self.inspection_form)
        row = QHBoxLayout()
        self.fit_reference_button = QPushButton("Fit reference")
        self.fit_reference_button.setToolTip("Fit the reference model on the selected layers and calibrate its "
                                             "thresholds")
        self.fit_reference_button.clicked.connect(self.fit_reference)
        self.load_reference_button = QPushButton("Load...")
        self.load_reference_button.setToolTip("Load an inspection model (from 'gmmseg fit --inspection' or Save)")
        self.load_reference_button.clicked.connect(self._load_reference_dialog)
        self.save_reference_button = QPushButton("Save...")
        self.save_reference_button.clicked.connect(self._save_reference_dialog)
        for button in (self.fit_reference_button, self.load_reference_button, self.save_reference_button):
            row.addWidget(button)
        v.addLayout(row)
        self.reference_label = QLabel("No reference model yet.")
        self.reference_label.setWordWrap(True)
        v.addWidget(self.reference_label)
        self.inspect_button = QPushButton("Inspect")
        self.inspect_button.setToolTip("Score the image layer against the reference model and find defect regions")
        self.inspect_button.clicked.connect(self.inspect)
        v.addWidget(self.inspect_button)
        self.verdict_label = QLabel("")
        self.verdict_label.setWordWrap(True)
        v.addWidget(self.verdict_label)
        self.region_table = QTableWidget(0, len(REGION_COLUMNS))
        self.region_table.setHorizontalHeaderLabels([c.replace("_", " ") for c in REGION_COLUMNS])
        self.region_table.verticalHeader().setVisible(False)
        self.region_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.region_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.region_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.region_table.setToolTip("Defect regions, largest first; select one to centre the view on it")
        self.region_table.itemSelectionChanged.connect(self._on_region_selected)
        v.addWidget(self.region_table)
        return tab

    def _toggle_more(self, shown: bool) -> None:
        self.more_form.setVisible(shown)
        self.more_button.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    # ------------------------------------------------------------------
    # layers
    @staticmethod
    def _is_source(layer: Any) -> bool:
        """An Image layer to work on: not one of gmmseg's results (the
        probabilities and maps are Image layers too)."""
        return isinstance(layer, Image) and not layer.metadata.get(RESULT_KEY)

    def _image_layers(self) -> list[Image]:
        return [layer for layer in self.viewer.layers if self._is_source(layer)]

    def _refresh_layers(self, event: Any = None) -> None:
        names = [layer.name for layer in self._image_layers()]
        current = self.layer_combo.currentText()
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        active = self.viewer.layers.selection.active
        if self._is_source(active):
            current = active.name
        if current in names:
            self.layer_combo.setCurrentText(current)
        self.layer_combo.blockSignals(False)
        chosen = {item.text() for item in self.reference_list.selectedItems()}
        self.reference_list.clear()
        for name in names:
            self.reference_list.addItem(name)
            if name in chosen:
                self.reference_list.item(self.reference_list.count() - 1).setSelected(True)

    def _on_active_layer(self, event: Any = None) -> None:
        active = self.viewer.layers.selection.active
        if self._is_source(active):
            self.layer_combo.setCurrentText(active.name)

    def image_layer(self) -> Image | None:
        """The Image layer the widget works on (the chosen one, else the active one)."""
        name = self.layer_combo.currentText()
        if name and name in self.viewer.layers and self._is_source(self.viewer.layers[name]):
            return self.viewer.layers[name]
        active = self.viewer.layers.selection.active
        return active if self._is_source(active) else None

    def _source(self) -> tuple[Image, ImageData] | None:
        """The image layer and its pixels, or None after saying what is wrong."""
        layer = self.image_layer()
        if layer is None:
            self._say("Add or select an Image layer first (a 2D grey, RGB or RGBA image).", error=True)
            return None
        try:
            return layer, image_from_layer(layer)
        except LayerError as exc:
            self._say(str(exc), error=True)
            return None

    @staticmethod
    def _placement(layer: Image) -> dict:
        return {"scale": tuple(layer.scale), "translate": tuple(layer.translate)}

    def _show_layers(self, layer_data: list[LayerData]) -> list[Layer]:
        """Add result layers; one of the same name is replaced in place (its
        position in the layer list, visibility and opacity are kept)."""
        shown = []
        for data, kwargs, kind in layer_data:
            name = kwargs["name"]
            index = None
            if name in self.viewer.layers:
                old = self.viewer.layers[name]
                index = self.viewer.layers.index(old)
                kwargs = {**kwargs, "visible": old.visible, "opacity": old.opacity}
                self.viewer.layers.remove(old)
            layer = Layer.create(data, {**kwargs, "metadata": {RESULT_KEY: True}}, kind)
            if index is None:
                self.viewer.add_layer(layer)
            else:
                self.viewer.layers.insert(index, layer)
            shown.append(layer)
        return shown

    # ------------------------------------------------------------------
    # settings
    def params(self) -> SegmenterParams:
        """The segmenter settings of the forms (ValueError when they do not fit together)."""
        return self.more_form.params(self.form.params())

    def set_params(self, params: SegmenterParams) -> None:
        """Show settings (e.g. a loaded model's) in the forms."""
        self.form.set_values(params)
        self.more_form.set_values(params)

    # ------------------------------------------------------------------
    # tasks
    def run(self) -> None:
        """Fit a new model on the image layer and show its segmentation."""
        if self.worker is not None:
            return
        source = self._source()
        if source is None:
            return
        layer, image = source
        try:
            params = self.params()
        except ValueError as exc:
            self._say(str(exc), error=True)
            return
        self.progress.setRange(0, max(params.max_iter, 1))
        self._start("fit", f"fitting K={params.n_components} on '{layer.name}'...", _fit_job, image, params,
                    self._relay.progress.emit, self._stop,
                    on_result=lambda result: self._on_segmented(result, layer.name, self._placement(layer), "fitted"))

    def apply(self) -> None:
        """Segment the image layer with the loaded (or last fitted) model."""
        if self.worker is not None:
            return
        if self.segmenter is None:
            self._say("No model to apply: Load a model file or Run a fit first.", error=True)
            return
        source = self._source()
        if source is None:
            return
        layer, image = source
        self.progress.setRange(0, 0)  # no steps to count: busy
        self._start("apply", f"applying the model to '{layer.name}'...", _apply_job, image, self.segmenter,
                    on_result=lambda result: self._on_segmented(result, layer.name, self._placement(layer), "applied"))

    def fit_reference(self) -> None:
        """Fit the reference model on the selected reference layers."""
        if self.worker is not None:
            return
        names = [item.text() for item in self.reference_list.selectedItems()]
        if not names:
            self._say("Select one or more Image layers of defect-free parts as references.", error=True)
            return
        references = []
        for name in names:
            try:
                references.append(image_from_layer(self.viewer.layers[name]))
            except (LayerError, KeyError) as exc:
                self._say(str(exc).strip("'\""), error=True)
                return
        try:
            # As the application: the Segment tab's settings without the spatial
            # prior (defects are judged pixel by pixel, over several
            # references), with the inspection's own features and sample.
            params = reference_fit_params(self.params(), self.inspection_model_form.params(INSPECTOR_MODEL_DEFAULTS))
            inspection = self.inspection_form.params()
        except ValueError as exc:
            self._say(str(exc), error=True)
            return
        self.progress.setRange(0, 0)
        count = f"{len(references)} reference{'s' if len(references) > 1 else ''}"
        self._start("reference", f"fitting the reference model on {count}...", _reference_job, references, params,
                    inspection, on_result=self._on_reference)

    def inspect(self) -> None:
        """Inspect the image layer with the reference model."""
        if self.worker is not None:
            return
        if self.inspector is None:
            self._say("No reference model: Fit reference on good parts or Load an inspection model.", error=True)
            return
        source = self._source()
        if source is None:
            return
        layer, image = source
        self.progress.setRange(0, 0)
        self._start("inspect", f"inspecting '{layer.name}'...", _inspect_job, image, self.inspector,
                    on_result=lambda result: self._on_inspected(result, layer.name, self._placement(layer)))

    def cancel(self) -> None:
        """Stop the running task: a fit stops at its next iteration; the
        result of any task is dropped."""
        if self.worker is None:
            return
        self._stop.set()
        self.worker.quit()  # napari's worker then drops the result
        self._say("cancelling...")

    def _start(self, task: str, text: str, function: Callable, *args: Any, on_result: Callable[[Any], None]) -> None:
        # The jobs got this event as an argument: cleared, not replaced (the
        # previous worker has finished, so none else reads it).
        self._stop.clear()
        self._task, self._outcome, self._on_result = task, "", on_result
        self._started = time.perf_counter()
        # ignore_errors: a failure is reported in the widget, not re-raised in
        # napari's main thread as a traceback.
        worker = create_worker(function, *args, _progress={"desc": f"gmmseg: {task}"}, _ignore_errors=True)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._set_busy(True)
        self._say(text)
        worker.start()

    def _set_busy(self, busy: bool) -> None:
        for button in (self.run_button, self.apply_button, self.load_button, self.fit_reference_button,
                       self.load_reference_button, self.inspect_button):
            button.setEnabled(not busy)
        self.save_button.setEnabled(not busy and self.segmenter is not None)
        self.save_reference_button.setEnabled(not busy and self.inspector is not None)
        self.cancel_button.setEnabled(busy)
        if not busy:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)

    def _on_progress(self, p: dict) -> None:
        if self.worker is None or self._stop.is_set():
            return
        if p["phase"] == "em":
            self.progress.setValue(min(p["iteration"], self.progress.maximum()))
            self._say(f"EM iteration {p['iteration']} (start {p['init'] + 1}), "
                      f"mean log-likelihood {p['lower_bound']:.4f}")
        elif p["phase"] == "spatial":
            self.progress.setValue(min(p["iteration"], self.progress.maximum()))
            self._say(f"spatial prior: iteration {p['iteration']}, free energy {p['lower_bound']:.4f}")
        else:
            self._say(f"initialising: start {p['init'] + 1}, k-means step {p['iteration']}")

    def _on_returned(self, result: Any) -> None:
        try:
            self._on_result(result)
        except Exception as exc:  # a result the viewer refuses: reported like a failed task
            self._fail(exc)

    def _on_errored(self, exc: BaseException) -> None:
        self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self.last_traceback = "".join(traceback.format_exception(exc))
        self._outcome = "failed"
        self._say(f"{self._task} failed: {workflows.default_message(exc)}", error=True)

    def _on_finished(self) -> None:
        self.worker = None
        self._set_busy(False)
        if not self._outcome:  # neither a result nor an error: the task was cancelled
            self._outcome = "cancelled"
            self._say(f"{self._task} cancelled: nothing was added.")
        self.done.emit(self._outcome)

    def _say(self, text: str, *, error: bool = False) -> None:
        self.message.setStyleSheet("color: #ff6b6b;" if error else "")
        self.message.setText(text)

    # ------------------------------------------------------------------
    # results
    def _on_segmented(self, result: tuple, name: str, placement: dict, how: str) -> None:
        segmenter, segmentation, notes = result
        self.segmenter, self.segmentation = segmenter, segmentation
        self._result_source = (name, placement)
        self._show_layers(segmentation_layers(segmentation, name, anomaly_percentile=self.percentile_spin.value(),
                                              is_gray=segmenter.channels_ == 1, **placement))
        gm = segmenter.gmm_
        seconds = time.perf_counter() - self._started
        text = f"{how} K={segmentation.n_components} on '{name}' in {seconds:.1f} s"
        if how == "fitted":
            text += f"; EM {'converged' if gm.converged_ else 'stopped'} after {gm.n_iter_} iterations"
        self._outcome = "segmented"
        self._say("; ".join([text, *notes]) + ".")
        if how == "fitted":  # an applied model keeps its description (where it was loaded from)
            self._describe_model(f"fitted on '{name}'")

    def _update_anomaly(self) -> None:
        """Re-threshold the shown anomaly layer (the log-likelihood is kept)."""
        if self.segmentation is None or self._result_source is None:
            return
        name, placement = self._result_source
        self._show_layers([anomaly_layer(self.segmentation, name, self.percentile_spin.value(), **placement)])

    def _describe_model(self, origin: str) -> None:
        s = self.segmenter
        self.model_label.setText(f"Model: K={s.n_components}, {s.covariance_type}, {s.color_space}, "
                                 f"features {s.feature_set} ({origin}).")
        self.save_button.setEnabled(self.worker is None)

    def _on_reference(self, result: tuple) -> None:
        inspector, notes = result
        self.inspector = inspector
        self._outcome = "reference"
        self._describe_reference("fitted")
        self._say("; ".join(["reference model fitted", *(n.rstrip(".") for n in notes)]) + ".")

    def _describe_reference(self, origin: str) -> None:
        i = self.inspector
        # The forms show the model's settings, as the application's panel
        # (a value they cannot show keeps the widget's; Fit reads the forms).
        self.inspection_model_form.set_values(i.params)
        self.inspection_form.set_values(i.inspection)
        self.reference_label.setText(
            f"Reference model ({origin}): K={i.segmenter_.n_components}, features "
            f"{i.segmenter_.features.feature_set}, {i.n_references_} reference"
            f"{'s' if i.n_references_ != 1 else ''}; image threshold {i.image_threshold_:.2f}, pixel threshold "
            f"{i.threshold_:.2f}.")
        self.save_reference_button.setEnabled(self.worker is None)

    def _on_inspected(self, result: InspectionResult, name: str, placement: dict) -> None:
        self._show_layers(inspection_layers(result, name, **placement))
        self.regions = list(result.regions)
        self._regions_placement = placement
        self.region_table.setRowCount(len(self.regions))
        for row, region in enumerate(self.regions):
            values = region.as_dict()
            for column, key in enumerate(REGION_COLUMNS):
                item = QTableWidgetItem(f"{values[key]:g}" if isinstance(values[key], float) else str(values[key]))
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.region_table.setItem(row, column, item)
        self.verdict_label.setText(f"'{name}': {result.describe()}; {len(self.regions)} defect region"
                                   f"{'s' if len(self.regions) != 1 else ''}.")
        self._outcome = "inspected"
        self._say(f"inspected '{name}' in {time.perf_counter() - self._started:.1f} s.")

    def _on_region_selected(self) -> None:
        rows = {index.row() for index in self.region_table.selectedIndexes()}
        if len(rows) != 1:
            return
        region = self.regions[rows.pop()]
        scale = np.asarray(self._regions_placement["scale"], dtype=float)
        translate = np.asarray(self._regions_placement["translate"], dtype=float)
        x, y = region.centroid
        # napari 0.9 moved the camera to viewer.scene (the old name warns).
        scene = getattr(self.viewer, "scene", None)
        camera = scene.camera if scene is not None else self.viewer.camera
        camera.center = tuple(np.array([y, x]) * scale + translate)

    # ------------------------------------------------------------------
    # model files
    def load_model(self, path: str | Path) -> None:
        """Load a segmenter model file (an inspection model is one too, and
        also becomes the reference model); its settings fill the forms."""
        try:
            self.segmenter = Segmenter.load(path)
        except (ModelFileError, OSError) as exc:
            self._say(str(exc), error=True)
            return
        self.set_params(self.segmenter.params)
        self._describe_model(f"loaded from {Path(path).name}")
        text = f"loaded {Path(path).name}: Apply segments the image layer with it"
        try:
            self.inspector = Inspector.load(path)
        except ModelFileError:
            pass  # a plain segmenter model
        else:
            self._describe_reference(f"loaded from {Path(path).name}")
            text += "; it is an inspection model too: Inspect uses it"
        self._say(text + ".")

    def load_reference(self, path: str | Path) -> None:
        """Load an inspection model as the reference model."""
        try:
            self.inspector = Inspector.load(path)
        except (ModelFileError, OSError) as exc:
            self._say(str(exc), error=True)
            return
        self._describe_reference(f"loaded from {Path(path).name}")
        self._say(f"loaded the reference model {Path(path).name}.")

    def _load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a gmmseg model", "", MODEL_FILTER)
        if path:
            self.load_model(path)

    def _load_reference_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load an inspection model", "", MODEL_FILTER)
        if path:
            self.load_reference(path)

    def _save(self, model: Segmenter | Inspector | None, title: str) -> None:
        if model is None:
            return
        # The dialog asks before replacing a file, hence overwrite=True.
        path, _ = QFileDialog.getSaveFileName(self, title, "model.json", MODEL_FILTER)
        if not path:
            return
        try:
            model.save(path, overwrite=True)
        except (OSError, ValueError) as exc:
            self._say(f"could not save the model: {exc}", error=True)
            return
        self._say(f"saved {path}.")

    def _save_dialog(self) -> None:
        self._save(self.segmenter, "Save the gmmseg model")

    def _save_reference_dialog(self) -> None:
        self._save(self.inspector, "Save the inspection model")
