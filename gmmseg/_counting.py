"""Numba kernel for exact colour counting: the distinct integer colour codes
of an image with their pixel counts and every pixel's row.

``numpy.unique(keys, return_inverse=True, return_counts=True)`` sorts the
keys by comparison (about 90 ms for a one-megapixel photo, the largest part
of inspecting it). Colour codes of 8-bit images have at most 24 bits, so a
least-significant-digit radix sort, three stable counting passes of 8 bits,
orders them in linear time and gives exactly numpy's answer.
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
def number_codes(keys, table):
    """Number the distinct values of ``keys`` (non-negative int64 below
    ``table.size``) in order of first appearance: returns ``(values,
    inverse)`` with ``values[inverse] == keys`` (inverse int32).

    One pass through ``table`` (int32, every entry -1, and so again on
    return), so for 24-bit colour codes (a 64 MB table) it costs a few
    nanoseconds per key instead of a sort; meant for keys that need a row
    number each but not sorted rows (a feature table of some rows of an
    image). The table is reset by walking the values found, not by clearing
    it, so one table serves many calls.
    """
    n = keys.shape[0]
    values = np.empty(n, dtype=np.int64)
    inverse = np.empty(n, dtype=np.int32)
    distinct = 0
    for i in range(n):
        key = keys[i]
        row = table[key]
        if row < 0:
            row = distinct
            table[key] = row
            values[row] = key
            distinct += 1
        inverse[i] = row
    for row in range(distinct):
        table[values[row]] = -1
    return values[:distinct].copy(), inverse


@kernel
def gather_columns(table, rows, out, column, start, stop):
    """out[i, column + j] = table[rows[i], j] for i in [start, stop): the
    per-colour features of each pixel, written into its feature row."""
    width = table.shape[1]
    for i in range(start, stop):
        source = table[rows[i]]
        target = out[i]
        for j in range(width):
            target[column + j] = source[j]
