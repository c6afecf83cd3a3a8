"""Defect inspection: learn what good looks like, flag what is not.

An :class:`Inspector` fits a mixture (a :class:`gmmseg.Segmenter`) to the
pixels of defect-free reference images, picks K by BIC unless told, and
calibrates a threshold on the anomaly score (the negative log-likelihood,
smoothed spatially) so that a chosen fraction of good pixels, the expected
false-alarm rate, is flagged. With more than one reference image the
threshold is calibrated on references held out of the fit (leave-one-out),
so it is not optimistic. New images are scored, thresholded and split into
connected defect regions with an area, bounding box, centroid and scores;
an image fails when any region is found.
"""

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from .engine import ConvergenceWarning
from .io import load_image
from .segment import Segmenter, select_k

DEFAULT_FALSE_ALARM_RATE = 1e-4
DEFAULT_K_RANGE = range(1, 9)
# False-alarm rates at which a saved model keeps its calibrated thresholds, so
# a loaded model can still be re-thresholded for another rate.
CURVE_RATES = np.logspace(-6, -1, 51)


@dataclass
class Region:
    """One connected defect region (pixel coordinates, x to the right)."""

    label: int
    area: int
    bbox: tuple  # (x, y, width, height)
    centroid: tuple  # (x, y)
    mean_score: float
    max_score: float

    def as_dict(self):
        x, y, w, h = self.bbox
        return {
            "region": self.label, "area": self.area, "x": x, "y": y, "width": w, "height": h,
            "centroid_x": round(self.centroid[0], 2), "centroid_y": round(self.centroid[1], 2),
            "mean_score": round(self.mean_score, 4), "max_score": round(self.max_score, 4),
        }


@dataclass
class InspectionResult:
    """The inspection of one image.

    Attributes
    ----------
    score : ndarray (H, W), float32
        Anomaly score (smoothed negative log-likelihood); NaN where masked.
    mask : ndarray (H, W), bool
        Pixels above the threshold that belong to a kept region.
    regions : list of Region
        Connected regions of at least ``min_area`` pixels, largest first.
    threshold : float
    passed : bool
        True when no region was found.
    image_score : float
        The highest score in the image, in units of the threshold margin:
        ``max(score) - threshold`` (positive means above the threshold).
    """

    score: np.ndarray
    mask: np.ndarray
    regions: list = field(default_factory=list)
    threshold: float = math.inf
    passed: bool = True
    image_score: float = -math.inf

    @property
    def verdict(self):
        return "pass" if self.passed else "fail"

    @property
    def defect_area(self):
        return int(sum(r.area for r in self.regions))

    def report_row(self):
        """This image's row of an inspection report (see export.REPORT_FIELDS)."""
        used = max(int(np.isfinite(self.score).sum()), 1)
        return {
            "verdict": self.verdict,
            "score": round(self.image_score, 4) if math.isfinite(self.image_score) else "",
            "threshold": round(self.threshold, 4),
            "regions": len(self.regions),
            "defect_area": self.defect_area,
            "defect_fraction": round(self.defect_area / used, 6),
        }


def smooth_scores(score, mask, sigma):
    """Gaussian smoothing that ignores masked pixels (normalised convolution)."""
    if sigma <= 0:
        return np.where(mask, score, np.nan).astype(np.float32)
    from scipy import ndimage

    weights = mask.astype(np.float32)
    values = np.where(mask, score, 0.0).astype(np.float32)
    num = ndimage.gaussian_filter(values, sigma, mode="nearest")
    den = ndimage.gaussian_filter(weights, sigma, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[~mask] = np.nan
    return out.astype(np.float32)


class Inspector:
    """A model of defect-free images and a calibrated anomaly threshold.

    Parameters
    ----------
    n_components : int or None, default=None
        Mixture components; None picks K by BIC over ``k_range``.
    k_range : iterable of int, default=range(1, 9)
    covariance_type, color_space, random_state, max_iter, tol, n_init
        As for :class:`gmmseg.Segmenter`.
    false_alarm_rate : float, default=0.0001
        Expected fraction of good pixels above the threshold.
    smoothing_sigma : float, default=1.5
        Gaussian smoothing (pixels) of the score map before thresholding:
        defects are areas, single noisy pixels are not.
    min_area : int, default=25
        Smaller connected regions are ignored.
    segmenter_options : dict, optional
        Further :class:`gmmseg.Segmenter` settings (e.g. ``smoothing`` for
        the label maps of ``gmmseg apply``).
    """

    def __init__(
        self,
        n_components=None,
        *,
        k_range=DEFAULT_K_RANGE,
        covariance_type="full",
        color_space="lab",
        false_alarm_rate=DEFAULT_FALSE_ALARM_RATE,
        smoothing_sigma=1.5,
        min_area=25,
        random_state=0,
        max_iter=200,
        tol=1e-4,
        n_init=1,
        segmenter_options=None,
    ):
        if not (isinstance(false_alarm_rate, (int, float)) and 0.0 < false_alarm_rate < 0.5):
            raise ValueError(f"false_alarm_rate must be in (0, 0.5), e.g. 0.001; got {false_alarm_rate!r}.")
        if not (isinstance(smoothing_sigma, (int, float)) and math.isfinite(smoothing_sigma) and smoothing_sigma >= 0):
            raise ValueError(f"smoothing_sigma must be a number >= 0, got {smoothing_sigma!r}.")
        if isinstance(min_area, bool) or not isinstance(min_area, (int, np.integer)) or min_area < 1:
            raise ValueError(f"min_area must be a positive integer, got {min_area!r}.")
        self.n_components = n_components
        self.k_range = list(k_range)
        self.covariance_type = covariance_type
        self.color_space = color_space
        self.false_alarm_rate = float(false_alarm_rate)
        self.smoothing_sigma = float(smoothing_sigma)
        self.min_area = int(min_area)
        self.random_state = random_state
        self.max_iter = max_iter
        self.tol = tol
        self.n_init = n_init
        self.segmenter_options = dict(segmenter_options or {})

    def get_params(self):
        return {
            "false_alarm_rate": self.false_alarm_rate,
            "smoothing_sigma": self.smoothing_sigma,
            "min_area": self.min_area,
        }

    def fit(self, references):
        """Fit on defect-free references (paths, ImageData or arrays).

        With two or more references the threshold is calibrated by
        leave-one-out: each reference is scored by a model fitted on the
        others, and the final model is fitted on all of them (so it has seen
        every reference's variation and the threshold is not optimistic).
        With one reference the threshold comes from the pixels the model was
        fitted on.
        """
        images = [load_image(r) for r in (references if isinstance(references, (list, tuple)) else [references])]
        if not images:
            raise ValueError("Give at least one defect-free reference image.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            k = self.n_components
            if k is None:
                selection = select_k(
                    _pool(images) if len(images) > 1 else images[0], k_range=self.k_range,
                    covariance_type=self.covariance_type, color_space=self.color_space,
                    random_state=self.random_state, max_iter=self.max_iter, tol=self.tol, n_init=self.n_init,
                )
                k = selection.best_k
                self.k_selection_ = selection
            if len(images) > 1:
                scores = []
                for i, held_out in enumerate(images):
                    others = images[:i] + images[i + 1 :]
                    self.segmenter_ = self._new_segmenter(k).fit(others if len(others) > 1 else others[0])
                    scores.append(self._scores(held_out)[held_out.mask])
                scores = np.concatenate(scores)
                self.segmenter_ = self._new_segmenter(k).fit(images)
            else:
                self.segmenter_ = self._new_segmenter(k).fit(images[0])
                scores = self._scores(images[0])[images[0].mask]
        self.threshold_ = float(np.quantile(scores, 1.0 - self.false_alarm_rate))
        self.calibration_scores_ = np.sort(scores)  # for thresholds at other rates
        self.calibration_curve_ = (CURVE_RATES, np.quantile(self.calibration_scores_, 1.0 - CURVE_RATES))
        self.n_references_ = len(images)
        self.held_out_ = len(images) > 1
        return self

    def _new_segmenter(self, k):
        return Segmenter(
            k, covariance_type=self.covariance_type, color_space=self.color_space,
            random_state=self.random_state, max_iter=self.max_iter, tol=self.tol, n_init=self.n_init,
            **self.segmenter_options,
        )

    def _check_fitted(self):
        if not hasattr(self, "segmenter_"):
            from .engine import NotFittedError

            raise NotFittedError("This Inspector is not fitted; call fit(references) or load a model.")

    def _scores(self, image):
        seg = self.segmenter_.predict(image)
        return smooth_scores(-seg.log_likelihood.astype(np.float32), seg.mask, self.smoothing_sigma)

    def score_map(self, image):
        """Anomaly score of every pixel: smoothed negative log-likelihood."""
        self._check_fitted()
        return self._scores(load_image(image))

    def inspect(self, image, threshold=None):
        """Score an image, threshold it and find its defect regions.

        ``threshold`` overrides the calibrated one (e.g. from
        :meth:`threshold_for`).
        """
        self._check_fitted()
        return self.find_regions(self._scores(load_image(image)), threshold)

    def find_regions(self, score, threshold=None):
        """Threshold a score map (from :meth:`score_map`) into defect regions.

        Cheap compared with scoring: re-thresholding a shown image (e.g. for
        another false-alarm rate) reuses its score map.
        """
        from scipy import ndimage

        self._check_fitted()
        thr = self.threshold_ if threshold is None else float(threshold)
        with np.errstate(invalid="ignore"):
            above = score > thr
        labels, n = ndimage.label(above, structure=np.ones((3, 3), dtype=bool))
        regions = []
        keep = np.zeros(n + 1, dtype=bool)
        if n:
            index = np.arange(1, n + 1)
            areas = ndimage.sum_labels(np.ones_like(score), labels, index)
            means = ndimage.mean(score, labels, index)
            maxima = ndimage.maximum(score, labels, index)
            centres = ndimage.center_of_mass(above, labels, index)
            boxes = ndimage.find_objects(labels)
            for i in range(n):
                if areas[i] < self.min_area:
                    continue
                keep[i + 1] = True
                ys, xs = boxes[i]
                regions.append(Region(
                    label=0, area=int(areas[i]),
                    bbox=(int(xs.start), int(ys.start), int(xs.stop - xs.start), int(ys.stop - ys.start)),
                    centroid=(float(centres[i][1]), float(centres[i][0])),
                    mean_score=float(means[i]), max_score=float(maxima[i]),
                ))
        regions.sort(key=lambda r: -r.area)
        for number, region in enumerate(regions, start=1):
            region.label = number
        finite = score[np.isfinite(score)]
        top = float(finite.max()) if finite.size else -math.inf
        return InspectionResult(
            score=score, mask=keep[labels], regions=regions, threshold=thr,
            passed=not regions, image_score=top - thr,
        )

    def threshold_for(self, false_alarm_rate, references=None):
        """A threshold for another false-alarm rate: from the calibration
        scores of this fit (or the calibration curve saved with the model),
        or from the given reference images."""
        self._check_fitted()
        if references is None:
            if not hasattr(self, "calibration_scores_"):
                rates, thresholds = self.calibration_curve_
                # thresholds fall as the rate rises: interpolate in log(rate)
                return float(np.interp(np.log(false_alarm_rate), np.log(rates), thresholds))
            scores = self.calibration_scores_
        else:
            images = [load_image(r) for r in references]
            scores = np.concatenate([self._scores(im)[im.mask] for im in images])
        return float(np.quantile(scores, 1.0 - false_alarm_rate))

    # ------------------------------------------------------------------
    def save(self, path, *, overwrite=False):
        """Write the model (mixture, features, threshold) as JSON; the file is
        also a Segmenter model for ``gmmseg apply``."""
        from .modelfile import segmenter_to_dict, write_json

        self._check_fitted()
        data = segmenter_to_dict(self.segmenter_)
        data["inspection"] = {
            "threshold": self.threshold_,
            "false_alarm_rate": self.false_alarm_rate,
            "smoothing_sigma": self.smoothing_sigma,
            "min_area": self.min_area,
            "n_references": self.n_references_,
            "held_out": self.held_out_,
            "calibration_curve": {
                "false_alarm_rates": [float(r) for r in self.calibration_curve_[0]],
                "thresholds": [float(t) for t in self.calibration_curve_[1]],
            },
        }
        return write_json(path, data, overwrite=overwrite)

    @classmethod
    def load(cls, path):
        """Read an inspection model; rejects files without a calibration."""
        from .modelfile import ModelFileError, load_segmenter, read_model_dict

        data = read_model_dict(path)
        section = data.get("inspection")
        if not isinstance(section, dict):
            raise ModelFileError(f"{path}: not an inspection model (no threshold); fit one with 'gmmseg fit REF... --save-model'")
        segmenter = load_segmenter(path)
        try:
            inspector = cls(
                segmenter.n_components, covariance_type=segmenter.covariance_type,
                color_space=segmenter.color_space, false_alarm_rate=float(section["false_alarm_rate"]),
                smoothing_sigma=float(section["smoothing_sigma"]), min_area=int(section["min_area"]),
            )
            threshold = float(section["threshold"])
            if not math.isfinite(threshold):
                raise ValueError("threshold is not finite")
            curve = section["calibration_curve"]
            rates = np.array(curve["false_alarm_rates"], dtype=np.float64)
            thresholds = np.array(curve["thresholds"], dtype=np.float64)
            if (rates.ndim != 1 or rates.shape != thresholds.shape or rates.size < 2
                    or not np.all(np.isfinite(thresholds)) or not np.all(np.diff(rates) > 0) or rates[0] <= 0):
                raise ValueError("calibration_curve must hold matching, increasing rates and finite thresholds")
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: invalid inspection section ({exc})") from None
        inspector.segmenter_ = segmenter
        inspector.threshold_ = threshold
        inspector.calibration_curve_ = (rates, thresholds)
        inspector.n_references_ = int(section.get("n_references", 1))
        inspector.held_out_ = bool(section.get("held_out", False))
        return inspector


def _pool(images):
    from .segment import _pooled_image

    colors = np.concatenate([im.rgb()[im.mask] if not all(i.is_gray for i in images) else im.pixels[im.mask] for im in images])
    return _pooled_image(images, colors)
