"""Array-to-picture conversions for the views (NumPy only, no Qt, no loops
over pixels), so they can run in worker threads and be tested alone."""

from dataclasses import dataclass, field

import numpy as np

from ..engine import GaussianMixture
from ..export import display_colors, inspection_overlay
from ..io import ImageData
from ..segment import Segmenter

VIEW_MODES = ("original", "labels", "soft", "uncertainty", "anomaly")
VIEW_TITLES = {
    "original": "Original",
    "labels": "Hard labels",
    "soft": "Soft map",
    "uncertainty": "Uncertainty",
    "anomaly": "Anomaly overlay",
}
ANOMALY_COLOR = np.array([255, 40, 40], dtype=np.uint8)
PREVIEW_PIXELS = 1_000_000  # previews of a running fit are drawn on a grid of at most this many pixels


def _perceptual_lut(n=256):
    """A perceptual colormap built in CIE L*a*b*: lightness rises linearly
    from dark blue-violet to pale yellow while the hue turns, so equal steps
    in value look like equal steps in colour and it prints in grey."""
    from skimage.color import lab2rgb

    t = np.linspace(0.0, 1.0, n)
    lightness = 18.0 + 78.0 * t
    hue = np.deg2rad(300.0 - 215.0 * t)  # violet -> blue -> green -> yellow
    chroma = 38.0 + 22.0 * np.sin(np.pi * t) + 10.0 * t
    lab = np.stack([lightness, chroma * np.cos(hue), chroma * np.sin(hue)], axis=1)
    rgb = np.clip(lab2rgb(lab[None])[0], 0.0, 1.0)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


LUT = _perceptual_lut()


def colormap(values, vmin=0.0, vmax=1.0, lut=LUT, invalid=(40, 40, 40)):
    """Map a float array to RGB uint8 through a lookup table; NaN -> ``invalid``."""
    span = (vmax - vmin) or 1.0
    with np.errstate(invalid="ignore"):
        scaled = (values - vmin) * ((len(lut) - 1) / span)
    finite = np.isfinite(scaled)
    index = np.clip(np.where(finite, scaled, 0), 0, len(lut) - 1).astype(np.intp)
    rgb = lut[index]
    if not finite.all():
        rgb[~finite] = invalid
    return rgb


def palette_uint8(colors):
    return (np.clip(np.asarray(colors, dtype=np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def blend(base, overlay, opacity, where=None):
    """``base`` blended towards ``overlay`` by ``opacity`` (where ``where``)."""
    if opacity <= 0.0:
        return base
    a = np.uint16(round(opacity * 256))
    mixed = ((base.astype(np.uint16) * (256 - a) + overlay.astype(np.uint16) * a) >> 8).astype(np.uint8)
    if where is None:
        return mixed
    out = base.copy()
    out[where] = mixed[where]
    return out


def label_colors(labels, colors, visible=None):
    """RGB of each pixel's component; hidden components and masked pixels
    come back as the ``valid`` mask's complement (False)."""
    palette = palette_uint8(colors)
    K = len(palette)
    shown = np.ones(K, dtype=bool) if visible is None else np.asarray(visible, dtype=bool)
    table = np.zeros((K + 1, 3), dtype=np.uint8)
    table[:K] = palette
    index = np.where(labels >= 0, labels, K)
    valid = np.concatenate([shown, [False]])[index]
    return table[index], valid


def render(mode, base_rgb, segmentation=None, *, component=0, opacity=0.6, overlay=True,
           visible=None, anomaly=None):
    """The RGB picture (H, W, 3) uint8 for a view mode.

    ``base_rgb`` is the original image; ``anomaly`` the boolean anomaly mask.
    Label and anomaly views draw over the original with ``opacity`` (and not
    at all when ``overlay`` is off); soft and uncertainty maps use the
    perceptual colormap.
    """
    if mode == "original" or segmentation is None:
        return base_rgb
    seg = segmentation
    if mode == "labels":
        if not overlay:
            return base_rgb
        colours, valid = label_colors(seg.labels, seg.component_colors, visible)
        return blend(base_rgb, colours, opacity, where=valid)
    if mode == "soft":
        k = int(np.clip(component, 0, seg.n_components - 1))
        values = np.where(seg.mask, seg.probabilities[..., k], np.nan)
        return colormap(values, 0.0, 1.0)
    if mode == "uncertainty":
        return colormap(seg.uncertainty, 0.0, 1.0)
    if mode == "anomaly":
        if anomaly is None or not overlay:
            return base_rgb
        flat = np.broadcast_to(ANOMALY_COLOR, base_rgb.shape)
        return blend(base_rgb, flat, max(opacity, 0.35), where=anomaly)
    raise ValueError(f"unknown view mode {mode!r}; expected one of {', '.join(VIEW_MODES)}")


def checkerboard_under(rgb, mask, cell=8):
    """Show masked-out (transparent) pixels over a light checkerboard."""
    if mask.all():
        return rgb
    h, w = mask.shape
    yy, xx = np.ogrid[:h, :w]
    board = np.where(((yy // cell) + (xx // cell)) % 2 == 0, 205, 235).astype(np.uint8)
    out = rgb.copy()
    out[~mask] = board[~mask][:, None]
    return out


def full_covariances(covs, K, d, covariance_type):
    """(K, d, d) covariance matrices from any covariance type's layout."""
    if covariance_type == "full":
        return covs
    if covariance_type == "tied":
        return np.broadcast_to(covs, (K, d, d))
    if covariance_type == "diag":
        return np.stack([np.diag(c) for c in covs])
    return np.stack([c * np.eye(d) for c in covs])


@dataclass(frozen=True)
class ViewRequest:
    """Everything a view's picture depends on (a snapshot, safe to hand to a
    worker thread)."""

    mode: str
    base_rgb: np.ndarray
    segmentation: object = None
    component: int = 0
    opacity: float = 0.6
    overlay: bool = True
    visible: list = field(default_factory=list)
    percentile: float = 1.0
    colors: np.ndarray | None = None
    inspection: object = None


_STRIP = 1 << 20  # pixels drawn at a time: bounded temporaries, and a cancel check between strips


def _strips(height, width):
    rows = max(1, _STRIP // max(width, 1))
    return [(r, min(height, r + rows)) for r in range(0, height, rows)]


def render_view(request, cancelled=lambda: False):
    """The picture of a view, strip by strip: ``(rgb, threshold, fraction)``.

    ``threshold`` and ``fraction`` are the anomaly view's log-likelihood
    threshold and the fraction of pixels below it (None for other views).
    Raises :class:`InterruptedError` when ``cancelled()`` turns True.
    """
    base, seg, mode = request.base_rgb, request.segmentation, request.mode
    if mode == "inspection":
        result = request.inspection
        if result is None or result.mask.shape != base.shape[:2]:
            return base, None, None
        return inspection_overlay(base, result), None, None
    if mode == "original" or seg is None:
        return base, None, None
    H, W = seg.mask.shape
    threshold = fraction = None
    if mode == "anomaly":
        threshold = seg.anomaly_threshold(request.percentile)
        if cancelled():
            raise InterruptedError
    if (mode in ("labels", "anomaly")) and not request.overlay:
        return base, threshold, _fraction(seg, threshold) if threshold is not None else None
    out = np.empty_like(base)
    flagged = 0
    colors = seg.component_colors if request.colors is None else request.colors
    k = int(np.clip(request.component, 0, seg.n_components - 1))
    K = seg.n_components
    for start, stop in _strips(H, W):
        if cancelled():
            raise InterruptedError
        part = base[start:stop]
        mask = seg.mask[start:stop]
        if mode == "labels":
            rgb, valid = label_colors(seg.map_rows("labels", start, stop), colors, request.visible or None)
            out[start:stop] = blend(part, rgb, request.opacity, where=valid)
        elif mode == "soft":
            p = seg.map_rows("probabilities", start, stop)[..., k]
            out[start:stop] = colormap(np.where(mask, p, np.nan), 0.0, 1.0)
        elif mode == "uncertainty":
            values = np.full(mask.shape, np.nan, dtype=np.float32)
            if K == 1:
                values[mask] = 0.0
            else:
                p = seg.map_rows("probabilities", start, stop)[mask]
                with np.errstate(divide="ignore", invalid="ignore"):
                    terms = np.where(p > 0, p * np.log(p), 0.0)
                values[mask] = np.clip(-terms.sum(axis=1) / np.log(K), 0.0, 1.0)
            out[start:stop] = colormap(values, 0.0, 1.0)
        elif mode == "anomaly":
            with np.errstate(invalid="ignore"):
                below = (seg.map_rows("log_likelihood", start, stop) < threshold) & mask
            flagged += int(below.sum())
            flat = np.broadcast_to(ANOMALY_COLOR, part.shape)
            out[start:stop] = blend(part, flat, max(request.opacity, 0.35), where=below)
        else:
            raise ValueError(f"unknown view mode {mode!r}; expected one of {', '.join(VIEW_MODES)}")
    if mode == "anomaly":
        fraction = flagged / max(int(seg.mask.sum()), 1)
    return out, threshold, fraction


def _fraction(seg, threshold):
    with np.errstate(invalid="ignore"):
        return float(((seg.log_likelihood < threshold) & seg.mask).sum() / max(int(seg.mask.sum()), 1))


def preview_labels(image, model, params, cache):
    """A label picture of a running (or just fitted) mixture on a grid of
    at most ``PREVIEW_PIXELS`` pixels: ``(rgb, (width, height))``, or None
    for a mixture without colour features.

    ``model`` is an :class:`gmmseg.EMProgress` or a fitted Segmenter; with
    position features the preview labels colours by the mixture's colour
    marginal. ``cache`` (a dict) keeps the grid's colour table between calls.
    """
    if not params.features.uses_color:
        return None
    if not cache:
        H, W = image.mask.shape
        step = max(1, int(np.ceil(np.sqrt(H * W / PREVIEW_PIXELS))))
        grid = ImageData(pixels=image.pixels[::step, ::step], mask=image.mask[::step, ::step],
                         bit_depth=image.bit_depth, mode=image.mode, value_range=image.value_range)
        table = Segmenter(params=params).color_table(grid)
        base = checkerboard_under(np.ascontiguousarray(image.to_uint8()[::step, ::step]), grid.mask)
        cache.update(table=table, base=base, size=(W, H))
    table = cache["table"]
    gm = getattr(model, "gmm_", None)
    if gm is not None:
        weights, means, covariances, prec_chol = gm.weights_, gm.means_, gm.covariances_, gm.precisions_cholesky_
        covariance_type = gm.covariance_type
    else:
        weights, means, covariances, prec_chol = model.weights, model.means, model.covariances, model.precisions_cholesky
        covariance_type = params.covariance_type
    X = table.features
    c = X.shape[1]
    means = np.asarray(means)
    K, d = means.shape
    if d > c:
        covs = full_covariances(np.asarray(covariances), K, d, covariance_type)[:, :c, :c]
        prec = np.stack([np.linalg.inv(np.linalg.cholesky(cov)).T for cov in covs])
        mixture = GaussianMixture.from_parameters(weights, means[:, :c], prec)
    else:
        mixture = GaussianMixture.from_parameters(weights, means, prec_chol, covariance_type=covariance_type)
    labels_u = mixture.predict(X) if X.shape[0] else np.empty(0, np.int64)
    counts = table.counts
    mass = np.bincount(labels_u, weights=counts, minlength=K)
    colours = np.stack([np.bincount(labels_u, weights=counts * table.colors[:, j], minlength=K) for j in range(3)], axis=1)
    colours = np.where(mass[:, None] > 0, colours / np.maximum(mass, 1e-12)[:, None], 0.5)
    colours = display_colors(colours, image.is_gray)
    labels = np.where(table.index >= 0, labels_u[np.maximum(table.index, 0)], -1)
    rgb, valid = label_colors(labels, colours)
    return blend(cache["base"], rgb, 0.6, where=valid), cache["size"]
