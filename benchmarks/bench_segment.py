"""Segmenting a 12-megapixel photo: wall time and peak memory, beside scikit-learn.

The photo: ``skimage.data.astronaut()`` resized to 4000 x 3000 with mild
noise, saved as a JPEG (what a camera gives). gmmseg runs
``Segmenter(n_components=8, covariance_type="full").fit_predict`` split into
load, fit and predict. scikit-learn's GaussianMixture runs on the same
Lab features of all 12 M pixels from gmmseg's fitted starting point; its
iterations are so slow that it is timed over a few and extrapolated to the
number gmmseg needed (said so in the output), plus its predict_proba.

Peak memory: the largest traced allocation total of each phase
(tracemalloc sees NumPy's buffers) and the process's maximum RSS.

Usage: python benchmarks/bench_segment.py [--quick] [--skip-sklearn]
"""

import argparse
import gc
import resource
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np


def make_photo(path, width, height):
    from PIL import Image
    from skimage import data, transform

    img = transform.resize(data.astronaut(), (height, width), order=1, anti_aliasing=False)
    img = img + np.random.RandomState(0).normal(scale=2.0 / 255.0, size=img.shape)
    Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(path, quality=92)


def phase(name, func, results):
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    value = func()
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    results.append((name, seconds, peak / 2**20))
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1000 x 750 instead of 4000 x 3000")
    parser.add_argument("--skip-sklearn", action="store_true")
    parser.add_argument("--sklearn-iterations", type=int, default=2)
    args = parser.parse_args()

    import gmmseg
    from gmmseg.engine import warm_up

    width, height = (1000, 750) if args.quick else (4000, 3000)
    warm_up()  # compile/load kernels outside the timed run (reported by bench_engine)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photo.jpg"
        make_photo(path, width, height)
        print(f"photo: {width} x {height} = {width * height / 1e6:.1f} Mpixel JPEG ({path.stat().st_size / 1e6:.1f} MB)")
        results = []
        seg = gmmseg.Segmenter(n_components=8, covariance_type="full", random_state=0)
        image = phase("load", lambda: gmmseg.load_image(path), results)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            phase("fit", lambda: seg.fit(image), results)
        res = phase("predict", lambda: seg.predict(image), results)
        total = sum(r[1] for r in results)
        print(f"\ngmmseg Segmenter(8, 'full').fit_predict: {seg.gmm_.n_iter_} EM iterations, "
              f"converged={seg.gmm_.converged_}")
        print(f"{'phase':<10} {'seconds':>8} {'peak traced MB':>15}")
        for name, seconds, peak in results:
            print(f"{name:<10} {seconds:>8.2f} {peak:>15.0f}")
        print(f"{'total':<10} {total:>8.2f}")
        print(f"process max RSS so far: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        print(f"outputs: probabilities {res.probabilities.shape} {res.probabilities.dtype} "
              f"({res.probabilities.nbytes / 2**20:.0f} MB)")

        if args.skip_sklearn:
            return
        from sklearn.mixture import GaussianMixture as SklearnGM

        from gmmseg.features import color_features

        X = color_features(image.pixels.reshape(-1, 3), "lab")
        gm = seg.gmm_
        init = dict(weights_init=gm.weights_, means_init=gm.means_, precisions_init=gm.precisions_)

        def sk_fit(n):
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = SklearnGM(8, covariance_type="full", max_iter=n, tol=0.0, **init).fit(X)
            return time.perf_counter() - t0, model

        k = args.sklearn_iterations
        t1, _ = sk_fit(1)
        tk, model = sk_fit(1 + k)
        per_iter = (tk - t1) / k
        t0 = time.perf_counter()
        model.predict_proba(X)
        t_proba = time.perf_counter() - t0
        n_iter = max(gm.n_iter_, 1)
        extrapolated = per_iter * n_iter + t_proba
        print(f"\nscikit-learn on the same {X.shape[0]:,} x 3 Lab features (timed over {k} iterations, "
              f"extrapolated to gmmseg's {n_iter}):")
        print(f"  {per_iter:.2f} s per EM iteration, predict_proba {t_proba:.2f} s, "
              f"fit + predict_proba ~ {extrapolated:.1f} s (without its k-means init)")
        print(f"  gmmseg fit + predict: {results[1][1] + results[2][1]:.2f} s "
              f"-> {extrapolated / (results[1][1] + results[2][1]):.0f}x faster")


if __name__ == "__main__":
    main()
