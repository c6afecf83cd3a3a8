"""Public behaviour of gmmseg.GaussianMixture (scikit-learn's contract and ours)."""

import warnings

import numpy as np
import pytest
from conftest import COVARIANCE_TYPES, make_blobs
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import gmmseg
from gmmseg import ConvergenceWarning, GaussianMixture, NotFittedError
from gmmseg.engine import get_num_threads, set_num_threads


def _given_init(X, covariance_type, k, seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = GaussianMixture(k, covariance_type=covariance_type, max_iter=0, random_state=seed).fit(X)
    return dict(weights_init=gm.weights_, means_init=gm.means_, precisions_init=gm.precisions_)


def _full_covariances(gm):
    K, d = gm.means_.shape
    c = gm.covariances_
    if gm.covariance_type == "full":
        return c
    if gm.covariance_type == "tied":
        return np.broadcast_to(c, (K, d, d))
    if gm.covariance_type == "diag":
        return np.stack([np.diag(v) for v in c])
    return np.stack([v * np.eye(d) for v in c])


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_score_samples_and_proba_match_plain_numpy(blobs, covariance_type):
    X, _, _ = blobs
    gm = GaussianMixture(4, covariance_type=covariance_type, random_state=0).fit(X)
    covs = _full_covariances(gm)
    weighted = np.column_stack([
        np.log(gm.weights_[k]) + multivariate_normal(gm.means_[k], covs[k]).logpdf(X)
        for k in range(4)
    ])
    ref_ll = logsumexp(weighted, axis=1)
    np.testing.assert_allclose(gm.score_samples(X), ref_ll, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gm.predict_proba(X), np.exp(weighted - ref_ll[:, None]), atol=1e-12)
    np.testing.assert_array_equal(gm.predict(X), weighted.argmax(axis=1))
    np.testing.assert_allclose(gm.predict_proba(X).sum(axis=1), 1.0, rtol=1e-14)


def test_exp_kernel_is_accurate_and_underflows_to_zero():
    from numba import njit

    from gmmseg.engine._kernels import _exp

    @njit
    def apply(x, out):
        for i in range(x.shape[0]):
            out[i] = _exp(x[i])

    x = np.concatenate([np.linspace(-708.0, 0.0, 200001), -np.random.RandomState(0).rand(10000) * 5, [0.0, 1.0, 50.0]])
    out = np.empty_like(x)
    apply(x, out)
    np.testing.assert_allclose(out, np.exp(x), rtol=5e-16, atol=0)
    low = np.array([-709.0, -800.0, -np.inf])
    out_low = np.empty_like(low)
    apply(low, out_low)
    np.testing.assert_array_equal(out_low, 0.0)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_weighted_unique_rows_equal_all_rows(covariance_type):
    rng = np.random.RandomState(1)
    colours = rng.randint(0, 12, size=(300, 3)).astype(float)
    X = colours[rng.randint(0, 300, size=20000)]
    uniq, counts = np.unique(X, axis=0, return_counts=True)
    init = _given_init(X, covariance_type, 5)
    kw = dict(covariance_type=covariance_type, max_iter=40, tol=0.0, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = GaussianMixture(5, **kw).fit(X)
        weighted = GaussianMixture(5, **kw).fit(uniq, sample_weight=counts)
    np.testing.assert_allclose(weighted.lower_bound_, full.lower_bound_, rtol=1e-7)
    np.testing.assert_allclose(weighted.lower_bounds_, full.lower_bounds_, rtol=1e-7)
    np.testing.assert_allclose(weighted.means_, full.means_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(weighted.covariances_, full.covariances_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(weighted.weights_, full.weights_, rtol=1e-7)
    # BIC / AIC / score with weights equal those of the expanded data.
    np.testing.assert_allclose(weighted.bic(uniq, sample_weight=counts), full.bic(X), rtol=1e-9)
    np.testing.assert_allclose(weighted.aic(uniq, sample_weight=counts), full.aic(X), rtol=1e-9)
    np.testing.assert_allclose(weighted.score(uniq, sample_weight=counts), full.score(X), rtol=1e-9)


def test_zero_weight_rows_are_ignored(blobs):
    X, _, _ = blobs
    junk = np.full((50, 3), 1e3)
    init = _given_init(X, "full", 3)
    kw = dict(max_iter=10, tol=0.0, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = GaussianMixture(3, **kw).fit(X)
        b = GaussianMixture(3, **kw).fit(np.vstack([X, junk]), sample_weight=np.r_[np.ones(len(X)), np.zeros(50)])
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-9)
    np.testing.assert_allclose(b.lower_bound_, a.lower_bound_, rtol=1e-9)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_fit_predict_equals_fit_then_predict(blobs, covariance_type):
    X, _, _ = blobs
    for max_iter, tol in [(1, 1e-3), (5, 0.0), (100, 1e-5)]:
        kw = dict(covariance_type=covariance_type, max_iter=max_iter, tol=tol, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            y1 = GaussianMixture(4, **kw).fit(X).predict(X)
            y2 = GaussianMixture(4, **kw).fit_predict(X)
        np.testing.assert_array_equal(y1, y2)


def test_n_init_keeps_the_best_run():
    X, _, _ = make_blobs(n_samples=1500, n_components=6, seed=4, spread=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        singles = [GaussianMixture(6, n_init=1, random_state=np.random.RandomState(s), init_params="random", max_iter=30).fit(X).lower_bound_ for s in range(3)]
        best = GaussianMixture(6, n_init=5, random_state=0, init_params="random", max_iter=30).fit(X)
        again = GaussianMixture(6, n_init=1, random_state=0, init_params="random", max_iter=30).fit(X)
    assert best.lower_bound_ >= again.lower_bound_
    assert best.lower_bound_ >= min(singles)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_warm_start_continues_where_it_stopped(blobs, covariance_type):
    X, _, _ = blobs
    init = _given_init(X, covariance_type, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        once = GaussianMixture(4, covariance_type=covariance_type, max_iter=10, tol=0.0, **init).fit(X)
        ws = GaussianMixture(4, covariance_type=covariance_type, max_iter=5, tol=0.0, warm_start=True, **init)
        ws.fit(X)
        ws.fit(X)
    np.testing.assert_allclose(ws.means_, once.means_, rtol=1e-12)
    np.testing.assert_allclose(ws.covariances_, once.covariances_, rtol=1e-12)
    np.testing.assert_allclose(ws.lower_bound_, once.lower_bound_, rtol=1e-12)


def test_warm_start_detects_convergence(blobs):
    X, _, _ = blobs
    gm = GaussianMixture(4, max_iter=1, warm_start=True, tol=1e-6, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(300):
            gm.fit(X)
            if gm.converged_:
                break
    assert gm.converged_


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_likelihood_never_decreases(covariance_type):
    X, _, _ = make_blobs(n_samples=2000, n_components=5, seed=2, spread=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(5, covariance_type=covariance_type, max_iter=60, tol=0.0, random_state=0,
                             init_params="random").fit(X)
    lb = np.asarray(gm.lower_bounds_)
    assert len(lb) == 60
    assert np.all(np.diff(lb) >= -1e-10 * np.abs(lb[1:]))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample_moments(covariance_type):
    X, _, _ = make_blobs(n_samples=3000, n_components=3, seed=5)
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    n = 60000
    Xs, ys = gm.sample(n)
    assert Xs.shape == (n, 3) and ys.shape == (n,)
    counts = np.bincount(ys, minlength=3) / n
    np.testing.assert_allclose(counts, gm.weights_, atol=0.01)
    covs = _full_covariances(gm)
    for k in range(3):
        rows = Xs[ys == k]
        np.testing.assert_allclose(rows.mean(axis=0), gm.means_[k], atol=0.06)
        np.testing.assert_allclose(np.cov(rows.T), covs[k], atol=0.1 * np.abs(covs[k]).max())
    # Deterministic with an int seed, as scikit-learn.
    np.testing.assert_array_equal(gm.sample(10)[0], gm.sample(10)[0])
    with pytest.raises(ValueError, match="n_samples"):
        gm.sample(0)


def test_bic_aic_formulae(blobs):
    X, _, _ = blobs
    n, d = X.shape
    expected_params = {"full": 4 * d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": 4 * d, "spherical": 4}
    for covariance_type, cov_params in expected_params.items():
        gm = GaussianMixture(4, covariance_type=covariance_type, random_state=0).fit(X)
        p = cov_params + 4 * d + 3
        ll = gm.score(X) * n
        np.testing.assert_allclose(gm.bic(X), -2 * ll + p * np.log(n), rtol=1e-12)
        np.testing.assert_allclose(gm.aic(X), -2 * ll + 2 * p, rtol=1e-12)


def test_bic_picks_the_true_number_of_components():
    X, _, _ = make_blobs(n_samples=3000, n_components=4, seed=7, spread=6)
    bics = [GaussianMixture(k, random_state=0, n_init=2).fit(X).bic(X) for k in range(1, 8)]
    assert int(np.argmin(bics)) + 1 == 4


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_every_init_finds_the_true_means(init_params):
    X, labels, true_means = make_blobs(n_samples=4000, n_components=3, seed=11, spread=8)
    gm = GaussianMixture(3, init_params=init_params, random_state=0, n_init=3, max_iter=300, tol=1e-6).fit(X)
    order = [int(np.argmin(np.linalg.norm(gm.means_ - m, axis=1))) for m in true_means]
    assert sorted(order) == [0, 1, 2]
    np.testing.assert_allclose(gm.means_[order], true_means, atol=0.25)


@pytest.mark.parametrize("init_params", ["k-means++", "random_from_data"])
def test_initial_means_not_duplicated(init_params):
    X, _, _ = make_blobs(n_samples=500, n_components=4, seed=3)
    gm = GaussianMixture(4, init_params=init_params, max_iter=0, random_state=0).fit(X)
    assert len(np.unique(np.round(gm.means_, 12), axis=0)) == 4
    for m in gm.means_:  # each initial mean is a data point
        assert np.min(np.abs(X - m).sum(axis=1)) < 1e-12


def test_not_fitted_errors():
    gm = GaussianMixture(2)
    X = np.zeros((5, 2))
    for call in (gm.predict, gm.predict_proba, gm.score_samples, gm.score, gm.bic, gm.aic):
        with pytest.raises(NotFittedError, match="not fitted"):
            call(X)
    with pytest.raises(NotFittedError):
        gm.sample(3)
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)


def test_convergence_warning_only_when_iterating(blobs):
    X, _, _ = blobs
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        GaussianMixture(4, max_iter=2, tol=0.0, random_state=0).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        GaussianMixture(4, max_iter=0, random_state=0).fit(X)
        GaussianMixture(4, max_iter=500, tol=1e-3, random_state=0).fit(X)


def test_callback_reports_every_iteration_and_can_stop(blobs):
    X, _, _ = blobs
    seen = []

    def stop_at_four(progress):
        if progress.phase == "em":
            seen.append(progress)
        return progress.phase == "em" and progress.iteration == 4

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # a stop is not a failure
        gm = GaussianMixture(4, max_iter=100, tol=0.0, random_state=0, n_init=3).fit(X, callback=stop_at_four)
    assert [p.iteration for p in seen] == [1, 2, 3, 4]
    assert all(p.init == 0 for p in seen)
    assert gm.stopped_ and not gm.converged_ and gm.n_iter_ == 4
    assert [p.lower_bound for p in seen] == gm.lower_bounds_
    np.testing.assert_array_equal(seen[-1].means, gm.means_)
    # The stopped model is usable.
    assert gm.predict_proba(X).shape == (len(X), 4)
    np.testing.assert_allclose(gm.weights_.sum(), 1.0)


def test_callback_sees_convergence(blobs):
    X, _, _ = blobs
    reports = []
    gm = GaussianMixture(4, max_iter=500, tol=1e-4, random_state=0).fit(X, callback=reports.append)
    seen = [p for p in reports if p.phase == "em"]
    assert any(p.phase == "init" for p in reports)  # k-means steps are reported too
    assert gm.converged_ and seen[-1].converged and not any(p.converged for p in seen[:-1])
    assert len(seen) == gm.n_iter_


def test_stop_during_initialisation_leaves_a_usable_model(blobs):
    X, _, _ = blobs
    calls = []

    def stop_in_kmeans(progress):
        calls.append(progress.phase)
        return progress.phase == "init" and progress.iteration == 1

    gm = GaussianMixture(4, random_state=0, n_init=3).fit(X, callback=stop_in_kmeans)
    assert gm.stopped_ and not gm.converged_ and gm.n_iter_ == 0
    assert "em" not in calls
    assert np.all(np.isfinite(gm.means_)) and gm.predict(X).shape == (len(X),)
    np.testing.assert_allclose(gm.predict_proba(X).sum(axis=1), 1.0)


def test_float32_input_is_supported(blobs):
    X, _, _ = blobs
    X32 = X.astype(np.float32)
    init = _given_init(X, "full", 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = GaussianMixture(4, max_iter=20, tol=0.0, **init).fit(X32.astype(np.float64))
        b = GaussianMixture(4, max_iter=20, tol=0.0, **init).fit(X32)
    # Same values (float32 rows widened in the kernel) -> same model.
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-12)
    np.testing.assert_allclose(b.lower_bound_, a.lower_bound_, rtol=1e-12)
    assert b.means_.dtype == np.float64
    assert b.predict_proba(X32).dtype == np.float64


@pytest.mark.parametrize(("n_features", "n_components"), [(3, 3), (16, 3), (32, 8)])
def test_results_do_not_depend_on_thread_count(n_features, n_components):
    """Unrolled kernels (3 features) and tile kernels (16, and 32 with the
    eight components of the speed target) alike."""
    X, _, _ = make_blobs(n_samples=150_000 if n_features < 6 else 60_000, n_features=n_features, n_components=3, seed=9)
    before = get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            set_num_threads(threads)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                gm = GaussianMixture(n_components, max_iter=8, tol=0.0, random_state=0).fit(X)
            results.append((gm, gm.predict_proba(X[:20_000])))
    finally:
        set_num_threads(before)
    (a, pa), *others = results
    for b, pb in others:
        np.testing.assert_array_equal(a.means_, b.means_)
        np.testing.assert_array_equal(a.covariances_, b.covariances_)
        np.testing.assert_array_equal(a.lower_bounds_, b.lower_bounds_)
        np.testing.assert_array_equal(pa, pb)


def test_get_set_params_and_repr():
    gm = GaussianMixture(3, covariance_type="diag")
    params = gm.get_params()
    assert params["n_components"] == 3 and params["covariance_type"] == "diag"
    gm.set_params(n_components=5, tol=1e-4)
    assert gm.n_components == 5 and gm.tol == 1e-4
    assert "n_components=5" in repr(gm) and "covariance_type='diag'" in repr(gm)
    with pytest.raises(ValueError, match="Invalid parameter"):
        gm.set_params(colour="red")


def test_verbose_output(blobs, capsys):
    X, _, _ = blobs
    with pytest.warns(ConvergenceWarning):
        GaussianMixture(2, verbose=2, verbose_interval=1, max_iter=3, tol=0.0, random_state=0).fit(X)
    out = capsys.readouterr().out
    assert "Initialization 0" in out and "Iteration 3" in out and "did not converge" in out


def test_top_level_names():
    for name in ("GaussianMixture", "NotFittedError", "ConvergenceWarning"):
        assert hasattr(gmmseg, name)


def test_warm_up_compiles_the_many_feature_kernels_too():
    from gmmseg.engine import warm_up

    warm_up(many_features=True)  # must simply run (it compiles, or loads from the cache)
