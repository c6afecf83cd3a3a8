"""Row-range kernels for many features: 4 x 4 tiles instead of unrolled loops.

The kernels of ``_kernels`` unroll their loops over features at compile time:
the fastest code for a few features (colour, colour and position), but one
compilation per feature count, and with more features LLVM no longer
unrolls the triangular loops and the loops over samples stop vectorising
(measured: the Mahalanobis term at 3.4 GFMA/s with 16 features, 0.6 with
32, where one core peaks near 25). Here the loops over features are
ordinary loops over groups of 4, compiled once for every feature count, and
each innermost loop runs over the samples of a block with its partial
results in registers, so it vectorises (20-23 GFMA/s in the main loops):

* the Mahalanobis term ``q = |U_k^T (z - m_k)|^2``: outputs ``y_j`` in
  groups of four; each pass over the samples adds four inputs to them,
  and the last pass of a group, the diagonal 4 x 4 tile of the triangular
  factor (only its upper triangle), adds the squares of the group to ``q``;
* the second moments: 16 sums ``sum_b rd_ib z_jb`` per pass (10 on the
  diagonal tile), reduced over the samples.

Both work on a centred block ``z = x - center`` (rows padded with zeros to a
multiple of 4), with ``center`` the mean of the component means and
``m_k = mean_k - center``: the Mahalanobis term is ``|U_k^T z - U_k^T m_k|^2``
and the second moments are gathered as ``A = sum_b r_b (z_b - m_k) z_b^T``,
then turned into moments around the component means at the end of a pass,
``S2 = A - S1 m_k^T`` (:func:`finish_moments`). Centring keeps the
cancellation in both of the order of the distance between components over
their spread (not of the data's offset, which scikit-learn does not remove
either), so the results agree with the unrolled kernels and scikit-learn to
about 1e-14 on realistic data (tests: 1e-7, data far from the origin too).

Rows of X are read once per pass and, with 16 or more features, no longer
stay in the last-level cache from one pass to the next (200,000 x 16 is
25.6 MB), so copying a block into ``zt`` waited for memory while the FMA
units idled, and the FMA loops then left memory idle. The Mahalanobis
kernels therefore prefetch the next block's rows into L2 while they
compute, spread over the components so that the requests trickle out
instead of filling the miss queues at once (measured interleaved with the
old code on the filter-bank rows: 2-7 % less time per pass with 2 threads);
the full-covariance kernel spreads them further, over each pass over the
samples (a few lines each), which took another 5-8 % off a pass.
Building the block still costs about a tenth of a pass at 16 and 32
features (single thread, 200,000 rows: 2.6 of 25 ms and 7 of 82 ms); other
ways of building it (row by row, column by column, in 64-row pieces) and
prefetching two blocks ahead measured the same within the noise, and a
transposed centred copy of X kept for the whole fit saved only 2-3 % of a
pass with 2 threads for an extra n x d float64 array, so neither is used.

The loops are written out by hand on purpose: as separate helper kernels
they were not inlined by LLVM (a third slower), and numba's
``inline="always"`` for them more than doubled the compile time.

The entry points :func:`em_pass`, :func:`estimate` and
:func:`weighted_log_prob` take the arguments of their ``_kernels``
counterparts without the feature tuple, and give the same results.
"""

import numpy as np
from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .._jit import FASTMATH, kernel
from ._kernels import _accumulate, _exponentiate, block_likelihood, block_outputs, stats_width

TILE = 4  # rows and columns of a tile (the loops below are written out for 4)
SPAN = 32  # the skipped spans of accumulate_full are multiples of this
BLOCK = 256  # samples per block: a block's rows stay in L1/L2 up to 32 features


@kernel
def padded_features(n_features):
    """Rows of a centred block: n_features rounded up to a multiple of TILE."""
    return (n_features + TILE - 1) // TILE * TILE


def parameters(means, prec):
    """The wide kernels' form of the parameters: ``(center, shifted,
    factors, offsets)``. ``center`` is the mean of the means and
    ``shifted = means - center``; for full precisions (``prec`` of shape
    (K, d, d)) ``factors`` are the factors U_k zero-padded to (K, dp, dp)
    and ``offsets[k] = U_k^T shifted[k]`` (K, dp); for diagonal ones
    (K, 1, d) ``factors`` are the (K, d) diagonals and ``offsets`` is empty.
    The kernels pick their arithmetic from ``factors.ndim``."""
    K, d = means.shape
    center = means.mean(axis=0)
    shifted = np.ascontiguousarray(means - center)
    if prec.shape[1] == 1:
        return center, shifted, np.ascontiguousarray(prec[:, 0, :]), np.zeros((K, 0))
    dp = -(-d // TILE) * TILE
    factors = np.zeros((K, dp, dp))
    factors[:, :d, :d] = np.triu(prec)
    offsets = np.zeros((K, dp))
    offsets[:, :d] = np.einsum("kij,ki->kj", factors[:, :d, :d], shifted)
    return center, shifted, factors, offsets


# llvm.prefetch is overloaded on the pointer type: its name is mangled "p0"
# with LLVM's opaque pointers (LLVM 15 on) and "p0i8" with the typed i8* of
# older LLVMs (numba 0.59-0.60 ship LLVM 14); a wrong name fails to verify.
_PREFETCH = "llvm.prefetch.p0" if binding.llvm_version_info[0] >= 15 else "llvm.prefetch.p0i8"


@intrinsic
def _prefetch(typingctx, array, byte_offset):
    """Ask the CPU to bring the cache line at ``byte_offset`` bytes into
    ``array``'s buffer into L2, without waiting for it (llvm.prefetch: it
    never faults, so an offset past the end is harmless)."""
    sig = types.void(array, types.intp)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        address = builder.inttoptr(builder.add(builder.ptrtoint(data, ir.IntType(64)), args[1]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [address.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, _PREFETCH)
        builder.call(fn, [address, i32(0), i32(2), i32(1)])  # read, keep in L2, data
        return context.get_dummy_value()

    return sig, codegen


@kernel
def prefetch_rows(X, row0, row1, part, parts):
    """Prefetch part ``part`` of ``parts`` of the bytes of rows [row0, row1)
    of X (C-contiguous), one cache line at a time."""
    lo = row0 * X.strides[0]
    span = max(row1 - row0, 0) * X.strides[0]
    a = lo + span * part // parts
    b = lo + span * (part + 1) // parts
    for offset in range(a - a % 64, b, 64):
        _prefetch(X, offset)


@kernel
def prefetch_lines(X, offset, end, lines):
    """Prefetch ``lines`` cache lines of X from byte ``offset`` on (a
    multiple of 64), stopping at byte ``end``; returns the offset of the
    next line to prefetch."""
    stop = min(end, offset + 64 * lines)
    while offset < stop:
        _prefetch(X, offset)
        offset += 64
    return offset


@kernel
def load_centred(X, start, nb, center, zt):
    """zt[i, b] = X[start + b, i] - center[i] (as float64) for the block's
    rows; the padding rows of ``zt`` stay zero. Eight rows at a time, so
    that each row of ``zt`` is written eight samples at once."""
    d = X.shape[1]
    b0 = 0
    while b0 + 8 <= nb:
        x0 = X[start + b0]
        x1 = X[start + b0 + 1]
        x2 = X[start + b0 + 2]
        x3 = X[start + b0 + 3]
        x4 = X[start + b0 + 4]
        x5 = X[start + b0 + 5]
        x6 = X[start + b0 + 6]
        x7 = X[start + b0 + 7]
        for i in range(d):
            c = center[i]
            zi = zt[i]
            zi[b0] = x0[i] - c
            zi[b0 + 1] = x1[i] - c
            zi[b0 + 2] = x2[i] - c
            zi[b0 + 3] = x3[i] - c
            zi[b0 + 4] = x4[i] - c
            zi[b0 + 5] = x5[i] - c
            zi[b0 + 6] = x6[i] - c
            zi[b0 + 7] = x7[i] - c
        b0 += 8
    for b in range(b0, nb):
        for i in range(d):
            zt[i, b] = X[start + b, i] - center[i]


@kernel(fastmath=FASTMATH)
def log_prob_full(zt, nb, factors, offsets, const, logp, y, q, X, pf0, pf1):
    """logp[k, b] = const[k] - |U_k^T z_b - offsets_k|^2 / 2 for a centred
    block (see :func:`parameters`); ``y`` (4 rows) and ``q`` are scratch.
    Meanwhile rows [pf0, pf1) of X, the next block, are prefetched, a few
    lines before each pass over the samples: K (g (g + 1) / 2) passes for
    g groups of four outputs. Asking for a K-th of the block after each
    component, 64 lines at once with 16 features, took 5-8 % more time for
    the whole EM pass (single thread, 16 and 32 features, interleaved runs)."""
    K = const.shape[0]
    dp = zt.shape[0]
    groups = dp // TILE
    passes = K * (groups * (groups + 1) // 2)
    pf = pf0 * X.strides[0]
    pf -= pf % 64
    pf_end = max(pf0, pf1) * X.strides[0]
    lines = (pf_end - pf + 63) // 64 // passes + 1  # + 1: rounding, never short
    y0 = y[0]
    y1 = y[1]
    y2 = y[2]
    y3 = y[3]
    for k in range(K):
        up = factors[k]
        cv = offsets[k]
        # Outputs 0..3 from inputs 0..3 (upper triangle): q starts here.
        z0 = zt[0]
        z1 = zt[1]
        z2 = zt[2]
        z3 = zt[3]
        u00 = up[0, 0]
        u01 = up[0, 1]
        u02 = up[0, 2]
        u03 = up[0, 3]
        u11 = up[1, 1]
        u12 = up[1, 2]
        u13 = up[1, 3]
        u22 = up[2, 2]
        u23 = up[2, 3]
        u33 = up[3, 3]
        c0 = cv[0]
        c1 = cv[1]
        c2 = cv[2]
        c3 = cv[3]
        pf = prefetch_lines(X, pf, pf_end, lines)
        for b in range(nb):
            a0 = z0[b]
            a1 = z1[b]
            a2 = z2[b]
            a3 = z3[b]
            t0 = a0 * u00 - c0
            t1 = a0 * u01 + a1 * u11 - c1
            t2 = a0 * u02 + a1 * u12 + a2 * u22 - c2
            t3 = a0 * u03 + a1 * u13 + a2 * u23 + a3 * u33 - c3
            q[b] = t0 * t0 + t1 * t1 + t2 * t2 + t3 * t3
        for j0 in range(TILE, dp, TILE):
            c0 = cv[j0]
            c1 = cv[j0 + 1]
            c2 = cv[j0 + 2]
            c3 = cv[j0 + 3]
            # Inputs i0..i0+3 above the diagonal: the first chunk sets y,
            # the others add to it.
            for i0 in range(0, j0, TILE):
                z0 = zt[i0]
                z1 = zt[i0 + 1]
                z2 = zt[i0 + 2]
                z3 = zt[i0 + 3]
                u00 = up[i0, j0]
                u01 = up[i0, j0 + 1]
                u02 = up[i0, j0 + 2]
                u03 = up[i0, j0 + 3]
                u10 = up[i0 + 1, j0]
                u11 = up[i0 + 1, j0 + 1]
                u12 = up[i0 + 1, j0 + 2]
                u13 = up[i0 + 1, j0 + 3]
                u20 = up[i0 + 2, j0]
                u21 = up[i0 + 2, j0 + 1]
                u22 = up[i0 + 2, j0 + 2]
                u23 = up[i0 + 2, j0 + 3]
                u30 = up[i0 + 3, j0]
                u31 = up[i0 + 3, j0 + 1]
                u32 = up[i0 + 3, j0 + 2]
                u33 = up[i0 + 3, j0 + 3]
                pf = prefetch_lines(X, pf, pf_end, lines)
                if i0 == 0:
                    for b in range(nb):
                        a0 = z0[b]
                        a1 = z1[b]
                        a2 = z2[b]
                        a3 = z3[b]
                        y0[b] = a0 * u00 + a1 * u10 + a2 * u20 + a3 * u30 - c0
                        y1[b] = a0 * u01 + a1 * u11 + a2 * u21 + a3 * u31 - c1
                        y2[b] = a0 * u02 + a1 * u12 + a2 * u22 + a3 * u32 - c2
                        y3[b] = a0 * u03 + a1 * u13 + a2 * u23 + a3 * u33 - c3
                else:
                    for b in range(nb):
                        a0 = z0[b]
                        a1 = z1[b]
                        a2 = z2[b]
                        a3 = z3[b]
                        y0[b] += a0 * u00 + a1 * u10 + a2 * u20 + a3 * u30
                        y1[b] += a0 * u01 + a1 * u11 + a2 * u21 + a3 * u31
                        y2[b] += a0 * u02 + a1 * u12 + a2 * u22 + a3 * u32
                        y3[b] += a0 * u03 + a1 * u13 + a2 * u23 + a3 * u33
            # The diagonal tile (inputs j0..j0+3, its upper triangle)
            # finishes the four outputs; their squares go to q. A pass of
            # its own: fused with the last chunk above (26 coefficients)
            # it needed more than the 32 vector registers, and LLVM kept
            # the spilled coefficients as whole vectors on the stack, read
            # back in every round (the loop then waited on loads).
            z4 = zt[j0]
            z5 = zt[j0 + 1]
            z6 = zt[j0 + 2]
            z7 = zt[j0 + 3]
            u44 = up[j0, j0]
            u45 = up[j0, j0 + 1]
            u46 = up[j0, j0 + 2]
            u47 = up[j0, j0 + 3]
            u55 = up[j0 + 1, j0 + 1]
            u56 = up[j0 + 1, j0 + 2]
            u57 = up[j0 + 1, j0 + 3]
            u66 = up[j0 + 2, j0 + 2]
            u67 = up[j0 + 2, j0 + 3]
            u77 = up[j0 + 3, j0 + 3]
            pf = prefetch_lines(X, pf, pf_end, lines)
            for b in range(nb):
                a4 = z4[b]
                a5 = z5[b]
                a6 = z6[b]
                a7 = z7[b]
                t0 = y0[b] + a4 * u44
                t1 = y1[b] + a4 * u45 + a5 * u55
                t2 = y2[b] + a4 * u46 + a5 * u56 + a6 * u66
                t3 = y3[b] + a4 * u47 + a5 * u57 + a6 * u67 + a7 * u77
                q[b] += t0 * t0 + t1 * t1 + t2 * t2 + t3 * t3
        ck = const[k]
        row = logp[k]
        for b in range(nb):
            row[b] = ck - 0.5 * q[b]


@kernel(fastmath=FASTMATH)
def log_prob_diag(zt, nb, shifted, factors, const, logp, q, X, pf0, pf1):
    """As :func:`log_prob_full` for diagonal factors ``factors[k, i]``
    (1 / sigma), prefetching rows [pf0, pf1) of X the same way."""
    K, d = shifted.shape
    for k in range(K):
        for b in range(nb):
            q[b] = 0.0
        for i in range(d):
            m = shifted[k, i]
            p = factors[k, i]
            zi = zt[i]
            for b in range(nb):
                v = (zi[b] - m) * p
                q[b] += v * v
        ck = const[k]
        row = logp[k]
        for b in range(nb):
            row[b] = ck - 0.5 * q[b]
        prefetch_rows(X, pf0, pf1, k, K)


@kernel(fastmath=FASTMATH)
def accumulate_full(zt, nb, expo, factor, shifted, stats, a2, rd):
    """Add one centred block's moments: S0 and S1 (around ``m_k``) to
    ``stats``, ``A = sum_b r_b (z_b - m_k) z_b^T`` (upper triangle) to
    ``a2[k]``. The weight of sample b in component k is
    ``r_b = expo[k, b] * factor[b]``; ``rd`` (padded rows + 1) is scratch
    for the weighted differences ``r_b (z_b - m_k)`` and the weights.
    Only the span of the block where a component's weights are not exactly
    zero is summed (on the filter-bank rows of bench_engine at 16 features,
    13 % of the work lies outside these spans; the sums came out
    bit-identical there, as the spans start on multiples of 32 samples, where
    the vector loops' rounds start too)."""
    K, d = shifted.shape
    dp = zt.shape[0]
    r = rd[dp]
    m = np.zeros(dp)
    for k in range(K):
        e = expo[k]
        acc = 0.0
        for b in range(nb):
            v = e[b] * factor[b]
            r[b] = v
            acc += v
        stats[k, 0] += acc
        # Samples whose weight is exactly zero (their density underflowed
        # against another component's, or their sample weight is zero) add
        # exact zeros: the loops below run over the span of the nonzero ones
        # only, widened to multiples of SPAN samples: LLVM's vector loops take
        # 32 samples per round and finish with a scalar loop, which costs as
        # much as the vector rounds when it runs up to 31 samples.
        lo = 0
        while lo < nb and r[lo] == 0.0:
            lo += 1
        if lo == nb:
            continue
        hi = nb
        while r[hi - 1] == 0.0:
            hi -= 1
        lo -= lo % SPAN
        hi = min(nb, hi + (-hi) % SPAN)
        for i in range(d):
            m[i] = shifted[k, i]
        ak = a2[k]
        # Views of the span: indices from 0, which LLVM knows are not negative
        # (from lo, it vectorised numba's wrap-around of negative indices into
        # gathers).
        rs = r[lo:hi]
        # Diagonal tiles, which also write the weighted differences of their
        # four rows and add them up into S1.
        for i0 in range(0, dp, TILE):
            p0 = rd[i0, lo:hi]
            p1 = rd[i0 + 1, lo:hi]
            p2 = rd[i0 + 2, lo:hi]
            p3 = rd[i0 + 3, lo:hi]
            g0 = zt[i0, lo:hi]
            g1 = zt[i0 + 1, lo:hi]
            g2 = zt[i0 + 2, lo:hi]
            g3 = zt[i0 + 3, lo:hi]
            m0 = m[i0]
            m1 = m[i0 + 1]
            m2 = m[i0 + 2]
            m3 = m[i0 + 3]
            t0 = t1 = t2 = t3 = 0.0
            s00 = s01 = s02 = s03 = s11 = s12 = s13 = s22 = s23 = s33 = 0.0
            for b in range(hi - lo):
                rb = rs[b]
                f0 = g0[b]
                f1 = g1[b]
                f2 = g2[b]
                f3 = g3[b]
                e0 = rb * (f0 - m0)
                e1 = rb * (f1 - m1)
                e2 = rb * (f2 - m2)
                e3 = rb * (f3 - m3)
                p0[b] = e0
                p1[b] = e1
                p2[b] = e2
                p3[b] = e3
                t0 += e0
                t1 += e1
                t2 += e2
                t3 += e3
                s00 += e0 * f0
                s01 += e0 * f1
                s02 += e0 * f2
                s03 += e0 * f3
                s11 += e1 * f1
                s12 += e1 * f2
                s13 += e1 * f3
                s22 += e2 * f2
                s23 += e2 * f3
                s33 += e3 * f3
            stats[k, 1 + i0] += t0
            if i0 + 1 < d:
                stats[k, 2 + i0] += t1
            if i0 + 2 < d:
                stats[k, 3 + i0] += t2
            if i0 + 3 < d:
                stats[k, 4 + i0] += t3
            ak[i0, i0] += s00
            ak[i0, i0 + 1] += s01
            ak[i0, i0 + 2] += s02
            ak[i0, i0 + 3] += s03
            ak[i0 + 1, i0 + 1] += s11
            ak[i0 + 1, i0 + 2] += s12
            ak[i0 + 1, i0 + 3] += s13
            ak[i0 + 2, i0 + 2] += s22
            ak[i0 + 2, i0 + 3] += s23
            ak[i0 + 3, i0 + 3] += s33
        # Square tiles above the diagonal.
        for i0 in range(0, dp - TILE, TILE):
            p0 = rd[i0, lo:hi]
            p1 = rd[i0 + 1, lo:hi]
            p2 = rd[i0 + 2, lo:hi]
            p3 = rd[i0 + 3, lo:hi]
            for j0 in range(i0 + TILE, dp, TILE):
                g0 = zt[j0, lo:hi]
                g1 = zt[j0 + 1, lo:hi]
                g2 = zt[j0 + 2, lo:hi]
                g3 = zt[j0 + 3, lo:hi]
                s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = 0.0
                s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = 0.0
                for b in range(hi - lo):
                    e0 = p0[b]
                    e1 = p1[b]
                    e2 = p2[b]
                    e3 = p3[b]
                    f0 = g0[b]
                    f1 = g1[b]
                    f2 = g2[b]
                    f3 = g3[b]
                    s00 += e0 * f0
                    s01 += e0 * f1
                    s02 += e0 * f2
                    s03 += e0 * f3
                    s10 += e1 * f0
                    s11 += e1 * f1
                    s12 += e1 * f2
                    s13 += e1 * f3
                    s20 += e2 * f0
                    s21 += e2 * f1
                    s22 += e2 * f2
                    s23 += e2 * f3
                    s30 += e3 * f0
                    s31 += e3 * f1
                    s32 += e3 * f2
                    s33 += e3 * f3
                ak[i0, j0] += s00
                ak[i0, j0 + 1] += s01
                ak[i0, j0 + 2] += s02
                ak[i0, j0 + 3] += s03
                ak[i0 + 1, j0] += s10
                ak[i0 + 1, j0 + 1] += s11
                ak[i0 + 1, j0 + 2] += s12
                ak[i0 + 1, j0 + 3] += s13
                ak[i0 + 2, j0] += s20
                ak[i0 + 2, j0 + 1] += s21
                ak[i0 + 2, j0 + 2] += s22
                ak[i0 + 2, j0 + 3] += s23
                ak[i0 + 3, j0] += s30
                ak[i0 + 3, j0 + 1] += s31
                ak[i0 + 3, j0 + 2] += s32
                ak[i0 + 3, j0 + 3] += s33


@kernel
def finish_moments(stats, shifted, a2):
    """Add the second moments around the component means to ``stats``,
    S2_ij = A_ij - S1_i m_kj (i <= j), from the sums ``A`` that
    :func:`accumulate_full` gathered in ``a2``."""
    K, d = shifted.shape
    for k in range(K):
        q = 1 + d
        for i in range(d):
            s1 = stats[k, 1 + i]
            for j in range(i, d):
                stats[k, q] += a2[k, i, j] - s1 * shifted[k, j]
                q += 1


@kernel(fastmath=FASTMATH)
def em_pass(X, start, stop, sample_weight, center, shifted, factors, offsets, const):
    """One fused E-step and M-step statistics pass over rows [start, stop):
    ``_kernels.em_pass`` with the parameters of :func:`parameters` (same
    results)."""
    K, d = shifted.shape
    dp = padded_features(d)
    zt = np.zeros((dp, BLOCK))
    y = np.empty((TILE, BLOCK))
    q = np.empty(BLOCK)
    stats = np.zeros((K, stats_width(d, factors.ndim == 2)))
    expo = np.empty((K, BLOCK))
    mx = np.empty(BLOCK)
    total = np.empty(BLOCK)
    factor = np.empty(BLOCK)
    rd = np.zeros((dp + 1, BLOCK))
    a2 = np.zeros((K, dp, dp))
    loglik = 0.0
    worst_value = np.inf
    worst_row = np.int64(-1)  # not a literal: one compilation of block_likelihood
    for s in range(start, stop, BLOCK):
        nb = min(BLOCK, stop - s)
        load_centred(X, s, nb, center, zt)
        if factors.ndim == 2:
            log_prob_diag(zt, nb, shifted, factors, const, expo, q, X, s + BLOCK, min(s + 2 * BLOCK, stop))
        else:
            log_prob_full(zt, nb, factors, offsets, const, expo, y, q, X, s + BLOCK, min(s + 2 * BLOCK, stop))
        _exponentiate(expo, nb, mx, total)
        loglik, worst_value, worst_row = block_likelihood(mx, total, nb, s, sample_weight, factor, loglik, worst_value, worst_row)
        if factors.ndim == 2:
            _accumulate(zt, nb, expo, factor, shifted, True, stats, rd[0], rd[1])
        else:
            accumulate_full(zt, nb, expo, factor, shifted, stats, a2, rd)
    if factors.ndim == 3:
        finish_moments(stats, shifted, a2)
    return stats, loglik, worst_value, worst_row


@kernel(fastmath=FASTMATH)
def estimate(X, start, stop, center, shifted, factors, offsets, const, log_norm, resp, labels):
    """Per-sample outputs for rows [start, stop): ``_kernels.estimate`` with
    the parameters of :func:`parameters`."""
    K, d = shifted.shape
    zt = np.zeros((padded_features(d), BLOCK))
    y = np.empty((TILE, BLOCK))
    q = np.empty(BLOCK)
    expo = np.empty((K, BLOCK))
    mx = np.empty(BLOCK)
    total = np.empty(BLOCK)
    best = np.empty(BLOCK, dtype=np.int64)
    for s in range(start, stop, BLOCK):
        nb = min(BLOCK, stop - s)
        load_centred(X, s, nb, center, zt)
        if factors.ndim == 2:
            log_prob_diag(zt, nb, shifted, factors, const, expo, q, X, s + BLOCK, min(s + 2 * BLOCK, stop))
        else:
            log_prob_full(zt, nb, factors, offsets, const, expo, y, q, X, s + BLOCK, min(s + 2 * BLOCK, stop))
        block_outputs(expo, nb, s, mx, total, best, log_norm, resp, labels)


@kernel(fastmath=FASTMATH)
def weighted_log_prob(X, start, stop, center, shifted, factors, offsets, const, out):
    """out[n, k] = log(w_k) + log N(x_n | mu_k, Sigma_k) for rows [start, stop)."""
    K, d = shifted.shape
    zt = np.zeros((padded_features(d), BLOCK))
    y = np.empty((TILE, BLOCK))
    q = np.empty(BLOCK)
    logp = np.empty((K, BLOCK))
    for s in range(start, stop, BLOCK):
        nb = min(BLOCK, stop - s)
        load_centred(X, s, nb, center, zt)
        if factors.ndim == 2:
            log_prob_diag(zt, nb, shifted, factors, const, logp, q, X, s + BLOCK, min(s + 2 * BLOCK, stop))
        else:
            log_prob_full(zt, nb, factors, offsets, const, logp, y, q, X, s + BLOCK, min(s + 2 * BLOCK, stop))
        for b in range(nb):
            for k in range(K):
                out[s + b, k] = logp[k, b]
