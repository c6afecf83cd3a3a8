"""The real main window, driven offscreen with pytest-qt."""

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

pytest.importorskip("PySide6")
from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from gmmseg.gui.main_window import MainWindow  # noqa: E402
from gmmseg.gui.render import VIEW_MODES  # noqa: E402
from gmmseg.gui.workers import Worker  # noqa: E402
from gmmseg.paths import sample_images_dir  # noqa: E402

SAMPLE = sample_images_dir() / "coffee.jpg"
WAIT_MS = 120_000


@pytest.fixture
def window(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    threads_before = {t.ident for t in threading.enumerate()}
    w = MainWindow(settings)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    yield w
    w.close()
    # No worker may outlive the window: every QThread has left run(), and no
    # new Python thread is alive (QThreads show up as inert "dummy" entries).
    assert Worker.running_count() == 0, "a worker thread is still running"
    leftover = [t for t in threading.enumerate() if t.ident not in threads_before and t.is_alive()
                and not isinstance(t, threading._DummyThread) and not t.name.startswith("gmmseg-kernel")]
    assert not leftover, f"threads left running: {[t.name for t in leftover]}"


def _fit(qtbot, window):
    with qtbot.waitSignal(window.fitFinished, timeout=WAIT_MS) as blocker:
        window.run_fit()
    return blocker.args[0]


def test_open_run_and_every_view(qtbot, window):
    assert window.open_image(SAMPLE)
    assert window.canvas.has_image() and window.windowTitle().startswith("coffee.jpg")
    window.k_spin.setValue(4)
    cancelled = _fit(qtbot, window)
    assert not cancelled
    seg = window.segmentation
    assert seg.n_components == 4 and seg.labels.shape == (400, 600)
    assert window.table.rowCount() == 4
    pictures = {}
    for mode in VIEW_MODES:
        with qtbot.waitSignal(window.viewRendered, timeout=5000):
            window.set_view_mode(mode)
        pix = window.canvas.current_pixmap()
        assert (pix.width(), pix.height()) == (600, 400)
        pictures[mode] = window.current_rgb()
    for a in VIEW_MODES:
        for b in VIEW_MODES:
            if a < b:
                assert not np.array_equal(pictures[a], pictures[b]), (a, b)
    assert window.colorbar.isVisible() is False  # anomaly view last: no colour bar
    window.set_view_mode("soft")
    assert window.colorbar.isVisibleTo(window)


def test_opacity_threshold_and_components(qtbot, window):
    window.open_image(SAMPLE)
    window.k_spin.setValue(3)
    _fit(qtbot, window)
    window.set_view_mode("labels")
    window.opacity_slider.setValue(0)
    assert np.array_equal(window.current_rgb(), window.base_rgb)
    window.opacity_slider.setValue(100)
    full = window.current_rgb()
    assert not np.array_equal(full, window.base_rgb)
    window.act_overlay.trigger()  # overlay off
    assert np.array_equal(window.current_rgb(), window.base_rgb)
    window.act_overlay.trigger()
    window.threshold_slider.setValue(10)
    low = int(window.anomaly.sum())
    window.threshold_slider.setValue(100)
    high = int(window.anomaly.sum())
    assert high > low > 0
    assert abs(high / window.segmentation.mask.sum() - 0.10) < 0.01
    assert "flagged" in window.threshold_label.text()
    # Hiding a component removes its colour from the label view.
    window.table.item(0, 5).setCheckState(window.table.item(0, 5).checkState().__class__.Unchecked)
    hidden = window.current_rgb()
    zero = window.segmentation.labels == 0
    assert np.array_equal(hidden[zero], window.base_rgb[zero])
    # Selecting a row shows its soft map; renaming is kept.
    window.table.selectRow(2)
    assert window.view_mode == "soft" and window.component == 2
    window.table.item(1, 1).setText("saucer")
    assert window.segmentation.names[1] == "saucer"
    window._on_hover(10, 10)
    text = window.hover_label.text()
    assert "x 10, y 10" in text and "label" in text and "log-lik" in text


def test_cancel_a_long_fit_keeps_the_window_usable(qtbot, window, tmp_path):
    rng = np.random.RandomState(0)
    big = (rng.rand(900, 1200, 3) * 255).astype(np.uint8)  # ~1 M distinct colours
    path = tmp_path / "noise.png"
    Image.fromarray(big).save(path)
    window.open_image(path)
    window.k_spin.setValue(8)
    window.tol_spin.setValue(0.0)
    window.iter_spin.setValue(5000)
    window.run_fit()
    with qtbot.waitSignal(window.fit_worker.progress, timeout=WAIT_MS):
        pass
    with qtbot.waitSignal(window.fitFinished, timeout=WAIT_MS) as blocker:
        window.cancel_work()
    assert blocker.args == [True]
    assert window.segmentation is not None and window.segmenter.gmm_.stopped_
    assert window.last_cancel_latency is not None
    assert window.act_run.isEnabled()
    window.iter_spin.setValue(3)
    assert _fit(qtbot, window) is False  # usable again


def test_corrupt_file_leaves_the_current_image(qtbot, window, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(QMessageBox, "critical", lambda *args: shown.append(args[2]))
    window.open_image(SAMPLE)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert window.open_image(bad) is False
    assert shown and "broken.png" in shown[0]
    assert window.image_path == SAMPLE and window.canvas.has_image()
    assert window.open_image(tmp_path / "missing.jpg") is False
    assert "file not found" in shown[-1]


def test_image_larger_than_memory_allows_is_opened_only_when_confirmed(qtbot, window, tmp_path, monkeypatch):
    from PIL import Image

    import gmmseg.io

    path = tmp_path / "big.png"
    Image.fromarray(np.full((30, 40, 3), 200, dtype=np.uint8)).save(path)
    window.open_image(SAMPLE)
    monkeypatch.setattr(gmmseg.io, "default_max_pixels", lambda: 1000)  # as if memory held 1000 pixels
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.Cancel)
    assert window.open_image(path) is False
    assert "40 x 30" in asked[0]
    assert "max_pixels" not in asked[0] and "Open it anyway?" in asked[0]
    assert window.image_path == SAMPLE
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Open)
    assert window.open_image(path) is True and window.image.width == 40


def test_export_and_read_back(qtbot, window, tmp_path):
    window.open_image(SAMPLE)
    window.k_spin.setValue(3)
    _fit(qtbot, window)
    out = tmp_path / "export"
    with qtbot.waitSignal(window.exportFinished, timeout=WAIT_MS) as blocker:
        window.start_export(out, ["labels", "masks", "probabilities", "summary"], overwrite=False)
    names = sorted(p.split("/")[-1] for p in blocker.args[0])
    assert names == ["labels.png", "mask_0.png", "mask_1.png", "mask_2.png", "probabilities.tif", "summary.json"]
    labels = np.asarray(Image.open(out / "labels.png"))
    np.testing.assert_array_equal(labels, window.segmentation.labels)
    np.testing.assert_array_equal(tifffile.imread(out / "probabilities.tif"), window.segmentation.probabilities)
    assert json.loads((out / "summary.json").read_text())["settings"]["n_components"] == 3
    assert window.save_view(tmp_path / "view.png")
    assert Image.open(tmp_path / "view.png").size == (600, 400)


def test_auto_k_and_model_files(qtbot, window, tmp_path):
    window.open_image(sample_images_dir() / "surface_good.png")
    window.iter_spin.setValue(50)
    with qtbot.waitSignal(window.autoKFinished, timeout=WAIT_MS) as blocker:
        window.run_auto_k()
    best = blocker.args[0]
    assert window.k_spin.value() == best
    rows = window.autok_rows
    assert [r["k"] for r in rows] == list(range(1, len(rows) + 1))
    assert min(rows, key=lambda r: r["bic_300"])["k"] == best  # the default K criterion
    assert "effective sample size of 300 pixels" in window.progress_label.text()
    window.bic_plot.pointClicked.emit(2.0)  # clicking a point picks that K
    assert window.k_spin.value() == 2
    _fit(qtbot, window)
    path = tmp_path / "model.json"
    window.segmenter.save(path)
    labels = window.segmentation.labels.copy()
    window.open_image(SAMPLE)
    window.open_image(sample_images_dir() / "surface_good.png")
    with qtbot.waitSignal(window.fitFinished, timeout=WAIT_MS):
        assert window.load_model(path)
    np.testing.assert_array_equal(window.segmentation.labels, labels)


def test_settings_are_kept_between_sessions(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    first = MainWindow(settings)
    qtbot.addWidget(first)
    first.open_image(SAMPLE)
    first.k_spin.setValue(7)
    first.cov_combo.setCurrentText("diag")
    first.close()
    second = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(second)
    assert second.k_spin.value() == 7 and second.cov_combo.currentText() == "diag"
    assert second.recent and second.recent[0].endswith("coffee.jpg")
    assert second.recent_menu.actions()[0].text().endswith("coffee.jpg")
    second.close()


def test_missing_display_libraries_are_named(monkeypatch):
    from gmmseg.gui import app

    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(app.ctypes.util, "find_library", lambda name: None if name == "xcb-cursor" else "lib.so")
    problem = app.display_problem()
    assert "libxcb-cursor0" in problem and "apt-get install" in problem
    monkeypatch.delenv("DISPLAY")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert "no display" in app.display_problem()


def test_qt_bindings_do_not_leak_none(qtbot):
    """PySide6 6.12.0 dropped a reference to None on every void call, which
    aborts a long session ("deallocating None"); pyproject excludes it."""
    import sys

    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QPainterPath

    path = QPainterPath(QPointF(0, 0))
    before = sys.getrefcount(None)
    for _ in range(2000):
        path.lineTo(QPointF(1.0, 2.0))
    assert sys.getrefcount(None) - before > -100


def test_inspection_mode(qtbot, window, tmp_path):
    import csv

    from imagefiles import write_inspection_set

    refs, parts = write_inspection_set(tmp_path, (1, 2, 3), (20, 21), 60)
    panel = window.inspection
    panel.set_references(refs)
    with qtbot.waitSignal(panel.fitted, timeout=WAIT_MS):
        panel.fit()
    with qtbot.waitSignal(panel.inspected, timeout=WAIT_MS):
        assert panel.open_folder(parts)
    assert window.view_mode == "inspection" and panel.index == 0
    first = panel.result
    assert not first.passed and panel.regions.rowCount() == len(first.regions) >= 3
    assert "FAIL" in panel.verdict_label.text() and "image score" in panel.verdict_label.text()
    assert first.image_score > first.image_threshold == panel.inspector.image_threshold_
    shown = window.current_rgb()
    assert np.any(np.all(shown == [255, 30, 30], axis=2))  # region outlines are drawn
    # Clicking a region zooms onto it.
    before = window.canvas.scale_factor()
    panel.zoom_to_region(0)
    assert window.canvas.scale_factor() > before
    # A stricter false-alarm rate re-thresholds live without rescoring.
    score = panel.score
    loose_area = first.mask.sum()
    panel.far_slider.setValue(panel.far_slider.minimum())
    assert panel.score is score and panel.result.mask.sum() <= loose_area
    panel.far_slider.setValue(-40)
    # The false-reject rate re-thresholds images live, from the calibration.
    strict = panel.inspector.image_threshold_
    panel.settings_form.widgets["false_reject_rate"].setValue(0.4)
    assert panel.inspector.false_reject_rate == 0.4 and panel.inspector.image_threshold_ < strict
    assert panel.result.image_threshold == panel.inspector.image_threshold_ and panel.score is score
    panel.settings_form.widgets["false_reject_rate"].setValue(0.05)
    # Step to the defect-free part with the keyboard shortcut's slot.
    with qtbot.waitSignal(panel.inspected, timeout=WAIT_MS):
        panel.next_image()
    with qtbot.waitSignal(panel.inspected, timeout=WAIT_MS):
        panel.next_image()
    assert panel.index == 2 and panel.result.passed and panel.result.regions == []
    assert "PASS" in panel.verdict_label.text()
    with qtbot.waitSignal(panel.reportWritten, timeout=WAIT_MS):
        panel.write_report(tmp_path / "report.csv")
    rows = list(csv.DictReader(open(tmp_path / "report.csv")))
    assert [Path(r["input"]).name for r in rows] == ["part20.png", "part21.png", "part99_good.png"]
    assert [r["verdict"] for r in rows] == ["fail", "fail", "pass"]


def test_export_dialog_asks_before_replacing(qtbot, window, tmp_path, monkeypatch):
    from gmmseg.gui.dialogs import ExportDialog

    window.open_image(SAMPLE)
    window.k_spin.setValue(2)
    _fit(qtbot, window)
    out = tmp_path / "exp"
    out.mkdir()
    (out / "labels.png").write_bytes(b"keep me")
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.No)
    dialog = ExportDialog(window, out, 2)
    qtbot.addWidget(dialog)
    dialog.accept()
    assert asked and "already exist" in asked[0]
    assert dialog.result() != dialog.DialogCode.Accepted and not dialog.overwrite
    assert (out / "labels.png").read_bytes() == b"keep me"
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    dialog.accept()
    assert dialog.overwrite and dialog.result() == dialog.DialogCode.Accepted
    assert set(dialog.outputs()) >= {"labels", "masks", "summary"}


def test_drop_a_file_opens_it(qtbot, window):
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(SAMPLE))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                       Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(window.imageLoaded, timeout=5000):
        window.dropEvent(event)
    assert window.image_path == SAMPLE


def test_running_workers_are_counted(qtbot):
    """The leftover-thread check in the fixture can fail: a worker inside
    run() is counted until it returns."""
    release = threading.Event()

    class Blocking(Worker):
        def work(self):
            release.wait(10)

    worker = Blocking()
    worker.start()
    qtbot.waitUntil(lambda: Worker.running_count() == 1, timeout=5000)
    release.set()
    assert worker.wait(5000)
    assert Worker.running_count() == 0


# ---------------------------------------------------------------------------
# The Model panel is the settings table: every setting is there, survives a
# restart, and reaches Run, Auto K and the inspection fit.
def _set_every_setting(window, **values):
    """Put a non-default value in every widget of the Model panel."""
    from gmmseg import SegmenterParams

    wanted = SegmenterParams(n_components=3, covariance_type="diag", color_space="rgb", spatial_weight=0.0,
                             smoothing=1.5, max_iter=9, tol=0.0, reg_covar=1e-4, n_init=2, n_starts=3,
                             init_params="random", random_state=5, max_samples=5000, k_criterion="aic",
                             spatial_fit_pixels=9000, texture_scales=(1, 3), illumination_sigma=4.0).replace(**values)
    window.model_panel.set_values(wanted)
    return wanted


def test_every_model_setting_survives_a_restart(qtbot, tmp_path):
    from gmmseg import SegmenterParams

    settings_file = str(tmp_path / "s.ini")
    first = MainWindow(QSettings(settings_file, QSettings.Format.IniFormat))
    qtbot.addWidget(first)
    assert set(first.model_panel.widgets) == set(SegmenterParams.names())
    wanted = _set_every_setting(first, spatial_weight=0.3)
    assert first.current_params() == wanted
    first.inspection.settings_form.widgets["min_area"].setValue(40)
    first.close()
    second = MainWindow(QSettings(settings_file, QSettings.Format.IniFormat))
    qtbot.addWidget(second)
    assert second.current_params() == wanted
    assert second.inspection.settings_form.params().min_area == 40
    second.close()


def test_auto_k_honours_every_setting(qtbot, window):
    from gmmseg import select_k

    window.open_image(sample_images_dir() / "surface_good.png")
    wanted = _set_every_setting(window)
    with qtbot.waitSignal(window.autoKFinished, timeout=WAIT_MS):
        window.run_auto_k()
    ks = [r["k"] for r in window.autok_rows]
    expected = select_k(window.image, k_range=ks, params=wanted).rows
    assert window.autok_rows == expected


def test_inspection_fit_uses_the_model_panel(qtbot, window):
    window.open_image(sample_images_dir() / "surface_good.png")
    wanted = _set_every_setting(window, spatial_weight=0.2)
    window.inspection.settings_form.widgets["smoothing_sigma"].setValue(2.5)
    window.inspection.set_references([sample_images_dir() / "surface_good.png"])
    with qtbot.waitSignal(window.inspection.fitted, timeout=WAIT_MS):
        window.inspection.fit()
    inspector = window.inspection.inspector
    # Everything but the spatial prior and positions: inspection models colours alone.
    wanted = wanted.replace(smoothing=0.0, spatial_weight=0.0)
    assert inspector.params == wanted and inspector.segmenter_.params == wanted
    assert inspector.inspection.smoothing_sigma == 2.5 and not inspector.inspection.auto_k
    # With "Choose K by BIC" the panel's other settings still reach the sweep.
    window.inspection.settings_form.widgets["auto_k"].setChecked(True)
    with qtbot.waitSignal(window.inspection.fitted, timeout=WAIT_MS):
        window.inspection.fit()
    chosen = window.inspection.inspector
    assert chosen.inspection.auto_k and chosen.segmenter_.params == wanted.replace(n_components=chosen.k_selection_.best_k)


def test_odd_stored_settings_and_unshowable_model_values(qtbot, tmp_path):
    """A damaged settings file does not stop the application, and a model
    whose values the panel cannot show says so instead of rounding them."""
    from gmmseg import Segmenter

    ini = str(tmp_path / "s.ini")
    store = QSettings(ini, QSettings.Format.IniFormat)
    for key, value in (("random_state", "3000000000"), ("max_samples", "9" * 30), ("tol", "abc"),
                       ("covariance_type", "cubic"), ("n_components", "7")):
        store.setValue(f"model/{key}", value)
    store.sync()
    window = MainWindow(QSettings(ini, QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    params = window.current_params()
    assert params.n_components == 7 and params.random_state == 0 and params.tol == 1e-3
    assert params.covariance_type == "full" and params.max_samples is None
    path = tmp_path / "m.json"
    Segmenter(2, tol=1e-12, random_state=0).fit(np.random.RandomState(0).rand(20, 20, 3)).save(path)
    assert window.load_model(path)
    assert "tol=1e-12" in window.statusBar().currentMessage()
    assert window.current_params().n_components == 2
    window.close()


def test_minimum_area_applies_to_the_model_in_use(qtbot, window):
    window.open_image(sample_images_dir() / "surface_defect.png")
    window.k_spin.setValue(3)
    window.inspection.set_references([sample_images_dir() / "surface_good.png"])
    with qtbot.waitSignal(window.inspection.inspected, timeout=WAIT_MS):
        window.inspection.fit()
    assert window.inspection.result.regions
    with qtbot.waitSignal(window.inspection.inspected, timeout=WAIT_MS):
        window.inspection.settings_form.widgets["min_area"].setValue(1_000_000)
    assert window.inspection.inspector.inspection.min_area == 1_000_000
    assert window.inspection.result.regions == [] and window.inspection.result.passed


def test_live_preview_and_ellipses_with_position_features(qtbot, window):
    """With the default position features the live preview labels colours by
    the mixture's colour marginal, and the colour-space panel draws it."""
    import warnings

    from gmmseg import EMProgress, Segmenter, load_image
    from gmmseg.gui.workers import FitWorker

    image = load_image(SAMPLE)
    params = Segmenter(4, random_state=0).params
    assert params.spatial_weight > 0
    worker = FitWorker(image, params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = Segmenter(params=params).fit(image)
    gm = seg.gmm_
    assert gm.means_.shape[1] == 5
    progress = EMProgress(0, 1, 0.0, 0.0, gm.weights_, gm.means_, gm.covariances_, False, gm.precisions_cholesky_)
    preview = worker._render_preview(worker._preview_data(Segmenter(params=params)), progress, "full")
    pixels = np.frombuffer(preview.constBits(), np.uint8)[: preview.width() * preview.height() * 3]
    assert not preview.isNull() and len(np.unique(pixels)) > 3
    window.open_image(SAMPLE)
    window._fit_params = params
    window._update_density(live={"means": gm.means_, "covariances": gm.covariances_})
    assert len(window.density._ellipses) == 4


@pytest.mark.parametrize("scales", [(1,), (1, 2, 4)])
def test_texture_only_models_fit_and_draw(qtbot, window, monkeypatch, scales):
    """With texture alone there is no colour block to preview or draw in the
    colour space (one scale gives fewer features than the colour space has);
    the fit, the live updates and the colour-space panel still work."""
    from gmmseg.gui import workers

    monkeypatch.setattr(workers, "PREVIEW_INTERVAL_S", 0.0)  # a preview on every iteration
    assert window.open_image(SAMPLE)
    window.model_panel.set_values(window.current_params().replace(
        n_components=3, feature_set="texture", texture_scales=scales, smoothing=0.0, spatial_weight=0.0))
    assert not _fit(qtbot, window)
    assert window.segmentation.n_components == 3
    window._update_density(recompute=True)
    assert window.density._density is not None
