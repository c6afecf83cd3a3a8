"""Segmenting images with a Gaussian mixture over colour features."""

import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._validation import check_int_list
from .engine import ConvergenceWarning, EMProgress, GaussianMixture, NotFittedError
from .features import FeatureConfig, color_features, lab_lightness, luminance, position_features, unique_colors
from .io import ImageData, load_image
from .params import SegmenterParams
from .persistence import (
    MixtureState,
    ModelFileError,
    SegmenterState,
    read_segmenter_state,
    save_state,
)

_CHUNK_ROWS = 1 << 18
_MEAN_FIELD_ITERATIONS = 10


class Segmentation:
    """The result of segmenting one image.

    Attributes
    ----------
    labels : ndarray (H, W), int32
        Most probable component; -1 where the pixel is masked out.
    probabilities : ndarray (H, W, K), float32
        Probability of each component; sums to 1 over K on used pixels, 0
        where masked out.
    log_likelihood : ndarray (H, W), float32
        Log density of each pixel's features under the mixture (NaN where
        masked out). With smoothing it is still the mixture's own density.
    mask : ndarray (H, W), bool
        The pixels that were segmented.
    component_colors : ndarray (K, 3)
        Display colour of each component: its mean sRGB colour in [0, 1].
    weights : ndarray (K,)
        Mixture weights.
    """

    def __init__(self, labels: np.ndarray, probabilities: np.ndarray, log_likelihood: np.ndarray, mask: np.ndarray,
                 component_colors: np.ndarray, weights: np.ndarray, names: list[str] | None = None):
        self.labels = labels
        self.probabilities = probabilities
        self.log_likelihood = log_likelihood
        self.mask = mask
        self.component_colors = np.asarray(component_colors, dtype=np.float64)
        self.weights = np.asarray(weights, dtype=np.float64)
        K = self.probabilities.shape[2]
        self.names = list(names) if names is not None else [f"Component {k}" for k in range(K)]
        self._uncertainty = None

    @property
    def n_components(self) -> int:
        return self.probabilities.shape[2]

    @property
    def shape(self) -> tuple[int, int]:
        return self.labels.shape

    @property
    def uncertainty(self) -> np.ndarray:
        """Normalised entropy of the probabilities, (H, W) float32.

        0 means certain (one component has probability 1), 1 means all
        components equally likely; NaN where masked out (0 when K = 1).
        """
        if self._uncertainty is None:
            K = self.n_components
            out = np.full(self.labels.shape, np.nan, dtype=np.float32)
            if K == 1:
                out[self.mask] = 0.0
            else:
                p = self.probabilities[self.mask]
                with np.errstate(divide="ignore", invalid="ignore"):
                    terms = np.where(p > 0, p * np.log(p), 0.0)
                entropy = -terms.sum(axis=1) / np.log(K)
                out[self.mask] = np.clip(entropy, 0.0, 1.0)
            self._uncertainty = out
        return self._uncertainty

    def component_stats(self) -> list[dict[str, Any]]:
        """One dict per component: index, name, color, weight, pixel_count,
        area_fraction (of the used pixels)."""
        counts = np.bincount(self.labels[self.mask].ravel(), minlength=self.n_components)
        total = max(int(self.mask.sum()), 1)
        return [
            {
                "index": k,
                "name": self.names[k],
                "color": [float(c) for c in self.component_colors[k]],
                "weight": float(self.weights[k]),
                "pixel_count": int(counts[k]),
                "area_fraction": float(counts[k] / total),
            }
            for k in range(self.n_components)
        ]

    def anomaly_threshold(self, percentile: float = 1.0) -> float:
        """The log-likelihood below which ``percentile`` % of used pixels lie."""
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must be in [0, 100], got {percentile}.")
        values = self.log_likelihood[self.mask]
        if values.size == 0:
            return float("nan")
        return float(np.percentile(values, percentile))

    def anomaly_mask(self, threshold: float | None = None, percentile: float | None = None) -> np.ndarray:
        """Pixels whose log-likelihood is below a threshold.

        Give either ``threshold`` (a log-likelihood value) or ``percentile``
        (of this image's own log-likelihoods); by default the lowest 1 %.
        """
        if threshold is not None and percentile is not None:
            raise ValueError("Give either threshold or percentile, not both.")
        if threshold is None:
            threshold = self.anomaly_threshold(1.0 if percentile is None else percentile)
        with np.errstate(invalid="ignore"):
            return (self.log_likelihood < threshold) & self.mask


def smooth_probabilities(probabilities: np.ndarray, mask: np.ndarray, strength: float,
                         n_iter: int = _MEAN_FIELD_ITERATIONS) -> np.ndarray:
    """Mean-field inference of a Potts Markov random field over the pixels.

    Each pixel's distribution is its mixture posterior times
    ``exp(strength * sum of its 8 neighbours' distributions)``, renormalised;
    ``n_iter`` synchronous updates. Neighbours that agree reinforce each
    other, so isolated pixels whose colour is ambiguous join the region
    around them while clear colour edges stay. Masked pixels take no part.
    """
    from scipy import ndimage  # scipy.ndimage costs start-up time; only smoothing needs it

    prior = probabilities
    q = prior.copy()
    outside = ~mask
    for _ in range(n_iter):
        neighbours = ndimage.uniform_filter(q, size=(3, 3, 1), mode="constant") * np.float32(9.0) - q
        energy = neighbours * np.float32(strength)
        energy -= energy.max(axis=2, keepdims=True)
        q = prior * np.exp(energy)
        total = q.sum(axis=2, keepdims=True)
        q = np.where(total > 0, q / np.where(total > 0, total, 1), prior)
        q[outside] = 0.0
    return q.astype(np.float32, copy=False)

def _pooled_image(images: list[ImageData], colors: np.ndarray) -> ImageData:
    """The used pixels of several images as one 1-row image (for naming and
    bit depth only; positions are not used with several images)."""
    return ImageData(
        pixels=colors[None], mask=np.ones((1, colors.shape[0]), dtype=bool),
        bit_depth=max(im.bit_depth for im in images), mode="pooled",
    )


@dataclass
class ColorTable:
    """An image's distinct colours, their features and where they are.

    Attributes
    ----------
    features : ndarray (M, d)
        Colour features of each distinct colour.
    counts : ndarray (M,)
        Pixels of each colour.
    colors : ndarray (M, 3)
        Display colour (sRGB in [0, 1]) of each colour.
    index : ndarray (H, W) of int
        Row of ``features`` of every pixel; -1 where masked out.
    """

    features: np.ndarray
    counts: np.ndarray
    colors: np.ndarray
    index: np.ndarray


@dataclass
class _TrainingData:
    X: np.ndarray
    sample_weight: np.ndarray | None
    colors: np.ndarray  # display colour (sRGB) of each row of X
    counts: np.ndarray  # pixels represented by each row
    pixel_rows: np.ndarray | None = None  # row of X of each used pixel of the one image, when known


ImageLike = str | os.PathLike | ImageData | np.ndarray


class Segmenter:
    """Segment images by fitting a Gaussian mixture to pixel colour features.

    Parameters
    ----------
    n_components : int, optional
        Number of segments (mixture components); default 4.
    params : SegmenterParams, optional
        All settings at once; keyword arguments change some of them.
    **settings
        Any setting of :class:`gmmseg.params.SegmenterParams`:
        ``covariance_type`` ('full', 'tied', 'diag', 'spherical'),
        ``color_space`` ('lab', 'rgb', 'hsv', 'ycbcr', 'gray'),
        ``spatial_weight`` (weight of the pixel position features; 0 = colour
        only), ``smoothing`` (Potts mean-field smoothing of the
        probabilities: 0 off, 1 gentle, about 3 makes very noisy regions
        coherent), ``max_iter``, ``tol``, ``reg_covar``, ``n_init``,
        ``init_params``, ``random_state`` (an int or None: settings are
        plain data that model files keep, so a ``numpy.random.RandomState``
        is not accepted here, unlike :class:`gmmseg.GaussianMixture`) and
        ``max_samples`` (fit on a
        seeded random subset of at most this many pixels; the whole image
        is still predicted).

    Each setting is also readable as an attribute (``seg.covariance_type``);
    ``set_params`` changes them (checked as on construction).

    When the features depend on colour alone, the mixture is fitted on the
    image's unique colours with their pixel counts as weights: exactly the
    same model as fitting every pixel, at a fraction of the cost.
    Components are ordered by the lightness of their mean colour (darkest
    first), so the same image gives the same label numbers.
    """

    def __init__(self, n_components: int | None = None, *, params: SegmenterParams | None = None, **settings: Any):
        if n_components is not None:
            settings["n_components"] = n_components
        base = SegmenterParams() if params is None else params
        if not isinstance(base, SegmenterParams):
            raise ValueError(f"params must be a SegmenterParams, got {type(base).__name__}.")
        object.__setattr__(self, "params", base.replace(**settings))

    # Settings read and written as attributes go through ``params``, so there
    # is one copy of each and every change is checked.
    def __getattr__(self, name: str) -> Any:
        if name in SegmenterParams.names():
            return getattr(self.params, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in SegmenterParams.names():
            object.__setattr__(self, "params", self.params.replace(**{name: value}))
        else:
            object.__setattr__(self, name, value)

    @property
    def features(self) -> FeatureConfig:
        """The feature settings (colour space, spatial weight)."""
        return self.params.features

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The settings as a dict (see :class:`gmmseg.params.SegmenterParams`)."""
        return self.params.to_dict()

    def set_params(self, **settings: Any) -> "Segmenter":
        """Change settings (checked); returns self. A fitted model keeps its
        mixture until the next fit."""
        object.__setattr__(self, "params", self.params.replace(**settings))
        return self

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"Segmenter({params})"

    # ------------------------------------------------------------------
    def _colors_for_model(self, image: ImageData, channels: int) -> np.ndarray:
        """Used pixels' colours with the channel count the model expects."""
        colors = image.pixels[image.mask]
        if colors.shape[1] == channels:
            return colors
        if channels == 3:  # grey image, colour model: R = G = B
            return np.repeat(colors, 3, axis=1)
        return luminance(colors)[:, None]  # colour image, grey model

    def color_table(self, image: ImageLike, channels: int | None = None) -> ColorTable:
        """The distinct colours of an image with their features, counts and
        pixel positions, under this segmenter's colour settings.

        Cheap to evaluate a mixture on (e.g. live previews of a running
        fit); position features are not part of it. ``channels`` defaults to
        the fitted model's, else the image's own.
        """
        image = load_image(image)
        if channels is None:
            channels = getattr(self, "channels_", image.pixels.shape[2])
        colors = self._colors_for_model(image, channels)
        unique, counts, inverse = unique_colors(colors, image.bit_depth)
        index = np.full(image.mask.shape, -1, dtype=np.int64)
        index[image.mask] = inverse
        display = np.repeat(unique, 3, axis=1) if unique.shape[1] == 1 else unique
        return ColorTable(color_features(unique, self.features.color_space), counts, display, index)

    def _training_data(self, image):
        """Rows to fit. ``image`` may also be a list of images (fitted together)."""
        if isinstance(image, (list, tuple)):
            images = [load_image(im) for im in image]
            if not images:
                raise ValueError("No images to fit.")
            if self.features.uses_position and len(images) > 1:
                raise ValueError("spatial_weight > 0 needs one image per fit: positions of different images do not mix.")
            channels = 3 if any(not im.is_gray for im in images) else 1
            colors = np.concatenate([self._colors_for_model(im, channels) for im in images])
            image = images[0] if len(images) == 1 else _pooled_image(images, colors)
        else:
            image = load_image(image)
            channels = image.pixels.shape[2]
            colors = self._colors_for_model(image, channels)
        positions = position_features(image.mask, self.features.spatial_weight) if self.features.uses_position else None
        n = colors.shape[0]
        if n == 0:
            raise ValueError(f"{image.name}: no usable pixels (all transparent or not finite).")
        if n < self.n_components:
            raise ValueError(
                f"{image.name}: only {n} usable pixels, fewer than n_components={self.n_components}; "
                "use fewer components."
            )
        if self.max_samples is not None and n > self.max_samples:
            rng = np.random.RandomState(self.random_state if self.random_state is not None else 0)
            keep = np.sort(rng.choice(n, size=self.max_samples, replace=False))
            colors = colors[keep]
            positions = positions[keep] if positions is not None else None
        unique, counts, inverse = unique_colors(colors, image.bit_depth)
        feats = color_features(unique, self.features.color_space)
        display = np.repeat(unique, 3, axis=1) if unique.shape[1] == 1 else unique
        if positions is None:
            # Every used pixel maps to a row unless pixels were pooled or sampled.
            whole = colors.shape[0] == n and image.mode != "pooled"
            return image, channels, _TrainingData(feats, counts, display, counts, inverse if whole else None)
        X = np.hstack([feats.astype(np.float32)[inverse], positions])
        ones = np.ones(X.shape[0])
        return image, channels, _TrainingData(X, None, display[inverse], ones)

    def fit(self, image: ImageLike | list[ImageLike], callback: Callable[[EMProgress], bool | None] | None = None
            ) -> "Segmenter":
        """Fit the mixture to an image (path, ImageData or array), or to the
        pixels of several images together (a list).

        ``callback`` receives an :class:`gmmseg.EMProgress` after every EM
        iteration (and every k-means step of the initialisation, with
        ``phase == "init"``); returning True stops the fit, and the model
        stays usable.
        """
        self._fit(image, callback)
        return self

    def _fit(self, image, callback):
        """Fit; returns the (loaded) image and its training data."""
        image, channels, data = self._training_data(image)
        gm = self.params.mixture()
        gm.fit(data.X, sample_weight=data.sample_weight, callback=callback)
        colors = self._mean_colors(gm, data)
        order = np.lexsort((-gm.weights_, lab_lightness(colors)))
        gm.reorder_components(order)
        self.gmm_ = gm
        self.component_colors_ = colors[order]
        self.component_names_ = [f"Component {k}" for k in range(self.n_components)]
        self.channels_ = channels
        self.n_features_in_ = data.X.shape[1]
        return image, data

    @staticmethod
    def _mean_colors(gm, data):
        """Responsibility-weighted mean sRGB colour of each component."""
        K = gm.means_.shape[0]
        sums = np.zeros((K, 3))
        mass = np.zeros(K)
        for start in range(0, data.X.shape[0], _CHUNK_ROWS):
            stop = start + _CHUNK_ROWS
            _, proba, _ = gm.estimate(data.X[start:stop])
            weighted = proba * data.counts[start:stop, None]
            sums += weighted.T @ data.colors[start:stop]
            mass += weighted.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            colors = np.where(mass[:, None] > 0, sums / mass[:, None], 0.5)
        return np.clip(colors, 0.0, 1.0)

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "gmm_")

    def _check_fitted(self):
        if not self.is_fitted:
            raise NotFittedError("This Segmenter is not fitted yet; call fit(image) or load a model first.")

    def rename_components(self, names: list[str]) -> None:
        """Give the components names (shown in the application, saved in model files)."""
        self._check_fitted()
        names = [str(n) for n in names]
        if len(names) != self.gmm_.n_components:
            raise ValueError(f"give {self.gmm_.n_components} names, got {len(names)}.")
        self.component_names_ = names

    def predict(self, image: ImageLike) -> "Segmentation":
        """Segment an image with the fitted model.

        Returns
        -------
        Segmentation
        """
        self._check_fitted()
        image = load_image(image)
        colors = self._colors_for_model(image, self.channels_)
        K = self.gmm_.means_.shape[0]
        if self.features.uses_position:
            unique, _, inverse = unique_colors(colors, image.bit_depth)
            feats = color_features(unique, self.features.color_space).astype(np.float32)[inverse]
            X = np.hstack([feats, position_features(image.mask, self.features.spatial_weight)])
            labels_v, proba_v, ll_v = self.gmm_.estimate(X, proba_dtype=np.float32)
        elif colors.shape[0]:
            unique, _, inverse = unique_colors(colors, image.bit_depth)
            X = color_features(unique, self.features.color_space)
            labels_u, proba_u, ll_u = self.gmm_.estimate(X, proba_dtype=np.float32)
            labels_v, proba_v, ll_v = labels_u[inverse], proba_u[inverse], ll_u[inverse]
        else:
            labels_v = np.empty(0, np.int64)
            proba_v = np.empty((0, K), np.float32)
            ll_v = np.empty(0)
        return self._segmentation(image, labels_v, proba_v, ll_v)

    def _segmentation(self, image, labels_v, proba_v, ll_v):
        """Image-shaped maps from per-used-pixel labels, probabilities and
        log-likelihoods (smoothed when asked)."""
        H, W = image.mask.shape
        K = proba_v.shape[1]
        full = bool(image.mask.all())
        if full:
            probabilities = proba_v.reshape(H, W, K)
        else:
            probabilities = np.zeros((H, W, K), dtype=np.float32)
            probabilities[image.mask] = proba_v
        log_likelihood = np.full((H, W), np.nan, dtype=np.float32)
        log_likelihood[image.mask] = ll_v
        labels = np.full((H, W), -1, dtype=np.int32)
        if self.smoothing > 0 and proba_v.shape[0]:
            probabilities = smooth_probabilities(probabilities, image.mask, self.smoothing)
            labels[image.mask] = probabilities[image.mask].argmax(axis=1)
        else:
            labels[image.mask] = labels_v
        return Segmentation(
            labels, probabilities, log_likelihood, image.mask.copy(),
            self.component_colors_, self.gmm_.weights_, self.component_names_,
        )

    def fit_predict(self, image: ImageLike, callback: Callable[[EMProgress], bool | None] | None = None
                    ) -> "Segmentation":
        """Fit on an image and segment it; returns a :class:`Segmentation`.

        The same as ``fit(image).predict(image)``, but the image's unique
        colours and their features are found once, not twice.
        """
        image, data = self._fit(load_image(image), callback)
        if data.pixel_rows is None:
            return self.predict(image)
        labels_u, proba_u, ll_u = self.gmm_.estimate(data.X, proba_dtype=np.float32)
        rows = data.pixel_rows
        return self._segmentation(image, labels_u[rows], proba_u[rows], ll_u[rows])

    # ------------------------------------------------------------------
    # state and model files
    def to_state(self) -> SegmenterState:
        """The fitted model as plain data (what a model file holds)."""
        self._check_fitted()
        gm = self.gmm_
        mixture = MixtureState(
            gm.covariance_type, gm.weights_.copy(), gm.means_.copy(), gm.precisions_cholesky_.copy(),
            converged=bool(gm.converged_), n_iter=int(gm.n_iter_),
            lower_bound=float(gm.lower_bound_) if np.isfinite(gm.lower_bound_) else None,
        )
        return SegmenterState(
            self.params, int(self.channels_), mixture, np.array(self.component_colors_, dtype=np.float64),
            list(self.component_names_),
        )

    @classmethod
    def from_state(cls, state: SegmenterState) -> "Segmenter":
        """A fitted Segmenter from :meth:`to_state`'s data (checked: raises
        ValueError when the parts do not fit together)."""
        params = state.params
        m = state.mixture
        gm = GaussianMixture.from_parameters(
            m.weights, m.means, m.precisions_cholesky, covariance_type=m.covariance_type,
            tol=params.tol, reg_covar=params.reg_covar, max_iter=params.max_iter, n_init=params.n_init,
            init_params=params.init_params, random_state=params.random_state,
        )
        K, d = gm.means_.shape
        if K != params.n_components or gm.covariance_type != params.covariance_type:
            raise ValueError("the mixture does not match the segmenter settings")
        if state.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {state.channels!r}")
        expected = params.features.n_features(state.channels)
        if d != expected:
            raise ValueError(f"{d} features do not match the feature settings ({expected})")
        colors = np.asarray(state.component_colors, dtype=np.float64)
        if colors.shape != (K, 3) or not np.all(np.isfinite(colors)):
            raise ValueError(f"components.colors must be {K} RGB triples")
        if len(state.component_names) != K:
            raise ValueError(f"components.names must be {K} strings")
        gm.converged_ = bool(m.converged)
        gm.n_iter_ = int(m.n_iter)
        gm.lower_bound_ = float(m.lower_bound) if m.lower_bound is not None else -np.inf
        segmenter = cls(params=params)
        segmenter.gmm_ = gm
        segmenter.component_colors_ = np.clip(colors, 0.0, 1.0)
        segmenter.component_names_ = [str(n) for n in state.component_names]
        segmenter.channels_ = int(state.channels)
        segmenter.n_features_in_ = d
        return segmenter

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the fitted model (mixture and settings) as a JSON model file;
        returns its path. An existing file is replaced only with ``overwrite``."""
        return save_state(self.to_state(), path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Segmenter":
        """Read a model written by :meth:`save` (or an inspection model);
        raises :class:`gmmseg.ModelFileError` for a bad file."""
        state = read_segmenter_state(path)
        try:
            return cls.from_state(state)
        except ValueError as exc:
            raise ModelFileError(f"{path}: invalid model: {exc}") from None


@dataclass
class KSelection:
    """The result of :func:`select_k`.

    Attributes
    ----------
    rows : list of dict
        One per fitted model: k, covariance_type, bic, aic, log_likelihood
        (mean per pixel), n_parameters, converged, n_iter, lower_bound (EM's
        last mean log-likelihood, as ``GaussianMixture.lower_bound_``).
    criterion : str
    best_k : int
    best_covariance_type : str
    """

    rows: list = field(default_factory=list)
    criterion: str = "bic"
    best_k: int = 0
    best_covariance_type: str = ""

    def best_row(self) -> dict | None:
        for row in self.rows:
            if row["k"] == self.best_k and row["covariance_type"] == self.best_covariance_type:
                return row
        return None

    def format_table(self) -> str:
        """The table as aligned text, the best row marked with '*'."""
        lines = [f"{'':1} {'K':>3} {'covariance':<10} {'BIC':>14} {'AIC':>14} {'log-lik/pixel':>14}"]
        for row in self.rows:
            mark = "*" if row is self.best_row() else " "
            lines.append(
                f"{mark:1} {row['k']:>3} {row['covariance_type']:<10} {row['bic']:>14.1f} "
                f"{row['aic']:>14.1f} {row['log_likelihood']:>14.4f}"
            )
        return "\n".join(lines)


def select_k(
    image: ImageLike | list[ImageLike],
    k_range: Iterable[int] = range(1, 9),
    covariance_type: str | Iterable[str] | None = None,
    criterion: str = "bic",
    *,
    params: SegmenterParams | None = None,
    callback: Callable[[dict], bool | None] | None = None,
    **settings: Any,
) -> KSelection:
    """Fit a mixture for every K (and covariance type) and pick the best.

    Parameters
    ----------
    image : path, ImageData or array, or a list of them
        Several images are pooled (as :meth:`Segmenter.fit` does).
    k_range : iterable of int
    covariance_type : str or sequence of str, optional
        One covariance type, or several to compare; default: the settings'.
    criterion : {'bic', 'aic'}
    params : SegmenterParams, optional
        Every other setting (colour space, iterations, initialisation,
        sampling...); keyword arguments change some of them.
    callback : callable, optional
        Called with each finished row (a dict); returning True stops the
        sweep early (the rows so far are kept).

    Returns
    -------
    KSelection
    """
    if criterion not in ("bic", "aic"):
        raise ValueError(f"criterion must be 'bic' or 'aic', got {criterion!r}.")
    ks = list(check_int_list(k_range, "k_range"))
    base = SegmenterParams() if params is None else params
    if covariance_type is not None:
        types = [covariance_type] if isinstance(covariance_type, str) else list(covariance_type)
    else:
        types = [base.covariance_type]
    settings.pop("n_components", None)  # the sweep sets K
    template = Segmenter(params=base.replace(n_components=min(ks), covariance_type=types[0], **settings))
    sweep = template.params
    _, _, data = template._training_data(image)
    result = KSelection(criterion=criterion)
    stopped = False
    for ctype in types:
        if stopped:
            break
        for k in ks:
            gm = sweep.mixture(k, ctype)
            if data.sample_weight is None and data.X.shape[0] < k:
                continue  # fewer pixels than components
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                gm.fit(data.X, sample_weight=data.sample_weight)
            row = {
                "k": k,
                "covariance_type": ctype,
                "bic": float(gm.bic(data.X, sample_weight=data.sample_weight)),
                "aic": float(gm.aic(data.X, sample_weight=data.sample_weight)),
                "log_likelihood": float(gm.score(data.X, sample_weight=data.sample_weight)),
                "n_parameters": int(gm._n_parameters()),
                "converged": bool(gm.converged_),
                "n_iter": int(gm.n_iter_),
                "lower_bound": float(gm.lower_bound_),
            }
            result.rows.append(row)
            if callback is not None and callback(row) is True:
                stopped = True
                break
    if not result.rows:
        raise ValueError("No K in k_range could be fitted (fewer pixels than components).")
    best = min(result.rows, key=lambda r: r[criterion])
    result.best_k = best["k"]
    result.best_covariance_type = best["covariance_type"]
    return result
