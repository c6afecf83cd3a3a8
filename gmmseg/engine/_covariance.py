"""Covariance-type specific maths, one helper per type with one signature.

Shapes follow scikit-learn: ``full`` (K, d, d), ``tied`` (d, d), ``diag``
(K, d), ``spherical`` (K,). ``precisions_cholesky`` are upper-triangular
factors U with precision = U @ U.T (full, tied) or 1/sigma (diag, spherical).
"""

import numpy as np

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

# Above this jitter (relative to the covariance scale) we give up on a matrix.
_MAX_JITTER_STEPS = 12


class DegenerateCovarianceError(ValueError):
    """A covariance matrix could not be made positive definite."""


def is_diagonal(covariance_type):
    """True when the kernels use the diagonal statistics layout."""
    return covariance_type in ("diag", "spherical")


def unpack_moments(stats, n_features, diagonal):
    """Split packed kernel statistics into S0 (K,), S1 (K, d), S2.

    S2 is (K, d, d) symmetric for the full layout and (K, d) for the diagonal.
    """
    d = n_features
    s0 = stats[:, 0]
    s1 = stats[:, 1 : 1 + d]
    if diagonal:
        return s0, s1, stats[:, 1 + d : 1 + 2 * d]
    K = stats.shape[0]
    s2 = np.empty((K, d, d))
    iu, ju = np.triu_indices(d)
    s2[:, iu, ju] = stats[:, 1 + d :]
    s2[:, ju, iu] = stats[:, 1 + d :]
    return s0, s1, s2


def estimate_parameters(stats, shift, covariance_type, reg_covar):
    """M-step from packed moments taken around ``shift`` (K, d).

    Returns unnormalised weights ``nk`` (with scikit-learn's ``10 * eps``
    guard against empty components), means and covariances.
    """
    K, d = shift.shape
    diagonal = is_diagonal(covariance_type)
    s0, s1, s2 = unpack_moments(stats, d, diagonal)
    nk = s0 + 10 * np.finfo(np.float64).eps
    delta = s1 / nk[:, None]
    means = shift + delta
    # Scatter around the new means from moments around the shift:
    # sum r (x - m - delta)(x - m - delta)^T = S2 - delta S1^T - S1 delta^T + S0 delta delta^T
    if diagonal:
        scatter = s2 - 2.0 * delta * s1 + s0[:, None] * delta**2
        variances = scatter / nk[:, None]
        if covariance_type == "diag":
            covariances = variances + reg_covar
        else:
            covariances = variances.mean(axis=1) + reg_covar
    else:
        outer_ds = delta[:, :, None] * s1[:, None, :]
        scatter = (
            s2
            - outer_ds
            - np.swapaxes(outer_ds, 1, 2)
            + s0[:, None, None] * delta[:, :, None] * delta[:, None, :]
        )
        eye = np.eye(d)
        if covariance_type == "full":
            covariances = scatter / nk[:, None, None] + reg_covar * eye
        else:
            covariances = scatter.sum(axis=0) / nk.sum() + reg_covar * eye
    # Symmetric by construction; clip tiny negative variances from rounding.
    if diagonal:
        covariances = np.maximum(covariances, 0.0)
    return nk, means, covariances


def _cholesky_with_jitter(matrix, reg_covar):
    """Lower Cholesky factor of one matrix; adds growing jitter if needed.

    Returns ``(L, jitter_added)``. Raises DegenerateCovarianceError when even
    the largest jitter fails (e.g. non-finite entries) or when reg_covar is 0
    (scikit-learn's contract: no silent regularisation unless asked for).
    """
    try:
        return np.linalg.cholesky(matrix), 0.0
    except np.linalg.LinAlgError:
        pass
    if reg_covar <= 0 or not np.all(np.isfinite(matrix)):
        raise DegenerateCovarianceError(
            "Fitting the mixture model failed because some components have "
            "ill-defined empirical covariance (for instance caused by singleton "
            "or collapsed samples). Try to decrease the number of components, "
            "increase reg_covar, or scale the input data."
        )
    d = matrix.shape[0]
    scale = max(float(np.abs(np.diag(matrix)).max()), reg_covar)
    jitter = reg_covar
    for _ in range(_MAX_JITTER_STEPS):
        try:
            return np.linalg.cholesky(matrix + jitter * np.eye(d)), jitter
        except np.linalg.LinAlgError:
            jitter = max(jitter * 10.0, 1e-12 * scale)
    raise DegenerateCovarianceError(
        "A component's covariance could not be made positive definite even "
        "with added regularisation; check the data for constant or "
        "non-finite features."
    )


def _precision_cholesky_full(covariances, reg_covar):
    covariances = np.asarray(covariances, dtype=np.float64)
    K, d, _ = covariances.shape
    n_regularised = 0
    try:
        lower = np.linalg.cholesky(covariances)
    except np.linalg.LinAlgError:
        lower = np.empty_like(covariances)
        for k in range(K):
            lower[k], jitter = _cholesky_with_jitter(covariances[k], reg_covar)
            if jitter > 0:
                covariances[k] += jitter * np.eye(d)
                n_regularised += 1
    eye = np.broadcast_to(np.eye(d), (K, d, d))
    inv_lower = np.linalg.solve(lower, eye)
    # Keep exact zeros below the diagonal of the upper factor.
    return np.triu(np.swapaxes(inv_lower, 1, 2)), covariances, n_regularised


def _precision_cholesky_tied(covariance, reg_covar):
    prec, cov, n_reg = _precision_cholesky_full(covariance[None], reg_covar)
    return prec[0], cov[0], n_reg


def _precision_cholesky_diag(covariances, reg_covar):
    covariances = np.asarray(covariances, dtype=np.float64)
    bad = ~(covariances > 0.0)
    n_regularised = 0
    if np.any(bad):
        if reg_covar <= 0:
            raise DegenerateCovarianceError(
                "Fitting the mixture model failed because some components have "
                "ill-defined empirical covariance (for instance caused by "
                "singleton or collapsed samples). Try to decrease the number of "
                "components, increase reg_covar, or scale the input data."
            )
        covariances = np.where(bad, reg_covar, covariances)
        n_regularised = int(np.count_nonzero(bad))
    return 1.0 / np.sqrt(covariances), covariances, n_regularised


PRECISION_CHOLESKY = {
    "full": _precision_cholesky_full,
    "tied": _precision_cholesky_tied,
    "diag": _precision_cholesky_diag,
    "spherical": _precision_cholesky_diag,
}


def compute_precision_cholesky(covariances, covariance_type, reg_covar):
    """Return ``(precisions_cholesky, covariances, n_regularised)``.

    ``covariances`` comes back with any jitter that was needed to make it
    positive definite (``n_regularised`` counts the matrices that needed it).
    """
    return PRECISION_CHOLESKY[covariance_type](covariances, reg_covar)


def _flip(matrix):
    return matrix[..., ::-1, ::-1]


def precision_cholesky_from_precisions(precisions, covariance_type):
    """Upper factor U with U @ U.T = precision, from the precisions themselves.

    Reversing rows and columns turns the lower Cholesky factor of the flipped
    matrix into the upper factor of the original.
    """
    if covariance_type in ("full", "tied"):
        return np.ascontiguousarray(_flip(np.linalg.cholesky(_flip(precisions))))
    return np.sqrt(precisions)


def precisions_from_cholesky(prec_chol, covariance_type):
    """Precision matrices (or inverse variances) from their factors."""
    if covariance_type == "full":
        return prec_chol @ np.swapaxes(prec_chol, 1, 2)
    if covariance_type == "tied":
        return prec_chol @ prec_chol.T
    return prec_chol**2


def covariances_from_cholesky(prec_chol, covariance_type):
    """Covariances (or variances) from precision factors."""
    if covariance_type in ("full", "tied"):
        return np.linalg.inv(precisions_from_cholesky(prec_chol, covariance_type))
    return 1.0 / prec_chol**2


def log_det_cholesky(prec_chol, covariance_type, n_features):
    """log det of each component's precision factor, shape (K,) or scalar."""
    if covariance_type == "full":
        return np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(axis=1)
    if covariance_type == "tied":
        return np.log(np.diag(prec_chol)).sum()
    if covariance_type == "diag":
        return np.log(prec_chol).sum(axis=1)
    return n_features * np.log(prec_chol)


def kernel_precisions(prec_chol, covariance_type, n_components, n_features):
    """The 3-D ``prec`` array the kernels take (see ``_kernels``)."""
    K, d = n_components, n_features
    if covariance_type == "full":
        prec = prec_chol
    elif covariance_type == "tied":
        prec = np.broadcast_to(prec_chol, (K, d, d))
    elif covariance_type == "diag":
        prec = prec_chol[:, None, :]
    else:
        prec = np.broadcast_to(prec_chol[:, None, None], (K, 1, d))
    return np.ascontiguousarray(prec, dtype=np.float64)


def n_parameters(covariance_type, n_components, n_features):
    """Number of free parameters of the mixture (for BIC/AIC)."""
    K, d = n_components, n_features
    cov_params = {
        "full": K * d * (d + 1) / 2.0,
        "tied": d * (d + 1) / 2.0,
        "diag": K * d,
        "spherical": K,
    }[covariance_type]
    return int(cov_params + K * d + K - 1)


def average_covariance(covariances, covariance_type):
    """A single covariance of this type's shape for one component, used to
    give a re-seeded component a sensible spread (mean of the others)."""
    if covariance_type == "tied":
        return covariances
    return np.mean(covariances, axis=0)
