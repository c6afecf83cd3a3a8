"""Input and parameter checks. Error messages say what to change."""

import numbers

import numpy as np

from ._exceptions import NonNumericDataError


def check_random_state(seed):
    """Turn ``None``, an int or a RandomState into a ``np.random.RandomState``.

    ``None`` gives NumPy's global RandomState, as in scikit-learn, so results
    match scikit-learn's for the same seed where the algorithm is the same.
    """
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        if not 0 <= int(seed) < 2**32:
            raise ValueError(f"random_state must be between 0 and 2**32 - 1, got {seed}.")
        return np.random.RandomState(int(seed))
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(
        f"random_state must be None, an int or a numpy RandomState, got {seed!r}."
    )


def check_int(value, name, minimum):
    """An integer >= minimum (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}.")
    return int(value)


def check_real(value, name, minimum):
    """A finite real number >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number >= {minimum}, got {value!r}.")
    value = float(value)
    if not np.isfinite(value) or value < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum}, got {value}.")
    return value


def check_choice(value, name, choices):
    """One of a fixed set of strings."""
    if not isinstance(value, str) or value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")
    return value


def check_array(X, name="X", n_features=None, owner="the model"):
    """A finite 2-D float32/float64 C-contiguous array (other numbers -> float64).

    The caller's array is never modified; it is copied only when its dtype or
    memory layout must change. ``owner`` names the fitted model in the
    message about a wrong number of features. The messages contain the
    phrases scikit-learn's estimator checks look for ("Complex data not
    supported", "0 feature(s) ... while a minimum of 1 is required",
    "is expecting N features as input"), so tools written for
    scikit-learn recognise them.
    """
    if _is_sparse(X):
        raise ValueError(
            f"{name} is a sparse matrix; sparse input is not supported: a Gaussian mixture uses every entry, "
            f"so convert it to a dense array first ({name}.toarray())."
        )
    try:
        arr = np.asarray(X)
    except (TypeError, ValueError) as exc:  # e.g. ragged nested lists
        raise NonNumericDataError(f"{name} must be a numeric array: {exc}") from None
    # Checked on the array, not on X: array-likes that only convert through
    # __array__ must not meet other NumPy functions.
    if arr.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} holds complex numbers; give real ones (e.g. {name}.real or abs({name})).")
    if arr.dtype not in (np.float32, np.float64):
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:  # strings, dicts, None in an object array
            raise NonNumericDataError(f"{name} must be a numeric array: {exc}") from None
    if arr.ndim != 2:
        hint = ""
        if arr.ndim == 1:
            hint = (
                " Reshape your data either using X.reshape(-1, 1) if it has a "
                "single feature or X.reshape(1, -1) if it contains a single sample."
            )
        raise ValueError(f"Expected a 2-D array for {name}, got {arr.ndim}-D with shape {arr.shape}.{hint}")
    n, d = arr.shape
    if n == 0 or d == 0:
        what = "sample" if n == 0 else "feature"
        raise ValueError(
            f"{name} is empty: 0 {what}(s) (shape={arr.shape}) while a minimum of 1 is required."
        )
    if n_features is not None and d != n_features:
        raise ValueError(
            f"{name} has {d} features, but {owner} is expecting {n_features} features as input "
            "(the number it was fitted with)."
        )
    if not np.isfinite(arr).all():
        bad = int(np.count_nonzero(~np.isfinite(arr).all(axis=1)))
        raise ValueError(
            f"{name} contains NaN or infinity in {bad} of {n} rows; remove or "
            "impute those rows before fitting."
        )
    return np.ascontiguousarray(arr)


def _is_sparse(X):
    """True for a SciPy (or pydata) sparse matrix or array, told by its
    attributes: the engine does not import SciPy."""
    return hasattr(X, "nnz") and (hasattr(X, "toarray") or hasattr(X, "todense"))


def check_sample_weight(sample_weight, n_samples):
    """None -> empty array (unit weights); otherwise a valid float64 vector."""
    if sample_weight is None:
        return np.empty(0, dtype=np.float64)
    try:
        w = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("sample_weight must be a 1-D array of numbers.") from None
    if w.ndim != 1 or w.shape[0] != n_samples:
        raise ValueError(
            f"sample_weight must have shape ({n_samples},) to match X, got {w.shape}."
        )
    if not np.isfinite(w).all():
        raise ValueError("sample_weight contains NaN or infinity.")
    if (w < 0).any():
        raise ValueError("sample_weight must be non-negative (e.g. counts of repeated rows).")
    if not w.sum() > 0:
        raise ValueError("sample_weight sums to zero; at least one sample needs a positive weight.")
    return np.ascontiguousarray(w)
