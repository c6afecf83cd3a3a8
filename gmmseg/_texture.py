"""Numba kernels of the texture filter bank: separable Gaussian smoothing and
the per-pixel filters built on it, in float32, row by row.

Every kernel fills a range of output rows ``[r0, r1)`` so that the Python
side (:func:`gmmseg.features.texture_features`) spreads ranges over threads;
an output row depends only on the input, never on another output row, so
results do not depend on the thread count. The Gaussian weights are
scipy.ndimage's (radius ``int(4 * sigma + 0.5)``, normalised to sum 1).
Borders are handled by normalised convolution: taps outside the image are
dropped and the rest renormalised, so ``gaussian_filter(image, sigma,
mode="constant") / gaussian_filter(ones, sigma, mode="constant")`` is the
reference. (Repeating the edge pixel, scipy's ``mode="nearest"``, drew a
30-60 px band of high anomaly scores along every border of real parts at
the larger scales.)
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
    """dst[r, :] = Gaussian along each column of src, for rows r0..r1.

    Taps that fall outside the image are dropped and the remaining weights
    renormalised to sum 1 (normalised convolution): a pixel near the border
    is the average of the pixels that exist, so the border neither repeats
    the edge row into a stripe nor darkens towards zero."""
    H, W = src.shape
    R = half.shape[0] - 1
    for r in range(r0, r1):
        out = dst[r]
        centre = src[r]
        w0 = half[0]
        total = w0
        for c in range(W):
            out[c] = w0 * centre[c]
        for t in range(1, R + 1):
            wt = half[t]
            if r - t >= 0:
                up = src[r - t]
                total += wt
                for c in range(W):
                    out[c] += wt * up[c]
            if r + t < H:
                down = src[r + t]
                total += wt
                for c in range(W):
                    out[c] += wt * down[c]
        inverse = np.float32(1.0) / total
        for c in range(W):
            out[c] *= inverse


@kernel(fastmath=FASTMATH)
def smooth_rows(src, dst, half, r0, r1):
    """dst[r, :] = Gaussian along row r of src, for rows r0..r1, with the
    same normalised truncation at the row's ends as :func:`smooth_columns`."""
    H, W = src.shape
    R = half.shape[0] - 1
    padded = np.zeros(W + 2 * R, dtype=np.float32)  # zeros beyond the ends
    inverse = np.empty(W, dtype=np.float32)  # 1 / (weights of the taps inside the row) per column
    for c in range(W):
        total = half[0]
        for t in range(1, R + 1):
            if c - t >= 0:
                total += half[t]
            if c + t < W:
                total += half[t]
        inverse[c] = np.float32(1.0) / total
    for r in range(r0, r1):
        row = src[r]
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
        for c in range(W):
            out[c] *= inverse[c]


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
def gradient_squares(image, gx2, gy2, r0, r1):
    """Squared derivatives along x and y (central differences, one-sided at
    the border) for rows r0..r1."""
    H, W = image.shape
    for r in range(r0, r1):
        row = image[r]
        up = image[max(r - 1, 0)]
        down = image[min(r + 1, H - 1)]
        vertical = np.float32(0.5) if 0 < r < H - 1 else np.float32(1.0)
        for c in range(W):
            left = row[max(c - 1, 0)]
            right = row[min(c + 1, W - 1)]
            horizontal = np.float32(0.5) if 0 < c < W - 1 else np.float32(1.0)
            dx = (right - left) * horizontal  # 0 in a 1-pixel-wide image (left is right)
            dy = (down[c] - up[c]) * vertical
            gx2[r, c] = dx * dx
            gy2[r, c] = dy * dy


@kernel(fastmath=FASTMATH)
def put_column(values, out, column, take_root, r0, r1):
    """out[r, c, column] = values[r, c] (its square root with ``take_root``;
    negative rounding errors count as 0) for rows r0..r1."""
    W = values.shape[1]
    for r in range(r0, r1):
        row = values[r]
        if take_root:
            for c in range(W):
                out[r, c, column] = math.sqrt(max(row[c], 0.0))
        else:
            for c in range(W):
                out[r, c, column] = row[c]


@kernel(fastmath=FASTMATH)
def put_deviation(smoothed, smoothed_square, out, column, r0, r1):
    """out[r, c, column] = sqrt(max(Q - G**2, 0)), the local standard
    deviation, from the image smoothed at a scale (G) and its smoothed
    square (Q), for rows r0..r1."""
    W = smoothed.shape[1]
    for r in range(r0, r1):
        row = smoothed[r]
        q = smoothed_square[r]
        for c in range(W):
            g = row[c]
            out[r, c, column] = math.sqrt(max(q[c] - g * g, 0.0))
