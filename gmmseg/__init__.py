"""gmmseg: image segmentation with Gaussian Mixture Models.

The engine (:class:`GaussianMixture`) is a scikit-learn compatible Gaussian
mixture fitted by Numba EM kernels.
"""

__version__ = "0.1.0"

from .engine import ConvergenceWarning, EMProgress, GaussianMixture, NotFittedError

__all__ = [
    "ConvergenceWarning",
    "EMProgress",
    "GaussianMixture",
    "NotFittedError",
    "__version__",
]
