"""Segmenting a 12-megapixel photo: wall time and peak memory, beside scikit-learn.

The photo: ``skimage.data.astronaut()`` resized to 4000 x 3000 with mild
noise, saved as a JPEG (what a camera gives). gmmseg runs
``Segmenter(n_components=8, covariance_type="full")`` fit and predict (the
maps) in two configurations: its defaults (robust starts, the spatial prior
fitted on a 250,000-pixel grid, position features; mean-field maps on every
pixel) and colour only (``smoothing=0, spatial_weight=0, n_starts=1``, the
previous defaults), each the median of ``--repeat`` runs.
scikit-learn's GaussianMixture runs on the same Lab features of all 12 M
pixels from the colour-only model's fitted starting point; its iterations
are so slow that it is timed over a few and extrapolated to the number
gmmseg needed (said so in the output), plus its predict_proba.

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
    parser.add_argument("--repeat", type=int, default=3, help="runs of each gmmseg configuration (median)")
    args = parser.parse_args()

    import gmmseg
    from gmmseg.engine import warm_up

    width, height = (1000, 750) if args.quick else (4000, 3000)
    warm_up()  # compile/load kernels outside the timed run (reported by bench_engine)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photo.jpg"
        make_photo(path, width, height)
        print(f"photo: {width} x {height} = {width * height / 1e6:.1f} Mpixel JPEG ({path.stat().st_size / 1e6:.1f} MB)")
        load = []
        image = phase("load", lambda: gmmseg.load_image(path), load)
        print(f"load: {load[0][1]:.2f} s")
        configurations = {
            "defaults": {},
            "colour only": {"smoothing": 0.0, "spatial_weight": 0.0, "n_starts": 1},
        }
        for label, settings in configurations.items():
            runs = []
            for _ in range(args.repeat):
                results = []
                seg = gmmseg.Segmenter(n_components=8, covariance_type="full", random_state=0, **settings)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    phase("fit", lambda seg=seg: seg.fit(image), results)
                res = phase("predict", lambda seg=seg: seg.predict(image), results)
                runs.append(results)
                del res
            fit_s = float(np.median([r[0][1] for r in runs]))
            maps_s = float(np.median([r[1][1] for r in runs]))
            total_s = float(np.median([r[0][1] + r[1][1] for r in runs]))
            print(f"\ngmmseg {label}: Segmenter(8, 'full'{''.join(f', {k}={v}' for k, v in settings.items())}): "
                  f"{seg.gmm_.n_iter_} EM iterations (colour and spatial), converged={seg.gmm_.converged_}")
            print(f"  median of {args.repeat}: fit {fit_s:.2f} s, maps {maps_s:.2f} s, fit + maps {total_s:.2f} s "
                  f"(all runs: {', '.join(f'{r[0][1] + r[1][1]:.2f}' for r in runs)})")
            print(f"  peak traced MB: fit {max(r[0][2] for r in runs):.0f}, maps {max(r[1][2] for r in runs):.0f}")
        print(f"process max RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        results = runs[-1]

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
        print(f"  gmmseg colour-only fit + predict: {total_s:.2f} s -> {extrapolated / total_s:.0f}x faster")


if __name__ == "__main__":
    main()
