"""From images to feature matrices, and exact compression of repeated colours.

Every colour space is scaled so that its features span roughly one unit
(like RGB in [0, 1]); ``reg_covar`` and ``tol`` then mean the same whatever
the colour space and the bit depth of the file:

* ``rgb``: R, G, B in [0, 1].
* ``lab``: CIE L*a*b* (D65) divided by 100: L in [0, 1], a and b in about
  [-1, 1]; Euclidean distance is Delta E / 100.
* ``hsv``: (S cos H, S sin H, V); hue is an angle, so red at 0 and at 360
  degrees are neighbours, and greys (S = 0) sit at the centre whatever hue.
* ``ycbcr``: full-range (JPEG) Y in [0, 1], Cb and Cr in [-0.5, 0.5].
* ``gray``: luminance (Rec. 709 weights) in [0, 1].

Grey images give one feature in every colour space (its lightness in that
space).

Feature sets (``feature_set``): ``color`` (the colour features above),
``texture`` (a filter bank on lightness, see :func:`texture_features`) or
``color+texture`` (both, colour first). With ``spatial_weight > 0`` the pixel
position (x, y), divided by the image's longer side and multiplied by the
weight, is appended last.
"""

from dataclasses import asdict, dataclass, replace

import numpy as np

from . import _counting, _texture
from ._validation import check_int_list
from .engine import map_rows

COLOR_SPACES = ("rgb", "lab", "hsv", "ycbcr", "gray")
FEATURE_SETS = ("color", "texture", "color+texture", "auto")
#: What ``feature_set="auto"`` becomes, by the model's channel count: a grey
#: value alone cannot tell a surface from its defects (on the Magnetic Tile
#: images, pixel AUROC 0.50 with it against 0.80 with texture), while colour
#: images are described best by colour (on the synthetic colour surfaces
#: texture lowered the mask F1 from 0.92 to 0.09). See the README.
AUTO_FEATURE_SETS = {1: "color+texture", 3: "color"}
#: The texture filter banks (setting ``texture_filters``), named by the
#: filters applied at every scale, in column order:
#:
#: * ``smoothed``: the Gaussian-smoothed lightness;
#: * ``deviation``: its local standard deviation;
#: * ``gradient``: two columns, the local energy (root mean square over the
#:   Gaussian window) of the lightness derivative along x, then along y, so
#:   that oriented texture (brushed, ground or woven surfaces) is described
#:   by its direction too.
#:
#: On the Magnetic Tile images ``smoothed+gradient`` gave the best pixel
#: AUROC (see the README); gradient magnitude and Laplacian of Gaussian were
#: measured too and added nothing.
TEXTURE_FILTER_SETS = ("smoothed+gradient", "smoothed+deviation", "smoothed+deviation+gradient")
#: The bank of model files written before ``texture_filters`` existed.
LEGACY_TEXTURE_FILTERS = "smoothed+deviation"


def texture_filter_columns(filters: str) -> tuple[str, ...]:
    """Column names per scale of a filter bank, e.g. ``("smoothed",
    "gradient_x", "gradient_y")``."""
    if filters not in TEXTURE_FILTER_SETS:
        raise ValueError(f"texture_filters must be one of {', '.join(TEXTURE_FILTER_SETS)}; got {filters!r}.")
    columns = []
    for name in filters.split("+"):
        columns += ["gradient_x", "gradient_y"] if name == "gradient" else [name]
    return tuple(columns)
#: Lightness below this is treated as this in the illumination normalisation
#: (a black background must not divide by zero).
ILLUMINATION_FLOOR = 1.0 / 255.0
_TEXTURE_ROWS = 64  # rows per parallel task of the filter bank

_LUMA_709 = np.array([0.2125, 0.7154, 0.0721])
# Full-range YCbCr (JFIF): rows give Y, Cb, Cr from R, G, B in [0, 1].
_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ]
)


@dataclass(frozen=True)
class FeatureConfig:
    """How pixels become features.

    Parameters
    ----------
    color_space : {'rgb', 'lab', 'hsv', 'ycbcr', 'gray'}
    spatial_weight : float
        Weight of the pixel position features; 0 (default) leaves them out.
    feature_set : {'color', 'texture', 'color+texture', 'auto'}
        'auto' is resolved by :meth:`resolved` once the channel count is
        known (until then it acts as 'color').
    texture_scales : tuple of int
        Gaussian scales (pixels) of the texture filter bank.
    illumination_sigma : float
        Scale (pixels) of the background that lightness is divided by before
        the texture filters; 0 = no illumination normalisation.
    texture_filters : str
        One of ``TEXTURE_FILTER_SETS``: the filters at every scale.
    row_column_sigma : float
        Scale (pixels) of the averages along each row and then each column
        that are subtracted from the (normalised) lightness before the
        texture filters; 0 = none. Model files written before it existed
        read as 0.
    """

    color_space: str = "lab"
    spatial_weight: float = 0.0
    feature_set: str = "color"
    texture_scales: tuple = (1, 2, 4, 8, 16)
    illumination_sigma: float = 8.0
    texture_filters: str = TEXTURE_FILTER_SETS[0]
    row_column_sigma: float = 0.0

    def __post_init__(self):
        if self.color_space not in COLOR_SPACES:
            raise ValueError(
                f"color_space must be one of {', '.join(COLOR_SPACES)}; got {self.color_space!r}."
            )
        if self.feature_set not in FEATURE_SETS:
            raise ValueError(f"feature_set must be one of {', '.join(FEATURE_SETS)}; got {self.feature_set!r}.")
        for name in ("spatial_weight", "illumination_sigma", "row_column_sigma"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer))
                    or not np.isfinite(value) or value < 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
            object.__setattr__(self, name, float(value))
        object.__setattr__(self, "texture_scales", check_int_list(self.texture_scales, "texture_scales", minimum=1))
        texture_filter_columns(self.texture_filters)  # checks the name

    def resolved(self, channels: int) -> "FeatureConfig":
        """This configuration for a model of ``channels`` (1 or 3) channels:
        'auto' becomes ``AUTO_FEATURE_SETS[channels]``."""
        if self.feature_set != "auto":
            return self
        return replace(self, feature_set=AUTO_FEATURE_SETS[1 if channels == 1 else 3])

    @property
    def uses_position(self):
        return self.spatial_weight > 0

    @property
    def uses_color(self):
        return self.feature_set != "texture"

    @property
    def uses_texture(self):
        return "texture" in self.feature_set

    @property
    def per_pixel(self):
        """True when features depend on more than a pixel's colour (no
        compression to unique colours)."""
        return self.uses_position or self.uses_texture

    def n_color_features(self, channels):
        """Colour features for an image with 1 (grey) or 3 channels (0
        without colour in the feature set)."""
        if not self.uses_color:
            return 0
        return 1 if channels == 1 or self.color_space == "gray" else 3

    @property
    def n_texture_features(self):
        return len(self.texture_scales) * len(texture_filter_columns(self.texture_filters)) if self.uses_texture else 0

    def n_features(self, channels):
        return self.n_color_features(channels) + self.n_texture_features + (2 if self.uses_position else 0)

    def texture_reach(self) -> int:
        """:func:`texture_reach` of this configuration's filter bank."""
        return texture_reach(self.texture_scales, self.illumination_sigma, self.texture_filters, self.row_column_sigma)

    def to_dict(self):
        data = asdict(self)
        data["texture_scales"] = list(self.texture_scales)
        return data

    @classmethod
    def from_dict(cls, data):
        return cls(**data)


def color_features(colors, color_space):
    """Features of colours.

    Parameters
    ----------
    colors : array of shape (N, 1) or (N, 3)
        Grey or sRGB values in [0, 1].
    color_space : str
        One of :data:`COLOR_SPACES`.

    Returns
    -------
    ndarray of shape (N, 1) or (N, 3), float64
    """
    colors = np.asarray(colors, dtype=np.float64)
    if colors.ndim != 2 or colors.shape[1] not in (1, 3):
        raise ValueError(f"colors must have shape (N, 1) or (N, 3), got {colors.shape}.")
    if color_space not in COLOR_SPACES:
        raise ValueError(f"color_space must be one of {', '.join(COLOR_SPACES)}; got {color_space!r}.")
    if colors.shape[1] == 1:
        grey = colors
        if color_space == "lab":
            return lab_lightness(np.repeat(grey, 3, axis=1))[:, None] / 100.0
        return grey.copy()
    if color_space == "rgb":
        return colors.copy()
    if color_space == "gray":
        return luminance(colors)[:, None]
    if color_space == "ycbcr":
        return colors @ _YCBCR.T
    if color_space == "hsv":
        from skimage.color import rgb2hsv

        hsv = rgb2hsv(colors[None, :, :])[0]
        angle = 2.0 * np.pi * hsv[:, 0]
        return np.column_stack([hsv[:, 1] * np.cos(angle), hsv[:, 1] * np.sin(angle), hsv[:, 2]])
    from skimage.color import rgb2lab

    return rgb2lab(colors[None, :, :])[0] / 100.0


def luminance(colors):
    """Rec. 709 luminance of sRGB colours (..., 3), in the colours' dtype.

    Element by element, not a matrix product: BLAS rounds the last bit
    differently for the last columns of a row, and a pixel must get the same
    value whether a whole image or a tile of it is converted."""
    weights = _LUMA_709.astype(colors.dtype)
    return colors[..., 0] * weights[0] + colors[..., 1] * weights[1] + colors[..., 2] * weights[2]


def lab_lightness(colors):
    """CIE L* (0-100) of sRGB colours of shape (N, 3) in [0, 1]."""
    from skimage.color import rgb2lab

    return rgb2lab(np.asarray(colors, dtype=np.float64)[None])[0][:, 0]


def unique_colors(colors, bit_depth):
    """Exact compression of repeated colours.

    Parameters
    ----------
    colors : array of shape (N, C), float32 in [0, 1]
    bit_depth : int
        Source bit depth: 8- and 16-bit colours are keyed by their integer
        codes (a counting sort for 8-bit RGB); other data by exact float bits.

    Returns
    -------
    unique : ndarray (M, C), float32
    counts : ndarray (M,), float64
    inverse : ndarray (N,) of int, with ``unique[inverse] == colors``
    """
    n, c = colors.shape
    if bit_depth <= 16:
        bits = 8 if bit_depth <= 8 else 16
        top = float((1 << bits) - 1)
        # One pass: codes, and whether the colours were integer codes at all
        # (else the float path below).
        keys, exact = _counting.color_codes(np.ascontiguousarray(colors, dtype=np.float32), bits)
        if exact:
            if bits * c <= 24 and n >= (1 << (bits * c)) // 4:
                # Many pixels: a counting sort over every possible code is
                # O(N) and beats sorting (its tables cost 2**24 entries).
                size = 1 << (bits * c)
                all_counts = np.bincount(keys, minlength=size)
                present = np.flatnonzero(all_counts)
                counts = all_counts[present]
                lookup = np.empty(size, dtype=np.int32)
                lookup[present] = np.arange(present.size)
                inverse = lookup[keys]
            elif bits * c <= 32:
                present, inverse, counts = _counting.sorted_unique(keys, bits * c)  # numpy.unique in linear time
            else:
                present, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
            mask = (1 << bits) - 1
            unique = np.column_stack(
                [(present >> (bits * (c - 1 - i))) & mask for i in range(c)]
            ).astype(np.float32) / np.float32(top)
            return unique, counts.astype(np.float64), inverse.ravel()
    # Any other depth: unique on the exact float32 bit patterns of each row.
    view = np.ascontiguousarray(colors).view(np.dtype((np.void, colors.dtype.itemsize * c)))[:, 0]
    _, first, inverse, counts = np.unique(view, return_index=True, return_inverse=True, return_counts=True)
    return colors[first], counts.astype(np.float64), inverse.ravel().astype(np.int64)


def position_axes(shape, spatial_weight, step=1, full_shape=None, first_row=0):
    """The x feature of each column and the y feature of each row of a grid
    of ``shape`` (float32), as :func:`position_features` gives them."""
    h, w = shape if full_shape is None else full_shape
    scale = spatial_weight * step / max(h, w)
    xs = (np.arange(shape[1]) * scale).astype(np.float32)
    ys = ((np.arange(shape[0]) + first_row) * scale).astype(np.float32)  # first_row: with step 1
    return xs, ys


def position_features(mask, spatial_weight, step=1, full_shape=None, first_row=0):
    """(x, y) of the masked-in pixels, divided by the longer side, times
    weight; float32 of shape (n_used, 2), in row-major pixel order.

    ``mask`` may be every ``step``-th pixel of an image of ``full_shape``,
    or (with ``step=1``) its rows from ``first_row`` on: positions are then
    those of the pixels in the whole image.
    """
    xs, ys = position_axes(mask.shape, spatial_weight, step, full_shape, first_row)
    out = np.empty((int(np.count_nonzero(mask)), 2), dtype=np.float32)
    if out.shape[0] == mask.size:  # every pixel: no index arrays needed
        out[:, 0] = np.tile(xs, mask.shape[0])
        out[:, 1] = np.repeat(ys, mask.shape[1])
    else:
        out[:, 0] = np.broadcast_to(xs[None, :], mask.shape)[mask]
        out[:, 1] = np.broadcast_to(ys[:, None], mask.shape)[mask]
    return out


def _gaussian_into(src, sigma, dst, scratch):
    """dst = the border-normalised Gaussian of float32 ``src`` (see
    :func:`gaussian_smooth`), using ``scratch`` (same shape) between passes."""
    H = src.shape[0]
    half = _texture.gaussian_weights(sigma)
    map_rows(lambda r0, r1: _texture.smooth_columns(src, scratch, half, r0, r1), H, rows_per_task=_TEXTURE_ROWS)
    map_rows(lambda r0, r1: _texture.smooth_rows(scratch, dst, half, r0, r1), H, rows_per_task=_TEXTURE_ROWS)
    return dst


def gaussian_smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of a 2-D array in float32, truncated at 4 sigma;
    at the border the taps outside the image are dropped and the rest
    renormalised (``gaussian_filter(x, sigma, mode="constant") /
    gaussian_filter(1, sigma, mode="constant")``). Numba kernels over row
    ranges in parallel; the result does not depend on the thread count."""
    src = np.ascontiguousarray(image, dtype=np.float32)
    if src.ndim != 2:
        raise ValueError(f"gaussian_smooth needs a 2-D array, got shape {src.shape}.")
    if src.size == 0:
        return src.copy()
    return _gaussian_into(src, float(sigma), np.empty_like(src), np.empty_like(src))


def texture_features(lightness, scales=(1, 2, 4, 8, 16), illumination_sigma=8.0, filters=TEXTURE_FILTER_SETS[0],
                     row_column_sigma=0.0):
    """A multi-scale filter bank on lightness, in float32.

    Parameters
    ----------
    lightness : array (H, W)
        Lightness in [0, 1] (grey value, or the luminance of a colour image).
    scales : sequence of int
        Gaussian scales sigma, in pixels.
    illumination_sigma : float
        With a value above 0, lightness is first divided by its Gaussian
        background at this scale, minus 1 (``L / max(G(L), 1/255) - 1``): a
        part lit more brightly or more dimly than the references gives the
        same features, while a local dark or bright defect does not.
    filters : str
        One of ``TEXTURE_FILTER_SETS`` (see there).
    row_column_sigma : float
        With a value above 0, after the illumination normalisation the
        lightness's Gaussian average along its row at this scale is
        subtracted, then that of the result along its column: streaks,
        edges and grain that run straight across the part (a tile's rim,
        the marks of grinding) are taken out, while a hole, a crack at an
        angle or a stain, shorter than the scale, stays.

    Returns
    -------
    ndarray (H, W, len(scales) * columns), float32
        Per scale sigma, the columns of :func:`texture_filter_columns`: the
        smoothed (normalised) lightness G, its local standard deviation
        ``sqrt(G(L**2) - G(L)**2)``, the local derivative energies
        ``sqrt(G(Lx**2))`` and ``sqrt(G(Ly**2))`` (central differences). Every
        Gaussian G is truncated at 4 sigma and normalised at the border
        (``gaussian_filter(x, s, mode="constant") / gaussian_filter(1, s,
        mode="constant")``): computed by Numba kernels over row ranges in
        parallel.
    """
    L = np.ascontiguousarray(lightness, dtype=np.float32)
    if L.ndim != 2:
        raise ValueError(f"lightness must be a 2-D array, got shape {L.shape}.")
    H, W = L.shape
    scales = tuple(int(s) for s in scales)
    columns = texture_filter_columns(filters)
    out = np.empty((H, W, len(columns) * len(scales)), dtype=np.float32)
    if L.size == 0:
        return out
    scratch = np.empty_like(L)

    def rows(job):
        map_rows(job, H, rows_per_task=_TEXTURE_ROWS)

    def gaussian(src, sigma, dst):
        return _gaussian_into(src, sigma, dst, scratch)

    if illumination_sigma > 0:
        background = gaussian(L, float(illumination_sigma), np.empty_like(L))
        normalised = np.empty_like(L)
        rows(lambda r0, r1: _texture.divide_by_background(L, background, normalised, ILLUMINATION_FLOOR, r0, r1))
        L = normalised
        del background
    if row_column_sigma > 0:
        half = _texture.gaussian_weights(float(row_column_sigma))
        along = np.empty_like(L)
        rows(lambda r0, r1: _texture.smooth_rows(L, along, half, r0, r1))
        L = L - along  # a new array: L may be the caller's lightness
        rows(lambda r0, r1: _texture.smooth_columns(L, along, half, r0, r1))
        L -= along
        del along
    # The images each scale smooths: the lightness, and as the bank needs
    # them its square (deviation) and its squared derivatives (gradient).
    inputs = {"smoothed": L}
    if "deviation" in columns:
        inputs["square"] = np.empty_like(L)
        rows(lambda r0, r1: _texture.square(L, inputs["square"], r0, r1))
    if "gradient_x" in columns:
        inputs["gradient_x"], inputs["gradient_y"] = np.empty_like(L), np.empty_like(L)
        rows(lambda r0, r1: _texture.gradient_squares(L, inputs["gradient_x"], inputs["gradient_y"], r0, r1))
    smoothed = {name: np.empty_like(L) for name in inputs}
    for i, sigma in enumerate(scales):
        for name, image in inputs.items():
            gaussian(image, float(sigma), smoothed[name])
        for j, column in enumerate(columns):
            index = i * len(columns) + j
            if column == "deviation":
                rows(lambda r0, r1, index=index: _texture.put_deviation(
                    smoothed["smoothed"], smoothed["square"], out, index, r0, r1))
            else:
                rows(lambda r0, r1, index=index, column=column: _texture.put_column(
                    smoothed[column], out, index, column != "smoothed", r0, r1))
    return out


def texture_reach(scales, illumination_sigma, filters=TEXTURE_FILTER_SETS[0], row_column_sigma=0.0) -> int:
    """Rows (or columns) of context on each side that :func:`texture_features`
    reads to compute a pixel: its features computed on a part of an image
    with this many more rows around it equal those computed on the whole
    image (a strip of a large image can be processed alone)."""
    def radius(sigma):
        return _texture.gaussian_weights(float(sigma)).shape[0] - 1

    reach = max((radius(s) for s in scales), default=0)
    if "gradient_x" in texture_filter_columns(filters):
        reach += 1  # the derivatives read the neighbouring rows
    if illumination_sigma > 0:
        reach += radius(illumination_sigma)
    if row_column_sigma > 0:
        reach += radius(row_column_sigma)  # along rows for a window's columns, along columns for a strip's rows
    return reach


def image_lightness(pixels):
    """Lightness in [0, 1] of an (H, W, 1) grey or (H, W, 3) sRGB image
    (Rec. 709 luminance of the encoded values), float32 (H, W)."""
    if pixels.shape[2] == 1:
        return np.ascontiguousarray(pixels[:, :, 0], dtype=np.float32)
    return luminance(np.asarray(pixels, dtype=np.float32))
