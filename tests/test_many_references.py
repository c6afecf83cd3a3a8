"""Fitting a list of reference images: streamed one image at a time, with
the same model as one image made of all their pixels where that is exact,
per-image sampling quotas where max_samples bites, and bounded memory."""

import warnings
import weakref

import numpy as np
import pytest
from PIL import Image

import gmmseg.segment
from gmmseg import Segmenter, load_image, select_k
from gmmseg.segment import _GridCounts, _quotas


def _regions(h, w, seed, grey=False, alpha=False, red=None):
    """Blocks of 4 colours with noise, uint8. ``alpha``: a transparent
    corner (RGBA or grey+alpha). ``red``: every pixel's red value (to tell
    the images apart in the training rows)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 4, size=(h // 6 + 1, w // 6 + 1))
    labels = np.kron(blocks, np.ones((6, 6), dtype=int))[:h, :w]
    palette = rng.integers(30, 226, size=(4, 3))
    img = np.clip(palette[labels] + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)
    if red is not None:
        img[..., 0] = red
    if grey:
        img = img[..., 1]
    if alpha:
        a = np.full((h, w), 255, np.uint8)
        a[: h // 3, : w // 2] = 0
        img = np.dstack([img, a])
    return img


def _used_rgb(img):
    """The used pixels of an image as (N, 3) uint8 (grey repeated)."""
    image = load_image(img)
    pixels = np.rint(image.rgb()[image.mask] * 255).astype(np.uint8)
    return pixels


def _pooled(images, grey=False):
    """One row image of all the used pixels of the images."""
    rows = np.concatenate([_used_rgb(im) for im in images])
    return (rows[:, :1] if grey else rows)[None]


def _assert_same_mixture(a, b, atol=1e-10):
    for name in ("means_", "covariances_", "weights_"):
        np.testing.assert_allclose(getattr(a.gmm_, name), getattr(b.gmm_, name), rtol=0, atol=atol, err_msg=name)


COLOUR = dict(smoothing=0.0, spatial_weight=0.0, random_state=3)


@pytest.mark.parametrize("n_starts", [1, 8])
@pytest.mark.parametrize("color_space", ["lab", "rgb"])
def test_a_list_of_colour_images_gives_the_pooled_fit(n_starts, color_space):
    images = [_regions(40, 70, 1), _regions(55, 30, 2, alpha=True), _regions(23, 90, 3), _regions(64, 64, 4)]
    settings = dict(COLOUR, n_starts=n_starts, color_space=color_space)
    many = Segmenter(4, **settings).fit(images)
    pooled = Segmenter(4, **settings).fit(_pooled(images))
    _assert_same_mixture(many, pooled)
    np.testing.assert_allclose(many.component_colors_, pooled.component_colors_, rtol=0, atol=1e-10)
    # max_samples above the pixel count does not bite: the same model
    roomy = Segmenter(4, max_samples=40 * 70 + 55 * 30 + 23 * 90 + 64 * 64, **settings).fit(images)
    _assert_same_mixture(roomy, pooled)


def test_grey_and_mixed_lists_give_the_pooled_fit():
    greys = [_regions(30, 50, 5, grey=True), _regions(41, 33, 6, grey=True, alpha=True), _regions(20, 20, 7, grey=True)]
    many = Segmenter(3, n_starts=1, **COLOUR).fit(greys)
    assert many.channels_ == 1
    _assert_same_mixture(many, Segmenter(3, n_starts=1, **COLOUR).fit(_pooled(greys, grey=True)))
    # a grey image among colour images counts as R = G = B
    mixed = [greys[0], _regions(30, 40, 8), greys[1]]
    many = Segmenter(3, **COLOUR).fit(mixed)
    assert many.channels_ == 3
    _assert_same_mixture(many, Segmenter(3, **COLOUR).fit(_pooled(mixed)))


def test_the_merged_colour_table_is_exact_whatever_the_merges(monkeypatch):
    """Merging the distinct colours after every image gives the same rows
    and counts as merging once."""
    images = [_regions(30 + 7 * i, 40, 10 + i, alpha=i == 2) for i in range(6)]
    seg = Segmenter(3, **COLOUR)
    _, _, once = seg._training_data(images)
    monkeypatch.setattr(gmmseg.segment, "_MERGE_ROWS", 1)
    _, _, often = seg._training_data(images)
    np.testing.assert_array_equal(once.X, often.X)
    np.testing.assert_array_equal(once.sample_weight, often.sample_weight)
    assert once.sample_weight.sum() == sum(load_image(im).n_valid for im in images)


def _per_image_rows(data, n_images):
    """Training pixels per image, told apart by each image's red value."""
    red = np.rint(data.colors[:, 0] * 255).astype(int) // 40
    return np.bincount(red, weights=data.counts, minlength=n_images)


@pytest.mark.parametrize("feature_set", ["color", "color+texture"])
def test_max_samples_draws_from_each_image_in_proportion(feature_set):
    images = [_regions(h, w, i, red=40 * i, alpha=i == 1) for i, (h, w) in enumerate([(40, 50), (90, 60), (20, 30),
                                                                                        (70, 70)])]
    used = np.array([load_image(im).n_valid for im in images])
    settings = dict(COLOUR, feature_set=feature_set, texture_scales=(1, 2), max_samples=1001)
    _, _, data = Segmenter(3, **settings)._training_data(images)
    if feature_set == "color":
        assert data.sample_weight.sum() == 1001
    else:
        assert data.X.shape[0] == 1001 and data.sample_weight is None
    got = _per_image_rows(data, len(images))
    assert got.sum() == 1001
    assert np.all(np.abs(got - 1001 * used / used.sum()) < 1.0), (got, 1001 * used / used.sum())
    _, _, again = Segmenter(3, **settings)._training_data(images)
    np.testing.assert_array_equal(data.X, again.X)
    _, _, other = Segmenter(3, **{**settings, "random_state": 4})._training_data(images)
    assert not np.array_equal(data.X, other.X)


def test_quotas_add_up_and_follow_the_sizes():
    for total, sizes in ((10, [1, 1, 1]), (1001, [2000, 5400, 600, 4900]), (7, [100]), (5, [3, 0, 9])):
        q = _quotas(total, sizes)
        assert sum(q) == total
        exact = total * np.array(sizes) / sum(sizes)
        assert np.all(np.abs(np.array(q) - exact) < 1.0)


def test_one_image_in_a_list_is_that_image():
    img = _regions(50, 60, 9, alpha=True)
    for settings in (COLOUR, dict(COLOUR, max_samples=500), dict(COLOUR, feature_set="texture", max_samples=500)):
        a = Segmenter(3, **settings).fit([img])
        b = Segmenter(3, **settings).fit(img)
        np.testing.assert_array_equal(a.gmm_.means_, b.gmm_.means_)


def test_one_image_streamed_draws_the_rows_of_a_one_image_fit():
    """The streamed sampler given a single image keeps the rows the
    one-image fit keeps (the same RandomState draws, in pixel order)."""
    img = _regions(50, 60, 11, alpha=True)
    seg = Segmenter(3, feature_set="color+texture", texture_scales=(1, 2), max_samples=700, **COLOUR)
    _, _, single = seg._training_data(img)
    _, data = seg._streamed_training_data([img], grid=False, grid_max_samples=True)
    np.testing.assert_array_equal(single.X, data.X)


def _write_pngs(folder, images):
    paths = []
    for i, img in enumerate(images):
        path = folder / f"ref{i:03d}.png"
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


TEXTURE = dict(feature_set="color+texture", texture_scales=(1, 2, 4), spatial_weight=0.0, random_state=0)


@pytest.mark.parametrize("settings", [dict(smoothing=0.0), dict(smoothing=0.0, max_samples=3000),
                                      dict(smoothing=1.0, spatial_fit_pixels=2000)])
def test_texture_on_several_images_as_paths_or_arrays(tmp_path, settings):
    images = [_regions(48, 64, 20), _regions(64, 40, 21, alpha=True), _regions(50, 50, 22)]
    paths = _write_pngs(tmp_path, images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a spatial fit may stop at max_iter on noise
        from_arrays = Segmenter(3, **TEXTURE, **settings).fit(images)
        from_paths = Segmenter(3, **TEXTURE, **settings).fit(paths)
        from_data = Segmenter(3, **TEXTURE, **settings).fit([load_image(p) for p in paths])
    mean, scale = from_arrays.texture_stats_
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(scale)) and np.all(scale > 0)
    # 1e-12: the engine's threads may sum in another order between runs
    _assert_same_mixture(from_arrays, from_paths, atol=1e-12)
    _assert_same_mixture(from_arrays, from_data, atol=1e-12)
    np.testing.assert_allclose(from_arrays.texture_stats_[0], from_paths.texture_stats_[0], rtol=0, atol=0)
    result = from_paths.predict(paths[1])
    assert result.labels.shape == (64, 40) and (result.labels[~load_image(paths[1]).mask] == -1).all()
    assert np.isfinite(result.log_likelihood[load_image(paths[1]).mask]).all()


@pytest.mark.parametrize("shapes, passes", [
    ([(30, 40, True), (200, 150, False), (150, 200, True)], 2),  # the first image does not tell the step
    ([(70, 90, False)] * 4, 1),  # alike: the first pass keeps the grids
])
def test_the_spatial_grid_of_several_images_is_the_one_of_all_their_masks(live_images, shapes, passes):
    """The step comes from every image's mask (counted in a first pass),
    and the kept grids are those of that step, with the texture features
    computed on the whole image."""
    images = [_regions(h, w, 30 + i, alpha=alpha) for i, (h, w, alpha) in enumerate(shapes)]
    seg = Segmenter(3, smoothing=1.0, spatial_fit_pixels=1000, **dict(TEXTURE, texture_scales=(1, 2)))
    _, _, data = seg._training_data(images, grid=True)
    assert live_images["loads"] == len(images) * passes
    step = seg._fit_step([load_image(im) for im in images])
    assert step > 1
    assert data.grid_step == 1
    for img, grid in zip(images, data.images):
        full = load_image(img)
        np.testing.assert_array_equal(grid.mask, full.mask[::step, ::step])
        np.testing.assert_array_equal(grid.pixels, full.pixels[::step, ::step])
        np.testing.assert_array_equal(grid.texture, seg._texture_features(full)[::step, ::step])
    assert data.X.shape[0] == sum(int(g.mask.sum()) for g in data.images) <= 1000


def test_grid_counts_match_the_mask():
    rng = np.random.default_rng(0)
    for shape in ((37, 52), (1, 300), (90, 2)):
        mask = rng.random(shape) > 0.3
        counts = _GridCounts(mask)
        full = _GridCounts(np.ones(shape, bool))
        for step in (1, 2, 3, 7, 40, 500):
            assert counts(step) == np.count_nonzero(mask[::step, ::step])
            assert full(step) == np.ones(shape, bool)[::step, ::step].sum()


def test_an_unusable_image_in_a_list_is_named(tmp_path):
    images = [_regions(20, 20, 1), np.zeros((10, 10, 4), np.uint8), _regions(20, 20, 2)]
    with pytest.raises(ValueError, match=r"<array> \(image 2 of 3\): no usable pixels"):
        Segmenter(2, **COLOUR).fit(images)
    paths = _write_pngs(tmp_path, images)
    with pytest.raises(ValueError, match=r"ref001.png \(image 2 of 3\): no usable pixels"):
        Segmenter(2, smoothing=1.0, spatial_weight=0.0).fit(paths)
    tiny = [np.full((1, 1, 3), 9, np.uint8), np.full((1, 1, 3), 200, np.uint8)]
    with pytest.raises(ValueError, match="the 2 images: only 2 usable pixels together, fewer than n_components=3"):
        Segmenter(3, **COLOUR).fit(tiny)


@pytest.fixture
def live_images(monkeypatch):
    """Wraps the load_image of gmmseg.segment: records, at every load, how
    many pixel arrays of earlier loads are still alive (weak references:
    a view or a row kept of an image keeps its array alive too)."""
    record = {"loads": 0, "alive_at_load": [], "refs": []}
    real = gmmseg.segment.load_image

    def counting(source, *args, **kwargs):
        record["alive_at_load"].append(sum(ref() is not None for ref in record["refs"]))
        image = real(source, *args, **kwargs)
        record["loads"] += 1
        record["refs"].append(weakref.ref(image.pixels))
        record["refs"].append(weakref.ref(image.mask))
        return image

    monkeypatch.setattr(gmmseg.segment, "load_image", counting)
    record["alive"] = lambda: sum(ref() is not None for ref in record["refs"])
    return record


@pytest.mark.parametrize("settings, passes", [
    (dict(COLOUR), 1),
    (dict(COLOUR, max_samples=2000), 1),
    (dict(TEXTURE, smoothing=0.0, texture_scales=(1, 2), max_samples=2000), 1),
    (dict(TEXTURE, smoothing=1.0, texture_scales=(1, 2), spatial_fit_pixels=5000), 2),
])
def test_forty_references_are_loaded_one_at_a_time(tmp_path, live_images, settings, passes):
    # Sizes and masks vary: with the spatial prior, the step is known only after a first pass.
    paths = _write_pngs(tmp_path, [_regions(48 + i % 5, 64, 100 + i, alpha=i % 7 == 0) for i in range(40)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = Segmenter(3, **settings).fit(paths)
    assert live_images["loads"] == 40 * passes  # the spatial prior reads each file twice
    # No image (nor a view of one) is alive when the next is loaded.
    assert max(live_images["alive_at_load"]) == 0
    assert live_images["alive"]() == 0
    assert seg.predict(paths[0]).labels.shape == (48, 64)


def test_select_k_on_a_list_of_paths_streams_too(tmp_path, live_images):
    paths = _write_pngs(tmp_path, [_regions(40, 40, 200 + i) for i in range(12)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = select_k(paths, k_range=range(1, 5), **COLOUR)
        pooled = select_k(_pooled([np.asarray(Image.open(p)) for p in paths]), k_range=range(1, 5), **COLOUR)
    assert live_images["loads"] == 12 + 1 and max(live_images["alive_at_load"][:12]) == 0
    np.testing.assert_allclose([r["bic"] for r in result.rows], [r["bic"] for r in pooled.rows], rtol=1e-12)
