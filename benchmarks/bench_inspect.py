"""Defect inspection quality and speed: synthetic surfaces and real tiles.

Surfaces: a brushed, unevenly shaded metal-like texture; defective ones get a
stain, a thin scratch and two small spots of another colour, each with a known
mask (half of them faint). Three defect-free references train the model at
the default settings. Prints pixel AUROC of the (calibrated) score map, pixel
precision, recall and F1 of the defect masks, how much wider than the painted
scratch its mask is, region recall (painted defects hit by a region) and
precision (regions that hit a defect), image verdicts (defective images
failed, defect-free images failed, against the false-reject rate), false
regions on defect-free images, and images per second for 1-megapixel images
in batch.

Beside gmmseg's defaults, the same surfaces go through a scikit-learn
GaussianMixture (K=4, full) on the Lab colour of the reference pixels, with
a threshold at the 99.9th percentile of the references' negative
log-likelihood: the script a user would write by hand.

Then, when the Magnetic Tile images are present (../shared/data, see
bench_tiles.py), the real-tile benchmark runs: per defect kind pixel AUROC,
F1, defects found, false regions per defect-free image and image AUROC, for
gmmseg and for scikit-learn, in the same run.

Usage: python benchmarks/bench_inspect.py [--quick] [--setting KEY=VALUE ...] [--no-tiles]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import bench_tiles  # noqa: E402
from imagefiles import auroc, paint_defects, surface  # noqa: E402

from gmmseg.features import color_features  # noqa: E402
from gmmseg.inspection import Inspector  # noqa: E402


def sklearn_baseline(refs, defective, good):
    """A scikit-learn GaussianMixture on Lab colour, thresholded at the 99.9th
    percentile of the references' negative log-likelihood."""
    from sklearn.mixture import GaussianMixture

    def lab(image):
        return color_features(image.reshape(-1, 3).astype(np.float64) / 255.0, "lab")

    X = np.concatenate([lab(r) for r in refs])
    model = GaussianMixture(4, covariance_type="full", random_state=0).fit(X)
    threshold = np.quantile(-model.score_samples(X), 0.999)
    tp = fp = fn = hit = painted = 0
    for image, masks in defective:
        pred = (-model.score_samples(lab(image))).reshape(image.shape[:2]) > threshold
        truth = np.any(masks, axis=0)
        tp, fp, fn = tp + int((pred & truth).sum()), fp + int((pred & ~truth).sum()), fn + int((~pred & truth).sum())
        painted += len(masks)
        hit += sum(bool(pred[m].any()) for m in masks)
    false = [ndimage.label((-model.score_samples(lab(g))).reshape(g.shape[:2]) > threshold, np.ones((3, 3)))[1] for g in good]
    f1 = 2 * tp / max(2 * tp + fp + fn, 1)
    print(f"\nscikit-learn GaussianMixture(4) on Lab, 99.9th-percentile threshold: pixel F1 {f1:.3f}, "
          f"{hit}/{painted} defects found, false regions per defect-free image {np.mean(false):.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images")
    parser.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                        help="an Inspector setting (repeatable), e.g. feature_set=color+texture")
    parser.add_argument("--no-tiles", action="store_true", help="skip the Magnetic Tile images")
    args = parser.parse_args()
    settings = bench_tiles.parse_settings(args.setting)
    n_defective = 6 if args.quick else 20
    refs = [np.clip(surface(s), 0, 255).astype(np.uint8) for s in (1, 2, 3)]
    start = time.perf_counter()
    inspector = Inspector(**settings).fit(refs)
    print(f"fit on 3 references (256 x 256): {time.perf_counter() - start:.2f} s, K = "
          f"{inspector.segmenter_.n_components} chosen by {inspector.params.k_criterion}, image threshold "
          f"{inspector.image_threshold_:.3f} (false-reject rate {inspector.false_reject_rate:g}), pixel threshold "
          f"{inspector.threshold_:.3f} (false-alarm rate {inspector.false_alarm_rate:g}), min area {inspector.min_area}")

    defective = [paint_defects(surface(1000 + i), i, faint=bool(i % 2)) for i in range(n_defective)]
    scores, truths = [], []
    hit, painted, region_true, region_all, tp, fp, fn, failed = 0, 0, 0, 0, 0, 0, 0, 0
    extra_width = []
    for image, masks in defective:
        result = inspector.inspect(image)
        truth = np.any(masks, axis=0)
        scores.append(result.score.ravel())
        truths.append(truth.ravel())
        painted += len(masks)
        hit += sum(bool(result.mask[m].any()) for m in masks)
        for r in result.regions:
            x, y, w, h = r.bbox
            region_all += 1
            region_true += bool(truth[y:y + h, x:x + w].any())
        tp += int((result.mask & truth).sum())
        fp += int((result.mask & ~truth).sum())
        fn += int((~result.mask & truth).sum())
        failed += not result.passed
        # The scratch's mask: its pixels within 6 pixels of the painted
        # scratch (other defects left out), per column, beyond the scratch's own.
        scratch = masks[1]
        near = ndimage.binary_dilation(scratch, iterations=6) & ~np.any([m for j, m in enumerate(masks) if j != 1], axis=0)
        columns = int(np.any(scratch, axis=0).sum())
        extra_width.append(float((result.mask & near).sum() - scratch.sum()) / columns)
    scores, truths = np.concatenate(scores), np.concatenate(truths)
    inspected = np.isfinite(scores)  # a border margin is not scored
    pixel_auroc = auroc(scores[inspected], truths[inspected])
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    print(f"\n{n_defective} defective surfaces ({painted} painted defects, half of the images faint):")
    print(f"  pixel AUROC {pixel_auroc:.4f}")
    print(f"  pixels of the defect masks: precision {precision:.3f}, recall {recall:.3f}, F1 {f1:.3f}")
    print(f"  scratch masks wider than the scratch by {np.mean(extra_width):+.2f} px on average "
          f"(most {max(extra_width):+.2f})")
    print(f"  image verdicts: {failed} of {n_defective} defective images fail")
    print(f"  regions: recall {hit / painted:.3f} ({hit}/{painted} defects found), "
          f"precision {region_true / max(region_all, 1):.3f} ({region_true}/{region_all} regions on a defect)")
    good = [np.clip(surface(s), 0, 255).astype(np.uint8) for s in range(5000, 5000 + (5 if args.quick else 20))]
    results = [inspector.inspect(g) for g in good]
    false = [len(r.regions) for r in results]
    rejected = sum(not r.passed for r in results)
    flagged = statistics.mean(float(np.nanmean(r.raw_score > r.pixel_threshold)) for r in results)
    print(f"  defect-free surfaces: {rejected} of {len(good)} fail (false-reject rate {inspector.false_reject_rate:g}); "
          f"false regions per image mean {np.mean(false):.2f}, max {max(false)}; "
          f"pixels above the pixel threshold {flagged:.5f} (false-alarm rate {inspector.false_alarm_rate:g})")

    sklearn_baseline(refs, defective, good)

    big = [paint_defects(surface(2000 + i, size=1024), i)[0] for i in range(2 if args.quick else 6)]
    inspector.inspect(big[0])  # warm
    start = time.perf_counter()
    for image in big:
        inspector.inspect(image)
    seconds = time.perf_counter() - start
    print(f"\nbatch of {len(big)} 1-megapixel images (1024 x 1024): {len(big) / seconds:.2f} images/s "
          f"({seconds / len(big) * 1000:.0f} ms each, in one process)")

    if not args.no_tiles and bench_tiles.DEFAULT_DATA.is_dir():
        print("\nMagnetic Tile (real parts):", flush=True)
        bench_tiles.main(["--quiet", *(["--quick"] if args.quick else []), *[f"--setting={s}" for s in args.setting]])


if __name__ == "__main__":
    main()
