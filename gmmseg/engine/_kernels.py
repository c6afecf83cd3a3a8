"""Numba kernels of the EM engine.

Every kernel works on a range of rows ``[start, stop)`` of the data so that the
Python side can spread ranges over threads (all kernels release the GIL). Rows
are copied block by block into a transposed scratch buffer, ``xt[feature,
sample]``, so the inner loops run over samples and vectorise.

Precisions are passed as one 3-D array ``prec`` for every covariance type:

* ``(K, d, d)``: upper-triangular Cholesky factors of the precision matrices
  (``full``, and ``tied`` broadcast to every component);
* ``(K, 1, d)``: the diagonal of those factors, i.e. ``1 / sigma`` per feature
  (``diag``, and ``spherical`` repeated over features).

With one feature both layouts coincide, so ``prec.shape[1] == 1`` selects the
diagonal arithmetic unambiguously. The packed sufficient statistics per
component are ``[S0, S1 (d), S2]`` with ``S2`` the upper triangle of the
second moments (full layout) or their diagonal (diagonal layout). Moments are
taken around a per-component shift (the current means), which keeps the
one-pass variance free of catastrophic cancellation.

The kernels are private; the validating wrappers live in ``gaussian_mixture``.
"""

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .._jit import FASTMATH, kernel

BLOCK = 1024  # samples per scratch block: fits comfortably in L1/L2
# Up to UNROLL_MAX features the kernels here unroll their loops over
# features; above, the tile kernels of ``_wide`` take over.
UNROLL_MAX = 6
LOG_2PI = math.log(2.0 * math.pi)

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split in two for Cody-Waite reduction
_LN2_LO = 1.90821492927058770002e-10
_EXP_MIN = -708.0  # below this exp() underflows to a subnormal; we return 0


def feature_tuple(n_features):
    """A tuple of length n_features: kernels specialise on its length so that
    their loops over features unroll (a literal int argument would cost a
    slow re-dispatch on every call). Empty above UNROLL_MAX features, where
    the row-range kernels of ``_wide`` are used instead (one compilation for
    every number of features)."""
    return (0,) * n_features if n_features <= UNROLL_MAX else ()


@kernel
def stats_width(n_features, diagonal):
    """Length of one component's packed statistics vector: S0, S1 and the
    diagonal (2d + 1) or the upper triangle of S2 (1 + d + d(d+1)/2)."""
    if diagonal:
        return 1 + 2 * n_features
    return 1 + n_features + n_features * (n_features + 1) // 2


@intrinsic
def _int_bits_as_float(typingctx, bits):
    """Reinterpret an int64 bit pattern as float64, or an int32 one as
    float32 (no conversion)."""
    if bits == types.int64:
        sig, float_type = types.float64(types.int64), ir.DoubleType()
    elif bits == types.int32:
        sig, float_type = types.float32(types.int32), ir.FloatType()
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], float_type)

    return sig, codegen


@kernel(fastmath={"contract"})
def _exp(v):
    """exp(v), vectorisable, exact zero below _EXP_MIN.

    libm's exp is a scalar call; this is Cody-Waite range reduction with a
    degree-12 Taylor polynomial on |r| <= ln(2)/2 (error below 4.5e-16
    relative) and 2**m built from its bit pattern, all in registers, so it
    vectorises inside the callers' loops. Only 'contract' here: reassociation
    would undo the two-part reduction.
    """
    c = max(v, _EXP_MIN)
    m = math.floor(c * _LOG2E + 0.5)
    r = (c - m * _LN2_HI) - m * _LN2_LO
    p = 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    e = p * _int_bits_as_float((m + 1023) << 52)
    return e if v >= _EXP_MIN else 0.0


@kernel
def _load_block(X, start, nb, xt):
    """Copy rows start..start+nb of X into xt[feature, sample] as float64."""
    d = X.shape[1]
    for b in range(nb):
        for i in range(d):
            xt[i, b] = X[start + b, i]


@kernel(fastmath=FASTMATH)
def _weighted_log_prob(xt, nb, means, prec, const, logp, d):
    """logp[k, b] = log(w_k) + log N(x_b | mean_k, prec_k) for one block.

    ``d`` (the number of features) is a compile-time literal: the loops over
    features unroll and the loop over samples vectorises with every partial
    sum in registers.
    """
    K = means.shape[0]
    diagonal = prec.shape[1] == 1
    for k in range(K):
        row = logp[k]
        ck = const[k]
        if diagonal:
            for b in range(nb):
                acc = 0.0
                for i in range(d):
                    v = (xt[i, b] - means[k, i]) * prec[k, 0, i]
                    acc += v * v
                row[b] = ck - 0.5 * acc
        else:
            # y_j = sum_{i <= j} (x_i - mu_i) U_ij with U upper triangular
            for b in range(nb):
                acc = 0.0
                for j in range(d):
                    yj = 0.0
                    for i in range(j + 1):
                        yj += (xt[i, b] - means[k, i]) * prec[k, i, j]
                    acc += yj * yj
                row[b] = ck - 0.5 * acc


@kernel(fastmath=FASTMATH)
def _exponentiate(logp, nb, mx, total):
    """Shift a block of weighted log-probabilities and exponentiate them.

    In place: ``logp[k, b]`` becomes exp(logp - mx[b]); ``mx`` receives the
    per-sample maximum and ``total`` the per-sample sum, so that the
    log-likelihood of sample b is ``mx[b] + log(total[b])`` and its
    responsibilities are ``logp[:, b] / total[b]``.
    """
    K = logp.shape[0]
    for b in range(nb):
        mx[b] = logp[0, b]
    for k in range(1, K):
        row = logp[k]
        for b in range(nb):
            mx[b] = max(mx[b], row[b])
    for b in range(nb):
        total[b] = 0.0
    for k in range(K):
        row = logp[k]
        for b in range(nb):
            e = _exp(row[b] - mx[b])
            row[b] = e
            total[b] += e


@kernel(fastmath=FASTMATH)
def _accumulate(xt, nb, expo, factor, shift, diagonal, stats, rx, rxi):
    """Add one block's shifted moments to ``stats``.

    The weight of sample b in component k is ``expo[k, b] * factor[b]``
    (unnormalised probabilities times 1 / total, times the sample weight).
    ``rx`` and ``rxi`` are scratch.
    """
    K, d = shift.shape
    for k in range(K):
        e = expo[k]
        acc = 0.0
        for b in range(nb):
            r = e[b] * factor[b]
            rx[b] = r
            acc += r
        stats[k, 0] += acc
        q = 1 + d
        for i in range(d):
            mu = shift[k, i]
            xi = xt[i]
            acc = 0.0
            acc2 = 0.0
            if diagonal:
                for b in range(nb):
                    v = rx[b] * (xi[b] - mu)
                    acc += v
                    acc2 += v * (xi[b] - mu)
                stats[k, 1 + i] += acc
                stats[k, 1 + d + i] += acc2
            else:
                for b in range(nb):
                    v = rx[b] * (xi[b] - mu)
                    rxi[b] = v
                    acc += v
                stats[k, 1 + i] += acc
                for j in range(i, d):
                    mj = shift[k, j]
                    xj = xt[j]
                    acc = 0.0
                    for b in range(nb):
                        acc += rxi[b] * (xj[b] - mj)
                    stats[k, q] += acc
                    q += 1


@kernel(fastmath=FASTMATH, inline="always")
def block_likelihood(mx, total, nb, s, sample_weight, factor, loglik, worst_value, worst_row):
    """The bookkeeping of an EM pass for the block of rows s..s+nb after
    :func:`_exponentiate`: returns ``loglik`` plus the block's (weighted)
    log-likelihoods, and the worst explained row so far (its best log-density
    and index); writes each sample's weight factor (sample weight / total).
    An empty ``sample_weight`` means unit weights."""
    for b in range(nb):
        if mx[b] < worst_value:
            worst_value = mx[b]
            worst_row = s + b
    if sample_weight.shape[0] > 0:
        for b in range(nb):
            wb = sample_weight[s + b]
            loglik += wb * (mx[b] + math.log(total[b]))
            factor[b] = wb / total[b]
    else:
        for b in range(nb):
            loglik += mx[b]
            factor[b] = 1.0 / total[b]
        # total[b] lies in [1, K]: one log of a product of 16 of them
        # instead of 16 scalar logs (no overflow while K < 1e19).
        for g in range(0, nb, 16):
            prod = 1.0
            for b in range(g, min(g + 16, nb)):
                prod *= total[b]
            loglik += math.log(prod)
    return loglik, worst_value, worst_row


@kernel(fastmath=FASTMATH)
def em_pass(X, start, stop, sample_weight, means, prec, const, features):
    """One fused E-step and M-step statistics pass over rows [start, stop).

    Returns ``(stats, loglik_sum, worst_value, worst_row)``: the packed
    responsibility-weighted moments around ``means`` (shape (K, width)), the
    (weighted) sum of per-sample log-likelihoods, and the row whose best
    component explains it least (for re-seeding empty components). An empty
    ``sample_weight`` means unit weights. Memory is O(K * BLOCK), never O(n*K).
    ``features`` is ``feature_tuple(X.shape[1])``: a tuple whose length is
    part of its type, so the number of features is a compile-time constant.
    """
    d = len(features)
    K = means.shape[0]
    diagonal = prec.shape[1] == 1
    stats = np.zeros((K, stats_width(d, diagonal)))
    xt = np.empty((d, BLOCK))
    expo = np.empty((K, BLOCK))
    mx = np.empty(BLOCK)
    total = np.empty(BLOCK)
    factor = np.empty(BLOCK)
    scratch = np.empty((2, BLOCK))
    loglik = 0.0
    worst_value = np.inf
    worst_row = np.int64(-1)  # not a literal: one compilation of block_likelihood
    for s in range(start, stop, BLOCK):
        nb = min(BLOCK, stop - s)
        _load_block(X, s, nb, xt)
        _weighted_log_prob(xt, nb, means, prec, const, expo, d)
        _exponentiate(expo, nb, mx, total)
        loglik, worst_value, worst_row = block_likelihood(mx, total, nb, s, sample_weight, factor, loglik, worst_value, worst_row)
        _accumulate(xt, nb, expo, factor, means, diagonal, stats, scratch[0], scratch[1])
    return stats, loglik, worst_value, worst_row


@kernel(fastmath=FASTMATH, inline="always")
def block_outputs(logp, nb, s, mx, total, best, log_norm, resp, labels):
    """The outputs of :func:`estimate` for the block of rows s..s+nb from
    its weighted log-probabilities ``logp`` (overwritten); ``mx``, ``total``
    and ``best`` are scratch."""
    K = logp.shape[0]
    want_norm = log_norm.shape[0] > 0
    want_resp = resp.shape[0] > 0
    if labels.shape[0] > 0:
        for b in range(nb):
            best[b] = 0
            mx[b] = logp[0, b]
        for k in range(1, K):
            row = logp[k]
            for b in range(nb):
                if row[b] > mx[b]:
                    mx[b] = row[b]
                    best[b] = k
        for b in range(nb):
            labels[s + b] = best[b]
    if want_norm or want_resp:
        _exponentiate(logp, nb, mx, total)
    if want_norm:
        for b in range(nb):
            log_norm[s + b] = mx[b] + math.log(total[b])
    if want_resp:
        for b in range(nb):
            inv = 1.0 / total[b]
            for k in range(K):
                resp[s + b, k] = logp[k, b] * inv


@kernel(fastmath=FASTMATH)
def estimate(X, start, stop, means, prec, const, features, log_norm, resp, labels):
    """Per-sample outputs for rows [start, stop) under fixed parameters.

    Writes whichever outputs are non-empty (length 0 means "not wanted"):
    ``log_norm[n]`` the log-likelihood of each sample, ``resp[n, K]`` the
    responsibilities (any float dtype, e.g. float32 maps), ``labels[n]`` the
    most probable component. ``features`` as in :func:`em_pass`.
    """
    d = len(features)
    K = means.shape[0]
    xt = np.empty((d, BLOCK))
    expo = np.empty((K, BLOCK))
    mx = np.empty(BLOCK)
    total = np.empty(BLOCK)
    best = np.empty(BLOCK, dtype=np.int64)
    for s in range(start, stop, BLOCK):
        nb = min(BLOCK, stop - s)
        _load_block(X, s, nb, xt)
        _weighted_log_prob(xt, nb, means, prec, const, expo, d)
        block_outputs(expo, nb, s, mx, total, best, log_norm, resp, labels)


@kernel(fastmath=FASTMATH)
def weighted_moments(X, start, stop, resp, sample_weight, shift, diagonal):
    """Packed moments of rows [start, stop) for given responsibilities.

    ``resp`` holds the rows' responsibilities (shape (stop - start, K)); used
    to turn an initial partition into initial parameters.
    """
    K, d = shift.shape
    weighted = sample_weight.shape[0] > 0
    stats = np.zeros((K, stats_width(d, diagonal)))
    xt = np.empty((d, BLOCK))
    block_resp = np.empty((K, BLOCK))
    factor = np.empty(BLOCK)
    scratch = np.empty((2, BLOCK))
    for s in range(start, stop, BLOCK):
        nb = min(BLOCK, stop - s)
        _load_block(X, s, nb, xt)
        for b in range(nb):
            factor[b] = sample_weight[s + b] if weighted else 1.0
            for k in range(K):
                block_resp[k, b] = resp[s - start + b, k]
        _accumulate(xt, nb, block_resp, factor, shift, diagonal, stats, scratch[0], scratch[1])
    return stats


@kernel(fastmath=FASTMATH)
def nearest_center(X, start, stop, centers, sample_weight, labels, min_sq_dist):
    """Assign rows [start, stop) to their nearest centre.

    Writes ``labels`` and ``min_sq_dist`` for those rows and returns the
    per-centre weighted sums and weights (for a Lloyd update) and the weighted
    inertia. Ties go to the lower centre index, deterministically.
    """
    K, d = centers.shape
    weighted = sample_weight.shape[0] > 0
    sums = np.zeros((K, d))
    counts = np.zeros(K)
    inertia = 0.0
    for n in range(start, stop):
        best = 0
        best_d2 = np.inf
        for k in range(K):
            d2 = 0.0
            for i in range(d):
                v = X[n, i] - centers[k, i]
                d2 += v * v
            if d2 < best_d2:
                best_d2 = d2
                best = k
        wn = sample_weight[n] if weighted else 1.0
        labels[n] = best
        min_sq_dist[n] = best_d2
        counts[best] += wn
        inertia += wn * best_d2
        for i in range(d):
            sums[best, i] += wn * X[n, i]
    return sums, counts, inertia


@kernel(fastmath=FASTMATH)
def candidate_potentials(X, start, stop, candidates, sample_weight, min_sq_dist):
    """For k-means++: the weighted potential sum(w * min(D^2, |x - c|^2)) of
    rows [start, stop) for each candidate centre c."""
    C, d = candidates.shape
    weighted = sample_weight.shape[0] > 0
    pots = np.zeros(C)
    for n in range(start, stop):
        wn = sample_weight[n] if weighted else 1.0
        for c in range(C):
            d2 = 0.0
            for i in range(d):
                v = X[n, i] - candidates[c, i]
                d2 += v * v
            pots[c] += wn * min(d2, min_sq_dist[n])
    return pots


@kernel(fastmath=FASTMATH)
def update_min_sq_dist(X, start, stop, center, min_sq_dist):
    """min_sq_dist[n] = min(min_sq_dist[n], |x_n - center|^2) for rows [start, stop)."""
    d = X.shape[1]
    for n in range(start, stop):
        d2 = 0.0
        for i in range(d):
            v = X[n, i] - center[i]
            d2 += v * v
        if d2 < min_sq_dist[n]:
            min_sq_dist[n] = d2


@kernel
def column_range(X, start, stop):
    """Per-column minimum and maximum of rows ``start:stop`` of X, and
    whether any of them is NaN (which comparisons would skip)."""
    d = X.shape[1]
    lo = np.full(d, np.inf)
    hi = np.full(d, -np.inf)
    nan = False
    for i in range(start, stop):
        row = X[i]
        for j in range(d):
            v = row[j]
            if v < lo[j]:
                lo[j] = v
            if v > hi[j]:
                hi[j] = v
            if v != v:
                nan = True
    return lo, hi, nan
