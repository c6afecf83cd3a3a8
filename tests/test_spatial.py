"""The spatially regularised EM (hidden Potts model, mean field) against a
plain NumPy reference, and the Segmenter features built on it."""

import warnings

import numpy as np
import pytest
from imagefiles import voronoi_image
from scipy import ndimage
from sklearn.metrics import adjusted_rand_score

from gmmseg import GaussianMixture, Segmenter
from gmmseg.engine import fit_potts, potts_posteriors


def _log_density(gm, X):
    """log w_k + log N(x | component k), by plain NumPy (full covariances)."""
    d = X.shape[1]
    out = np.empty((X.shape[0], gm.n_components))
    for k in range(gm.n_components):
        diff = X - gm.means_[k]
        inv = np.linalg.inv(gm.covariances_[k])
        _, logdet = np.linalg.slogdet(gm.covariances_[k])
        out[:, k] = np.log(gm.weights_[k]) - 0.5 * (np.einsum("ni,ij,nj->n", diff, inv, diff) + logdet + d * np.log(2 * np.pi))
    return out


def _softmax(s):
    s = s - s.max(axis=-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=-1, keepdims=True)


def _neighbour_sums(q):
    """Sum of the 8 neighbours' distributions (zero outside the grid)."""
    return ndimage.uniform_filter(q, size=(3, 3, 1), mode="constant") * 9.0 - q


def _reference_posteriors(gm, X, index, beta, n_sweeps):
    used = index >= 0
    logp = _log_density(gm, X)
    q = np.zeros(index.shape + (gm.n_components,))
    q[used] = _softmax(logp[index[used]])
    for _ in range(n_sweeps):
        n = _neighbour_sums(q)
        new = np.zeros_like(q)
        new[used] = _softmax(logp[index[used]] + beta * n[used])
        q = new
    return q


def _problem(seed=0, shape=(29, 41), M=300, K=3, n_features=3):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(M, n_features)) + rng.randint(0, 3, size=(M, 1)) * 2.0
    gm = GaussianMixture(K, random_state=seed).fit(X)
    index = rng.randint(0, M, size=shape).astype(np.int32)
    index[3:7, 5:12] = -1  # cells that take no part (transparent pixels)
    index[:, -1] = -1
    return gm, X, index


@pytest.mark.parametrize("n_features", [3, 12])
@pytest.mark.parametrize("beta", [0.0, 0.7, 2.5])
def test_posteriors_equal_a_numpy_mean_field_reference(beta, n_features):
    gm, X, index = _problem(n_features=n_features)
    labels = np.full(index.shape, -7, dtype=np.int32)
    q = potts_posteriors(gm, X, index, beta, 4, labels=labels)
    ref = _reference_posteriors(gm, X, index, beta, 4 if beta > 0 else 0)
    np.testing.assert_allclose(q, ref, atol=2e-6)
    used = index >= 0
    np.testing.assert_array_equal(labels[used], ref[used].argmax(axis=1))
    assert (labels[~used] == -7).all() and (q[~used] == 0).all()


def test_posteriors_give_the_mixtures_log_density_of_every_cell():
    gm, X, index = _problem()
    log_likelihood = np.full(index.shape, -7.0, dtype=np.float32)
    potts_posteriors(gm, X, index, 1.5, 3, log_likelihood=log_likelihood)
    used = index >= 0
    np.testing.assert_allclose(log_likelihood[used], gm.score_samples(X)[index[used]], rtol=1e-6, atol=2e-6)
    assert (log_likelihood[~used] == -7.0).all()


@pytest.mark.parametrize("beta", [0.0, 1.5])
def test_posteriors_in_bands_and_row_ranges_equal_the_whole_grids(beta, monkeypatch):
    """The maps' wavefront works band by band, computing each level a few
    rows beyond the band again: any band length and any range of wanted rows
    gives the whole grid's values exactly (the same arithmetic per cell)."""
    from gmmseg.engine import _mrf

    gm, X, index = _problem(seed=3, shape=(37, 23))
    index[10:13] = -1  # whole rows outside the index
    H, W = index.shape

    def maps(rows=None, probabilities=True):
        h = H if rows is None else rows[1] - rows[0]
        labels = np.full((h, W), -7, dtype=np.int32)
        loglik = np.full((h, W), -7.0, dtype=np.float32)
        q = potts_posteriors(gm, X, index, beta, 3, labels=labels, log_likelihood=loglik, rows=rows,
                             probabilities=probabilities)
        return q, labels, loglik

    whole = maps()
    np.testing.assert_allclose(whole[0], _reference_posteriors(gm, X, index, beta, 3 if beta else 0), atol=2e-6)
    for band in (1, 2, 5):
        monkeypatch.setattr(_mrf, "rows_per_band", lambda width, band=band: band)
        for a, b in ((0, H), (0, 1), (4, 17), (11, 12), (30, H)):
            q, labels, loglik = maps((a, b))
            np.testing.assert_array_equal(q, whole[0][a:b])
            np.testing.assert_array_equal(labels, whole[1][a:b])
            np.testing.assert_array_equal(loglik, whole[2][a:b])
        q, labels, loglik = maps((4, 17), probabilities=False)
        assert q is None
        np.testing.assert_array_equal(labels, whole[1][4:17])
        np.testing.assert_array_equal(loglik, whole[2][4:17])
    for bad in ((5, H + 1), (-1, 3), (6, 5)):
        with pytest.raises(ValueError, match="rows"):
            potts_posteriors(gm, X, index, beta, 3, rows=bad)


def test_maps_of_a_cell_without_any_density_raise_as_a_division_by_zero():
    """The engine turns a division by zero into a ValueError naming the
    overflow (overflow_as_value_error); the maps' kernel raises it too."""
    from gmmseg.engine import _mrf

    table = np.zeros((4, 3), dtype=np.float32)
    table[2] = -np.inf  # every component's density underflowed
    index = np.arange(4, dtype=np.int32).reshape(2, 2)
    q = np.empty((2, 2, 3), np.float32)
    no_labels, no_loglik = np.empty((0, 0), np.int32), np.empty((0, 0), np.float32)
    for beta, sweeps in ((0.0, 0), (1.0, 2)):
        with pytest.raises(ZeroDivisionError):
            _mrf.potts_map_band(table, index, beta, sweeps, 0, 2, 0, q, no_labels, no_loglik)
    index[1, 0] = -1  # outside the index: no part, no error
    _mrf.potts_map_band(table, index, 1.0, 2, 0, 2, 0, q, no_labels, no_loglik)
    assert (q[1, 0] == 0).all() and np.allclose(q[0].sum(axis=-1), 1.0)


def test_one_spatial_em_iteration_equals_the_numpy_reference():
    """E-step: one synchronous mean-field sweep from the mixture's posteriors;
    M-step: weighted means, covariances and weights of those distributions."""
    gm, X, index = _problem(seed=1)
    beta = 1.3
    ref = _reference_posteriors(gm, X, index, beta, 1)
    used = index >= 0
    r = ref[used]
    x = X[index[used]]
    nk = r.sum(axis=0)
    means = r.T @ x / nk[:, None]
    covs = np.stack([((r[:, k, None] * (x - means[k])).T @ (x - means[k])) / nk[k] + gm.reg_covar * np.eye(3)
                     for k in range(gm.n_components)])
    fitted = GaussianMixture.from_parameters(gm.weights_, gm.means_, gm.precisions_cholesky_, reg_covar=gm.reg_covar)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_potts(fitted, X, index, beta, max_iter=1, tol=0.0)
    np.testing.assert_allclose(fitted.weights_, nk / nk.sum(), rtol=1e-5)
    np.testing.assert_allclose(fitted.means_, means, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fitted.covariances_, covs, rtol=1e-4, atol=1e-6)


def test_spatial_em_is_exact_em_without_the_prior():
    """beta = 0: the mean-field EM is EM of the mixture, sample by sample."""
    gm, X, index = _problem(seed=2)
    used = index >= 0
    pixels = X[index[used]]
    start = dict(weights_init=gm.weights_, means_init=gm.means_, precisions_init=gm.precisions_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = GaussianMixture(3, max_iter=5, tol=0.0, **start).fit(pixels)
        spatial = GaussianMixture.from_parameters(gm.weights_, gm.means_, gm.precisions_cholesky_)
        fit_potts(spatial, X, index, 0.0, max_iter=5, tol=0.0)
    np.testing.assert_allclose(spatial.means_, plain.means_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(spatial.covariances_, plain.covariances_, rtol=1e-4, atol=1e-7)


def test_results_do_not_depend_on_the_number_of_threads():
    from gmmseg.engine import get_num_threads, set_num_threads

    rng = np.random.RandomState(0)
    X = rng.normal(size=(500, 3))
    gm = GaussianMixture(4, random_state=0).fit(X)
    index = rng.randint(0, 500, size=(300, 700)).astype(np.int32)  # several row strips
    before = get_num_threads()
    try:
        results = []
        for n in (1, 2):
            set_num_threads(n)
            g = GaussianMixture.from_parameters(gm.weights_, gm.means_, gm.precisions_cholesky_)
            q, *_ = fit_potts(g, X, index, 1.0, max_iter=3, tol=0.0)
            results.append((q, g.means_))
    finally:
        set_num_threads(before)
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def _uint8(img):
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


@pytest.mark.parametrize("seed", range(6))
def test_defaults_make_noisy_regions_coherent(seed):
    """Noisy synthetic regions: the defaults (spatial prior and robust starts)
    reach ARI >= 0.98, where a colour-only single-start fit does not always."""
    n = 3 + seed % 5
    img, truth = voronoi_image(size=160, n_regions=n, noise=0.16 if seed % 2 else 0.12, seed=seed)
    result = Segmenter(n, random_state=0).fit_predict(_uint8(img))
    assert adjusted_rand_score(truth.ravel(), result.labels.ravel()) >= 0.98
    np.testing.assert_allclose(result.probabilities.sum(axis=2), 1.0, atol=1e-5)


def test_colour_only_fit_is_what_the_prior_fixes():
    img, truth = voronoi_image(size=160, n_regions=5, noise=0.16, seed=3)
    plain = Segmenter(5, random_state=0, smoothing=0.0, spatial_weight=0.0, n_starts=1).fit_predict(_uint8(img))
    assert adjusted_rand_score(truth.ravel(), plain.labels.ravel()) < 0.9


def test_robust_starts_escape_a_poor_local_optimum():
    """Without the spatial prior, the starts alone find the better optimum:
    higher likelihood than the single k-means start, deterministic per seed."""
    img, _ = voronoi_image(size=160, n_regions=5, noise=0.16, seed=3)
    img = _uint8(img)
    colour = dict(random_state=0, smoothing=0.0, spatial_weight=0.0)
    single = Segmenter(5, n_starts=1, **colour).fit(img)
    starts = Segmenter(5, n_starts=8, **colour).fit(img)
    again = Segmenter(5, n_starts=8, **colour).fit(img)
    assert starts.gmm_.lower_bound_ > single.gmm_.lower_bound_ + 1e-3
    np.testing.assert_array_equal(starts.gmm_.means_, again.gmm_.means_)


def test_single_start_is_the_plain_mixture_fit():
    img, _ = voronoi_image(size=60, n_regions=3, noise=0.05, seed=0)
    seg = Segmenter(3, random_state=4, smoothing=0.0, spatial_weight=0.0, n_starts=1).fit(_uint8(img))
    _, _, data = seg._training_data(_uint8(img))
    gm = GaussianMixture(3, random_state=4, tol=1e-3, max_iter=100).fit(data.X, sample_weight=data.sample_weight)
    np.testing.assert_allclose(np.sort(seg.gmm_.means_[:, 0]), np.sort(gm.means_[:, 0]), rtol=1e-12)


def test_transparent_pixels_take_no_part_and_stay_unlabelled():
    img, truth = voronoi_image(size=120, n_regions=4, noise=0.14, seed=5)
    rgba = np.dstack([_uint8(img), np.full(truth.shape, 255, np.uint8)])
    rgba[30:60, 20:90, 3] = 0  # a transparent hole
    rgba[30:60, 20:90, :3] = 255  # whose hidden colour must not matter
    result = Segmenter(4, random_state=0).fit_predict(rgba)
    hole = rgba[..., 3] == 0
    assert (result.labels[hole] == -1).all() and (result.probabilities[hole] == 0).all()
    assert np.isnan(result.log_likelihood[hole]).all()
    assert adjusted_rand_score(truth[~hole], result.labels[~hole]) >= 0.97


def test_spatial_prior_with_position_features_and_a_coarse_fit_grid():
    img, truth = voronoi_image(size=150, n_regions=4, noise=0.14, seed=6)
    for settings in ({"spatial_weight": 0.0}, {"spatial_weight": 0.3}, {"spatial_fit_pixels": 2000},
                     {"spatial_weight": 0.0, "spatial_fit_pixels": 2000}):
        result = Segmenter(4, random_state=0, **settings).fit_predict(_uint8(img))
        assert adjusted_rand_score(truth.ravel(), result.labels.ravel()) >= 0.97, settings


def test_fit_reports_the_spatial_phase_and_stops_when_asked():
    img, _ = voronoi_image(size=100, n_regions=3, noise=0.14, seed=7)
    phases = []

    def stop_in_spatial(progress):
        phases.append(progress.phase)
        return progress.phase == "spatial" and progress.iteration == 2

    seg = Segmenter(3, random_state=0)
    result = seg.fit_predict(_uint8(img), callback=stop_in_spatial)
    assert "spatial" in phases and "em" in phases and phases.index("em") < phases.index("spatial")
    assert phases[-1] == "spatial" and phases.count("spatial") == 2
    assert seg.gmm_.stopped_ and result.labels.shape == (100, 100)


@pytest.mark.parametrize("phase, nth", [("init", 1), ("init", 40), ("em", 1), ("em", 3), ("em", 4), ("spatial", 3)])
@pytest.mark.parametrize("n_init", [1, 2])
def test_a_stop_anywhere_in_the_starts_or_refinements_stops_the_fit(phase, nth, n_init):
    """The callback says stop once (at its nth report of a phase: a later
    start, a later refinement...); nothing runs after that."""
    img, _ = voronoi_image(size=80, n_regions=3, noise=0.1, seed=2)
    reports = []

    def callback(progress):
        reports.append(progress.phase)
        return progress.phase == phase and reports.count(phase) == nth

    seg = Segmenter(3, random_state=0, n_init=n_init)
    result = seg.fit_predict(_uint8(img), callback=callback)
    assert reports.count(phase) == nth and reports[-1] == phase  # no report after the stop
    assert seg.gmm_.stopped_ and result.labels.shape == (80, 80) and (result.labels >= 0).all()


def test_max_samples_and_spatial_fit_pixels_bound_the_spatial_grid():
    rng = np.random.RandomState(0)
    seg = Segmenter(3, max_samples=1000)
    from gmmseg.io import ImageData

    def image(h, w):
        return ImageData(pixels=rng.rand(h, w, 3).astype(np.float32), mask=np.ones((h, w), bool))

    for h, w in ((300, 300), (1, 60_000), (2000, 3)):
        im = image(h, w)
        step = seg._fit_step([im])
        assert np.count_nonzero(im.mask[::step, ::step]) <= 1000 and step > 1
    assert Segmenter(3, spatial_fit_pixels=None)._fit_step([image(300, 300)]) == 1
    with pytest.raises(ValueError, match="spatial_fit_pixels"):
        Segmenter(3, spatial_fit_pixels=10)


def test_engine_refuses_grids_that_point_outside_the_table():
    gm, X, index = _problem()
    bad = index.copy()
    bad[0, 0] = X.shape[0]
    for grid in (bad, index - 5, index.astype(float)):
        with pytest.raises(ValueError, match="index"):
            potts_posteriors(gm, X, grid, 1.0, 1)
        with pytest.raises(ValueError, match="index"):
            fit_potts(gm, X, grid, 1.0, max_iter=1, tol=0.0)
