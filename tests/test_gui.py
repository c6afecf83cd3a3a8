"""The real main window, driven offscreen with pytest-qt."""

import json
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("PySide6")
from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtWidgets import QDockWidget, QFileDialog, QMessageBox, QTabBar  # noqa: E402

from gmmseg.gui.dialogs import ExportDialog  # noqa: E402
from gmmseg.gui.file_actions import IMAGE_FILTER  # noqa: E402
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


def _open(qtbot, window, path):
    """Open an image as the window does (loaded in a worker) and wait until it is shown."""
    window.open_image(path)
    qtbot.waitUntil(lambda: not window.session.is_running("load"), timeout=WAIT_MS)
    return window.session.image_path == Path(path)


def _idle(qtbot, window, timeout=WAIT_MS):
    qtbot.waitUntil(lambda: not window.session.busy, timeout=timeout)


def _fit(qtbot, window, **settings):
    session = window.session
    if settings:
        session.set_settings(session.settings.replace(**settings))
    window.act_run.trigger()
    _idle(qtbot, window)
    return session.segmentation


def test_open_run_and_every_view(qtbot, window):
    assert _open(qtbot, window, SAMPLE)
    assert window.canvas.has_image() and window.windowTitle().startswith("coffee.jpg")
    seg = _fit(qtbot, window, n_components=4)
    assert seg.n_components == 4 and window.components.rowCount() == 4
    assert [window.components.horizontalHeaderItem(i).text() for i in range(6)][0] == "Colour"
    for mode in VIEW_MODES:
        window.view_actions[mode].trigger()
        _idle(qtbot, window)
        pix = window.canvas.current_pixmap()
        assert (pix.width(), pix.height()) == (600, 400) and window.session.view == mode
        assert window.view_combo.currentData() == mode
    window.session.set_view("soft")
    assert window.colorbar.isVisibleTo(window)


def test_the_empty_window_says_what_to_do(qtbot, window):
    from gmmseg.gui.canvas import EMPTY_HINT

    assert not window.canvas.has_image() and "Ctrl+O" in EMPTY_HINT
    shot = window.canvas.grab().toImage()
    grey = shot.pixelColor(2, 2)
    # the hint's white text is drawn over the grey background
    whites = sum(shot.pixelColor(x, y).lightness() > 240 for x in range(0, shot.width(), 3)
                 for y in range(0, shot.height(), 3))
    assert grey.lightness() < 200 and whites > 20
    assert window.components.horizontalHeaderItem(0).text() == "Colour"
    header = window.components.horizontalHeader()
    metrics = header.fontMetrics()
    for col in (2, 3, 4, 5):  # no header cut before the first run
        text = window.components.horizontalHeaderItem(col).text()
        assert header.sectionSize(col) >= metrics.horizontalAdvance(text), text


def test_the_window_fits_a_laptop_screen(qtbot, window):
    """The tall panels scroll, so the window fits 1366 x 768 with room for a
    title bar and a task bar."""
    window.resize(1366, 680)
    qtbot.waitUntil(lambda: window.size().height() == 680)
    assert window.minimumSizeHint().height() <= 680 and window.minimumSizeHint().width() <= 1366
    assert window.model_panel.run_button.isVisibleTo(window)


def _check_dock_tabs(qtbot, window):
    """One visible tab bar per tabified pair, naming the pair, under the dock
    shown and over no dock (Qt once left a stale second bar over the docks)."""
    groups = [(window.dock_components, window.dock_inspection), (window.dock_anomaly, window.dock_space),
              (window.dock_conv, window.dock_bic)]
    for first, second in groups:
        for dock in (second, first):
            dock.raise_()
            qtbot.waitUntil(lambda d=dock: d.visibleRegion().isEmpty() is False)
            bars = [b for b in window.findChildren(QTabBar, options=Qt.FindChildOption.FindDirectChildrenOnly)
                    if b.isVisible()]
            assert len(bars) == len(groups), [[b.tabText(i) for i in range(b.count())] for b in bars]
            mine = [b for b in bars if {b.tabText(i) for i in range(b.count())}
                    == {first.windowTitle(), second.windowTitle()}]
            assert len(mine) == 1
            assert mine[0].geometry().top() >= dock.geometry().bottom()
            assert mine[0].geometry().left() == dock.geometry().left()
            shown = [d for d in window.findChildren(QDockWidget) if not d.visibleRegion().isEmpty()]
            for bar in bars:
                assert not any(bar.geometry().intersects(d.geometry()) for d in shown), bar.tabText(0)


def test_each_tabified_dock_pair_has_one_tab_bar(qtbot, window, tmp_path):
    _check_dock_tabs(qtbot, window)
    window.close()  # writes the window state; the next window restores it
    again = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(again)
    again.show()
    _check_dock_tabs(qtbot, again)
    again.close()


def test_the_overlay_toggle_is_a_check_box(qtbot, window):
    _open(qtbot, window, SAMPLE)
    _fit(qtbot, window, n_components=3)
    assert window.overlay_check.isChecked()
    window.overlay_check.setChecked(False)
    assert not window.act_overlay.isChecked() and not window.session.overlay
    _idle(qtbot, window)
    assert np.array_equal(window.session.picture, window.session.base_rgb)
    window.act_overlay.trigger()
    assert window.overlay_check.isChecked() and window.session.overlay


def test_components_table_drives_the_view(qtbot, window):
    _open(qtbot, window, SAMPLE)
    _fit(qtbot, window, n_components=3, smoothing=0.0, spatial_weight=0.0)
    table, session = window.components, window.session
    table.item(0, 5).setCheckState(Qt.CheckState.Unchecked)
    _idle(qtbot, window)
    zero = session.segmentation.labels == 0
    assert np.array_equal(session.picture[zero], session.base_rgb[zero])
    table.selectRow(2)
    assert session.view == "soft" and session.component == 2
    table.item(1, 1).setText("saucer")
    assert session.names[1] == "saucer" and session.segmentation.names[1] == "saucer"
    window.canvas.hovered.emit(10, 10)
    assert "label" in window.hover_label.text() and "log-lik" in window.hover_label.text()


def test_inspection_follows_opened_and_stepped_images(qtbot, window, tmp_path, monkeypatch):
    from imagefiles import write_inspection_set

    refs, parts = write_inspection_set(tmp_path, (1, 2), (20, 21), 60)
    session, panel = window.session, window.inspection
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(parts / "part20.png"), ""))
    session.set_references(refs)
    panel.fit_button.click()
    _idle(qtbot, window)
    assert session.inspector is not None and session.inspection is None  # nothing shown, nothing inspected
    window.act_open.trigger()  # Ctrl+O
    _idle(qtbot, window)
    assert session.inspection is not None and session.view == "inspection"
    assert panel.verdict_label.text().startswith("part20.png") and "FAIL" in panel.verdict_label.text()
    assert panel.regions.rowCount() == len(session.inspection.regions) >= 1
    header = panel.regions.horizontalHeader()
    for col in range(panel.regions.columnCount()):  # no header cut, no value wrapped
        texts = [panel.regions.horizontalHeaderItem(col).text()]
        texts += [panel.regions.item(row, col).text() for row in range(panel.regions.rowCount())]
        assert header.sectionSize(col) >= max(header.fontMetrics().horizontalAdvance(t) for t in texts), texts
    assert panel.report_button.isEnabled()  # a report of the one image inspected
    assert window.files.open_folder(parts)
    _idle(qtbot, window)
    shown = []
    while True:
        assert session.scored.image is session.image
        shown.append((session.image_name, session.inspection.verdict))
        assert panel.verdict_label.text().startswith(session.image_name)
        if not panel.next_button.isEnabled():
            break
        window.act_next.trigger()  # Page Down
        _idle(qtbot, window)
    assert shown == [("part20.png", "fail"), ("part21.png", "fail"), ("part99_good.png", "pass")]
    before = window.canvas.scale_factor()
    window.act_previous.trigger()
    _idle(qtbot, window)
    panel.zoom_to_region(0)
    assert window.canvas.scale_factor() > before


def test_fitting_references_names_the_image_it_inspects(qtbot, window, tmp_path):
    from imagefiles import write_inspection_set

    refs, _ = write_inspection_set(tmp_path, (1, 2), (20,), 60)
    _open(qtbot, window, SAMPLE)
    window.session.set_references(refs)
    window.inspection.fit_button.click()
    _idle(qtbot, window)
    assert window.inspection.verdict_label.text().startswith("coffee.jpg:")
    assert window.session.status_text.startswith("coffee.jpg:")


def test_auto_k_refits_and_export_and_save_follow(qtbot, window, tmp_path, monkeypatch):
    _open(qtbot, window, sample_images_dir() / "surface_good.png")
    panel = window.model_selection
    panel.k_from.setValue(2)
    panel.k_to.setValue(5)
    assert window.session.k_range == (2, 5)
    window.act_autok.trigger()
    _idle(qtbot, window)
    session = window.session
    best = session.k_selection.best_k
    assert [r["k"] for r in session.k_rows] == [2, 3, 4, 5]
    assert window.model_panel.widgets["n_components"].value() == session.model_k() == best
    assert f"Chosen K = {best}" in panel.rule_label.text() and session.k_selection.rule in panel.rule_label.text()
    assert ("edge of the range" in panel.rule_label.text()) == session.k_selection.at_edge
    # Save Model and Export write the model shown, from the image's folder.
    saved = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda parent, title, path, *a: saved.append(path) or (str(tmp_path / "m.json"), ""))
    window.act_save_model.trigger()
    assert Path(saved[0]).parent == sample_images_dir() and f"K = {best}" in window.session.status_text
    from gmmseg import Segmenter

    assert Segmenter.load(tmp_path / "m.json").n_components == best
    session.export(tmp_path / "out", ["summary"], overwrite=False)
    _idle(qtbot, window)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["settings"]["n_components"] == best
    assert session.status_text.startswith("exported 1 files") and str(tmp_path / "out") in window.status.label.text()
    # A point of the curve refits with its K.
    other = 2 if best != 2 else 3
    panel.plot.kClicked.emit(other)
    _idle(qtbot, window)
    assert window.model_panel.widgets["n_components"].value() == session.model_k() == other
    # Changing K in the panel is flagged until Run.
    window.model_panel.widgets["n_components"].setValue(other + 1)
    assert "differ" in window.model_panel.model_label.text() and session.model_k() == other


def test_dialogs_start_in_the_images_folder_and_list_every_image_type(qtbot, window, tmp_path, monkeypatch):
    import shutil

    image = tmp_path / "pictures" / "coffee.jpg"
    image.parent.mkdir()
    shutil.copy(SAMPLE, image)
    for suffix in ("webp", "gif", "png", "jpg", "tif", "bmp"):
        assert f"*.{suffix}" in IMAGE_FILTER
    asked = []

    def remember(parent, title, path, *rest, **kwargs):
        asked.append((title, path, rest))
        return "", ""

    monkeypatch.setattr(QFileDialog, "getOpenFileName", remember)
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", remember)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", remember)
    window.act_open.trigger()
    assert asked[-1][2][0] == IMAGE_FILTER
    _open(qtbot, window, image)
    _fit(qtbot, window, n_components=2)
    window.files.choose_references()
    assert asked[-1][2][0] == IMAGE_FILTER
    for action in (window.act_save_model, window.act_save_view):
        action.trigger()
        assert Path(asked[-1][1]).parent == image.parent, asked[-1]
    shown = []
    monkeypatch.setattr(ExportDialog, "exec", lambda self: shown.append(self.folder()) and False)
    window.act_export.trigger()
    assert shown == [image.parent / "coffee"]


def test_cancel_leaves_the_window_idle_at_once(qtbot, window, tmp_path):
    rng = np.random.RandomState(0)
    path = tmp_path / "noise.png"
    Image.fromarray((rng.rand(600, 800, 3) * 255).astype(np.uint8)).save(path)
    _open(qtbot, window, path)
    session = window.session
    session.set_settings(session.settings.replace(n_components=8, tol=0.0, max_iter=5000, smoothing=0.0))
    window.act_run.trigger()
    qtbot.waitUntil(lambda: len(session.ll_history) >= 2, timeout=WAIT_MS)
    window.act_cancel.trigger()  # Esc
    assert not session.busy and window.act_run.isEnabled() and not window.act_cancel.isEnabled()
    assert "stopped" in window.status.label.text() and window.status.bar.isHidden()
    qtbot.waitUntil(lambda: window.runner.running() == [], timeout=WAIT_MS)
    session.set_settings(session.settings.replace(max_iter=3))
    assert _fit(qtbot, window) is not None  # usable again


def test_a_stopped_fit_keeps_its_model_and_computes_maps_on_request(qtbot, window, monkeypatch):
    _open(qtbot, window, SAMPLE)
    session = window.session
    original = session._start

    def cancel_at_the_maps(kind, work, *, progress=None, **kwargs):
        def watch(value):
            progress(value)
            if value[0] == "model":
                session.cancel()

        return original(kind, work, progress=watch if kind == "fit" else progress, **kwargs)

    monkeypatch.setattr(session, "_start", cancel_at_the_maps)
    _fit(qtbot, window, n_components=3)
    assert session.segmenter is not None and session.segmentation is None
    assert window.act_maps.isEnabled() and window.act_save_model.isEnabled() and not window.act_export.isEnabled()
    monkeypatch.setattr(session, "_start", original)
    window.act_maps.trigger()
    _idle(qtbot, window)
    assert session.segmentation is not None and window.act_export.isEnabled()


def _strips_of_the_label_view(window, monkeypatch, rows=40):
    """Maps in strips of ``rows`` rows of the 600-pixel-wide sample, and a
    list of the strips the canvas was handed (start, stop)."""
    import gmmseg.segment

    monkeypatch.setattr(gmmseg.segment, "_STRIP_PIXELS", 600 * rows)
    strips = []
    window.session.events.strip.connect(lambda start, stop, picture: strips.append((start, stop)))
    return strips


def test_full_resolution_maps_are_shown_strip_by_strip(qtbot, window, monkeypatch):
    from gmmseg.gui.canvas import qimage_for_display
    from gmmseg.gui.render import render_view

    _open(qtbot, window, SAMPLE)
    strips = _strips_of_the_label_view(window, monkeypatch)
    on_canvas = []
    window.session.events.strip.connect(lambda *a: on_canvas.append(len(window.canvas._strips)))
    seg = _fit(qtbot, window, n_components=4)  # default settings: smoothing, so maps come strip by strip
    assert strips == [(r, min(r + 40, 400)) for r in range(0, 400, 40)]
    assert on_canvas == list(range(1, 11))  # each drawn over the preview as it came
    session = window.session
    # what is shown at the end is the label view of the segmentation
    assert session.view == "labels" and session.segmentation is seg
    expected, _, _ = render_view(session.view_request())
    assert np.array_equal(session.picture, expected)
    assert window.canvas.current_pixmap().toImage() == qimage_for_display(expected)
    assert window.canvas._strips == []


def test_cancelling_the_maps_halfway_leaves_an_idle_usable_window(qtbot, window, monkeypatch):
    from gmmseg.gui.render import render_view

    _open(qtbot, window, SAMPLE)
    strips = _strips_of_the_label_view(window, monkeypatch)
    session = window.session
    session.events.strip.connect(lambda *a: len(strips) == 4 and window.act_cancel.trigger())
    _fit(qtbot, window, n_components=4)
    assert len(strips) == 4 and not session.busy and session.segmentation is None
    assert session.segmenter is not None and "maps not computed" in window.status.label.text()
    assert window.act_run.isEnabled() and window.act_maps.isEnabled() and not window.act_cancel.isEnabled()
    qtbot.waitUntil(lambda: window.runner.running() == [], timeout=WAIT_MS)
    assert len(strips) == 4  # the worker stopped between strips; nothing more was shown
    window.act_maps.trigger()
    _idle(qtbot, window)
    assert len(strips) == 14 and session.segmentation is not None
    assert np.array_equal(session.picture, render_view(session.view_request())[0])


def test_large_images_are_drawn_in_a_worker(qtbot, window, tmp_path, monkeypatch):
    from gmmseg.gui import session as session_module

    monkeypatch.setattr(session_module, "INLINE_RENDER_PIXELS", 1000)
    _open(qtbot, window, SAMPLE)  # its picture is made by the worker that loads it
    session = window.session
    assert not session.is_running("render") and window.canvas.current_pixmap().width() == 600
    _fit(qtbot, window, n_components=3)  # the label view is drawn by the fit's worker
    assert not session.is_running("render") and session.view == "labels"
    session.set_view("soft")
    assert session.is_running("render")  # other views are drawn off the GUI thread too
    qtbot.waitUntil(lambda: not session.is_running("render"), timeout=WAIT_MS)
    assert window.canvas.current_pixmap().width() == 600 and session.picture is not None


def test_auto_k_honours_every_setting(qtbot, window):
    from gmmseg import select_k

    _open(qtbot, window, sample_images_dir() / "surface_good.png")
    wanted = _set_every_setting(window)
    window.session.set_k_range(1, 4)
    window.session.run_auto_k(refit=False)
    _idle(qtbot, window)
    expected = select_k(window.session.image, k_range=range(1, 5), params=wanted).rows
    assert window.session.k_rows == expected


def test_inspection_fit_uses_the_model_panel(qtbot, window):
    _open(qtbot, window, sample_images_dir() / "surface_good.png")
    wanted = _set_every_setting(window, spatial_weight=0.2)
    window.inspection.settings_form.widgets["smoothing_sigma"].setValue(2.5)
    # The inspection's own features: auto and a 32 px row/column background
    # unless set in the Inspection panel, whatever the Model panel says.
    features = window.inspection.model_form.widgets
    assert features["feature_set"].currentText() == "auto" and features["row_column_sigma"].value() == 32.0
    assert wanted.feature_set != "auto" and wanted.row_column_sigma != 12.0 and wanted.max_samples != 1_000_000
    features["row_column_sigma"].setValue(12.0)
    window.session.set_references([sample_images_dir() / "surface_good.png"])
    window.session.fit_inspector()
    _idle(qtbot, window)
    inspector = window.session.inspector
    wanted = wanted.replace(smoothing=0.0, spatial_weight=0.0, feature_set="auto", row_column_sigma=12.0,
                            max_samples=1_000_000)
    assert inspector.params == wanted and inspector.segmenter_.params == wanted
    assert inspector.inspection.smoothing_sigma == 2.5 and not inspector.inspection.auto_k
    assert "(one of the references)" in window.inspection.verdict_label.text()


def test_minimum_area_applies_to_the_model_in_use(qtbot, window):
    _open(qtbot, window, sample_images_dir() / "surface_defect.png")
    window.session.set_settings(window.session.settings.replace(n_components=3))
    window.session.set_references([sample_images_dir() / "surface_good.png"])
    window.session.fit_inspector()
    _idle(qtbot, window)
    assert window.session.inspection.regions
    window.inspection.settings_form.widgets["min_area"].setValue(1_000_000)
    assert window.session.inspector.inspection.min_area == 1_000_000
    assert window.session.inspection.regions == [] and window.session.inspection.passed


@pytest.mark.parametrize("scales", [(1,), (1, 2, 4)])
def test_texture_only_models_fit_and_draw(qtbot, window, scales):
    """With texture alone there is no colour block to preview or draw in the
    colour space; the fit, its progress and the colour-space panel still work."""
    assert _open(qtbot, window, SAMPLE)
    seg = _fit(qtbot, window, n_components=3, feature_set="texture", texture_scales=scales, smoothing=0.0,
               spatial_weight=0.0)
    assert seg.n_components == 3
    window.colour_space.redraw(recompute=True)
    assert window.colour_space.density._density is not None and window.colour_space.density._ellipses == []


def test_corrupt_file_leaves_the_current_image(qtbot, window, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(QMessageBox, "critical", lambda *args: shown.append(args[2]))
    _open(qtbot, window, SAMPLE)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert not _open(qtbot, window, bad)
    assert shown and "broken.png" in shown[0] and "broken.png" in window.status.label.text()
    assert window.session.image_path == SAMPLE and window.canvas.has_image()
    assert not _open(qtbot, window, tmp_path / "missing.jpg")
    assert "file not found" in shown[-1]
    assert window.files.recent == [str(SAMPLE.resolve())]


def test_image_larger_than_memory_allows_is_opened_only_when_confirmed(qtbot, window, tmp_path, monkeypatch):
    from PIL import Image

    import gmmseg.io

    path = tmp_path / "big.png"
    Image.fromarray(np.full((30, 40, 3), 200, dtype=np.uint8)).save(path)
    _open(qtbot, window, SAMPLE)
    monkeypatch.setattr(gmmseg.io, "default_max_pixels", lambda: 1000)  # as if memory held 1000 pixels
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.Cancel)
    assert not _open(qtbot, window, path)
    assert "40 x 30" in asked[0]
    assert "max_pixels" not in asked[0] and "Open it anyway?" in asked[0]
    assert window.session.image_path == SAMPLE
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Open)
    assert _open(qtbot, window, path) and window.session.image.width == 40


def _slow_loads(monkeypatch):
    """Loads that wait for ``release`` to be set (in the worker), so a test
    can act while an image is loading."""
    from gmmseg.gui import session as session_module

    release = threading.Event()
    started = []

    def load_image(path, max_pixels=None):
        started.append(Path(path).name)
        release.wait(WAIT_MS / 1000)
        return real_load(path, max_pixels=max_pixels)

    real_load = session_module.load_image
    monkeypatch.setattr(session_module, "load_image", load_image)
    return release, started


def test_an_image_loads_in_a_worker_and_esc_cancels_it(qtbot, window, monkeypatch):
    _open(qtbot, window, SAMPLE)
    session = window.session
    release, started = _slow_loads(monkeypatch)
    surface = sample_images_dir() / "surface_good.png"
    window.open_image(surface)
    qtbot.waitUntil(lambda: started == ["surface_good.png"], timeout=WAIT_MS)
    # the window serves events while the image loads, and says so
    assert session.is_running("load") and window.status.label.text() == "loading surface_good.png..."
    assert window.act_cancel.isEnabled() and not window.status.bar.isHidden()
    window.act_cancel.trigger()  # Esc
    assert not session.busy and session.image_path == SAMPLE and window.act_run.isEnabled()
    assert window.status.label.text().startswith("opening cancelled; coffee.jpg")
    release.set()
    qtbot.waitUntil(lambda: window.runner.running() == [], timeout=WAIT_MS)
    qtbot.wait(50)  # what the cancelled load still delivers is ignored
    assert session.image_path == SAMPLE and window.windowTitle().startswith("coffee.jpg")
    assert window.canvas.current_pixmap().width() == 600


def test_opening_another_image_while_one_loads_replaces_it(qtbot, window, monkeypatch):
    release, started = _slow_loads(monkeypatch)
    window.open_image(sample_images_dir() / "surface_good.png")
    qtbot.waitUntil(lambda: len(started) == 1, timeout=WAIT_MS)
    window.open_image(SAMPLE)
    qtbot.waitUntil(lambda: len(started) == 2, timeout=WAIT_MS)
    release.set()
    qtbot.waitUntil(lambda: not window.session.busy and window.runner.running() == [], timeout=WAIT_MS)
    assert window.session.image_path == SAMPLE and window.canvas.current_pixmap().width() == 600
    assert window.files.recent == [str(SAMPLE.resolve())]


def test_settings_are_kept_between_sessions(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    first = MainWindow(settings)
    qtbot.addWidget(first)
    _open(qtbot, first, SAMPLE)
    first.model_panel.widgets["n_components"].setValue(7)
    first.model_panel.widgets["covariance_type"].setCurrentText("diag")
    first.close()
    second = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(second)
    assert second.session.settings.n_components == 7 and second.session.settings.covariance_type == "diag"
    assert second.files.recent and second.files.recent[0].endswith("coffee.jpg")
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


def test_export_dialog_asks_before_replacing(qtbot, window, tmp_path, monkeypatch):
    from gmmseg.gui.dialogs import ExportDialog

    _open(qtbot, window, SAMPLE)
    window.session.set_settings(window.session.settings.replace(n_components=2))
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
    window.dropEvent(event)
    qtbot.waitUntil(lambda: window.session.image_path == SAMPLE, timeout=WAIT_MS)


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


def _set_every_setting(window, **values):
    """Put a non-default value in every widget of the Model panel."""
    from gmmseg import SegmenterParams

    wanted = SegmenterParams(n_components=3, covariance_type="diag", color_space="rgb", spatial_weight=0.0,
                             smoothing=1.5, max_iter=9, tol=0.0, reg_covar=1e-4, n_init=2, n_starts=3,
                             init_params="random", random_state=5, max_samples=5000, k_criterion="aic",
                             spatial_fit_pixels=9000, texture_scales=(1, 3), illumination_sigma=4.0).replace(**values)
    window.model_panel.form.set_values(wanted)
    return wanted


def test_every_model_setting_survives_a_restart(qtbot, tmp_path):
    from gmmseg import SegmenterParams

    settings_file = str(tmp_path / "s.ini")
    first = MainWindow(QSettings(settings_file, QSettings.Format.IniFormat))
    qtbot.addWidget(first)
    assert set(first.model_panel.widgets) == set(SegmenterParams.names())
    wanted = _set_every_setting(first, spatial_weight=0.3)
    assert first.model_panel.form.params() == wanted
    first.inspection.settings_form.widgets["min_area"].setValue(40)
    first.inspection.model_form.widgets["feature_set"].setCurrentText("texture")
    first.inspection.model_form.widgets["row_column_sigma"].setValue(20.0)
    first.inspection.model_form.widgets["max_samples"].setValue(0)  # shown as "all": None
    first.close()
    second = MainWindow(QSettings(settings_file, QSettings.Format.IniFormat))
    qtbot.addWidget(second)
    assert second.model_panel.form.params() == wanted
    assert second.inspection.settings_form.params().min_area == 40
    # the Model panel's own feature_set is not the inspection's, and back
    assert second.session.inspection_model.feature_set == "texture" != wanted.feature_set
    assert second.session.inspection_model.row_column_sigma == 20.0 != wanted.row_column_sigma
    assert second.session.inspection_model.max_samples is None and wanted.max_samples == 5000
    second.close()


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
    params = window.model_panel.form.params()
    assert params.n_components == 7 and params.random_state == 0 and params.tol == 1e-3
    assert params.covariance_type == "full" and params.max_samples is None
    path = tmp_path / "m.json"
    Segmenter(2, tol=1e-12, random_state=0).fit(np.random.RandomState(0).rand(20, 20, 3)).save(path)
    assert window.load_model(path)
    qtbot.waitUntil(lambda: not window.session.busy, timeout=WAIT_MS)
    assert "tol=1e-12" in window.session.status_text
    assert window.model_panel.form.params().n_components == 2
    window.close()



def test_a_new_image_starts_with_empty_plots(qtbot, window, tmp_path):
    """The last fit's curve, its axes and the histogram go with its image."""
    assert _open(qtbot, window, SAMPLE)
    _fit(qtbot, window, n_components=3)
    window.session.set_view("anomaly")  # the histogram is drawn
    _idle(qtbot, window)
    # pyqtgraph fits a plot's range to its data when it next paints: wait
    # for that (on a loaded machine it came after the session was idle).
    histogram = window.anomaly_panel.plot
    qtbot.waitUntil(lambda: not np.allclose(histogram.getViewBox().viewRange(), histogram.default_range),
                    timeout=WAIT_MS)
    convergence = window.convergence.plot
    empty_range = convergence.default_range
    assert len(convergence.curve.getData()[0]) > 0
    qtbot.waitUntil(lambda: not np.allclose(convergence.getViewBox().viewRange(), empty_range), timeout=WAIT_MS)
    other = tmp_path / "other.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(other)
    assert _open(qtbot, window, other)
    x, _ = convergence.curve.getData()
    assert x is None or len(x) == 0
    np.testing.assert_allclose(convergence.getViewBox().viewRange(), empty_range)
    assert convergence.getAxis("left").labelText == "log-likelihood per pixel"
    assert not histogram.threshold.isVisible() and len(histogram.bars.opts["height"]) == 0
    np.testing.assert_allclose(histogram.getViewBox().viewRange(), histogram.default_range)


def test_a_note_on_unshown_values_outlasts_the_status_line(qtbot, window, tmp_path):
    """A loaded model's value its panel cannot show is named beside the
    model line, where the shown image's maps or verdict, which take the
    status line when they are ready, do not replace it; the next model
    clears it."""
    from gmmseg import Inspector, Segmenter
    from gmmseg.params import INSPECTION_PANEL_SETTINGS, INSPECTION_REFIT_SETTINGS

    form = window.inspection.settings_form
    assert set(form.widgets) == set(INSPECTION_PANEL_SETTINGS)
    assert {n for n in form.widgets if "next Fit" in form.widgets[n].toolTip()} == set(INSPECTION_REFIT_SETTINGS)
    assert _open(qtbot, window, SAMPLE)
    path = tmp_path / "m.json"
    Segmenter(2, tol=1e-12, random_state=0).fit(np.random.RandomState(0).rand(20, 20, 3)).save(path)
    assert window.load_model(path)
    _idle(qtbot, window)
    assert "maps in" in window.session.status_text  # the maps took the status line
    assert "tol=1e-12 cannot be shown in the Model panel" in window.model_panel.model_label.text()
    _fit(qtbot, window, n_components=2)
    assert "cannot be shown" not in window.model_panel.model_label.text()

    good = sample_images_dir() / "surface_good.png"
    for sigma in (12.345, 12.0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # one reference
            inspector = Inspector(n_components=2, auto_k=False, feature_set="texture", texture_scales=(1, 2),
                                  row_column_sigma=sigma).fit(good)
        window.files.load_inspector(inspector.save(tmp_path / f"inspection{sigma}.json"))
        _idle(qtbot, window)
        assert window.session.inspection is not None and "region(s)" in window.session.status_text  # the verdict
        noted = "row_column_sigma=12.345 cannot be shown in the Inspection panel" in window.inspection.model_label.text()
        assert noted == (sigma == 12.345)


def test_a_loaded_inspection_model_shows_its_features(qtbot, window, tmp_path):
    """The Inspection panel shows the features of the model in use (Fit
    refits with them); a value it cannot show is named, and the next Fit
    uses the panel's value, not a hidden one."""
    from gmmseg import Inspector

    good = sample_images_dir() / "surface_good.png"
    for sigma, shown in ((12.0, 12.0), (12.345, 32.0)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # one reference
            inspector = Inspector(n_components=2, auto_k=False, feature_set="texture", texture_scales=(1, 2),
                                  row_column_sigma=sigma).fit(good)
        path = inspector.save(tmp_path / f"model{sigma}.json")
        window.inspection.model_form.set_values(Inspector().params)  # auto, 32
        window.files.load_inspector(path)
        widgets = window.inspection.model_form.widgets
        assert widgets["feature_set"].currentText() == "texture" and widgets["row_column_sigma"].value() == shown
        assert window.session.inspection_model.row_column_sigma == shown
        assert window.session.inspection_model.feature_set == "texture"
        if sigma != shown:
            assert "row_column_sigma=12.345 cannot be shown in the Inspection panel" in window.session.status_text
