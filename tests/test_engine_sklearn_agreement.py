"""gmmseg.GaussianMixture against scikit-learn (test-only numerical reference).

From the same initial weights/means/precisions and the same number of
iterations, every fitted quantity must agree to 1e-7 relative.
"""

import warnings

import numpy as np
import pytest
from conftest import COVARIANCE_TYPES, make_blobs
from sklearn.mixture import GaussianMixture as SklearnGM

import gmmseg

RTOL = 1e-7


def _fit_both(X, covariance_type, k, max_iter, seed=0, **extra):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = SklearnGM(k, covariance_type=covariance_type, max_iter=2, random_state=seed,
                          init_params="random_from_data").fit(X)
        init = dict(weights_init=start.weights_, means_init=start.means_,
                    precisions_init=start.precisions_)
        ref = SklearnGM(k, covariance_type=covariance_type, max_iter=max_iter, tol=0.0, **init, **extra).fit(X)
        ours = gmmseg.GaussianMixture(k, covariance_type=covariance_type, max_iter=max_iter, tol=0.0, **init, **extra).fit(X)
    return ref, ours


def _assert_same_model(ref, ours, rtol=RTOL):
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=rtol)
    np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, rtol=rtol)
    scale = np.abs(ref.means_).max()
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(ours.weights_, ref.weights_, rtol=rtol)
    cscale = np.abs(ref.covariances_).max()
    np.testing.assert_allclose(ours.covariances_, ref.covariances_, rtol=rtol, atol=rtol * cscale)
    pscale = np.abs(ref.precisions_).max()
    np.testing.assert_allclose(ours.precisions_, ref.precisions_, rtol=rtol, atol=rtol * pscale)
    np.testing.assert_allclose(
        ours.precisions_cholesky_, ref.precisions_cholesky_, rtol=rtol,
        atol=rtol * np.abs(ref.precisions_cholesky_).max(),
    )
    assert ours.n_iter_ == ref.n_iter_
    assert ours.converged_ == ref.converged_


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_same_start_same_model_on_blobs(blobs, covariance_type):
    X, _, _ = blobs
    ref, ours = _fit_both(X, covariance_type, 4, max_iter=30)
    _assert_same_model(ref, ours)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_same_start_same_model_on_image_pixels(image_pixels, covariance_type):
    ref, ours = _fit_both(image_pixels, covariance_type, 6, max_iter=25)
    _assert_same_model(ref, ours)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_inference_matches_sklearn(blobs, covariance_type):
    X, _, _ = blobs
    ref, ours = _fit_both(X, covariance_type, 4, max_iter=10)
    Xt = X[::3] + 0.1
    np.testing.assert_allclose(ours.score_samples(Xt), ref.score_samples(Xt), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(Xt), ref.predict_proba(Xt), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(ours.predict(Xt), ref.predict(Xt))
    np.testing.assert_allclose(ours.score(Xt), ref.score(Xt), rtol=1e-9)
    np.testing.assert_allclose(ours.bic(Xt), ref.bic(Xt), rtol=1e-9)
    np.testing.assert_allclose(ours.aic(Xt), ref.aic(Xt), rtol=1e-9)


@pytest.mark.parametrize("init_params", ["random", "random_from_data"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_same_seed_same_random_initialisation(blobs, init_params, covariance_type):
    """These inits draw from the RandomState exactly as scikit-learn does."""
    if covariance_type == "tied" and init_params == "random_from_data":
        pytest.skip(
            "deliberate difference: scikit-learn's tied initial covariance uses X.T @ X "
            "over all rows even when only K rows carry responsibility; gmmseg uses the "
            "responsibility-weighted scatter (equal whenever responsibilities sum to 1)"
        )
    X, _, _ = blobs
    kwargs = dict(covariance_type=covariance_type, init_params=init_params, random_state=3, max_iter=15, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = SklearnGM(3, **kwargs).fit(X)
        ours = gmmseg.GaussianMixture(3, **kwargs).fit(X)
    _assert_same_model(ref, ours)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_max_iter_zero_returns_initial_parameters(blobs, covariance_type):
    X, _, _ = blobs
    ref, ours = _fit_both(X, covariance_type, 3, max_iter=5)
    init = dict(weights_init=ref.weights_, means_init=ref.means_, precisions_init=ref.precisions_)
    gm = gmmseg.GaussianMixture(3, covariance_type=covariance_type, max_iter=0, **init).fit(X)
    np.testing.assert_array_equal(gm.means_, ref.means_)
    np.testing.assert_array_equal(gm.weights_, ref.weights_)
    np.testing.assert_allclose(gm.precisions_, ref.precisions_, rtol=1e-10)
    np.testing.assert_allclose(gm.covariances_, ref.covariances_, rtol=1e-8)
    assert gm.n_iter_ == 0 and gm.lower_bound_ == -np.inf and not gm.converged_


def test_converged_run_matches_sklearn_convergence(blobs):
    X, _, _ = blobs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = SklearnGM(4, max_iter=1, random_state=1, init_params="random_from_data").fit(X)
    init = dict(weights_init=start.weights_, means_init=start.means_, precisions_init=start.precisions_)
    ref = SklearnGM(4, tol=1e-4, max_iter=500, **init).fit(X)
    ours = gmmseg.GaussianMixture(4, tol=1e-4, max_iter=500, **init).fit(X)
    assert ref.converged_ and ours.converged_
    assert ours.n_iter_ == ref.n_iter_
    _assert_same_model(ref, ours, rtol=1e-6)


# Above six features the engine computes with the tile kernels of
# gmmseg.engine._wide (centred blocks, loops over groups of four features):
# feature counts on and off multiples of four, all covariance types.
@pytest.mark.parametrize("n_features", [6, 7, 8, 13, 16, 24, 32])
def test_same_start_same_model_with_many_features(n_features):
    X, _, _ = make_blobs(n_samples=4000, n_features=n_features, n_components=4, seed=n_features)
    ref, ours = _fit_both(X, "full", 4, max_iter=15)
    _assert_same_model(ref, ours)


@pytest.mark.parametrize("n_features", [13, 16])
@pytest.mark.parametrize("covariance_type", ["tied", "diag", "spherical"])
def test_same_start_same_model_with_many_features_other_covariances(covariance_type, n_features):
    X, _, _ = make_blobs(n_samples=4000, n_features=n_features, n_components=4, seed=3)
    ref, ours = _fit_both(X, covariance_type, 4, max_iter=15)
    _assert_same_model(ref, ours)


def test_many_features_far_from_the_origin():
    """Tight clusters far from zero (e.g. unscaled features): the kernels
    centre the data, scikit-learn does not, and both still agree."""
    X, _, _ = make_blobs(n_samples=4000, n_features=16, n_components=4, seed=5)
    X = 1000.0 + 0.01 * X
    ref, ours = _fit_both(X, "full", 4, max_iter=15)
    _assert_same_model(ref, ours)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_inference_with_many_features_matches_sklearn(covariance_type):
    X, _, _ = make_blobs(n_samples=3000, n_features=16, n_components=4, seed=6)
    ref, ours = _fit_both(X, covariance_type, 4, max_iter=10)
    Xt = X[::3] + 0.1
    np.testing.assert_allclose(ours.score_samples(Xt), ref.score_samples(Xt), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(Xt), ref.predict_proba(Xt), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(ours.predict(Xt), ref.predict(Xt))
    np.testing.assert_allclose(ours.bic(Xt), ref.bic(Xt), rtol=1e-9)


def test_many_features_weighted_rows_and_float32():
    """Counts as weights equal repeated rows, and float32 rows equal the same
    values in float64, with the tile kernels too."""
    X, _, _ = make_blobs(n_samples=3000, n_features=12, n_components=3, seed=8)
    X32 = X.astype(np.float32)
    counts = np.random.RandomState(0).randint(1, 4, size=len(X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = gmmseg.GaussianMixture(3, max_iter=1, random_state=0).fit(X32, sample_weight=counts)
        init = dict(weights_init=start.weights_, means_init=start.means_, precisions_init=start.precisions_)
        a = gmmseg.GaussianMixture(3, max_iter=10, tol=0.0, **init).fit(X32, sample_weight=counts)
        b = gmmseg.GaussianMixture(3, max_iter=10, tol=0.0, **init).fit(np.repeat(X32, counts, axis=0))
        c = gmmseg.GaussianMixture(3, max_iter=10, tol=0.0, **init).fit(X32.astype(np.float64), sample_weight=counts)
    np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=1e-12)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(a.means_, c.means_)
    np.testing.assert_array_equal(a.lower_bounds_, c.lower_bounds_)


def _correlated_features(n_features, n_samples=6000, n_clusters=8, seed=0):
    """Texture-like rows: 8 clusters whose spread comes from four latent
    factors mixed into every column, plus a little independent noise, and an
    offset from the origin, so the covariances are far from diagonal (their
    condition numbers are about 1e3 to 1e4, as with filter-bank features)."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, n_clusters, size=n_samples)
    centres = rng.normal(scale=3.0, size=(n_clusters, n_features))
    mixing = rng.normal(size=(4, n_features))
    X = centres[labels] + rng.normal(size=(n_samples, 4)) @ mixing + 0.1 * rng.normal(size=(n_samples, n_features))
    return X + 5.0


@pytest.mark.parametrize("n_features", [16, 32])
def test_many_features_eight_components_agree_closely(n_features):
    """The feature counts of the speed target (K = 8, full covariances, 16
    and 32 features) agree with scikit-learn far below the 1e-7 of the other
    tests: 10 iterations from the same k-means start, every lower bound and
    parameter to 1e-10 relative (measured: 1e-13 or better)."""
    X = _correlated_features(n_features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = SklearnGM(8, max_iter=1, random_state=0).fit(X)
        init = dict(weights_init=start.weights_, means_init=start.means_, precisions_init=start.precisions_)
        ref = SklearnGM(8, max_iter=10, tol=0.0, **init).fit(X)
        ours = gmmseg.GaussianMixture(8, max_iter=10, tol=0.0, **init).fit(X)
    assert ref.weights_.min() > 0.05  # no collapsed component: the comparison is well conditioned
    _assert_same_model(ref, ours, rtol=1e-10)


@pytest.mark.parametrize("n_features", [16, 32])
def test_many_features_zero_weights_equal_removed_rows(n_features):
    """Rows of weight zero, and responsibilities that underflow to zero, add
    nothing: the wide kernels skip the spans of a block where a component's
    weights are all exactly zero. Zero-weight rows across whole blocks and
    parts of blocks give the model of the data without them."""
    X = _correlated_features(n_features)
    weights = np.ones(len(X))
    weights[100:700] = 0.0  # a part of the first block, two whole blocks, a part of the third
    weights[1000:1003] = 0.0
    weights[5990:] = 0.0  # the end of the last block
    kept = weights > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = SklearnGM(8, max_iter=1, random_state=0).fit(X[kept])
        init = dict(weights_init=start.weights_, means_init=start.means_, precisions_init=start.precisions_)
        a = gmmseg.GaussianMixture(8, max_iter=10, tol=0.0, **init).fit(X, sample_weight=weights)
        b = gmmseg.GaussianMixture(8, max_iter=10, tol=0.0, **init).fit(X[kept])
    np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=1e-12)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-10, atol=1e-12)
