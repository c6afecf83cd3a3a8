"""Defect inspection: learn what good looks like, flag what is not.

An :class:`Inspector` fits a mixture (a :class:`gmmseg.Segmenter`) to the
pixels of defect-free reference images (K chosen by the K criterion unless
given) and calibrates, on references held out of the fit, what a good image
looks like to it:

* The **anomaly score** of a pixel is its negative log-likelihood (NLL)
  under the mixture. Smoothed spatially it is the *detection* score;
  unsmoothed it outlines defects.
* The **calibrated score** (``InspectionResult.score``) is the smoothed NLL
  on a scale of its own: ``-log10`` of the fraction of held-out good pixels
  whose smoothed NLL is at least as high (3 = as rare as one good pixel in a
  thousand; above the rarest good pixels seen the scale goes on in a straight
  line, fitted on its top two decades). It is never negative.
* The **image score** is the ``min_area``-th highest calibrated score of the
  image: at least ``min_area`` pixels are that unusual. The **image
  threshold** is calibrated on the image scores of held-out references so
  that a fraction ``false_reject_rate`` of good images scores above it. An
  image fails when its score is above the image threshold; score and
  threshold are in the same units.
* The **pixel threshold** is on the unsmoothed NLL: a fraction
  ``false_alarm_rate`` of held-out good pixels is above it.

Detection, then masks (hysteresis): *seeds* are the pixels whose calibrated
score is above the image threshold. A defect region is a connected set of
seeds and pixels above the pixel threshold that holds at least ``min_area``
seeds. Its mask keeps the pixels that are unusual on their own: above the
pixel threshold, or seeds whose unsmoothed NLL is above the image
threshold's NLL as well. Smoothing spreads a thin scratch over a few pixels
on either side; these halo pixels are seeds but not unusual themselves, so
the mask stays as thin as the scratch. An image fails exactly when at least
one region is reported.

Calibration holds references out in at most :data:`MAX_FOLDS` folds (each
scored by a model fitted on the other folds); the model kept is then fitted
on all of them. References given as paths are loaded one at a time when they
are scored, and the calibration keeps a bounded sample of pixel scores, so
hundreds of references do not all sit in memory.
"""

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .engine import ConvergenceWarning, NotFittedError
from .features import gaussian_smooth
from .io import load_image
from .params import INSPECTOR_MODEL_DEFAULTS, InspectionParams, SegmenterParams, split_settings
from .persistence import InspectorState, ModelFileError, read_inspector_state, save_state
from .segment import ImageLike, Segmenter, select_k

# False-alarm rates at which a saved model keeps its calibrated pixel
# thresholds, so a loaded model can still be re-thresholded for another rate.
CURVE_RATES = np.logspace(-6, -1, 51)
# Calibration holds references out of the fit in at most this many folds
# (leave-one-out up to 5 references): every fold costs a fit, and 5 folds
# already score every reference with a model that has not seen it.
MAX_FOLDS = 5
# Points of the calibrated score scale: fractions of good pixels from 1 down
# to 1e-8, every tenth of a decade. A point needs SCALE_MIN_ABOVE held-out
# pixels above it (rarer fractions are not measured; the scale's straight
# line takes over there).
SCALE_RATES = 10.0 ** (-np.arange(81) / 10.0)
SCALE_MIN_ABOVE = 10
# The calibration keeps at most this many pixel scores in a uniform random
# sample, and the TOP_SIZE highest exactly (high quantiles need the tail).
SAMPLE_SIZE = 1_000_000
TOP_SIZE = 100_000
_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connected regions


@dataclass
class Region:
    """One connected defect region (pixel coordinates, x to the right).

    ``area``, ``bbox`` and ``centroid`` describe its mask pixels;
    ``mean_score`` and ``max_score`` are calibrated scores (the units of
    the image score and threshold) over them.
    """

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
        Calibrated anomaly score of every pixel (the smoothed negative
        log-likelihood on the scale described in :mod:`gmmseg.inspection`,
        >= 0); NaN where masked.
    mask : ndarray (H, W), bool
        The pixels of the defect regions.
    regions : list of Region
        Defect regions, largest first.
    image_score : float
        The ``min_area``-th highest value of ``score`` (-inf when fewer
        pixels are usable).
    image_threshold : float
        The image fails when ``image_score`` is above it (same units; the
        calibrated threshold rounded to the precision of ``score``, float32,
        in which it is compared).
    pixel_threshold : float
        The threshold on ``raw_score`` over which defect masks grow.
    passed : bool
        True when ``image_score`` is not above ``image_threshold``; then
        there is no region, and otherwise at least one.
    raw_score : ndarray (H, W), float32, optional
        The unsmoothed anomaly score (negative log-likelihood); NaN where
        masked.
    """

    score: np.ndarray
    mask: np.ndarray
    regions: list = field(default_factory=list)
    image_score: float = -math.inf
    image_threshold: float = math.inf
    pixel_threshold: float = math.inf
    passed: bool = True
    raw_score: np.ndarray | None = None

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    @property
    def defect_area(self) -> int:
        return int(sum(r.area for r in self.regions))

    def describe(self) -> str:
        """The verdict in words, e.g. ``"fail: image score 57.20 > image
        threshold 3.91"``."""
        if not math.isfinite(self.image_score):
            return f"{self.verdict}: no image score (fewer usable pixels than the minimum area)"
        sign = "<=" if self.passed else ">"
        return f"{self.verdict}: image score {self.image_score:.2f} {sign} image threshold {self.image_threshold:.2f}"

    def report_row(self) -> dict[str, Any]:
        """This image's row of an inspection report (see export.REPORT_FIELDS)."""
        used = max(int(np.isfinite(self.score).sum()), 1)
        return {
            "verdict": self.verdict,
            "image_score": round(self.image_score, 4) if math.isfinite(self.image_score) else "",
            "image_threshold": round(self.image_threshold, 4),
            "pixel_threshold": round(self.pixel_threshold, 4),
            "regions": len(self.regions),
            "defect_area": self.defect_area,
            "defect_fraction": round(self.defect_area / used, 6),
        }


def smooth_scores(score: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing that ignores masked pixels (normalised convolution:
    the Gaussian average of the used pixels near each pixel); NaN where
    masked."""
    if sigma <= 0:
        return np.where(mask, score, np.nan).astype(np.float32)
    if mask.all():
        # The border-normalised Gaussian already averages only the pixels
        # that exist: no second pass for the weights.
        return gaussian_smooth(score, sigma)
    values = np.where(mask, score, 0.0).astype(np.float32)
    num = gaussian_smooth(values, sigma)
    den = gaussian_smooth(mask.astype(np.float32), sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[~mask] = np.nan
    return out


def _strictly_increasing(values: np.ndarray) -> np.ndarray:
    """``values`` with ties (and any fall) nudged up by a negligible step, so
    the scale can be inverted (a single-colour reference scores every pixel
    alike)."""
    out = np.array(values, dtype=np.float64)
    step = 1e-6 * (1.0 + float(np.abs(out).max()))
    for i in range(1, out.size):
        if out[i] <= out[i - 1]:
            out[i] = out[i - 1] + step
    return out


@dataclass(frozen=True)
class ScoreScale:
    """The calibrated score: the smoothed negative log-likelihood (NLL)
    mapped to ``-log10`` of the fraction of good pixels at least as high.

    Attributes
    ----------
    rates : ndarray
        Fractions of good pixels, strictly decreasing, in (0, 1].
    values : ndarray
        The smoothed NLL exceeded by each fraction, strictly increasing.

    Between the points the scale is linear in the NLL; beyond the last
    point it goes on in a straight line fitted on its top two decades (an
    exponential tail, as a Gaussian's NLL has), below the first one it falls
    to 0.
    """

    rates: np.ndarray
    values: np.ndarray

    def __post_init__(self):
        rates, values = np.asarray(self.rates, dtype=np.float64), np.asarray(self.values, dtype=np.float64)
        if rates.ndim != 1 or rates.shape != values.shape or rates.size < 2:
            raise ValueError("a score scale needs at least two points (matching rates and values)")
        if not (np.all(np.isfinite(rates)) and np.all(np.isfinite(values))):
            raise ValueError("a score scale's rates and values must be finite")
        if rates[0] > 1 or rates[-1] <= 0 or np.any(np.diff(rates) >= 0):
            raise ValueError("a score scale's rates must fall strictly, within (0, 1]")
        if np.any(np.diff(values) <= 0):
            raise ValueError("a score scale's values must rise strictly")
        object.__setattr__(self, "rates", rates)
        object.__setattr__(self, "values", values)

    @classmethod
    def from_curve(cls, rates: np.ndarray, values: np.ndarray) -> "ScoreScale":
        """A scale from quantiles that may repeat (they are nudged apart)."""
        return cls(np.asarray(rates, dtype=np.float64), _strictly_increasing(values))

    @property
    def decades(self) -> np.ndarray:
        return -np.log10(self.rates)

    def _slopes(self) -> tuple[float, float]:
        """Decades per unit of NLL below the first point and beyond the last."""
        d, v = self.decades, self.values
        low = (d[1] - d[0]) / (v[1] - v[0])
        top = d >= d[-1] - 2.0
        if top.sum() < 2:
            top[-2:] = True
        dv, dd = v[top] - v[top].mean(), d[top] - d[top].mean()
        high = float(np.dot(dv, dd) / np.dot(dv, dv))  # least squares: > 0, both rise
        return float(low), high

    def __call__(self, nll: np.ndarray) -> np.ndarray:
        """The calibrated score of NLL values (NaN stays NaN)."""
        nll = np.asarray(nll)
        d, v = self.decades, self.values
        low, high = self._slopes()
        out = np.interp(nll, v, d)
        with np.errstate(invalid="ignore"):
            out = np.where(nll > v[-1], d[-1] + (nll - v[-1]) * high, out)
            out = np.where(nll < v[0], np.maximum(d[0] + (nll - v[0]) * low, 0.0), out)
        return out.astype(nll.dtype if nll.dtype.kind == "f" else np.float64)

    def nll_at(self, score: float) -> float:
        """The NLL whose calibrated score is ``score`` (the inverse)."""
        d, v = self.decades, self.values
        low, high = self._slopes()
        if score > d[-1]:
            return float(v[-1] + (score - d[-1]) / high)
        if score < d[0]:
            return float(v[0] + (score - d[0]) / low)
        return float(np.interp(score, d, v))


class _ScoreSample:
    """Scores of many pixels in bounded memory, for their upper quantiles.

    Up to ``sample_size`` scores are all kept (quantiles are then exactly
    numpy's). Beyond that, a uniform random sample of ``sample_size`` of
    them (seeded) and the ``top_size`` highest exactly: quantiles in the far
    tail (a false-alarm rate of 1e-6 over 10^8 pixels is the 100th highest)
    come from the exact top, the others from the sample.
    """

    def __init__(self, seed: int | None = 0, sample_size: int = SAMPLE_SIZE, top_size: int = TOP_SIZE):
        self.n = 0
        self.sample_size, self.top_size = sample_size, top_size
        self._rng = np.random.default_rng(seed)
        self._values = np.empty(0, np.float32)
        self._keys = np.empty(0, np.float64)
        self._top = np.empty(0, np.float32)
        self._sorted_top = None

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float32).ravel()
        values = values[np.isfinite(values)]
        self.n += values.size
        # A uniform sample without replacement: the values with the smallest
        # random keys (so the sample needs no total count in advance).
        keys = np.concatenate([self._keys, self._rng.random(values.size)])
        kept = np.concatenate([self._values, values])
        if kept.size > self.sample_size:
            pick = np.argpartition(keys, self.sample_size - 1)[: self.sample_size]
            keys, kept = keys[pick], kept[pick]
        self._keys, self._values = keys, kept
        top = np.concatenate([self._top, values])
        if top.size > self.top_size:
            top = np.partition(top, top.size - self.top_size)[top.size - self.top_size:]
        self._top, self._sorted_top = top, None

    def quantiles(self, rates: np.ndarray) -> np.ndarray:
        """The scores exceeded by fractions ``rates`` of the pixels (numpy's
        linear quantile at ``1 - rate``)."""
        rates = np.atleast_1d(np.asarray(rates, dtype=np.float64))
        if self.n == 0:
            raise ValueError("no pixel scores to calibrate on")
        if self.n <= self.sample_size:  # every score is here
            return np.quantile(self._values, 1.0 - rates).astype(np.float64)
        out = np.quantile(self._values, 1.0 - rates).astype(np.float64)
        if self._sorted_top is None:
            self._sorted_top = np.sort(self._top)[::-1].astype(np.float64)
        top = self._sorted_top
        position = rates * (self.n - 1)  # counted from the highest
        exact = position <= top.size - 1
        lo = np.floor(position[exact]).astype(np.int64)
        hi = np.minimum(lo + 1, top.size - 1)
        frac = position[exact] - lo
        out[exact] = top[lo] + frac * (top[hi] - top[lo])
        return out

    def scale(self) -> ScoreScale:
        """The :class:`ScoreScale` of these scores (points with at least
        :data:`SCALE_MIN_ABOVE` pixels above them; at least two)."""
        measured = SCALE_RATES * self.n >= SCALE_MIN_ABOVE
        measured[:2] = True
        rates = SCALE_RATES[measured]
        return ScoreScale.from_curve(rates, self.quantiles(rates))


def _order_statistic(values: np.ndarray, m: int) -> float:
    """The ``m``-th highest finite value (-inf when there are fewer)."""
    finite = values[np.isfinite(values)]
    if finite.size < m:
        return -math.inf
    return float(np.partition(finite, finite.size - m)[finite.size - m])


def image_threshold_from_scores(image_scores: np.ndarray, false_reject_rate: float) -> float:
    """The image threshold for a false-reject rate from held-out references'
    image scores.

    The larger of the empirical ``1 - rate`` quantile and a normal
    prediction bound, ``mean + t * sd * sqrt(1 + 1/n)`` (``t`` the Student
    quantile at ``1 - rate`` with ``n - 1`` degrees of freedom). With many
    references the two agree (or the empirical quantile follows a longer
    tail); with fewer than about ``1 / rate`` the empirical quantile is
    little more than the highest score seen, and the bound extrapolates from
    the spread of the scores instead. One score is its own threshold.
    """
    scores = np.sort(np.asarray(image_scores, dtype=np.float64))
    if scores.size == 0:
        raise ValueError("no image scores to calibrate on")
    threshold = float(np.quantile(scores, 1.0 - false_reject_rate))
    if scores.size >= 2:
        # The Student quantile from scipy.special: scipy.stats would cost half
        # a second of import for this one number.
        from scipy.special import stdtrit

        n = scores.size
        bound = scores.mean() + stdtrit(n - 1, 1.0 - false_reject_rate) * scores.std(ddof=1) * math.sqrt(1 + 1 / n)
        threshold = max(threshold, float(bound))
    return max(threshold, 0.0)


class Inspector:
    """A model of defect-free images with calibrated image and pixel thresholds.

    Parameters
    ----------
    n_components : int or None, default=None
        Mixture components; None picks K over ``k_range`` by ``k_criterion``.
    params : SegmenterParams, optional
        The segmenter settings (default: :data:`gmmseg.params.INSPECTOR_MODEL_DEFAULTS`,
        the segmentation defaults with ``max_iter=200, tol=1e-4``, neither
        spatial prior nor positions, ``smoothing=0, spatial_weight=0``, and
        ``feature_set="auto", row_column_sigma=32, max_samples=1_000_000``).
        A ``SegmenterParams()``
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
        ``false_reject_rate`` (expected fraction of good images that fail,
        default 0.05), ``false_alarm_rate`` (expected fraction of good pixels
        above the pixel threshold, default 1e-4), ``smoothing_sigma``
        (Gaussian smoothing of the detection score in pixels, default 1.5:
        defects are areas, single noisy pixels are not), ``min_area`` (seed
        pixels an image needs to fail, default 25), ``border_margin`` (pixels
        along the image's border left out, default 0).

    Attributes
    ----------
    segmenter_ : Segmenter
        The model of good pixels, fitted on every reference.
    image_threshold_ : float
        Calibrated score above which an image fails.
    image_scores_ : ndarray or None
        The held-out references' image scores it was calibrated on (None for
        a model file from before image thresholds).
    threshold_ : float
        The pixel threshold, on the unsmoothed negative log-likelihood.
    score_scale_ : ScoreScale
        The smoothed negative log-likelihood -> calibrated score mapping.
    k_selection_ : KSelection
        With K chosen: the sweep that chose it.
    n_references_, held_out_, n_folds_ : int, bool, int
        References fitted; whether they were scored held out of the fit, in
        how many folds.
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
        """Change settings (checked); returns self.

        They take effect at the next fit, except ``min_area`` (next
        inspection; the image threshold stays the one calibrated for the
        fit's ``min_area``: a larger one fails fewer images, a smaller one
        more) and the rates (see :meth:`set_false_reject_rate` and
        :meth:`set_false_alarm_rate` to re-threshold a fitted model).
        """
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

    # ------------------------------------------------------------------
    # fitting and calibration
    def fit(self, references: ImageLike | list[ImageLike], *, max_pixels: int | None = None) -> "Inspector":
        """Fit on defect-free references (paths, ImageData or arrays).

        With two or more references, both thresholds are calibrated on
        references held out of the fit: they are dealt into
        ``min(len(references), MAX_FOLDS)`` folds, each fold is scored by a
        model fitted on the others, and the model kept is fitted on all of
        them (it has seen every reference's variation, and the thresholds
        are not optimistic). Paths are passed through to
        :meth:`Segmenter.fit` and loaded one at a time for scoring. With one
        reference the thresholds come from the image the model was fitted
        on, which makes them optimistic (a ``UserWarning`` says so).
        ``max_pixels``: the largest reference accepted (see
        :func:`gmmseg.load_image`).
        """
        refs = list(references) if isinstance(references, (list, tuple)) else [references]
        if not refs:
            raise ValueError("Give at least one defect-free reference image.")
        seed = self.params.random_state
        pixels, smoothed, statistics = _ScoreSample(seed), _ScoreSample(seed), []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = self.params.replace(n_components=self._choose_k(refs, max_pixels))
            folds = min(len(refs), MAX_FOLDS)
            if folds > 1:
                for fold in range(folds):
                    # Dealt round-robin, so folds differ in size by one at most.
                    train = [r for i, r in enumerate(refs) if i % folds != fold]
                    segmenter = Segmenter(params=model).fit(train if len(train) > 1 else train[0], max_pixels=max_pixels)
                    for ref in refs[fold::folds]:
                        self._calibrate_on(load_image(ref, max_pixels=max_pixels), segmenter, pixels, smoothed,
                                           statistics)
                final = Segmenter(params=model).fit(refs, max_pixels=max_pixels)
            else:
                final = Segmenter(params=model).fit(refs[0], max_pixels=max_pixels)
                self._calibrate_on(load_image(refs[0], max_pixels=max_pixels), final, pixels, smoothed, statistics)
        statistics = np.asarray([s for s in statistics if math.isfinite(s)])
        if statistics.size == 0:
            margin = self.inspection.border_margin
            inside = f" inside the border margin of {margin} pixels" if margin else ""
            raise ValueError(f"Every reference has fewer than min_area={self.inspection.min_area} usable pixels"
                             f"{inside}; give a smaller min_area{' or border_margin' if margin else ''} or larger "
                             "references.")
        self.segmenter_ = final
        self.score_scale_ = smoothed.scale()
        self.image_scores_ = np.sort(self.score_scale_(statistics))
        self.image_threshold_ = image_threshold_from_scores(self.image_scores_, self.inspection.false_reject_rate)
        self._pixel_sample = pixels  # for pixel thresholds at other rates
        self.threshold_ = float(pixels.quantiles(self.inspection.false_alarm_rate)[0])
        self.calibration_curve_ = (CURVE_RATES, pixels.quantiles(CURVE_RATES))
        self.n_references_ = len(refs)
        self.held_out_ = folds > 1
        self.n_folds_ = folds
        if folds == 1:
            warnings.warn(
                "Inspector: one reference image, so the thresholds are calibrated on the pixels the model was fitted "
                "on and good images fail more often than false_reject_rate says; fit on several references (about "
                f"{math.ceil(1 / self.inspection.false_reject_rate)} or more for that rate to be measured).",
                UserWarning, stacklevel=2,
            )
        return self

    def _choose_k(self, refs: list, max_pixels: int | None = None) -> int:
        """K: given, or chosen over k_range by the K criterion (warned at the
        edge of the range: a K outside it may be better)."""
        if not self.inspection.auto_k:
            return self.params.n_components
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="select_k:", category=UserWarning)  # said below, in our words
            selection = select_k(refs if len(refs) > 1 else refs[0], k_range=self.inspection.k_range, params=self.params,
                                 max_pixels=max_pixels)
        self.k_selection_ = selection
        if selection.at_edge:
            k_range = self.inspection.k_range
            warnings.warn(
                f"Inspector: K = {selection.best_k}, chosen by {selection.rule}, is at the edge of k_range "
                f"{k_range[0]}-{k_range[-1]}; a K outside it may describe the references better (widen k_range or "
                "give n_components).", UserWarning, stacklevel=3,
            )
        return selection.best_k

    def _calibrate_on(self, image, segmenter, pixels, smoothed, statistics):
        """Add a held-out reference's pixel scores and its image statistic
        (the ``min_area``-th highest smoothed NLL)."""
        raw, smooth = self._nll_maps(image, segmenter)
        pixels.add(raw)
        smoothed.add(smooth)
        statistics.append(_order_statistic(smooth, self.inspection.min_area))

    def image_threshold_for(self, false_reject_rate: float) -> float:
        """The image threshold for another false-reject rate, from the
        held-out references' image scores (see
        :func:`image_threshold_from_scores`)."""
        self._check_fitted()
        rate = InspectionParams.setting("false_reject_rate").check(false_reject_rate)
        if self.image_scores_ is None:
            raise ValueError("This model was saved before image thresholds and holds no image scores of its "
                             "references; fit it again to set another false-reject rate.")
        return image_threshold_from_scores(self.image_scores_, rate)

    def set_false_reject_rate(self, false_reject_rate: float) -> float:
        """Re-threshold images for another false-reject rate; returns the
        new image threshold."""
        threshold = self.image_threshold_for(false_reject_rate)
        self.set_params(false_reject_rate=false_reject_rate)
        self.image_threshold_ = threshold
        return threshold

    def threshold_for(self, false_alarm_rate: float, references: list[ImageLike] | None = None, *,
                      max_pixels: int | None = None) -> float:
        """The pixel threshold for another false-alarm rate: from the
        calibration of this fit (or the calibration curve saved with the
        model), or from the given reference images (loaded one at a time)."""
        self._check_fitted()
        rate = InspectionParams.setting("false_alarm_rate").check(false_alarm_rate)
        if references is not None:
            sample = _ScoreSample(self.params.random_state)
            for ref in references:
                sample.add(self._nll_maps(load_image(ref, max_pixels=max_pixels))[0])
            return float(sample.quantiles(rate)[0])
        if getattr(self, "_pixel_sample", None) is not None:
            return float(self._pixel_sample.quantiles(rate)[0])
        rates, thresholds = self.calibration_curve_
        # thresholds fall as the rate rises: interpolate in log(rate)
        return float(np.interp(np.log(rate), np.log(rates), thresholds))

    def set_false_alarm_rate(self, false_alarm_rate: float) -> float:
        """Re-threshold pixels for another false-alarm rate (from the
        calibration); returns the new pixel threshold."""
        threshold = self.threshold_for(false_alarm_rate)
        self.set_params(false_alarm_rate=false_alarm_rate)
        self.threshold_ = threshold
        return threshold

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "segmenter_")

    def _check_fitted(self):
        if not self.is_fitted:
            raise NotFittedError("This Inspector is not fitted; call fit(references) or load a model.")

    # ------------------------------------------------------------------
    # scoring and regions
    def _nll_maps(self, image, segmenter=None):
        """The unsmoothed and the smoothed NLL of a loaded image (NaN where masked)."""
        raw = -(self.segmenter_ if segmenter is None else segmenter).log_likelihood_map(image)  # NaN where masked
        mask = image.mask
        margin = self.inspection.border_margin
        if margin:
            # The margin is left out like transparent pixels, before the
            # smoothing: a rim's high scores must not spread inwards.
            mask = mask.copy()
            mask[:margin] = mask[-margin:] = False
            mask[:, :margin] = mask[:, -margin:] = False
            raw[~mask] = np.nan
        return raw, smooth_scores(raw, mask, self.inspection.smoothing_sigma)

    def score_maps(self, image: ImageLike, *, max_pixels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The unsmoothed anomaly score (negative log-likelihood, for the
        pixel threshold) and the calibrated score (for the image threshold)
        of every pixel, NaN where masked; :meth:`find_regions` takes both.
        ``max_pixels``: the largest image accepted (see
        :func:`gmmseg.load_image`)."""
        self._check_fitted()
        raw, smoothed = self._nll_maps(load_image(image, max_pixels=max_pixels))
        return raw, self.score_scale_(smoothed)

    def score_map(self, image: ImageLike, *, max_pixels: int | None = None) -> np.ndarray:
        """Calibrated anomaly score of every pixel (see :meth:`score_maps`)."""
        return self.score_maps(image, max_pixels=max_pixels)[1]

    def image_score(self, image: ImageLike, *, max_pixels: int | None = None) -> float:
        """An image's score: the ``min_area``-th highest calibrated score."""
        return _order_statistic(self.score_map(image, max_pixels=max_pixels), self.inspection.min_area)

    def inspect(self, image: ImageLike, threshold: float | None = None, *,
                image_threshold: float | None = None, max_pixels: int | None = None) -> InspectionResult:
        """Score an image, give its verdict and find its defect regions.

        ``threshold`` overrides the calibrated pixel threshold (e.g. from
        :meth:`threshold_for`), ``image_threshold`` the image threshold
        (e.g. from :meth:`image_threshold_for`); ``max_pixels`` is the
        largest image accepted (see :func:`gmmseg.load_image`).
        """
        raw, score = self.score_maps(image, max_pixels=max_pixels)
        return self.find_regions(score, threshold, raw=raw, image_threshold=image_threshold)

    def find_regions(self, score: np.ndarray, threshold: float | None = None, *, raw: np.ndarray | None = None,
                     image_threshold: float | None = None) -> InspectionResult:
        """Verdict and defect regions from score maps (from :meth:`score_maps`).

        Cheap compared with scoring: re-thresholding a shown image (e.g. for
        another rate) reuses its maps.

        Parameters
        ----------
        score : ndarray (H, W)
            The calibrated score (detection).
        threshold : float, optional
            The pixel threshold on ``raw`` (default: the calibrated one).
        raw : ndarray (H, W), optional
            The unsmoothed score, over which masks grow; without it the
            masks are the seeds.
        image_threshold : float, optional
            Default: the calibrated one.
        """
        from scipy import ndimage  # scipy.ndimage costs start-up time; imported when first needed

        self._check_fitted()
        pixel_thr = self.threshold_ if threshold is None else float(threshold)
        image_thr = self.image_threshold_ if image_threshold is None else float(image_threshold)
        min_area = self.inspection.min_area
        image_score = _order_statistic(score, min_area)
        if score.dtype.kind == "f":
            # The threshold in the score map's precision (float32), where the
            # seeds are compared, and so reported: one between two float32
            # values (an image scored by the model fitted on it alone sits on
            # its own threshold) must not fail an image with fewer than
            # min_area seeds, and "fail" must read as "score above threshold".
            with np.errstate(over="ignore"):  # beyond float32's range: inf, nothing is above it
                image_thr = float(score.dtype.type(image_thr))
        result = InspectionResult(score=score, mask=np.zeros(score.shape, dtype=bool), image_score=image_score,
                                  image_threshold=image_thr, pixel_threshold=pixel_thr, passed=True, raw_score=raw)
        if not image_score > image_thr:
            return result
        with np.errstate(invalid="ignore"):
            seeds = score > image_thr
            if raw is None:
                grow, unusual = np.zeros_like(seeds), seeds
            else:
                grow = raw > pixel_thr
                # Seeds that are unusual on their own too: the halo that
                # smoothing spreads around a thin defect is not.
                unusual = grow | (seeds & (raw > self.score_scale_.nll_at(image_thr)))
        labels, n = ndimage.label(seeds | grow, structure=_EIGHT)
        seed_counts = np.bincount(labels[seeds], minlength=n + 1)
        seed_counts[0] = 0
        keep = seed_counts >= min_area
        if not keep.any():
            # The image fails (min_area seeds) but they are spread over
            # smaller pieces: the pieces with the most seeds, until they hold
            # min_area together, so that a failed image always shows regions.
            order = np.argsort(-seed_counts, kind="stable")
            enough = int(np.searchsorted(np.cumsum(seed_counts[order]), min_area))
            keep[order[: enough + 1]] = True
        mask = keep[labels] & unusual
        # A region none of whose pixels is unusual on its own (a faint,
        # smooth area) is shown by its seeds.
        shown = np.bincount(labels[mask], minlength=n + 1)
        bare = keep & (shown == 0)
        if bare.any():
            mask |= bare[labels] & seeds
        region_labels = np.where(mask, labels, 0)
        boxes = ndimage.find_objects(region_labels)
        regions = []
        for label in np.flatnonzero(keep):
            # Measured inside the region's box: scipy's per-label maximum
            # sorts the whole image, which costs more than the rest together.
            ys, xs = boxes[label - 1]
            inside = region_labels[ys, xs] == label
            values = score[ys, xs][inside]
            rows, cols = np.nonzero(inside)
            regions.append(Region(
                label=0, area=int(values.size),
                bbox=(int(xs.start), int(ys.start), int(xs.stop - xs.start), int(ys.stop - ys.start)),
                centroid=(float(xs.start + cols.mean()), float(ys.start + rows.mean())),
                mean_score=float(values.mean()), max_score=float(values.max()),
            ))
        regions.sort(key=lambda r: -r.area)
        for number, region in enumerate(regions, start=1):
            region.label = number
        result.mask, result.regions, result.passed = mask, regions, False
        return result

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
            image_threshold=float(self.image_threshold_),
            image_scores=None if self.image_scores_ is None else np.asarray(self.image_scores_, dtype=np.float64),
            score_rates=self.score_scale_.rates, score_values=self.score_scale_.values,
        )

    @classmethod
    def from_state(cls, state: InspectorState) -> "Inspector":
        """A fitted Inspector from :meth:`to_state`'s data.

        A state without an image threshold (a model file from before image
        verdicts) held one threshold, on the smoothed score, and its
        calibration curve was on the smoothed score too. That curve becomes
        the score scale, the image threshold is its old threshold on that
        scale (``-log10`` of its false-alarm rate: the same cut as before,
        now counted in seeds rather than in connected pixels) and the pixel
        threshold is the old threshold as well (calibrated on the smoothed
        score, so masks grow a little wider than after a new fit). It has no
        image scores: :meth:`image_threshold_for` asks for a new fit. Saved
        again, it keeps this image threshold and scale.
        """
        inspector = cls(params=state.model_params, inspection=state.inspection)
        inspector.segmenter_ = Segmenter.from_state(state.segmenter)
        inspector.threshold_ = float(state.threshold)
        inspector.calibration_curve_ = (np.asarray(state.calibration_rates), np.asarray(state.calibration_thresholds))
        inspector.n_references_ = int(state.n_references)
        inspector.held_out_ = bool(state.held_out)
        inspector.n_folds_ = min(inspector.n_references_, MAX_FOLDS) if inspector.held_out_ else 1
        if state.image_threshold is None:
            # The old verdict: a region of min_area pixels above the old
            # threshold on the smoothed score; now min_area seeds above it.
            rates, values = inspector.calibration_curve_
            order = np.argsort(rates)[::-1]  # the scale's rates fall
            inspector.score_scale_ = ScoreScale.from_curve(rates[order], values[order])
            inspector.image_threshold_ = float(inspector.score_scale_(np.float64(state.threshold)))
            inspector.image_scores_ = None
        else:
            inspector.score_scale_ = ScoreScale(state.score_rates, state.score_values)
            inspector.image_threshold_ = float(state.image_threshold)
            inspector.image_scores_ = (None if state.image_scores is None
                                       else np.sort(np.asarray(state.image_scores, dtype=np.float64)))
        return inspector

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the model (mixture, settings, thresholds, calibration) as
        JSON; the file is also a Segmenter model (for ``gmmseg apply``)."""
        return save_state(self.to_state(), path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Inspector":
        """Read an inspection model; rejects files without a calibration."""
        state = read_inspector_state(path)
        try:
            return cls.from_state(state)
        except ValueError as exc:
            raise ModelFileError(f"{path}: invalid model: {exc}") from None
