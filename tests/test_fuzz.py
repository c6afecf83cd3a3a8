"""Fuzz tests: hostile image and model files, loaded under a memory cap.

The files are made here, deterministically (fixed seeds); a child process
(tests/fuzzing.py) loads them with its address space capped by
``resource.setrlimit(RLIMIT_AS)`` at 2 GiB, set before gmmseg (and Numba,
Pillow, tifffile) is imported, so the cap holds for everything that reads
the files and never touches this test session.
Measured on this project: the child peaks at about 0.55 GB of address space
with every Numba kernel compiled from a cold cache, so 2 GiB leaves decoders
about 1.4 GB. ``MALLOC_ARENA_MAX`` keeps glibc from reserving 64 MB of
address space per decoding thread on machines with many cores (tifffile
decodes tiles in threads), which would eat the cap without using memory.
"""

import collections
import json
import os
import random
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from fuzzing import mutated_images, write_cases
from imagefiles import patch_tiff_tag, png16_bomb, tiff_bomb

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "fuzzing.py"
MEMORY_CAP = 2 << 30
# A hang detector, not a timing test: the slowest file measured loads in
# well under 0.1 s; this only catches a decoder that runs away.
HANG_SECONDS = 30.0


def run_child(kind, cases, folder, timeout=600):
    """Load ``cases`` [(name, bytes)] in the capped child; returns
    (completed process, one result dict per file)."""
    _, listing = write_cases(cases, folder)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               MALLOC_ARENA_MAX="2", GMMSEG_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(CHILD), kind, str(MEMORY_CAP), str(listing)], capture_output=True,
                         text=True, timeout=timeout, env=env, cwd=ROOT)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return out, rows


def _png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _hand_made_images():
    """Hostile files no random mutation is likely to make."""
    import io

    import tifffile

    def tiff(array, **options):
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, array, **options)
        return buffer.getvalue()

    tiles = tiff(np.full((64, 64), 200, np.uint8), tile=(16, 16))
    strips = tiff(np.full((64, 64, 3), 90, np.uint8), photometric="rgb", rowsperstrip=4)
    short_rows = b"".join(b"\x00" + bytes(60) for _ in range(5))
    return [
        ("bomb16.png", png16_bomb(64, 64, inflated_mib=512)),
        ("bomb-deflate.tif", tiff_bomb("zlib", inflated_mib=512)),
        ("bomb-lzma.tif", tiff_bomb("lzma", inflated_mib=64)),
        ("claims-9000.tif", patch_tiff_tag(patch_tiff_tag(tiles, 256, 9000, type_=4), 257, 9000, type_=4)),
        ("claims-80mp-strips.tif", patch_tiff_tag(patch_tiff_tag(strips, 256, 8900, type_=4), 257, 8900, type_=4)),
        ("volume.tif", tiff(np.zeros((2, 6, 5, 3), np.uint8), volumetric=True, photometric="rgb")),
        ("short-data.png", b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 20, 9000, 8, 2, 0, 0, 0))
         + _png_chunk(b"IDAT", zlib.compress(short_rows)) + _png_chunk(b"IEND", b"")),
    ]


def test_load_image_raises_only_image_load_error(tmp_path):
    """At least 300 mutated files over PNG 8/16-bit, JPEG, TIFF (8/16-bit,
    float, tiled, compressed, planar, bilevel), GIF, WebP and BMP (bit flips,
    header edits, truncation, byte runs), plus hand-made bombs: every one
    loads or raises ImageLoadError, within the memory cap, and nothing is
    written to stderr (no tifffile log lines, no warnings)."""
    cases = mutated_images(per_seed=20, seed=13) + _hand_made_images()
    out, rows = run_child("images", cases, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(rows) == len(cases) >= 300
    bad = [r for r in rows if r["outcome"] not in ("ok", "ImageLoadError")]
    assert bad == []
    assert out.stderr == ""
    outcomes = {r["file"]: r for r in rows}
    for name in ("bomb16.png", "bomb-deflate.tif", "bomb-lzma.tif", "claims-9000.tif", "claims-80mp-strips.tif", "volume.tif", "short-data.png"):
        assert outcomes[name]["outcome"] == "ImageLoadError", outcomes[name]
    for name in ("bomb16.png", "bomb-deflate.tif", "bomb-lzma.tif"):
        assert "decompression bomb" in outcomes[name]["message"]
    # Every kind of mutation reached the decoders: each made some files fail,
    # and some mutated files still load (flipped pixel bits, say).
    by_kind = collections.defaultdict(collections.Counter)
    for r in rows:
        match = re.search(r"-(flip|header|truncate|run)\d+\.", r["file"])
        if match:
            by_kind[match.group(1)][r["outcome"]] += 1
    assert sorted(by_kind) == ["flip", "header", "run", "truncate"]
    assert all(counts["ImageLoadError"] > 0 for counts in by_kind.values()), by_kind
    assert sum(counts["ok"] for counts in by_kind.values()) > 0
    assert max(r["seconds"] for r in rows) < HANG_SECONDS


@pytest.mark.parametrize("seed", [1, 2])
def test_load_image_more_seeds(tmp_path, seed):
    """Two more seeds of the same mutations (about 360 files each), for
    breadth; the same promise."""
    out, rows = run_child("images", mutated_images(per_seed=20, seed=100 + seed), tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [r for r in rows if r["outcome"] not in ("ok", "ImageLoadError")] == []
    assert out.stderr == ""


# ---------------------------------------------------------------------------
# model files
def _nested(depth):
    value = 1.0
    for _ in range(depth):
        value = [value]
    return value


def _set(path, value):
    def corrupt(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return doc

    return corrupt


def _many_components(k, consistent=True):
    """A model of K spherical components that fits together (K matches the
    settings everywhere), as the issue's K = 200,000 file."""
    def corrupt(doc):
        for section in ("segmenter", "inspection"):
            doc[section]["n_components"] = k
        doc["segmenter"]["covariance_type"] = doc["mixture"]["covariance_type"] = "spherical"
        doc["mixture"].update(weights=[1.0 / k] * k, means=[[0.5, 0.0, 0.0]] * k, precisions_cholesky=[10.0] * k)
        doc["components"] = {"colors": [[0.5, 0.5, 0.5]] * k, "names": ["c"] * k}
        if not consistent:
            doc["segmenter"]["n_components"] = doc["inspection"]["n_components"] = 3
        return doc

    return corrupt


K = 3
MODEL_CORRUPTIONS = {
    # the reproducers
    "k-200000.json": _many_components(200_000),
    "k-200000-settings-3.json": _many_components(200_000, consistent=False),
    "k-300.json": _many_components(300),
    "score-sigma-1e9.json": _set(["inspection", "smoothing_sigma"], 1e9),
    "weights-strings.json": _set(["mixture", "weights"], ["0.3", "0.3", "0.4"]),
    "weights-booleans.json": _set(["mixture", "weights"], [True, False, False]),
    "version-true.json": _set(["version"], True),
    "threshold-string.json": _set(["inspection", "threshold"], "2.0"),
    "converged-string.json": _set(["mixture", "converged"], "false"),
    "lower-bound-string.json": _set(["mixture", "lower_bound"], "-1.5"),
    "lower-bound-list.json": _set(["mixture", "lower_bound"], [-1.5]),
    "lower-bound-object.json": _set(["mixture", "lower_bound"], {}),
    "n-iter-string.json": _set(["mixture", "n_iter"], "3"),
    "n-iter-float.json": _set(["mixture", "n_iter"], 3.5),
    "n-iter-list.json": _set(["mixture", "n_iter"], [3]),
    "n-iter-huge.json": _set(["mixture", "n_iter"], 10**40),
    "deep-means.json": _set(["mixture", "means"], _nested(60)),
    "deep-json.json": _set(["components", "names"], _nested(50_000)),
    "means-1e308.json": _set(["mixture", "means"], [[1e308] * 3] * K),
    # more of the same kinds
    "precisions-tiny.json": _set(["mixture", "precisions_cholesky"], [np.diag([1e-200] * 3).tolist()] * K),
    "precisions-huge.json": _set(["mixture", "precisions_cholesky"], [np.diag([1e200] * 3).tolist()] * K),
    "colors-strings.json": _set(["components", "colors"], [["1", "0", "0"]] * K),
    "names-long.json": _set(["components", "names"], ["x" * 5000] * K),
    "channels-true.json": _set(["channels"], True),
    "smoothing-1e308.json": _set(["segmenter", "smoothing"], 1e308),
    "spatial-weight-1e308.json": _set(["features", "spatial_weight"], 1e308),
    "min-area-huge.json": _set(["inspection", "min_area"], 10**30),
    "k-range-huge.json": _set(["inspection", "k_range"], list(range(1, 100_000))),
    "curve-long.json": _set(["inspection", "calibration_curve"], {"false_alarm_rates": list(np.linspace(0.1, 0.2, 10**5)),
                                                                  "thresholds": list(np.linspace(1, 2, 10**5))}),
    "n-references-bool.json": _set(["inspection", "n_references"], True),
    "image-scores-strings.json": _set(["inspection", "image_scores"], ["1.0"]),
    "texture-mean-huge.json": _set(["texture_standardisation"], {"mean": [1e300], "scale": [1e-300]}),
    "mixture-list.json": _set(["mixture"], [1, 2, 3]),
    "kind-other.json": _set(["kind"], "inspector"),
}
# Text-level corruptions: tokens Python's json takes that a model must not.
TEXT_CORRUPTIONS = {
    "nan-token.json": lambda text: text.replace('"weights": [', '"weights": [NaN, ', 1),
    "inf-token.json": lambda text: text.replace('"threshold": ', '"threshold": 1e400, "x": ', 1),
    "integer-5000-digits.json": lambda text: text.replace('"n_iter": ', '"n_iter": ' + "9" * 5000 + ', "y": ', 1),
    "too-large.json": lambda text: text + " " * (17 << 20),
    "not-utf8.json": lambda text: text.replace("Component", "Compon\udcffent", 1),
}


@pytest.fixture(scope="module")
def model_text(tmp_path_factory):
    """The JSON text of a small, real inspection model (K = 3, full)."""
    import warnings

    from gmmseg import Inspector

    rng = np.random.RandomState(0)
    image = np.zeros((40, 48, 3), np.uint8)
    image[:, :24] = (200, 40, 40)
    image[20:, 24:] = (40, 60, 190)
    image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("model") / "model.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Inspector(K, random_state=0).fit(image).save(path)
    return path.read_text()


def _model_cases(text):
    cases = []
    for name, corrupt in MODEL_CORRUPTIONS.items():
        doc = corrupt(json.loads(text))
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(200_000)  # only to write the deeply nested file
        try:
            cases.append((name, json.dumps(doc).encode()))
        finally:
            sys.setrecursionlimit(limit)
    for name, corrupt in TEXT_CORRUPTIONS.items():
        cases.append((name, corrupt(text).encode("utf-8", "surrogateescape")))
    return cases


def test_every_corrupt_model_file_is_a_model_file_error(tmp_path, model_text):
    """The issue's hostile model files and more of their kinds: each is
    refused with ModelFileError (as a Segmenter and as an Inspector) under
    the memory cap; nothing else is raised and nothing is written to
    stderr. The intact model loads and segments."""
    cases = [("intact.json", model_text.encode())] + _model_cases(model_text)
    out, rows = run_child("models", cases, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(rows) == 2 * len(cases)
    intact = [r for r in rows if r["file"] == "intact.json"]
    assert [r["outcome"] for r in intact] == ["ok", "ok"] and all(r["predict"] == "ok" for r in intact)
    wrong = [r for r in rows if r["file"] != "intact.json" and r["outcome"] != "ModelFileError"]
    assert wrong == []
    assert max(r["seconds"] for r in rows) < HANG_SECONDS
    assert out.stderr == ""


def _mutations_of(text, count, seed):
    from fuzzing import MUTATIONS

    rng = random.Random(seed)
    data = text.encode()
    kinds = list(MUTATIONS)
    return [(f"model-{kinds[i % 4]}{i}.json", MUTATIONS[kinds[i % 4]](data, rng)) for i in range(count)]


def test_randomly_mutated_model_files(tmp_path, model_text):
    """Bit flips, header edits, truncation and byte runs in the JSON text:
    each file is refused with ModelFileError or, when the change is harmless
    (a flipped digit), loads and segments a small image."""
    out, rows = run_child("models", _mutations_of(model_text, 120, seed=7), tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(rows) == 240
    assert [r for r in rows if r["outcome"] not in ("ok", "ModelFileError")] == []
    assert [r for r in rows if r["outcome"] == "ok" and r["predict"] != "ok"] == []
    assert sum(r["outcome"] == "ModelFileError" for r in rows) > 100
    assert out.stderr == ""
