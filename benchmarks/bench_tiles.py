"""Defect inspection on real photos: the Magnetic Tile Defect images.

What it measures. Each method is fitted on defect-free reference photos
(``ref/``), then scores every pixel of the defect photos (``blowhole/ break/
crack/ fray/ uneven/``, each with a hand-drawn mask) and of other
defect-free photos (``good_test/``). Per defect kind and over all kinds:

- pixel AUROC of the score map against the masks (a seeded subsample of at
  most 2 million pixels when there are more);
- pixel precision, recall and F1 of the binary defect mask;
- defects found: a connected component of a ground-truth mask is found when
  a flagged pixel lies inside it or within 2 pixels of it (found / total);
- false regions per image: predicted connected regions (8-connected) that
  overlap no ground-truth defect pixel;
- seconds per image for the inspection (scoring, thresholding and regions;
  not the loading).

On ``good_test/``: false regions per image and the fraction of pixels flagged.

With ``--operating-points``, also for gmmseg-default: defects found, good
images failed and false regions per good image at the image thresholds of
other false-reject rates, and at the best image threshold in hindsight (the
most defects found with at most 0.5 false regions per good image, of
thresholds at and inside every gap between two images' scores): about the
most a calibration could get from this score.

Methods:

- ``gmmseg-default``: ``gmmseg.Inspector()`` at its defaults (K chosen by its
  criterion, thresholds calibrated on references held out in up to 5 folds);
  the score map is ``InspectionResult.score`` (the calibrated score) and the
  mask ``InspectionResult.mask``.
- ``sklearn-gmm``: a baseline; scikit-learn ``GaussianMixture(4, 'full',
  random_state=0)`` on the lightness (``gmmseg.features.color_features(...,
  'lab')``) of 200,000 pixels sampled from three quarters of the references;
  score = ``-score_samples``; threshold = the (1 - 1e-4) quantile of the scores
  of the other references' pixels; mask = score above it, regions smaller than
  25 pixels dropped. No smoothing.

Data: ``../shared/data/magnetic-tile`` (outside the repository; see
``../shared/data/README.md``), greyscale photos from the Magnetic Tile Defect
dataset: Y. Huang, C. Qiu, K. Yuan, "Surface defect saliency of magnetic
tile", The Visual Computer 36, 2020. The authors welcome its use with a
citation; do not copy the images into this repository.

Usage:
    python benchmarks/bench_tiles.py [--data DIR] [--quick] [--json PATH] [--quiet]
                                     [--fit-refs N] [--seed S] [--setting KEY=VALUE ...]
                                     [--operating-points]

``--quick`` uses 5 references and 3 images per defect kind (a seeded random
choice). Progress goes to stderr (unless ``--quiet``), tables to stdout.
"""

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

import gmmseg
from gmmseg.features import color_features

KINDS = ("blowhole", "break", "crack", "fray", "uneven")
DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "magnetic-tile"
EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity, as gmmseg's regions
MAX_AUROC_PIXELS = 2_000_000
SK_SAMPLE = 200_000
SK_RATE = 1e-4
SK_MIN_AREA = 25
FOUND_TOLERANCE = 2  # pixels (chessboard distance) around a ground-truth defect


def log(args, message):
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


def image_files(folder):
    return sorted(p for p in folder.glob("*.png") if not p.stem.endswith("_mask"))


def load_mask(path):
    return np.asarray(Image.open(path).convert("L")) > 127


def pick(rng, items, n):
    """A seeded choice of n items, kept in name order."""
    if n >= len(items):
        return list(items)
    chosen = sorted(rng.choice(len(items), size=n, replace=False))
    return [items[i] for i in chosen]


def load_data(args):
    """References, good_test images and the defect images with their masks."""
    root = Path(args.data)
    missing = [name for name in ("ref", "good_test", *KINDS) if not (root / name).is_dir()]
    if not root.is_dir() or missing:
        what = root if not root.is_dir() else root / missing[0]
        print(f"bench_tiles: data folder not found: {what} (give --data DIR)", file=sys.stderr)
        sys.exit(2)
    rng = np.random.default_rng(args.seed)
    refs = image_files(root / "ref")
    n_refs = 5 if args.quick else len(refs)
    if args.fit_refs:
        n_refs = min(n_refs, args.fit_refs)
    refs = pick(rng, refs, n_refs)
    good = image_files(root / "good_test")
    data = {
        "ref": [(p, gmmseg.load_image(p), None) for p in refs],
        "good_test": [(p, gmmseg.load_image(p), None) for p in good],
    }
    for kind in KINDS:
        files = pick(rng, image_files(root / kind), 3 if args.quick else 10**9)
        entries = []
        for p in files:
            image = gmmseg.load_image(p)
            truth = load_mask(p.with_name(p.stem + "_mask.png"))
            if truth.shape != image.mask.shape:
                raise SystemExit(f"bench_tiles: {p.name}: mask {truth.shape} does not match image {image.mask.shape}")
            entries.append((p, image, truth))
        data[kind] = entries
    return data


# ----------------------------------------------------------------------
# methods: fit(references) -> (inspect(image) -> (score map, bool mask), info)


def fit_gmmseg_default(refs, args):
    start = time.perf_counter()
    inspector = gmmseg.Inspector(**args.settings).fit([image for _, image, _ in refs])
    seconds = time.perf_counter() - start
    selection = getattr(inspector, "k_selection_", None)
    info = {
        "fit_seconds": seconds,
        "fit_references": [p.name for p, _, _ in refs],
        "calibration": f"fit references held out in {inspector.n_folds_} folds; image threshold "
                       f"{inspector.image_threshold_:.3g} for a false-reject rate of {inspector.false_reject_rate:g}",
        "k": int(inspector.segmenter_.n_components),
        "k_rule": selection.rule if selection is not None else "given",
        "k_criterion": selection.criterion if selection is not None else "",
        "threshold": float(inspector.threshold_),
        "false_alarm_rate": float(inspector.false_alarm_rate),
        "image_threshold": float(inspector.image_threshold_),
        "false_reject_rate": float(inspector.false_reject_rate),
        "smoothing_sigma": float(inspector.smoothing_sigma),
        "min_area": int(inspector.min_area),
    }

    def inspect(image):
        result = inspector.inspect(image)
        return result.score, result.mask, result.image_score

    inspect.inspector = inspector  # for --operating-points
    return inspect, info


def lightness(image):
    """One feature column per used pixel: CIE L*/100 of the grey value."""
    pixels = image.pixels.reshape(-1, image.pixels.shape[-1])[image.mask.ravel()]
    if pixels.shape[1] == 1:
        return color_features(pixels, "lab")
    return color_features(pixels, "lab")[:, :1]


def fit_sklearn_gmm(refs, args):
    from sklearn.mixture import GaussianMixture

    start = time.perf_counter()
    n_cal = max(1, round(len(refs) / 4))
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(refs))
    cal_refs = [refs[i] for i in sorted(order[:n_cal])]
    fit_refs = [refs[i] for i in sorted(order[n_cal:])] or cal_refs
    features = np.concatenate([lightness(image) for _, image, _ in fit_refs])
    if len(features) > SK_SAMPLE:
        features = features[rng.choice(len(features), size=SK_SAMPLE, replace=False)]
    model = GaussianMixture(n_components=4, covariance_type="full", random_state=0).fit(features)
    calibration = np.concatenate([-model.score_samples(lightness(image)) for _, image, _ in cal_refs])
    threshold = float(np.quantile(calibration, 1.0 - SK_RATE))
    seconds = time.perf_counter() - start
    info = {
        "fit_seconds": seconds,
        "fit_references": [p.name for p, _, _ in fit_refs],
        "calibration_references": [p.name for p, _, _ in cal_refs],
        "calibration": f"(1 - {SK_RATE:g}) quantile of {len(calibration)} held-out reference pixels",
        "k": 4,
        "fit_pixels": int(len(features)),
        "converged": bool(model.converged_),
        "threshold": threshold,
        "false_alarm_rate": SK_RATE,
        "min_area": SK_MIN_AREA,
    }

    def inspect(image):
        score = np.full(image.mask.shape, np.nan, dtype=np.float32)
        score[image.mask] = -model.score_samples(lightness(image))
        with np.errstate(invalid="ignore"):
            above = score > threshold
        labels, n = ndimage.label(above, structure=EIGHT)
        if n:
            areas = np.bincount(labels.ravel(), minlength=n + 1)
            keep = areas >= SK_MIN_AREA
            keep[0] = False
            above = keep[labels]
        # Image score: the SK_MIN_AREA-th highest pixel score (a region of
        # that size above the threshold fails the image).
        finite = np.sort(score[np.isfinite(score)])
        return score, above, float(finite[-min(SK_MIN_AREA, finite.size)])

    return inspect, info


METHODS = {"gmmseg-default": fit_gmmseg_default, "sklearn-gmm": fit_sklearn_gmm}


# ----------------------------------------------------------------------
# metrics


def region_counts(pred, truth):
    """Defects found (with FOUND_TOLERANCE), defects, false regions and
    regions of one mask; ``truth`` None for a defect-free image (every
    region is false)."""
    pred_labels, n_pred = ndimage.label(pred, structure=EIGHT)
    if truth is None:
        return 0, 0, int(n_pred), int(n_pred)
    false_regions = 0
    if n_pred:
        touches = ndimage.maximum(truth, pred_labels, np.arange(1, n_pred + 1))
        false_regions = int(n_pred - np.count_nonzero(touches))
    truth_labels, n_truth = ndimage.label(truth, structure=EIGHT)
    near = ndimage.binary_dilation(pred, structure=EIGHT, iterations=FOUND_TOLERANCE) if FOUND_TOLERANCE else pred
    found = int(np.count_nonzero(ndimage.maximum(near, truth_labels, np.arange(1, n_truth + 1)))) if n_truth else 0
    return found, int(n_truth), false_regions, int(n_pred)


def image_metrics(score, pred, truth):
    """Per-image counts; truth None for a defect-free image."""
    finite = np.isfinite(score)
    if truth is not None:
        truth = truth & finite
    found, defects, false_regions, regions = region_counts(pred, truth)
    row = {
        "pixels": int(finite.sum()),
        "flagged": int(pred.sum()),
        "regions": regions,
        "false_regions": false_regions,
    }
    if truth is None:
        return row
    row["defect_pixels"] = int(truth.sum())
    row["tp"] = int((pred & truth).sum())
    row["fp"] = int((pred & ~truth).sum())
    row["fn"] = int((~pred & truth).sum())
    row["found"], row["defects"] = found, defects
    row["auroc"] = auroc(score[finite], truth[finite])
    return row


def auroc(scores, truth, rng=None):
    """ROC AUC, NaN when only one class is present; subsampled above the cap."""
    from sklearn.metrics import roc_auc_score

    if truth.all() or not truth.any():
        return math.nan
    if rng is not None and len(scores) > MAX_AUROC_PIXELS:
        index = rng.choice(len(scores), size=MAX_AUROC_PIXELS, replace=False)
        scores, truth = scores[index], truth[index]
        if truth.all() or not truth.any():
            return math.nan
    return float(roc_auc_score(truth, scores))


def summarise(rows, scores, truths, rng):
    """Pooled numbers over a set of defect images."""
    tp = sum(r["tp"] for r in rows)
    fp = sum(r["fp"] for r in rows)
    fn = sum(r["fn"] for r in rows)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "images": len(rows),
        "auroc": auroc(np.concatenate(scores), np.concatenate(truths), rng),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "found": sum(r["found"] for r in rows),
        "defects": sum(r["defects"] for r in rows),
        "false_regions_per_image": sum(r["false_regions"] for r in rows) / max(len(rows), 1),
        "seconds_per_image": sum(r["seconds"] for r in rows) / max(len(rows), 1),
    }


def evaluate(name, data, args):
    log(args, f"[{name}] fitting on {len(data['ref'])} references ...")
    inspect, info = METHODS[name](data["ref"], args)
    log(args, f"[{name}] fitted in {info['fit_seconds']:.1f} s (K = {info['k']}, threshold {info['threshold']:.4g})")
    rng = np.random.default_rng(args.seed)
    images, summary = [], {}
    all_scores, all_truths, all_rows = [], [], []
    for kind in KINDS:
        scores, truths, rows = [], [], []
        for i, (path, image, truth) in enumerate(data[kind], start=1):
            start = time.perf_counter()
            score, pred, image_score = inspect(image)
            seconds = time.perf_counter() - start
            row = {"kind": kind, "image": path.name, "seconds": seconds, "image_score": image_score,
                   **image_metrics(score, pred, truth)}
            rows.append(row)
            finite = np.isfinite(score)
            scores.append(score[finite].astype(np.float32))
            truths.append(truth[finite])
            log(args, f"[{name}] {kind} {i}/{len(data[kind])} {path.name}: found {row['found']}/{row['defects']}, "
                      f"false regions {row['false_regions']}, AUROC {row['auroc']:.3f}, {seconds:.2f} s")
        summary[kind] = summarise(rows, scores, truths, rng)
        images.extend(rows)
        all_scores.extend(scores)
        all_truths.extend(truths)
        all_rows.extend(rows)
    summary["all"] = summarise(all_rows, all_scores, all_truths, rng)
    good_rows = []
    for i, (path, image, _) in enumerate(data["good_test"], start=1):
        start = time.perf_counter()
        score, pred, image_score = inspect(image)
        seconds = time.perf_counter() - start
        row = {"kind": "good_test", "image": path.name, "seconds": seconds, "image_score": image_score,
               **image_metrics(score, pred, None)}
        good_rows.append(row)
        log(args, f"[{name}] good_test {i}/{len(data['good_test'])} {path.name}: false regions {row['false_regions']}, "
                  f"flagged {row['flagged']} px")
    images.extend(good_rows)
    n_good = max(len(good_rows), 1)
    good = {
        "images": len(good_rows),
        "false_regions_per_image": sum(r["false_regions"] for r in good_rows) / n_good,
        "images_failed": sum(r["regions"] > 0 for r in good_rows),
        "flagged_fraction": sum(r["flagged"] for r in good_rows) / max(sum(r["pixels"] for r in good_rows), 1),
        "seconds_per_image": sum(r["seconds"] for r in good_rows) / n_good,
    }
    # Image AUROC: do defect images score above defect-free ones?
    image_scores = [r["image_score"] for r in all_rows] + [r["image_score"] for r in good_rows]
    is_defect = np.array([True] * len(all_rows) + [False] * len(good_rows))
    good["image_auroc"] = auroc(np.asarray(image_scores, dtype=np.float64), is_defect)
    for kind in KINDS:
        kind_rows = [r for r in all_rows if r["kind"] == kind]
        summary[kind]["image_auroc"] = auroc(
            np.asarray([r["image_score"] for r in kind_rows + good_rows], dtype=np.float64),
            np.array([True] * len(kind_rows) + [False] * len(good_rows)))
    summary["all"]["image_auroc"] = good["image_auroc"]
    summary["mean of kinds"] = {key: float(np.mean([summary[k][key] for k in KINDS]))
                                for key in ("auroc", "image_auroc", "f1")}
    return {"info": info, "summary": summary, "good_test": good, "images": images,
            "inspector": getattr(inspect, "inspector", None)}


OPERATING_RATES = (0.05, 0.1, 0.2, 0.3, 0.4, 0.45)
FALSE_REGION_BUDGET = 0.5  # false regions per good image: issue 11's acceptance
GAP_POINTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # where in each gap between two image scores a hindsight threshold is tried


def operating_points(inspector, data, args):
    """Defects found and good images failed at other image thresholds.

    The calibrated thresholds of several false-reject rates, and the best
    threshold in hindsight: of thresholds tried at and inside every gap
    between two images' scores (``GAP_POINTS``; a failed image's regions
    depend on the threshold, not only which images fail) and above them all,
    the one finding the most defects with at most ``FALSE_REGION_BUDGET``
    false regions per good image (on a tie, the fewest false regions, then
    the fewest good images failed). It is chosen knowing the test images'
    truth, so it bounds what a calibration on references could get from
    this score: it tells a weak score from a badly placed threshold.
    """
    maps = []
    for kind in ("good_test", *KINDS):
        for _, image, truth in data[kind]:
            raw, score = inspector.score_maps(image)
            if truth is not None:
                truth = truth & np.isfinite(score)  # as image_metrics: a defect in the border margin is not counted
            image_score = inspector.find_regions(score, raw=raw, image_threshold=np.inf).image_score
            maps.append((raw, score, truth, image_score))
    n_good = len(data["good_test"])
    defects = sum(region_counts(np.zeros(t.shape, bool), t)[1] for _, _, t, _ in maps if t is not None)

    def count(image_threshold):
        """Found, good images failed, false regions per good image."""
        found = failed = false_regions = 0
        for raw, score, truth, image_score in maps:
            if not image_score > np.float32(image_threshold):
                continue  # passes: no regions
            result = inspector.find_regions(score, raw=raw, image_threshold=image_threshold)
            image_found, _, image_false, _ = region_counts(result.mask, truth)
            found += image_found
            if truth is None:
                failed += not result.passed
                false_regions += image_false
        return found, failed, false_regions / max(n_good, 1)

    def point(rate, threshold, counts):
        return {"false_reject_rate": rate, "image_threshold": threshold, "hindsight": rate is None,
                **dict(zip(("found", "good_failed", "false_regions_per_good"), counts)), "defects": defects}

    points = []
    for rate in OPERATING_RATES:
        threshold = inspector.image_threshold_for(rate)
        points.append(point(rate, threshold, count(threshold)))
    scores = np.unique(np.asarray([m[3] for m in maps], dtype=np.float32))
    scores = scores[np.isfinite(scores)]
    candidates = set()
    if scores.size:
        below = np.nextafter(scores, np.float32(-np.inf))  # just below each score: that image fails
        candidates.add(float(scores[-1]))  # nothing fails
        for low, high in zip(np.r_[below[0] - 1, scores[:-1]], below):  # each gap, the lowest below every score
            candidates.update(float(low + (high - low) * (1 - f)) for f in GAP_POINTS)
    best = None
    for threshold in sorted(candidates):
        found, failed, false_per_good = counts = count(threshold)
        if false_per_good <= FALSE_REGION_BUDGET and (best is None or (found, -false_per_good, -failed) > best[0]):
            best = ((found, -false_per_good, -failed), threshold, counts)
    if best is None:
        log(args, f"[operating points] no threshold keeps within {FALSE_REGION_BUDGET} false regions per good image")
    else:
        points.append(point(None, best[1], best[2]))
    log(args, f"[operating points] {len(candidates)} hindsight thresholds tried")
    return points


def format_operating_points(points, n_good):
    lines = ["operating points of gmmseg-default's score (image threshold re-set, same score maps):",
             f"{'image threshold':<50} {'found':>9} {'good failed':>11} {'false reg/good img':>18}"]
    for p in points:
        name = (f"hindsight best, <= {FALSE_REGION_BUDGET} false reg/good img" if p["hindsight"]
                else f"false-reject rate {p['false_reject_rate']:g}")
        name += f" ({p['image_threshold']:.3g})"
        lines.append(f"{name:<50} {p['found']:>5}/{p['defects']:<3} {p['good_failed']:>5}/{n_good:<5} "
                     f"{p['false_regions_per_good']:>18.2f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------
# output


def format_table(name, result):
    info = result["info"]
    header = (f"{'kind':<10} {'images':>6} {'AUROC':>6} {'prec':>6} {'recall':>6} {'F1':>6} {'found':>9} {'false reg/img':>13} "
              f"{'img AUROC':>9} {'s/img':>6}")
    lines = [f"{name}: fitted on {len(info['fit_references'])} references in {info['fit_seconds']:.1f} s, K = {info['k']}, "
             f"threshold {info['threshold']:.4g} ({info['calibration']})", header, "-" * len(header)]
    for kind in (*KINDS, "all"):
        s = result["summary"][kind]
        found = f"{s['found']}/{s['defects']}"
        lines.append(f"{kind:<10} {s['images']:>6} {s['auroc']:>6.3f} {s['precision']:>6.3f} {s['recall']:>6.3f} {s['f1']:>6.3f} "
                     f"{found:>9} {s['false_regions_per_image']:>13.2f} {s['image_auroc']:>9.3f} {s['seconds_per_image']:>6.3f}")
    m = result["summary"]["mean of kinds"]
    lines.append(f"{'mean of kinds':<17} {m['auroc']:>6.3f} {'':>13} {m['f1']:>6.3f} {'':>23} {m['image_auroc']:>9.3f}")
    g = result["good_test"]
    lines.append(f"good_test: {g['images']} images, {g['images_failed']} failed, false regions/img {g['false_regions_per_image']:.2f}, "
                 f"flagged pixel fraction {g['flagged_fraction']:.2e}, {g['seconds_per_image']:.3f} s/img")
    return "\n".join(lines)


def clean(value):
    """JSON-safe: NaN and infinities become null."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def parse_settings(items):
    """--setting KEY=VALUE items as Inspector settings (numbers converted)."""
    settings = {}
    for item in items:
        key, _, text = item.partition("=")
        for convert in (int, float):
            try:
                text = convert(text)
                break
            except ValueError:
                pass
        settings[key] = text
    return settings


def main(argv=None):
    """Run the benchmark; ``argv`` as on the command line (default: sys.argv)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help=f"the magnetic-tile folder (default {DEFAULT_DATA})")
    parser.add_argument("--quick", action="store_true", help="5 references and 3 images per defect kind")
    parser.add_argument("--json", metavar="PATH", help="write the per-image numbers here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--fit-refs", type=int, default=0, metavar="N", help="fit on a seeded random subset of N references")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image choices and subsamples (default 0)")
    parser.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                        help="an Inspector setting for gmmseg-default (repeatable), e.g. k_criterion=bic")
    parser.add_argument("--operating-points", action="store_true",
                        help="also: gmmseg-default's defects found and good images failed at other false-reject rates, "
                             f"and at the best threshold in hindsight with at most {FALSE_REGION_BUDGET} false regions per good image")
    args = parser.parse_args(argv)
    args.settings = parse_settings(args.setting)
    gmmseg.Inspector(**args.settings)  # unknown or bad settings: one clear error before any work

    wall = time.perf_counter()
    data = load_data(args)
    n_defect = sum(len(data[k]) for k in KINDS)
    print(f"data: {args.data} ({len(data['ref'])} references, {n_defect} defect images, {len(data['good_test'])} good_test images"
          f"{'; --quick' if args.quick else ''}{'; seeded subset of references' if args.fit_refs else ''})")
    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gmmseg.ConvergenceWarning)
        for name in METHODS:
            results[name] = evaluate(name, data, args)
            print()
            print(format_table(name, results[name]), flush=True)
            if args.operating_points and results[name]["inspector"] is not None:
                results[name]["operating_points"] = operating_points(results[name]["inspector"], data, args)
                print()
                print(format_operating_points(results[name]["operating_points"], len(data["good_test"])), flush=True)
    elapsed = time.perf_counter() - wall
    print(f"\nwall time {elapsed:.1f} s")
    if args.json:
        payload = {
            "data": str(args.data), "quick": args.quick, "seed": args.seed, "wall_seconds": elapsed,
            "gmmseg_version": gmmseg.__version__,
            "methods": {name: {key: r[key] for key in ("info", "summary", "good_test", "images", "operating_points") if key in r}
                        for name, r in results.items()},
        }
        Path(args.json).write_text(json.dumps(clean(payload), indent=1))
        log(args, f"per-image numbers written to {args.json}")


if __name__ == "__main__":
    main()
