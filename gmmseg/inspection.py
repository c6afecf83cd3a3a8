"""Defect inspection: learn what good looks like, flag what is not.

An :class:`Inspector` fits a mixture (a :class:`gmmseg.Segmenter`) to the
pixels of defect-free reference images, picks K by the K criterion unless told, and
calibrates a threshold on the anomaly score (the negative log-likelihood,
smoothed spatially) so that a chosen fraction of good pixels, the expected
false-alarm rate, is flagged. With more than one reference image the
threshold is calibrated on references held out of the fit (leave-one-out),
so it is not optimistic. New images are scored, thresholded and split into
connected defect regions with an area, bounding box, centroid and scores;
an image fails when any region is found.
"""

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .engine import ConvergenceWarning, NotFittedError
from .io import load_image
from .params import INSPECTOR_MODEL_DEFAULTS, InspectionParams, SegmenterParams, split_settings
from .persistence import InspectorState, ModelFileError, read_inspector_state, save_state
from .segment import ImageLike, Segmenter, select_k

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
    from scipy import ndimage  # scipy.ndimage costs start-up time; imported when first needed

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
        Mixture components; None picks K over ``k_range`` by ``k_criterion``.
    params : SegmenterParams, optional
        The segmenter settings (default: :data:`gmmseg.params.INSPECTOR_MODEL_DEFAULTS`,
        the segmentation defaults with ``max_iter=200, tol=1e-4`` and colour
        only: ``smoothing=0, spatial_weight=0``). A ``SegmenterParams()``
        given here replaces them whole, with the segmentation defaults'
        spatial prior and positions (which several references cannot use);
        keyword arguments change single settings of the inspection defaults.
    inspection : InspectionParams, optional
        The inspection settings; keyword arguments change some of them.
    segmenter_options : dict, optional
        Further segmenter settings (kept for older code; the same as passing
        them as keyword arguments).
    **settings
        Any setting of :class:`gmmseg.params.SegmenterParams` (e.g.
        ``covariance_type``, ``color_space``, ``random_state``, ``max_iter``,
        ``smoothing`` for the label maps of ``gmmseg apply``) or of
        :class:`gmmseg.params.InspectionParams`: ``k_range`` (default 1-8),
        ``false_alarm_rate`` (expected fraction of good pixels above the
        threshold, default 1e-4), ``smoothing_sigma`` (Gaussian smoothing of
        the score map in pixels before thresholding, default 1.5: defects are
        areas, single noisy pixels are not), ``min_area`` (smaller connected
        regions are ignored, default 25).
    """

    def __init__(
        self,
        n_components: int | None = None,
        *,
        params: SegmenterParams | None = None,
        inspection: InspectionParams | None = None,
        segmenter_options: dict[str, Any] | None = None,
        **settings: Any,
    ):
        for name, value, kind in (("params", params, SegmenterParams), ("inspection", inspection, InspectionParams)):
            if value is not None and not isinstance(value, kind):
                raise ValueError(f"{name} must be a {kind.__name__}, got {type(value).__name__}.")
        object.__setattr__(self, "params", INSPECTOR_MODEL_DEFAULTS if params is None else params)
        object.__setattr__(self, "inspection", InspectionParams() if inspection is None else inspection)
        if n_components is not None:  # a given K is fitted as is (not chosen)
            settings["n_components"] = n_components
        self.set_params(**{**(segmenter_options or {}), **settings})

    # Settings are readable as attributes, as for Segmenter.
    def __getattr__(self, name: str) -> Any:
        if name in ("params", "inspection"):  # not set yet (e.g. while copying)
            raise AttributeError(name)
        if name == "n_components":
            return None if self.inspection.auto_k else self.params.n_components
        if name in SegmenterParams.names():
            return getattr(self.params, name)
        if name in InspectionParams.names():
            return getattr(self.inspection, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        # Settings written as attributes go through the settings objects
        # (checked, and seen by fit, inspect and save).
        if name == "n_components":
            self.set_params(n_components=value)
        elif name in SegmenterParams.names() or name in InspectionParams.names():
            self.set_params(**{name: value})
        else:
            object.__setattr__(self, name, value)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Every setting as a dict: the segmenter settings (``n_components``
        None when K is chosen) and the inspection settings."""
        data = self.params.to_dict()
        data["n_components"] = self.n_components
        data.update(self.inspection.to_dict())
        return data

    def set_params(self, **settings: Any) -> "Inspector":
        """Change settings (checked); returns self. Takes effect at the next fit,
        except ``min_area`` (next inspection) and ``false_alarm_rate`` (see
        :meth:`set_false_alarm_rate` to re-threshold a fitted model)."""
        settings = dict(settings)
        if "n_components" in settings and settings["n_components"] is None:  # None: K chosen
            del settings["n_components"]
            settings["auto_k"] = True
        elif "n_components" in settings:
            settings.setdefault("auto_k", False)
        model_settings, inspection_settings = split_settings(settings, SegmenterParams, InspectionParams)
        object.__setattr__(self, "params", self.params.replace(**model_settings))
        object.__setattr__(self, "inspection", self.inspection.replace(**inspection_settings))
        return self

    def fit(self, references: ImageLike | list[ImageLike]) -> "Inspector":
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
            k = self.params.n_components
            if self.inspection.auto_k:
                # At the edge of k_range is kept in k_selection_.at_edge (the CLI says it), not warned.
                warnings.simplefilter("ignore", UserWarning)
                selection = select_k(images if len(images) > 1 else images[0], k_range=self.inspection.k_range,
                                     params=self.params)
                k = selection.best_k
                self.k_selection_ = selection
            model = self.params.replace(n_components=k)
            if len(images) > 1:
                scores = []
                for i, held_out in enumerate(images):
                    others = images[:i] + images[i + 1 :]
                    self.segmenter_ = Segmenter(params=model).fit(others if len(others) > 1 else others[0])
                    scores.append(self._scores(held_out)[held_out.mask])
                scores = np.concatenate(scores)
                self.segmenter_ = Segmenter(params=model).fit(images)
            else:
                self.segmenter_ = Segmenter(params=model).fit(images[0])
                scores = self._scores(images[0])[images[0].mask]
        self.threshold_ = float(np.quantile(scores, 1.0 - self.inspection.false_alarm_rate))
        self.calibration_scores_ = np.sort(scores)  # for thresholds at other rates
        self.calibration_curve_ = (CURVE_RATES, np.quantile(self.calibration_scores_, 1.0 - CURVE_RATES))
        self.n_references_ = len(images)
        self.held_out_ = len(images) > 1
        return self

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "segmenter_")

    def _check_fitted(self):
        if not self.is_fitted:
            raise NotFittedError("This Inspector is not fitted; call fit(references) or load a model.")

    def _scores(self, image):
        seg = self.segmenter_.predict(image)
        return smooth_scores(-seg.log_likelihood.astype(np.float32), seg.mask, self.inspection.smoothing_sigma)

    def score_map(self, image: ImageLike) -> np.ndarray:
        """Anomaly score of every pixel: smoothed negative log-likelihood."""
        self._check_fitted()
        return self._scores(load_image(image))

    def inspect(self, image: ImageLike, threshold: float | None = None) -> InspectionResult:
        """Score an image, threshold it and find its defect regions.

        ``threshold`` overrides the calibrated one (e.g. from
        :meth:`threshold_for`).
        """
        self._check_fitted()
        return self.find_regions(self._scores(load_image(image)), threshold)

    def find_regions(self, score: np.ndarray, threshold: float | None = None) -> InspectionResult:
        """Threshold a score map (from :meth:`score_map`) into defect regions.

        Cheap compared with scoring: re-thresholding a shown image (e.g. for
        another false-alarm rate) reuses its score map.
        """
        from scipy import ndimage  # scipy.ndimage costs start-up time; imported when first needed

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
                if areas[i] < self.inspection.min_area:
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

    def threshold_for(self, false_alarm_rate: float, references: list[ImageLike] | None = None) -> float:
        """A threshold for another false-alarm rate: from the calibration
        scores of this fit (or the calibration curve saved with the model),
        or from the given reference images."""
        self._check_fitted()
        rate = InspectionParams.setting("false_alarm_rate").check(false_alarm_rate)
        if references is None:
            if not hasattr(self, "calibration_scores_"):
                rates, thresholds = self.calibration_curve_
                # thresholds fall as the rate rises: interpolate in log(rate)
                return float(np.interp(np.log(rate), np.log(rates), thresholds))
            scores = self.calibration_scores_
        else:
            images = [load_image(r) for r in references]
            scores = np.concatenate([self._scores(im)[im.mask] for im in images])
        return float(np.quantile(scores, 1.0 - rate))

    def set_false_alarm_rate(self, false_alarm_rate: float) -> float:
        """Re-threshold a fitted model for another false-alarm rate (from its
        calibration); returns the new threshold."""
        threshold = self.threshold_for(false_alarm_rate)
        self.set_params(false_alarm_rate=false_alarm_rate)
        self.threshold_ = threshold
        return threshold

    # ------------------------------------------------------------------
    # state and model files
    def to_state(self) -> InspectorState:
        """The fitted model as plain data (what a model file holds)."""
        self._check_fitted()
        rates, thresholds = self.calibration_curve_
        return InspectorState(
            self.segmenter_.to_state(), self.params, self.inspection, float(self.threshold_),
            np.asarray(rates, dtype=np.float64), np.asarray(thresholds, dtype=np.float64),
            n_references=int(self.n_references_), held_out=bool(self.held_out_),
        )

    @classmethod
    def from_state(cls, state: InspectorState) -> "Inspector":
        """A fitted Inspector from :meth:`to_state`'s data."""
        inspector = cls(params=state.model_params, inspection=state.inspection)
        inspector.segmenter_ = Segmenter.from_state(state.segmenter)
        inspector.threshold_ = float(state.threshold)
        inspector.calibration_curve_ = (np.asarray(state.calibration_rates), np.asarray(state.calibration_thresholds))
        inspector.n_references_ = int(state.n_references)
        inspector.held_out_ = bool(state.held_out)
        return inspector

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the model (mixture, settings, threshold, calibration) as JSON;
        the file is also a Segmenter model (for ``gmmseg apply``)."""
        return save_state(self.to_state(), path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Inspector":
        """Read an inspection model; rejects files without a calibration."""
        state = read_inspector_state(path)
        try:
            return cls.from_state(state)
        except ValueError as exc:
            raise ModelFileError(f"{path}: invalid model: {exc}") from None
