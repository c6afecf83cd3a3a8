"""Segmentation quality on real photos with human ground truth, beside scikit-learn.

What it measures: how well each method's segmentation of a photo agrees with
people's segmentations of the same photo, and how long it takes.

* Adjusted Rand index (ARI, higher is better, 1 = identical partitions, about
  0 = chance), probabilistic Rand index (PRI: the fraction of pixel pairs on
  which the segmentation and a person agree about "same segment" or
  "different segments", higher is better) and variation of information (VoI,
  H(A) + H(B) - 2 I(A; B) in nats, lower is better). All three are computed
  exactly from the contingency table of the two label maps (no pixel pairs
  are enumerated), averaged over the people who segmented the photo, then
  over the photos.
* Seconds per photo (median and mean) of the segmentation itself, from the
  decoded uint8 RGB array to the label map (colour conversion, blur, fit and
  prediction included; JPEG decoding excluded). Every method first runs once
  on a tiny image in each process, so compilation and imports are not timed.

Methods (K = 6 components unless ``-k`` says otherwise, seed 0):

* ``sklearn-lab``: sklearn.mixture.GaussianMixture(K, covariance_type="full")
  fitted on every pixel's Lab colour (gmmseg's Lab scaling), labels = predict:
  the 20-line scikit-learn script.
* ``sklearn-blur-lab``: the same after a Gaussian blur of the RGB image
  (``--blur-sigma``, default 1 pixel): a hand-tuned scikit-learn script.
* ``gmmseg-previous``: gmmseg.Segmenter with the settings that reproduce its
  earlier behaviour (full covariance, Lab, no position features, no
  smoothing, 100 iterations, tol 1e-3, one k-means start, every pixel).
  Settings this version of gmmseg does not have are left out.
* ``gmmseg-defaults``: gmmseg.Segmenter(n_components=K, random_state=0).
* any ``--config NAME:key=value,...``: Segmenter(n_components=K,
  random_state=0, **settings); values are read as int, float, bool, None or
  else a string.

A synthetic set is scored as well: ten 160 x 160 "noisy regions" images
(Voronoi regions of flat colours with Gaussian noise, 3-7 regions), each
segmented with K = its true number of regions (mean and lowest ARI).

Data: the first 40 photos of the BSDS500 train split with their 4-9 human
segmentations each, read from ``../shared/data/bsds500-train`` next to the
repository (``--data``); never copied into the repository. BSDS500: P.
Arbelaez, M. Maire, C. Fowlkes, J. Malik, "Contour Detection and Hierarchical
Image Segmentation", IEEE TPAMI 33(5), 2011; for non-commercial research and
educational use.

With ``--jobs N`` > 1 the photos are shared among N worker processes; each
worker runs gmmseg with one thread (GMMSEG_NUM_THREADS=1) and BLAS with one
thread, so the timings are single-threaded for every method.

Usage:
    python benchmarks/bench_quality.py [--data DIR] [-k 6] [--limit N] [--jobs N]
        [--only NAME,NAME] [--config NAME:key=value,...] [--blur-sigma 1.0]
        [--skip-bsds] [--skip-synthetic] [--json PATH] [--quiet]

Example:
    python benchmarks/bench_quality.py --jobs 2 --config smooth:smoothing=1.0 --json quality.json
"""

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

# gmmseg is imported inside functions only: a worker process must set
# GMMSEG_NUM_THREADS before its first import of gmmseg.

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "bsds500-train"

#: Settings that reproduce gmmseg's earlier behaviour. Only the keys this
#: version of gmmseg knows are passed (n_starts and spatial_em may not exist).
PREVIOUS = dict(
    covariance_type="full",
    color_space="lab",
    spatial_weight=0.0,
    smoothing=0.0,
    max_iter=100,
    tol=1e-3,
    n_init=1,
    init_params="kmeans",
    max_samples=None,
    n_starts=1,
    spatial_em=False,
)

SKLEARN_METHODS = ("sklearn-lab", "sklearn-blur-lab")
BASELINES = SKLEARN_METHODS

SYNTHETIC_SIZE = 160
SYNTHETIC_SEEDS = range(10)
PALETTE = np.array(
    [
        [0.85, 0.2, 0.2],
        [0.2, 0.7, 0.25],
        [0.2, 0.3, 0.85],
        [0.9, 0.85, 0.2],
        [0.6, 0.3, 0.7],
        [0.3, 0.8, 0.8],
        [0.5, 0.5, 0.5],
    ]
)


# ---------------------------------------------------------------------------
# Scores


def contingency_table(a, b):
    """Counts n_ij of pixels with label i in ``a`` and label j in ``b``."""
    _, ia = np.unique(np.ravel(a), return_inverse=True)
    _, ib = np.unique(np.ravel(b), return_inverse=True)
    ia = ia.ravel()
    ib = ib.ravel()
    if ia.shape != ib.shape:
        raise ValueError(f"label maps of different sizes: {np.size(a)} and {np.size(b)} pixels")
    na, nb = int(ia.max()) + 1, int(ib.max()) + 1
    return np.bincount(ia * nb + ib, minlength=na * nb).reshape(na, nb)


def _pairs(counts):
    """Sum over the counts of C(n, 2), as an exact Python int."""
    counts = np.asarray(counts, dtype=np.int64)
    return int((counts * (counts - 1) // 2).sum())


def _entropy(counts, n):
    p = counts[counts > 0] / n
    return float(-(p * np.log(p)).sum())


def partition_scores(table):
    """ARI, PRI (Rand index) and VoI (nats) of two partitions from their contingency table."""
    table = np.asarray(table, dtype=np.int64)
    n = int(table.sum())
    rows, cols = table.sum(axis=1), table.sum(axis=0)
    total = n * (n - 1) // 2
    same_both = _pairs(table)
    same_a = _pairs(rows)
    same_b = _pairs(cols)
    # Pairs agreed on: together in both, plus apart in both.
    pri = (total + 2 * same_both - same_a - same_b) / total if total else 1.0
    # ARI = (index - expected) / (max - expected), multiplied through by 2 * total (exact integers).
    numerator = 2 * (same_both * total - same_a * same_b)
    denominator = total * (same_a + same_b) - 2 * same_a * same_b
    ari = numerator / denominator if denominator else 1.0
    h_joint = _entropy(table.ravel(), n)
    voi = max(2.0 * h_joint - _entropy(rows, n) - _entropy(cols, n), 0.0)
    return {"ari": float(ari), "pri": float(pri), "voi": float(voi)}


def score_against(labels, truths):
    """Scores of a label map against each ground truth, and their means."""
    per_person = [partition_scores(contingency_table(labels, truth)) for truth in truths]
    means = {key: float(np.mean([s[key] for s in per_person])) for key in ("ari", "pri", "voi")}
    means["per_person"] = {key: [s[key] for s in per_person] for key in ("ari", "pri", "voi")}
    return means


# ---------------------------------------------------------------------------
# Images


def noisy_regions(size, n_regions, noise, seed):
    """Voronoi regions of flat palette colours plus Gaussian noise: (uint8 RGB image, true labels)."""
    rng = np.random.RandomState(seed)
    centres = rng.rand(n_regions, 2) * size
    yy, xx = np.mgrid[:size, :size]
    d = (yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2
    truth = d.argmin(axis=2)
    img = np.clip(PALETTE[:n_regions][truth] + rng.normal(scale=noise, size=(size, size, 3)), 0, 1)
    return (img * 255 + 0.5).astype(np.uint8), truth


def synthetic_spec(seed):
    return {"seed": seed, "n_regions": 3 + seed % 5, "noise": 0.16 if seed % 2 else 0.12}


def load_photo(image_path, truth_path):
    """(uint8 RGB array, list of human label maps)."""
    from PIL import Image
    from scipy.io import loadmat

    with Image.open(image_path) as im:
        rgb = np.asarray(im.convert("RGB"))
    people = loadmat(truth_path)["groundTruth"][0]
    truths = [np.asarray(person["Segmentation"][0, 0]) for person in people]
    for truth in truths:
        if truth.shape != rgb.shape[:2]:
            raise ValueError(f"{truth_path}: ground truth {truth.shape} does not match image {rgb.shape[:2]}")
    return rgb, truths


def find_photos(folder):
    """Sorted (id, image path, ground-truth path) of the data folder, or an error message."""
    images, truths = folder / "images", folder / "groundTruth"
    if not images.is_dir() or not truths.is_dir():
        return None, f"no BSDS500 data in {folder} (expected images/ and groundTruth/; give --data DIR)"
    photos = []
    for path in sorted(images.glob("*.jpg")):
        mat = truths / f"{path.stem}.mat"
        if not mat.is_file():
            return None, f"{path.name} has no ground truth {mat}"
        photos.append((path.stem, str(path), str(mat)))
    if not photos:
        return None, f"no .jpg photos in {images}"
    return photos, None


# ---------------------------------------------------------------------------
# Methods: (name, kind, settings); kind is "sklearn" or "gmmseg".


def _sklearn_labels(rgb, k, blur_sigma):
    from scipy.ndimage import gaussian_filter
    from sklearn.mixture import GaussianMixture

    from gmmseg.features import color_features

    pixels = rgb.astype(np.float64) / 255.0
    if blur_sigma is not None:
        pixels = np.stack([gaussian_filter(pixels[..., c], blur_sigma) for c in range(3)], axis=-1)
    X = color_features(pixels.reshape(-1, 3), "lab")
    gm = GaussianMixture(k, covariance_type="full", random_state=0)
    return gm.fit(X).predict(X).reshape(rgb.shape[:2])


def _gmmseg_labels(rgb, k, settings):
    import gmmseg

    options = {"random_state": 0, **settings}
    return gmmseg.Segmenter(n_components=k, **options).fit_predict(rgb).labels


def run_method(method, rgb, k, blur_sigma):
    """(label map, seconds) of one method on one image, convergence warnings silenced."""
    from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning

    from gmmseg import ConvergenceWarning as GmmsegConvergenceWarning

    name, kind, settings = method
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        warnings.simplefilter("ignore", GmmsegConvergenceWarning)
        start = time.perf_counter()
        if kind == "sklearn":
            labels = _sklearn_labels(rgb, k, blur_sigma if name == "sklearn-blur-lab" else None)
        else:
            labels = _gmmseg_labels(rgb, k, settings)
        seconds = time.perf_counter() - start
    return np.asarray(labels), seconds


_warm = set()


def warm_up(methods, blur_sigma):
    """Run each method once on a tiny image in this process (imports, kernel compilation)."""
    rgb, _ = noisy_regions(40, 3, 0.12, 123)
    for method in methods:
        if method[0] not in _warm:
            run_method(method, rgb, 3, blur_sigma)
            _warm.add(method[0])


def bsds_task(photo, methods, k, blur_sigma):
    """Every method on one BSDS photo: its record for the report."""
    warm_up(methods, blur_sigma)
    photo_id, image_path, truth_path = photo
    rgb, truths = load_photo(image_path, truth_path)
    record = {"id": photo_id, "height": rgb.shape[0], "width": rgb.shape[1], "n_people": len(truths), "results": {}}
    for method in methods:
        labels, seconds = run_method(method, rgb, k, blur_sigma)
        result = score_against(labels, truths)
        result["seconds"] = seconds
        result["n_segments"] = int(np.unique(labels).size)
        record["results"][method[0]] = result
    return record


def synthetic_task(seed, methods, blur_sigma):
    """Every method on one synthetic image, with K = its true number of regions."""
    warm_up(methods, blur_sigma)
    spec = synthetic_spec(seed)
    rgb, truth = noisy_regions(SYNTHETIC_SIZE, spec["n_regions"], spec["noise"], seed)
    record = {**spec, "size": SYNTHETIC_SIZE, "results": {}}
    for method in methods:
        labels, seconds = run_method(method, rgb, spec["n_regions"], blur_sigma)
        result = partition_scores(contingency_table(labels, truth))
        result["seconds"] = seconds
        record["results"][method[0]] = result
    return record


def init_worker():
    """Worker processes: one gmmseg thread (set before gmmseg is imported) and one BLAS thread."""
    os.environ["GMMSEG_NUM_THREADS"] = "1"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(1)


# ---------------------------------------------------------------------------
# Command line


def parse_value(text):
    """A --config value: bool, None, int, float, else the string itself."""
    word = text.strip()
    if word.lower() in ("true", "false"):
        return word.lower() == "true"
    if word.lower() in ("none", "null"):
        return None
    for convert in (int, float):
        try:
            return convert(word)
        except ValueError:
            pass
    return word


def parse_config(text):
    """'NAME:key=value,key=value' -> (name, settings); ValueError if malformed."""
    name, colon, rest = text.partition(":")
    name = name.strip()
    if not colon or not name or "," in name:
        raise ValueError(f"--config {text!r}: expected NAME:key=value,key=value")
    settings = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"--config {text!r}: {item!r} is not key=value")
        settings[key.strip()] = parse_value(value)
    return name, settings


def build_methods(args, parser):
    """The methods to run, in order, and their resolved gmmseg settings (for the JSON report)."""
    from gmmseg.params import SegmenterParams

    known = SegmenterParams.names()
    previous = {key: value for key, value in PREVIOUS.items() if key in known}
    dropped = [key for key in PREVIOUS if key not in known]
    methods = [
        ("sklearn-lab", "sklearn", {}),
        ("sklearn-blur-lab", "sklearn", {"blur_sigma": args.blur_sigma}),
        ("gmmseg-previous", "gmmseg", previous),
        ("gmmseg-defaults", "gmmseg", {}),
    ]
    for text in args.config:
        try:
            name, settings = parse_config(text)
        except ValueError as exc:
            parser.error(str(exc))
        if any(name == m[0] for m in methods):
            parser.error(f"--config {text!r}: the name {name!r} is already taken")
        if "n_components" in settings:
            parser.error(f"--config {text!r}: K is set by -k (and by the true region count on synthetic images)")
        methods.append((name, "gmmseg", settings))
    resolved = {}
    for name, kind, settings in methods:
        if kind != "gmmseg":
            continue
        try:
            params = SegmenterParams.from_dict({"n_components": args.k, "random_state": 0, **settings})
        except ValueError as exc:
            parser.error(f"{name}: {exc}")
        resolved[name] = params.to_dict()
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = [w for w in wanted if not any(w == m[0] for m in methods)]
        if unknown:
            parser.error(f"--only: unknown method(s) {', '.join(unknown)}; the methods are {', '.join(m[0] for m in methods)}")
        methods = [m for m in methods if m[0] in wanted]
    return methods, resolved, dropped


def run_tasks(pool, func, items, extra, label, quiet, describe):
    """Run func(item, *extra) for every item (in the pool if any); records in item order."""
    records = [None] * len(items)
    start = time.perf_counter()
    if pool is None:
        done = ((i, func(item, *extra)) for i, item in enumerate(items))
    else:
        futures = {pool.submit(func, item, *extra): i for i, item in enumerate(items)}
        done = ((futures[f], f.result()) for f in as_completed(futures))
    for count, (index, record) in enumerate(done, 1):
        records[index] = record
        if not quiet:
            width = len(str(len(items)))
            print(f"[{label} {count:{width}}/{len(items)} {time.perf_counter() - start:6.0f} s] {describe(record)}", file=sys.stderr, flush=True)
    return records


def describe_record(name_key):
    def describe(record):
        scores = " ".join(f"{r['ari']:.2f}" for r in record["results"].values())
        return f"{record[name_key]}: ARI {scores}"

    return describe


def column(records, method, key):
    return np.array([r["results"][method][key] for r in records], dtype=np.float64)


def format_table(header, rows):
    """Aligned text: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [str(row[0]).ljust(widths[0])] + [str(cell).rjust(w) for cell, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def summarise(methods, bsds, synthetic):
    """Summary numbers per method (for the tables and the JSON report)."""
    summary = {}
    for name, _, _ in methods:
        entry = {}
        if bsds:
            seconds = column(bsds, name, "seconds")
            entry["bsds"] = {
                "mean_ari": float(column(bsds, name, "ari").mean()),
                "mean_pri": float(column(bsds, name, "pri").mean()),
                "mean_voi": float(column(bsds, name, "voi").mean()),
                "median_seconds": float(np.median(seconds)),
                "mean_seconds": float(seconds.mean()),
            }
        if synthetic:
            ari = column(synthetic, name, "ari")
            entry["synthetic"] = {
                "mean_ari": float(ari.mean()),
                "min_ari": float(ari.min()),
                "median_seconds": float(np.median(column(synthetic, name, "seconds"))),
            }
        summary[name] = entry
    return summary


def differences(methods, records, set_name, unit):
    """Lines 'gmmseg method - baseline: +0.051 ARI (higher on 25/40 photos)'."""
    names = [m[0] for m in methods]
    lines = []
    for name, kind, _ in methods:
        if kind != "gmmseg":
            continue
        for base in BASELINES:
            if base not in names:
                continue
            ours, theirs = column(records, name, "ari"), column(records, base, "ari")
            diff = ours.mean() - theirs.mean()
            lines.append(f"{name} - {base}: {diff:+.3f} ARI ({set_name}; higher on {int((ours > theirs).sum())}/{len(records)} {unit})")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="See the module docstring for what is measured and where the data comes from.",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"BSDS500 folder with images/ and groundTruth/ (default: {DEFAULT_DATA})")
    parser.add_argument("-k", type=int, default=6, help="components per photo (default 6; synthetic images use their true region count)")
    parser.add_argument("--blur-sigma", type=float, default=1.0, help="Gaussian blur (pixels) of sklearn-blur-lab (default 1.0)")
    parser.add_argument("--config", action="append", default=[], metavar="NAME:key=value,...", help="another gmmseg configuration (repeatable)")
    parser.add_argument("--only", metavar="NAME,NAME", help="run only these methods")
    parser.add_argument("--limit", type=int, help="use only the first N photos")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--skip-bsds", action="store_true", help="skip the BSDS500 photos")
    parser.add_argument("--skip-synthetic", action="store_true", help="skip the synthetic images")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every per-photo number to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("-k must be at least 1")
    if args.blur_sigma < 0:
        parser.error("--blur-sigma must be >= 0")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.skip_bsds and args.skip_synthetic:
        parser.error("--skip-bsds and --skip-synthetic together leave nothing to do")

    photos = []
    if not args.skip_bsds:
        photos, problem = find_photos(args.data)
        if problem:
            print(f"bench_quality: {problem}", file=sys.stderr)
            return 2
        photos = photos[: args.limit]
    seeds = [] if args.skip_synthetic else list(SYNTHETIC_SEEDS)

    methods, resolved, dropped = build_methods(args, parser)
    import sklearn

    import gmmseg

    if not args.quiet:
        if dropped and any(m[0] == "gmmseg-previous" for m in methods):
            verb = "is not a setting" if len(dropped) == 1 else "are not settings"
            print(f"gmmseg-previous: {', '.join(dropped)} {verb} of this gmmseg; left out", file=sys.stderr)
        print(f"{len(photos)} photos, {len(seeds)} synthetic images, {len(methods)} methods ({', '.join(m[0] for m in methods)}), "
              f"{args.jobs} job(s); progress lines give each method's ARI in that order", file=sys.stderr)

    wall = time.perf_counter()
    pool = None
    if args.jobs > 1:
        # Fresh interpreters: gmmseg and BLAS read their thread settings on import.
        pool = ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker)
    try:
        bsds = run_tasks(pool, bsds_task, photos, (methods, args.k, args.blur_sigma), "bsds", args.quiet, describe_record("id")) if photos else []
        synthetic = run_tasks(pool, synthetic_task, seeds, (methods, args.blur_sigma), "synth", args.quiet, describe_record("seed")) if seeds else []
    except KeyboardInterrupt:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        return 130
    if pool is not None:
        pool.shutdown()
    wall = time.perf_counter() - wall

    summary = summarise(methods, bsds, synthetic)
    threads = "1 thread each" if args.jobs > 1 else "all threads"
    out = []
    if bsds:
        people = [r["n_people"] for r in bsds]
        out.append(f"BSDS500 train: {len(bsds)} photos, {min(people)}-{max(people)} people each, K = {args.k}, "
                   f"{args.jobs} job(s) ({threads}); ARI, PRI higher is better, VoI (nats) lower is better")
        rows = []
        for name, _, _ in methods:
            s = summary[name]["bsds"]
            rows.append([name, f"{s['mean_ari']:.3f}", f"{s['mean_pri']:.3f}", f"{s['mean_voi']:.3f}",
                         f"{s['median_seconds']:.2f}", f"{s['mean_seconds']:.2f}"])
        out.append(format_table(["method", "mean ARI", "mean PRI", "mean VoI", "median s/photo", "mean s/photo"], rows))
        out.append("")
    if synthetic:
        out.append(f"Synthetic noisy regions: {len(synthetic)} images {SYNTHETIC_SIZE} x {SYNTHETIC_SIZE}, 3-7 regions, noise 0.12/0.16, "
                   "K = true number of regions")
        rows = []
        for name, _, _ in methods:
            s = summary[name]["synthetic"]
            rows.append([name, f"{s['mean_ari']:.3f}", f"{s['min_ari']:.3f}", f"{s['median_seconds']:.2f}"])
        out.append(format_table(["method", "mean ARI", "min ARI", "median s/image"], rows))
        out.append("")
    diff_lines = []
    if bsds:
        diff_lines += differences(methods, bsds, "BSDS500", "photos")
    if synthetic:
        diff_lines += differences(methods, synthetic, "synthetic", "images")
    if diff_lines:
        out.append("Mean ARI differences:")
        out.extend(diff_lines)
    print("\n".join(out).rstrip())
    if not args.quiet:
        print(f"wall time {wall:.0f} s", file=sys.stderr)

    if args.json:
        report = {
            "settings": {
                "data": str(args.data) if photos else None,
                "k": args.k,
                "blur_sigma": args.blur_sigma,
                "limit": args.limit,
                "jobs": args.jobs,
                "wall_seconds": wall,
                "gmmseg_version": gmmseg.__version__,
                "sklearn_version": sklearn.__version__,
                "numpy_version": np.__version__,
                "python": platform.python_version(),
            },
            "methods": {
                name: {"kind": kind, "settings": settings, **({"resolved_settings": resolved[name]} if name in resolved else {})}
                for name, kind, settings in methods
            },
            "summary": summary,
            "bsds": bsds,
            "synthetic": synthetic,
        }
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
