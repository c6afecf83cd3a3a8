"""The napari plugin in napari's own viewer (``make_napari_viewer``).

Skipped where napari is not installed (``pip install -e '.[test,napari]'``
brings it; CI installs it). napari's canvas needs OpenGL, which Qt's
offscreen platform makes through an X display: pytest-xvfb (in the test
extra) starts Xvfb for the session when it is installed.
"""

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from npe2 import PluginManifest  # noqa: E402  (napari brings npe2)
from qtpy.QtCore import Qt, QThreadPool  # noqa: E402

from gmmseg import Inspector, Segmenter, SegmenterParams  # noqa: E402
from gmmseg.export import display_colors  # noqa: E402
from gmmseg.io import load_image  # noqa: E402
from gmmseg.napari import _reader  # noqa: E402
from gmmseg.napari._layer_data import labels_data, region_rectangles  # noqa: E402
from gmmseg.napari._widget import MAIN_SETTINGS, SegmentationWidget  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_images"
WAIT_MS = 240_000  # the first fit of a session compiles the kernels (or loads them from the cache)

if not os.environ.get("DISPLAY"):
    reason = "napari's canvas needs an X display for OpenGL: install Xvfb (apt-get install xvfb), pytest-xvfb starts it"
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def _astronaut(step=4):
    """The astronaut photo at 1/step of its size, uint8 RGB."""
    return np.ascontiguousarray(load_image(SAMPLES / "astronaut.jpg").to_uint8()[::step, ::step])


@pytest.fixture
def viewer_widget(make_napari_viewer, qtbot):
    """A viewer with the plugin's widget docked through its manifest; fails
    when a worker is left running (as napari's own tests do)."""
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("gmmseg", "GMM segmentation")
    yield viewer, widget
    if widget.worker is not None:  # a failed test: stop it before the viewer goes
        with qtbot.waitSignal(widget.done, timeout=WAIT_MS):
            widget.cancel()
    assert QThreadPool.globalInstance().waitForDone(30_000), "a worker thread is still running"
    assert widget.worker is None


def _run(qtbot, widget, action, timeout=WAIT_MS):
    """Start a task and wait until it ends; returns its outcome."""
    with qtbot.waitSignal(widget.done, timeout=timeout) as blocker:
        action()
        assert widget.worker is not None, f"the task did not start: {widget.message.text()}"
    return blocker.args[0]


def _settings(widget, **values):
    for name, value in values.items():
        w = {**widget.form.widgets, **widget.more_form.widgets}[name]
        if hasattr(w, "setCurrentText") and isinstance(value, str):
            w.setCurrentText(value)
        else:
            w.setValue(value)


# ---------------------------------------------------------------------------
def test_manifest_validates():
    manifest = PluginManifest.from_distribution("gmmseg")  # through the napari.manifest entry point
    manifest.validate_imports()  # every python_name imports and exists
    same = PluginManifest.from_file(ROOT / "gmmseg" / "napari" / "napari.yaml")
    assert same.name == manifest.name == "gmmseg"
    assert [w.display_name for w in manifest.contributions.widgets] == ["GMM segmentation"]
    assert manifest.contributions.readers[0].filename_patterns == ["*.json"]
    assert {s.key for s in manifest.contributions.sample_data} == {"astronaut", "surface_good", "surface_defect"}


def test_widget_docks_with_the_settings_table(viewer_widget):
    viewer, widget = viewer_widget
    assert isinstance(widget, SegmentationWidget)
    # The form comes from the settings table: its labels and defaults.
    assert list(widget.form.widgets) == list(MAIN_SETTINGS)
    for name in MAIN_SETTINGS:
        setting = SegmenterParams.setting(name)
        assert widget.form.form.labelForField(widget.form.widgets[name]).text() == setting.label
    assert set(widget.form.widgets) | set(widget.more_form.widgets) == set(SegmenterParams.names())
    assert widget.params() == SegmenterParams()
    from gmmseg.params import INSPECTION_MODEL_SETTINGS, INSPECTION_PANEL_SETTINGS

    # The Inspect tab shows the application's inspection settings.
    assert set(widget.inspection_form.widgets) == set(INSPECTION_PANEL_SETTINGS)
    assert set(widget.inspection_model_form.widgets) == set(INSPECTION_MODEL_SETTINGS)
    # The widget follows the active Image layer.
    viewer.add_image(_astronaut(8), name="a")
    viewer.add_image(_astronaut(8)[:, :, 0], name="b")
    assert widget.image_layer().name == "b"
    viewer.layers.selection.active = viewer.layers["a"]
    assert widget.image_layer().name == "a"
    viewer.layers["a"].name = "renamed"
    assert widget.layer_combo.currentText() == "renamed"
    assert [widget.layer_combo.itemText(i) for i in range(widget.layer_combo.count())] == ["renamed", "b"]


def test_a_removed_widget_leaves_the_viewer_working(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("gmmseg", "GMM segmentation")
    viewer.window.remove_dock_widget(dock)
    connected = len(viewer.layers.events.inserted.callbacks)
    widget.deleteLater()
    qtbot.wait(50)
    assert len(viewer.layers.events.inserted.callbacks) == connected - 1  # the widget disconnected itself
    viewer.add_image(_astronaut(8), name="after")  # the layer events reach no deleted widget
    viewer.layers["after"].name = "renamed"


def test_run_gives_the_labels_of_fit_predict(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    pixels = _astronaut()
    viewer.add_image(pixels, name="astronaut")
    _settings(widget, n_components=3, covariance_type="diag", color_space="lab", spatial_weight=0.5, smoothing=1.0)
    params = widget.params()
    assert (params.n_components, params.covariance_type, params.smoothing) == (3, "diag", 1.0)
    assert _run(qtbot, widget, widget.run) == "segmented", widget.message.text()

    expected = Segmenter(params=params).fit_predict(pixels)
    labels = viewer.layers["astronaut gmm labels"]
    assert isinstance(labels, napari.layers.Labels)
    np.testing.assert_array_equal(labels.data.astype(np.int64) - 1, expected.labels)
    # Coloured with the component colours (label k + 1 = component k).
    for k, rgb in enumerate(expected.component_colors):
        np.testing.assert_allclose(labels.colormap.map(np.array([k + 1]))[0, :3], rgb, atol=1e-6)
    probabilities = viewer.layers["astronaut gmm probabilities"]
    assert probabilities.data.shape == (3, *pixels.shape[:2])
    np.testing.assert_allclose(np.asarray(probabilities.data), np.moveaxis(expected.probabilities, 2, 0), atol=1e-6)
    np.testing.assert_allclose(viewer.layers["astronaut gmm log-likelihood"].data, expected.log_likelihood, rtol=1e-5)
    anomaly = viewer.layers["astronaut gmm anomaly"]
    np.testing.assert_array_equal(anomaly.data.astype(bool), expected.anomaly_mask(percentile=1.0))
    # The percentile re-thresholds the shown result; a second run replaces the layers.
    widget.percentile_spin.setValue(5.0)
    flagged = viewer.layers["astronaut gmm anomaly"].data.astype(bool)
    np.testing.assert_array_equal(flagged, expected.anomaly_mask(percentile=5.0))
    count = len(viewer.layers)
    assert _run(qtbot, widget, widget.run) == "segmented"
    assert len(viewer.layers) == count
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_grey_and_rgba_layers(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    rgb = _astronaut(8)
    grey = rgb[:, :, 1]
    viewer.add_image(grey, name="grey")
    _settings(widget, n_components=2, smoothing=0.0, spatial_weight=0.0)
    assert _run(qtbot, widget, widget.run) == "segmented", widget.message.text()
    expected = Segmenter(params=widget.params()).fit_predict(grey)
    np.testing.assert_array_equal(viewer.layers["grey gmm labels"].data.astype(int) - 1, expected.labels)
    # Grey components' mean colours are greys: the layer shows distinct hues instead, as labels.png does.
    colormap = viewer.layers["grey gmm labels"].colormap
    shown = np.array([colormap.map(k)[..., :3].ravel() for k in (1, 2)])
    np.testing.assert_allclose(shown, display_colors(expected.component_colors, True), atol=1e-6)
    assert np.abs(shown[0] - shown[1]).max() > 0.3

    # RGBA: transparent pixels are left out (label 0, as the application masks them).
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:20, :, 3] = 0
    layer = viewer.add_image(rgba, name="rgba", rgb=True)
    viewer.layers.selection.active = layer
    assert _run(qtbot, widget, widget.run) == "segmented", widget.message.text()
    labels = viewer.layers["rgba gmm labels"].data
    assert (labels[:20] == 0).all() and (labels[20:] > 0).all()
    expected = Segmenter(params=widget.params()).fit_predict(rgba)
    np.testing.assert_array_equal(labels.astype(int) - 1, expected.labels)


def test_cancel_stops_the_fit_and_adds_nothing(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    viewer.add_image(_astronaut(2), name="big")
    _settings(widget, n_components=8, max_iter=100_000, tol=0.0, n_starts=1)
    reports = []

    def cancel_on_first_report(report):
        reports.append(report)
        if len(reports) == 1:
            widget.cancel()

    widget._relay.progress.connect(cancel_on_first_report)
    assert _run(qtbot, widget, widget.run, timeout=60_000) == "cancelled"
    assert reports, "the fit reported no progress"
    assert [layer.name for layer in viewer.layers] == ["big"]
    assert "cancelled" in widget.message.text()
    assert widget.worker is None and widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()

    # Usable again: a quick run completes.
    widget._relay.progress.disconnect(cancel_on_first_report)
    _settings(widget, n_components=2, max_iter=20, tol=1e-3, smoothing=0.0, spatial_weight=0.0)
    viewer.layers["big"].data = _astronaut(8)
    assert _run(qtbot, widget, widget.run) == "segmented", widget.message.text()
    assert "big gmm labels" in viewer.layers


@pytest.mark.parametrize("data, kwargs, words", [
    (np.zeros((5, 40, 40), np.uint8), {}, "3D layer of shape (5, 40, 40)"),
    (np.zeros((40, 40, 6), np.uint16), {}, "3D layer of shape (40, 40, 6)"),
    (np.zeros((3, 40, 40, 3), np.uint8), {"rgb": True}, "3D RGB layer"),
    (np.zeros((2, 3, 40, 40), np.float32), {}, "4D layer"),
])
def test_a_layer_that_cannot_be_segmented_gets_a_message(viewer_widget, data, kwargs, words):
    viewer, widget = viewer_widget
    viewer.add_image(data, name="odd", **kwargs)
    widget.run()
    assert widget.worker is None
    assert words in widget.message.text()
    assert "'odd'" in widget.message.text()
    assert [layer.name for layer in viewer.layers] == ["odd"]


def test_no_image_layer_gets_a_message(viewer_widget):
    viewer, widget = viewer_widget
    viewer.add_points([[1, 1]])
    widget.run()
    assert widget.worker is None and "Image layer" in widget.message.text()


def test_apply_a_saved_model_and_open_it_with_the_reader(viewer_widget, qtbot, tmp_path):
    viewer, widget = viewer_widget
    train, other = _astronaut(8), _astronaut(4)[::2, 1::2]
    segmenter = Segmenter(3, smoothing=0.0, covariance_type="full").fit(train)
    path = segmenter.save(tmp_path / "model.json")
    assert _reader.get_reader(str(path)) is _reader.read_model
    (tmp_path / "other.json").write_text('{"not": "a model"}')
    assert _reader.get_reader(str(tmp_path / "other.json")) is None

    viewer.add_image(other, name="other")
    viewer.open(str(path), plugin="gmmseg")  # the reader loads it into the widget, adding no layer
    assert [layer.name for layer in viewer.layers] == ["other"]
    assert widget.segmenter is not None and widget.params() == segmenter.params
    assert _run(qtbot, widget, widget.apply) == "segmented", widget.message.text()
    expected = segmenter.predict(other)
    np.testing.assert_array_equal(viewer.layers["other gmm labels"].data, labels_data(expected.labels))


def test_inspection_regions_as_shapes_and_table(viewer_widget, qtbot, tmp_path):
    viewer, widget = viewer_widget
    good = load_image(SAMPLES / "surface_good.png").to_uint8()
    defect = load_image(SAMPLES / "surface_defect.png").to_uint8()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # one reference: optimistic thresholds
        inspector = Inspector(n_components=3, auto_k=False).fit(good)
    path = inspector.save(tmp_path / "reference.json")
    viewer.add_image(defect, name="part")
    widget.load_reference(path)
    assert _run(qtbot, widget, widget.inspect) == "inspected", widget.message.text()

    expected = inspector.inspect(defect)
    assert expected.regions, "the sample defect should be found"
    shapes = viewer.layers["part defect regions"]
    assert isinstance(shapes, napari.layers.Shapes) and shapes.nshapes == len(expected.regions)
    for got, want in zip(shapes.data, region_rectangles(expected.regions)):
        np.testing.assert_allclose(got, want)
    np.testing.assert_array_equal(viewer.layers["part defects"].data.astype(bool), expected.mask)
    assert widget.region_table.rowCount() == len(expected.regions)
    assert widget.region_table.item(0, 1).text() == str(expected.regions[0].area)
    assert expected.verdict in widget.verdict_label.text()
    widget.region_table.selectRow(0)  # centres the view on the region
    x, y = expected.regions[0].centroid
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    np.testing.assert_allclose(camera.center[-2:], (y, x))

    # A reference model fitted in the widget on a selected layer.
    viewer.add_image(good, name="good")
    widget.reference_list.findItems("good", Qt.MatchFlag.MatchExactly)[0].setSelected(True)
    _settings(widget, n_components=3)
    assert _run(qtbot, widget, widget.fit_reference) == "reference", widget.message.text()
    assert widget.inspector is not None and widget.inspector.n_references_ == 1
    # the Segment tab's settings without smoothing or positions, with the
    # Inspect tab's own features (auto: colour for this colour part)
    wanted = widget.params().replace(smoothing=0.0, spatial_weight=0.0, feature_set="auto", row_column_sigma=32.0,
                                     max_samples=1_000_000)
    assert widget.inspector.params == wanted and not widget.inspector.segmenter_.features.uses_texture
    assert "one reference image" in widget.message.text()  # the library's warning, shown
    # A good part: no region, an empty rectangle layer and table.
    viewer.layers.selection.active = viewer.layers["good"]
    assert _run(qtbot, widget, widget.inspect) == "inspected", widget.message.text()
    assert viewer.layers["good defect regions"].nshapes == 0 and widget.region_table.rowCount() == 0
    assert "pass" in widget.verdict_label.text()


def test_sample_data():
    data, kwargs = _reader.sample_astronaut()[0]
    assert data.dtype == np.uint8 and data.shape[2] == 3 and kwargs["rgb"]
