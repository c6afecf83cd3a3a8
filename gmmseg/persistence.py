"""The model file format: versioned JSON, validated on load, never pickle.

This module is the only code that knows the format. Models hand it their
state (:class:`SegmenterState`, :class:`InspectorState`: plain data, from
``Segmenter.to_state()`` / ``Inspector.to_state()``) and are rebuilt from a
state with ``from_state``; nothing here touches a model's attributes.

A file holds the mixture's parameters exactly (JSON floats round-trip bit
for bit), the feature settings and the other segmenter settings, so a
loaded model predicts exactly what the live object did::

    {"format": "gmmseg-model", "version": 1, "kind": "segmenter",
     "gmmseg_version": "...",
     "features": {"color_space": "lab", "spatial_weight": 0.0},
     "segmenter": {"n_components": 4, "covariance_type": "full", ...},
     "channels": 3,
     "mixture": {"covariance_type": "full", "weights": [...], "means": [...],
                 "precisions_cholesky": [...], "converged": true, ...},
     "components": {"colors": [[r, g, b], ...], "names": [...]},
     "texture_standardisation": {"mean": [...], "scale": [...]}}

(``texture_standardisation`` only with texture features: the mean and
standard deviation of each texture feature on the fitted pixels.)

An inspection model is a segmenter model plus an ``"inspection"`` section,
so ``gmmseg apply`` can use it too::

    "inspection": {"threshold": 2.35,               # pixel threshold (unsmoothed NLL)
                   "image_threshold": 3.91,         # calibrated score, >= 0
                   "image_scores": [3.4, 3.6, ...], # held-out references', >= 0 (*)
                   "score_scale": {"false_alarm_rates": [1.0, ...], "scores": [...]},
                   "calibration_curve": {"false_alarm_rates": [...], "thresholds": [...]},
                   "false_alarm_rate": 1e-4, "false_reject_rate": 0.05, ...}

(``score_scale``: the smoothed NLL that each fraction of held-out good
pixels exceeds, which defines the calibrated score; ``calibration_curve``:
pixel thresholds at other false-alarm rates.) Files written by earlier
releases of format version 1 load (settings they lack take their defaults).
Inspection models from before image verdicts have no ``image_threshold``,
``image_scores`` or ``score_scale``, and their ``threshold`` and curve are
on the smoothed score; :meth:`gmmseg.Inspector.from_state` says how they
are read. (*) Such a model saved again has an image threshold and a score
scale (from its old curve) but no image scores.
"""

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._fileio import write_json
from ._validation import check_bool, check_int, check_number
from ._version import __version__
from .features import LEGACY_TEXTURE_FILTERS
from .params import MAX_COMPONENTS, MAX_ITERATIONS, InspectionParams, SegmenterParams

FORMAT = "gmmseg-model"
VERSION = 1
# A real model file is kilobytes (K = 255 full components over the 37
# features of the widest texture bank is about 7 MB); refusing bigger files
# keeps a hostile file from exhausting memory in the JSON parser (a number
# costs it 32 bytes, so 16 MB of "0," is at most about 260 MB).
MAX_FILE_BYTES = 16 << 20
# K is at most MAX_COMPONENTS, what the outputs hold (labels.png: 255).
MAX_FEATURES = 256
# One image score per reference; a score scale has a point per tenth of a
# decade (81 from gmmseg itself); the calibration curve 51.
MAX_IMAGE_SCORES = 100_000
MAX_SCALE_POINTS = 1000
MAX_NAME_LENGTH = 1000
# Magnitudes. Features are float32 of about unit scale (colour, position up
# to spatial_weight <= 1000, standardised texture), so means and precision
# factors far from 1 are nonsense; bounded by 1e30 they also keep the
# squared Mahalanobis distance of any float32 feature row (below 3.4e38)
# far below float64's overflow for up to MAX_FEATURES features, so the
# mixture's densities of every image are finite (the spatial prior's float32
# tables are checked by the engine when they are made). The texture
# standardisation (mean and scale, floored at 1e-12 by the fit) is bounded
# so that standardised features stay finite in float32.
MAX_MAGNITUDE = 1e30
MIN_PRECISION = 1.0 / MAX_MAGNITUDE
MAX_TEXTURE_MEAN = 1e6
TEXTURE_SCALE_RANGE = (1e-12, 1e6)


class ModelFileError(ValueError):
    """A model file is unreadable, malformed or incompatible."""


@dataclass
class MixtureState:
    """A fitted Gaussian mixture's parameters (see ``GaussianMixture.from_parameters``)."""

    covariance_type: str
    weights: np.ndarray
    means: np.ndarray
    precisions_cholesky: np.ndarray
    converged: bool = True
    n_iter: int = 0
    lower_bound: float | None = None


@dataclass
class SegmenterState:
    """Everything a fitted :class:`gmmseg.Segmenter` is made of."""

    params: SegmenterParams
    channels: int
    mixture: MixtureState
    component_colors: np.ndarray
    component_names: list[str]
    texture_mean: np.ndarray | None = None  # standardisation of the texture features (fitted)
    texture_scale: np.ndarray | None = None


@dataclass
class InspectorState:
    """Everything a fitted :class:`gmmseg.Inspector` is made of.

    ``model_params`` are the Inspector's own segmenter settings (with
    ``auto_k`` its K is chosen at fit time, so the fitted segmenter's K may
    differ).
    """

    segmenter: SegmenterState
    model_params: SegmenterParams
    inspection: InspectionParams
    threshold: float
    calibration_rates: np.ndarray
    calibration_thresholds: np.ndarray
    n_references: int = 1
    held_out: bool = False
    # None in files from before image verdicts (then all four are None);
    # image_scores alone is None for such a model saved again.
    image_threshold: float | None = None
    image_scores: np.ndarray | None = None
    score_rates: np.ndarray | None = None
    score_values: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# writing
def _mixture_dict(m: MixtureState) -> dict:
    lb = m.lower_bound
    return {
        "covariance_type": m.covariance_type,
        "weights": np.asarray(m.weights).tolist(),
        "means": np.asarray(m.means).tolist(),
        "precisions_cholesky": np.asarray(m.precisions_cholesky).tolist(),
        "converged": bool(m.converged),
        "n_iter": int(m.n_iter),
        "lower_bound": float(lb) if lb is not None and math.isfinite(lb) else None,
    }


def segmenter_document(state: SegmenterState) -> dict:
    """The JSON document of a segmenter model."""
    settings = state.params.to_dict()
    features = state.params.feature_settings()
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": "segmenter",
        "gmmseg_version": __version__,
        "features": features,
        "segmenter": {k: v for k, v in settings.items() if k not in features},
        "channels": int(state.channels),
        "mixture": _mixture_dict(state.mixture),
        "components": {
            "colors": np.asarray(state.component_colors).tolist(),
            "names": list(state.component_names),
        },
        **({} if state.texture_mean is None else {"texture_standardisation": {
            "mean": np.asarray(state.texture_mean).tolist(),
            "scale": np.asarray(state.texture_scale).tolist(),
        }}),
    }


def inspector_document(state: InspectorState) -> dict:
    """The JSON document of an inspection model (a segmenter model plus an
    ``"inspection"`` section)."""
    data = segmenter_document(state.segmenter)
    ins = state.inspection
    data["inspection"] = {
        "threshold": float(state.threshold),
        **({} if state.image_threshold is None else {
            "image_threshold": float(state.image_threshold),
            **({} if state.image_scores is None else {"image_scores": [float(v) for v in state.image_scores]}),
            "score_scale": {
                "false_alarm_rates": [float(r) for r in state.score_rates],
                "scores": [float(v) for v in state.score_values],
            },
        }),
        "false_alarm_rate": ins.false_alarm_rate,
        "false_reject_rate": ins.false_reject_rate,
        "smoothing_sigma": ins.smoothing_sigma,
        "min_area": ins.min_area,
        "border_margin": ins.border_margin,
        "auto_k": ins.auto_k,
        "k_range": list(ins.k_range),
        "n_components": state.model_params.n_components,
        "n_references": int(state.n_references),
        "held_out": bool(state.held_out),
        "calibration_curve": {
            "false_alarm_rates": [float(r) for r in state.calibration_rates],
            "thresholds": [float(t) for t in state.calibration_thresholds],
        },
    }
    return data


def save_state(state: SegmenterState | InspectorState, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a model state as a JSON model file (atomically); returns the path."""
    if isinstance(state, InspectorState):
        data = inspector_document(state)
    elif isinstance(state, SegmenterState):
        data = segmenter_document(state)
    else:
        raise TypeError(f"expected a SegmenterState or InspectorState, got {type(state).__name__}")
    return write_json(path, data, overwrite=overwrite)


# ---------------------------------------------------------------------------
# reading
def _bad(path, problem):
    return ModelFileError(f"{path}: {problem}")


def read_document(path: str | os.PathLike) -> dict:
    """Read a model file and check its envelope (format, version); returns the dict."""
    path = Path(path)
    if not path.is_file():
        raise _bad(path, "model file not found")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise _bad(path, f"too large for a model file ({size} bytes; at most {MAX_FILE_BYTES})")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _bad(path, f"cannot be read as a text file ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad(path, f"not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise _bad(path, "not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise _bad(path, f"not a valid model file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _bad(path, f"not a gmmseg model file (missing \"format\": \"{FORMAT}\")")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _bad(path, f"invalid model file version {version!r}")
    if version > VERSION:
        raise _bad(path, f"written by a newer gmmseg (format version {version}; this gmmseg reads up to {VERSION})")
    return data


def _section(path, data, key):
    value = data.get(key)
    if not isinstance(value, dict):
        raise _bad(path, f"missing or malformed {key!r} section")
    return value


def _check_numbers(value, name, ndim):
    """Raise ValueError unless ``value`` is ``ndim`` levels of non-empty
    lists whose leaves are JSON numbers: numpy would take the strings "0.5"
    and booleans as numbers too."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{name} must be a non-empty {ndim}-D list of numbers")
    if ndim == 1:
        for item in value:
            if type(item) not in (int, float):
                raise ValueError(f"{name} must hold numbers, got {item!r:.40}")
        return
    for item in value:
        _check_numbers(item, name, ndim - 1)


def _float_array(value, name, ndim, max_abs=None, max_size=MAX_COMPONENTS * MAX_FEATURES * MAX_FEATURES):
    """A finite float64 array of ``ndim`` dimensions from nested lists of
    numbers (the size is bounded before numpy allocates anything), all of
    magnitude at most ``max_abs`` when given."""
    size, level = 1, value
    for _ in range(ndim):
        if not isinstance(level, list) or not level:
            raise ValueError(f"{name} must be a non-empty {ndim}-D list of numbers")
        size *= len(level)
        level = level[0]
    if size > max_size:
        raise ValueError(f"{name} holds {size:,} values, far too many for a model (at most {max_size:,})")
    _check_numbers(value, name, ndim)
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a {ndim}-D list of numbers of the same length") from None
    if array.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D list of numbers, got {array.ndim}-D")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinity")
    if max_abs is not None and array.size and np.abs(array).max() > max_abs:
        raise ValueError(f"{name} holds {np.abs(array).max():.3g}, beyond {max_abs:g}: not a model of gmmseg's "
                         "features, which are about 1")
    return array


def _mixture_state(mixture) -> MixtureState:
    """The mixture's parameters, their types, sizes and magnitudes checked
    (whether they fit the settings is checked by the model, in from_state)."""
    covariance_type = mixture["covariance_type"]
    precisions_ndim = {"full": 3, "tied": 2, "diag": 2, "spherical": 1}.get(covariance_type)
    if precisions_ndim is None:
        raise ValueError(f"unknown covariance_type {covariance_type!r}")
    weights = mixture["weights"]
    if isinstance(weights, list) and len(weights) > MAX_COMPONENTS:
        raise ValueError(f"{len(weights):,} components; a model has at most {MAX_COMPONENTS} (labels.png holds "
                         f"{MAX_COMPONENTS})")
    weights = _float_array(weights, "mixture.weights", 1, max_size=MAX_COMPONENTS)
    if np.any(weights < 0) or np.any(weights > 1):
        raise ValueError("mixture.weights must lie in [0, 1]")
    means = _float_array(mixture["means"], "mixture.means", 2, max_abs=MAX_MAGNITUDE,
                         max_size=MAX_COMPONENTS * MAX_FEATURES)
    if means.shape[0] > MAX_COMPONENTS or means.shape[1] > MAX_FEATURES:
        raise ValueError(f"{means.shape[0]} components of {means.shape[1]} features is beyond what gmmseg fits")
    precisions = _float_array(mixture["precisions_cholesky"], "mixture.precisions_cholesky", precisions_ndim,
                              max_abs=MAX_MAGNITUDE)
    diagonal = np.diagonal(precisions, axis1=-2, axis2=-1) if precisions_ndim >= 2 and covariance_type != "diag" \
        else precisions
    if np.any(np.abs(diagonal) < MIN_PRECISION):
        raise ValueError(f"mixture.precisions_cholesky has a diagonal entry below {MIN_PRECISION:g} (a standard "
                         f"deviation beyond {MAX_MAGNITUDE:g})")
    lower_bound = mixture.get("lower_bound")
    return MixtureState(
        covariance_type, weights, means, precisions,
        converged=check_bool(mixture.get("converged", True), "mixture.converged"),
        n_iter=check_int(mixture.get("n_iter", 0), "mixture.n_iter", minimum=0, maximum=MAX_ITERATIONS),
        lower_bound=check_number(lower_bound, "mixture.lower_bound") if lower_bound is not None else None,
    )


def _segmenter_state(path, data) -> SegmenterState:
    features = _section(path, data, "features")
    settings = _section(path, data, "segmenter")
    mixture = _section(path, data, "mixture")
    components = _section(path, data, "components")
    try:
        feature_names = {s.name for s in SegmenterParams.settings() if s.group == "features"}
        unknown = sorted((set(settings) - set(SegmenterParams.names())) | (set(settings) & feature_names))
        if unknown:
            raise ValueError(f"unknown segmenter settings {unknown}")
        unknown = sorted(set(features) - feature_names)
        if unknown:
            raise ValueError(f"unknown feature settings {unknown}")
        if "texture" in str(features.get("feature_set", "")) and "texture_filters" not in features:
            # Written before the filter bank was a setting: it was this one.
            features = {**features, "texture_filters": LEGACY_TEXTURE_FILTERS}
        settings = SegmenterParams.from_dict({**settings, **features})
        state = _mixture_state(mixture)
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise _bad(path, f"invalid model: {detail}") from None
    # The file's types are checked here; whether the parts fit together (K,
    # feature count, channels) is the model's to check, in from_state.
    channels = data.get("channels")
    if isinstance(channels, bool) or not isinstance(channels, int):
        raise _bad(path, f"invalid model: channels must be 1 or 3, got {channels!r}")
    try:
        colors = _float_array(components.get("colors"), "components.colors", 2, max_size=3 * MAX_COMPONENTS)
    except (ValueError, ArithmeticError) as exc:
        raise _bad(path, f"invalid model: {exc}") from None
    names = components.get("names")
    if (not isinstance(names, list) or len(names) > MAX_COMPONENTS
            or not all(isinstance(n, str) and len(n) <= MAX_NAME_LENGTH for n in names)):
        raise _bad(path, f"invalid model: components.names must be a list of at most {MAX_COMPONENTS} strings of "
                         f"at most {MAX_NAME_LENGTH} characters")
    texture_mean = texture_scale = None
    if "texture_standardisation" in data:
        try:
            section = _section(path, data, "texture_standardisation")
            texture_mean = _float_array(section.get("mean"), "texture_standardisation.mean", 1,
                                        max_abs=MAX_TEXTURE_MEAN, max_size=MAX_FEATURES)
            texture_scale = _float_array(section.get("scale"), "texture_standardisation.scale", 1,
                                         max_abs=TEXTURE_SCALE_RANGE[1], max_size=MAX_FEATURES)
            if np.any(texture_scale < TEXTURE_SCALE_RANGE[0]):
                raise ValueError(f"texture_standardisation.scale must lie in [{TEXTURE_SCALE_RANGE[0]:g}, "
                                 f"{TEXTURE_SCALE_RANGE[1]:g}]")
        except (ValueError, ArithmeticError) as exc:
            raise _bad(path, f"invalid model: {exc}") from None
    return SegmenterState(settings, channels, state, colors, names, texture_mean, texture_scale)


def _check_kind(path, data):
    if data.get("kind") != "segmenter":
        raise _bad(path, f"holds a {data.get('kind')!r} model, not a segmenter")


def read_segmenter_state(path: str | os.PathLike) -> SegmenterState:
    """The state of a segmenter model file, its types checked (inspection
    models are segmenter models too: their inspection section is checked as
    well, so a damaged file is refused whatever reads it);
    ``Segmenter.from_state`` checks that its parts fit together."""
    path = Path(path)
    data = read_document(path)
    _check_kind(path, data)
    segmenter = _segmenter_state(path, data)
    if "inspection" in data:
        _inspector_state(path, data, segmenter)
    return segmenter


def read_inspector_state(path: str | os.PathLike) -> InspectorState:
    """The validated state of an inspection model file."""
    path = Path(path)
    data = read_document(path)
    if not isinstance(data.get("inspection"), dict):
        raise _bad(path, "not an inspection model (it has no calibrated threshold); "
                         "fit one on defect-free reference images first")
    _check_kind(path, data)
    return _inspector_state(path, data, _segmenter_state(path, data))


def _inspector_state(path, data, segmenter: SegmenterState) -> InspectorState:
    section = data.get("inspection")
    try:
        if not isinstance(section, dict):
            raise ValueError("the inspection section must be a mapping")
        threshold = check_number(section["threshold"], "threshold")
        # Files from before the inspection settings were saved: K was given.
        inspection = InspectionParams(
            auto_k=section.get("auto_k", False),
            k_range=section.get("k_range", InspectionParams().k_range),
            false_alarm_rate=section["false_alarm_rate"],
            false_reject_rate=section.get("false_reject_rate", InspectionParams().false_reject_rate),
            smoothing_sigma=section["smoothing_sigma"],
            min_area=section["min_area"],
            border_margin=section.get("border_margin", 0),  # files from before it: every pixel
        )
        model_params = segmenter.params.replace(
            n_components=section.get("n_components", segmenter.params.n_components))
        curve = section["calibration_curve"]
        if not isinstance(curve, dict):
            raise ValueError("calibration_curve must be a mapping of false_alarm_rates and thresholds")
        rates = _float_array(curve["false_alarm_rates"], "calibration_curve.false_alarm_rates", 1,
                             max_size=MAX_SCALE_POINTS)
        thresholds = _float_array(curve["thresholds"], "calibration_curve.thresholds", 1, max_size=MAX_SCALE_POINTS)
        if rates.shape != thresholds.shape or rates.size < 2 or not np.all(np.diff(rates) > 0) or rates[0] <= 0:
            raise ValueError("calibration_curve must hold matching, increasing rates and finite thresholds")
        n_references = check_int(section.get("n_references", 1), "n_references", minimum=1,
                                 maximum=MAX_IMAGE_SCORES)
        held_out = check_bool(section.get("held_out", False), "held_out")
        verdicts = _image_verdict_fields(section)
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise _bad(path, f"invalid inspection section ({detail})") from None
    return InspectorState(
        segmenter, model_params, inspection, threshold, rates, thresholds,
        n_references=n_references, held_out=held_out, **verdicts,
    )


def _bounded_list(value, name, max_length):
    """A non-empty list of at most ``max_length`` items (checked before numpy sees it)."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{name} must be a non-empty list of numbers")
    if len(value) > max_length:
        raise ValueError(f"{name} holds {len(value)} values; at most {max_length}")
    return value


def _image_verdict_fields(section) -> dict[str, Any]:
    """The image threshold and the score scale (both, or neither in a file
    from before image verdicts), and the references' image scores (missing
    only in such a model saved again)."""
    names = ("image_threshold", "score_scale")
    present = [n for n in (*names, "image_scores") if n in section]
    if not present:
        return {}
    if not all(n in section for n in names):
        raise ValueError(f"{', '.join(n for n in names if n not in section)} missing beside {', '.join(present)}")
    image_threshold = check_number(section["image_threshold"], "image_threshold", minimum=0.0)
    scores = None
    if "image_scores" in section:
        scores = np.array([check_number(v, "image_scores", minimum=0.0)
                           for v in _bounded_list(section["image_scores"], "image_scores", MAX_IMAGE_SCORES)])
    scale = section["score_scale"]
    if not isinstance(scale, dict):
        raise ValueError("score_scale must be a mapping of false_alarm_rates and scores")
    rates = _float_array(_bounded_list(scale["false_alarm_rates"], "score_scale.false_alarm_rates", MAX_SCALE_POINTS),
                         "score_scale.false_alarm_rates", 1, max_size=MAX_SCALE_POINTS)
    values = _float_array(_bounded_list(scale["scores"], "score_scale.scores", MAX_SCALE_POINTS), "score_scale.scores", 1,
                          max_size=MAX_SCALE_POINTS)
    if (rates.shape != values.shape or rates.size < 2 or rates[0] > 1 or rates[-1] <= 0
            or np.any(np.diff(rates) >= 0) or np.any(np.diff(values) <= 0)):
        raise ValueError("score_scale must hold matching lists: rates falling within (0, 1], scores rising")
    return {"image_threshold": image_threshold, "image_scores": scores, "score_rates": rates, "score_values": values}
