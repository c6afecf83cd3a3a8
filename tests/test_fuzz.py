"""Fuzz tests: hostile image and model files, loaded under a memory cap.

The files are made here, deterministically (fixed seeds); a child process
(tests/fuzzing.py) loads them with its address space capped by
``resource.setrlimit(RLIMIT_AS)`` at 2 GiB, set before anything is imported,
so the cap holds for the decoders and never touches this test session.
Measured on this project: the child peaks at about 0.55 GB of address space
with every Numba kernel compiled from a cold cache, so 2 GiB leaves decoders
about 1.4 GB. ``MALLOC_ARENA_MAX`` keeps glibc from reserving 64 MB of
address space per decoding thread on machines with many cores (tifffile
decodes tiles in threads), which would eat the cap without using memory.
"""

import collections
import json
import os
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
