"""gmmseg: image segmentation with Gaussian Mixture Models.

The engine (:class:`GaussianMixture`) is a scikit-learn compatible Gaussian
mixture fitted by Numba EM kernels; :class:`Segmenter` turns images into
segmentations with it, and :class:`Inspector` flags what does not look like
defect-free reference images. Every setting of both is declared once, in
:mod:`gmmseg.params`.
"""

from ._version import __version__
from .engine import ConvergenceWarning, EMProgress, GaussianMixture, NotFittedError
from .inspection import InspectionResult, Inspector, Region
from .io import ImageData, ImageLoadError, ImageTooLargeError, load_image
from .params import InspectionParams, SegmenterParams
from .persistence import ModelFileError
from .segment import KSelection, Segmentation, Segmenter, select_k

__all__ = [
    "ConvergenceWarning",
    "EMProgress",
    "GaussianMixture",
    "ImageData",
    "ImageLoadError",
    "ImageTooLargeError",
    "InspectionParams",
    "InspectionResult",
    "Inspector",
    "KSelection",
    "ModelFileError",
    "NotFittedError",
    "Region",
    "SegmenterParams",
    "Segmentation",
    "Segmenter",
    "__version__",
    "load_image",
    "select_k",
]
