"""How well each K criterion of select_k chooses K.

Synthetic images: Voronoi regions (3-8), each a distinct corner of the
colour cube [0.2, 0.8]^3 (so noise rarely clips), Gaussian noise 0.03 or
0.08, 120 or 400 pixels square, three seeds: is the true K chosen? Photos:
the bundled samples and the first BSDS500 training photos (from
``../shared/data/bsds500-train`` when present): which K in 1-12, and is it
the top of the range? One sweep per image gives every criterion (the rows
hold them all), with the settings given (default: gmmseg's defaults).

Usage: python benchmarks/bench_select_k.py [--quick] [--bsds N] [--setting key=value ...]
"""

import argparse
import glob
import sys
import warnings
from pathlib import Path

# The synthetic images are the tests' (tests/imagefiles.py): one generator.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from imagefiles import corner_regions_image  # noqa: E402

CRITERIA = ("bic-300", "bic", "aic")


def best_by(rows, criterion):
    key = criterion.replace("-", "_")
    return min(rows, key=lambda r: r[key])["k"]


def parse_value(text):
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"None": None, "True": True, "False": False}.get(text, text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="120-pixel images and one seed only")
    parser.add_argument("--bsds", type=int, default=10, help="BSDS500 photos to include (default 10)")
    parser.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    settings = {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.setting)}

    import gmmseg
    from gmmseg.paths import sample_images_dir

    def sweep(image, ks):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return gmmseg.select_k(image, k_range=ks, **settings).rows

    print(f"settings: {gmmseg.SegmenterParams().replace(**settings).to_dict()}")
    sizes = (120,) if args.quick else (120, 400)
    seeds = (0,) if args.quick else (0, 1, 2)
    hits = {c: [0, 0, 0] for c in CRITERIA}  # right, too many, too few
    total = 0
    for size in sizes:
        for noise in (0.03, 0.08):
            for n in range(3, 9):
                for seed in seeds:
                    rows = sweep(corner_regions_image(n, size, noise, seed), range(1, 11))
                    total += 1
                    for c in CRITERIA:
                        k = best_by(rows, c)
                        hits[c][0 if k == n else 1 if k > n else 2] += 1
    print(f"\nsynthetic: {total} images, 3-8 regions, K tried 1-10")
    print(f"{'criterion':<10} {'true K':>8} {'too many':>9} {'too few':>8}")
    for c in CRITERIA:
        right, many, few = hits[c]
        print(f"{c:<10} {right:>4}/{total:<3} {many:>9} {few:>8}")

    photos = sorted((sample_images_dir() / name) for name in ("coffee.jpg", "astronaut.jpg", "rocket.jpg", "chelsea.jpg"))
    bsds = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "bsds500-train" / "images"
    photos += [Path(p) for p in sorted(glob.glob(str(bsds / "*.jpg")))[: args.bsds]]
    print("\nphotos: K chosen in 1-12 ('^' = the top of the range)")
    print(f"{'photo':<16} " + " ".join(f"{c:>8}" for c in CRITERIA))
    at_top = {c: 0 for c in CRITERIA}
    for path in photos:
        rows = sweep(path, range(1, 13))
        chosen = {c: best_by(rows, c) for c in CRITERIA}
        for c in CRITERIA:
            at_top[c] += chosen[c] == 12
        print(f"{path.name:<16} " + " ".join(f"{chosen[c]:>7}{'^' if chosen[c] == 12 else ' '}" for c in CRITERIA))
    print("at the top: " + ", ".join(f"{c} {at_top[c]}/{len(photos)}" for c in CRITERIA))


if __name__ == "__main__":
    main()
