"""Exceptions and warnings raised by the engine."""

import functools
import sys


class NotFittedError(ValueError, AttributeError):
    """A method that needs a fitted model was called before ``fit``.

    Subclasses both ValueError and AttributeError, like scikit-learn's, so
    code written for either keeps working. When scikit-learn is loaded, the
    error raised is also a ``sklearn.exceptions.NotFittedError`` (see
    :func:`not_fitted_error`).
    """


class NonNumericDataError(ValueError, TypeError):
    """Input data hold values that are not numbers (e.g. strings or dicts in
    an object array).

    A ValueError, as every bad argument of gmmseg's public API, and a
    TypeError, as NumPy and scikit-learn raise for such data, so code
    written for either catches it.
    """


class ConvergenceWarning(UserWarning):
    """EM stopped at ``max_iter`` before the lower bound changed by less than ``tol``."""


def not_fitted_error(message: str) -> NotFittedError:
    """The :class:`NotFittedError` to raise, with ``message``.

    When scikit-learn has been imported (and only then: the engine never
    imports it), the error is an instance of a subclass of both gmmseg's and
    scikit-learn's ``NotFittedError``, so ``except NotFittedError`` works
    with either name, as in scikit-learn's own estimator checks.
    """
    sklearn_exceptions = sys.modules.get("sklearn.exceptions")
    if sklearn_exceptions is None:
        return NotFittedError(message)
    return _with_sklearn_base(sklearn_exceptions.NotFittedError)(message)


@functools.cache
def _with_sklearn_base(sklearn_class: type) -> type:
    """gmmseg's NotFittedError with scikit-learn's as a second base (one
    class per scikit-learn class, so ``type(e)`` is stable within a run)."""
    return type(
        "NotFittedError",
        (NotFittedError, sklearn_class),
        {
            "__module__": __name__,
            "__doc__": NotFittedError.__doc__,
            # The class is made at run time and is not a module attribute, so
            # pickling (e.g. joblib returning a worker's error) rebuilds the
            # error through not_fitted_error instead of by class name.
            "__reduce__": lambda self: (not_fitted_error, (str(self),)),
        },
    )
