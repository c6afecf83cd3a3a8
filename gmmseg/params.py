"""Every model and feature setting, declared once.

A setting is one field of a frozen dataclass below, declared with
:func:`_setting`: its default, its constraint, its one-line help, its
command-line flag and its label in the application. Everything else is
derived from these declarations: validation (one table, one message per
constraint), ``to_dict``/``from_dict`` for model files, the command-line
options (:mod:`gmmseg.cli`), the application's Model panel and its saved
state (:mod:`gmmseg.gui`). A new setting is added here and nowhere else.

* :class:`SegmenterParams`: how pixels become features and how the mixture
  is fitted (used by :class:`gmmseg.Segmenter`, :func:`gmmseg.select_k` and
  :class:`gmmseg.Inspector`).
* :class:`InspectionParams`: what :class:`gmmseg.Inspector` adds (K chosen,
  false-alarm rate of pixels, false-reject rate of images, score smoothing,
  minimum area).
"""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from . import _validation as check
from .engine import COVARIANCE_TYPES, INIT_PARAMS, GaussianMixture
from .features import COLOR_SPACES, FEATURE_SETS, TEXTURE_FILTER_SETS, FeatureConfig

KINDS = ("int", "float", "choice", "seed", "optional_int", "bool", "int_list")

#: The most components a segmentation can have: ``labels.png`` is a palette
#: PNG whose 256 indices are the components and 255 for masked pixels.
MAX_COMPONENTS = 255
#: Upper bounds of settings that are otherwise open-ended, far beyond any
#: useful value, so that a typing slip or a hostile model file fails at once
#: with a usage error instead of after (or during) a long or huge run.
MAX_WEIGHT = 1000.0  # spatial_weight and smoothing: 1000 already overrides every colour
MAX_RESTARTS = 1000  # n_init and n_starts
MAX_ITERATIONS = 100_000
MAX_SCORE_SMOOTHING = 100.0  # pixels; scipy's kernel is 8 sigma + 1 pixels per axis
MAX_AREA = 1_000_000_000  # pixels: a 1000-megapixel image


@dataclass(frozen=True)
class Setting:
    """The declaration of one setting.

    Attributes
    ----------
    name : str
        The keyword argument (filled in from the dataclass field).
    default : object
    kind : {'int', 'float', 'choice', 'seed', 'optional_int', 'bool', 'int_list'}
        'seed' is an integer in [0, 2**32) or None; 'optional_int' an integer
        or None (None meaning "no limit"); 'int_list' an increasing list of
        integers such as ``range(1, 9)``.
    help : str
        One line: what it does (command-line help, tooltip).
    label : str
        Its name in the application.
    flags : tuple of str
        Command-line flags; empty for settings the command line does not set.
    group : str
        'features' for settings that change the feature matrix (kept in the
        model file's features section), else 'model'.
    minimum, maximum : float or None
    exclusive_minimum, exclusive_maximum : bool
    choices : tuple of str
    max_length : int or None
        'int_list': at most this many values.
    widget_range : tuple or None
        Range of the application's spin box where the valid range is
        open-ended.
    widget_step : float or None
    widget_decimals : int
    """

    default: Any
    kind: str
    help: str
    label: str
    flags: tuple = ()
    group: str = "model"
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    choices: tuple = ()
    max_length: int | None = None
    widget_range: tuple | None = None
    widget_step: float | None = None
    widget_decimals: int = 2
    name: str = ""

    def check(self, value: Any) -> Any:
        """The value normalised, or ValueError saying what to give instead."""
        name = self.name
        if self.kind == "int":
            return check.check_int(value, name, minimum=self.minimum, maximum=self.maximum)
        if self.kind == "float":
            return check.check_number(
                value, name, minimum=self.minimum, maximum=self.maximum,
                exclusive_minimum=self.exclusive_minimum, exclusive_maximum=self.exclusive_maximum,
            )
        if self.kind == "choice":
            return check.check_choice(value, name, self.choices)
        if self.kind == "bool":
            return check.check_bool(value, name)
        if self.kind == "int_list":
            return check.check_int_list(value, name, minimum=int(self.minimum or 1),
                                        maximum=None if self.maximum is None else int(self.maximum),
                                        max_length=self.max_length)
        if value is None:  # 'seed' and 'optional_int' take None
            return None
        if self.kind == "seed":
            try:
                return check.check_int(value, name, minimum=0, maximum=2**32 - 1)
            except ValueError:
                raise ValueError(f"{name} must be None or an integer in [0, 2**32 - 1], got {value!r}.") from None
        try:
            return check.check_int(value, name, minimum=self.minimum, maximum=self.maximum)
        except ValueError:
            raise ValueError(f"{name} must be None or an integer >= {self.minimum:g}, got {value!r}.") from None

    def to_json(self, value: Any) -> Any:
        return list(value) if self.kind == "int_list" else value

    def describe_default(self) -> str:
        if self.kind == "int_list":
            values = self.default
            return f"{values[0]}-{values[-1]}" if values == tuple(range(values[0], values[-1] + 1)) else str(list(values))
        if self.default is None:
            return "none" if self.kind == "seed" else "all"
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)


def _setting(default: Any, kind: str, help: str, label: str, **spec: Any) -> Any:
    """A dataclass field that declares a setting (see :class:`Setting`)."""
    if kind not in KINDS:
        raise TypeError(f"unknown setting kind {kind!r}")
    return field(default=default, metadata={"setting": Setting(default, kind, help, label, **spec)})


class _Settings:
    """Shared behaviour of the settings dataclasses: validation, dicts,
    replacement. Subclasses are frozen dataclasses whose fields are all
    declared with :func:`_setting`."""

    _table: ClassVar[tuple[Setting, ...]] = ()

    def __post_init__(self) -> None:
        for setting in self.settings():
            object.__setattr__(self, setting.name, setting.check(getattr(self, setting.name)))

    @classmethod
    def settings(cls) -> tuple[Setting, ...]:
        """The declarations of this class's settings, in order."""
        if "_table" not in cls.__dict__:
            cls._table = tuple(
                dataclasses.replace(f.metadata["setting"], name=f.name) for f in dataclasses.fields(cls)
            )
        return cls._table

    @classmethod
    def setting(cls, name: str) -> Setting:
        for s in cls.settings():
            if s.name == name:
                return s
        raise KeyError(name)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(s.name for s in cls.settings())

    @classmethod
    def _check_known(cls, keys) -> None:
        unknown = sorted(set(keys) - set(cls.names()))
        if unknown:
            raise ValueError(
                f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for "
                f"{cls.__name__}; the settings are {', '.join(cls.names())}."
            )

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict, in declaration order."""
        return {s.name: s.to_json(getattr(self, s.name)) for s in self.settings()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Settings from a dict; missing settings take their defaults,
        unknown ones are an error (they may come from a newer gmmseg)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{cls.__name__} settings must be a mapping, got {type(data).__name__}.")
        cls._check_known(data)
        return cls(**data)

    def replace(self, **changes: Any) -> Self:
        """A copy with some settings changed (and checked)."""
        self._check_known(changes)
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class SegmenterParams(_Settings):
    """How pixels become features and how the Gaussian mixture is fitted.

    Immutable and validated on construction; ``replace(**changes)`` gives a
    changed copy. The order of the fields is the order of ``to_dict`` (and of
    ``Segmenter.get_params``).
    """

    n_components: int = _setting(
        4, "int", "number of segments (mixture components)", "Components (K)",
        flags=("-k", "--n-components"), minimum=1, maximum=MAX_COMPONENTS, widget_range=(1, MAX_COMPONENTS),
    )
    covariance_type: str = _setting(
        "full", "choice",
        "shape of each component: full (any ellipsoid), tied (one shared), diag (axis-aligned), spherical (round)",
        "Covariance", flags=("--covariance",), choices=COVARIANCE_TYPES,
    )
    color_space: str = _setting(
        "lab", "choice", "colour features: lab (perceptual), rgb, hsv (hue as an angle), ycbcr, gray (lightness only)",
        "Colour space", flags=("--color-space",), group="features", choices=COLOR_SPACES,
    )
    feature_set: str = _setting(
        "color", "choice",
        "what describes a pixel: color (its colour), texture (a multi-scale filter bank on lightness, see "
        "texture_filters), color+texture (both), auto (color+texture for grey images, color for colour images; "
        "the default of inspection)",
        "Features", flags=("--features",), group="features", choices=FEATURE_SETS,
    )
    texture_scales: tuple = _setting(
        (1, 2, 4, 8, 16), "int_list", "Gaussian scales (pixels) of the texture filter bank", "Texture scales",
        flags=("--texture-scales",), group="features", minimum=1, maximum=64, max_length=8,
    )
    texture_filters: str = _setting(
        "smoothed+gradient", "choice",
        "texture filters at every scale: smoothed lightness, its local standard deviation, and/or the local energy "
        "of its derivatives along x and y (oriented texture)", "Texture filters", flags=("--texture-filters",),
        group="features", choices=TEXTURE_FILTER_SETS,
    )
    illumination_sigma: float = _setting(
        8.0, "float",
        "texture: lightness is divided by its background blurred at this scale (pixels), so that parts lit more "
        "brightly or dimly look alike; 0 = off", "Illumination scale", flags=("--illumination-sigma",),
        group="features", minimum=0.0, maximum=1000.0, widget_range=(0.0, 1000.0), widget_step=1.0,
    )
    row_column_sigma: float = _setting(
        0.0, "float",
        "texture: after the illumination normalisation, lightness's average along its row and then along its "
        "column (Gaussian at this scale, pixels) is subtracted, so that grain, streaks and edges running straight "
        "across the part are not defects while holes, cracks and stains shorter than the scale stay; 0 = off",
        "Row/column background", flags=("--row-column-sigma",),
        group="features", minimum=0.0, maximum=1000.0, widget_range=(0.0, 1000.0), widget_step=1.0,
    )
    spatial_weight: float = _setting(
        0.5, "float", "weight of the pixel position (x, y) among the features; 0 = colour only",
        "Spatial weight", flags=("--spatial-weight",), group="features", minimum=0.0, maximum=MAX_WEIGHT,
        widget_range=(0.0, MAX_WEIGHT), widget_step=0.1,
    )
    smoothing: float = _setting(
        2.0, "float",
        "strength of the spatial prior (Potts) that neighbouring pixels share a segment, used in the fit and in "
        "the maps: 0 = off, 1 = gentle, 3 = strong",
        "Smoothing", flags=("--smoothing",), minimum=0.0, maximum=MAX_WEIGHT, widget_range=(0.0, MAX_WEIGHT),
        widget_step=0.5,
    )
    max_iter: int = _setting(
        100, "int", "maximum EM iterations", "Max iterations", flags=("--max-iter",), minimum=0,
        maximum=MAX_ITERATIONS,
    )
    tol: float = _setting(
        1e-3, "float", "EM stops when the mean log-likelihood changes less than this", "Tolerance",
        flags=("--tol",), minimum=0.0, widget_range=(0.0, 1e6), widget_step=1e-4, widget_decimals=8,
    )
    reg_covar: float = _setting(
        1e-6, "float", "added to the covariance diagonals so that no component collapses", "Regularisation",
        flags=("--reg-covar",), minimum=0.0, widget_range=(0.0, 1e6), widget_step=1e-6, widget_decimals=10,
    )
    n_init: int = _setting(
        1, "int", "restarts from different initialisations; the best fit is kept", "Restarts",
        flags=("--n-init",), minimum=1, maximum=MAX_RESTARTS,
    )
    n_starts: int = _setting(
        8, "int",
        "initialisations tried on a sample of at most 20,000 pixels; the best n_init of them are refined on the "
        "training pixels (1 = every restart on them, as scikit-learn)",
        "Starts", flags=("--starts",), minimum=1, maximum=MAX_RESTARTS,
    )
    init_params: str = _setting(
        "kmeans", "choice", "how the first parameters are chosen", "Initialisation",
        flags=("--init-params",), choices=INIT_PARAMS,
    )
    random_state: int | None = _setting(
        0, "seed", "random seed of the initialisation (same seed, same result)", "Seed", flags=("--seed",),
        widget_range=(0, 2**31 - 1),
    )
    max_samples: int | None = _setting(
        None, "optional_int",
        "fit on a random (seeded) subset of at most this many pixels (the spatial prior: a regular grid); none = all",
        "Max samples", flags=("--max-samples",), minimum=1, widget_range=(0, 2_000_000_000),
    )

    k_criterion: str = _setting(
        "bic-300", "choice",
        "how K is chosen over a range (select-k, Auto K, inspection): bic-300 = BIC at an effective sample size of "
        "300 pixels (neighbouring pixels are not independent; plain BIC then picks the largest K on most images), "
        "bic, aic",
        "K criterion", flags=("--criterion",), choices=("bic-300", "bic", "aic"),
    )
    spatial_fit_pixels: int | None = _setting(
        250_000, "optional_int",
        "the spatial prior is fitted on a regular grid of at most this many pixels (the maps use every pixel); "
        "none = all pixels", "Spatial fit pixels", flags=("--spatial-fit-pixels",), minimum=1000,
        widget_range=(0, 2_000_000_000),
    )

    @property
    def features(self) -> FeatureConfig:
        """The feature settings as a :class:`gmmseg.features.FeatureConfig`."""
        return FeatureConfig(self.color_space, self.spatial_weight, self.feature_set, self.texture_scales,
                             self.illumination_sigma, self.texture_filters, self.row_column_sigma)

    def feature_settings(self) -> dict[str, Any]:
        """The settings of the 'features' group (they define the feature matrix)."""
        return {s.name: s.to_json(getattr(self, s.name)) for s in self.settings() if s.group == "features"}

    def mixture(self, n_components: int | None = None, covariance_type: str | None = None) -> GaussianMixture:
        """An unfitted :class:`gmmseg.GaussianMixture` with these settings
        (optionally another K or covariance type, for K sweeps)."""
        return GaussianMixture(
            self.n_components if n_components is None else n_components,
            covariance_type=self.covariance_type if covariance_type is None else covariance_type,
            tol=self.tol,
            reg_covar=self.reg_covar,
            max_iter=self.max_iter,
            n_init=self.n_init,
            init_params=self.init_params,
            random_state=self.random_state,
        )


@dataclass(frozen=True)
class InspectionParams(_Settings):
    """What defect inspection adds to the segmenter settings."""

    auto_k: bool = _setting(
        True, "bool", "choose K over k_range by the K criterion (otherwise n_components is used)", "Choose K",
    )
    k_range: tuple = _setting(
        tuple(range(1, 9)), "int_list", "values of K tried when K is chosen", "K range",
        flags=("--k-range",), minimum=1, maximum=MAX_COMPONENTS,
    )
    false_alarm_rate: float = _setting(
        1e-4, "float",
        "expected fraction of good pixels above the pixel threshold (on the unsmoothed score), over which a "
        "detected defect's mask grows", "False-alarm rate",
        flags=("--false-alarm-rate",), minimum=0.0, maximum=0.5, exclusive_minimum=True, exclusive_maximum=True,
    )
    false_reject_rate: float = _setting(
        0.05, "float",
        "expected fraction of good images that fail: sets the image threshold, calibrated on the image scores of "
        "references held out of the fit", "False-reject rate",
        flags=("--false-reject-rate",), minimum=0.0, maximum=0.5, exclusive_minimum=True, exclusive_maximum=True,
        widget_range=(0.001, 0.45), widget_step=0.01, widget_decimals=3,
    )
    smoothing_sigma: float = _setting(
        1.5, "float", "Gaussian smoothing (pixels) of the anomaly score used for detection", "Score smoothing",
        flags=("--score-smoothing",), minimum=0.0, maximum=MAX_SCORE_SMOOTHING, widget_range=(0.0, 20.0),
        widget_step=0.5,
    )
    min_area: int = _setting(
        25, "int",
        "an image fails when at least this many pixels of its smoothed score are above the image threshold; a "
        "defect region holds at least this many of them", "Minimum area",
        flags=("--min-area",), minimum=1, maximum=MAX_AREA, widget_range=(1, 1_000_000),
    )
    border_margin: int = _setting(
        0, "int",
        "pixels this close to the image's border are not inspected (no score, no region, left out of the "
        "score's smoothing like transparent pixels; the references' margins are still fitted), for pictures whose "
        "frame shows the part's rim or a fixture; 0 = every pixel",
        "Border margin", flags=("--border-margin",), minimum=0, maximum=MAX_AREA, widget_range=(0, 100_000),
    )


#: The segmenter settings an :class:`gmmseg.Inspector` starts from: more
#: iterations and a tighter tolerance than for segmentation, because the
#: threshold sits in the tail of the fitted density, and neither the spatial
#: prior nor position features: inspection needs the density of good pixels'
#: colours wherever they are, not regions (and fits several references).
#: Features 'auto': grey parts get texture, colour parts colour (measured on
#: the development sets, see the README). At most a million training pixels
#: (a seeded sample drawn from each reference in proportion to its size):
#: texture rows cannot be merged like colours, so without a cap the training
#: rows grow with every reference. On the Magnetic Tile references (2.1
#: million pixels) the cap left the results within one defect found and
#: took the fit's peak memory from 750 to 467 MB (see the README).
INSPECTOR_MODEL_DEFAULTS = SegmenterParams(max_iter=200, tol=1e-4, smoothing=0.0, spatial_weight=0.0, feature_set="auto",
                                          row_column_sigma=32.0, max_samples=1_000_000)

#: The settings whose inspection default differs from segmentation's (other
#: than the iterations, which the command line and the application take from
#: segmentation, and the spatial prior and positions, which inspection turns
#: off). The application's Inspection panel and napari's Inspect tab keep
#: these of their own (starting from INSPECTOR_MODEL_DEFAULTS), so that a
#: reference fit there is the fit ``gmmseg fit`` makes, with the texture that
#: grey parts need; every other setting comes from the Model panel / Segment
#: tab.
INSPECTION_MODEL_SETTINGS = ("feature_set", "row_column_sigma", "max_samples")

#: The inspection settings the application's Inspection panel and napari's
#: Inspect tab show (in the order of InspectionParams). Not among them: the
#: K range (the default one is tried) and the false-alarm rate, as a spin
#: box cannot show rates of 1e-4 (the application has a logarithmic slider,
#: napari keeps the default). INSPECTION_REFIT_SETTINGS shape the reference
#: model or its calibration: in the application they take effect at the
#: next Fit, while the others re-threshold the shown result.
INSPECTION_PANEL_SETTINGS = ("auto_k", "smoothing_sigma", "border_margin", "min_area", "false_reject_rate")
INSPECTION_REFIT_SETTINGS = INSPECTION_PANEL_SETTINGS[:3]


def reference_fit_params(model: SegmenterParams, inspection_model: SegmenterParams) -> SegmenterParams:
    """The segmenter settings of a reference fit in the application and in
    napari: ``model``'s (the Model panel's) without the spatial prior and
    positions (inspection models good pixels wherever they are), with the
    settings :data:`INSPECTION_MODEL_SETTINGS` from ``inspection_model``.
    """
    own = {name: getattr(inspection_model, name) for name in INSPECTION_MODEL_SETTINGS}
    return model.replace(smoothing=0.0, spatial_weight=0.0, **own)


def split_settings(settings: Mapping[str, Any], *classes: type[_Settings]) -> list[dict[str, Any]]:
    """Share keyword arguments out among settings classes (by name); an
    argument that belongs to none of them is an error naming them all."""
    parts: list[dict[str, Any]] = [{} for _ in classes]
    known: list[str] = []
    for cls in classes:
        known.extend(cls.names())
    for key, value in settings.items():
        for part, cls in zip(parts, classes):
            if key in cls.names():
                part[key] = value
                break
        else:
            raise ValueError(f"unknown setting {key!r}; the settings are {', '.join(known)}.")
    return parts
