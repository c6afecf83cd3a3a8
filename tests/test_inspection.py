"""Defect inspection on synthetic surfaces with painted defects of known masks."""

import json

import numpy as np
import pytest
from imagefiles import auroc, paint_defects, surface

from gmmseg import ModelFileError, Segmenter
from gmmseg.inspection import Inspector, smooth_scores


@pytest.fixture(scope="module")
def inspector():
    references = [np.clip(surface(s), 0, 255).astype(np.uint8) for s in (1, 2, 3)]
    return Inspector().fit(references)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("faint", [False, True])
def test_painted_defects_are_found(inspector, seed, faint):
    image, masks = paint_defects(surface(100 + seed), seed, faint)
    result = inspector.inspect(image)
    truth = np.any(masks, axis=0)
    score = auroc(result.score.ravel(), truth.ravel())
    print(f"seed {seed} faint {faint}: pixel AUROC {score:.4f}, {len(result.regions)} regions")
    assert score >= 0.99
    for mask in masks:  # every painted defect (stain, scratch, spots) is hit by a region
        assert result.mask[mask].any()
    false_regions = [r for r in result.regions
                     if not truth[r.bbox[1]:r.bbox[1] + r.bbox[3], r.bbox[0]:r.bbox[0] + r.bbox[2]].any()]
    assert len(false_regions) <= 1
    assert result.verdict == "fail" and result.image_score > 0


def test_defect_free_images_flag_about_the_false_alarm_rate():
    references = [np.clip(surface(s), 0, 255).astype(np.uint8) for s in (1, 2, 3)]
    good = [np.clip(surface(s), 0, 255).astype(np.uint8) for s in range(300, 306)]
    for rate in (0.01, 0.05):
        inspector = Inspector(false_alarm_rate=rate, min_area=1).fit(references)
        flagged = np.mean([np.nanmean(inspector.score_map(img) > inspector.threshold_) for img in good])
        print(f"false-alarm rate {rate}: flagged {flagged:.4f}")
        assert rate / 3 <= flagged <= rate * 3


def test_defect_free_images_pass_at_default_settings(inspector):
    for s in (400, 401, 402):
        result = inspector.inspect(np.clip(surface(s), 0, 255).astype(np.uint8))
        assert len(result.regions) <= 1


def test_regions_have_consistent_geometry(inspector):
    image, masks = paint_defects(surface(7), 7)
    result = inspector.inspect(image)
    for region in result.regions:
        x, y, w, h = region.bbox
        assert region.area <= w * h
        assert x <= region.centroid[0] <= x + w and y <= region.centroid[1] <= y + h
        assert region.max_score >= region.mean_score > inspector.threshold_
        row = region.as_dict()
        assert row["area"] == region.area and row["width"] == w
    assert [r.label for r in result.regions] == list(range(1, len(result.regions) + 1))
    assert result.defect_area == int(sum(r.area for r in result.regions))


def test_threshold_for_another_rate(inspector):
    references = [np.clip(surface(s), 0, 255).astype(np.uint8) for s in (3,)]
    strict = inspector.threshold_for(1e-4, references)
    loose = inspector.threshold_for(1e-2, references)
    assert strict > loose


def test_save_load_round_trip(tmp_path, inspector):
    image, _ = paint_defects(surface(5), 5)
    path = inspector.save(tmp_path / "inspect.json")
    loaded = Inspector.load(path)
    assert loaded.threshold_ == inspector.threshold_
    # The saved calibration curve re-thresholds a loaded model for other rates.
    for rate in (1e-5, 3e-3, 0.05):
        np.testing.assert_allclose(loaded.threshold_for(rate), inspector.threshold_for(rate), rtol=0.05, atol=0.05)
    a, b = inspector.inspect(image), loaded.inspect(image)
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.mask, b.mask)
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


def test_smoothing_ignores_masked_pixels():
    score = np.ones((20, 20), np.float32)
    mask = np.ones((20, 20), bool)
    mask[:, :5] = False
    score[:, :5] = 1000.0  # must not leak into the valid area
    out = smooth_scores(score, mask, 2.0)
    assert np.all(np.isnan(out[:, :5]))
    np.testing.assert_allclose(out[:, 5:], 1.0, rtol=1e-5)


@pytest.mark.parametrize("kwargs, match", [({"false_alarm_rate": 0}, "false_alarm_rate"),
                                           ({"smoothing_sigma": -1}, "smoothing_sigma"),
                                           ({"min_area": 0}, "min_area")])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Inspector(**kwargs)


def test_rethresholding_reuses_the_score_map(inspector):
    image, _ = paint_defects(surface(8), 8)
    score = inspector.score_map(image)
    same = inspector.find_regions(score)
    direct = inspector.inspect(image)
    np.testing.assert_array_equal(same.mask, direct.mask)
    loose = inspector.find_regions(score, inspector.threshold_for(1e-2))
    assert loose.mask.sum() >= same.mask.sum()
    assert inspector.threshold_for(1e-2) < inspector.threshold_
