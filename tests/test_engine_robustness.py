"""Bad input gets a clear ValueError; degenerate data still gives a usable model."""

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from conftest import COVARIANCE_TYPES, make_blobs

from gmmseg import ConvergenceWarning, GaussianMixture


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_components": 0}, "n_components"),
        ({"n_components": 2.5}, "n_components"),
        ({"covariance_type": "banana"}, "covariance_type"),
        ({"tol": -1.0}, "tol"),
        ({"reg_covar": -1e-3}, "reg_covar"),
        ({"reg_covar": float("nan")}, "reg_covar"),
        ({"max_iter": -1}, "max_iter"),
        ({"n_init": 0}, "n_init"),
        ({"init_params": "magic"}, "init_params"),
        ({"verbose": -2}, "verbose"),
        ({"verbose_interval": 0}, "verbose_interval"),
        ({"random_state": "seed"}, "random_state"),
        ({"warm_start": "yes"}, "warm_start"),
        ({"weights_init": [0.5, 0.6]}, "sum to 1"),
        ({"weights_init": [0.5, 0.3, 0.2]}, "shape"),
        ({"weights_init": [-0.5, 1.5]}, r"\[0, 1\]"),
        ({"means_init": np.zeros((3, 2))}, "means_init must have shape"),
        ({"precisions_init": np.ones((2, 2, 2))}, "positive-definite"),
        ({"precisions_init": np.ones((2, 3))}, "precisions_init"),
    ],
)
def test_bad_parameters_are_named(params, match):
    X = np.random.RandomState(0).normal(size=(50, 2))
    params = {"n_components": 2, **params}
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**params).fit(X)


@pytest.mark.parametrize("covariance_type, bad", [("diag", -np.ones((2, 2))), ("spherical", np.array([1.0, 0.0]))])
def test_non_positive_diagonal_precisions(covariance_type, bad):
    X = np.random.RandomState(0).normal(size=(50, 2))
    with pytest.raises(ValueError, match="should be positive"):
        GaussianMixture(2, covariance_type=covariance_type, precisions_init=bad).fit(X)


@pytest.mark.parametrize(
    "X, match",
    [
        (np.zeros(10), "Expected a 2-D array.*reshape"),
        (np.zeros((2, 3, 4)), "Expected a 2-D array"),
        (np.zeros((0, 3)), "empty"),
        (np.zeros((5, 0)), "empty"),
        (np.array([[1.0, np.nan], [2.0, 3.0], [1, 1]]), "NaN or infinity in 1 of 3 rows"),
        (np.array([[1.0, np.inf], [2.0, 3.0], [1, 1]]), "NaN or infinity"),
        (np.array([["a", "b"], ["c", "d"]]), "numeric"),
        (np.ones((4, 2)) * 1j, "complex"),
    ],
)
def test_bad_data_is_explained(X, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(1).fit(X)


def test_more_components_than_samples():
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        GaussianMixture(5).fit(np.random.RandomState(0).normal(size=(3, 2)))


@pytest.mark.parametrize(
    "weights, match",
    [
        (np.ones(3), r"shape \(10,\)"),
        (-np.ones(10), "non-negative"),
        (np.zeros(10), "sums to zero"),
        (np.r_[np.ones(9), np.nan], "NaN"),
    ],
)
def test_bad_sample_weight(weights, match):
    X = np.random.RandomState(0).normal(size=(10, 2))
    with pytest.raises(ValueError, match=match):
        GaussianMixture(2).fit(X, sample_weight=weights)


def test_predict_checks_feature_count(blobs):
    X, _, _ = blobs
    gm = GaussianMixture(2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="has 2 features, but GaussianMixture is expecting 3 features as input"):
        gm.predict(X[:, :2])


def test_callers_array_is_not_modified(blobs):
    X, _, _ = blobs
    X32 = np.asfortranarray(X.astype(np.float32))
    copy = X32.copy()
    gm = GaussianMixture(3, random_state=0).fit(X32)
    gm.predict_proba(X32)
    np.testing.assert_array_equal(X32, copy)


def test_integer_and_list_input():
    rng = np.random.RandomState(0)
    X = rng.randint(0, 255, size=(400, 3))
    gm = GaussianMixture(3, random_state=0).fit(X)
    assert gm.means_.dtype == np.float64
    assert gm.predict(X.tolist()).shape == (400,)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_more_components_than_distinct_rows(covariance_type, init_params):
    """Three distinct colours, K = 6: a valid model, no exception, no NaN."""
    X = np.repeat(np.array([[0.1, 0.2, 0.3], [0.9, 0.1, 0.1], [0.5, 0.5, 0.5]]), 200, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(6, covariance_type=covariance_type, init_params=init_params, random_state=0).fit(X)
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert np.all(np.isfinite(getattr(gm, attr)))
    np.testing.assert_allclose(gm.weights_.sum(), 1.0)
    assert np.isfinite(gm.score(X))
    if init_params == "random":
        return  # all components start at the global mean: a valid local optimum may merge colours
    # Data-driven starts put a component on every distinct colour.
    labels = gm.predict(X)
    for colour in range(3):
        k = labels[colour * 200]
        np.testing.assert_allclose(gm.means_[k], X[colour * 200], atol=1e-6)


def test_same_data_through_weights_with_fewer_rows_than_components():
    """Two unique rows with counts and K = 3 works (as the expanded data does)."""
    X = np.array([[0.0, 0.0], [1.0, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(3, random_state=0).fit(X, sample_weight=[500, 300])
    assert np.all(np.isfinite(gm.means_)) and np.isfinite(gm.lower_bound_)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_collapsed_cluster_is_regularised(covariance_type):
    rng = np.random.RandomState(0)
    X = np.vstack([rng.normal(size=(300, 2)), np.tile([[5.0, 5.0]], (300, 1))])
    gm = GaussianMixture(2, covariance_type=covariance_type, random_state=0).fit(X)
    assert np.all(np.isfinite(gm.precisions_cholesky_))
    collapsed = int(np.argmin(np.linalg.norm(gm.means_ - [5, 5], axis=1)))
    np.testing.assert_allclose(gm.means_[collapsed], [5, 5], atol=1e-9)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_zero_regularisation_on_collapsed_data_fails_clearly(covariance_type):
    X = np.vstack([np.ones((10, 3)), np.zeros((10, 3))])
    with pytest.raises(ValueError, match="increase reg_covar"):
        GaussianMixture(2, covariance_type=covariance_type, reg_covar=0.0, random_state=0).fit(X)


def test_empty_component_is_reseeded():
    X, _, _ = make_blobs(n_samples=2000, n_components=3, seed=1, spread=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = GaussianMixture(3, max_iter=0, random_state=0).fit(X)
    # A fourth component far away from all data: it explains nothing.
    means = np.vstack([start.means_, [1e3, 1e3, 1e3]])
    weights = np.r_[start.weights_ * 0.99, 0.01]
    precisions = np.concatenate([start.precisions_, [np.eye(3) * 100]])
    gm = GaussianMixture(4, max_iter=200, means_init=means, weights_init=weights, precisions_init=precisions).fit(X)
    assert gm.n_reseeded_ >= 1
    assert np.all(np.abs(gm.means_) < 50)  # nobody left in the void
    assert gm.weights_.min() > 1e-3
    assert gm.converged_


SUBPROCESS_IMPORT = textwrap.dedent(
    """
    import sys
    import gmmseg, gmmseg.engine, gmmseg.segment, gmmseg.inspection, gmmseg.cli
    from gmmseg.engine import _kernels
    assert "PySide6" not in sys.modules, "engine import pulled in Qt"
    compiled = [name for name in dir(_kernels) if hasattr(getattr(_kernels, name), "signatures")
                and getattr(_kernels, name).signatures]
    assert not compiled, f"import compiled kernels: {compiled}"
    print("ok")
    """
)


def test_import_compiles_nothing_and_pulls_no_qt():
    out = subprocess.run([sys.executable, "-c", SUBPROCESS_IMPORT], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


READ_ONLY_INSTALL = textwrap.dedent(
    """
    import os, tempfile
    real = tempfile.TemporaryFile
    package = os.path.join({root!r}, "gmmseg")
    def refuse_in_package(*args, dir=None, **kwargs):
        if dir is not None and os.path.abspath(str(dir)).startswith(package):
            raise PermissionError(13, "Read-only file system", str(dir))
        return real(*args, dir=dir, **kwargs)
    tempfile.TemporaryFile = refuse_in_package
    import numpy as np
    import gmmseg
    gmmseg.GaussianMixture(2, max_iter=3, random_state=0).fit(np.random.RandomState(0).normal(size=(100, 2)))
    print("fitted")
    """
)


def test_kernels_cache_outside_a_read_only_package(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", READ_ONLY_INSTALL.format(root=root)],
        capture_output=True, text=True, env=env, cwd=root,
    )
    assert out.returncode == 0, out.stderr
    cached = list((tmp_path / "gmmseg" / "numba").rglob("*.nbi"))
    assert cached, "no kernel index written to the user cache directory"


def _fitted(covariance_type="full", d=3, seed=0):
    X = np.random.RandomState(seed).normal(size=(400, d))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return X, GaussianMixture(2, covariance_type=covariance_type, random_state=0).fit(X)


@pytest.mark.parametrize("scale", [1e154, 1e200, 1e300])
def test_fit_on_overflowing_data_says_rescale(scale):
    """Finite data whose sums of squares overflow float64 are refused before
    any kernel runs (the kernels divided by zero); moderate scales still fit."""
    X = np.random.RandomState(0).normal(size=(500, 3))
    with pytest.raises(ValueError, match=r"overflow float64\. Rescale the data \(e\.g\. divide X by"):
        GaussianMixture(2, random_state=0).fit(X * scale)
    with pytest.raises(ValueError, match="overflow float64"):
        GaussianMixture(2, random_state=0).fit(X, sample_weight=np.full(500, 1e304))
    with pytest.raises(ValueError, match="sample_weight sums to more than float64 holds"):
        GaussianMixture(2, random_state=0).fit(X, sample_weight=np.full(500, 1e307))
    assert np.isfinite(GaussianMixture(2, random_state=0).fit(X * 1e100).lower_bound_)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("d", [3, 8])  # the unrolled kernels and the wide ones
def test_predicting_far_beyond_the_model_says_rescale(covariance_type, d):
    X, gm = _fitted(covariance_type, d)
    for method in ("predict", "predict_proba", "score_samples", "score"):
        with pytest.raises(ValueError, match="too far from every component for float64.*rescale the data"):
            getattr(gm, method)(X * 1e300)
    assert np.isfinite(gm.score_samples(X * 1e100)).all()  # far, but representable


def test_model_with_huge_means_fails_clearly():
    """A model from parameters of 1e308 (as a hostile model file could give)
    evaluates nothing: ValueError, not ZeroDivisionError."""
    X, gm = _fitted()
    far = GaussianMixture.from_parameters(gm.weights_, np.full_like(gm.means_, 1e308), gm.precisions_cholesky_)
    with pytest.raises(ValueError, match="too far from every component"):
        far.predict(X)
    with pytest.raises(ValueError, match="covariances or precisions overflow"):
        GaussianMixture.from_parameters(gm.weights_, gm.means_, gm.precisions_cholesky_ * 1e-200)


def test_spatial_prior_tables_are_checked_for_float32():
    """The spatial prior keeps log-densities in float32: distances fine in
    float64 but beyond float32 are refused with the same advice."""
    from gmmseg.engine import potts_posteriors

    X, gm = _fitted()
    index = np.arange(400, dtype=np.int32).reshape(20, 20)
    assert potts_posteriors(gm, X, index, 1.0, 2).shape == (20, 20, 2)
    with pytest.raises(ValueError, match="too far from every component for float32"):
        potts_posteriors(gm, X * 1e25, index, 1.0, 2)
