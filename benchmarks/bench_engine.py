"""EM engine speed and exactness against scikit-learn, in one process run.

Colour table. Data: the pixels of ``skimage.data.astronaut()`` resized to
1024 x 1024 and stored as 8-bit (as a loaded photo would be), as float64 in
[0, 1]: 1,048,576 x 3. K = 8. Both libraries start from the same initial
weights, means and precisions (from a k-means start) with ``tol=0``, so they
run the same iterations.

Feature-count table. Data: a filter bank on the same photo resized to
500 x 400 (200,000 rows, float64): per pixel its R, G, B in [0, 1], then for
sigma = 1, 2, 4, 8 the Gaussian-smoothed R, G, B, their gradient
magnitudes and their Laplacians (39 columns, strongly correlated as texture
features are); the first d columns for d = 3, 8, 16, 32. K = 8, every
covariance type, same protocol. "first call" is the first fit on 2,000 rows
in this process (compilation, or loading from the on-disk cache, of what the
earlier rows have not compiled yet); "cold start" lines time a new process
with an empty kernel cache: import, fit and predict with d features.

Per EM iteration = (time of a fit with max_iter=N2 - time with max_iter=N1)
/ (N2 - N1), which cancels set-up and the final E-step, with each time the
fastest of the repetitions: on this shared machine a fit's time is its work
plus whatever other jobs and page faults add, so the fastest is the best
estimate of the work (scikit-learn's fits, which allocate several (n, d)
and (n, K) temporaries per iteration, swung by seconds; the old median of
differences gave 15x to 36x at 16 features from one run to the next, and
once a negative time). The two libraries take turns within each repetition.
Both get ``init_params="random_from_data"`` (with ``random_state=0``):
scikit-learn computes initial responsibilities in every fit even when all
initial parameters are given, and then discards them, so the iterations are
the same whatever ``init_params`` is, and picking K rows costs less, and
varies less, than its default KMeans of the whole data. Compile time
is measured in fresh processes: cold (empty kernel cache) and warm (cache
filled).

Usage: python benchmarks/bench_engine.py [--repeats R] [--quick] [--features-only] [--types full,diag,...]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings

import numpy as np


def astronaut_pixels(size=1024):
    from skimage import data, transform, util

    img = transform.resize(data.astronaut(), (size, size), anti_aliasing=True)
    return util.img_as_ubyte(img).reshape(-1, 3).astype(np.float64) / 255.0


def filter_bank(d, shape=(500, 400)):
    """The first d columns of the filter-bank features (see the docstring)."""
    from scipy import ndimage
    from skimage import data, transform

    img = transform.resize(data.astronaut(), shape, anti_aliasing=True)
    channels = [img[..., c] for c in range(3)]
    columns = list(channels)
    for sigma in (1.0, 2.0, 4.0, 8.0):
        columns += [ndimage.gaussian_filter(c, sigma) for c in channels]
        columns += [ndimage.gaussian_gradient_magnitude(c, sigma) for c in channels]
        columns += [ndimage.gaussian_laplace(c, sigma) for c in channels]
    if d > len(columns):
        raise ValueError(f"at most {len(columns)} filter-bank features, got d={d}")
    return np.ascontiguousarray(np.stack(columns[:d], axis=-1).reshape(-1, d))


def initial_parameters(X, covariance_type, k, seed=0):
    import gmmseg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = gmmseg.GaussianMixture(
            k, covariance_type=covariance_type, max_iter=0, random_state=seed
        ).fit(X[::7])
    return {"weights_init": gm.weights_, "means_init": gm.means_, "precisions_init": gm.precisions_}


def timed_fit(cls, X, covariance_type, k, init, max_iter, sample_weight=None):
    model = cls(k, covariance_type=covariance_type, max_iter=max_iter, tol=0.0, init_params="random_from_data", random_state=0, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        if sample_weight is None:
            model.fit(X)
        else:
            model.fit(X, sample_weight=sample_weight)
        return time.perf_counter() - start, model


def per_iteration_ms(cls, X, covariance_type, k, init, n1, n2, repeats, sample_weight=None):
    """(fastest fit with n2 iterations - fastest fit with n1) / (n2 - n1), in
    ms, over ``repeats`` interleaved pairs of fits."""
    return iteration_estimate(*fit_times(cls, X, covariance_type, k, init, n1, n2, repeats, sample_weight), n1, n2)


def fit_times(cls, X, covariance_type, k, init, n1, n2, repeats, sample_weight=None):
    """Seconds of ``repeats`` fits with max_iter=n1 and of as many with n2, interleaved."""
    t1, t2 = [], []
    for _ in range(repeats):
        t1.append(timed_fit(cls, X, covariance_type, k, init, n1, sample_weight)[0])
        t2.append(timed_fit(cls, X, covariance_type, k, init, n2, sample_weight)[0])
    return t1, t2


def iteration_estimate(t1, t2, n1, n2):
    """ms per iteration from the fastest fit of each length: the one least
    disturbed by the other work on this shared machine (the difference of
    medians, or the median of differences, swung by a factor of three from
    run to run, even below zero, for scikit-learn)."""
    return (min(t2) - min(t1)) / (n2 - n1) * 1000.0


def compare(X, covariance_type, k, repeats):
    """One table row: ``(sklearn ms/it, gmmseg ms/it, speed-up, first call s,
    lower bound relative difference, means max abs difference)`` from the
    same initial parameters."""
    from sklearn.mixture import GaussianMixture as SklearnGM

    import gmmseg

    init = initial_parameters(X, covariance_type, k)
    # First call on a few rows: kernel compile or cache load, reported apart.
    first, _ = timed_fit(gmmseg.GaussianMixture, X[:2000], covariance_type, k, init, 2)
    timed_fit(gmmseg.GaussianMixture, X, covariance_type, k, init, 1)  # untimed: first touch of X's pages
    times = {"g1": [], "g2": [], "s1": [], "s2": []}
    for _ in range(repeats):
        # The two libraries take turns, so that both see the same spells of load.
        g1, g2 = fit_times(gmmseg.GaussianMixture, X, covariance_type, k, init, 1, 11, 1)
        s1, s2 = fit_times(SklearnGM, X, covariance_type, k, init, 1, 3, 1)
        for key, value in (("g1", g1), ("g2", g2), ("s1", s1), ("s2", s2)):
            times[key] += value
    g_ms = iteration_estimate(times["g1"], times["g2"], 1, 11)
    s_ms = iteration_estimate(times["s1"], times["s2"], 1, 3)
    # Same iterations from the same start: compare the results.
    _, g = timed_fit(gmmseg.GaussianMixture, X, covariance_type, k, init, 5)
    _, s = timed_fit(SklearnGM, X, covariance_type, k, init, 5)
    rel = abs(g.lower_bound_ - s.lower_bound_) / abs(s.lower_bound_)
    return s_ms, g_ms, s_ms / g_ms, first, rel, float(np.abs(g.means_ - s.means_).max())


STARTUP_SCRIPT = textwrap.dedent(
    """
    import sys, time
    t0 = time.perf_counter()
    import numpy as np
    import gmmseg
    X = np.random.RandomState(0).normal(size=(10000, int(sys.argv[1])))
    gm = gmmseg.GaussianMixture(8, covariance_type="full", random_state=0).fit(X)
    if sys.argv[2] == "predict":
        gm.predict(X)
    print(time.perf_counter() - t0)
    """
)


def startup_seconds(cache_dir, n_features=3, predict=False):
    """Seconds for a new process to import gmmseg and fit (and predict)
    K=8 full on 10,000 rows of ``n_features``, with ``cache_dir`` as the
    kernel cache."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", STARTUP_SCRIPT, str(n_features), "predict" if predict else "fit"],
        env=env, capture_output=True, text=True, check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions (median)")
    parser.add_argument("--quick", action="store_true", help="small images and few feature counts, for a smoke run")
    parser.add_argument("--features-only", action="store_true", help="only the feature-count table")
    parser.add_argument("--types", default="full,tied,diag,spherical", help="covariance types of the feature-count table")
    args = parser.parse_args()
    if not args.features_only:
        colour_tables(args)
    feature_table(args)


def colour_tables(args):

    import gmmseg
    from gmmseg.engine import get_num_threads

    size = 256 if args.quick else 1024
    k = 8
    X = astronaut_pixels(size)
    print(f"data: astronaut {size}x{size}, X {X.shape} float64, K={k}, "
          f"gmmseg threads={get_num_threads()}, repeats={args.repeats}")

    with tempfile.TemporaryDirectory() as cache:
        cold = startup_seconds(cache)  # empty cache: compiles everything it needs
        warm = statistics.median(startup_seconds(cache) for _ in range(3))
    print(f"start-up (new process: import gmmseg + K=8 full fit on 10,000 rows): "
          f"cold cache {cold:.2f} s, warm cache {warm:.2f} s")

    header = (f"{'covariance':<10} {'sklearn ms/it':>14} {'gmmseg ms/it':>13} {'speed-up':>9} {'first call s':>13} "
              f"{'lower bound rel diff':>21} {'means max abs diff':>19}")
    print(header)
    print("-" * len(header))
    for covariance_type in ("full", "tied", "diag", "spherical"):
        s_ms, g_ms, ratio, first, rel, mdiff = compare(X, covariance_type, k, args.repeats)
        print(f"{covariance_type:<10} {s_ms:>14.1f} {g_ms:>13.2f} {ratio:>8.1f}x {first:>13.2f} {rel:>21.2e} {mdiff:>19.2e}")

    # Unique colours with counts as weights versus all pixels (same model).
    colours, counts = np.unique(X, axis=0, return_counts=True)
    w = counts.astype(np.float64)
    print(f"\nunique colours: {len(colours)} of {len(X)} pixels ({len(X) / len(colours):.1f}x fewer rows)")
    print(f"{'covariance':<10} {'all px ms/it':>13} {'unique ms/it':>13} {'speed-up':>9} {'lower bound rel diff':>21}")
    for covariance_type in ("full", "tied", "diag", "spherical"):
        init = initial_parameters(X, covariance_type, k)
        all_ms = per_iteration_ms(gmmseg.GaussianMixture, X, covariance_type, k, init, 1, 11, args.repeats)
        uniq_ms = per_iteration_ms(gmmseg.GaussianMixture, colours, covariance_type, k, init, 1, 11, args.repeats, sample_weight=w)
        _, a = timed_fit(gmmseg.GaussianMixture, X, covariance_type, k, init, 20)
        _, u = timed_fit(gmmseg.GaussianMixture, colours, covariance_type, k, init, 20, sample_weight=w)
        rel = abs(a.lower_bound_ - u.lower_bound_) / abs(a.lower_bound_)
        print(f"{covariance_type:<10} {all_ms:>13.2f} {uniq_ms:>13.2f} {all_ms / uniq_ms:>8.1f}x {rel:>21.2e}")



def feature_table(args):

    from gmmseg.engine import get_num_threads

    k = 8
    shape = (250, 200) if args.quick else (500, 400)
    dims = (3, 16) if args.quick else (3, 8, 16, 32)
    types = ("full", "diag") if args.quick else tuple(args.types.split(","))
    print(f"\nfeature counts: filter bank on astronaut {shape[0]}x{shape[1]} ({shape[0] * shape[1]:,} rows, float64), "
          f"K={k}, gmmseg threads={get_num_threads()}, repeats={args.repeats}")
    for d in dims[1:]:
        with tempfile.TemporaryDirectory() as cache:
            cold = startup_seconds(cache, d, predict=True)
        print(f"cold start (new process, empty cache: import gmmseg + K=8 full fit and predict on 10,000 x {d}): {cold:.2f} s")
    header = (f"{'d':>3} {'covariance':<10} {'sklearn ms/it':>14} {'gmmseg ms/it':>13} {'speed-up':>9} "
              f"{'lower bound rel diff':>21} {'first call s':>13}")
    print(header)
    print("-" * len(header))
    worst = 0.0
    for d in dims:
        X = filter_bank(d, shape)
        for covariance_type in types:
            s_ms, g_ms, ratio, first, rel, _ = compare(X, covariance_type, k, args.repeats)
            worst = max(worst, rel)
            print(f"{d:>3} {covariance_type:<10} {s_ms:>14.1f} {g_ms:>13.2f} {ratio:>8.1f}x {rel:>21.2e} {first:>13.2f}",
                  flush=True)
    print(f"largest lower bound relative difference: {worst:.2e} ({'within' if worst <= 1e-7 else 'ABOVE'} 1e-7)")


if __name__ == "__main__":
    main()
