"""Exceptions and warnings raised by the engine."""


class NotFittedError(ValueError, AttributeError):
    """A method that needs a fitted model was called before ``fit``.

    Subclasses both ValueError and AttributeError, like scikit-learn's, so
    code written for either keeps working.
    """


class ConvergenceWarning(UserWarning):
    """EM stopped at ``max_iter`` before the lower bound changed by less than ``tol``."""
