"""One settings object: every setting survives model files, the command
line, the application's Model panel across restarts, and reaches select_k,
Auto K and the inspection fit.

Each test here failed before the settings table existed (the copies of the
settings list had drifted apart).
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gmmseg import InspectionParams, Inspector, Segmenter, SegmenterParams, select_k
from gmmseg.cli import build_parser, params_from_args

# A non-default value for every segmenter setting that a one-image fit allows.
NON_DEFAULT = dict(
    n_components=3, covariance_type="diag", color_space="rgb", spatial_weight=0.25, smoothing=1.5,
    max_iter=7, tol=0.0, reg_covar=1e-4, n_init=2, n_starts=3, init_params="random", random_state=5, max_samples=900,
    k_criterion="aic", spatial_fit_pixels=5000, feature_set="color+texture", texture_scales=(1, 3),
    illumination_sigma=4.0, texture_filters="smoothed+deviation", row_column_sigma=6.0,
)


def test_every_setting_is_covered_here():
    params = SegmenterParams(**NON_DEFAULT)
    defaults = SegmenterParams()
    assert set(NON_DEFAULT) == set(SegmenterParams.names())
    assert all(getattr(params, n) != getattr(defaults, n) for n in SegmenterParams.names())


def _image(seed=0, size=(40, 48)):
    rng = np.random.RandomState(seed)
    img = np.zeros(size + (3,), np.uint8)
    img[:, : size[1] // 2] = (200, 40, 40)
    img[:, size[1] // 2 :] = (40, 60, 190)
    img[size[0] // 2 :, :] += np.array([0, 80, 0], np.uint8)
    return np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)


def test_settings_are_checked_with_messages_that_say_what_to_give():
    with pytest.raises(ValueError, match="n_components must be an integer >= 1 and <= 255, got 0"):
        SegmenterParams(n_components=0)
    with pytest.raises(ValueError, match="color_space must be one of 'rgb', 'lab'"):
        Segmenter(color_space="cmyk")
    with pytest.raises(ValueError, match="unknown setting 'colour_space'.*color_space"):
        Segmenter(colour_space="lab")
    with pytest.raises(ValueError, match="false_alarm_rate must be a finite number > 0 and < 0.5"):
        Inspector(false_alarm_rate=0.7)
    seg = Segmenter(3)
    with pytest.raises(ValueError, match="smoothing"):
        seg.smoothing = -1
    seg.smoothing = 2.0  # attribute writes go through the settings object
    assert seg.params.smoothing == 2.0 and seg.get_params()["smoothing"] == 2.0
    assert SegmenterParams.from_dict(SegmenterParams(**NON_DEFAULT).to_dict()) == SegmenterParams(**NON_DEFAULT)


@pytest.mark.filterwarnings("ignore::gmmseg.ConvergenceWarning")
def test_segmenter_settings_survive_save_and_load(tmp_path):
    seg = Segmenter(**NON_DEFAULT).fit(_image())
    loaded = Segmenter.load(seg.save(tmp_path / "m.json"))
    assert loaded.params == seg.params
    np.testing.assert_array_equal(loaded.predict(_image(1)).labels, seg.predict(_image(1)).labels)


def test_inspector_settings_survive_save_and_load(tmp_path):
    inspector = Inspector(random_state=5, max_iter=60, n_init=2, k_range=range(2, 5), tol=1e-3,
                          reg_covar=1e-5, init_params="k-means++", smoothing=1.0, max_samples=1500,
                          smoothing_sigma=2.0, min_area=9, false_alarm_rate=1e-3,
                          false_reject_rate=0.1).fit([_image(0), _image(1)])
    loaded = Inspector.load(inspector.save(tmp_path / "i.json"))
    assert loaded.get_params() == inspector.get_params()
    assert loaded.params == inspector.params and loaded.inspection == inspector.inspection
    assert loaded.n_components is None and loaded.k_range == (2, 3, 4)
    assert loaded.segmenter_.params == inspector.segmenter_.params
    # With K given, the loaded model keeps it and does not choose by BIC.
    fixed = Inspector.load(Inspector(2, random_state=3).fit(_image()).save(tmp_path / "k.json"))
    assert fixed.n_components == 2 and fixed.random_state == 3 and not fixed.inspection.auto_k


# select_k compares mixtures: the spatial prior (smoothing, spatial_fit_pixels)
# takes no part in it, so the Segmenter fits it is compared with have none.
SWEEP_BASE = SegmenterParams(max_iter=6, tol=0.0, max_samples=1200, covariance_type="diag", random_state=1,
                             init_params="random", smoothing=0.0, spatial_weight=0.0)
SWEEP_CHANGES = {"init_params": "kmeans", "max_samples": 700, "reg_covar": 1e-2, "n_init": 4, "random_state": 9,
                 "tol": 1.0, "max_iter": 2, "color_space": "rgb", "spatial_weight": 0.5, "n_starts": 1}


@pytest.mark.filterwarnings("ignore::gmmseg.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore:select_k.*edge:UserWarning")
@pytest.mark.parametrize("setting", sorted(SWEEP_CHANGES))
def test_select_k_honours_every_setting(setting):
    """A sweep row equals the fit of a Segmenter with the same settings, and
    changing any one setting changes the sweep (it is not ignored)."""
    changed = SWEEP_BASE.replace(**{setting: SWEEP_CHANGES[setting]})
    image = _image()
    for params in (SWEEP_BASE, changed):
        for row in select_k(image, k_range=[2, 3], params=params).rows:
            seg = Segmenter(params=params.replace(n_components=row["k"])).fit(image)
            assert row["lower_bound"] == seg.gmm_.lower_bound_ and row["n_iter"] == seg.gmm_.n_iter_
    before = select_k(image, k_range=[3], params=SWEEP_BASE).rows[0]
    after = select_k(image, k_range=[3], params=changed).rows[0]
    assert (before["lower_bound"], before["n_iter"]) != (after["lower_bound"], after["n_iter"])


def test_command_line_options_are_the_settings(tmp_path):
    args = build_parser().parse_args([
        "segment", "x.png", "--out", "o", "-k", "3", "--covariance", "diag", "--color-space", "rgb",
        "--spatial-weight", "0.25", "--smoothing", "1.5", "--max-iter", "7", "--tol", "0", "--reg-covar", "1e-4",
        "--n-init", "2", "--starts", "3", "--init-params", "random", "--seed", "5", "--max-samples", "900",
        "--criterion", "aic", "--spatial-fit-pixels", "5000", "--features", "color+texture",
        "--texture-scales", "1,3", "--illumination-sigma", "4", "--texture-filters", "smoothed+deviation",
        "--row-column-sigma", "6",
    ])
    assert params_from_args(args) == SegmenterParams(**NON_DEFAULT)
    # Every setting with a flag is on every command that fits a model.
    for command in (["segment", "x.png", "--out", "o"], ["fit", "x.png", "--save-model", "m.json"]):
        parsed = build_parser().parse_args(command)
        assert all(hasattr(parsed, s.name) for s in SegmenterParams.settings() if s.flags)


def test_cli_fit_saves_every_setting(tmp_path):
    path = tmp_path / "ref.png"
    Image.fromarray(_image()).save(path)
    model = tmp_path / "m.json"
    out = subprocess.run(
        [sys.executable, "-m", "gmmseg", "fit", str(path), "--save-model", str(model), "--seed", "5",
         "--max-iter", "60", "--n-init", "2", "--reg-covar", "1e-5", "--init-params", "k-means++",
         "--k-range", "2-4", "--min-area", "9", "--score-smoothing", "2", "--false-reject-rate", "0.1",
         "--border-margin", "3"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.returncode == 0, out.stderr
    loaded = Inspector.load(model)
    assert (loaded.random_state, loaded.max_iter, loaded.n_init, loaded.reg_covar, loaded.init_params) == \
        (5, 60, 2, 1e-5, "k-means++")
    assert loaded.inspection == InspectionParams(k_range=(2, 3, 4), min_area=9, smoothing_sigma=2.0,
                                                 false_reject_rate=0.1, border_margin=3)
    # The Inspector's feature defaults, not segmentation's.
    assert (loaded.params.feature_set, loaded.params.row_column_sigma) == ("auto", 32.0)


def test_inspector_attribute_writes_go_through_the_settings():
    inspector = Inspector(2, random_state=0).fit(_image())
    found = len(inspector.inspect(_image(3)).regions)
    inspector.min_area = 10**6
    assert inspector.inspection.min_area == 10**6 and inspector.inspect(_image(3)).regions == []
    assert found >= 0
    inspector.n_components = None
    assert inspector.inspection.auto_k and inspector.get_params()["n_components"] is None
    with pytest.raises(ValueError, match="min_area"):
        inspector.min_area = 0


HUGE_INT = "1" + "0" * 400


@pytest.mark.parametrize("section, key, raw, match", [
    ("inspection", "min_area", "2.7", "min_area"),
    ("inspection", "min_area", "1e400", "min_area"),
    ("inspection", "smoothing_sigma", '"1.5"', "smoothing_sigma"),
    ("inspection", "held_out", '"false"', "held_out"),
    ("inspection", "threshold", "true", "threshold"),
    ("inspection", "threshold", HUGE_INT, "threshold"),
    ("inspection", "k_range", "[0, 1]", "k_range"),
    ("inspection", "false_reject_rate", "0.7", "false_reject_rate"),
    ("inspection", "image_threshold", '"high"', "image_threshold"),
    ("inspection", "image_threshold", "-0.5", "image_threshold"),
    ("inspection", "image_threshold", "NaN", "image_threshold"),
    ("inspection", "image_scores", "[1, 2, null]", "image_scores"),
    ("mixture", "n_iter", "1e400", "n_iter"),
    ("mixture", "converged", '"false"', "converged"),
    ("mixture", "lower_bound", HUGE_INT, "lower_bound"),
], ids=lambda v: v if len(str(v)) < 20 else "huge")
def test_model_file_values_are_checked_strictly(tmp_path, section, key, raw, match):
    """Wrong types or absurd numbers in a model file give one ModelFileError
    naming the field, never another exception or a silently converted value."""
    import json

    from gmmseg import ModelFileError

    path = Inspector(2, random_state=0).fit(_image()).save(tmp_path / "m.json")
    data = json.loads(path.read_text())
    data[section][key] = "__VALUE__"
    (tmp_path / "bad.json").write_text(json.dumps(data).replace('"__VALUE__"', raw))
    with pytest.raises(ModelFileError, match=match):
        Inspector.load(tmp_path / "bad.json")


@pytest.mark.parametrize("cls, name, value, message", [
    # labels.png holds 255 components (index 255 is "masked")
    (SegmenterParams, "n_components", 256, "n_components must be an integer >= 1 and <= 255, got 256"),
    (InspectionParams, "k_range", range(1, 300), "k_range must be an integer >= 1 and <= 255, got 299"),
    (InspectionParams, "k_range", range(1, 10**15), "k_range must be an integer >= 1 and <= 255"),
    (SegmenterParams, "spatial_weight", 1e308, "spatial_weight must be a finite number >= 0 and <= 1000"),
    (SegmenterParams, "smoothing", 1e308, "smoothing must be a finite number >= 0 and <= 1000"),
    (SegmenterParams, "n_init", 10**5, "n_init must be an integer >= 1 and <= 1000"),
    (SegmenterParams, "n_starts", 10**5, "n_starts must be an integer >= 1 and <= 1000"),
    (SegmenterParams, "max_iter", 10**9, "max_iter must be an integer >= 0 and <= 100000"),
    (SegmenterParams, "random_state", -1, r"random_state must be None or an integer in \[0, 2\*\*32 - 1\]"),
    (InspectionParams, "smoothing_sigma", 1e9, "smoothing_sigma must be a finite number >= 0 and <= 100"),
    (InspectionParams, "min_area", 10**30, "min_area must be an integer >= 1 and <= 1e\\+09"),
])
def test_open_ended_settings_have_sane_maxima(cls, name, value, message):
    """Values that used to run a whole fit (or allocate tens of GB) before
    failing are refused when the settings are made."""
    with pytest.raises(ValueError, match=message):
        cls(**{name: value})
    setting = cls.setting(name)
    if setting.kind in ("int", "float"):
        assert setting.check(setting.maximum) == setting.maximum  # the bound itself is allowed


def test_the_inspection_panels_own_settings_are_those_inspection_defaults_differently():
    """The application's Inspection panel and napari's Inspect tab keep
    their own values of exactly the settings whose default differs between
    segmentation and ``gmmseg fit`` (besides the spatial prior and positions,
    which inspection turns off), so that a reference fit there with nothing
    changed is the command line's; a reference fit takes those from them and
    everything else from the Model panel."""
    from gmmseg.cli import FIT_DEFAULTS
    from gmmseg.params import INSPECTION_MODEL_SETTINGS, INSPECTOR_MODEL_DEFAULTS, reference_fit_params

    differ = {n for n in SegmenterParams.names() if getattr(FIT_DEFAULTS, n) != getattr(SegmenterParams(), n)}
    assert set(INSPECTION_MODEL_SETTINGS) == differ - {"smoothing", "spatial_weight"}
    assert set(INSPECTION_MODEL_SETTINGS) == {"feature_set", "row_column_sigma", "max_samples"}
    assert reference_fit_params(SegmenterParams(), INSPECTOR_MODEL_DEFAULTS) == FIT_DEFAULTS
    model = SegmenterParams(n_components=5, covariance_type="diag", color_space="rgb", feature_set="texture",
                            texture_scales=(1, 3), row_column_sigma=0.0, spatial_weight=0.7, smoothing=1.5)
    fitted = reference_fit_params(model, INSPECTOR_MODEL_DEFAULTS.replace(row_column_sigma=20.0, max_samples=None))
    assert fitted == model.replace(smoothing=0.0, spatial_weight=0.0, feature_set="auto", row_column_sigma=20.0)


def test_the_inspection_panels_show_every_inspection_setting_but_two():
    """The application's Inspection panel and napari's Inspect tab show the
    inspection settings from one list: all of them but the K range (the
    default range is tried) and the false-alarm rate (the application's
    logarithmic slider); those that need a new fit come first."""
    from gmmseg.params import INSPECTION_PANEL_SETTINGS, INSPECTION_REFIT_SETTINGS

    assert set(INSPECTION_PANEL_SETTINGS) == set(InspectionParams.names()) - {"k_range", "false_alarm_rate"}
    assert len(set(INSPECTION_PANEL_SETTINGS)) == len(INSPECTION_PANEL_SETTINGS)
    assert INSPECTION_REFIT_SETTINGS == ("auto_k", "smoothing_sigma", "border_margin")
