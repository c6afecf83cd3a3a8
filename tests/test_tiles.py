"""Large images are segmented strip by strip: the result must not depend on
the strips (labels identical, probabilities and log-likelihoods equal to
float32 rounding), and no (H, W, K) map exists unless asked for."""

import numpy as np
import pytest

import gmmseg
from gmmseg import segment
from gmmseg.features import texture_features, texture_reach


def _regions(height, width, seed=0, grey=False):
    """Three colour regions with a diagonal border, a textured band and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    img = np.empty((height, width, 3))
    img[:] = (0.8, 0.2, 0.2)
    img[x + y > width] = (0.2, 0.7, 0.3)
    img[y > 0.6 * height] = (0.2, 0.3, 0.8)
    stripes = (y > 0.3 * height) & (y < 0.45 * height) & ((x // 2) % 2 == 0)
    img[stripes] *= 0.6
    img += rng.normal(scale=0.05, size=img.shape)
    img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    return img.mean(axis=2).astype(np.uint8) if grey else img


SETTINGS = {
    "defaults (positions, smoothing)": dict(),
    "colour only": dict(spatial_weight=0.0, smoothing=0.0),
    "colour, smoothing": dict(spatial_weight=0.0, smoothing=2.0),
    "texture, smoothing": dict(feature_set="color+texture", texture_scales=(1, 2), illumination_sigma=2.0,
                               spatial_weight=0.0),
    "texture, positions": dict(feature_set="color+texture", texture_scales=(1, 2), illumination_sigma=2.0,
                               smoothing=0.0),
    "colour image, texture": dict(feature_set="color+texture", texture_scales=(1, 2), illumination_sigma=2.0,
                                  spatial_weight=0.0),
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_strips_give_the_whole_image_result(name, monkeypatch):
    img = _regions(150, 40, grey=name.startswith("texture"))  # colour images: lightness from RGB
    seg = gmmseg.Segmenter(3, random_state=0, n_starts=2, max_iter=30, **SETTINGS[name]).fit(img)
    whole = seg.predict(img, probabilities=True)
    monkeypatch.setattr(segment, "_STRIP_PIXELS", 40 * 7)  # strips of 7 rows, far fewer than the image's 150
    assert len(segment._row_chunks(150, 40)) > 20
    strips = seg.predict(img, probabilities=True)
    np.testing.assert_array_equal(strips.labels, whole.labels)
    np.testing.assert_allclose(strips.probabilities, whole.probabilities, rtol=0, atol=2e-7)
    np.testing.assert_allclose(strips.log_likelihood, whole.log_likelihood, rtol=1e-6)
    # probabilities computed later, strip by strip, are the same
    lazy = seg.predict(img)
    assert not lazy.has_map("probabilities")
    for k in range(3):
        np.testing.assert_allclose(lazy.probability_map(k), whole.probabilities[..., k], rtol=0, atol=2e-7)
    np.testing.assert_allclose(lazy.map_rows("probabilities", 33, 71), whole.probabilities[33:71], rtol=0, atol=2e-7)
    # inspection's map (float64 densities) and the maps' (with smoothing: from their float32 table)
    np.testing.assert_allclose(seg.log_likelihood_map(img), whole.log_likelihood, rtol=1e-5, atol=1e-5)


def test_texture_of_a_strip_with_its_context_equals_the_whole_images():
    rng = np.random.default_rng(1)
    L = rng.random((260, 30)).astype(np.float32)
    scales, illumination = (1, 4), 3.0
    reach = texture_reach(scales, illumination)
    assert reach == 16 + 1 + 12  # the largest scale's radius, the derivative, the background's radius
    whole = texture_features(L, scales, illumination)
    start, stop = 100, 140
    part = texture_features(L[start - reach : stop + reach], scales, illumination)[reach : reach + stop - start]
    np.testing.assert_array_equal(part, whole[start:stop])
    # half the context is not enough (the test would pass without any)
    half = reach // 2
    short = texture_features(L[start - half : stop + half], scales, illumination)[half : half + stop - start]
    assert not np.allclose(short, whole[start:stop], rtol=1e-4, atol=1e-6)


def test_row_column_background_of_a_window_with_its_context_equals_the_whole_images():
    """The row and column backgrounds reach along rows and along columns: a
    strip (rows) and a window (columns) with texture_reach more pixels on
    each side give the whole image's features."""
    rng = np.random.default_rng(2)
    L = rng.random((150, 170)).astype(np.float32)
    scales, illumination, rows_cols = (1, 2), 2.0, 5.0
    reach = texture_reach(scales, illumination, row_column_sigma=rows_cols)
    assert reach == 8 + 1 + 8 + 20  # the largest scale, the derivative, the background, the row/column average
    whole = texture_features(L, scales, illumination, row_column_sigma=rows_cols)
    lo, hi = 60, 90
    strip = texture_features(L[lo - reach : hi + reach], scales, illumination, row_column_sigma=rows_cols)
    np.testing.assert_array_equal(strip[reach : reach + hi - lo], whole[lo:hi])
    window = texture_features(L[:, lo - reach : hi + reach], scales, illumination, row_column_sigma=rows_cols)
    np.testing.assert_array_equal(window[:, reach : reach + hi - lo], whole[:, lo:hi])
    short = reach - 20  # without the row/column average's context
    window = texture_features(L[:, lo - short : hi + short], scales, illumination, row_column_sigma=rows_cols)
    assert not np.allclose(window[:, short : short + hi - lo], whole[:, lo:hi], rtol=1e-4, atol=1e-6)


def test_fit_grid_texture_built_in_strips_equals_the_whole_filter_bank(monkeypatch):
    img = _regions(200, 36, grey=True)
    seg = gmmseg.Segmenter(2, feature_set="texture", texture_scales=(1, 2), illumination_sigma=2.0)
    image = gmmseg.load_image(img)
    whole = seg._texture_features(image)
    monkeypatch.setattr(segment, "_STRIP_PIXELS", 36 * 9)
    for step in (1, 3):
        np.testing.assert_array_equal(seg._texture_grid(image, step), whole[::step, ::step])


def test_colour_only_results_are_a_table_and_an_index_map():
    img = _regions(60, 50)
    seg = gmmseg.Segmenter(3, random_state=0, spatial_weight=0.0, smoothing=0.0).fit(img)
    result = seg.predict(img)
    assert not any(result.has_map(name) for name in segment.MAP_NAMES)  # nothing gathered yet
    labels = result.labels
    assert result.has_map("labels") and not result.has_map("probabilities")
    # gathered maps agree with the mixture on each pixel's own features
    image = gmmseg.load_image(img)
    X = gmmseg.features.color_features(image.pixels.reshape(-1, 3), "lab")
    np.testing.assert_array_equal(labels.ravel(), seg.gmm_.predict(X))
    np.testing.assert_allclose(result.probability_map(1).ravel(), seg.gmm_.predict_proba(X)[:, 1], atol=1e-6)
    assert not result.has_map("probabilities")
    np.testing.assert_allclose(result.log_likelihood.ravel(), seg.gmm_.score_samples(X), rtol=1e-6)


def test_colour_only_maps_of_transparent_pixels(monkeypatch):
    img = _regions(45, 30)
    alpha = np.full(img.shape[:2], 255, dtype=np.uint8)
    alpha[10:14] = 0
    alpha[30:, :7] = 0
    rgba = np.dstack([img, alpha])
    seg = gmmseg.Segmenter(3, random_state=0, spatial_weight=0.0, smoothing=0.0).fit(rgba)
    monkeypatch.setattr(segment, "_STRIP_PIXELS", 30 * 4)  # the maps gathered strip by strip
    result = seg.predict(rgba)
    used = alpha > 0
    X = gmmseg.features.color_features(gmmseg.load_image(rgba).pixels[used], "lab")
    np.testing.assert_array_equal(result.labels[used], seg.gmm_.predict(X))
    np.testing.assert_allclose(result.probabilities[used], seg.gmm_.predict_proba(X), atol=1e-6)
    np.testing.assert_allclose(result.log_likelihood[used], seg.gmm_.score_samples(X), rtol=1e-6)
    assert (result.labels[~used] == -1).all() and (result.probabilities[~used] == 0).all()
    assert np.isnan(result.log_likelihood[~used]).all()
    np.testing.assert_array_equal(result.map_rows("probabilities", 8, 33), result.probabilities[8:33])


def test_masked_pixels_in_strips(monkeypatch):
    img = _regions(80, 30)
    alpha = np.full(img.shape[:2], 255, dtype=np.uint8)
    alpha[20:45] = 0  # whole strips transparent
    alpha[60:, :10] = 0
    rgba = np.dstack([img, alpha])
    seg = gmmseg.Segmenter(3, random_state=0).fit(rgba)
    whole = seg.predict(rgba, probabilities=True)
    monkeypatch.setattr(segment, "_STRIP_PIXELS", 30 * 5)
    strips = seg.predict(rgba, probabilities=True)
    np.testing.assert_array_equal(strips.labels, whole.labels)
    assert (strips.labels[20:45] == -1).all() and np.isnan(strips.log_likelihood[20:45]).all()
    assert (strips.probabilities[20:45] == 0).all()
    np.testing.assert_allclose(strips.probabilities, whole.probabilities, rtol=0, atol=2e-7)


# ---------------------------------------------------------------------------
# writing large results, size limits, outputs and jobs
def test_float_tiff_is_written_tile_by_tile_and_as_bigtiff_when_large(tmp_path, monkeypatch):
    import tifffile

    from gmmseg import export

    rng = np.random.default_rng(0)
    data = rng.random((600, 300, 3)).astype(np.float32)
    reads = []

    def read_rows(start, stop):
        reads.append((start, stop))
        return data[start:stop]

    write = export.float_tiff_writer(shape=data.shape, read_rows=read_rows, chunks=[(0, 512), (512, 600)])
    write(tmp_path / "a.tif")
    assert reads == [(0, 512), (512, 600)]  # read in the given chunks, never whole
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:
        assert tif.pages[0].is_tiled and not tif.is_bigtiff
        np.testing.assert_array_equal(tif.asarray(), data)
    monkeypatch.setattr(export, "_BIGTIFF_BYTES", 1000)  # as if the map were larger than 4 GB
    export.float_tiff_writer(data[..., 0])(tmp_path / "b.tif")
    with tifffile.TiffFile(tmp_path / "b.tif") as tif:
        assert tif.is_bigtiff
        np.testing.assert_array_equal(tif.asarray(), data[..., 0])


def test_export_reads_probabilities_in_strips(tmp_path, monkeypatch):
    import tifffile

    img = _regions(90, 40)
    seg = gmmseg.Segmenter(3, random_state=0).fit(img)
    whole = seg.predict(img, probabilities=True)
    monkeypatch.setattr(segment, "_STRIP_PIXELS", 40 * 6)
    result = seg.predict(img)
    gmmseg.export.export_segmentation(result, gmmseg.load_image(img), tmp_path, outputs=("probabilities", "loglik"))
    assert not result.has_map("probabilities")  # written from strips, never built whole
    np.testing.assert_allclose(tifffile.imread(tmp_path / "probabilities.tif"), whole.probabilities, atol=2e-7, rtol=0)
    np.testing.assert_allclose(tifffile.imread(tmp_path / "loglik.tif"), whole.log_likelihood, rtol=1e-6)


def _header_only_png(path, width, height):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))
    return path


def test_too_large_image_names_the_memory_it_needs_and_how_to_allow_it(tmp_path, monkeypatch):
    from gmmseg import io

    path = _header_only_png(tmp_path / "big.png", 20_000, 10_000)  # 200 megapixels
    monkeypatch.setattr(io, "available_memory", lambda: 2_000_000_000)
    assert io.default_max_pixels() == io.MAX_PIXELS  # 2 GB segments less than Pillow's limit: that stays
    with pytest.raises(gmmseg.ImageTooLargeError) as caught:
        gmmseg.load_image(path)
    message = str(caught.value)
    assert "200.0 megapixels" in message and "8.0 GB of memory" in message and "2.0 GB is available" in message
    assert "max_pixels=200000000" in message
    monkeypatch.setattr(io, "available_memory", lambda: 16_000_000_000)  # now 400 megapixels fit
    with pytest.raises(gmmseg.ImageLoadError) as caught:  # accepted: the (empty) pixel data fails to decode
        gmmseg.load_image(path)
    assert not isinstance(caught.value, gmmseg.ImageTooLargeError)
    with pytest.raises(gmmseg.ImageTooLargeError, match="max_pixels allows 1.0"):
        gmmseg.load_image(path, max_pixels=1_000_000)
    with pytest.raises(gmmseg.ImageTooLargeError):  # every entry point takes it
        gmmseg.Segmenter(2).fit_predict(path, max_pixels=1_000_000)


def test_auto_jobs_follow_the_memory_available(tmp_path, monkeypatch):
    from gmmseg import workflows

    path = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(_regions(100, 100)).save(path)
    tasks = [workflows.Task("segment", str(path), settings={"n_components": 8})] * 6
    needed = workflows.memory_needed(tasks[0])[0]
    monkeypatch.setattr(workflows, "available_memory", lambda: 10**12)
    assert workflows.auto_jobs(tasks, cores=4) == 4
    assert workflows.auto_jobs(tasks[:2], cores=4) == 2
    monkeypatch.setattr(workflows, "available_memory", lambda: 3 * (needed + workflows._PROCESS_BYTES))
    assert workflows.auto_jobs(tasks, cores=8) == 3
    monkeypatch.setattr(workflows, "available_memory", lambda: 1000)
    assert workflows.auto_jobs(tasks, cores=8) == 1


def test_run_task_reports_its_phases(tmp_path):
    from PIL import Image

    from gmmseg import workflows

    path = tmp_path / "a.png"
    Image.fromarray(_regions(40, 40)).save(path)
    phases = []
    task = workflows.Task("segment", str(path), str(tmp_path / "out"), settings={"n_components": 2},
                          outputs=("labels", "summary"))
    row = workflows.run_task(task, phase=phases.append)
    assert row["status"] == "ok", row
    assert phases[0] == "loading" and "fitting" in phases and "maps" in phases and "maps: 100 %" in phases
    assert any(p.startswith("fitting: iteration 1, log-likelihood") for p in phases)
    assert phases[-2:] == ["writing labels.png (1 of 2)", "writing summary.json (2 of 2)"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["labels.png", "summary.json"]
