"""A scikit-learn compatible Gaussian mixture fitted by Numba EM kernels."""

import inspect
import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _covariance as cov
from . import _kernels, _wide
from ._exceptions import ConvergenceWarning, not_fitted_error
from ._kmeans import kmeans, kmeans_plusplus
from ._parallel import map_rows
from ._validation import (
    check_array,
    check_choice,
    check_int,
    check_random_state,
    check_real,
    check_sample_weight,
)

INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")

# A component whose expected weight falls below this share of the total is
# "empty": it explains no data and is moved to the worst-explained sample.
_EMPTY_SHARE = 1e-8
_INIT_CHUNK = 65536
# Largest sums of squares (EM statistics, squared distances) the kernels may
# meet, with room for the few sums and differences taken after them; finite
# data beyond this overflow to infinity and every density to zero (which the
# kernels would report as a division by zero).
FLOAT64_LIMIT = float(np.finfo(np.float64).max) / 16
#: The same for tables of log-densities kept in float32 (the spatial prior).
FLOAT32_LIMIT = float(np.finfo(np.float32).max) / 16


@dataclass(frozen=True)
class EMProgress:
    """What a fit reports after each EM iteration.

    Attributes
    ----------
    init : int
        Index of the current initialisation (0 .. n_init - 1).
    iteration : int
        EM iteration within this initialisation, starting at 1.
    lower_bound : float
        Mean (weighted) log-likelihood per sample of the parameters before
        this iteration's M-step, as scikit-learn's ``lower_bound_``.
    change : float
        Change of ``lower_bound`` from the previous iteration.
    weights, means, covariances, precisions_cholesky : ndarray
        Parameters after this iteration's M-step (do not modify them).
    converged : bool
        True when ``|change| < tol``: this is the last iteration.
    phase : str
        ``"em"`` after an EM iteration; ``"init"`` while the k-means
        initialisation runs (then ``iteration`` counts k-means steps and the
        parameters are None), so a long initialisation can be stopped too;
        ``"spatial"`` after an iteration of :func:`gmmseg.engine.fit_potts`
        (then ``lower_bound`` is its mean free energy per pixel).
    """

    init: int
    iteration: int
    lower_bound: float
    change: float
    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    converged: bool
    precisions_cholesky: np.ndarray = None
    phase: str = "em"


class GaussianMixture:
    """Gaussian mixture model fitted by expectation-maximisation.

    Parameters and fitted attributes follow scikit-learn's
    ``sklearn.mixture.GaussianMixture``; starting from the same parameters
    both give the same model. The EM iterations run in Numba kernels that
    fuse the E-step with the M-step statistics in one pass over the data,
    in parallel threads, with bounded memory.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
        Shape of the component covariances.
    tol : float, default=1e-3
        EM stops when the lower bound changes by less than ``tol``.
    reg_covar : float, default=1e-6
        Added to the covariance diagonals; keeps them positive definite.
        With ``reg_covar > 0`` degenerate components are regularised or
        re-seeded instead of aborting the fit.
    max_iter : int, default=100
        Maximum EM iterations per initialisation (0 returns the initial
        parameters).
    n_init : int, default=1
        Number of initialisations; the one with the highest lower bound wins.
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data'}, default='kmeans'
        How the initial responsibilities are chosen.
    weights_init, means_init, precisions_init : array-like, optional
        User-given initial parameters (override ``init_params`` for each).
    random_state : int, RandomState or None, default=None
        Seed of the initialisation.
    warm_start : bool, default=False
        Continue from the fitted parameters on the next ``fit``.
    verbose : int, default=0
        1 prints the progress per initialisation, 2 also per iteration.
    verbose_interval : int, default=10
        Iterations between progress lines at ``verbose >= 2``.

    Attributes
    ----------
    weights_, means_, covariances_, precisions_, precisions_cholesky_ : ndarray
        Fitted parameters (shapes as in scikit-learn).
    converged_ : bool
        Whether the best initialisation converged.
    n_iter_ : int
        EM iterations of the best initialisation.
    lower_bound_ : float
        Mean (weighted) log-likelihood of the best initialisation.
    lower_bounds_ : list of float
        Lower bound at every iteration of the best initialisation.
    n_features_in_ : int
        Number of features seen in ``fit``.
    stopped_ : bool
        True when a callback asked the fit to stop early.
    n_reseeded_ : int
        Empty components moved to badly explained samples during the fit.
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval

    # ------------------------------------------------------------------
    # scikit-learn estimator protocol, without inheriting from (or importing)
    # scikit-learn: the engine is NumPy + Numba only.
    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [p for p in signature.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Get the constructor parameters (scikit-learn protocol).

        Parameters
        ----------
        deep : bool, default=True
            Ignored: no parameter is itself an estimator.

        Returns
        -------
        params : dict
            Every ``__init__`` parameter with its current value, as given
            (never copied or converted), so ``sklearn.base.clone`` can build
            an equal unfitted model.
        """
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> "GaussianMixture":
        """Set constructor parameters (scikit-learn protocol).

        Values are stored as given and checked by the next ``fit``, as in
        scikit-learn. A fitted model keeps its parameters until then.

        Parameters
        ----------
        **params
            Any of the ``__init__`` parameters.

        Returns
        -------
        self : GaussianMixture

        Raises
        ------
        ValueError
            For a name that is not an ``__init__`` parameter.
        """
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for GaussianMixture; valid "
                    f"parameters are: {', '.join(valid)}."
                )
            setattr(self, name, value)
        return self

    def __sklearn_tags__(self):
        """Estimator tags for scikit-learn (called only by scikit-learn).

        A density estimator, as ``sklearn.mixture.GaussianMixture``: fitted
        on dense 2-D numeric X without NaN, no target (``y`` is ignored),
        deterministic for a fixed ``random_state``, ``predict`` and friends
        need a fitted model.

        Returns
        -------
        tags : sklearn.utils.Tags
        """
        # Imported here: only scikit-learn calls this method, so scikit-learn
        # is loaded by then, and ``import gmmseg`` never imports it.
        from sklearn.utils import InputTags, Tags, TargetTags

        return Tags(
            estimator_type="density_estimator",
            target_tags=TargetTags(required=False),
            input_tags=InputTags(two_d_array=True, sparse=False, allow_nan=False),
            requires_fit=True,
            non_deterministic=False,
        )

    def __sklearn_is_fitted__(self) -> bool:
        """Whether ``fit`` has run (used by ``sklearn.utils.validation.check_is_fitted``)."""
        return hasattr(self, "means_")

    def __repr__(self):
        defaults = GaussianMixture().get_params()
        changed = []
        for name, value in self.get_params().items():
            default = defaults[name]
            if isinstance(value, np.ndarray) or value is not default and value != default:
                text = "array(...)" if isinstance(value, np.ndarray) else repr(value)
                changed.append(f"{name}={text}")
        return f"GaussianMixture({', '.join(changed)})"

    # ------------------------------------------------------------------
    # validation
    def _check_parameters(self, n_features):
        """Validate hyper-parameters; return the checked initial parameters."""
        K = check_int(self.n_components, "n_components", 1)
        check_choice(self.covariance_type, "covariance_type", cov.COVARIANCE_TYPES)
        check_real(self.tol, "tol", 0.0)
        check_real(self.reg_covar, "reg_covar", 0.0)
        check_int(self.max_iter, "max_iter", 0)
        check_int(self.n_init, "n_init", 1)
        check_choice(self.init_params, "init_params", INIT_PARAMS)
        check_int(self.verbose, "verbose", 0)
        check_int(self.verbose_interval, "verbose_interval", 1)
        if not isinstance(self.warm_start, (bool, np.bool_)):
            raise ValueError(f"warm_start must be True or False, got {self.warm_start!r}.")
        weights = means = precisions = None
        if self.weights_init is not None:
            weights = _check_weights(self.weights_init, K)
        if self.means_init is not None:
            means = _check_means(self.means_init, K, n_features)
        if self.precisions_init is not None:
            precisions = _check_precisions(self.precisions_init, self.covariance_type, K, n_features)
        return weights, means, precisions

    def _check_is_fitted(self):
        if not hasattr(self, "means_"):
            raise not_fitted_error(
                "This GaussianMixture instance is not fitted yet. Call 'fit' "
                "with appropriate arguments before using this estimator."
            )

    def _check_X(self, X):
        self._check_is_fitted()
        X = check_array(X, n_features=self.means_.shape[1], owner=type(self).__name__)
        self._check_densities(X)
        return X

    def _check_densities(self, X, limit=FLOAT64_LIMIT, precision="float64"):
        """Raise ValueError when some rows of X may lie so far from every
        component that their squared Mahalanobis distances overflow
        ``limit``: their densities would all be zero.

        A bound, cheap and checked before any kernel runs: each component's
        largest distance to the box spanned by X's rows (from the feature
        ranges and the precision factors' magnitudes). When it is finite for
        one component, every row has a finite density under that one.
        """
        means, prec, _ = self._kernel_parameters()
        lo, hi = column_ranges(X)
        with np.errstate(over="ignore", invalid="ignore"):
            reach = np.maximum(np.abs(hi - means), np.abs(lo - means))  # (K, d)
            if prec.shape[1] == 1:  # diagonal factors
                terms = reach * np.abs(prec[:, 0, :])
            else:  # y_j = sum_i (x_i - mu_i) U_ij
                terms = np.einsum("ki,kij->kj", reach, np.abs(prec))
            bound = np.sum(terms * terms, axis=1)
        bound = np.where(np.isnan(bound), np.inf, bound)
        if bound.min() <= limit:
            return
        raise ValueError(
            f"X lies too far from every component for {precision}: values up to "
            f"{float(np.abs(np.concatenate([lo, hi])).max()):.3g} against means up to {float(np.abs(means).max()):.3g} "
            "make the squared distances overflow. Give X on the scale the model was fitted on, or rescale the data "
            "(e.g. divide it by a constant) and fit again."
        )

    # ------------------------------------------------------------------
    # fitting
    def fit(self, X, y=None, *, sample_weight=None, callback=None):
        """Estimate the model parameters with the EM algorithm.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data, float32 or float64 (other numbers are converted);
            statistics are accumulated in float64.
        y : ignored
            For scikit-learn API compatibility.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights, e.g. counts of repeated rows: fitting the
            unique rows with their counts gives the same model as fitting
            all rows.
        callback : callable, optional
            Called after every EM iteration with an :class:`EMProgress`.
            Returning True stops the fit: the model keeps the parameters of
            the last completed iteration (usable, ``converged_ = False``,
            ``stopped_ = True``).

        Returns
        -------
        self : GaussianMixture
        """
        self._fit(X, sample_weight, callback)
        return self

    def fit_predict(self, X, y=None, *, sample_weight=None, callback=None):
        """Fit, then return the most probable component of each sample.

        Equal to ``fit(X).predict(X)`` for any ``max_iter`` and ``tol``.
        """
        X = self._fit(X, sample_weight, callback)
        return self._estimate(X, labels=True)["labels"]

    def _fit(self, X, sample_weight, callback):
        X = check_array(X)
        n, d = X.shape
        weights_init, means_init, precisions_init = self._check_parameters(d)
        K = self.n_components
        w = check_sample_weight(sample_weight, n)
        if w.shape[0] == 0 and n < K:
            raise ValueError(
                f"Expected n_samples >= n_components but got n_components = {K}, "
                f"n_samples = {n}. Use fewer components or more data."
            )
        total_weight = float(w.sum()) if w.shape[0] else float(n)
        _check_fit_range(X, total_weight)
        if hasattr(self, "n_features_in_") and self.warm_start and self.n_features_in_ != d:
            raise ValueError(
                f"X has {d} features, but the warm-started model was fitted with "
                f"{self.n_features_in_} features."
            )

        do_init = not (self.warm_start and hasattr(self, "converged_"))
        n_init = self.n_init if do_init else 1
        random_state = check_random_state(self.random_state)
        self.n_features_in_ = d

        max_lower_bound = -np.inf
        best = None
        self.converged_ = False
        self.stopped_ = False
        self.n_reseeded_ = 0

        for init in range(n_init):
            start_time = time.perf_counter()
            if self.verbose:
                print(f"Initialization {init}")
            if do_init:
                self.stopped_ = self._initialize_parameters(
                    X, w, total_weight, random_state, weights_init, means_init, precisions_init,
                    _init_stopper(callback, init),
                )
            lower_bound = -np.inf if do_init else self.lower_bound_
            lower_bounds = []
            converged = False
            n_iter = 0
            reseed_budget = np.ones(K, dtype=bool)
            for n_iter in range(1, 0 if self.stopped_ else self.max_iter + 1):
                previous = lower_bound
                stats, loglik, worst_row = self._em_pass(X, w)
                reseeded = self._m_step(X, w, stats, total_weight, worst_row, reseed_budget)
                lower_bound = loglik / total_weight
                lower_bounds.append(lower_bound)
                change = lower_bound - previous
                # A re-seeded component changes the model by design: give EM
                # at least one more iteration before judging convergence.
                converged = abs(change) < self.tol and not reseeded
                if self.verbose >= 2 and n_iter % self.verbose_interval == 0:
                    elapsed = time.perf_counter() - start_time
                    print(f"  Iteration {n_iter}\t time lapse {elapsed:.5f}s\t ll change {change:.5f}")
                if callback is not None:
                    progress = EMProgress(
                        init, n_iter, lower_bound, change, self.weights_,
                        self.means_, self.covariances_, converged, self.precisions_cholesky_,
                    )
                    if callback(progress) is True:
                        self.stopped_ = True
                        converged = False
                        break
                if converged:
                    break
            if self.verbose:
                state = "converged" if converged else "did not converge"
                print(f"Initialization {state}. time lapse {time.perf_counter() - start_time:.5f}s\t lower bound {lower_bound:.5f}")
            if self.max_iter == 0 or (self.stopped_ and n_iter == 0):
                # as scikit-learn: the initial parameters of the last init
                # (or of an init that was stopped before EM began)
                if best is None or self.max_iter == 0:
                    best = (self._get_parameters(), 0, [], False)
            elif best is None or lower_bound > max_lower_bound:
                max_lower_bound = lower_bound
                best = (self._get_parameters(), n_iter, lower_bounds, converged)
            if self.stopped_:
                break

        params, best_n_iter, best_lower_bounds, best_converged = best
        self.converged_ = bool(best_converged) and not self.stopped_
        if not self.converged_ and self.max_iter > 0 and not self.stopped_:
            warnings.warn(
                "Best performing initialization did not converge. Try different "
                "init parameters, or increase max_iter, tol, or check for "
                "degenerate data.",
                ConvergenceWarning,
                stacklevel=3,
            )
        self._set_parameters(params)
        self.n_iter_ = best_n_iter
        self.lower_bound_ = max_lower_bound
        self.lower_bounds_ = list(best_lower_bounds)
        return X

    def _initialize_parameters(
        self, X, w, total_weight, random_state, weights_init, means_init, precisions_init,
        should_stop=None,
    ):
        """Set the initial parameters; returns True when ``should_stop``
        interrupted k-means (the parameters then come from its last centres)."""
        n, d = X.shape
        K = self.n_components
        ctype = self.covariance_type
        if weights_init is not None and means_init is not None and precisions_init is not None:
            prec_chol = cov.precision_cholesky_from_precisions(precisions_init, ctype)
            self._set_state(
                weights_init.copy(), means_init.copy(),
                cov.covariances_from_cholesky(prec_chol, ctype), prec_chol,
            )
            return False

        unit = np.ones(n) if w.shape[0] == 0 else w
        global_mean = (unit @ X) / total_weight
        shift = np.repeat(global_mean[None, :], K, axis=0)
        labels = None  # "random" draws soft responsibilities instead
        stopped = False
        if self.init_params == "kmeans":
            shift, labels, stopped = kmeans(X, w, K, random_state, should_stop=should_stop)
        elif self.init_params == "k-means++":
            shift, indices = kmeans_plusplus(X, w, K, random_state)
            labels = _labels_from_indices(indices, n)
        elif self.init_params == "random_from_data":
            indices = _choose_rows(n, K, w, random_state)
            shift = np.ascontiguousarray(X[indices], dtype=np.float64)
            labels = _labels_from_indices(indices, n)

        stats = None
        diagonal = cov.is_diagonal(ctype)
        eye = np.eye(K)
        for start in range(0, n, _INIT_CHUNK):
            stop = min(n, start + _INIT_CHUNK)
            if labels is not None:
                chunk_labels = labels[start:stop]
                resp = np.zeros((stop - start, K))
                rows = np.nonzero(chunk_labels >= 0)[0]
                resp[rows] = eye[chunk_labels[rows]]
            else:  # uniform random responsibilities, drawn chunk by chunk
                resp = random_state.uniform(size=(stop - start, K))
                resp /= resp.sum(axis=1)[:, None]
            part = _kernels.weighted_moments(X, start, stop, resp, w, shift, diagonal)
            stats = part if stats is None else stats + part
        nk, means, covariances = cov.estimate_parameters(stats, shift, ctype, self.reg_covar)
        weights = nk / total_weight  # as scikit-learn: not renormalised here
        if weights_init is not None:
            weights = weights_init.copy()
        if means_init is not None:
            means = means_init.copy()
        if precisions_init is not None:
            prec_chol = cov.precision_cholesky_from_precisions(precisions_init, ctype)
            covariances = cov.covariances_from_cholesky(prec_chol, ctype)
        else:
            prec_chol, covariances, _ = cov.compute_precision_cholesky(
                covariances, ctype, self.reg_covar
            )
        self._set_state(weights, means, covariances, prec_chol)
        return stopped

    def _kernel_parameters(self):
        """Means, 3-D precision factors and per-component constants for kernels."""
        K, d = self.means_.shape
        prec = cov.kernel_precisions(self.precisions_cholesky_, self.covariance_type, K, d)
        log_det = cov.log_det_cholesky(self.precisions_cholesky_, self.covariance_type, d)
        with np.errstate(divide="ignore"):
            log_weights = np.log(self.weights_)
        const = log_weights + log_det - 0.5 * d * _kernels.LOG_2PI
        const = np.ascontiguousarray(np.broadcast_to(const, (K,)), dtype=np.float64)
        return np.ascontiguousarray(self.means_, dtype=np.float64), prec, const

    def _em_pass(self, X, w):
        """Fused E-step / M-step statistics over all rows, in parallel."""
        means, prec, const = self._kernel_parameters()
        features = _kernels.feature_tuple(X.shape[1])
        with overflow_as_value_error():
            if features:
                parts = map_rows(lambda s, e: _kernels.em_pass(X, s, e, w, means, prec, const, features), X.shape[0])
            else:
                wide = _wide.parameters(means, prec)
                parts = map_rows(lambda s, e: _wide.em_pass(X, s, e, w, *wide, const), X.shape[0])
        stats = parts[0][0].copy()
        loglik = parts[0][1]
        for part in parts[1:]:
            stats += part[0]
            loglik += part[1]
        worst = min(parts, key=lambda p: p[2])[3]
        return stats, loglik, worst

    def _m_step(self, X, w, stats, total_weight, worst_row, reseed_budget):
        """New parameters from the pass statistics; returns True if a
        component was re-seeded."""
        ctype = self.covariance_type
        nk, means, covariances = cov.estimate_parameters(stats, self.means_, ctype, self.reg_covar)
        reseeded = False
        if self.reg_covar > 0 and worst_row >= 0:
            empty = (stats[:, 0] < _EMPTY_SHARE * total_weight) & reseed_budget
            if empty.any() and not empty.all():
                k = int(np.argmax(empty))  # one per iteration: the others may refill
                typical = total_weight / X.shape[0]
                others = np.ones(len(nk), dtype=bool)
                others[k] = False
                means[k] = X[worst_row]
                if ctype != "tied":
                    covariances[k] = cov.average_covariance(covariances[others], ctype)
                nk[k] = typical
                reseed_budget[k] = False
                self.n_reseeded_ += 1
                reseeded = True
        weights = nk / nk.sum()
        prec_chol, covariances, _ = cov.compute_precision_cholesky(covariances, ctype, self.reg_covar)
        self._set_state(weights, means, covariances, prec_chol)
        return reseeded

    def _set_state(self, weights, means, covariances, prec_chol):
        self.weights_ = weights
        self.means_ = means
        self.covariances_ = covariances
        self.precisions_cholesky_ = prec_chol

    def _get_parameters(self):
        return (self.weights_, self.means_, self.covariances_, self.precisions_cholesky_)

    def _set_parameters(self, params):
        self._set_state(*params)
        self.precisions_ = cov.precisions_from_cholesky(self.precisions_cholesky_, self.covariance_type)

    # ------------------------------------------------------------------
    # inference
    def _estimate(self, X, log_norm=False, resp=False, labels=False, resp_dtype=np.float64):
        """Run the estimation kernel over validated X; returns a dict."""
        n = X.shape[0]
        K = self.means_.shape[0]
        means, prec, const = self._kernel_parameters()
        out_norm = np.empty(n if log_norm else 0)
        out_resp = np.empty((n, K) if resp else (0, K), dtype=resp_dtype)
        out_labels = np.empty(n if labels else 0, dtype=np.int64)
        features = _kernels.feature_tuple(X.shape[1])
        with overflow_as_value_error():
            if features:
                map_rows(lambda s, e: _kernels.estimate(X, s, e, means, prec, const, features, out_norm, out_resp,
                                                        out_labels), n)
            else:
                wide = _wide.parameters(means, prec)
                map_rows(lambda s, e: _wide.estimate(X, s, e, *wide, const, out_norm, out_resp, out_labels), n)
        return {"log_norm": out_norm, "resp": out_resp, "labels": out_labels}

    def score_samples(self, X):
        """Log-likelihood of each sample, shape (n_samples,)."""
        X = self._check_X(X)
        return self._estimate(X, log_norm=True)["log_norm"]

    def score(self, X, y=None, sample_weight=None):
        """Mean (weighted) log-likelihood per sample."""
        X = self._check_X(X)
        w = check_sample_weight(sample_weight, X.shape[0])
        ll = self._estimate(X, log_norm=True)["log_norm"]
        if w.shape[0] == 0:
            return float(ll.mean())
        return float(w @ ll / w.sum())

    def predict(self, X):
        """Most probable component of each sample, shape (n_samples,)."""
        X = self._check_X(X)
        return self._estimate(X, labels=True)["labels"]

    def predict_proba(self, X):
        """Posterior probability of each component, shape (n_samples, K)."""
        X = self._check_X(X)
        return self._estimate(X, resp=True)["resp"]

    def estimate(self, X, proba_dtype=np.float64):
        """Labels, probabilities and log-likelihoods in one pass over X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        proba_dtype : float32 or float64
            dtype of the probabilities (float32 halves the memory of image
            maps; computations are float64 either way).

        Returns
        -------
        labels : ndarray (n_samples,), int64
        proba : ndarray (n_samples, n_components), ``proba_dtype``
        log_likelihood : ndarray (n_samples,), float64
        """
        X = self._check_X(X)
        if np.dtype(proba_dtype) not in (np.float32, np.float64):
            raise ValueError(f"proba_dtype must be float32 or float64, got {proba_dtype}.")
        out = self._estimate(X, log_norm=True, resp=True, labels=True, resp_dtype=proba_dtype)
        return out["labels"], out["resp"], out["log_norm"]

    def reorder_components(self, order):
        """Permute the fitted components: new component i is old ``order[i]``."""
        self._check_is_fitted()
        order = np.asarray(order)
        K = self.means_.shape[0]
        if sorted(order.tolist()) != list(range(K)):
            raise ValueError(f"order must be a permutation of 0..{K - 1}, got {order.tolist()}.")
        self.weights_ = self.weights_[order]
        self.means_ = self.means_[order]
        if self.covariance_type != "tied":
            self.covariances_ = self.covariances_[order]
            self.precisions_cholesky_ = self.precisions_cholesky_[order]
            self.precisions_ = self.precisions_[order]
        return self

    @classmethod
    def from_parameters(cls, weights, means, precisions_cholesky, covariance_type="full", **params):
        """A fitted model from stored parameters (e.g. a model file).

        ``precisions_cholesky`` are the factors of ``precisions_cholesky_``;
        the covariances are derived from them, so predictions equal those of
        the model the parameters came from, bit for bit.
        """
        K = len(weights)
        model = cls(K, covariance_type=covariance_type, **params)
        check_choice(covariance_type, "covariance_type", cov.COVARIANCE_TYPES)
        weights = np.array(weights, dtype=np.float64)
        means = np.array(means, dtype=np.float64)
        prec_chol = np.array(precisions_cholesky, dtype=np.float64)
        if means.ndim != 2 or means.shape[0] != K:
            raise ValueError(f"means must have shape ({K}, n_features), got {means.shape}.")
        d = means.shape[1]
        shapes = {"full": (K, d, d), "tied": (d, d), "diag": (K, d), "spherical": (K,)}
        if prec_chol.shape != shapes[covariance_type]:
            raise ValueError(
                f"precisions_cholesky for {covariance_type!r} must have shape "
                f"{shapes[covariance_type]}, got {prec_chol.shape}."
            )
        for name, arr in (("weights", weights), ("means", means), ("precisions_cholesky", prec_chol)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} contains NaN or infinity.")
        if (weights < 0).any() or not np.isclose(weights.sum(), 1.0, atol=1e-6):
            raise ValueError("weights must be non-negative and sum to 1.")
        if covariance_type in ("full", "tied"):
            diag = np.diagonal(prec_chol, axis1=-2, axis2=-1)
            if (diag <= 0).any() or not np.allclose(prec_chol, np.triu(prec_chol)):
                raise ValueError("precisions_cholesky must be upper triangular with a positive diagonal.")
        elif (prec_chol <= 0).any():
            raise ValueError("precisions_cholesky must be positive.")
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                covariances = cov.covariances_from_cholesky(prec_chol, covariance_type)
                precisions = cov.precisions_from_cholesky(prec_chol, covariance_type)
        except np.linalg.LinAlgError:  # factors so small that they are singular in float64
            covariances = precisions = np.array([np.inf])
        if not (np.all(np.isfinite(covariances)) and np.all(np.isfinite(precisions))):
            raise ValueError("precisions_cholesky are so small or so large that the covariances or precisions "
                             "overflow float64; the parameters must come from data of a moderate scale.")
        model._set_state(weights, means, covariances, prec_chol)
        model.precisions_ = precisions
        model.n_features_in_ = d
        model.converged_ = True
        model.n_iter_ = 0
        model.lower_bound_ = -np.inf
        model.lower_bounds_ = []
        return model

    def _n_parameters(self):
        K, d = self.means_.shape
        return cov.n_parameters(self.covariance_type, K, d)

    def bic(self, X, sample_weight=None):
        """Bayesian information criterion on X (lower is better).

        With ``sample_weight`` (e.g. counts of unique rows) the sample size is
        the total weight, so the result equals that of the expanded data.
        """
        X = self._check_X(X)
        n_eff = X.shape[0] if sample_weight is None else float(check_sample_weight(sample_weight, X.shape[0]).sum())
        return -2 * self.score(X, sample_weight=sample_weight) * n_eff + self._n_parameters() * math.log(n_eff)

    def aic(self, X, sample_weight=None):
        """Akaike information criterion on X (lower is better)."""
        X = self._check_X(X)
        n_eff = X.shape[0] if sample_weight is None else float(check_sample_weight(sample_weight, X.shape[0]).sum())
        return -2 * self.score(X, sample_weight=sample_weight) * n_eff + 2 * self._n_parameters()

    def sample(self, n_samples=1):
        """Draw samples from the fitted mixture.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,)
            Component of each sample.
        """
        self._check_is_fitted()
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples!r}. The sampling "
                "requires at least one sample."
            )
        rng = check_random_state(self.random_state)
        d = self.means_.shape[1]
        counts = rng.multinomial(n_samples, self.weights_)
        parts = []
        for k, (mean, count) in enumerate(zip(self.means_, counts)):
            if self.covariance_type == "full":
                parts.append(rng.multivariate_normal(mean, self.covariances_[k], int(count)))
            elif self.covariance_type == "tied":
                parts.append(rng.multivariate_normal(mean, self.covariances_, int(count)))
            else:
                parts.append(
                    mean + rng.standard_normal(size=(int(count), d)) * np.sqrt(self.covariances_[k])
                )
        labels = np.concatenate([np.full(int(c), k, dtype=np.int64) for k, c in enumerate(counts)])
        return np.vstack(parts), labels


# ----------------------------------------------------------------------
# helpers
def _check_fit_range(X, total_weight):
    """Raise ValueError when the EM statistics of X (weighted sums of squared
    differences) could overflow float64: checked on the widest feature's
    range before any kernel runs, so the message says what to change
    instead of a kernel failing on infinities."""
    with np.errstate(over="ignore", invalid="ignore"):
        spread = float(np.max(X.max(axis=0).astype(np.float64) - X.min(axis=0).astype(np.float64)))
        sums = spread * spread * total_weight * X.shape[1]
    if math.isfinite(total_weight) and math.isfinite(sums) and sums <= FLOAT64_LIMIT:
        return
    if not math.isfinite(total_weight):
        raise ValueError("sample_weight sums to more than float64 holds; divide the weights by a constant.")
    raise ValueError(
        f"X spans {spread:.3g} in one feature: with a total sample weight of {total_weight:.3g} the sums of squares "
        f"EM accumulates would overflow float64. Rescale the data (e.g. divide X by {spread:.0e}) before fitting."
    )


def column_ranges(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column minimum and maximum of a 2-D array as float64 (NaN in both
    when the array holds a NaN), in parallel: NumPy's ``min(axis=0)`` walks a
    C-ordered table column by column, many times slower on image-sized data."""
    parts = map_rows(lambda s, e: _kernels.column_range(X, s, e), X.shape[0])
    lo = np.min([p[0] for p in parts], axis=0)
    hi = np.max([p[1] for p in parts], axis=0)
    if any(p[2] for p in parts):
        lo[:] = hi[:] = np.nan
    return lo, hi


@contextmanager
def overflow_as_value_error():
    """Kernels meet infinities only when the data or the parameters overflow
    float64 (the checks before them keep that away from any sane input); a
    sample whose density is then zero under every component ends in a
    division by zero, reported here as what to change."""
    try:
        yield
    except (ZeroDivisionError, FloatingPointError):
        raise ValueError(
            "the computation overflowed: some samples lie so far from every component (or the weights are so "
            "large) that their densities are zero in floating point. Rescale the data (e.g. divide it by a "
            "constant) and fit again."
        ) from None


def _init_stopper(callback, init):
    """``should_stop(step)`` for k-means: asks the callback with an
    ``EMProgress`` of phase "init"; None without a callback."""
    if callback is None:
        return None

    def should_stop(step):
        report = EMProgress(init, step, -np.inf, np.nan, None, None, None, False, phase="init")
        return callback(report) is True

    return should_stop


def _labels_from_indices(indices, n_samples):
    """Labels -1 everywhere except row indices[k] -> k."""
    labels = np.full(n_samples, -1, dtype=np.int64)
    labels[indices] = np.arange(len(indices))
    return labels


def _choose_rows(n_samples, n_components, w, random_state):
    """K distinct rows at random (by weight when weighted)."""
    if w.shape[0] == 0:
        return random_state.choice(n_samples, size=n_components, replace=False)
    positive = int(np.count_nonzero(w))
    return random_state.choice(
        n_samples, size=n_components, replace=positive < n_components, p=w / w.sum()
    )


def _check_weights(weights, K):
    weights = np.array(weights, dtype=np.float64)
    if weights.shape != (K,):
        raise ValueError(f"weights_init must have shape ({K},), got {weights.shape}.")
    if not np.isfinite(weights).all() or (weights < 0).any() or (weights > 1).any():
        raise ValueError("weights_init must lie in [0, 1].")
    if not np.isclose(weights.sum(), 1.0, rtol=0, atol=1e-6):
        raise ValueError(f"weights_init must sum to 1, got sum(weights) = {weights.sum():.5f}.")
    return weights


def _check_means(means, K, d):
    means = np.array(means, dtype=np.float64)
    if means.shape != (K, d):
        raise ValueError(f"means_init must have shape ({K}, {d}), got {means.shape}.")
    if not np.isfinite(means).all():
        raise ValueError("means_init contains NaN or infinity.")
    return means


def _check_precisions(precisions, covariance_type, K, d):
    precisions = np.array(precisions, dtype=np.float64)
    shapes = {"full": (K, d, d), "tied": (d, d), "diag": (K, d), "spherical": (K,)}
    expected = shapes[covariance_type]
    if precisions.shape != expected:
        raise ValueError(
            f"precisions_init for covariance_type={covariance_type!r} must have "
            f"shape {expected}, got {precisions.shape}."
        )
    if not np.isfinite(precisions).all():
        raise ValueError("precisions_init contains NaN or infinity.")
    if covariance_type in ("diag", "spherical"):
        if (precisions <= 0).any():
            raise ValueError(f"'{covariance_type} precision' should be positive.")
        return precisions
    mats = precisions[None] if covariance_type == "tied" else precisions
    for m in mats:
        if not np.allclose(m, m.T) or (np.linalg.eigvalsh(m) <= 0).any():
            raise ValueError(
                f"'{covariance_type} precision' should be symmetric, positive-definite."
            )
    return precisions
