"""Weighted k-means (k-means++ seeding, Lloyd iterations) for initialisation."""

import numpy as np

from . import _kernels
from ._parallel import map_rows


def _weights_or_ones(sample_weight, n_samples):
    return sample_weight if sample_weight.shape[0] else np.ones(n_samples)


def _update_distances(X, center, min_sq_dist):
    map_rows(lambda s, e: _kernels.update_min_sq_dist(X, s, e, center, min_sq_dist), X.shape[0])


def kmeans_plusplus(X, sample_weight, n_clusters, random_state):
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007), weighted.

    Each new centre is the best, by the resulting potential, of
    ``2 + int(log(k))`` candidates drawn with probability proportional to
    ``weight * D(x)^2``. When every row already coincides with a centre (more
    clusters than distinct rows) the next centre is drawn by weight alone.

    Returns ``(centers, indices)``.
    """
    n, d = X.shape
    w = _weights_or_ones(sample_weight, n)
    p = w / w.sum()
    n_local_trials = 2 + int(np.log(n_clusters))
    centers = np.empty((n_clusters, d))
    indices = np.empty(n_clusters, dtype=np.int64)
    first = random_state.choice(n, p=p)
    indices[0] = first
    centers[0] = X[first]
    min_sq_dist = np.full(n, np.inf)
    _update_distances(X, centers[0], min_sq_dist)
    for c in range(1, n_clusters):
        cumulative = np.cumsum(w * min_sq_dist)
        potential = cumulative[-1]
        if not potential > 0:
            chosen = random_state.choice(n, p=p)
        else:
            draws = random_state.uniform(size=n_local_trials) * potential
            candidates = np.minimum(np.searchsorted(cumulative, draws), n - 1)
            cand_points = np.ascontiguousarray(X[candidates], dtype=np.float64)
            parts = map_rows(
                # map_rows runs the rows before returning: binding this
                # iteration's candidates as a default is only for clarity.
                lambda s, e, cand_points=cand_points: _kernels.candidate_potentials(
                    X, s, e, cand_points, sample_weight, min_sq_dist
                ),
                n,
            )
            chosen = candidates[int(np.argmin(np.sum(parts, axis=0)))]
        indices[c] = chosen
        centers[c] = X[chosen]
        _update_distances(X, centers[c], min_sq_dist)
    return centers, indices


def kmeans(X, sample_weight, n_clusters, random_state, max_iter=300, tol=1e-4, should_stop=None):
    """Weighted Lloyd k-means from a k-means++ start.

    Stops when the total squared centre shift falls below ``tol`` times the
    mean feature variance. An empty cluster keeps its previous centre.
    ``should_stop(step)`` is asked after every step; True ends early.

    Returns ``(centers, labels, stopped)``.
    """
    n, d = X.shape
    w = _weights_or_ones(sample_weight, n)
    mean = (w @ X) / w.sum()
    variance = (w @ (X - mean) ** 2) / w.sum()
    tol_abs = tol * float(np.mean(variance))
    centers, _ = kmeans_plusplus(X, sample_weight, n_clusters, random_state)
    labels = np.empty(n, dtype=np.int64)
    min_sq_dist = np.empty(n)

    def assign(current):
        parts = map_rows(
            lambda s, e: _kernels.nearest_center(
                X, s, e, current, sample_weight, labels, min_sq_dist
            ),
            n,
        )
        sums = np.sum([p[0] for p in parts], axis=0)
        counts = np.sum([p[1] for p in parts], axis=0)
        return sums, counts

    stopped = False
    for step in range(max_iter):
        if should_stop is not None and should_stop(step):
            stopped = True
            break
        sums, counts = assign(centers)
        filled = counts > 0
        new_centers = centers.copy()
        new_centers[filled] = sums[filled] / counts[filled, None]
        shift = float(np.sum((new_centers - centers) ** 2))
        centers = new_centers
        if shift <= tol_abs:
            break
    assign(centers)  # labels consistent with the final centres
    return centers, labels, stopped
