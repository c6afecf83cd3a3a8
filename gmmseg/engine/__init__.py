"""The EM engine: NumPy and Numba only, no images, no Qt.

Importing it compiles nothing; kernels compile (or load from the on-disk
cache) on first use. :func:`warm_up` compiles them ahead of time.
"""

import warnings

import numpy as np

from ._covariance import COVARIANCE_TYPES
from ._exceptions import ConvergenceWarning, NotFittedError
from ._mrf import fit_potts, mixture_from_grid, potts_posteriors, scratch_array
from ._parallel import get_num_threads, map_rows, set_num_threads
from .gaussian_mixture import INIT_PARAMS, EMProgress, GaussianMixture


def warm_up(dtypes=("float64",), many_features=False):
    """Compile (or load from cache) every kernel a fit and a predict use.

    A tiny fit per covariance type; call it in a background thread at
    application start so the user's first fit is not slowed by compilation.
    ``many_features`` also compiles the kernels for more than six features
    (one compilation for every such feature count, several seconds once;
    colour and position features never use them).
    """
    rng = np.random.RandomState(0)
    if many_features:
        X8 = rng.normal(size=(40, 8))
        for dtype in dtypes:
            for covariance_type in ("full", "diag"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    gm = GaussianMixture(2, covariance_type=covariance_type, max_iter=2, random_state=0).fit(X8.astype(dtype))
                gm.predict_proba(X8.astype(dtype))
    for dtype in dtypes:
        X = rng.normal(size=(40, 3)).astype(dtype)
        weights = np.ones(40)
        for covariance_type in ("full", "diag"):
            for sample_weight in (None, weights):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    gm = GaussianMixture(2, covariance_type=covariance_type, max_iter=2, random_state=0)
                    gm.fit(X, sample_weight=sample_weight)
                gm.predict_proba(X)
                gm.score_samples(X)
                gm.predict(X)
        grid = np.arange(40, dtype=np.int32).reshape(5, 8)
        fit_potts(gm, X, grid, 1.0, max_iter=1, tol=0.0)
        potts_posteriors(gm, X, grid, 1.0, 1)
    # The Segmenter's default path: colour and position (5 features, float32 rows).
    X5 = rng.normal(size=(40, 5)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = GaussianMixture(2, max_iter=2, random_state=0).fit(X5)
    fit_potts(gm, X5, grid, 1.0, max_iter=1, tol=0.0)
    potts_posteriors(gm, X5, grid, 1.0, 1)


__all__ = [
    "COVARIANCE_TYPES",
    "INIT_PARAMS",
    "ConvergenceWarning",
    "EMProgress",
    "GaussianMixture",
    "NotFittedError",
    "fit_potts",
    "get_num_threads",
    "map_rows",
    "mixture_from_grid",
    "potts_posteriors",
    "scratch_array",
    "set_num_threads",
    "warm_up",
]
