"""Segmenting images with a Gaussian mixture over colour features."""

import copy
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _counting
from ._validation import check_int_list
from .engine import (
    ConvergenceWarning,
    EMProgress,
    GaussianMixture,
    NotFittedError,
    fit_potts,
    map_rows,
    mixture_from_grid,
    potts_posteriors,
    scratch_array,
)
from .features import (
    FeatureConfig,
    color_features,
    image_lightness,
    lab_lightness,
    luminance,
    position_axes,
    position_features,
    texture_features,
    unique_colors,
)
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
# About this many pixels per parallel task building per-pixel feature rows.
_FEATURE_CELLS = 1 << 16
# Distinct colours per parallel task converting them to features.
_COLOUR_BLOCK = 1 << 14
# Mean-field sweeps of the maps after the mixture's own posteriors (the
# fitted model is fixed by then; more sweeps change less than 1 % of labels).
_MAP_SWEEPS = 3
# Pixels drawn (by colour count) for the cheap initialisations of n_starts.
_START_SAMPLE = 20_000


# Rows of an image are segmented in strips of about this many pixels (with
# the rows of context that texture features and smoothing need around each):
# the per-pixel feature table, the mixture's table and the mean-field maps
# then exist for one strip at a time, not for the whole image.
_STRIP_PIXELS = 1 << 21
MAP_NAMES = ("labels", "probabilities", "log_likelihood")


def _row_chunks(height: int, width: int, multiple: int = 1) -> list[tuple[int, int]]:
    """Row ranges of about ``_STRIP_PIXELS`` pixels covering ``height`` rows;
    every boundary but the last is a multiple of ``multiple``."""
    rows = max(1, _STRIP_PIXELS // max(width, 1))
    rows = max(multiple, rows // multiple * multiple)
    return [(r, min(height, r + rows)) for r in range(0, height, rows)]


class _TableMaps:
    """Maps gathered from per-row results (one row per distinct colour) and
    the (H, W) map of each pixel's row."""

    def __init__(self, index: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, log_likelihood: np.ndarray):
        self.index = index
        self.values = {"labels": labels, "probabilities": probabilities, "log_likelihood": log_likelihood}

    def rows(self, name: str, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        index = np.ascontiguousarray(self.index[start:stop])
        values = self.values[name]
        if out is None:
            out = np.empty(index.shape + values.shape[1:], dtype=values.dtype)
        elif not out.flags.c_contiguous:  # the kernel writes rows of a flat view
            out[...] = self.rows(name, start, stop)
            return out
        masked = {"labels": -1, "probabilities": 0.0, "log_likelihood": np.nan}[name]
        # One kernel pass on the engine's threads, straight into ``out``
        # (numpy's gather runs on one core and needs a copy into a result).
        table = values.reshape(values.shape[0], int(np.prod(values.shape[1:], dtype=np.int64)))
        fill = np.full(table.shape[1], masked, dtype=values.dtype)
        rows, target = index.reshape(-1), out.reshape(index.size, table.shape[1])
        map_rows(lambda a, b: _counting.gather_rows(table, rows, fill, target, a, b), index.size)
        return out


class _StripMaps:
    """Maps computed strip by strip by the segmenter that made them (a copy,
    so that refitting it later does not change this result)."""

    def __init__(self, segmenter: "Segmenter", image: ImageData):
        self.segmenter = segmenter
        self.image = image

    def rows(self, name: str, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        return self.segmenter._strip_maps(self.image, start, stop, (name,), out=None if out is None else {name: out}
                                          )[name]


class Segmentation:
    """The result of segmenting one image.

    The maps are computed once and kept where they are cheap (labels and
    log-likelihood), and on demand otherwise: without per-pixel features
    (colour only, no smoothing) every map is gathered from a per-colour table
    through an index map, and with per-pixel features the probability maps
    are recomputed strip by strip when asked for (unless ``predict`` was
    asked to keep them). So no (H, W, K) array exists unless a caller reads
    :attr:`probabilities`; :meth:`map_rows` and :meth:`probability_map` read
    parts of the maps without it.

    Attributes
    ----------
    labels : ndarray (H, W), int32
        Most probable component; -1 where the pixel is masked out.
    probabilities : ndarray (H, W, K), float32
        Probability of each component; sums to 1 over K on used pixels, 0
        where masked out. Built when first read (and then kept).
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

    def __init__(self, labels: np.ndarray | None, probabilities: np.ndarray | None, log_likelihood: np.ndarray | None,
                 mask: np.ndarray, component_colors: np.ndarray, weights: np.ndarray, names: list[str] | None = None,
                 *, source: "_TableMaps | _StripMaps | None" = None):
        if source is None and (labels is None or probabilities is None or log_likelihood is None):
            raise ValueError("a Segmentation without a source of maps needs all three maps")
        self._maps = {"labels": labels, "probabilities": probabilities, "log_likelihood": log_likelihood}
        self._source = source
        self.mask = mask
        self.component_colors = np.asarray(component_colors, dtype=np.float64)
        self.weights = np.asarray(weights, dtype=np.float64)
        K = self.weights.shape[0]
        self.names = list(names) if names is not None else [f"Component {k}" for k in range(K)]
        self._uncertainty = None

    def _whole(self, name: str) -> np.ndarray:
        if self._maps[name] is None:
            H, W = self.mask.shape
            first = self._source.rows(name, 0, min(H, 1))
            out = np.empty((H, W) + first.shape[2:], dtype=first.dtype)
            for start, stop in _row_chunks(H, W):
                self._source.rows(name, start, stop, out=out[start:stop])
            self._maps[name] = out
        return self._maps[name]

    @property
    def labels(self) -> np.ndarray:
        return self._whole("labels")

    @property
    def probabilities(self) -> np.ndarray:
        return self._whole("probabilities")

    @property
    def log_likelihood(self) -> np.ndarray:
        return self._whole("log_likelihood")

    def has_map(self, name: str) -> bool:
        """Whether map ``name`` (one of ``MAP_NAMES``) is held whole (reading
        it costs nothing more)."""
        return self._maps[name] is not None

    def map_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of map ``name`` ('labels', 'probabilities' or
        'log_likelihood'), without building the whole map when it is not
        held: what writing a large result tile by tile reads."""
        if name not in MAP_NAMES:
            raise ValueError(f"name must be one of {', '.join(MAP_NAMES)}, got {name!r}.")
        H = self.mask.shape[0]
        start, stop = max(0, int(start)), min(H, int(stop))
        if self._maps[name] is not None:
            return self._maps[name][start:stop]
        return self._source.rows(name, start, stop)

    def row_chunks(self, multiple: int = 1) -> list[tuple[int, int]]:
        """Row ranges to read a map in with :meth:`map_rows` (a few million
        pixels each; boundaries but the last are multiples of ``multiple``)."""
        return _row_chunks(*self.mask.shape, multiple=multiple)

    def probability_map(self, k: int) -> np.ndarray:
        """Probability of component ``k`` at every pixel, (H, W) float32,
        without building the (H, W, K) map when it is not held."""
        if not 0 <= k < self.n_components:
            raise ValueError(f"k must be in 0..{self.n_components - 1}, got {k}.")
        if self._maps["probabilities"] is not None:
            return self._maps["probabilities"][..., k]
        out = np.empty(self.mask.shape, dtype=np.float32)
        for start, stop in self.row_chunks():
            out[start:stop] = self._source.rows("probabilities", start, stop)[..., k]
        return out

    @property
    def n_components(self) -> int:
        return self.weights.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape

    @property
    def uncertainty(self) -> np.ndarray:
        """Normalised entropy of the probabilities, (H, W) float32.

        0 means certain (one component has probability 1), 1 means all
        components equally likely; NaN where masked out (0 when K = 1).
        """
        if self._uncertainty is None:
            K = self.n_components
            out = np.full(self.mask.shape, np.nan, dtype=np.float32)
            for start, stop in self.row_chunks():
                mask = self.mask[start:stop]
                if K == 1:
                    out[start:stop][mask] = 0.0
                    continue
                p = self.map_rows("probabilities", start, stop)[mask]
                with np.errstate(divide="ignore", invalid="ignore"):
                    terms = np.where(p > 0, p * np.log(p), 0.0)
                entropy = -terms.sum(axis=1) / np.log(K)
                out[start:stop][mask] = np.clip(entropy, 0.0, 1.0)
            self._uncertainty = out
        return self._uncertainty

    def component_stats(self) -> list[dict[str, Any]]:
        """One dict per component: index, name, color, weight, pixel_count,
        area_fraction (of the used pixels)."""
        counts = np.zeros(self.n_components, dtype=np.int64)
        for start, stop in self.row_chunks():  # a strip at a time: no copy of every label
            counts += np.bincount(self.map_rows("labels", start, stop)[self.mask[start:stop]],
                                  minlength=self.n_components)
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
        values = self.log_likelihood[self.mask]  # a copy, ordered in place below
        if values.size == 0:
            return float("nan")
        # numpy.percentile's linear interpolation between the two order
        # statistics around the rank, without its second copy of the values.
        rank = percentile / 100.0 * (values.size - 1)
        below, above = int(np.floor(rank)), int(np.ceil(rank))
        values.partition([below, above] if above != below else below)
        low, high = float(values[below]), float(values[above])
        return low + (high - low) * (rank - below)

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


def _every(image: ImageData, step: int) -> ImageData:
    """Every ``step``-th pixel of an image in both directions (views)."""
    if step == 1:
        return image
    return ImageData(pixels=image.pixels[::step, ::step], mask=image.mask[::step, ::step], bit_depth=image.bit_depth,
                     source=image.source, mode=image.mode, value_range=image.value_range)


def _rows(image: ImageData, start: int, stop: int) -> ImageData:
    """Rows ``start:stop`` of an image (views)."""
    if start == 0 and stop >= image.mask.shape[0]:
        return image
    return ImageData(pixels=image.pixels[start:stop], mask=image.mask[start:stop], bit_depth=image.bit_depth,
                     source=image.source, mode=image.mode, value_range=image.value_range)


def _start_reporter(callback, start_index):
    """Reports of a fit on the starts' sample as phase "init" (the caller
    may stop it; its parameters are not the model's)."""
    if callback is None:
        return None

    def report(progress):
        return callback(EMProgress(start_index, progress.iteration, progress.lower_bound, progress.change,
                                   None, None, None, False, phase="init"))

    return report


def _color_features_in_blocks(colors: np.ndarray, color_space: str, out: np.ndarray | None = None) -> np.ndarray:
    """:func:`color_features` of many colours, converted in blocks on the
    engine's threads (NumPy releases the GIL), into ``out`` (default: a new
    float64 array)."""
    if out is None:
        out = np.empty((colors.shape[0], color_features(colors[:0], color_space).shape[1]), dtype=np.float64)

    def convert(a, b):
        out[a:b] = color_features(colors[a:b], color_space)

    map_rows(convert, colors.shape[0], rows_per_task=_COLOUR_BLOCK)
    return out


class _ColourRows:
    """The colour features of an image's pixels, numbered across strips.

    The strips of one image share most of their colours (a 12-megapixel
    photo: 0.3 million distinct colours, 0.6 million counted strip by
    strip), so 8-bit colours keep one numbering for the whole image (a
    ``2**24`` table) and each colour's features are computed once, in the
    first strip it appears in. Deeper or non-level colours fall back to the
    strip's own distinct colours.
    """

    def __init__(self, channels: int, color_space: str, width: int):
        self.channels = channels
        self.color_space = color_space
        self.table = np.full(1 << (8 * channels), -1, dtype=np.int32) if channels <= 3 else None
        self.features = np.empty((0, width), dtype=np.float32)
        self.count = 0

    @classmethod
    def of(cls, scratch: dict | None, config: FeatureConfig, channels: int) -> "_ColourRows":
        """The numbering kept in ``scratch`` (a new one without it)."""
        numbering = None if scratch is None else scratch.get("colour_rows")
        if numbering is None or (numbering.channels, numbering.color_space) != (channels, config.color_space):
            numbering = cls(channels, config.color_space, config.n_color_features(channels))
            if scratch is not None:
                scratch["colour_rows"] = numbering
        return numbering

    def rows(self, colors: np.ndarray, bit_depth: int, scratch: dict | None) -> tuple[np.ndarray, np.ndarray]:
        """A float32 feature table and each colour's row in it (int32)."""
        n, c = colors.shape
        if self.table is not None and bit_depth <= 8:
            colors = np.ascontiguousarray(colors, dtype=np.float32)
            codes = scratch_array(scratch, "codes", (n,), np.int32)
            exact = all(map_rows(lambda a, b: _counting.level_codes(colors, codes, a, b), n))
            if exact:
                inverse = scratch_array(scratch, "inverse", (n,), np.int32)
                new_codes = scratch_array(scratch, "new_codes", (n,), np.int32)
                new = _counting.number_codes(codes, self.table, self.count, inverse, new_codes)
                if new:
                    codes = new_codes[:new]
                    levels = np.column_stack([(codes >> (8 * (c - 1 - i))) & 255 for i in range(c)])
                    self._append(levels.astype(np.float32) / np.float32(255.0))
                return self.features[: self.count], inverse
        unique, _, inverse = unique_colors(colors, bit_depth)
        return color_features(unique, self.color_space).astype(np.float32), inverse.astype(np.int32)

    def _append(self, colors: np.ndarray) -> None:
        """Features of new colours after the others'."""
        end = self.count + colors.shape[0]
        if end > self.features.shape[0]:  # grows by doubling: copies stay linear in the colours
            grown = np.empty((max(end, 2 * self.features.shape[0]), self.features.shape[1]), dtype=np.float32)
            grown[: self.count] = self.features[: self.count]
            self.features = grown
        _color_features_in_blocks(colors, self.color_space, self.features[self.count : end])
        self.count = end


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
    images: list = field(default_factory=list)  # the image(s) fitted (with several: only their fit grids)
    texture_stats: tuple | None = None  # (mean, scale) that standardised the texture columns
    grid_step: int | None = None  # the step of ``images``' fit grid, when known (1: they are grids already)


def _standardisation(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation (1 where a column is constant)."""
    mean = rows.mean(axis=0, dtype=np.float64)
    scale = rows.std(axis=0, dtype=np.float64)
    scale[~(scale > 1e-12)] = 1.0
    return mean, scale


def _standardise(rows: np.ndarray, stats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(rows - mean) / scale in place, float32."""
    mean, scale = stats
    rows -= mean.astype(np.float32)
    rows *= (1.0 / scale).astype(np.float32)
    return rows


# ----------------------------------------------------------------------
# Fitting a list of images one image at a time.
#
# A fit on many references must not hold them all: each image is loaded,
# reduced to what the fit needs (its distinct colours, or a sample of its
# rows, or its spatial fit grid) and dropped before the next one is loaded.

# Colour rows of the images wait in a buffer until it holds as many rows as
# the merged distinct-colour table, and at least _MERGE_ROWS (about one
# megapixel): a merge costs about the rows it sees, table included, so
# merging image by image would go over the growing table once per image,
# while this way the table is gone over about once per as many new pixels,
# and the buffer never outgrows the table. (Measured on 100 one-megapixel
# photos, 4.8 million distinct colours: waiting for twice the table's rows,
# or for 2**22 rows, took as long and more memory.)
_MERGE_ROWS = 1 << 20


@dataclass(eq=False)
class _GridImage(ImageData):
    """The fit grid of one image of a list (every ``step``-th pixel in both
    directions) with the texture features of those pixels, computed on the
    whole image before it was dropped (filters on the grid alone would see
    other neighbours)."""

    texture: np.ndarray | None = None


class _GridCounts:
    """How many used pixels an image has on the grid of every step, so that
    :meth:`Segmenter._fit_step`'s rule can run after the image is dropped."""

    def __init__(self, mask: np.ndarray):
        self.shape = mask.shape
        self.longest = max(mask.shape)
        # Opaque images (the usual case) need no table: the count is the
        # grid's size. Otherwise one count per step; beyond the longest side
        # the grid is the corner pixel alone. The steps cost about 1.6 times
        # the image's pixels together (sum of 1 / step**2).
        self.counts = None
        if not mask.all():
            self.counts = np.array([np.count_nonzero(mask[::s, ::s]) for s in range(1, self.longest + 1)],
                                   dtype=np.int64)

    def __call__(self, step: int) -> int:
        if self.counts is None:
            h, w = self.shape
            return -(-h // step) * -(-w // step)
        return int(self.counts[min(step, self.longest) - 1])


def _grid_step(cells: Callable[[int], int], limit: int, longest: int) -> int:
    """The smallest step whose grid has at most ``limit`` used pixels
    (``cells(step)``), starting from the step that would do on full images;
    at most ``longest`` (the grid is then one pixel per image)."""
    used = cells(1)
    if used <= limit:
        return 1
    step = max(2, int(np.ceil(np.sqrt(used / limit))))
    while cells(step) > limit and step < longest:
        step += 1  # thin or unevenly masked images thin out slower than step**2
    return step


def _quotas(total: int, sizes: list[int]) -> list[int]:
    """``total`` rows shared out in proportion to ``sizes`` (largest
    remainders get the rows the floors leave; ties to the earlier image).
    Each quota is at most ``ceil(total * size / sum(sizes))``."""
    whole = sum(sizes)
    floors = [total * n // whole for n in sizes]  # Python integers: exact at any size
    remainders = [total * n % whole for n in sizes]
    left = total - sum(floors)  # fewer than the images with a remainder: each gets at most one more
    for i in sorted(range(len(sizes)), key=lambda j: -remainders[j])[:left]:
        floors[i] += 1
    return floors


def _used_rows(values: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """The rows of ``values`` (H, W, C) where ``mask`` (with ``n`` pixels)
    is set, as a new array (never a view that would keep the image alive).
    Every pixel used (the usual case): a plain copy, several times faster
    than a boolean gather."""
    if n == mask.size:
        return np.array(values.reshape(-1, values.shape[2]))
    return values[mask]


class _ImageRows:
    """The rows kept from one image of a list.

    ``index`` is None while every used pixel is kept, in pixel order;
    otherwise the rows are a uniform random sample in random order, and
    ``index`` holds each row's position among the image's used pixels (any
    prefix is then a uniform random sample too).
    """

    __slots__ = ("n", "colors", "texture", "index")

    def __init__(self, n, colors, texture, index):
        self.n, self.colors, self.texture, self.index = n, colors, texture, index


class _StreamedRows:
    """Training rows gathered image by image, in bounded memory.

    Colour features without ``max_samples``: the distinct colours of all the
    images with exact counts (the same rows, in the same order, as the
    distinct colours of all the pixels at once). The images' colour rows
    are merged into the table whenever they hold as many rows as it (see
    ``_MERGE_ROWS``), so the buffer stays about the size of the table.

    Otherwise rows (colours, and texture features) are kept per image. When
    all the images hold more than ``max_samples`` used pixels, image ``i``
    gives ``max_samples * n_i / n`` rows (rounded, see :func:`_quotas`), a
    uniform random sample of its used pixels. ``n`` is known only at the end,
    but it only grows: while images arrive, each keeps a random sample of
    ``ceil(max_samples * n_i / n_so_far)`` rows, never fewer than its final
    quota, and at most ``max_samples`` plus one row per image together. The
    draws come from one ``RandomState(random_state)``, in image order, so a
    seed gives the same rows; a single image gets the rows a one-image fit
    draws.
    """

    def __init__(self, max_samples: int | None, random_state: int | None, merge_colors: bool):
        self.max_samples = max_samples
        self.rng = np.random.RandomState(random_state if random_state is not None else 0)
        self.merge = merge_colors and max_samples is None
        self.images: list[_ImageRows] = []
        self.total = 0
        self.bit_depth = 1
        self.channels = 1
        # Per channel count (grey images stay grey until a colour image is
        # seen): the merged (distinct colours, counts), and the colour rows
        # of the images added since, with their number and the bit depth of
        # the last merge.
        self._merged: dict[int, tuple | None] = {1: None, 3: None}
        self._buffer: dict[int, list] = {1: [], 3: []}
        self._buffered = {1: 0, 3: 0}
        self._merged_depth = {1: 0, 3: 0}

    def add(self, image: ImageData, texture: np.ndarray | None) -> None:
        """Take the rows of the used pixels of ``image`` (and of ``texture``,
        an (H, W, T) array of the same pixels); neither is kept."""
        mask = image.mask
        n = int(np.count_nonzero(mask))
        channels = image.pixels.shape[2]
        self.total += n
        self.bit_depth = max(self.bit_depth, image.bit_depth)
        self.channels = max(self.channels, channels)
        if self.merge:
            if n:
                self._buffer[channels].append(_used_rows(image.pixels, mask, n))
                self._buffered[channels] += n
                merged = self._merged[channels]
                if self._buffered[channels] >= max(_MERGE_ROWS, 0 if merged is None else merged[0].shape[0]):
                    self._merge(channels)
            return
        limit = self.max_samples
        if n == 0 or limit is None or self.total <= limit:
            rows = _ImageRows(n, _used_rows(image.pixels, mask, n),
                              None if texture is None else _used_rows(texture, mask, n), None)
        else:
            pick = self.rng.choice(n, size=-(-limit * n // self.total), replace=False)
            ys, xs = np.nonzero(mask)
            ys, xs = ys[pick], xs[pick]
            rows = _ImageRows(n, image.pixels[ys, xs], None if texture is None else texture[ys, xs], pick)
            for earlier in self.images:  # their share of max_samples fell
                self._shrink(earlier, -(-limit * earlier.n // self.total))
        self.images.append(rows)

    def _shrink(self, rows: _ImageRows, size: int) -> None:
        """Keep at most ``size`` of an image's rows (a uniform sample)."""
        if rows.colors.shape[0] <= size:
            return
        if rows.index is None:  # every pixel in pixel order: draw which stay, in random order
            pick = self.rng.choice(rows.n, size=size, replace=False)
            rows.index = pick
        else:  # already in random order: a prefix (copied, so the longer arrays are freed)
            pick = slice(0, size)
            rows.index = rows.index[pick].copy()
        rows.colors = rows.colors[pick].copy()
        rows.texture = None if rows.texture is None else rows.texture[pick].copy()

    def _merge(self, channels: int, tables: tuple = ()) -> None:
        """Merge the buffered rows (one pixel each) and weighted ``tables``
        ((colours, counts) pairs) into the merged table."""
        merged = self._merged[channels]
        if not self._buffer[channels] and not tables and self._merged_depth[channels] == self.bit_depth:
            return  # nothing new, and already ordered by the current bit depth's codes
        weighted = ([] if merged is None else [merged]) + list(tables)
        parts = [u for u, _ in weighted] + self._buffer[channels]
        if not parts:
            return
        colors = np.concatenate(parts)
        del parts
        self._buffer[channels], self._buffered[channels] = [], 0
        # unique_colors orders by colour code: the rows come out in the order
        # of the distinct colours of all the pixels at once, whatever the merges.
        unique, _, inverse = unique_colors(colors, self.bit_depth)
        del colors
        n_weighted = sum(u.shape[0] for u, _ in weighted)
        counts = np.bincount(inverse[n_weighted:], minlength=unique.shape[0]).astype(np.float64)
        if weighted:
            counts += np.bincount(inverse[:n_weighted], weights=np.concatenate([c for _, c in weighted]),
                                  minlength=unique.shape[0])
        self._merged[channels] = (unique, counts)
        self._merged_depth[channels] = self.bit_depth

    def colour_table(self) -> tuple[np.ndarray, np.ndarray]:
        """The distinct colours of the kept rows and their pixel counts
        (rows in ``self.channels`` channels)."""
        if not self.merge:
            colors, _ = self.rows()
            unique, counts, _ = unique_colors(colors, self.bit_depth)
            return unique, counts
        tables = ()
        if self.channels == 3 and (self._merged[1] is not None or self._buffer[1]):
            self._merge(1)  # grey images in a colour model: R = G = B
            grey, counts = self._merged[1]
            self._merged[1] = None
            tables = ((np.repeat(grey, 3, axis=1), counts),)
        self._merge(self.channels, tables)
        return self._merged[self.channels]

    def rows(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The kept colour rows (``self.channels`` channels) and texture rows,
        image after image, each image's rows in pixel order. The per-image
        rows are released as they are copied out."""
        sizes = [rows.n for rows in self.images]
        if self.max_samples is None or self.total <= self.max_samples:
            quotas = sizes
        else:
            quotas = _quotas(self.max_samples, sizes)
        n = sum(quotas)
        colors = np.empty((n, self.channels), dtype=np.float32)
        first = next((r.texture for r in self.images if r.texture is not None), None)
        texture = None if first is None else np.empty((n, first.shape[1]), dtype=np.float32)
        start = 0
        for i, quota in enumerate(quotas):
            rows = self.images[i]
            self._shrink(rows, quota)
            # Pixel order within an image (what a one-image fit's sorted sample gives).
            order = slice(None) if rows.index is None else np.argsort(rows.index, kind="stable")
            stop = start + quota
            colors[start:stop] = rows.colors[order]  # a grey image's column fills R, G and B
            if texture is not None:
                texture[start:stop] = rows.texture[order]
            self.images[i] = None
            start = stop
        self.images = []
        return colors, texture


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
        ``spatial_weight`` (weight of the pixel position features, default
        0.5; 0 = colour only), ``smoothing`` (strength of the spatial prior,
        default 2; 0 = none), ``max_iter``, ``tol``, ``reg_covar``,
        ``n_init``, ``n_starts`` (cheap initialisations on a sample, default
        8), ``init_params``, ``random_state`` (an int or None: settings are
        plain data that model files keep, so a ``numpy.random.RandomState``
        is not accepted here, unlike :class:`gmmseg.GaussianMixture`),
        ``max_samples`` (fit on a seeded random subset of at most this many
        pixels; the whole image is still predicted), ``k_criterion`` (how
        :func:`select_k` chooses K) and ``spatial_fit_pixels`` (size of the
        spatial fit's grid).

    Each setting is also readable as an attribute (``seg.covariance_type``);
    ``set_params`` changes them (checked as on construction).

    How a fit runs:

    1. **Robust starts**: ``n_starts`` initialisations (``init_params``,
       seeds drawn from ``random_state``) are fitted on a sample of at most
       20,000 pixels, and the best ``n_init`` by likelihood start EM on the
       training pixels (with ``n_starts <= n_init``, plain restarts as
       scikit-learn). The training pixels are every pixel without the
       spatial prior, and the spatial fit's grid with it.
    2. **Spatial prior** (``smoothing > 0``): a hidden Markov random field.
       Neighbouring pixels (8-connected) prefer the same component, with a
       Potts prior of strength ``smoothing``; EM with the mean-field
       approximation alternates an E-step that combines each pixel's
       likelihood with its neighbours' current probabilities and the usual
       weighted M-step. It runs on a regular grid of at most
       ``spatial_fit_pixels`` (and ``max_samples``) pixels (every n-th pixel
       in both directions),
       from the mixture of step 1 and, with position features, also from
       the colour-only spatial fit described in colour and position; the
       fit with the higher mean-field objective is kept.
    3. **Maps** (``predict``): the mixture's posteriors, then (with
       ``smoothing > 0``) three mean-field sweeps of the prior over every
       pixel. ``log_likelihood`` stays the mixture's own density.

    Without position features, the mixture of step 1 is fitted on the
    unique colours of its pixels with their pixel counts as weights: exactly
    the same model as fitting each pixel, at a fraction of the cost.
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
        """The feature settings (colour space, spatial weight, texture), with
        ``feature_set="auto"`` resolved for the channels of the model (or of
        the images being fitted)."""
        config = self.params.features
        if config.feature_set == "auto":
            channels = self.__dict__.get("_fit_channels", self.__dict__.get("channels_"))
            if channels is not None:
                config = config.resolved(channels)
        return config

    def _resolve_auto(self, image):
        """For ``feature_set="auto"``: the channel count that decides it,
        from the (first) image, which is loaded here and passed on loaded.
        Returns the image (or list) to fit."""
        if self.params.feature_set != "auto":
            return image
        if isinstance(image, (list, tuple)):
            if not image:
                raise ValueError("No images to fit.")
            first = self._load(image[0])
            image = [first, *image[1:]]
        else:
            first = image = self._load(image)
        self._fit_channels = first.pixels.shape[2]
        return image

    def _check_auto(self, channels):
        """The fitted images' channels must resolve 'auto' as the first did
        (grey and colour images mixed would not)."""
        chosen = self.__dict__.get("_fit_channels")
        if chosen is None or self.params.feature_set != "auto":
            return
        if self.params.features.resolved(chosen).feature_set != self.params.features.resolved(channels).feature_set:
            raise ValueError("feature_set='auto' chooses texture for grey images and colour for colour images; these "
                             "images are grey and colour mixed: choose a feature set (e.g. feature_set='color+texture').")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The settings as a dict (see :class:`gmmseg.params.SegmenterParams`)."""
        return self.params.to_dict()

    def set_params(self, **settings: Any) -> "Segmenter":
        """Change settings (checked); returns self. A fitted model keeps its
        mixture until the next fit."""
        object.__setattr__(self, "params", self.params.replace(**settings))
        return self

    def __sklearn_clone__(self) -> "Segmenter":
        """An unfitted Segmenter with the same settings (used by ``sklearn.base.clone``).

        scikit-learn's default clone rebuilds the object from ``get_params``
        and then requires the constructor to have stored every value
        unchanged; the settings are checked and normalised instead (e.g. the
        list of texture scales becomes a tuple). The settings object is
        immutable, so the clone shares it.
        """
        return type(self)(params=self.params)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"Segmenter({params})"

    # ------------------------------------------------------------------
    def _colors_for_model(self, image: ImageData, channels: int) -> np.ndarray:
        """Used pixels' colours with the channel count the model expects
        (read-only: a view of the image when every pixel is used)."""
        if image.pixels.flags.c_contiguous and image.mask.all():
            colors = image.pixels.reshape(-1, image.pixels.shape[2])  # no boolean gather (a copy) of every pixel
        else:
            colors = image.pixels[image.mask]
        if colors.shape[1] == channels:
            return colors
        if channels == 3:  # grey image, colour model: R = G = B
            return np.repeat(colors, 3, axis=1)
        return luminance(colors)[:, None]  # colour image, grey model

    def color_table(self, image: ImageLike, channels: int | None = None, *, max_pixels: int | None = None
                    ) -> ColorTable:
        """The distinct colours of an image with their features, counts and
        pixel positions, under this segmenter's colour settings.

        Cheap to evaluate a mixture on (e.g. live previews of a running
        fit); position features are not part of it. ``channels`` defaults to
        the fitted model's, else the image's own.
        """
        image = load_image(image, max_pixels=max_pixels)
        if channels is None:
            channels = getattr(self, "channels_", image.pixels.shape[2])
        colors = self._colors_for_model(image, channels)
        unique, counts, inverse = unique_colors(colors, image.bit_depth)
        index = np.full(image.mask.shape, -1, dtype=np.int64)
        index[image.mask] = inverse
        display = np.repeat(unique, 3, axis=1) if unique.shape[1] == 1 else unique
        return ColorTable(color_features(unique, self.features.color_space), counts, display, index)

    def _texture_grid(self, image: ImageData, step: int = 1) -> np.ndarray:
        """Texture features (float32, (h, w, T)) of every ``step``-th pixel in
        both directions. The filters run on the whole image, so a pixel's
        features do not depend on the step.

        During a fit with the spatial prior, the grids are kept (in
        ``_grid_textures``) for the fit's later tables of the same images:
        the filter bank is the costly part, and those grids hold at most
        ``spatial_fit_pixels`` pixels together. A grid kept by a fit on
        several images (:class:`_GridImage`) carries its own features.
        """
        if isinstance(image, _GridImage):
            if step != 1:
                raise ValueError("a fit grid's texture features exist only on the grid itself (step 1)")
            return image.texture
        kept = self.__dict__.get("_grid_textures")
        key = (id(image), step)
        if kept is not None and key in kept:
            return kept[key]
        H, W = image.mask.shape
        if step == 1 and H * W <= _STRIP_PIXELS:
            grid = self._texture_rows(image, 0, H)
        else:
            # Strip by strip (with their context rows), keeping every
            # step-th row and column: the whole image's filter bank never
            # exists at once.
            grid = np.concatenate([self._texture_rows(image, start, stop, step)
                                   for start, stop in _row_chunks(H, W, multiple=step)])
        if kept is not None:
            kept[key] = grid
        return grid

    def _texture_rows(self, image: ImageData, start: int, stop: int, step: int = 1) -> np.ndarray:
        """The filter bank at rows ``start:stop:step`` and every ``step``-th
        column, (h, w, T) float32: computed on those rows and the rows of
        context the filters reach, so that it equals the whole image's."""
        config = self.features
        H = image.mask.shape[0]
        reach = config.texture_reach()
        first, last = max(0, start - reach), min(H, stop + reach)
        bank = texture_features(image_lightness(image.pixels[first:last]), config.texture_scales,
                                config.illumination_sigma, config.texture_filters, config.row_column_sigma)
        if step == 1 and first == start and last == stop:
            return bank
        return bank[start - first : stop - first : step, ::step].copy()  # not a view that keeps the context alive

    def _texture_features(self, image: ImageData) -> np.ndarray:
        """The filter bank on every pixel of an image, (H, W, T) float32."""
        return self._texture_rows(image, 0, image.mask.shape[0])

    def _fit_limit(self, max_samples: bool = True) -> int | None:
        """The most pixels the spatial fit's grid may hold (None: no limit)."""
        limits = [v for v in (self.spatial_fit_pixels, self.max_samples if max_samples else None) if v is not None]
        return min(limits) if limits else None

    def _fit_step(self, images: list[ImageData], max_samples: bool = True) -> int:
        """Every how many pixels (in both directions) the spatial fit samples
        the image(s), so that at most ``spatial_fit_pixels`` (and
        ``max_samples``) of their used pixels take part: a regular grid, on
        which neighbours are still image neighbours."""
        limit = self._fit_limit(max_samples)
        if limit is None:
            return 1

        def cells(step):
            return sum(int(np.count_nonzero(im.mask[::step, ::step])) for im in images)

        return _grid_step(cells, limit, max(max(im.mask.shape) for im in images))

    def _training_data(self, image, grid=False, grid_max_samples=True):
        """Rows to fit. ``image`` may also be a list of images (fitted
        together, see :meth:`_streamed_training_data`). With ``grid``, only
        the spatial fit's grid of pixels (see :meth:`_fit_step`; bounded by
        ``max_samples`` too unless ``grid_max_samples`` is False): a fit with
        the spatial prior is fitted there.

        Returns the loaded image (None for several images), the model's
        channel count and the :class:`_TrainingData`.
        """
        if isinstance(image, (list, tuple)):
            if not image:
                raise ValueError("No images to fit.")
            if len(image) > 1:
                if self.features.uses_position:
                    raise ValueError("fitting several images together needs spatial_weight=0: position features "
                                     "describe one image's layout, and positions of different images do not mix.")
                return None, *self._streamed_training_data(list(image), grid, grid_max_samples)
            image = image[0]
        image = self._load(image)
        channels = image.pixels.shape[2]
        step = self._fit_step([image], grid_max_samples) if grid else 1
        part = _every(image, step)
        colors = self._colors_for_model(part, channels)
        config = self.features
        positions = texture = None
        if config.uses_position:
            positions = position_features(part.mask, config.spatial_weight, step=step, full_shape=image.mask.shape)
        n = colors.shape[0]
        if n == 0:
            raise ValueError(f"{image.name}: no usable pixels (all transparent or not finite).")
        if n < self.n_components:
            raise ValueError(
                f"{image.name}: only {n} usable pixels, fewer than n_components={self.n_components}; "
                "use fewer components."
            )
        keep = None
        if self.max_samples is not None and n > self.max_samples:
            rng = np.random.RandomState(self.random_state if self.random_state is not None else 0)
            keep = np.sort(rng.choice(n, size=self.max_samples, replace=False))
            colors = colors[keep]
            positions = positions[keep] if positions is not None else None
        stats = None
        if config.uses_texture:
            texture = self._texture_grid(image, step)[part.mask]
            if keep is not None:
                texture = texture[keep]
            stats = _standardisation(texture)
            texture = _standardise(texture, stats)
        unique, counts, inverse = unique_colors(colors, image.bit_depth)
        feats = color_features(unique, config.color_space)
        display = np.repeat(unique, 3, axis=1) if unique.shape[1] == 1 else unique
        grid_step = step if grid and grid_max_samples else None
        if not config.per_pixel:
            # Every used pixel maps to a row unless pixels were sampled or gridded.
            whole = colors.shape[0] == n and step == 1
            return image, channels, _TrainingData(feats, counts, display, counts, inverse if whole else None, [image],
                                                  grid_step=grid_step)
        blocks = [feats.astype(np.float32)[inverse]] if config.uses_color else []
        blocks += [b for b in (texture, positions) if b is not None]
        X = blocks[0] if len(blocks) == 1 else np.hstack(blocks)
        ones = np.ones(X.shape[0])
        whole = keep is None and step == 1
        pixel_rows = np.arange(X.shape[0]) if whole else None
        return image, channels, _TrainingData(X, None, display[inverse], ones, pixel_rows, [image], stats, grid_step)

    def _streamed_training_data(self, sources: list, grid: bool, grid_max_samples: bool):
        """Rows to fit from several images, loaded one at a time.

        Each image is loaded, reduced to what the fit needs and dropped
        before the next is loaded (see :class:`_StreamedRows`): with colour
        features and no ``max_samples``, its distinct colours with their
        counts, merged exactly, so the model is the one of a single image
        made of all their used pixels; otherwise a sample of its rows in
        proportion to its used pixels. Texture features are computed per
        image, on the whole image, and standardised over the kept rows.

        With ``grid`` (the spatial prior), the fit grid's step depends on
        every image's mask, so a first pass loads each image to count its
        used pixels on the grids of every step; the fit keeps each image's
        grid (at most ``spatial_fit_pixels`` pixels together; views of
        images given in memory, copies otherwise) with its texture features,
        for the spatial fit. The first pass already keeps the grids of the
        step that fits if every image is like the first (references of one
        camera); only when the step turns out otherwise does a second pass
        read the images again (files are then read twice).

        Returns the model's channel count and the :class:`_TrainingData`,
        whose ``images`` are the kept grids (none without ``grid``).
        """
        config = self.features
        count = len(sources)
        limit = self._fit_limit(grid_max_samples) if grid else None

        def new_sample():
            return _StreamedRows(self.max_samples, self.random_state, merge_colors=not config.per_pixel)

        sample, grids, step = new_sample(), [], 1
        if limit is not None:
            counts = []
            guess = None  # the step if every image were like the first; None once it cannot be the step
            for i, source in enumerate(sources):
                image = self._load_reference(source, i, count)
                counts.append(_GridCounts(image.mask))
                if i == 0:
                    guess = _grid_step(lambda s: count * counts[0](s), limit, counts[0].longest)
                if guess is not None:
                    grids.append(self._keep_grid(source, image, guess, sample))
                    if sum(g.mask.size for g in grids) > 2 * limit:  # the guess was far too fine: stop keeping
                        guess, grids, sample = None, [], new_sample()
                del image  # before the next one is loaded
            step = _grid_step(lambda s: sum(c(s) for c in counts), limit, max(c.longest for c in counts))
            del counts
            if step != guess:
                grids, sample = [], new_sample()
        if not grids:  # no first pass, or its grids are not the fit's
            for i, source in enumerate(sources):
                image = self._load_reference(source, i, count)
                if grid:
                    grids.append(self._keep_grid(source, image, step, sample))
                else:
                    sample.add(image, self._texture_features(image) if config.uses_texture else None)
                del image  # before the next one is loaded
        n = sample.total
        where = f"the {count} images" + (" (on the spatial fit's grid)" if step > 1 else "")
        if n == 0:
            raise ValueError(f"{where}: no usable pixels.")
        if n < self.n_components:
            raise ValueError(f"{where}: only {n} usable pixels together, fewer than n_components={self.n_components}; "
                             "use fewer components.")
        channels = sample.channels
        grid_step = 1 if grid else None  # the kept images are the grids
        if not config.per_pixel:
            unique, counts = sample.colour_table()
            feats = color_features(unique, config.color_space)
            display = np.repeat(unique, 3, axis=1) if unique.shape[1] == 1 else unique
            return channels, _TrainingData(feats, counts, display, counts, None, grids, grid_step=grid_step)
        bit_depth = sample.bit_depth
        colors, texture = sample.rows()
        del sample
        stats = None
        if texture is not None:
            stats = _standardisation(texture)
            texture = _standardise(texture, stats)
        unique, _, inverse = unique_colors(colors, bit_depth)
        feats = color_features(unique, config.color_space)
        display = np.repeat(unique, 3, axis=1) if unique.shape[1] == 1 else unique
        blocks = [feats.astype(np.float32)[inverse]] if config.uses_color else []
        blocks += [texture] if texture is not None else []
        X = blocks[0] if len(blocks) == 1 else np.hstack(blocks)
        return channels, _TrainingData(X, None, display[inverse], np.ones(X.shape[0]), None, grids, stats, grid_step)

    def _keep_grid(self, source: ImageLike, image: ImageData, step: int, sample: _StreamedRows) -> _GridImage:
        """The fit grid of one image of a list, with its texture features,
        added to ``sample``. Images given in memory stay the caller's (a view
        of them costs nothing); images loaded here are copied down to their
        grid, so that their full pixels and features can go."""
        part = _every(image, step)
        texture = self._texture_features(image)[::step, ::step] if self.features.uses_texture else None
        copy = not isinstance(source, ImageData)
        grid = _GridImage(
            pixels=np.ascontiguousarray(part.pixels) if copy else part.pixels,
            mask=np.ascontiguousarray(part.mask) if copy else part.mask,
            bit_depth=image.bit_depth, source=image.source, mode=image.mode, value_range=image.value_range,
            texture=None if texture is None else np.ascontiguousarray(texture),
        )
        sample.add(grid, grid.texture)
        return grid

    def _load(self, source: ImageLike) -> ImageData:
        """An image to fit, loaded with the fit's ``max_pixels``."""
        return load_image(source, max_pixels=self.__dict__.get("_max_pixels"))

    def _load_reference(self, source: ImageLike, i: int, count: int) -> ImageData:
        """Image ``i`` of a list of ``count``, which must have a usable pixel."""
        image = self._load(source)
        if not image.mask.any():
            raise ValueError(f"{image.name} (image {i + 1} of {count}): no usable pixels (all transparent or not finite).")
        return image

    def fit(self, image: ImageLike | list[ImageLike], callback: Callable[[EMProgress], bool | None] | None = None, *,
            max_pixels: int | None = None) -> "Segmenter":
        """Fit the mixture to an image (path, ImageData or array), or to the
        pixels of several images together (a list).

        Parameters
        ----------
        image : path, ImageData or array, or a list of them
            A list is read one image at a time, and each image is dropped
            once the fit has what it needs of it, so memory holds about one
            image plus the training rows, not the whole list. With colour
            features and no ``max_samples`` the model is exactly the one of
            a single image made of all their used pixels; when
            ``max_samples`` is reached, each image gives a random sample in
            proportion to its used pixels. With the spatial prior
            (``smoothing > 0``) only each image's fit grid is kept; the grid
            depends on every image's used pixels, so files are read twice
            unless the images are alike (same size and mask as the first).
            Several images need ``spatial_weight=0``.
        callback : callable, optional
            Receives an :class:`gmmseg.EMProgress` after every EM iteration
            (and every k-means step of the initialisation, with ``phase ==
            "init"``); returning True stops the fit, and the model stays
            usable.
        max_pixels : int, optional
            Largest image accepted (see :func:`gmmseg.load_image`).

        Returns
        -------
        Segmenter
            self, fitted.
        """
        self._fit(image, callback, max_pixels)
        return self

    def _fit(self, image, callback, max_pixels=None):
        """Fit; returns the (loaded) image and its training data."""
        self.__dict__.pop("_fit_channels", None)
        self._max_pixels = max_pixels  # for every image the fit loads (see _load)
        try:
            image = self._resolve_auto(image)
            if self.smoothing > 0 and self.features.uses_texture:
                self._grid_textures = {}  # see _texture_grid
            return self._fit_body(image, callback)
        finally:
            self.__dict__.pop("_grid_textures", None)
            self.__dict__.pop("_fit_channels", None)
            self.__dict__.pop("_max_pixels", None)

    def _fit_body(self, image, callback):
        image, channels, data = self._training_data(image, grid=self.smoothing > 0)
        self._check_auto(channels)
        gm = self._fit_mixture(data, callback)
        if self.smoothing > 0 and not gm.stopped_:
            # built once for both candidates
            grid = self._grid_tables(data.images, channels, data.texture_stats, data.grid_step)
            _, objective = self._fit_spatial(gm, grid, callback)
            if self.features.uses_position and not gm.stopped_:
                other = self._fit_colour_then_position(data, channels, grid, callback)
                if not other.stopped_:
                    _, other_objective = self._fit_spatial(other, grid, callback)
                if other.stopped_:  # asked to stop: keep the finished fit, and say it was stopped
                    gm.stopped_ = True
                elif other_objective > objective:
                    gm = other
            # lower_bound_ stays what it says: the mean log-likelihood of the
            # training pixels, now under the spatially fitted mixture.
            gm.lower_bound_ = gm.score(data.X, sample_weight=data.sample_weight)
        colors = self._mean_colors(gm, data)
        order = np.lexsort((-gm.weights_, lab_lightness(colors)))
        gm.reorder_components(order)
        self.gmm_ = gm
        self.component_colors_ = colors[order]
        self.component_names_ = [f"Component {k}" for k in range(self.n_components)]
        self.channels_ = channels
        self.n_features_in_ = data.X.shape[1]
        self.texture_stats_ = data.texture_stats
        return image, data

    def _fit_mixture(self, data, callback):
        """The colour (and position) mixture, from robust starts.

        With ``n_starts > n_init``, ``n_starts`` initialisations are fitted
        on a sample of at most ``_START_SAMPLE`` pixels (drawn by pixel
        count, so it is a sample of pixels, not of colours) and the best
        ``n_init`` of them by likelihood start the fits on all the data. A
        single k-means start often lands in a poor local optimum on images
        (two components splitting one region, one covering two): the
        starts are cheap, and the refinement is exact EM on every pixel.
        """
        params = self.params
        if params.n_starts <= params.n_init:
            gm = params.mixture()
            gm.fit(data.X, sample_weight=data.sample_weight, callback=callback)
            return gm
        rng = np.random.RandomState(params.random_state)
        weights = data.counts if data.sample_weight is not None else np.ones(data.X.shape[0])
        total = float(weights.sum())
        if total <= _START_SAMPLE:
            sample, sample_weight = data.X, data.sample_weight
        else:
            draws = rng.choice(data.X.shape[0], size=_START_SAMPLE, p=weights / total)
            rows, counts = np.unique(draws, return_counts=True)
            if rows.size < params.n_components:
                sample, sample_weight = data.X, data.sample_weight
            else:
                sample, sample_weight = data.X[rows], counts.astype(np.float64)
        seeds = rng.randint(0, 2**31 - 1, size=params.n_starts)
        candidates = []
        stopped = False
        for i, seed in enumerate(seeds):
            start = params.replace(n_init=1, random_state=int(seed)).mixture()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                start.fit(sample, sample_weight=sample_weight, callback=_start_reporter(callback, i))
            if start.stopped_:
                stopped = True
                break
            candidates.append(start)
        if stopped:
            # Asked to stop: the best start so far (or the k-means start of
            # the first), set on all pixels without EM; a usable model.
            gm = params.replace(n_init=1, max_iter=0).mixture()
            if candidates:
                best_start = max(candidates, key=lambda m: m.lower_bound_)
                gm.set_params(weights_init=best_start.weights_, means_init=best_start.means_,
                              precisions_init=best_start.precisions_)
            gm.fit(data.X, sample_weight=data.sample_weight)
            gm.stopped_ = True
            return gm
        candidates.sort(key=lambda m: -m.lower_bound_)
        best = None
        for start in candidates[: params.n_init]:
            gm = params.replace(n_init=1).mixture()
            gm.set_params(weights_init=start.weights_, means_init=start.means_, precisions_init=start.precisions_)
            gm.fit(data.X, sample_weight=data.sample_weight, callback=callback)
            if best is None or gm.lower_bound_ > best.lower_bound_:
                best = gm
            if gm.stopped_:
                best.stopped_ = True  # whichever refinement is kept, the fit was stopped
                break
        return best

    def _fit_colour_then_position(self, data, channels, grid, callback):
        """The starting point of a spatial fit with position features: the
        spatial fit on colour alone, its regions then described in colour
        and position (one M-step). Mixtures started in colour and position
        at once split large regions into compact pieces and merge small
        ones, and EM rarely undoes that: regions differ by colour first.
        ``grid`` is this segmenter's :meth:`_grid_tables` of the images."""
        colour = Segmenter(params=self.params.replace(spatial_weight=0.0))
        colour._grid_textures = self.__dict__.get("_grid_textures")  # the same texture features
        if "_fit_channels" in self.__dict__:
            colour._fit_channels = self._fit_channels  # the same resolution of feature_set='auto'
        _, _, colour_data = colour._training_data(data.images if len(data.images) > 1 else data.images[0], grid=True)
        gm = colour._fit_mixture(colour_data, callback)
        if gm.stopped_:
            return gm
        qs, _ = colour._fit_spatial(gm, colour._grid_tables(data.images, channels, data.texture_stats), callback)
        if gm.stopped_:
            return gm
        X, grids = grid
        weights, means, _, prec_chol = mixture_from_grid(X, grids, qs, self.covariance_type, self.reg_covar)
        full = GaussianMixture.from_parameters(
            weights, means, prec_chol, covariance_type=self.covariance_type, reg_covar=self.reg_covar,
            tol=self.tol, max_iter=self.max_iter, random_state=self.random_state,
        )
        full.n_iter_ = gm.n_iter_
        full.stopped_ = False
        return full

    def _grid_tables(self, images, channels, texture_stats, step=None):
        """One feature table for the fit grids of the image(s) and their
        index maps: every ``step``-th pixel in both directions, so that the
        grids have at most ``spatial_fit_pixels`` cells together and
        neighbours on them are still neighbours in the image (by default
        :meth:`_fit_step`'s; 1 for grids kept by a fit on several images).
        Texture columns are standardised with ``texture_stats``."""
        if step is None:
            step = self._fit_step(images)
        tables, grids = [], []
        offset = 0
        for im in images:
            X, index = self._feature_table(im, channels, step, texture_stats)
            index[index >= 0] += offset
            offset += X.shape[0]
            tables.append(X)
            grids.append(index)
        return (tables[0] if len(tables) == 1 else np.concatenate(tables)), grids

    def _fit_spatial(self, gm, grid, callback):
        """Refit ``gm`` with the Potts prior (mean-field EM) on the fit grids
        (``grid``: :meth:`_grid_tables`' table and index maps); returns the
        grids' label distributions and the last mean-field objective."""
        X, grids = grid
        qs, n_iter, converged, objective = fit_potts(gm, X, grids, self.smoothing, max_iter=self.max_iter,
                                                     tol=self.tol, callback=callback)
        gm.n_iter_ += n_iter
        gm.converged_ = bool(converged)
        if not converged and not gm.stopped_ and self.max_iter > 0:
            warnings.warn(
                "The spatial fit did not converge; increase max_iter or tol.", ConvergenceWarning, stacklevel=4,
            )
        return qs, objective

    def _feature_table(self, image: ImageData, channels: int, step: int = 1,
                       texture_stats: tuple | None = None, rows: tuple[int, int] | None = None,
                       scratch: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A feature table and the (H, W) int32 map of each pixel's row in it
        (-1 where masked out), for every ``step``-th pixel in both directions,
        or (with ``rows=(start, stop)``) for the pixels of those rows.

        Colour-only features: one row per distinct colour. With texture or
        position features, one float32 row per used pixel (positions in the
        whole image's scale whatever the step; texture columns standardised
        with ``texture_stats``, by default the fitted model's). ``scratch``:
        reusable buffers (see :func:`gmmseg.engine.scratch_array`); the
        table is then a view into them.
        """
        if rows is not None and step != 1:
            raise ValueError("a feature table of some rows is one of every pixel (step 1)")
        first_row = 0 if rows is None else rows[0]
        part = _every(image, step) if rows is None else _rows(image, *rows)
        mask = part.mask
        config = self.features
        if not config.per_pixel:
            colors = self._colors_for_model(part, channels)
            unique, _, inverse = unique_colors(colors, image.bit_depth)
            if inverse.size == mask.size:  # every pixel used: the rows are the index map
                index = inverse.astype(np.int32, copy=False).reshape(mask.shape)
            else:
                index = np.full(mask.shape, -1, dtype=np.int32)
                index[mask] = inverse
            return _color_features_in_blocks(unique, config.color_space), index
        # One float32 row per pixel (as the fit's), filled by one kernel pass
        # over the rows (colour features gathered from a per-colour table,
        # positions, each pixel's row number): no (N, d) float64 temporaries
        # on large images, and in parallel.
        mask = np.ascontiguousarray(mask)
        h, w = mask.shape
        used = np.count_nonzero(mask, axis=1)
        offsets = np.zeros(h + 1, dtype=np.int64)
        np.cumsum(used, out=offsets[1:])
        n = int(offsets[-1])
        X = scratch_array(scratch, "X", (n, config.n_features(channels)), np.float32)
        index = scratch_array(scratch, "index", (h, w), np.int32)
        table, inverse = np.zeros((1, 0), np.float32), np.zeros(1, np.int32)
        if config.uses_color:
            table, inverse = _ColourRows.of(scratch, config, channels).rows(
                self._colors_for_model(part, channels), image.bit_depth, scratch)
        xs = ys = np.empty(0, np.float32)
        if config.uses_position:
            xs, ys = position_axes(mask.shape, config.spatial_weight, step=step, full_shape=image.mask.shape,
                                   first_row=first_row)
        map_rows(lambda a, b: _counting.feature_rows(table, inverse, mask, offsets, xs, ys, X, index, a, b), h,
                 rows_per_task=max(1, _FEATURE_CELLS // max(w, 1)))
        if config.uses_texture:
            c = table.shape[1]
            stats = self.texture_stats_ if texture_stats is None else texture_stats
            grid = self._texture_grid(image, step) if rows is None else self._texture_rows(image, *rows)
            for j in range(grid.shape[2]):  # standardised column by column (no (N, T) temporary)
                X[:, c + j] = (grid[:, :, j][mask] - np.float32(stats[0][j])) * np.float32(1.0 / stats[1][j])
        return X, index

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

    def predict(self, image: ImageLike, *, probabilities: bool = False, max_pixels: int | None = None,
                progress: Callable[[int, int], Any] | None = None,
                strips: Callable[[int, int, dict], Any] | None = None) -> "Segmentation":
        """Segment an image with the fitted model (with the spatial prior of
        ``smoothing`` when it is above 0).

        Parameters
        ----------
        image : path, ImageData or array
        probabilities : bool, default=False
            Compute the (H, W, K) probability maps now and keep them. By
            default they are built when first read (or read in parts with
            :meth:`Segmentation.map_rows`), which with per-pixel features
            (positions, texture or smoothing) runs the maps again.
        max_pixels : int, optional
            Largest image accepted (see :func:`gmmseg.load_image`).
        progress : callable, optional
            ``progress(rows_done, rows)`` after each strip of rows (per-pixel
            features; a colour-only result is ready at once).
        strips : callable, optional
            ``strips(start, stop, maps)`` after each strip of rows, with its
            ``labels`` and ``log_likelihood`` rows in the dict ``maps``
            (per-pixel features; e.g. to show a result as it arrives).

        Returns
        -------
        Segmentation
        """
        self._check_fitted()
        return self._segment(load_image(image, max_pixels=max_pixels), keep_probabilities=probabilities,
                             progress=progress, strips=strips)

    def log_likelihood_map(self, image: ImageLike, *, max_pixels: int | None = None) -> np.ndarray:
        """The log-density of every pixel under the fitted mixture, as in
        :meth:`predict`'s ``log_likelihood`` but without labels and
        probabilities (what inspection needs, at a fraction of the cost).

        Returns
        -------
        ndarray (H, W), float32
            NaN where the image is masked (transparent or not finite).
        """
        self._check_fitted()
        image = load_image(image, max_pixels=max_pixels)
        H, W = image.mask.shape
        if not self.features.per_pixel:
            return self._strip_maps(image, 0, H, ("log_likelihood",))["log_likelihood"]
        out = np.empty((H, W), dtype=np.float32)
        for start, stop in _row_chunks(H, W):
            out[start:stop] = self._strip_maps(image, start, stop, ("log_likelihood",))["log_likelihood"]
        return out

    def _segment(self, image: ImageData, keep_probabilities: bool = False, table: tuple | None = None,
                 progress: Callable[[int, int], Any] | None = None,
                 strips: Callable[[int, int, dict], Any] | None = None) -> "Segmentation":
        """The segmentation of a loaded image. ``table``: its colour table and
        index map when the fit already has them (colour-only features)."""
        gm = self.gmm_
        mask = image.mask
        H, W = mask.shape
        K = gm.means_.shape[0]
        if not self.features.per_pixel and self.smoothing == 0:
            # One row per distinct colour: every map is gathered from the
            # per-colour results on demand.
            X, index = self._feature_table(image, self.channels_) if table is None else table
            if X.shape[0]:
                labels_u, proba_u, ll_u = gm.estimate(X, proba_dtype=np.float32)
            else:
                labels_u, proba_u, ll_u = (np.empty(0, np.int32), np.empty((0, K), np.float32),
                                           np.empty(0, np.float32))
            source = _TableMaps(index, labels_u.astype(np.int32, copy=False), proba_u,
                                ll_u.astype(np.float32, copy=False))
            return Segmentation(None, None, None, mask.copy(), self.component_colors_, gm.weights_,
                                self.component_names_, source=source)
        labels = np.empty((H, W), dtype=np.int32)
        log_likelihood = np.empty((H, W), dtype=np.float32)
        probabilities = np.empty((H, W, K), dtype=np.float32) if keep_probabilities else None
        maps = {"labels": labels, "log_likelihood": log_likelihood, "probabilities": probabilities}
        names = MAP_NAMES if keep_probabilities else ("labels", "log_likelihood")
        scratch = {}  # buffers every strip reuses
        for start, stop in _row_chunks(H, W):
            # each strip's maps are written into the whole maps' rows (no copies)
            self._strip_maps(image, start, stop, names, scratch, out={name: maps[name][start:stop] for name in names})
            if strips is not None:
                strips(start, stop, {"labels": labels[start:stop], "log_likelihood": log_likelihood[start:stop]})
            if progress is not None:
                progress(stop, H)
        # A copy of this segmenter computes the probabilities on demand, so
        # that refitting this one later does not change the result.
        source = _StripMaps(copy.copy(self), image)
        return Segmentation(labels, probabilities, log_likelihood, mask.copy(), self.component_colors_, gm.weights_,
                            self.component_names_, source=source)

    def _strip_maps(self, image: ImageData, start: int, stop: int, names: Iterable[str], scratch: dict | None = None,
                    out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Maps ``names`` (of ``MAP_NAMES``) of rows ``start:stop`` of an image.

        The features are computed on those rows and the rows of context
        around them that the texture filters and the spatial prior's sweeps
        reach, so the result equals the whole image's: the mean-field sweeps
        are synchronous, each reading the neighbours' previous values, so
        after ``_MAP_SWEEPS`` sweeps a pixel depends on pixels at most that
        many rows away.

        Without smoothing, labels and probabilities are the mixture's
        posteriors (computed once per row of the table). With smoothing,
        they are the mean-field distributions of the Potts model with the
        fitted mixture: its posteriors, then ``_MAP_SWEEPS`` sweeps. The
        log-likelihood is the mixture's own density either way.

        With ``scratch`` (a dict of reusable buffers, for a loop over the
        strips of one image) the maps returned may be views into it, valid
        until the next strip. With ``out`` (a dict of arrays of the strip's
        shape, one per name) the maps are written there and returned.
        """
        gm = self.gmm_
        names = tuple(names)
        H, W = image.mask.shape
        K = gm.means_.shape[0]
        maps_wanted = any(name != "log_likelihood" for name in names)
        smoothing = maps_wanted and self.smoothing > 0
        halo = _MAP_SWEEPS if smoothing else 0
        first, last = max(0, start - halo), min(H, stop + halo)
        X, index = self._feature_table(image, self.channels_, rows=(first, last), scratch=scratch)
        inner = slice(start - first, stop - first)
        shape = (stop - start, W)
        if X.shape[0] == 0:  # every pixel masked
            defaults = {"labels": np.full(shape, -1, np.int32), "probabilities": np.zeros(shape + (K,), np.float32),
                        "log_likelihood": np.full(shape, np.nan, np.float32)}
            if out is None:
                return {name: defaults[name] for name in names}
            for name in names:
                out[name][...] = defaults[name]
            return {name: out[name] for name in names}
        if smoothing:
            if out is None:
                out = {name: np.empty(shape, dtype) for name, dtype in (("labels", np.int32),
                                                                        ("log_likelihood", np.float32))
                       if name in names}
            labels, log_likelihood = out.get("labels"), out.get("log_likelihood")
            if not image.mask[start:stop].all():  # the kernel writes used pixels only
                for values, outside in ((labels, -1), (log_likelihood, np.nan)):
                    if values is not None:
                        values.fill(outside)
            # the mixture's density comes with its posteriors, the maps' first
            # pass; the rows of context are read, not written
            q = potts_posteriors(gm, X, index, self.smoothing, _MAP_SWEEPS, labels=labels,
                                 log_likelihood=log_likelihood, scratch=scratch, rows=(inner.start, inner.stop),
                                 out=out.get("probabilities"), probabilities="probabilities" in names)
            maps = {"labels": labels, "probabilities": q, "log_likelihood": log_likelihood}
            return {name: maps[name] for name in names}
        if maps_wanted:
            labels_u, proba_u, ll_u = gm.estimate(X, proba_dtype=np.float32)
        else:
            labels_u = proba_u = None
            ll_u = gm.score_samples(X)
        table = _TableMaps(index[inner], None if labels_u is None else labels_u.astype(np.int32, copy=False), proba_u,
                           ll_u.astype(np.float32, copy=False))
        return {name: table.rows(name, 0, stop - start, out=None if out is None else out[name]) for name in names}

    def fit_predict(self, image: ImageLike, callback: Callable[[EMProgress], bool | None] | None = None, *,
                    probabilities: bool = False, max_pixels: int | None = None,
                    fitted: Callable[["Segmenter"], Any] | None = None,
                    progress: Callable[[int, int], Any] | None = None,
                    strips: Callable[[int, int, dict], Any] | None = None) -> "Segmentation":
        """Fit on an image and segment it; returns a :class:`Segmentation`.

        The same as ``fit(image).predict(image)``, but the image is loaded
        once, and with colour-only features its distinct colours and their
        features are found once, not twice. ``probabilities``,
        ``max_pixels``, ``progress`` and ``strips`` as in :meth:`predict`;
        ``fitted(segmenter)``, when given, is called with the fitted model
        before its maps are computed (e.g. to show a preview, or to keep
        the model of a fit that was stopped).
        """
        image, data = self._fit(load_image(image, max_pixels=max_pixels), callback, max_pixels)
        if fitted is not None:
            fitted(self)
        table = None
        if data.pixel_rows is not None and not self.features.per_pixel:
            index = np.full(image.mask.shape, -1, dtype=np.int32)
            index[image.mask] = data.pixel_rows
            table = (data.X, index)
        return self._segment(image, keep_probabilities=probabilities, table=table, progress=progress, strips=strips)

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
        stats = getattr(self, "texture_stats_", None)
        return SegmenterState(
            self.params, int(self.channels_), mixture, np.array(self.component_colors_, dtype=np.float64),
            list(self.component_names_),
            texture_mean=None if stats is None else np.array(stats[0], dtype=np.float64),
            texture_scale=None if stats is None else np.array(stats[1], dtype=np.float64),
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
        features = params.features.resolved(state.channels)
        expected = features.n_features(state.channels)
        if d != expected:
            raise ValueError(f"{d} features do not match the feature settings ({expected})")
        colors = np.asarray(state.component_colors, dtype=np.float64)
        if colors.shape != (K, 3) or not np.all(np.isfinite(colors)):
            raise ValueError(f"components.colors must be {K} RGB triples")
        if len(state.component_names) != K:
            raise ValueError(f"components.names must be {K} strings")
        stats = None
        n_texture = features.n_texture_features
        if n_texture:
            if state.texture_mean is None or state.texture_scale is None:
                raise ValueError("the texture features' standardisation (texture_standardisation) is missing")
            mean = np.asarray(state.texture_mean, dtype=np.float64)
            scale = np.asarray(state.texture_scale, dtype=np.float64)
            if mean.shape != (n_texture,) or scale.shape != (n_texture,) or not np.all(scale > 0):
                raise ValueError(f"texture_standardisation must hold {n_texture} means and {n_texture} positive scales")
            stats = (mean, scale)
        gm.converged_ = bool(m.converged)
        gm.n_iter_ = int(m.n_iter)
        gm.lower_bound_ = float(m.lower_bound) if m.lower_bound is not None else -np.inf
        segmenter = cls(params=params)
        segmenter.gmm_ = gm
        segmenter.component_colors_ = np.clip(colors, 0.0, 1.0)
        segmenter.component_names_ = [str(n) for n in state.component_names]
        segmenter.channels_ = int(state.channels)
        segmenter.n_features_in_ = d
        segmenter.texture_stats_ = stats
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

    # ------------------------------------------------------------------
    # windows of a larger image (gmmseg.dask predicts chunked arrays this way)
    def prediction_halo(self) -> int:
        """How far (in pixels) the prediction of one pixel looks at others.

        A window of a larger image, predicted by :meth:`predict_window` with
        this many more pixels on every side that is not a side of the whole
        image, gives its inner pixels the whole image's result. Colour and
        position features look at the pixel alone; texture features as far
        as :func:`gmmseg.features.texture_reach` (each Gaussian of the bank
        reaches ``int(4 * sigma + 0.5)`` pixels: the illumination
        background's, one more for the gradient filters' differences, and
        the largest scale's add up); with ``smoothing > 0`` each of the
        maps' ``_MAP_SWEEPS`` synchronous mean-field sweeps reaches one
        pixel further (its 8 neighbours' previous distributions), on top of
        the features.

        Returns
        -------
        int
        """
        self._check_fitted()  # feature_set='auto' is resolved by the model's channels
        config = self.features
        reach = 0
        if config.uses_texture:
            reach = config.texture_reach()
        if self.smoothing > 0:
            reach += _MAP_SWEEPS
        return reach

    def predict_window(self, image: ImageLike, origin: tuple[int, int] = (0, 0),
                       full_shape: tuple[int, int] | None = None) -> "Segmentation":
        """Segment a window of a larger image.

        Parameters
        ----------
        image : path, ImageData or array
            The window's pixels.
        origin : (int, int)
            Row and column of the window's first pixel in the whole image.
        full_shape : (int, int), optional
            Height and width of the whole image (default: the window ends
            where the image does).

        Returns
        -------
        Segmentation
            Of the window, with all three maps. Position features are the
            pixels' positions in the whole image; texture features and the
            spatial prior see the window only, so pixels within
            :meth:`prediction_halo` of a side of the window inside the image
            may differ from the whole image's result, and the others equal it.
        """
        self._check_fitted()
        image = load_image(image)
        h, w = image.mask.shape
        y0, x0 = (int(v) for v in origin)
        H, W = (y0 + h, x0 + w) if full_shape is None else (int(v) for v in full_shape)
        if y0 < 0 or x0 < 0 or y0 + h > H or x0 + w > W:
            raise ValueError(f"a {h} x {w} window at {(y0, x0)} does not fit in an image of shape {(H, W)}.")
        gm = self.gmm_
        K = gm.means_.shape[0]
        mask = image.mask
        X, index = self._feature_table(image, self.channels_)
        config = self.features
        if config.uses_position and X.shape[0]:
            # Positions are the last two columns; the same arithmetic as
            # position_features on the whole image, from the window's origin.
            scale = config.spatial_weight / max(H, W)
            xs = (np.arange(x0, x0 + w) * scale).astype(np.float32)
            ys = (np.arange(y0, y0 + h) * scale).astype(np.float32)
            X[:, -2] = np.broadcast_to(xs[None, :], (h, w))[mask]
            X[:, -1] = np.broadcast_to(ys[:, None], (h, w))[mask]
        if X.shape[0] == 0:
            labels = np.full((h, w), -1, np.int32)
            probabilities = np.zeros((h, w, K), np.float32)
            log_likelihood = np.full((h, w), np.nan, np.float32)
        elif self.smoothing > 0:
            labels = np.full((h, w), -1, dtype=np.int32)
            probabilities = potts_posteriors(gm, X, index, self.smoothing, _MAP_SWEEPS, labels=labels)
            log_likelihood = _TableMaps(index, None, None, gm.score_samples(X).astype(np.float32)
                                        ).rows("log_likelihood", 0, h)
        else:
            labels_u, proba_u, ll_u = gm.estimate(X, proba_dtype=np.float32)
            table = _TableMaps(index, labels_u.astype(np.int32, copy=False), proba_u, ll_u.astype(np.float32, copy=False))
            labels, probabilities, log_likelihood = (table.rows(name, 0, h) for name in MAP_NAMES)
        return Segmentation(labels, probabilities, log_likelihood, mask.copy(), self.component_colors_, gm.weights_,
                            self.component_names_)

#: The effective sample size of the 'bic-300' criterion, in pixels.
EFFECTIVE_PIXELS = 300

#: What each K criterion means, as select_k and its callers name the rule.
K_CRITERIA = {
    "bic-300": f"lowest BIC at an effective sample size of {EFFECTIVE_PIXELS} pixels",
    "bic": "lowest BIC",
    "aic": "lowest AIC",
}


@dataclass
class KSelection:
    """The result of :func:`select_k`.

    Attributes
    ----------
    rows : list of dict
        One per fitted model: k, covariance_type, bic, aic, bic_300 (see
        :func:`select_k`), log_likelihood (mean per pixel), n_parameters,
        converged, n_iter, lower_bound (EM's last mean log-likelihood, as
        ``GaussianMixture.lower_bound_``).
    criterion : str
        'bic-300', 'bic' or 'aic'.
    best_k : int
    best_covariance_type : str
    rule : str
        The rule that chose K, in words.
    at_edge : bool
        True when the best K is the largest K tried (or the smallest, above
        1): the best value may lie outside the range.
    """

    rows: list = field(default_factory=list)
    criterion: str = "bic-300"
    best_k: int = 0
    best_covariance_type: str = ""
    rule: str = ""
    at_edge: bool = False

    def best_row(self) -> dict | None:
        for row in self.rows:
            if row["k"] == self.best_k and row["covariance_type"] == self.best_covariance_type:
                return row
        return None

    def format_table(self) -> str:
        """The table as aligned text, the best row marked with '*'."""
        lines = [f"{'':1} {'K':>3} {'covariance':<10} {'BIC-300':>12} {'BIC':>14} {'AIC':>14} {'log-lik/pixel':>14}"]
        for row in self.rows:
            mark = "*" if row is self.best_row() else " "
            lines.append(
                f"{mark:1} {row['k']:>3} {row['covariance_type']:<10} {row['bic_300']:>12.1f} {row['bic']:>14.1f} "
                f"{row['aic']:>14.1f} {row['log_likelihood']:>14.4f}"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        """One line: the chosen K, the rule, and a warning at the range's edge."""
        text = f"best K = {self.best_k} ({self.best_covariance_type}) by {self.rule}"
        if self.at_edge:
            text += "; it is at the edge of the K range tried, so a K outside the range may be better"
        return text


def _row_key(criterion: str) -> str:
    return criterion.replace("-", "_")


def select_k(
    image: ImageLike | list[ImageLike],
    k_range: Iterable[int] = range(1, 9),
    covariance_type: str | Iterable[str] | None = None,
    criterion: str | None = None,
    *,
    params: SegmenterParams | None = None,
    callback: Callable[[dict], bool | None] | None = None,
    max_pixels: int | None = None,
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
    criterion : {'bic-300', 'bic', 'aic'}, optional
        Default: the settings' ``k_criterion`` ('bic-300'). 'bic-300' is BIC
        with the sample size fixed at 300 pixels: ``-2 * 300 * L + p *
        ln(300)`` with L the mean log-likelihood per pixel and p the number
        of parameters. Plain BIC counts every pixel as an independent sample;
        with 10^5-10^7 pixels every extra component then "pays" and BIC
        picks the top of the range on almost every photo. At 300 pixels an
        extra full-covariance colour component must raise the mean
        log-likelihood by about 0.095 nats per pixel, whatever the image
        size. Measured by ``benchmarks/bench_select_k.py`` with the default
        settings: the true K on 64 of 72 synthetic images with 3-8 regions
        (the others one too few; plain BIC 0 of 72, always too many), and
        never the top of 1-12 on 14 photos (plain BIC: 14 of 14).
    params : SegmenterParams, optional
        Every other setting (colour space, iterations, starts,
        initialisation, sampling...); keyword arguments change some of
        them. The spatial prior (``smoothing``) takes no part: the criteria
        compare mixtures. With position features the mixtures are fitted on
        the spatial fit's grid (at most ``spatial_fit_pixels`` pixels).
    callback : callable, optional
        Called with each finished row (a dict); returning True stops the
        sweep early (the rows so far are kept).
    max_pixels : int, optional
        Largest image accepted (see :func:`gmmseg.load_image`).

    Returns
    -------
    KSelection
        With ``rule`` naming the rule and ``at_edge`` set (and a
        ``UserWarning``) when the best K is at the top of the range, or at
        its bottom above K = 1.
    """
    base = SegmenterParams() if params is None else params
    if criterion is None:
        criterion = settings.pop("k_criterion", base.k_criterion)
    if criterion not in K_CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(map(repr, K_CRITERIA))}, got {criterion!r}.")
    ks = list(check_int_list(k_range, "k_range"))
    if covariance_type is not None:
        types = [covariance_type] if isinstance(covariance_type, str) else list(covariance_type)
    else:
        types = [base.covariance_type]
    settings.pop("n_components", None)  # the sweep sets K
    template = Segmenter(params=base.replace(n_components=min(ks), covariance_type=types[0], k_criterion=criterion,
                                             **settings))
    sweep = template.params
    # Colour features: every pixel, compressed exactly to unique colours.
    # Position features cannot be compressed: the sweep then fits the grid of
    # at most spatial_fit_pixels pixels the spatial fit uses (the criteria
    # are per pixel, so they do not depend on how many pixels are fitted),
    # and max_samples draws from it as in a fit without the prior.
    # Several images are read one at a time (Segmenter.fit's streamed rows);
    # the sweep keeps only the rows, not the image(s) or the pixel map.
    template._max_pixels = max_pixels  # for every image loaded (see Segmenter._load)
    image = template._resolve_auto(image)
    _, channels, data = template._training_data(image, grid=template.features.uses_position, grid_max_samples=False)
    template._check_auto(channels)
    data.images, data.pixel_rows = [], None
    result = KSelection(criterion=criterion, rule=K_CRITERIA[criterion])
    stopped = False
    for ctype in types:
        if stopped:
            break
        for k in ks:
            if data.sample_weight is None and data.X.shape[0] < k:
                continue  # fewer pixels than components
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                gm = Segmenter(params=sweep.replace(n_components=k, covariance_type=ctype))._fit_mixture(data, None)
            mean_ll = float(gm.score(data.X, sample_weight=data.sample_weight))
            n_parameters = int(gm._n_parameters())
            row = {
                "k": k,
                "covariance_type": ctype,
                "bic_300": float(-2.0 * EFFECTIVE_PIXELS * mean_ll + n_parameters * np.log(EFFECTIVE_PIXELS)),
                "bic": float(gm.bic(data.X, sample_weight=data.sample_weight)),
                "aic": float(gm.aic(data.X, sample_weight=data.sample_weight)),
                "log_likelihood": mean_ll,
                "n_parameters": n_parameters,
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
    key = _row_key(criterion)
    best = min(result.rows, key=lambda r: r[key])
    result.best_k = best["k"]
    result.best_covariance_type = best["covariance_type"]
    tried = sorted({r["k"] for r in result.rows})
    result.at_edge = len(tried) > 1 and (best["k"] == tried[-1] or (best["k"] == tried[0] and tried[0] > 1))
    if result.at_edge:
        warnings.warn(f"select_k: {result.summary()}.", UserWarning, stacklevel=2)
    return result
