"""Colour features against independent references, and exact compression."""

import numpy as np
import pytest
from skimage.color import rgb2hsv, rgb2lab

from gmmseg.features import COLOR_SPACES, FeatureConfig, color_features, position_features, unique_colors

COLOURS = np.array(
    [[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5], [1, 1, 0], [0.2, 0.4, 0.6]],
    dtype=np.float64,
)


def test_rgb_is_identity():
    np.testing.assert_array_equal(color_features(COLOURS, "rgb"), COLOURS)


def test_lab_matches_skimage_scaled():
    np.testing.assert_allclose(color_features(COLOURS, "lab"), rgb2lab(COLOURS[None])[0] / 100.0, rtol=1e-12)
    lab = color_features(COLOURS, "lab")
    np.testing.assert_allclose(lab[1], [1.0, 0.0, 0.0], atol=1e-4)  # white: L = 100, a = b = 0
    np.testing.assert_allclose(lab[0], [0.0, 0.0, 0.0], atol=1e-6)
    assert lab[2, 1] > 0.5  # red has a large positive a*


def test_hsv_hue_is_circular():
    near_zero = np.array([[1.0, 0.0, 0.001]])  # hue just above 0 degrees
    near_360 = np.array([[1.0, 0.001, 0.0]])  # hue just below 360 degrees
    a, b = color_features(near_zero, "hsv"), color_features(near_360, "hsv")
    assert np.linalg.norm(a - b) < 0.01
    hsv = rgb2hsv(COLOURS[None])[0]
    f = color_features(COLOURS, "hsv")
    np.testing.assert_allclose(np.hypot(f[:, 0], f[:, 1]), hsv[:, 1], atol=1e-12)  # radius = saturation
    np.testing.assert_allclose(f[:, 2], hsv[:, 2], atol=1e-12)  # value
    np.testing.assert_allclose(f[5, :2], [0, 0], atol=1e-12)  # grey at the centre


def test_ycbcr_known_values():
    f = color_features(COLOURS, "ycbcr")
    np.testing.assert_allclose(f[1], [1.0, 0.0, 0.0], atol=1e-6)  # white
    np.testing.assert_allclose(f[5], [0.5, 0.0, 0.0], atol=1e-6)  # grey: no chroma
    np.testing.assert_allclose(f[2], [0.299, -0.168736, 0.5], atol=1e-6)  # red


def test_gray_is_luminance():
    f = color_features(COLOURS, "gray")
    assert f.shape == (8, 1)
    np.testing.assert_allclose(f[:, 0], COLOURS @ [0.2125, 0.7154, 0.0721])


@pytest.mark.parametrize("space", COLOR_SPACES)
def test_every_space_spans_about_one_unit(space):
    rng = np.random.RandomState(0)
    f = color_features(rng.rand(5000, 3), space)
    spread = f.max(axis=0) - f.min(axis=0)
    assert np.all(spread > 0.3) and np.all(spread < 2.1)


@pytest.mark.parametrize("space", COLOR_SPACES)
def test_grey_images_give_one_feature(space):
    grey = np.linspace(0, 1, 11)[:, None]
    f = color_features(grey, space)
    assert f.shape == (11, 1)
    assert np.all(np.diff(f[:, 0]) > 0)  # lightness increases


def test_feature_config_validation_and_dict():
    cfg = FeatureConfig("hsv", 0.5)
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.n_features(3) == 5 and cfg.n_features(1) == 3
    with pytest.raises(ValueError, match="color_space"):
        FeatureConfig("cmyk")
    with pytest.raises(ValueError, match="spatial_weight"):
        FeatureConfig("lab", -1)


def test_position_features():
    mask = np.ones((4, 8), dtype=bool)
    mask[0, 0] = False
    pos = position_features(mask, 2.0)
    assert pos.shape == (31, 2)
    np.testing.assert_allclose(pos[0], [1 * 2.0 / 8, 0.0])
    np.testing.assert_allclose(pos.max(axis=0), [7 * 2.0 / 8, 3 * 2.0 / 8])


@pytest.mark.parametrize("depth", [8, 16, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_unique_colors_is_exact(depth, channels):
    rng = np.random.RandomState(depth)
    if depth == 32:
        base = rng.rand(40, channels).astype(np.float32)
    else:
        top = 2**depth - 1
        base = (rng.randint(0, top + 1, size=(40, channels)) / top).astype(np.float32)
    colors = base[rng.randint(0, 40, size=5000)]
    unique, counts, inverse = unique_colors(colors, depth)
    np.testing.assert_array_equal(unique[inverse], colors)
    assert counts.sum() == 5000
    assert len(unique) == len(np.unique(colors, axis=0))
    np.testing.assert_array_equal(np.bincount(inverse, minlength=len(unique)), counts)


@pytest.mark.parametrize("depth, channels", [(8, 1), (8, 3), (16, 1)])
def test_unique_colors_equal_numpy_unique(depth, channels):
    """The linear-time radix sort gives numpy.unique's answer exactly:
    sorted distinct colours, counts and every pixel's row."""
    rng = np.random.default_rng(depth * channels)
    top = 2**depth - 1
    codes = rng.integers(0, top + 1, size=(60_000, channels))
    codes[rng.random(60_000) < 0.5] = codes[0]  # many repeats of one colour, as in photos
    unique, counts, inverse = unique_colors((codes / top).astype(np.float32), depth)
    keys = np.zeros(len(codes), dtype=np.int64)
    for i in range(channels):
        keys = (keys << depth) | codes[:, i]
    want_keys, want_inverse, want_counts = np.unique(keys, return_inverse=True, return_counts=True)
    np.testing.assert_array_equal(inverse, want_inverse.ravel())
    np.testing.assert_array_equal(counts, want_counts)
    np.testing.assert_array_equal(np.rint(unique * top).astype(np.int64), codes[np.unique(keys, return_index=True)[1]])


def test_unique_colors_of_values_between_codes_use_the_exact_float_path():
    colors = np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [1 / 255, 0.0, 1.0]], dtype=np.float32)
    unique, counts, inverse = unique_colors(colors, 8)  # 0.5 is not k / 255
    np.testing.assert_array_equal(unique[inverse], colors)
    assert sorted(counts.tolist()) == [1.0, 2.0]


def test_colours_are_numbered_in_order_of_appearance_across_calls():
    from gmmseg._counting import level_codes, number_codes

    rng = np.random.default_rng(3)
    levels = rng.integers(0, 6, size=(5000, 3)) * 51
    colors = (levels / 255).astype(np.float32)
    expected = (levels[:, 0] << 16) | (levels[:, 1] << 8) | levels[:, 2]
    codes = np.empty(len(colors), np.int32)
    assert level_codes(colors, codes, 0, 2000) and level_codes(colors, codes, 2000, 5000)
    np.testing.assert_array_equal(codes, expected)
    table = np.full(1 << 24, -1, dtype=np.int32)
    found, rows = np.empty(0, np.int64), []
    for part in (codes[:3000], codes[3000:]):  # two strips share one numbering
        inverse = np.empty(len(part), np.int32)
        new_codes = np.empty(len(part), np.int32)
        new = number_codes(part, table, len(found), inverse, new_codes)
        found = np.concatenate([found, new_codes[:new]])
        rows.append(inverse)
    inverse = np.concatenate(rows)
    np.testing.assert_array_equal(found[inverse], expected)
    first = [int(np.flatnonzero(inverse == r)[0]) for r in range(len(found))]
    assert first == sorted(first) and len(found) == len(np.unique(expected))  # each colour once, by first appearance
    # values that are not 8-bit levels, or outside [0, 1]
    for odd in (0.5, 1.0 + 1 / 255, -1 / 255, 2.0):
        part = colors[:40].copy()
        part[17, 1] = odd
        assert not level_codes(part, codes, 0, 40)
        assert level_codes(part, codes, 0, 17)  # the rows before it are fine


def test_feature_rows_are_the_gathered_colours_and_positions_of_the_used_pixels():
    from gmmseg._counting import feature_rows
    from gmmseg.features import position_axes

    rng = np.random.default_rng(4)
    mask = rng.random((9, 13)) > 0.3
    mask[4] = False  # a row without used pixels
    table = rng.random((6, 3)).astype(np.float32)
    n = int(mask.sum())
    inverse = rng.integers(0, 6, size=n).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(mask.sum(axis=1))])
    xs, ys = position_axes(mask.shape, 0.7, full_shape=(40, 13), first_row=20)
    X = np.full((n, 5), np.nan, np.float32)
    index = np.full(mask.shape, -7, np.int32)
    for a, b in ((0, 4), (4, 5), (5, 9)):
        feature_rows(table, inverse, mask, offsets, xs, ys, X, index, a, b)
    np.testing.assert_array_equal(X[:, :3], table[inverse])
    np.testing.assert_array_equal(X[:, 3:], position_features(mask, 0.7, full_shape=(40, 13), first_row=20))
    expected = np.full(mask.shape, -1)
    expected[mask] = np.arange(n)
    np.testing.assert_array_equal(index, expected)
    # positions only (no colour columns)
    feature_rows(np.zeros((1, 0), np.float32), np.zeros(1, np.int32), mask, offsets, xs, ys, X[:, :2], index, 0, 9)
    np.testing.assert_array_equal(X[:, :2], X[:, 3:])

