"""Defect inspection on synthetic surfaces with painted defects of known masks."""

import json
import math
import warnings
import weakref

import numpy as np
import pytest
from imagefiles import auroc, corner_regions_image, paint_defects, paint_scratch, surface
from PIL import Image
from scipy import ndimage

from gmmseg import ModelFileError, Segmenter
from gmmseg import inspection as inspection_module
from gmmseg.inspection import (
    CURVE_RATES,
    MAX_FOLDS,
    Inspector,
    ScoreScale,
    _ScoreSample,
    image_threshold_from_scores,
    smooth_scores,
)


def good(seed, size=256):
    return np.clip(surface(seed, size=size), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def inspector():
    return Inspector().fit([good(s) for s in (1, 2, 3)])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("faint", [False, True])
def test_painted_defects_are_found(inspector, seed, faint):
    image, masks = paint_defects(surface(100 + seed), seed, faint)
    result = inspector.inspect(image)
    truth = np.any(masks, axis=0)
    score = auroc(result.score.ravel(), truth.ravel())
    print(f"seed {seed} faint {faint}: pixel AUROC {score:.4f}, {len(result.regions)} regions, {result.describe()}")
    assert score >= 0.99
    for mask in masks:  # every painted defect (stain, scratch, spots) is hit by a region
        assert result.mask[mask].any()
    false_regions = [r for r in result.regions
                     if not truth[r.bbox[1]:r.bbox[1] + r.bbox[3], r.bbox[0]:r.bbox[0] + r.bbox[2]].any()]
    assert len(false_regions) <= 1
    # the calibrated threshold, in the score map's float32 (where it is compared)
    assert result.image_threshold == float(np.float32(inspector.image_threshold_))
    assert result.verdict == "fail" and result.image_score > result.image_threshold
    # Defect masks are precise: almost every masked pixel is a painted one.
    assert (result.mask & truth).sum() >= 0.95 * result.mask.sum()


def test_verdict_is_the_image_score_against_the_image_threshold(inspector):
    """Fail exactly when the image score is above the image threshold, and
    then exactly when regions are reported; score and threshold are on the
    calibrated scale of the held-out references' image scores."""
    images = [good(s) for s in range(400, 406)] + [paint_defects(surface(s), s, bool(s % 2))[0] for s in range(40, 46)]
    verdicts = []
    for image in images:
        result = inspector.inspect(image)
        assert result.image_score == inspector.image_score(image)
        assert result.passed == (not result.image_score > result.image_threshold) == (not result.regions)
        assert result.passed == (not result.mask.any())
        assert np.nanmin(result.score) >= 0 and result.image_threshold >= 0
        verdicts.append(result.verdict)
        if result.passed:  # a good image scores like the held-out good references did
            assert inspector.image_scores_.min() - 1 <= result.image_score <= inspector.image_threshold_
    assert verdicts == ["pass"] * 6 + ["fail"] * 6
    assert inspector.image_threshold_ == image_threshold_from_scores(inspector.image_scores_, inspector.false_reject_rate)
    assert inspector.image_scores_.size == 3 and inspector.held_out_ and inspector.n_folds_ == 3


def test_an_image_threshold_within_float32_rounding_of_the_image_score(inspector):
    """Score maps are float32, thresholds float64. A threshold that rounds
    to the image score in float32 (as when a one-reference model inspects its
    reference: the image sits on its own threshold) is a tie, and a tie
    passes: no image fails with fewer than min_area seeds (this used to fail
    the image and could raise on an empty region). The threshold reported is
    the one compared, so "fail" always reads as "score above threshold"."""
    image, _ = paint_defects(surface(41), 41, False)
    raw, score = inspector.score_maps(image)
    top = inspector.image_score(image)  # a float32 value
    below = float(np.nextafter(top, -np.inf))  # float64, rounds back to `top` in float32
    assert below < top and np.float32(below) == np.float32(top)
    tie = inspector.find_regions(score, raw=raw, image_threshold=below)
    assert tie.passed and not tie.regions and not tie.mask.any()
    assert tie.image_threshold == top and "<=" in tie.describe()
    lower = float(np.nextafter(np.float32(top), np.float32(-np.inf)))
    failed = inspector.find_regions(score, raw=raw, image_threshold=lower)
    assert not failed.passed and failed.regions and failed.image_score > failed.image_threshold == lower
    # A threshold beyond float32's range: nothing is above it (and no overflow warning).
    assert inspector.find_regions(score, raw=raw, image_threshold=1e300).passed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # one reference: optimistic
        alone = Inspector(n_components=3, auto_k=False).fit(good(7))
    result = alone.inspect(good(7))
    assert result.image_score == pytest.approx(alone.image_threshold_, rel=1e-6)  # on its own threshold
    assert result.passed and result.image_score <= result.image_threshold


def test_defect_free_images_flag_about_the_false_alarm_rate():
    # The false-alarm rate calibrates the pixel threshold, which is on the
    # unsmoothed score (the first of score_maps).
    references = [good(s) for s in (1, 2, 3)]
    images = [good(s) for s in range(300, 306)]
    for rate in (0.01, 0.05):
        inspector = Inspector(false_alarm_rate=rate).fit(references)
        flagged = np.mean([np.nanmean(inspector.score_maps(img)[0] > inspector.threshold_) for img in images])
        print(f"false-alarm rate {rate}: flagged {flagged:.4f}")
        assert rate / 3 <= flagged <= rate * 3


def test_defect_free_images_pass_at_default_settings(inspector):
    for s in (400, 401, 402):
        result = inspector.inspect(good(s))
        assert result.passed and result.regions == [] and not result.mask.any()


@pytest.mark.parametrize("width, strength", [(1, 0.7), (2, 0.7), (2, 0.45)])
def test_masks_of_thin_scratches_stay_thin(inspector, width, strength):
    """Hysteresis: a 1-2 pixel scratch on a noisy surface is found on the
    smoothed score, and its mask is at most 2 pixels wider than the scratch
    (the seeds alone, spread by the smoothing, are wider)."""
    for seed in range(3):
        image, truth = paint_scratch(surface(600 + seed), seed, width, strength)
        result = inspector.inspect(image)
        near = ndimage.binary_dilation(truth, iterations=6)
        columns = int(np.any(truth, axis=0).sum())
        mask_width = (result.mask & near).sum() / columns
        seed_width = (inspector.find_regions(result.score).mask & near).sum() / columns
        found = np.any(result.mask & truth, axis=0).sum() / columns
        print(f"width {width} strength {strength} seed {seed}: mask {mask_width:.2f} px wide, seeds {seed_width:.2f}, "
              f"{found:.0%} of the columns found; {result.describe()}")
        assert result.verdict == "fail" and found >= 0.75
        assert mask_width <= width + 2
        assert seed_width > mask_width
        assert not (result.mask & ~near).any()  # nothing flagged away from the scratch


def test_image_threshold_is_calibrated_for_the_false_reject_rate():
    """With 40 references (5 folds), about a fraction false_reject_rate of
    80 other good images fails; the held-out references' scores are above
    the threshold at most that often, by construction. (Each fold's model
    has seen 4/5 of the references, the final one all: held-out scores run a
    little high, so the rate errs low.)"""
    rate = 0.2
    references = [good(s, size=96) for s in range(700, 740)]
    inspector = Inspector(2, false_reject_rate=rate).fit(references)
    assert inspector.n_folds_ == MAX_FOLDS and inspector.image_scores_.size == 40
    assert np.mean(inspector.image_scores_ > inspector.image_threshold_) <= rate
    others = [inspector.inspect(good(s, size=96)) for s in range(800, 880)]
    failed = np.mean([not r.passed for r in others])
    print(f"false-reject rate {rate}: {failed:.3f} of {len(others)} good images fail; image threshold "
          f"{inspector.image_threshold_:.3f}, held-out scores {np.round(inspector.image_scores_, 2)}")
    assert rate / 4 <= failed <= rate * 2
    # Other rates, from the same held-out scores.
    strict, loose = inspector.image_threshold_for(0.01), inspector.image_threshold_for(0.4)
    assert strict > inspector.image_threshold_ > loose
    assert inspector.set_false_reject_rate(0.4) == loose == inspector.image_threshold_
    assert inspector.false_reject_rate == 0.4
    assert np.mean([not inspector.find_regions(r.score, raw=r.raw_score).passed for r in others]) >= failed


def test_few_references_extrapolate_the_image_threshold():
    """Below about 1/rate references the empirical quantile is the highest
    score seen; the threshold extrapolates with their spread instead."""
    scores = np.array([3.0, 3.2, 3.5])
    threshold = image_threshold_from_scores(scores, 0.05)
    assert threshold > scores.max() > np.quantile(scores, 0.95)
    many = np.random.default_rng(0).normal(3.0, 0.3, 2000)
    assert image_threshold_from_scores(many, 0.05) == pytest.approx(np.quantile(many, 0.95), abs=0.02)
    assert image_threshold_from_scores(np.array([2.5]), 0.05) == 2.5


def test_references_given_as_paths_are_loaded_one_at_a_time(tmp_path, monkeypatch):
    paths = []
    for s in range(900, 907):
        paths.append(tmp_path / f"ref{s}.png")
        Image.fromarray(good(s, size=96)).save(paths[-1])
    fitted_on, alive = [], []
    real_fit, real_load = Segmenter.fit, inspection_module.load_image

    def fit(self, image, callback=None, **options):
        fitted_on.append(image)
        return real_fit(self, image, callback, **options)

    def load(source, **options):
        assert all(ref() is None for ref in alive), "an earlier reference is still loaded"
        image = real_load(source, **options)
        alive.append(weakref.ref(image))
        return image

    monkeypatch.setattr(Segmenter, "fit", fit)
    monkeypatch.setattr(inspection_module, "load_image", load)
    inspector = Inspector(2).fit(paths)
    # The segmenter gets the paths (it may stream them); each reference is
    # loaded once, to be scored held out.
    assert len(fitted_on) == MAX_FOLDS + 1 and fitted_on[-1] == paths
    assert all(isinstance(p, type(paths[0])) for fold in fitted_on for p in fold)
    assert len(alive) == len(paths) and inspector.image_scores_.size == len(paths)


def test_auto_k_uses_the_k_criterion_and_warns_at_the_edge():
    """K chosen by the K criterion setting (bic-300 by default: it does not
    run to the top of the range as AIC does here), with a warning when the
    choice is at the edge of k_range."""
    image = corner_regions_image(4, 64, 0.03, 0)  # four colours
    references = [image, np.fliplr(image), np.flipud(image)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chosen = Inspector(k_range=range(1, 7)).fit(references)
    assert chosen.k_selection_.criterion == "bic-300" and chosen.segmenter_.n_components == 4
    assert not [w for w in caught if "edge" in str(w.message)]
    with pytest.warns(UserWarning, match="K = 6, chosen by lowest AIC, is at the edge of k_range 1-6"):
        aic = Inspector(k_range=range(1, 7), k_criterion="aic").fit(references)
    assert aic.k_selection_.criterion == "aic" and aic.segmenter_.n_components == 6
    with pytest.warns(UserWarning, match="edge of k_range 1-3"):
        narrow = Inspector(k_range=range(1, 4)).fit(references)
    assert narrow.k_selection_.at_edge and narrow.segmenter_.n_components == 3


def test_one_reference_warns_that_it_is_not_held_out():
    with pytest.warns(UserWarning, match="one reference"):
        inspector = Inspector(2).fit(good(1, size=96))
    assert not inspector.held_out_ and inspector.image_scores_.size == 1


def test_regions_have_consistent_geometry(inspector):
    image, masks = paint_defects(surface(7), 7)
    result = inspector.inspect(image)
    for region in result.regions:
        x, y, w, h = region.bbox
        assert region.area <= w * h
        assert result.mask[y:y + h, x:x + w].sum() >= region.area
        assert x <= region.centroid[0] <= x + w and y <= region.centroid[1] <= y + h
        assert region.max_score >= region.mean_score and region.max_score > result.image_threshold
        row = region.as_dict()
        assert row["area"] == region.area and row["width"] == w
    assert [r.label for r in result.regions] == list(range(1, len(result.regions) + 1))
    assert result.defect_area == int(sum(r.area for r in result.regions)) == int(result.mask.sum())
    row = result.report_row()
    assert row["verdict"] == "fail" and row["image_score"] > row["image_threshold"]
    assert row["pixel_threshold"] == round(inspector.threshold_, 4)


def test_threshold_for_another_rate(inspector):
    references = [good(s) for s in (3,)]
    strict = inspector.threshold_for(1e-4, references)
    loose = inspector.threshold_for(1e-2, references)
    assert strict > loose


def test_save_load_round_trip(tmp_path, inspector):
    image, _ = paint_defects(surface(5), 5)
    path = inspector.save(tmp_path / "inspect.json")
    loaded = Inspector.load(path)
    assert loaded.threshold_ == inspector.threshold_
    assert loaded.image_threshold_ == inspector.image_threshold_
    np.testing.assert_array_equal(loaded.image_scores_, inspector.image_scores_)
    np.testing.assert_array_equal(loaded.score_scale_.values, inspector.score_scale_.values)
    assert loaded.image_threshold_for(0.2) == inspector.image_threshold_for(0.2)
    # The saved calibration curve re-thresholds a loaded model for other rates.
    for rate in (1e-5, 3e-3, 0.05):
        np.testing.assert_allclose(loaded.threshold_for(rate), inspector.threshold_for(rate), rtol=0.05, atol=0.05)
    a, b = inspector.inspect(image), loaded.inspect(image)
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert (a.image_score, a.verdict) == (b.image_score, b.verdict)
    # The same file is a segmentation model too.
    assert Segmenter.load(path).predict(image).labels.shape == image.shape[:2]
    # A plain segmentation model is not an inspection model.
    plain = Segmenter(2, random_state=0).fit(image).save(tmp_path / "plain.json")
    with pytest.raises(ModelFileError, match="not an inspection model"):
        Inspector.load(plain)
    data = json.loads(path.read_text())
    data["inspection"]["threshold"] = "high"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="invalid inspection"):
        Inspector.load(tmp_path / "bad.json")
    data = json.loads(path.read_text())
    data["inspection"]["calibration_curve"]["thresholds"] = [1.0]
    (tmp_path / "bad2.json").write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="calibration_curve"):
        Inspector.load(tmp_path / "bad2.json")


@pytest.mark.parametrize("key, value, match", [
    ("image_threshold", "high", "image_threshold"),
    ("image_threshold", -1.0, "image_threshold"),
    ("image_threshold", math.nan, "image_threshold"),
    ("image_threshold", None, "image_threshold"),
    ("image_scores", [], "image_scores"),
    ("image_scores", [1.0, -2.0], "image_scores"),
    ("image_scores", [1.0] * 100_001, "image_scores"),
    ("image_scores", [math.inf], "image_scores"),
    ("score_scale", {"false_alarm_rates": [1.0, 0.1], "scores": [2.0, 1.0]}, "score_scale"),
    ("score_scale", {"false_alarm_rates": [1.0], "scores": [2.0]}, "score_scale"),
    ("score_scale", [1, 2], "score_scale"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_image_verdict_fields_are_refused(tmp_path, inspector, key, value, match):
    data = json.loads(inspector.save(tmp_path / "m.json").read_text())
    data["inspection"][key] = value
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match=match):
        Inspector.load(tmp_path / "bad.json")
    del data["inspection"][key]
    (tmp_path / "partial.json").write_text(json.dumps(data))
    if key == "image_scores":  # optional: a model from an older file, saved again, has none
        assert Inspector.load(tmp_path / "partial.json").image_scores_ is None
    else:  # the image threshold and the score scale come together
        with pytest.raises(ModelFileError, match="missing"):
            Inspector.load(tmp_path / "partial.json")


def test_model_files_from_before_image_verdicts_load(tmp_path, inspector):
    """An older file had one threshold and its curve, both on the smoothed
    score: the curve becomes the score scale and its threshold the image
    threshold, -log10 of its false-alarm rate on that scale."""
    data = json.loads(inspector.save(tmp_path / "new.json").read_text())
    section = data["inspection"]
    for key in ("image_threshold", "image_scores", "score_scale", "false_reject_rate"):
        del section[key]
    scale = inspector.score_scale_
    section["calibration_curve"]["thresholds"] = [scale.nll_at(-math.log10(r)) for r in CURVE_RATES]
    section["threshold"] = scale.nll_at(4.0)  # its false-alarm rate was 1e-4
    (tmp_path / "old.json").write_text(json.dumps(data))
    old = Inspector.load(tmp_path / "old.json")
    assert old.image_threshold_ == pytest.approx(4.0, abs=1e-6) and old.image_scores_ is None
    assert old.false_reject_rate == 0.05  # the default
    image, _ = paint_defects(surface(5), 5)
    assert old.inspect(image).verdict == "fail" and old.inspect(good(401)).verdict == "pass"
    with pytest.raises(ValueError, match="fit it again"):
        old.set_false_reject_rate(0.1)
    assert old.set_false_alarm_rate(1e-3) < section["threshold"]  # the pixel threshold still moves
    old.save(tmp_path / "again.json")  # saved again, it keeps its image threshold, without image scores
    again = Inspector.load(tmp_path / "again.json")
    assert again.image_threshold_ == old.image_threshold_ and again.image_scores_ is None
    assert "image_scores" not in json.loads((tmp_path / "again.json").read_text())["inspection"]


def test_score_sample_quantiles_in_bounded_memory():
    values = np.random.default_rng(1).standard_normal(50_000).astype(np.float32)
    rates = np.array([1e-4, 1e-3, 0.01, 0.1, 0.3])
    exact = np.quantile(values, 1 - rates)
    whole = _ScoreSample()
    for part in np.array_split(values, 7):
        whole.add(part)
    np.testing.assert_allclose(whole.quantiles(rates), exact, rtol=1e-6)
    small = _ScoreSample(sample_size=2000, top_size=600)
    for part in np.array_split(values, 7):
        small.add(part)
    got = small.quantiles(rates)
    np.testing.assert_allclose(got[:3], exact[:3], rtol=1e-6)  # within the exact top (500 values above 1e-2)
    np.testing.assert_allclose(got[3:], exact[3:], atol=0.1)  # from the sample
    assert small.n == values.size and small._values.size == 2000 and small._top.size == 600


def test_score_scale_is_monotone_and_inverts():
    sample = _ScoreSample()
    sample.add(np.random.default_rng(2).exponential(size=100_000))
    scale = sample.scale()
    nll = np.linspace(-1, 30, 500)
    score = scale(nll)
    assert np.all(np.diff(score) >= 0) and score.min() == 0
    # An exponential tail is a straight line of log10(e) decades per nat.
    assert scale._slopes()[1] == pytest.approx(math.log10(math.e), rel=0.15)
    for value in (0.5, 2.0, 4.0, 9.0):
        assert scale(np.float64(scale.nll_at(value))) == pytest.approx(value)
    # A single-colour reference: every score alike still makes a usable scale.
    flat = ScoreScale.from_curve(np.array([1.0, 0.1, 0.01]), np.array([2.0, 2.0, 2.0]))
    assert flat(np.float64(2.0)) <= 1 and flat(np.float64(2.1)) > 100
    with pytest.raises(ValueError, match="rise"):
        ScoreScale(np.array([1.0, 0.1]), np.array([2.0, 2.0]))


def test_smoothing_ignores_masked_pixels():
    score = np.ones((20, 20), np.float32)
    mask = np.ones((20, 20), bool)
    mask[:, :5] = False
    score[:, :5] = 1000.0  # must not leak into the valid area
    out = smooth_scores(score, mask, 2.0)
    assert np.all(np.isnan(out[:, :5]))
    np.testing.assert_allclose(out[:, 5:], 1.0, rtol=1e-5)


def test_smoothing_is_the_normalised_convolution_of_scipy():
    """smooth_scores = Gaussian average of the used pixels near each pixel:
    G(score * mask) / G(mask), the Gaussians with zero padding."""
    from scipy import ndimage

    rng = np.random.default_rng(4)
    score = rng.normal(size=(61, 47)).astype(np.float32)
    for mask in (np.ones(score.shape, bool), rng.random(score.shape) > 0.3):
        num = ndimage.gaussian_filter(np.where(mask, score, 0.0), 2.5, mode="constant")
        den = ndimage.gaussian_filter(mask.astype(float), 2.5, mode="constant")
        want = np.where(mask, num / den, np.nan)
        np.testing.assert_allclose(smooth_scores(score, mask, 2.5), want, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("kwargs, match", [({"false_alarm_rate": 0}, "false_alarm_rate"),
                                           ({"false_reject_rate": 0}, "false_reject_rate"),
                                           ({"false_reject_rate": 0.5}, "false_reject_rate"),
                                           ({"smoothing_sigma": -1}, "smoothing_sigma"),
                                           ({"min_area": 0}, "min_area")])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Inspector(**kwargs)


def test_rethresholding_reuses_the_score_maps(inspector):
    image, _ = paint_defects(surface(8), 8)
    raw, score = inspector.score_maps(image)
    same = inspector.find_regions(score, raw=raw)
    direct = inspector.inspect(image)
    np.testing.assert_array_equal(same.mask, direct.mask)
    loose = inspector.find_regions(score, inspector.threshold_for(1e-2), raw=raw)
    assert loose.mask.sum() >= same.mask.sum()
    assert inspector.threshold_for(1e-2) < inspector.threshold_
    # A stricter image threshold fails fewer pixels' neighbourhoods, never more.
    strict = inspector.find_regions(score, raw=raw, image_threshold=same.image_threshold + 50)
    assert strict.mask.sum() <= same.mask.sum()


def test_border_margin_leaves_the_border_out_like_transparent_pixels(tmp_path):
    """A margin is not inspected: a stain inside it is no defect and its
    high scores do not spread inwards (the smoothing leaves the margin out,
    as it does transparent pixels); it is saved with the model, and files
    from before it inspect every pixel."""
    refs = [good(s, size=128) for s in (1, 2, 3)]
    image = good(9, size=128)
    image[2:9, 40:70] = (30, 160, 40)  # a green stain along the top edge, 2-9 px in
    plain = Inspector(random_state=0).fit(refs)
    assert not plain.inspect(image).passed
    margin = Inspector(random_state=0, border_margin=10).fit(refs)
    result = margin.inspect(image)
    assert result.passed and not result.mask.any()
    raw, score = margin.score_maps(image)
    inside = np.zeros(image.shape[:2], bool)
    inside[10:-10, 10:-10] = True
    assert np.isnan(raw[~inside]).all() and np.isnan(score[~inside]).all()
    assert np.isfinite(score[inside]).all()
    # The model is the same (the references' margins are fitted); the score
    # inside is the plain one, smoothed over the inside alone.
    plain_raw = plain.score_maps(image)[0]
    np.testing.assert_array_equal(raw[inside], plain_raw[inside])
    np.testing.assert_allclose(score, margin.score_scale_(smooth_scores(plain_raw, inside, 1.5)), rtol=1e-6,
                               equal_nan=True)
    # Saved, loaded, and absent from older files.
    loaded = Inspector.load(margin.save(tmp_path / "m.json"))
    assert loaded.inspection.border_margin == 10
    np.testing.assert_array_equal(loaded.score_maps(image)[1], score)
    data = json.loads((tmp_path / "m.json").read_text())
    del data["inspection"]["border_margin"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert Inspector.load(tmp_path / "old.json").inspection.border_margin == 0
    with pytest.raises(ValueError, match="inside the border margin of 70 pixels"):
        Inspector(border_margin=70).fit(refs)
