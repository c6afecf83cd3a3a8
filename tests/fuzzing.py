"""Hostile files for the fuzz tests (tests/test_fuzz.py), and the child
process that loads them under a memory cap.

Run as a script, this module is the child: it caps its address space with
``resource.setrlimit(RLIMIT_AS)``, then loads every mutated image file (or
model file) it is asked for and prints one JSON line per file: the outcome
(``ok``, or the exception's type and message) and the seconds it took. The
parent test judges the lines; the cap never touches the test session.
"""

import io
import json
import random
import resource
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from imagefiles import png16_bytes  # noqa: E402

# ---------------------------------------------------------------------------
# seed files: one small valid file of every kind the loaders take


def _pil_bytes(array, fmt, **options):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _tiff_bytes(array, **options):
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def seed_files():
    """{name: bytes} of small valid images: PNG 8/16-bit, JPEG, TIFF
    8/16-bit/float/tiled/compressed/planar/bilevel, GIF, WebP, BMP."""
    rng = np.random.RandomState(1)
    rgb = (rng.rand(24, 20, 3) * 255).astype(np.uint8)
    grey = rgb[..., 0].copy()
    rgba = np.dstack([rgb, (rng.rand(24, 20) * 255).astype(np.uint8)])
    deep = (rng.rand(24, 20, 3) * 65535).astype(np.uint16)
    return {
        "rgb8.png": _pil_bytes(rgb, "PNG"),
        "grey8.png": _pil_bytes(grey, "PNG"),
        "rgba8.png": _pil_bytes(rgba, "PNG"),
        "palette.png": _palette_png(rgb),
        "rgb16.png": png16_bytes(deep),
        "rgba16.png": png16_bytes(np.dstack([deep, deep[..., :1]])),
        "photo.jpg": _pil_bytes(rgb, "JPEG", quality=90),
        "rgb8.tif": _tiff_bytes(rgb, photometric="rgb"),
        "grey16.tif": _tiff_bytes(deep[..., 0], photometric="minisblack"),
        "rgb16.tif": _tiff_bytes(deep, photometric="rgb"),
        "float.tif": _tiff_bytes(rng.rand(24, 20, 3).astype(np.float32), photometric="rgb"),
        "tiled.tif": _tiff_bytes(np.tile(rgb, (2, 2, 1)), photometric="rgb", tile=(16, 16)),
        "deflate.tif": _tiff_bytes(rgb, photometric="rgb", compression="zlib", rowsperstrip=8),
        "planar.tif": _tiff_bytes(np.moveaxis(rgb, 2, 0), photometric="rgb", planarconfig="separate"),
        "bilevel.tif": _pil_bytes(grey > 128, "TIFF"),
        "anim.gif": _pil_bytes(rgb, "GIF"),
        "lossless.webp": _pil_bytes(rgb, "WEBP", lossless=True),
        "rgb.bmp": _pil_bytes(rgb, "BMP"),
    }


def _palette_png(rgb):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).quantize(colors=16).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------
# mutations
_EXTREMES = (b"\x00", b"\xff", b"\x7f", b"\x80", b"\x01")


def _bit_flips(data, rng):
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(len(out))
        out[pos] ^= 1 << rng.randrange(8)
    return bytes(out)


def _structure_region(data):
    """(start, end) of the bytes that describe the image: a PNG's IHDR, a
    TIFF's first IFD, else the first 256 bytes (JPEG, GIF, WebP and BMP
    headers)."""
    if data.startswith(b"\x89PNG"):
        return 16, 29
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        order = "<" if data[:2] == b"II" else ">"
        ifd = struct.unpack(order + "I", data[4:8])[0]
        if ifd + 2 <= len(data):
            count = struct.unpack(order + "H", data[ifd:ifd + 2])[0]
            return ifd, min(len(data), ifd + 2 + 12 * count)
    return 0, min(len(data), 256)


def _fix_png_crcs(data):
    """Recompute every PNG chunk's CRC, so that edited headers reach the
    decoders instead of failing the checksum."""
    out = bytearray(data)
    pos = 8
    while pos + 12 <= len(out):
        length = struct.unpack(">I", out[pos:pos + 4])[0]
        end = pos + 8 + length
        if end + 4 > len(out):
            break
        out[end:end + 4] = struct.pack(">I", zlib.crc32(bytes(out[pos + 4:end])) & 0xFFFFFFFF)
        pos = end + 4
    return bytes(out)


def _header_edit(data, rng):
    """Overwrite 1-3 fields of the structure (sizes, depths, colour types,
    tag types, counts, offsets) with extreme or random values; PNG
    checksums are made to match."""
    out = bytearray(data)
    start, end = _structure_region(data)
    for _ in range(rng.randint(1, 3)):
        pos = rng.randrange(start, end)
        width = rng.choice((1, 2, 4))
        value = rng.choice(_EXTREMES) * width if rng.random() < 0.6 else bytes(rng.randrange(256) for _ in range(width))
        out[pos:pos + width] = value[: max(0, end - pos)]
    return _fix_png_crcs(out) if data.startswith(b"\x89PNG") else bytes(out)


def _truncation(data, rng):
    return data[: rng.randrange(1, len(data))]


def _byte_run(data, rng):
    """A run of one repeated byte, written over or inserted at a random place."""
    run = bytes([rng.choice((0, 0xFF, rng.randrange(256)))]) * rng.randint(2, 600)
    pos = rng.randrange(len(data))
    if rng.random() < 0.5:
        return data[:pos] + run + data[pos + len(run):]
    return data[:pos] + run + data[pos:]


MUTATIONS = {"flip": _bit_flips, "header": _header_edit, "truncate": _truncation, "run": _byte_run}


def mutated_images(per_seed=20, seed=13):
    """[(name, bytes)]: ``per_seed`` mutations of every seed file, the four
    kinds in turn, deterministic for a seed."""
    rng = random.Random(seed)
    cases = []
    for name, data in seed_files().items():
        kinds = list(MUTATIONS)
        for i in range(per_seed):
            kind = kinds[i % len(kinds)]
            stem, suffix = name.rsplit(".", 1)
            cases.append((f"{stem}-{kind}{i}.{suffix}", MUTATIONS[kind](data, rng)))
    return cases


# ---------------------------------------------------------------------------
# the child process
def _cap_memory(limit_bytes):
    resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))


def _outcome(call, *args):
    start = time.perf_counter()
    try:
        call(*args)
        result = {"outcome": "ok"}
    except BaseException as exc:  # everything is reported; the parent judges
        from gmmseg.io import ImageLoadError
        from gmmseg.persistence import ModelFileError

        # A subclass of a documented error (e.g. ImageTooLargeError) is that error.
        kind = next((c for c in (ImageLoadError, ModelFileError) if isinstance(exc, c)), type(exc))
        result = {"outcome": kind.__name__, "module": type(exc).__module__, "message": str(exc)[:300]}
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result


def _child_images(files):
    from gmmseg import load_image

    for path in files:
        print(json.dumps({"file": Path(path).name, **_outcome(load_image, path)}), flush=True)


def _child_models(files):
    """Load every model file as a Segmenter and as an Inspector; a model
    that loads also segments a small image (it must work, not merely load)."""
    from gmmseg import Inspector, Segmenter

    image = (np.random.RandomState(0).rand(12, 10, 3) * 255).astype(np.uint8)
    for path in files:
        for cls in (Segmenter, Inspector):
            loaded = {}

            def load(cls=cls, path=path, loaded=loaded):
                loaded["model"] = cls.load(path)

            result = _outcome(load)
            if "model" in loaded:
                model = loaded["model"]
                segmenter = model if cls is Segmenter else model.segmenter_
                predicted = _outcome(segmenter.predict, image)
                result["predict"] = predicted["outcome"] + (": " + predicted.get("message", "") if "message" in predicted else "")
            print(json.dumps({"file": Path(path).name, "class": cls.__name__, **result}), flush=True)


def main(argv):
    kind, limit, listing = argv[0], int(argv[1]), argv[2]
    # The cap comes first, before numpy, Numba and the decoders are
    # imported: everything the child does counts against it.
    _cap_memory(limit)
    files = Path(listing).read_text().splitlines()
    {"images": _child_images, "models": _child_models}[kind](files)


def write_cases(cases, folder=None):
    """Write [(name, bytes)] into a folder; returns (folder, listing file)."""
    folder = Path(folder or tempfile.mkdtemp(prefix="gmmseg-fuzz-"))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in cases:
        path = folder / name
        path.write_bytes(data)
        paths.append(str(path))
    listing = folder / "files.txt"
    listing.write_text("\n".join(paths))
    return folder, listing


if __name__ == "__main__":
    main(sys.argv[1:])
