"""Array-to-picture conversions for the views (NumPy only, no Qt, no loops
over pixels), so they can run in worker threads and be tested alone."""

import numpy as np

VIEW_MODES = ("original", "labels", "soft", "uncertainty", "anomaly")
VIEW_TITLES = {
    "original": "Original",
    "labels": "Hard labels",
    "soft": "Soft map",
    "uncertainty": "Uncertainty",
    "anomaly": "Anomaly overlay",
}
ANOMALY_COLOR = np.array([255, 40, 40], dtype=np.uint8)


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
