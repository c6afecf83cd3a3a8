"""Fitting one Segmenter on many 1-megapixel references: seconds and peak memory.

What it measures. ``Segmenter(...).fit(paths)`` on the first 10, 100 and
200 (``--counts``) of a folder of 1-megapixel PNG references, each fit in a
fresh child process: its wall time (the fit alone, after imports and a
warm-up fit on a small image that compiles or loads every kernel) and the
child's peak resident memory during the fit (``ru_maxrss`` from
``os.wait4``; the child resets its high-water mark after the warm-up, by
``/proc/self/clear_refs``, so that compiling does not hide the fit's peak),
beside the child's resident memory when the fit starts (Python, NumPy,
Numba and the kernels) and the sum of the references' decoded float32
pixels (what holding them all would cost).

Configurations (all ``spatial_weight=0``: positions are refused for
several images; ``n_components=4``, ``random_state=0``):

- ``colour``: colour features at their defaults, ``smoothing=0``,
  ``max_samples`` none: the exact merged distinct-colour table.
- ``colour+prior``: the same with the spatial prior (``smoothing=2``, the
  default): the fit grid's step needs every mask, so every file is read
  twice.
- ``texture``: ``feature_set="color+texture"``, ``smoothing=0``, with
  ``max_samples`` set (``--texture-max-samples``, default 1,000,000): without
  it the training rows are every pixel's features (3 colour and 15 texture
  float32 with the default filter bank: 14 GB at 200 megapixels).

``--old REV`` runs the same fits on the code of a git revision (for example
``eb1539d``, the last one before the streamed fit) for the counts up to ``--old-max-count``
(default 100; it holds every image and every pixel's rows: about 16 GB for
100 references with texture), ``--old-only`` without the current code's.

The references: real photos, ``../shared/data/bsds500-train/images`` (read
there, never copied into the repository), four of them (seeded choice)
resized to 500 x 500 and tiled 2 x 2, times a per-reference gain in
[0.85, 1.15] per channel so that references differ as real ones do;
``--synthetic`` draws noisy colour blocks instead.

Usage:
    python benchmarks/bench_refs.py [--counts 10,100,200] [--configs colour,colour+prior,texture]
                                    [--old REV [--old-max-count N] [--old-only]] [--synthetic] [--data DIR]
                                    [--keep DIR] [--texture-max-samples N]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "bsds500-train" / "images"
SIDE = 1000  # 1 megapixel
CONFIGS = {
    "colour": dict(smoothing=0.0),
    "colour+prior": dict(smoothing=2.0),
    "texture": dict(smoothing=0.0, feature_set="color+texture"),
}


def write_references(folder, count, data, synthetic, seed=0):
    """``count`` 1-megapixel RGB PNGs in ``folder``; returns their paths."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = [] if synthetic else sorted(Path(data).glob("*.jpg"))
    if not synthetic and not photos:
        raise SystemExit(f"no photos in {data}: give --data DIR or --synthetic")
    tiles = {}
    paths = []
    half = SIDE // 2
    for i in range(count):
        if synthetic:
            blocks = rng.integers(0, 6, size=(SIDE // 25, SIDE // 25))
            labels = np.kron(blocks, np.ones((25, 25), dtype=int))
            palette = rng.uniform(20, 235, size=(6, 3))
            img = palette[labels] + rng.normal(0, 6, (SIDE, SIDE, 3))
        else:
            img = np.empty((SIDE, SIDE, 3))
            for t, j in enumerate(rng.choice(len(photos), size=4, replace=False)):
                if j not in tiles:
                    with Image.open(photos[j]) as photo:
                        tiles[j] = np.asarray(photo.convert("RGB").resize((half, half), Image.BILINEAR), dtype=np.float64)
                y, x = divmod(t, 2)
                img[y * half:(y + 1) * half, x * half:(x + 1) * half] = tiles[j]
            img *= rng.uniform(0.85, 1.15, size=3)
        path = Path(folder) / f"ref{i:04d}.png"
        Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8)).save(path, compress_level=1)
        paths.append(path)
    return paths


def child(args):
    """Runs in a fresh process: one fit, its result as JSON on stdout."""
    import gc
    import warnings

    sys.path.insert(0, args.root)
    import gmmseg

    settings = dict(n_components=4, spatial_weight=0.0, random_state=0, **CONFIGS[args.config])
    if args.config == "texture":
        settings["max_samples"] = args.texture_max_samples
    paths = sorted(Path(args.folder).glob("ref*.png"))[: args.count]
    rows = []

    class Segmenter(gmmseg.Segmenter):
        def _fit_mixture(self, data, callback):  # notes the training rows (distinct colours or samples)
            rows.append(data.X.shape[0])
            return super()._fit_mixture(data, callback)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Warm-up: compiles (or loads) the kernels this configuration uses.
        small = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        gmmseg.Segmenter(**settings).fit([small, small[::-1]])
        gc.collect()
        try:  # the peak so far (compiling) is not the fit's: start the high-water mark again
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            print("warning: cannot reset the peak RSS; it includes the warm-up", file=sys.stderr)
        before = resident_kb()
        t0 = time.perf_counter()
        seg = Segmenter(**settings).fit(paths)
        seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "rss_before_kb": before, "n_iter": int(seg.gmm_.n_iter_), "rows": rows[-1],
                      "gmmseg": gmmseg.__file__}))


def resident_kb():
    """This process's resident memory now, in kB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_child(root, folder, count, config, texture_max_samples):
    """One fit in a child process: (result dict, the child's peak RSS in kB)."""
    command = [sys.executable, __file__, "--child", "--root", str(root), "--folder", str(folder),
               "--count", str(count), "--config", config, "--texture-max-samples", str(texture_max_samples)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the child picks its gmmseg by --root
    with tempfile.TemporaryFile() as err, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err,
                                                          env=env) as process:
        out = process.stdout.read()  # until the child exits
        # wait4 reaps the child with its own resource usage (RUSAGE_CHILDREN
        # would give the largest of all the children so far).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            err.seek(0)
            raise SystemExit(f"child failed ({config}, {count}):\n{err.read().decode()}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    return result, usage


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="10,100,200", help="numbers of references (comma-separated)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"some of {', '.join(CONFIGS)}")
    parser.add_argument("--texture-max-samples", type=int, default=1_000_000)
    parser.add_argument("--old", help="also fit with the gmmseg of this git revision (e.g. main)")
    parser.add_argument("--old-max-count", type=int, default=100)
    parser.add_argument("--old-only", action="store_true", help="with --old: only the old code's fits")
    parser.add_argument("--synthetic", action="store_true", help="synthetic references instead of photos")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder of the photos")
    parser.add_argument("--keep", help="write the references here (kept; reused when present)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    counts = [int(c) for c in args.counts.split(",")]
    configs = args.configs.split(",")
    for config in configs:
        if config not in CONFIGS:
            raise SystemExit(f"unknown configuration {config!r}; choose from {', '.join(CONFIGS)}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp) / "refs"
        folder.mkdir(parents=True, exist_ok=True)
        if len(list(folder.glob("ref*.png"))) < max(counts):
            t0 = time.perf_counter()
            write_references(folder, max(counts), args.data, args.synthetic)
            print(f"wrote {max(counts)} references of {SIDE} x {SIDE} in {time.perf_counter() - t0:.0f} s "
                  f"({'synthetic' if args.synthetic else 'BSDS500 photos, tiled'})", flush=True)
        trees = [] if args.old and args.old_only else [("streamed", ROOT)]
        if args.old:
            old = Path(tmp) / "old"
            old.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.old, "gmmseg"], capture_output=True,
                                     check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
            trees.append((f"old ({args.old})", old))
        image_mb = SIDE * SIDE * 3 * 4 / 2**20
        print(f"\n{'code':<16} {'config':<13} {'images':>6} {'fit s':>8} {'rows':>10} {'peak RSS MB':>12} {'RSS at start MB':>16} "
              f"{'sum of images MB':>17}")
        for config in configs:
            for count in counts:
                for label, root in trees:
                    if root is not ROOT and count > args.old_max_count:
                        continue
                    result, usage = run_child(root, folder, count, config, args.texture_max_samples)
                    print(f"{label:<16} {config:<13} {count:>6} {result['seconds']:>8.1f} {result['rows']:>10,} {usage.ru_maxrss / 1024:>12.0f} "
                          f"{result['rss_before_kb'] / 1024:>16.0f} {count * image_mb:>17.0f}", flush=True)
    print(f"\nrows: training rows (colour: distinct colours, with counts; colour+prior: distinct colours of the "
          f"fit grid; texture: max_samples={args.texture_max_samples:,}); sum of images: float32 RGB pixels of "
          "every reference")


if __name__ == "__main__":
    main()
