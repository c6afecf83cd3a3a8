"""Numba kernels for exact colour counting: the distinct integer colour codes
of an image with their pixel counts and every pixel's row.

``numpy.unique(keys, return_inverse=True, return_counts=True)`` sorts the
keys by comparison (about 90 ms for a one-megapixel photo, the largest part
of inspecting it). Colour codes of 8-bit images have at most 24 bits, so a
least-significant-digit radix sort, three stable counting passes of 8 bits,
orders them in linear time and gives exactly numpy's answer.

Per-pixel feature rows (strips of a large image) need a row per colour but
no sorted rows and no counts: :func:`level_codes` and :func:`number_codes`
number colours in order of first appearance through a table of every code,
and :func:`feature_rows` writes each used pixel's row.
"""

import numpy as np

from ._jit import kernel


@kernel
def sorted_unique(keys, bits):
    """Distinct values of ``keys`` (non-negative int64 below ``2**bits``) in
    increasing order, the index of each key's value and the counts:
    ``numpy.unique(keys, return_inverse=True, return_counts=True)``."""
    n = keys.shape[0]
    # Keys travel with their positions, so every pass reads its input in
    # order (an index permutation alone would read the keys at random).
    key, spare_key = keys.copy(), np.empty(n, dtype=np.int64)
    where, spare_where = np.arange(n), np.empty(n, dtype=np.int64)
    buckets = np.zeros(256, dtype=np.int64)
    for shift in range(0, bits, 8):
        buckets[:] = 0
        for i in range(n):
            buckets[(key[i] >> shift) & 255] += 1
        start = 0
        for b in range(256):
            count = buckets[b]
            buckets[b] = start
            start += count
        for i in range(n):  # stable: equal digits keep the order of the previous pass
            digit = (key[i] >> shift) & 255
            slot = buckets[digit]
            spare_key[slot] = key[i]
            spare_where[slot] = where[i]
            buckets[digit] = slot + 1
        key, spare_key = spare_key, key
        where, spare_where = spare_where, where
    distinct = 0
    for i in range(n):
        if i == 0 or key[i] != key[i - 1]:
            distinct += 1
    values = np.empty(distinct, dtype=np.int64)
    counts = np.zeros(distinct, dtype=np.int64)
    inverse = np.empty(n, dtype=np.int64)
    row = -1
    for i in range(n):
        if i == 0 or key[i] != key[i - 1]:
            row += 1
            values[row] = key[i]
        counts[row] += 1
        inverse[where[i]] = row
    return values, inverse, counts


@kernel
def color_codes(colors, bits):
    """Integer codes of float32 colours in [0, 1] that are exact multiples
    of ``1 / (2**bits - 1)``: channel values packed ``bits`` apiece, first
    channel highest. Returns (codes, exact); exact is False (and the codes
    unusable) as soon as a value is not such a multiple."""
    n, channels = colors.shape
    top = np.float32((1 << bits) - 1)
    codes = np.zeros(n, dtype=np.int64)
    for i in range(n):
        code = 0
        for c in range(channels):
            value = colors[i, c]
            level = np.int64(np.rint(value * top))
            if np.float32(level) / top != value:
                return codes, False
            code = (code << bits) | level
        codes[i] = code
    return codes, True


@kernel
def level_codes(colors, codes, start, stop):
    """Codes of colours [start, stop) of ``colors`` (n, c) float32, c <= 3,
    that are multiples of 1/255 in [0, 1]: channel levels packed 8 bits
    apiece, first channel highest, into ``codes`` (int32); row ranges may
    run in parallel. Returns False (the codes then unusable) as soon as a
    value is not such a multiple (the test of :func:`color_codes`)."""
    c = colors.shape[1]
    top = np.float32(255.0)
    for i in range(start, stop):
        code = 0
        for j in range(c):
            value = colors[i, j]
            level = np.int64(np.rint(value * top))
            if level < 0 or level > 255 or np.float32(level) / top != value:
                return False
            code = (code << 8) | level
        codes[i] = code
    return True


@kernel
def number_codes(codes, table, first, inverse, new_codes):
    """Number colour codes in order of first appearance, in a numbering that
    outlives the call (the strips of one image share it): ``table`` holds
    the row of every code numbered so far and -1 for the others. Codes not
    seen before get rows ``first``, ``first + 1``, ... and are listed in
    ``new_codes``; each code's row goes to ``inverse``. Returns the number
    of new codes. A few nanoseconds per code: no sort, no per-call table."""
    new = 0
    for i in range(codes.shape[0]):
        code = codes[i]
        row = table[code]
        if row < 0:
            row = first + new
            table[code] = row
            new_codes[new] = code
            new += 1
        inverse[i] = row
    return new


@kernel
def feature_rows(table, inverse, mask, offsets, xs, ys, X, index, start, stop):
    """Rows [start, stop) of a grid of pixels into per-pixel feature rows:
    the i-th used pixel (row-major) gets ``X[i, :c] = table[inverse[i]]``
    (its colour's features; none when ``table`` has no columns), and with
    positions (``xs`` not empty) ``X[i, -2:] = (xs[x], ys[y])``; ``index[y,
    x]`` is i, or -1 where ``mask`` is False. ``offsets[y]``: the number of
    used pixels before row y. One pass over the rows instead of a gather, a
    position table and a scatter of pixel numbers."""
    w = mask.shape[1]
    width = table.shape[1]
    d = X.shape[1]
    position = xs.shape[0] > 0
    for y in range(start, stop):
        i = offsets[y]
        for x in range(w):
            if not mask[y, x]:
                index[y, x] = -1
                continue
            target = X[i]
            if width > 0:
                source = table[inverse[i]]
                for j in range(width):
                    target[j] = source[j]
            if position:
                target[d - 2] = xs[x]
                target[d - 1] = ys[y]
            index[y, x] = i
            i += 1


@kernel
def gather_rows(values, rows, fill, out, start, stop):
    """out[i] = values[rows[i]] for i in [start, stop), and ``fill`` where
    rows[i] is -1: per-colour results spread to the pixels (all 2-D)."""
    width = values.shape[1]
    for i in range(start, stop):
        r = rows[i]
        source = values[r] if r >= 0 else fill
        target = out[i]
        for j in range(width):
            target[j] = source[j]
