"""A Gaussian mixture with a Potts prior on a 2-D grid of samples.

The hidden Markov random field model: sample ``i`` of a grid (a pixel) has a
hidden label; the labels follow a Potts prior that rewards equal labels
between 8-connected neighbours with strength ``beta``, and the observed
features follow the Gaussian mixture given the label. EM for this model
uses the mean-field approximation (Zhang 1992; Celeux, Forbes and Peyrard
2003): the E-step gives every sample the distribution

    q_ik  proportional to  w_k N(x_i | mu_k, Sigma_k) exp(beta * sum_{j ~ i} q_jk)

from its neighbours' current distributions (one synchronous sweep per
iteration), and the M-step is the ordinary weighted M-step on those
distributions. With ``beta = 0`` it is exactly EM for the mixture.

Features are given as a table ``X`` (M, d) and an ``index`` grid (H, W) of
rows of that table (-1 for samples that take no part). Several grid cells
may share a row (pixels of the same colour): the per-row log-densities are
computed once per sweep. The distributions ``q`` are one (H, W, K) float32
map, updated in place, row strip by row strip in parallel; each strip keeps
copies of only the two old rows it needs. Besides ``q``, the per-row
log-density table (M, K) float32 is the only other large array: small for
colour tables, as large as ``q`` when every cell has its own row (position
features). Strips depend on the grid's size only, and their statistics are
added in strip order: results do not depend on the number of threads.

The maps of a fitted model (:func:`potts_posteriors`: the mixture's
posteriors, then a few sweeps) need no statistics between sweeps, so they
run as a wavefront down bands of rows (:func:`potts_map_band`): no (H, W, K)
map exists but the result's.
"""

import math

import numpy as np

from .._jit import FASTMATH, kernel
from . import _covariance as cov
from . import _kernels, _wide
from ._kernels import BLOCK, _accumulate, _exponentiate, _int_bits_as_float, _load_block, _weighted_log_prob, stats_width
from ._parallel import map_rows
from .gaussian_mixture import FLOAT32_LIMIT, EMProgress, overflow_as_value_error

# About this many grid cells per parallel task (whole rows).
_CELLS_PER_TASK = 1 << 16
# About this many grid cells per band of the maps (whole rows; see rows_per_band).
_BAND_CELLS = 1 << 18
# A component the prior has emptied below this share of the cells is
# re-seeded once (see fit_potts).
_DEAD_SHARE = 1e-3
# Half-width of the window in which misfit is averaged to find where to re-seed.
_WINDOW = 2


@kernel(fastmath=FASTMATH)
def log_prob_table(X, start, stop, means, prec, const, features, out):
    """out[n, k] = log(w_k) + log N(x_n | mu_k, Sigma_k) for rows [start, stop)."""
    d = len(features)
    K = means.shape[0]
    xt = np.empty((d, BLOCK))
    logp = np.empty((K, BLOCK))
    for s in range(start, stop, BLOCK):
        nb = min(BLOCK, stop - s)
        _load_block(X, s, nb, xt)
        _weighted_log_prob(xt, nb, means, prec, const, logp, d)
        for b in range(nb):
            for k in range(K):
                out[s + b, k] = logp[k, b]


@kernel
def _load_row(q, y, buf):
    """buf[k, x] = q[y, x, k]: one grid row, component-major, as float64."""
    W = q.shape[1]
    K = q.shape[2]
    for x in range(W):
        for k in range(K):
            buf[k, x] = q[y, x, k]


@kernel
def _load_next_row(q, below, y, r1, nxt):
    """nxt = the old row below row y of a strip ending at r1: from ``q``,
    or the saved ``below`` row at the strip's end."""
    if y + 1 < r1:
        _load_row(q, y + 1, nxt)
    else:
        _load_row(below, 0, nxt)


@kernel(fastmath=FASTMATH)
def _log_potentials(table, rows, beta, prev, cur, nxt, pot, out):
    """out[k, x] = table[rows[x], k] + beta * (the 8 neighbours' sum of
    component k around column x, in ``pot``); with ``beta == 0`` the
    neighbours are not read (the mixture's own log-posteriors, unnormalised)."""
    K, W = out.shape
    if beta == 0.0:
        for k in range(K):
            ek = out[k]
            for x in range(W):
                ek[x] = table[rows[x], k]
        return
    _neighbour_sums(prev, cur, nxt, pot)
    weight = out.dtype.type(beta)
    for k in range(K):
        vk = pot[k]
        ek = out[k]
        for x in range(W):
            ek[x] = table[rows[x], k] + weight * vk[x]


@kernel(fastmath=FASTMATH)
def _neighbour_sums(prev, cur, nxt, pot):
    """pot[k, x] = sum of the 8 neighbours' old values around column x of
    the middle row (``[k, x]`` rows above, at and below; zero beyond the ends)."""
    K, W = cur.shape
    zero = pot.dtype.type(0.0)
    for k in range(K):
        pk = prev[k]
        ck = cur[k]
        nk = nxt[k]
        vk = pot[k]
        for x in range(W):  # vertical sums of the three old rows
            vk[x] = pk[x] + ck[x] + nk[x]
    for k in range(K):
        vk = pot[k]
        ck = cur[k]
        left = zero
        for x in range(W):  # neighbours = 3x3 box - centre, in place
            here = vk[x]
            right = vk[x + 1] if x + 1 < W else zero
            vk[x] = left + here + right - ck[x]
            left = here


_F32_EXP_MIN = np.float32(-87.0)  # below this exp() in float32 is subnormal; we return 0
_F32_LOG2E = np.float32(1.4426950408889634)
_F32_LN2_HI = np.float32(0.693359375)  # ln 2 in two parts (Cody-Waite), float32
_F32_LN2_LO = np.float32(-2.12194440e-4)
_F32_HALF = np.float32(0.5)
_F32_ONE = np.float32(1.0)


@kernel(fastmath={"contract"})  # as _kernels._exp: reassociation would undo the two-part reduction
def _exp32(v):
    """exp(v) in float32, vectorisable (8 lanes where the float64 kernels
    have 4): Cody-Waite reduction to |r| <= ln(2)/2 and a degree-7 Taylor
    polynomial (truncation below 1e-8 relative, under float32's rounding);
    exact zero below -87."""
    c = max(v, _F32_EXP_MIN)
    m = np.floor(c * _F32_LOG2E + _F32_HALF)
    r = (c - m * _F32_LN2_HI) - m * _F32_LN2_LO
    p = np.float32(1.0 / 5040.0)
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + _F32_HALF
    p = p * r + _F32_ONE
    p = p * r + _F32_ONE
    # np.int32 around the sum: Numba widens int32 arithmetic to int64, and the
    # intrinsic reads the type of its argument (int32 -> float32)
    e = p * _int_bits_as_float(np.int32((np.int32(m) + np.int32(127)) << np.int32(23)))
    return e if v >= _F32_EXP_MIN else np.float32(0.0)


# error_model="numpy": no ZeroDivisionError test on each reciprocal of the
# sums (a test that kept that loop from vectorising); a sum is at least 1
# (the most probable component's exp(0)) unless every density underflowed,
# which the row raises once, as the test would.
@kernel(fastmath=FASTMATH, error_model="numpy")
def _map_row(logp, cells, beta, prev, cur, nxt, padded, q, mx, total, best, loglik):
    """One grid row of a mean-field update for the maps, in float32.

    ``logp[k, x]`` (component-major) are the row's cells' weighted
    log-densities; with ``beta != 0`` the potentials add ``beta`` times the
    sum of the 8 neighbours' distributions of the previous level (rows
    ``prev``, ``cur``, ``nxt``; zero beyond the ends). ``q[k, x]`` receives
    the new distributions (zero where ``cells`` is -1), ``best`` each cell's
    most probable component, and a non-empty ``loglik`` (with ``beta == 0``:
    the mixture's log-density) each used cell's log of the sum its
    posteriors normalise. ``padded``: a row of W + 2 values, scratch.
    Returns whether any cell is used.
    """
    K, W = q.shape
    n_used = 0
    for x in range(W):
        n_used += cells[x] >= 0
    if n_used == 0:
        for k in range(K):
            qk = q[k]
            for x in range(W):
                qk[x] = np.float32(0.0)
        return False
    if beta == 0.0:
        for k in range(K):
            qk = q[k]
            lk = logp[k]
            for x in range(W):
                qk[x] = lk[x]
    else:
        # The 3x3 box sums from the column sums, minus the centre; the
        # column sums padded with a zero at each end, so that the loop over
        # the row has no carried value or branch and vectorises.
        weight = q.dtype.type(beta)
        zero = q.dtype.type(0.0)
        padded[0] = zero
        padded[W + 1] = zero
        for k in range(K):
            pk = prev[k]
            ck = cur[k]
            nk = nxt[k]
            for x in range(W):
                padded[x + 1] = pk[x] + ck[x] + nk[x]
            qk = q[k]
            lk = logp[k]
            for x in range(W):
                qk[x] = lk[x] + weight * (padded[x] + padded[x + 1] + padded[x + 2] - ck[x])
    # Every loop here runs over the row (and vectorises); the most probable
    # component is the largest log-potential.
    for x in range(W):
        mx[x] = q[0, x]
        best[x] = 0
        total[x] = np.float32(0.0)
    for k in range(1, K):
        qk = q[k]
        for x in range(W):
            if qk[x] > mx[x]:
                mx[x] = qk[x]
                best[x] = k
    for k in range(K):
        qk = q[k]
        for x in range(W):
            e = _exp32(qk[x] - mx[x])
            qk[x] = e
            total[x] += e
    if loglik.shape[0] > 0:
        for x in range(W):
            if cells[x] >= 0:
                loglik[x] = mx[x] + math.log(total[x])
    empty = 0  # used cells whose every component's density underflowed
    for x in range(W):
        used = cells[x] >= 0
        empty += used & (total[x] == np.float32(0.0))
        total[x] = _F32_ONE / total[x] if used else np.float32(0.0)
    if empty:  # what the python error model's division test would raise (see overflow_as_value_error)
        raise ZeroDivisionError("float division by zero")
    for k in range(K):
        qk = q[k]
        for x in range(W):
            qk[x] *= total[x]
    return True


@kernel(fastmath=FASTMATH)
def potts_map_band(table, index, beta, n_sweeps, r0, r1, row0, q_out, labels, loglik):
    """The maps of grid rows [r0, r1): the mixture's posteriors (level 0),
    then ``n_sweeps`` synchronous mean-field sweeps (levels 1, 2, ...), in
    float32, without a (H, W, K) map of any level but the last.

    Level s of row y needs level s - 1 of rows y - 1 to y + 1 only, so the
    levels are computed as a wavefront down the band: after level 0 of row
    t, level 1 of row t - 1, level 2 of row t - 2 and so on, each level
    keeping its last three rows (component-major) in a ring while they are
    still in cache, and the rows' table values (gathered once, for every
    level) in another. Level s is computed on rows ``n_sweeps - s`` beyond
    the band on each side (within the grid): those of a neighbouring band,
    computed again. Each cell's arithmetic is that of a plain sweep of the
    whole grid (zero beyond the grid's border, 0 on cells outside the
    index), whatever the band, so bands give the whole grid's result.

    Row y of the band's results goes to row ``y - row0`` of ``q_out`` ((rows,
    W, K); empty: not wanted), of ``labels`` (the most probable component of
    used cells; empty: not wanted) and of ``loglik`` (the mixture's
    log-density of used cells; empty: not wanted). Cells outside the index
    are 0 in ``q_out`` and not written in ``labels`` and ``loglik``.
    """
    H, W = index.shape
    K = table.shape[1]
    last = table.shape[0] - 1
    S = n_sweeps if beta != 0.0 else 0
    ring = np.empty((max(S, 1), 3, K, W), dtype=np.float32)
    logp = np.empty((S + 1, K, W), dtype=np.float32)  # row y's table values at y % (S + 1)
    zero = np.zeros((K, W), dtype=np.float32)
    final = np.empty((K, W), dtype=np.float32)
    padded = np.empty(W + 2, dtype=np.float32)
    mx = np.empty(W, dtype=np.float32)
    total = np.empty(W, dtype=np.float32)
    best = np.empty(W, dtype=np.int32)
    rows = np.empty(W, dtype=np.int64)
    no_loglik = np.empty(0, dtype=np.float32)
    want_q = q_out.shape[0] > 0
    want_labels = labels.shape[0] > 0
    want_loglik = loglik.shape[0] > 0
    for t in range(max(0, r0 - S), min(H, r1 + S) + S):
        for s in range(S + 1):
            y = t - s
            if y < max(0, r0 - S + s) or y >= min(H, r1 + S - s):
                continue
            cells = index[y]
            lp = logp[y % (S + 1)]
            if s == 0:
                prev = cur = nxt = zero  # not read: the mixture's own posteriors
                for x in range(W):
                    i = cells[x]
                    rows[x] = i if i >= 0 else last  # outside cells read a valid row and weigh 0
                for x in range(W):
                    source = table[rows[x]]
                    for k in range(K):
                        lp[k, x] = source[k]
            else:
                below = ring[s - 1]
                prev = below[(y - 1) % 3] if y > 0 else zero
                cur = below[y % 3]
                nxt = below[(y + 1) % 3] if y + 1 < H else zero
            out_ll = loglik[y - row0] if s == 0 and want_loglik and r0 <= y < r1 else no_loglik
            q = final if s == S else ring[s, y % 3]
            used = _map_row(lp, cells, beta if s > 0 else 0.0, prev, cur, nxt, padded, q, mx, total, best, out_ll)
            if s < S:
                continue
            if want_q:
                qy = q_out[y - row0]
                for k in range(K):  # component by component: the loops over the row vectorise
                    qk = q[k]
                    for x in range(W):
                        qy[x, k] = qk[x]
            if want_labels and used:
                ly = labels[y - row0]
                for x in range(W):
                    if cells[x] >= 0:
                        ly[x] = best[x]


@kernel(fastmath=FASTMATH)
def potts_sweep(table, index, q, above, below, r0, r1, beta, X, shift, diagonal, want_stats, labels):
    """One synchronous mean-field update of grid rows [r0, r1) of ``q``.

    ``above`` and ``below`` (shape (1, W, K)) are the old rows r0 - 1 and r1
    (zeros at the grid's border). Returns ``(stats, objective, count)``: the packed
    moments of X under the new distributions around ``shift`` (when
    ``want_stats``), the sum over updated cells of the mean-field free
    energy terms ``log sum_k exp(s_k) - beta/2 sum_k q_k n_k`` (s_k the
    cell's log-potential, n_k its neighbours' sum), and the number of cells.
    A non-empty ``labels`` (H, W) receives each updated cell's most probable
    component. Rows are processed component-major (``[k, x]`` buffers) so that the loops
    over a row vectorise. The objective is summed only with ``want_stats``
    (a fit's sweep; the maps' sweeps need neither), and with ``beta == 0``
    (the mixture's own posteriors) the neighbours are not read at all.
    """
    H, W = index.shape
    K = table.shape[1]
    d = X.shape[1]
    last = table.shape[0] - 1
    stats = np.zeros((K, stats_width(d, diagonal)))
    prev = np.empty((K, W))
    cur = np.empty((K, W))
    nxt = np.empty((K, W))
    pot = np.empty((K, W))
    mx = np.empty(W)
    total = np.empty(W)
    agree = np.empty(W)
    rows = np.empty(W, dtype=np.int64)
    used = np.empty(W)
    xt = np.empty((d, W))
    expo = np.empty((K, W))
    scratch = np.empty((2, W))
    objective = 0.0
    count = 0
    want_labels = labels.shape[0] > 0
    neighbours = beta != 0.0
    if neighbours:
        _load_row(above, 0, prev)
        _load_row(q, r0, cur)
    for y in range(r0, r1):
        if neighbours:
            _load_next_row(q, below, y, r1, nxt)
        # Every cell of the row is computed (the loops vectorise); cells
        # outside the index read a valid row, weigh 0 and are not written.
        n_used = 0
        for x in range(W):
            i = index[y, x]
            if i >= 0:
                rows[x] = i
                used[x] = 1.0
                n_used += 1
            else:
                rows[x] = last
                used[x] = 0.0
        if n_used > 0:
            _log_potentials(table, rows, beta, prev, cur, nxt, pot, expo)
            _exponentiate(expo, W, mx, total)
            for x in range(W):
                total[x] = 1.0 / total[x]
                agree[x] = 0.0
            for k in range(K):
                ek = expo[k]
                vk = pot[k]
                if neighbours and want_stats:
                    for x in range(W):
                        p = ek[x] * total[x]
                        ek[x] = p
                        agree[x] += p * vk[x]
                else:
                    for x in range(W):
                        ek[x] *= total[x]
            qy = q[y]
            for x in range(W):
                if used[x] > 0.0:
                    best = 0
                    for k in range(K):
                        p = expo[k, x]
                        qy[x, k] = p
                        if p > expo[best, x]:
                            best = k
                    if want_stats:
                        objective += mx[x] - math.log(total[x]) - 0.5 * beta * agree[x]
                    if want_labels:
                        labels[y, x] = best
            count += n_used
            if want_stats:
                for x in range(W):
                    r = rows[x]
                    for f in range(d):
                        xt[f, x] = X[r, f]
                _accumulate(xt, W, expo, used, shift, diagonal, stats, scratch[0], scratch[1])
        if neighbours:
            prev, cur, nxt = cur, nxt, prev
    return stats, objective, count


def rows_per_task(width):
    """Grid rows per parallel strip (depends on the width only)."""
    return max(2, _CELLS_PER_TASK // max(int(width), 1))


def rows_per_band(width):
    """Grid rows per parallel band of the maps' wavefront: each band
    computes ``n_sweeps`` levels of a few rows beyond its ends again, so
    bands are several times longer than that."""
    return max(16, _BAND_CELLS // max(int(width), 1))


def sweep(table, index, q, beta, X=None, shift=None, diagonal=False, labels=None):
    """One synchronous mean-field update of the whole map ``q`` (in place).

    With ``X`` and ``shift`` also returns the packed moments of the new
    distributions; returns ``(stats or None, objective, count)``. With
    ``labels`` (H, W) int32, writes the most probable components too.
    """
    H, W = index.shape
    K = q.shape[2]
    want = X is not None
    if not want:
        X = np.zeros((1, 1))
        shift = np.zeros((K, 1))
    out_labels = np.empty((0, 0), dtype=np.int32) if labels is None else labels
    step = rows_per_task(W)
    zeros = np.zeros((1, W, K), dtype=q.dtype)
    # The old rows beside every strip, copied before any strip changes them.
    halos = {}
    for r0 in range(0, H, step):
        r1 = min(H, r0 + step)
        halos[r0] = (q[r0 - 1 : r0].copy() if r0 > 0 else zeros, q[r1 : r1 + 1].copy() if r1 < H else zeros)

    def run(r0, r1):
        above, below = halos[r0]
        return potts_sweep(table, index, q, above, below, r0, r1, float(beta), X, shift, diagonal, want, out_labels)

    with overflow_as_value_error():
        parts = map_rows(run, H, rows_per_task=step)
    objective = 0.0
    count = 0
    stats = None
    for part in parts:
        objective += part[1]
        count += part[2]
        if want:
            stats = part[0].copy() if stats is None else stats + part[0]
    return stats, objective, count


def m_step(stats, shift, covariance_type, reg_covar):
    """Weights, means, covariances and precision factors from packed moments."""
    nk, means, covariances = cov.estimate_parameters(stats, shift, covariance_type, reg_covar)
    weights = nk / nk.sum()
    prec_chol, covariances, _ = cov.compute_precision_cholesky(covariances, covariance_type, reg_covar)
    return weights, means, covariances, prec_chol


def _check_grid(X, index, name="index"):
    """The grid as a C-contiguous int32 array, or ValueError: every entry
    must be -1 or a row of X (the kernels do not check bounds)."""
    grid = np.asarray(index)
    if grid.ndim != 2 or not np.issubdtype(grid.dtype, np.integer):
        raise ValueError(f"{name} must be a 2-D integer array, got {grid.dtype} of shape {grid.shape}.")
    if grid.size and (int(grid.min()) < -1 or int(grid.max()) >= X.shape[0]):
        raise ValueError(f"{name} entries must be -1 or rows of X (0..{X.shape[0] - 1}), "
                         f"got {int(grid.min())}..{int(grid.max())}.")
    return np.ascontiguousarray(grid, dtype=np.int32)


def scratch_array(scratch, name, shape, dtype):
    """An uninitialised array of ``shape`` from the reusable buffers of
    ``scratch`` (a dict; None: a new array). Strips of one large image ask
    for arrays of about the same size again and again: reusing the memory
    saves the kernel's zeroing of fresh pages, which costs as much as the
    arithmetic here. The array is a view, valid until the next request of
    the same name."""
    if scratch is None:
        return np.empty(shape, dtype=dtype)
    size = int(np.prod(shape))
    buffer = scratch.get(name)
    if buffer is None or buffer.size < size or buffer.dtype != np.dtype(dtype):
        buffer = scratch[name] = np.empty(size, dtype=dtype)
    return buffer[:size].reshape(shape)


def _table(gm, X, scratch=None):
    """(M, K) float32 table of log(w_k) + log N(x_m | component k) under gm
    (ValueError when some rows' log-densities could fall below float32's
    range under every component)."""
    gm._check_densities(X, FLOAT32_LIMIT, "float32 log-density tables (the spatial prior)")
    M = X.shape[0]
    out = scratch_array(scratch, "table", (M, gm.means_.shape[0]), np.float32)
    means, prec, const = gm._kernel_parameters()
    features = _kernels.feature_tuple(X.shape[1])
    if features:
        map_rows(lambda s, e: log_prob_table(X, s, e, means, prec, const, features, out), M)
    else:
        wide = _wide.parameters(means, prec)
        map_rows(lambda s, e: _wide.weighted_log_prob(X, s, e, *wide, const, out), M)
    return out


@kernel
def _first_seen(index, n_rows):
    """Renumber table rows in order of first appearance in the grid.

    Returns ``(order, renumbered)``: new row j is old row ``order[j]``, and
    ``renumbered`` is ``index`` in the new numbering (-1 kept). Rows no cell
    uses go last.
    """
    new_id = np.full(n_rows, -1, dtype=np.int64)
    order = np.empty(n_rows, dtype=np.int64)
    renumbered = np.empty_like(index)
    H, W = index.shape
    n = 0
    for y in range(H):
        for x in range(W):
            i = index[y, x]
            if i < 0:
                renumbered[y, x] = -1
                continue
            if new_id[i] < 0:
                new_id[i] = n
                order[n] = i
                n += 1
            renumbered[y, x] = new_id[i]
    for i in range(n_rows):
        if new_id[i] < 0:
            order[n] = i
            n += 1
    return order, renumbered


def potts_posteriors(gm, X, index, beta, n_sweeps, labels=None, log_likelihood=None, scratch=None, *, rows=None,
                     out=None, probabilities=True):
    """Mean-field label distributions of a grid under a fitted mixture.

    Parameters
    ----------
    gm : GaussianMixture
        Fitted; not changed.
    X : ndarray (M, d)
        Feature table.
    index : ndarray (H, W) of int32
        Row of ``X`` of every grid cell, -1 for cells that take no part.
    beta : float
        Potts strength (0: the mixture's own posteriors).
    n_sweeps : int
        Mean-field sweeps after the mixture's posteriors.
    labels : ndarray (h, W) of int32, optional
        Receives the most probable component of every cell that takes part.
    log_likelihood : ndarray (h, W) of float32, optional
        Receives the log-density of every cell that takes part under the
        mixture (from the float32 table the maps use, to about 1e-6).
    scratch : dict, optional
        Reusable buffers (see :func:`scratch_array`): the returned map is
        then a view into them, valid until the next call with the same dict.
    rows : (int, int), optional
        The grid rows ``start:stop`` whose maps are wanted (default: all,
        h = H); the others are context (they are read, not written).
    out : ndarray (h, W, K) of float32, optional
        Receives the distributions (and is returned).
    probabilities : bool, default=True
        False: only ``labels`` and ``log_likelihood`` are written (no
        (h, W, K) map), and None is returned.

    Returns
    -------
    ndarray (h, W, K) float32 or None
        Zero on cells that take no part.
    """
    index = _check_grid(X, index)
    H, W = index.shape
    K = gm.means_.shape[0]
    start, stop = (0, H) if rows is None else (int(rows[0]), int(rows[1]))
    if not 0 <= start <= stop <= H:
        raise ValueError(f"rows must be a range of the grid's {H} rows, got {start}:{stop}.")
    h = stop - start
    if not probabilities:
        q = np.empty((0, 0, 0), dtype=np.float32)
    elif out is None:
        q = scratch_array(scratch, "q", (h, W, K), np.float32)
    else:
        q = out
    for name, given, shape in (("labels", labels, (h, W)), ("log_likelihood", log_likelihood, (h, W)),
                               ("out", out, (h, W, K))):
        if given is not None and given.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {given.shape}.")
    table = _table(gm, X, scratch)
    if 0 < table.shape[0] < np.count_nonzero(index >= 0):
        # Rows renumbered by first appearance: the sweeps then read the table
        # almost in order instead of jumping over it (neighbouring pixels of
        # a photo rarely share a colour, but a colour's pixels cluster).
        order, index = _first_seen(index, table.shape[0])
        table = table[order]
    out_labels = np.empty((0, 0), dtype=np.int32) if labels is None else labels
    out_loglik = np.empty((0, 0), dtype=np.float32) if log_likelihood is None else log_likelihood
    sweeps = int(n_sweeps) if beta > 0 else 0

    def run(r0, r1):
        potts_map_band(table, index, float(beta), sweeps, start + r0, start + r1, start, q, out_labels, out_loglik)

    with overflow_as_value_error():
        map_rows(run, h, rows_per_task=rows_per_band(W))
    return q if probabilities else None


def _window_means(values, used, radius):
    """Mean of ``values`` over the used cells of each (2r+1)^2 window (NaN
    where a window has no used cell); summed-area tables, O(H*W)."""
    H, W = values.shape
    v = np.where(used, values, 0.0)
    c = used.astype(np.float64)
    sums = []
    for a in (v, c):
        table = np.zeros((H + 1, W + 1))
        table[1:, 1:] = a.cumsum(axis=0).cumsum(axis=1)
        y0 = np.clip(np.arange(H) - radius, 0, H)
        y1 = np.clip(np.arange(H) + radius + 1, 0, H)
        x0 = np.clip(np.arange(W) - radius, 0, W)
        x1 = np.clip(np.arange(W) + radius + 1, 0, W)
        sums.append(table[y1][:, x1] - table[y0][:, x1] - table[y1][:, x0] + table[y0][:, x0])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums[1] > 0, sums[0] / np.maximum(sums[1], 1), np.nan)


def _worst_window(gm, X, grids, radius=_WINDOW):
    """Mean features of the window whose cells the mixture explains worst
    (lowest mean log-likelihood): where a missing component belongs. A
    window, not a cell, so that one noisy pixel does not decide."""
    log_norm = gm.score_samples(X)
    best = None
    for g, grid in enumerate(grids):
        used = grid >= 0
        if not used.any():
            continue
        fit = _window_means(np.where(used, log_norm[np.maximum(grid, 0)], 0.0), used, radius)
        fit = np.where(used, fit, np.inf)
        flat = int(np.argmin(fit))
        if best is None or fit.flat[flat] < best[0]:
            best = (fit.flat[flat], g, divmod(flat, grid.shape[1]))
    _, g, (y, x) = best
    window = grids[g][max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1]
    return X[window[window >= 0]].mean(axis=0)


def fit_potts(gm, X, index, beta, *, max_iter, tol, callback=None):
    """Mean-field EM of the hidden Potts model, starting from ``gm``'s parameters.

    Parameters
    ----------
    gm : GaussianMixture
        Fitted: its parameters are the starting point, and are replaced
        (weights, means, covariances, precisions) by the fitted ones.
    X : ndarray (M, d)
        Feature table.
    index : ndarray (H, W) of int32, or a list of them
        Row of ``X`` of every grid cell (-1: no part); several grids (images)
        share one set of parameters, their cells never neighbour each other.
    beta : float
        Potts strength.
    max_iter, tol : int, float
        Stops when the mean free energy per cell changes by less than
        ``tol`` or after ``max_iter`` iterations.
    callback : callable, optional
        Called with an :class:`EMProgress` of phase ``"spatial"`` after every
        iteration; returning True stops the fit (the parameters so far stay,
        and ``gm.stopped_`` is set).

    Returns
    -------
    q : ndarray (H, W, K) float32, or a list of them
        The label distributions of the last E-step.
    n_iter : int
    converged : bool
    objective : float
        The last mean free energy per cell (the mean-field approximation of
        the model's log-likelihood per cell, before the last M-step).
    """
    grids = [_check_grid(X, g) for g in (index if isinstance(index, (list, tuple)) else [index])]
    K = gm.means_.shape[0]
    ctype = gm.covariance_type
    diagonal = cov.is_diagonal(ctype)
    qs = [np.zeros(grid.shape + (K,), dtype=np.float32) for grid in grids]
    table = _table(gm, X)
    for grid, q in zip(grids, qs):
        sweep(table, grid, q, 0.0)
    objective = -np.inf
    converged = False
    n_iter = 0
    reseed_budget = np.ones(K, dtype=bool)
    gm.n_reseeded_ = getattr(gm, "n_reseeded_", 0)
    restarted = False
    for n_iter in range(1, max_iter + 1):
        previous = -np.inf if restarted else objective
        restarted = False
        if table is None:  # the parameters changed since the last table
            table = _table(gm, X)
        shift = np.ascontiguousarray(gm.means_)
        stats = None
        total = 0.0
        count = 0
        for grid, q in zip(grids, qs):
            part, obj, cells = sweep(table, grid, q, beta, X, shift, diagonal)
            stats = part if stats is None else stats + part
            total += obj
            count += cells
        objective = total / max(count, 1)
        weights, means, covariances, prec_chol = m_step(stats, gm.means_, ctype, gm.reg_covar)
        gm._set_parameters((weights, means, covariances, prec_chol))
        table = None
        change = objective - previous
        converged = abs(change) < tol
        dead = (weights < _DEAD_SHARE) & reseed_budget
        if dead.any() and not dead.all() and count > K / _DEAD_SHARE:
            # The prior has emptied a component: its colour lost to a
            # neighbouring region's. Re-seed it (once) where the mixture
            # fits worst, and restart the distributions from the mixture's
            # posteriors: with the neighbours' support the established
            # components would never let a new one in.
            k = int(np.argmax(dead))
            means = means.copy()
            means[k] = _worst_window(gm, X, grids)
            others = np.ones(K, dtype=bool)
            others[k] = False
            if ctype != "tied":
                covariances = covariances.copy()
                covariances[k] = cov.average_covariance(covariances[others], ctype)
            weights = weights.copy()
            weights[k] = 1.0 / K
            weights /= weights.sum()
            prec_chol, covariances, _ = cov.compute_precision_cholesky(covariances, ctype, gm.reg_covar)
            gm._set_parameters((weights, means, covariances, prec_chol))
            table = _table(gm, X)
            for grid, q in zip(grids, qs):
                sweep(table, grid, q, 0.0)
            reseed_budget[k] = False
            gm.n_reseeded_ += 1
            converged = False
            restarted = True
        if callback is not None:
            report = EMProgress(0, n_iter, objective, change, weights, means, covariances, converged, prec_chol,
                                phase="spatial")
            if callback(report) is True:
                converged = False
                gm.stopped_ = True
                break
        if converged:
            break
    return (qs if isinstance(index, (list, tuple)) else qs[0]), n_iter, converged, objective


def mixture_from_grid(X, index, q, covariance_type, reg_covar):
    """Mixture parameters (weights, means, covariances, precision factors)
    of the features ``X`` of the grid cells weighted by distributions ``q``
    (one M-step); ``index`` and ``q`` may be lists (several grids)."""
    grids = list(index) if isinstance(index, (list, tuple)) else [index]
    qs = list(q) if isinstance(q, (list, tuple)) else [q]
    rows = np.concatenate([grid[grid >= 0] for grid in grids])
    resp = np.concatenate([qq[grid >= 0] for grid, qq in zip(grids, qs)]).astype(np.float64)
    cells = np.ascontiguousarray(X[rows], dtype=np.float64)
    K = resp.shape[1]
    shift = np.repeat(cells.mean(axis=0)[None, :], K, axis=0)
    diagonal = cov.is_diagonal(covariance_type)
    stats = None
    empty = np.empty(0)
    for start in range(0, cells.shape[0], _CELLS_PER_TASK):
        stop = min(cells.shape[0], start + _CELLS_PER_TASK)
        part = _kernels.weighted_moments(cells, start, stop, resp[start:stop], empty, shift, diagonal)
        stats = part if stats is None else stats + part
    return m_step(stats, shift, covariance_type, reg_covar)
