"""The application's session model, driven without Qt or widgets.

Jobs run inline (``InlineRunner``), so every call returns with its work
done; a runner that cancels at a chosen report stands in for Esc.
"""

import json
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from gmmseg import Segmenter, load_image, select_k
from gmmseg.gui.render import display_colors, preview_labels
from gmmseg.gui.session import InlineRunner, Session, run_job
from gmmseg.paths import sample_images_dir

COFFEE = sample_images_dir() / "coffee.jpg"
SURFACE = sample_images_dir() / "surface_good.png"


def _session(**settings):
    session = Session()
    session.open_image(COFFEE)
    session.set_settings(session.settings.replace(**{"n_components": 3, **settings}))
    return session


def test_the_session_imports_no_qt():
    import subprocess

    code = "import sys, gmmseg.gui.session; print(sorted(m for m in ('PySide6', 'pyqtgraph') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_fit_gives_model_maps_and_every_view():
    session = _session()
    seen = []
    session.events.status.connect(lambda text, fraction: seen.append(text))
    session.run_fit()
    assert session.segmentation is not None and session.model_k() == 3 and not session.busy
    assert session.view == "labels" and session.picture.shape == (400, 600, 3)
    # honest phases: the starts, iterations out of at most max_iter, then the maps
    assert any(t.startswith("starts:") for t in seen)
    assert any("of at most 100" in t and "log-likelihood" in t for t in seen)
    assert any("maps: preview" in t for t in seen) and any("maps: 100 %" in t for t in seen)
    assert sum(row["pixel_count"] for row in session.stats) == 400 * 600
    pictures = {}
    for view in ("original", "labels", "soft", "uncertainty", "anomaly"):
        session.set_view(view)
        pictures[view] = session.picture
    for a in pictures:
        for b in pictures:
            if a < b:
                assert not np.array_equal(pictures[a], pictures[b]), (a, b)
    assert abs(session.anomaly_fraction - 0.01) < 0.002
    assert "label" in session.describe_pixel(10, 10) and "log-lik" in session.describe_pixel(10, 10)


def test_the_threshold_shown_matches_the_exact_percentile():
    session = _session(smoothing=0.0, spatial_weight=0.0)
    session.run_fit()
    for percentile in (1.0, 5.0, 10.0):
        session.set_percentile(percentile)
        exact = session.segmentation.anomaly_threshold(percentile)
        values = session.segmentation.log_likelihood[session.segmentation.mask]
        # within one percentile point of the histogram estimate
        assert abs(np.mean(values < session.anomaly_threshold) - percentile / 100) < 0.01
        assert session.anomaly_threshold == pytest.approx(exact, abs=0.5)


def test_a_new_image_drops_the_old_results_and_status():
    session = _session()
    session.run_fit()
    session.run_auto_k()
    assert "Auto K" in session.status_text or "K =" in session.status_text
    session.open_image(SURFACE)
    assert session.segmenter is None and session.segmentation is None and session.k_selection is None
    assert session.status_text.startswith("surface_good.png:") and "Auto K" not in session.status_text
    assert session.view == "original" and session.picture.shape[:2] == (session.image.height, session.image.width)


def test_auto_k_range_and_the_model_shown_agree(tmp_path):
    session = _session()
    session.set_k_range(2, 5)
    with pytest.raises(ValueError):
        session.set_k_range(5, 5)
    session.run_auto_k()
    result = session.k_selection
    assert [r["k"] for r in result.rows] == [2, 3, 4, 5]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the edge of the range
        expected = select_k(session.image, k_range=range(2, 6), params=session.settings.replace(n_components=2))
    assert result.best_k == expected.best_k
    # The chosen K is applied by a refit: the settings, the model and its maps agree.
    assert session.settings.n_components == session.model_k() == session.segmentation.n_components == result.best_k
    assert session.model_source == "auto K" and not session.settings_differ
    assert result.rule and result.at_edge == (result.best_k in (2, 5))
    # Export and Save Model write that model.
    session.export(tmp_path / "out", ["labels", "summary"], overwrite=False)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["settings"]["n_components"] == result.best_k
    session.save_model(tmp_path / "model.json")
    assert Segmenter.load(tmp_path / "model.json").n_components == result.best_k
    # Taking another K refits with it.
    other = 2 if result.best_k != 2 else 3
    session.choose_k(other)
    assert session.settings.n_components == session.model_k() == other


def test_settings_that_differ_from_the_shown_model_are_flagged():
    session = _session()
    session.run_fit()
    assert not session.settings_differ
    session.set_settings(session.settings.replace(n_components=5))
    assert session.settings_differ and session.model_k() == 3


class CancellingRunner(InlineRunner):
    """Runs jobs inline and presses Esc when a report matches ``when``."""

    def __init__(self, when):
        self.when = when
        self.session = None

    def start(self, name, work, job, *, done=None, failed=None, inline=False):
        deliver = job._report

        def report(value):
            deliver(value)
            if self.when(name, value):
                self.session.cancel()

        job._report = report
        run_job(work, job, done, failed)


def test_esc_during_the_maps_keeps_the_model_and_leaves_the_session_idle():
    runner = CancellingRunner(lambda name, value: name == "fit" and value[0] == "model")
    session = Session(runner)
    runner.session = session
    session.open_image(COFFEE)
    session.set_settings(session.settings.replace(n_components=3))
    session.run_fit()
    assert not session.busy and session.segmenter is not None and session.segmentation is None
    assert "maps not computed" in session.status_text
    runner.when = lambda name, value: False
    session.compute_maps()
    assert session.segmentation is not None and session.segmentation.n_components == 3


def test_esc_during_em_stops_the_fit():
    runner = CancellingRunner(lambda name, value: value[0] == "iteration" and value[1].phase == "em"
                              and value[1].iteration == 2)
    session = Session(runner)
    runner.session = session
    session.open_image(COFFEE)
    session.set_settings(session.settings.replace(n_components=3, tol=0.0))
    session.run_fit()
    assert not session.busy and session.segmentation is None
    assert len(session.ll_history) == 2


def test_inspection_follows_the_image(tmp_path):
    from imagefiles import write_inspection_set

    refs, parts = write_inspection_set(tmp_path, (1, 2), (20, 21), 60)
    session = Session()
    session.open_image(COFFEE)
    session.set_references(refs)
    session.fit_inspector()
    # the image shown when the model arrives is inspected, and the status names it
    assert session.inspection is not None and session.inspection.mask.shape == (400, 600)
    assert session.status_text.startswith("coffee.jpg:")
    # every image opened afterwards is inspected, and the view follows
    session.open_image(refs[0])
    assert session.inspection.mask.shape == (session.image.height, session.image.width) and session.inspection.passed
    assert session.view == "inspection"
    assert session.open_folder(parts)
    verdicts = [session.inspection.verdict]
    while session.step(1):
        assert session.inspection is not None and session.scored.image is session.image
        verdicts.append(session.inspection.verdict)
    assert verdicts == ["fail", "fail", "pass"] and session.index == 2
    # the false-alarm rate re-thresholds the shown image without rescoring
    scored = session.scored
    session.set_false_alarm_rate(1e-2)
    assert session.scored is scored


def test_report_after_a_single_image(tmp_path):
    from imagefiles import write_inspection_set

    refs, parts = write_inspection_set(tmp_path, (1, 2), (20,), 60)
    session = Session()
    session.set_references(refs)
    session.fit_inspector()
    assert session.report_paths() == []
    session.open_image(parts / "part20.png")
    assert session.report_paths() == [parts / "part20.png"]
    session.write_report(tmp_path / "report.csv")
    lines = (tmp_path / "report.csv").read_text().splitlines()
    assert len(lines) == 2 and "fail" in lines[1]


def test_grey_images_get_distinct_label_colours():
    greys = np.array([[0.2] * 3, [0.25] * 3, [0.3] * 3, [0.35] * 3])
    shown = display_colors(greys, is_gray=True)
    distances = np.linalg.norm(shown[:, None] - shown[None], axis=2)[np.triu_indices(4, 1)]
    assert distances.min() > 0.3
    assert np.array_equal(display_colors(greys, is_gray=False), greys)
    many = display_colors(np.zeros((14, 3)), is_gray=True)
    assert len(np.unique(np.round(many, 3), axis=0)) == 14


def test_transparent_pixels_are_shown_on_a_checkerboard(tmp_path):
    rgba = np.zeros((40, 60, 4), dtype=np.uint8)
    rgba[..., 0] = 250  # the hidden colour of transparent pixels is red
    rgba[:, :30, 3] = 255
    rgba[:, :30, :3] = (20, 200, 20)
    rgba[:20, :30, :3] = (20, 20, 200)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba).save(path)
    session = Session()
    session.open_image(path)
    session.set_settings(session.settings.replace(n_components=2, smoothing=0.0, spatial_weight=0.0))
    session.run_fit()
    for view in ("original", "labels", "anomaly"):
        session.set_view(view)
        hidden = session.picture[:, 30:]
        assert not np.any((hidden[..., 0] > 200) & (hidden[..., 1] < 50)), view


def test_preview_of_a_mixture_with_position_features():
    image = load_image(COFFEE)
    params = Segmenter(4, random_state=0).params
    assert params.spatial_weight > 0
    segmenter = Segmenter(params=params).fit(image)
    assert segmenter.gmm_.means_.shape[1] == 5
    rgb, size = preview_labels(image, segmenter, params, {})
    assert size == (600, 400) and len(np.unique(rgb.reshape(-1, 3), axis=0)) > 3
    assert preview_labels(image, segmenter, params.replace(feature_set="texture"), {}) is None


def _salt_and_pepper(seed, block=1, size=96):
    """Grey pixels of two levels, half each: one pixel apart (good) or in
    blocks of ``block`` pixels (the same grey levels, another texture)."""
    rng = np.random.default_rng(seed)
    cells = rng.random((size // block + 1, size // block + 1)) < 0.5
    return np.where(np.kron(cells, np.ones((block, block), bool))[:size, :size], 150, 100).astype(np.uint8)


def test_inspection_of_grey_parts_uses_texture_whatever_the_model_panel_says(tmp_path):
    """A defect with the grey levels of good surface (only its texture
    differs) is found with the inspection's own features (auto: texture on
    grey), though the Model panel segments by colour; with the inspection's
    features set to colour, as the panel used to force, it passes."""
    refs = []
    for seed in range(3):
        refs.append(tmp_path / f"ref{seed}.png")
        Image.fromarray(_salt_and_pepper(seed)).save(refs[-1])
    part = _salt_and_pepper(10)
    part[30:62, 30:62] = _salt_and_pepper(11, block=8, size=32)
    Image.fromarray(part).save(tmp_path / "part.png")
    session = Session()
    # Scales up to 4 px: the default bank's 16 px would spread the score
    # over most of so small a part.
    session.set_settings(session.settings.replace(n_components=2, feature_set="color", texture_scales=(1, 2, 4)))
    session.set_inspection_settings(session.inspection_settings.replace(false_reject_rate=0.2))
    session.set_references(refs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        session.fit_inspector()
    params = session.inspector.params
    assert params.feature_set == "auto" and params.row_column_sigma == 32.0 and params.color_space == "lab"
    assert session.inspector.segmenter_.features.uses_texture
    session.open_image(tmp_path / "part.png")
    result = session.inspection
    assert not result.passed
    box = np.zeros_like(result.mask)
    box[30 - 12:62 + 12, 30 - 12:62 + 12] = True  # the defect and the reach of the 4 px filters
    assert result.mask[30:62, 30:62].mean() > 0.9 and not (result.mask & ~box).any()
    session.open_image(refs[0])
    assert session.inspection.passed

    session.inspection_model = session.inspection_model.replace(feature_set="color")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        session.fit_inspector()
    assert not session.inspector.segmenter_.features.uses_texture
    session.open_image(tmp_path / "part.png")
    assert session.inspection.passed  # two grey levels, both common: nothing to see in colour
