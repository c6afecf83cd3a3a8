"""The model file format: versioned JSON, validated on load, never pickle.

A file holds the mixture's parameters (exactly: JSON floats round-trip
bit for bit), the feature configuration and the segmenter settings, so a
loaded model predicts exactly what the live object did::

    {"format": "gmmseg-model", "version": 1, "kind": "segmenter",
     "gmmseg_version": "...",
     "features": {"color_space": "lab", "spatial_weight": 0.0},
     "segmenter": {"n_components": 4, "covariance_type": "full", ...},
     "channels": 3,
     "mixture": {"weights": [...], "means": [...], "precisions_cholesky": [...]},
     "components": {"colors": [[r, g, b], ...], "names": [...]}}
"""

import json
import math
from pathlib import Path

import numpy as np

from .io import atomic_write

FORMAT = "gmmseg-model"
VERSION = 1


class ModelFileError(ValueError):
    """A model file is unreadable, malformed or incompatible."""


def _bad(path, problem):
    return ModelFileError(f"{path}: {problem}")


def segmenter_to_dict(segmenter):
    """The JSON-ready content of a fitted :class:`gmmseg.Segmenter`."""
    from . import __version__

    gm = segmenter.gmm_
    params = segmenter.get_params()
    params.pop("color_space")
    params.pop("spatial_weight")
    if not isinstance(params["random_state"], (int, type(None))):
        params["random_state"] = None
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": "segmenter",
        "gmmseg_version": __version__,
        "features": segmenter.features.to_dict(),
        "segmenter": params,
        "channels": int(segmenter.channels_),
        "mixture": {
            "covariance_type": gm.covariance_type,
            "weights": gm.weights_.tolist(),
            "means": gm.means_.tolist(),
            "precisions_cholesky": gm.precisions_cholesky_.tolist(),
            "converged": bool(gm.converged_),
            "n_iter": int(gm.n_iter_),
            "lower_bound": float(gm.lower_bound_) if math.isfinite(gm.lower_bound_) else None,
        },
        "components": {
            "colors": np.asarray(segmenter.component_colors_).tolist(),
            "names": list(segmenter.component_names_),
        },
    }


def write_json(path, data, *, overwrite=False):
    """Write a JSON document atomically (strict JSON: no NaN/Infinity)."""
    text = json.dumps(data, indent=1, allow_nan=False) + "\n"

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write, overwrite=overwrite)


def save_segmenter(segmenter, path, *, overwrite=False):
    return write_json(path, segmenter_to_dict(segmenter), overwrite=overwrite)


def read_model_dict(path):
    """Read and check the envelope of a model file; returns the dict."""
    path = Path(path)
    if not path.is_file():
        raise _bad(path, "model file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _bad(path, f"cannot be read as a text file ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad(path, f"not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _bad(path, f"not a gmmseg model file (missing \"format\": \"{FORMAT}\")")
    version = data.get("version")
    if not isinstance(version, int) or version < 1:
        raise _bad(path, f"invalid model file version {version!r}")
    if version > VERSION:
        raise _bad(path, f"written by a newer gmmseg (format version {version}; this gmmseg reads up to {VERSION})")
    return data


def _section(path, data, key, kind=dict):
    value = data.get(key)
    if not isinstance(value, kind):
        raise _bad(path, f"missing or malformed {key!r} section")
    return value


def load_segmenter(path):
    """A fitted :class:`gmmseg.Segmenter` from a model file."""
    from .engine import GaussianMixture
    from .features import FeatureConfig
    from .segment import Segmenter

    path = Path(path)
    data = read_model_dict(path)
    if data.get("kind") != "segmenter":
        raise _bad(path, f"holds a {data.get('kind')!r} model, not a segmenter")
    features = _section(path, data, "features")
    settings = _section(path, data, "segmenter")
    mixture = _section(path, data, "mixture")
    components = _section(path, data, "components")
    try:
        config = FeatureConfig.from_dict(features)
        known = set(Segmenter().get_params()) - {"color_space", "spatial_weight"}
        unknown = set(settings) - known
        if unknown:
            raise ValueError(f"unknown segmenter settings {sorted(unknown)}")
        segmenter = Segmenter(color_space=config.color_space, spatial_weight=config.spatial_weight, **settings)
        gm = GaussianMixture.from_parameters(
            mixture["weights"], mixture["means"], mixture["precisions_cholesky"],
            covariance_type=mixture["covariance_type"],
            tol=segmenter.tol, reg_covar=segmenter.reg_covar, max_iter=segmenter.max_iter,
            n_init=segmenter.n_init, init_params=segmenter.init_params,
            random_state=segmenter.random_state,
        )
    except (KeyError, TypeError, ValueError) as exc:
        detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise _bad(path, f"invalid model: {detail}") from None
    K, d = gm.means_.shape
    channels = data.get("channels")
    if channels not in (1, 3):
        raise _bad(path, f"invalid model: channels must be 1 or 3, got {channels!r}")
    if K != segmenter.n_components or gm.covariance_type != segmenter.covariance_type:
        raise _bad(path, "invalid model: the mixture does not match the segmenter settings")
    if d != config.n_features(channels):
        raise _bad(path, f"invalid model: {d} features do not match the feature settings ({config.n_features(channels)})")
    colors = np.asarray(components.get("colors"), dtype=np.float64) if isinstance(components.get("colors"), list) else None
    names = components.get("names")
    if colors is None or colors.shape != (K, 3) or not np.all(np.isfinite(colors)):
        raise _bad(path, f"invalid model: components.colors must be {K} RGB triples")
    if not isinstance(names, list) or len(names) != K or not all(isinstance(n, str) for n in names):
        raise _bad(path, f"invalid model: components.names must be {K} strings")
    gm.converged_ = bool(mixture.get("converged", True))
    gm.n_iter_ = int(mixture.get("n_iter", 0))
    lb = mixture.get("lower_bound")
    gm.lower_bound_ = float(lb) if lb is not None else -np.inf
    segmenter.gmm_ = gm
    segmenter.component_colors_ = np.clip(colors, 0.0, 1.0)
    segmenter.component_names_ = names
    segmenter.channels_ = channels
    segmenter.n_features_in_ = d
    return segmenter
