"""EM engine speed and exactness against scikit-learn, in one process run.

Data: the pixels of ``skimage.data.astronaut()`` resized to 1024 x 1024 and
stored as 8-bit (as a loaded photo would be), as float64 in [0, 1]:
1,048,576 x 3. K = 8. Both libraries start from the same initial weights,
means and precisions (from a k-means start) with ``tol=0``, so they run the
same iterations.

Per EM iteration = (time of a fit with max_iter=N2 - time with max_iter=N1)
/ (N2 - N1), which cancels set-up and the final E-step. Repetitions are
interleaved and the medians reported, because this machine is shared and
noisy. Compile time is measured in fresh processes: cold (empty kernel
cache) and warm (cache filled).

Usage: python benchmarks/bench_engine.py [--repeats R] [--quick]
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


def initial_parameters(X, covariance_type, k, seed=0):
    import gmmseg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = gmmseg.GaussianMixture(
            k, covariance_type=covariance_type, max_iter=0, random_state=seed
        ).fit(X[::7])
    return {"weights_init": gm.weights_, "means_init": gm.means_, "precisions_init": gm.precisions_}


def timed_fit(cls, X, covariance_type, k, init, max_iter, sample_weight=None):
    model = cls(k, covariance_type=covariance_type, max_iter=max_iter, tol=0.0, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        if sample_weight is None:
            model.fit(X)
        else:
            model.fit(X, sample_weight=sample_weight)
        return time.perf_counter() - start, model


def per_iteration_ms(cls, X, covariance_type, k, init, n1, n2, repeats, sample_weight=None):
    samples = []
    for _ in range(repeats):
        t1, _ = timed_fit(cls, X, covariance_type, k, init, n1, sample_weight)
        t2, _ = timed_fit(cls, X, covariance_type, k, init, n2, sample_weight)
        samples.append((t2 - t1) / (n2 - n1) * 1000.0)
    return statistics.median(samples)


STARTUP_SCRIPT = textwrap.dedent(
    """
    import time
    t0 = time.perf_counter()
    import numpy as np
    import gmmseg
    X = np.random.RandomState(0).normal(size=(10000, 3))
    gmmseg.GaussianMixture(8, covariance_type="full", random_state=0).fit(X)
    print(time.perf_counter() - t0)
    """
)


def startup_seconds(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", STARTUP_SCRIPT],
        env=env, capture_output=True, text=True, check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions (median)")
    parser.add_argument("--quick", action="store_true", help="256x256 image, for a smoke run")
    args = parser.parse_args()

    from sklearn.mixture import GaussianMixture as SklearnGM

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
        init = initial_parameters(X, covariance_type, k)
        # First call on a few rows: kernel compile or cache load, reported apart.
        first, _ = timed_fit(gmmseg.GaussianMixture, X[:2000], covariance_type, k, init, 2)
        g_ms = per_iteration_ms(gmmseg.GaussianMixture, X, covariance_type, k, init, 1, 11, args.repeats + 2)
        s_ms = per_iteration_ms(SklearnGM, X, covariance_type, k, init, 1, 3, args.repeats)
        # Same iterations from the same start: compare the results.
        _, g = timed_fit(gmmseg.GaussianMixture, X, covariance_type, k, init, 5)
        _, s = timed_fit(SklearnGM, X, covariance_type, k, init, 5)
        rel = abs(g.lower_bound_ - s.lower_bound_) / abs(s.lower_bound_)
        mdiff = float(np.abs(g.means_ - s.means_).max())
        print(f"{covariance_type:<10} {s_ms:>14.1f} {g_ms:>13.2f} {s_ms / g_ms:>8.1f}x {first:>13.2f} {rel:>21.2e} {mdiff:>19.2e}")

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


if __name__ == "__main__":
    main()
