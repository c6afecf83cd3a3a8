"""Numba kernels of the texture filter bank: separable Gaussian smoothing and
the per-pixel filters built on it, in float32, row by row.

Every kernel fills a range of output rows ``[r0, r1)`` so that the Python
side (:func:`gmmseg.features.texture_features`) spreads ranges over threads;
an output row depends only on the input, never on another output row, so
results do not depend on the thread count. Borders repeat the edge pixel
(scipy.ndimage's ``mode="nearest"``), and the Gaussian weights are
scipy.ndimage's (radius ``int(4 * sigma + 0.5)``, normalised to sum 1), so
``gaussian_filter(image, sigma, mode="nearest")`` is the reference.
"""

import math

import numpy as np

from ._jit import FASTMATH, kernel


def gaussian_weights(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Half of a normalised 1-D Gaussian kernel: weights[0] is the centre,
    weights[t] the weight at offsets +t and -t (float32)."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / (sigma * sigma) * x * x)
    phi /= phi.sum()
    return phi[radius:].astype(np.float32)


@kernel(fastmath=FASTMATH)
def smooth_columns(src, dst, half, r0, r1):
    """dst[r, :] = sum_t w_t src[r + t, :] (Gaussian along each column) for
    rows r0..r1, rows beyond the image repeating the edge row."""
    H, W = src.shape
    R = half.shape[0] - 1
    for r in range(r0, r1):
        out = dst[r]
        centre = src[r]
        w0 = half[0]
        for c in range(W):
            out[c] = w0 * centre[c]
        for t in range(1, R + 1):
            up = src[max(r - t, 0)]
            down = src[min(r + t, H - 1)]
            wt = half[t]
            for c in range(W):
                out[c] += wt * (up[c] + down[c])


@kernel(fastmath=FASTMATH)
def smooth_rows(src, dst, half, r0, r1):
    """dst[r, :] = Gaussian along row r of src, for rows r0..r1 (edge pixels
    repeated beyond the row's ends)."""
    H, W = src.shape
    R = half.shape[0] - 1
    padded = np.empty(W + 2 * R, dtype=np.float32)
    for r in range(r0, r1):
        row = src[r]
        for c in range(R):
            padded[c] = row[0]
            padded[R + W + c] = row[W - 1]
        for c in range(W):
            padded[R + c] = row[c]
        out = dst[r]
        w0 = half[0]
        centre = padded[R:R + W]
        for c in range(W):
            out[c] = w0 * centre[c]
        for t in range(1, R + 1):
            wt = half[t]
            left = padded[R - t:R - t + W]
            right = padded[R + t:R + t + W]
            for c in range(W):
                out[c] += wt * (left[c] + right[c])


@kernel(fastmath=FASTMATH)
def divide_by_background(image, background, out, floor, r0, r1):
    """out = image / max(background, floor) - 1 for rows r0..r1: lightness
    relative to its large-scale surroundings (0 = as bright as around)."""
    W = image.shape[1]
    for r in range(r0, r1):
        for c in range(W):
            out[r, c] = image[r, c] / max(background[r, c], floor) - 1.0


@kernel(fastmath=FASTMATH)
def square(image, out, r0, r1):
    W = image.shape[1]
    for r in range(r0, r1):
        for c in range(W):
            v = image[r, c]
            out[r, c] = v * v


@kernel(fastmath=FASTMATH)
def scale_filters(smoothed, smoothed_square, out, first, r0, r1):
    """The filters of one scale from the image smoothed at that scale (G)
    and its smoothed square (Q), for rows r0..r1: ``out[r, c, first]`` = G
    and ``out[r, c, first + 1]`` = sqrt(max(Q - G**2, 0)), the local
    standard deviation."""
    W = smoothed.shape[1]
    for r in range(r0, r1):
        row = smoothed[r]
        q = smoothed_square[r]
        for c in range(W):
            g = row[c]
            out[r, c, first] = g
            out[r, c, first + 1] = math.sqrt(max(q[c] - g * g, 0.0))
