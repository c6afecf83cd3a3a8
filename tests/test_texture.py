"""Texture features: the filter bank against a plain scipy.ndimage reference,
and texture feature sets through the Segmenter and its model files."""

import numpy as np
import pytest
from scipy import ndimage

from gmmseg import Segmenter
from gmmseg.engine import get_num_threads, set_num_threads
from gmmseg.features import TEXTURE_FILTER_SETS, FeatureConfig, texture_features, texture_filter_columns


def _gaussian(x, sigma):
    """Normalised convolution: the Gaussian average of the pixels that exist."""
    return ndimage.gaussian_filter(x, sigma, mode="constant") / ndimage.gaussian_filter(np.ones_like(x), sigma, mode="constant")


def _gaussian_along(x, sigma, axis):
    """Normalised convolution along one axis (a row's or a column's pixels)."""
    return (ndimage.gaussian_filter1d(x, sigma, axis=axis, mode="constant")
            / ndimage.gaussian_filter1d(np.ones_like(x), sigma, axis=axis, mode="constant"))


def _reference(lightness, scales, illumination_sigma, filters, row_column_sigma=0.0):
    """The documented definition, in float64 with scipy.ndimage and NumPy."""
    L = lightness.astype(np.float64)
    if illumination_sigma > 0:
        L = L / np.maximum(_gaussian(L, illumination_sigma), 1.0 / 255.0) - 1.0
    if row_column_sigma > 0:
        L = L - _gaussian_along(L, row_column_sigma, axis=1)
        L = L - _gaussian_along(L, row_column_sigma, axis=0)
    gx, gy = np.gradient(L, axis=1), np.gradient(L, axis=0)  # central differences, one-sided at the border
    columns = []
    for sigma in scales:
        smoothed = _gaussian(L, sigma)
        columns.append(smoothed)
        if "deviation" in filters:
            columns.append(np.sqrt(np.maximum(_gaussian(L * L, sigma) - smoothed**2, 0.0)))
        if "gradient" in filters:
            columns += [np.sqrt(_gaussian(gx * gx, sigma)), np.sqrt(_gaussian(gy * gy, sigma))]
    return np.stack(columns, axis=-1)


@pytest.mark.parametrize("shape", [(97, 130), (5, 300), (300, 3)])
@pytest.mark.parametrize("illumination_sigma", [0.0, 8.0])
@pytest.mark.parametrize("filters", TEXTURE_FILTER_SETS)
def test_filter_bank_matches_scipy(shape, illumination_sigma, filters):
    rng = np.random.default_rng(1)
    lightness = ndimage.gaussian_filter(rng.random(shape), 1.5) * 0.8 + 0.1
    got = texture_features(lightness, (1, 2, 4, 16), illumination_sigma, filters)
    want = _reference(lightness, (1, 2, 4, 16), illumination_sigma, filters)
    assert got.dtype == np.float32 and got.shape == shape + (4 * len(texture_filter_columns(filters)),)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


@pytest.mark.parametrize("shape", [(97, 130), (5, 300), (300, 3)])
@pytest.mark.parametrize("illumination_sigma", [0.0, 8.0])
def test_row_column_background_matches_scipy(shape, illumination_sigma):
    rng = np.random.default_rng(4)
    lightness = ndimage.gaussian_filter(rng.random(shape), 1.5) * 0.8 + 0.1
    lightness += np.linspace(0.0, 0.1, shape[1])[None, :] * np.linspace(1.0, 0.5, shape[0])[:, None]
    got = texture_features(lightness, (1, 4), illumination_sigma, "smoothed+deviation+gradient", row_column_sigma=6.0)
    want = _reference(lightness, (1, 4), illumination_sigma, "smoothed+deviation+gradient", row_column_sigma=6.0)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
    assert not np.allclose(got, texture_features(lightness, (1, 4), illumination_sigma, "smoothed+deviation+gradient"),
                           atol=1e-3)


def test_row_column_background_removes_straight_lines_and_keeps_a_hole():
    """A bright row and a dark column across the whole image (a rim, a
    grinding mark) leave no trace; a small dark hole does."""
    rng = np.random.default_rng(5)
    surface = 0.5 + 0.02 * ndimage.gaussian_filter(rng.random((160, 200)), 1.0)
    marked = surface.copy()
    marked[40:43, :] += 0.3
    marked[:, 120:122] -= 0.2
    holed = surface.copy()
    holed[100:104, 60:64] -= 0.3

    def bank(image, sigma):
        return texture_features(image, (1, 2), 0.0, "smoothed+gradient", row_column_sigma=sigma)

    inner = (slice(30, 130), slice(30, 170))  # away from the lines' ends, where the row averages stop
    line_change = np.abs(bank(marked, 16.0) - bank(surface, 16.0))[inner].max()
    assert line_change < 1e-4
    assert np.abs(texture_features(marked, (1, 2), 0.0) - texture_features(surface, (1, 2), 0.0))[inner].max() > 0.1
    assert np.abs(bank(holed, 16.0) - bank(surface, 16.0))[98:106, 58:66].max() > 0.1


def test_borders_are_not_smeared():
    """A flat image stays flat up to its border at every scale (normalised
    convolution); with the edge repeated or zero padding it would not be
    for a ramp or a constant respectively."""
    flat = np.full((40, 60), 0.5, dtype=np.float32)
    features = texture_features(flat, (1, 16), 8.0, "smoothed+deviation+gradient")
    np.testing.assert_allclose(features, 0.0, atol=1e-5)


def test_filter_bank_does_not_depend_on_the_thread_count():
    lightness = np.random.default_rng(2).random((700, 90)).astype(np.float32)
    before = get_num_threads()
    try:
        set_num_threads(1)
        one = texture_features(lightness)
        set_num_threads(3)
        three = texture_features(lightness)
    finally:
        set_num_threads(before)
    assert np.array_equal(one, three)


def test_illumination_normalisation_removes_a_brightness_change():
    rng = np.random.default_rng(3)
    surface = 0.4 + 0.1 * ndimage.gaussian_filter(rng.random((120, 120)), 1.0)
    bright = texture_features(surface * 1.6, (1, 2), 8.0)
    dim = texture_features(surface, (1, 2), 8.0)
    np.testing.assert_allclose(bright, dim, atol=1e-5)
    assert not np.allclose(texture_features(surface * 1.6, (1, 2), 0.0), texture_features(surface, (1, 2), 0.0))


def _stripes_and_smooth(seed, size=96):
    """Left half fine stripes, right half flat, in the same mean grey: one
    colour, two textures."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size), 128.0)
    img[:, : size // 2] += np.where(np.arange(size // 2) % 4 < 2, 50.0, -50.0)[None, :]
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_texture_separates_what_colour_cannot():
    image = _stripes_and_smooth(0)
    truth = np.zeros(image.shape, dtype=int)
    truth[:, image.shape[1] // 2 :] = 1
    settings = dict(smoothing=0.0, spatial_weight=0.0, random_state=0, texture_scales=(1, 2))
    away = np.abs(np.arange(image.shape[1]) - image.shape[1] // 2) > 8  # off the boundary's blur

    def agreement(feature_set):
        labels = Segmenter(2, feature_set=feature_set, **settings).fit_predict(image).labels
        agree = (labels[:, away] == truth[:, away]).mean()
        return max(agree, 1 - agree)

    assert agreement("texture") > 0.97
    assert agreement("color") < 0.8  # the same grey levels on both sides


@pytest.mark.parametrize("feature_set", ["texture", "color+texture"])
def test_texture_models_round_trip(tmp_path, feature_set):
    image = np.dstack([_stripes_and_smooth(1)] * 3)
    seg = Segmenter(2, feature_set=feature_set, texture_scales=(1, 2, 4), smoothing=1.0, random_state=0)
    result = seg.fit_predict(image)
    expected_features = FeatureConfig(feature_set=feature_set, texture_scales=(1, 2, 4), spatial_weight=0.5).n_features(3)
    assert seg.n_features_in_ == expected_features
    path = seg.save(tmp_path / "m.json")
    loaded = Segmenter.load(path)
    again = loaded.predict(image)
    assert np.array_equal(again.labels, result.labels)
    assert np.array_equal(again.log_likelihood, result.log_likelihood)
    # predict on the same image equals fit_predict (the fit's own table)
    assert np.array_equal(seg.predict(image).labels, result.labels)


def test_a_texture_model_from_before_the_filter_setting_keeps_its_bank(tmp_path):
    """Model files written before ``texture_filters`` existed used smoothed
    lightness and deviation; loading one must not switch it to today's
    default bank (it would not even have the right number of features)."""
    import json

    image = _stripes_and_smooth(2)
    seg = Segmenter(2, feature_set="texture", texture_filters="smoothed+deviation", texture_scales=(1, 2),
                    smoothing=0.0, spatial_weight=0.0, random_state=0).fit(image)
    path = seg.save(tmp_path / "m.json")
    data = json.loads(path.read_text())
    del data["features"]["texture_filters"]
    path.write_text(json.dumps(data))
    loaded = Segmenter.load(path)
    assert loaded.texture_filters == "smoothed+deviation"
    assert np.array_equal(loaded.predict(image).labels, seg.predict(image).labels)


def test_a_spatial_fit_runs_the_filter_bank_once_per_image(monkeypatch):
    """The fit's sample, its grid tables and the colour-first candidate share
    one filter bank per image (it was computed four times)."""
    import gmmseg.segment

    calls = []
    real = gmmseg.segment.texture_features
    monkeypatch.setattr(gmmseg.segment, "texture_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    image = np.dstack([_stripes_and_smooth(2)] * 3)
    seg = Segmenter(2, feature_set="color+texture", smoothing=1.0, spatial_weight=0.5, spatial_fit_pixels=2000,
                    random_state=0)
    seg.fit(image)
    assert len(calls) == 1
    assert "_grid_textures" not in vars(seg)  # nothing kept after the fit


def test_auto_features_are_texture_for_grey_and_colour_for_colour(tmp_path):
    grey = _stripes_and_smooth(3)
    rgb = np.dstack([grey, grey[::-1], grey[:, ::-1]])
    settings = dict(feature_set="auto", texture_scales=(1, 2), smoothing=0.0, spatial_weight=0.0, random_state=0)
    for image, want, n_features in ((grey, "color+texture", 1 + 2 * 3), (rgb, "color", 3)):
        seg = Segmenter(2, **settings).fit(image)
        assert seg.features.feature_set == want and seg.n_features_in_ == n_features
        assert seg.feature_set == "auto"  # the setting itself stays what was asked
        loaded = Segmenter.load(seg.save(tmp_path / f"{want}.json"))
        assert loaded.features.feature_set == want
        assert np.array_equal(loaded.predict(image).labels, seg.predict(image).labels)
    # The same Segmenter refitted on the other kind of image follows it.
    seg = Segmenter(2, **settings).fit(rgb).fit(grey)
    assert seg.features.feature_set == "color+texture"
    with pytest.raises(ValueError, match="grey and colour mixed"):
        Segmenter(2, **settings).fit([grey, rgb])


def test_inspection_uses_texture_on_grey_references_by_default():
    from gmmseg import Inspector

    grey = _stripes_and_smooth(4)
    inspector = Inspector(2, texture_scales=(1, 2)).fit([grey, _stripes_and_smooth(5)])
    assert inspector.feature_set == "auto" and inspector.segmenter_.features.uses_texture
    rgb = np.dstack([grey] * 3)
    rgb[..., 0] = 255 - rgb[..., 0]
    assert not Inspector(2).fit([rgb, rgb[::-1]]).segmenter_.features.uses_texture


def test_an_inspection_model_from_before_the_row_column_setting_keeps_its_bank(tmp_path):
    """Inspection's default subtracts row and column backgrounds (32 px);
    model files written before that setting existed had none, and must read
    as none, with their scores unchanged."""
    import json

    from gmmseg import Inspector

    rng = np.random.default_rng(6)
    refs = [(ndimage.gaussian_filter(rng.random((64, 72)), 1.0) * 200 + 20).astype(np.uint8) for _ in range(3)]
    inspector = Inspector(auto_k=False, n_components=2, texture_scales=(1, 2)).fit(refs)
    assert inspector.params.row_column_sigma == 32.0
    path = inspector.save(tmp_path / "now.json")
    assert Inspector.load(path).params.row_column_sigma == 32.0
    old = Inspector(auto_k=False, n_components=2, texture_scales=(1, 2), row_column_sigma=0.0).fit(refs)
    data = json.loads(old.save(tmp_path / "old.json").read_text())
    assert "row_column_sigma" in json.dumps(data)

    def drop(node):
        if isinstance(node, dict):
            node.pop("row_column_sigma", None)
            for value in node.values():
                drop(value)

    drop(data)
    (tmp_path / "old.json").write_text(json.dumps(data))
    loaded = Inspector.load(tmp_path / "old.json")
    assert loaded.params.row_column_sigma == 0.0
    np.testing.assert_array_equal(loaded.score_maps(refs[0])[0], old.score_maps(refs[0])[0])
