"""gmmseg: image segmentation with Gaussian Mixture Models.

The engine (:class:`GaussianMixture`) is a scikit-learn compatible Gaussian
mixture fitted by Numba EM kernels; :class:`Segmenter` turns images into
segmentations with it.
"""

__version__ = "0.1.0"

from .engine import ConvergenceWarning, EMProgress, GaussianMixture, NotFittedError
from .io import ImageData, ImageLoadError, load_image
from .modelfile import ModelFileError
from .segment import KSelection, Segmentation, Segmenter, select_k

__all__ = [
    "ConvergenceWarning",
    "EMProgress",
    "GaussianMixture",
    "ImageData",
    "ImageLoadError",
    "KSelection",
    "ModelFileError",
    "NotFittedError",
    "Segmentation",
    "Segmenter",
    "__version__",
    "load_image",
    "select_k",
]
