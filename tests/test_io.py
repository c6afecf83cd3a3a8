"""Loading every kind of image, generated on the fly, and every bad file."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from imagefiles import png16_bytes
from PIL import Image

import gmmseg
from gmmseg._fileio import atomic_write
from gmmseg.io import ImageLoadError, from_array, load_image

RNG = np.random.RandomState(0)
RGB8 = RNG.randint(0, 256, size=(12, 17, 3), dtype=np.uint8)
ALPHA8 = np.where(np.arange(17)[None, :] < 5, 0, 255).astype(np.uint8).repeat(12, axis=0)
GREY8 = RNG.randint(0, 256, size=(12, 17), dtype=np.uint8)
RGB16 = RNG.randint(0, 65536, size=(12, 17, 3)).astype(np.uint16)


def _save(tmp_path, name, img, **kw):
    path = tmp_path / name
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("suffix, fmt", [(".png", None), (".bmp", None), (".webp", {"lossless": True}), (".tif", None)])
def test_rgb_8bit_lossless_formats(tmp_path, suffix, fmt):
    path = tmp_path / f"rgb{suffix}"
    Image.fromarray(RGB8).save(path, **(fmt or {}))
    img = load_image(path)
    assert img.pixels.shape == (12, 17, 3) and img.pixels.dtype == np.float32
    np.testing.assert_array_equal(np.rint(img.pixels * 255).astype(np.uint8), RGB8)
    assert img.mask.all() and img.bit_depth == 8 and img.source == path


def test_rgba_png_masks_transparent_pixels(tmp_path):
    rgba = np.dstack([RGB8, ALPHA8])
    img = load_image(_save(tmp_path, "rgba.png", Image.fromarray(rgba)))
    np.testing.assert_array_equal(img.mask, ALPHA8 > 0)
    np.testing.assert_array_equal(np.rint(img.pixels * 255).astype(np.uint8), RGB8)


def test_grey_and_grey_alpha(tmp_path):
    img = load_image(_save(tmp_path, "g.png", Image.fromarray(GREY8)))
    assert img.is_gray and img.pixels.shape == (12, 17, 1)
    np.testing.assert_array_equal(np.rint(img.pixels[..., 0] * 255), GREY8)
    la = Image.merge("LA", [Image.fromarray(GREY8), Image.fromarray(ALPHA8)])
    img = load_image(_save(tmp_path, "la.png", la))
    assert img.is_gray
    np.testing.assert_array_equal(img.mask, ALPHA8 > 0)


def test_one_bit(tmp_path):
    bits = GREY8 > 128
    img = load_image(_save(tmp_path, "b.png", Image.fromarray(bits)))
    assert img.bit_depth == 1 and img.is_gray
    np.testing.assert_array_equal(img.pixels[..., 0] > 0.5, bits)


def test_palette_with_and_without_transparency(tmp_path):
    pal = Image.fromarray(RGB8).quantize(colors=16)
    img = load_image(_save(tmp_path, "p.png", pal))
    np.testing.assert_array_equal(np.rint(img.pixels * 255).astype(np.uint8), np.asarray(pal.convert("RGB")))
    assert img.mask.all()
    pal.info["transparency"] = 0
    path = _save(tmp_path, "pt.png", pal, transparency=0)
    img = load_image(path)
    np.testing.assert_array_equal(img.mask, np.asarray(pal) != 0)


def test_gif_palette_transparency(tmp_path):
    pal = Image.fromarray(RGB8).quantize(colors=8)
    path = _save(tmp_path, "t.gif", pal, transparency=3)
    img = load_image(path)
    np.testing.assert_array_equal(img.mask, np.asarray(Image.open(path)) != 3)


def test_16bit_grey_png(tmp_path):
    grey16 = RGB16[..., 0]
    img = load_image(_save(tmp_path, "g16.png", Image.fromarray(grey16)))
    assert img.bit_depth == 16 and img.is_gray
    np.testing.assert_array_equal(np.rint(img.pixels[..., 0] * 65535).astype(np.uint16), grey16)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16bit_colour_png_keeps_all_bits(tmp_path, channels):
    data = RNG.randint(0, 65536, size=(23, 19, channels)).astype(np.uint16)
    data[..., -1][:, :3] = 0 if channels in (2, 4) else data[..., -1][:, :3]
    path = tmp_path / "c16.png"
    path.write_bytes(png16_bytes(data))
    img = load_image(path)
    assert img.bit_depth == 16
    colour = data[..., :3] if channels >= 3 else data[..., :1]
    np.testing.assert_array_equal(np.rint(img.pixels.astype(np.float64) * 65535).astype(np.uint16), colour)
    if channels in (2, 4):
        np.testing.assert_array_equal(img.mask, data[..., -1] > 0)


def test_jpeg_rgb_grey_and_cmyk(tmp_path):
    path = _save(tmp_path, "c.jpg", Image.fromarray(RGB8), quality=95)
    img = load_image(path)
    decoded = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(np.rint(img.pixels * 255).astype(np.uint8), decoded)
    assert load_image(_save(tmp_path, "g.jpg", Image.fromarray(GREY8))).is_gray
    cmyk = Image.fromarray(RGB8).convert("CMYK")
    img = load_image(_save(tmp_path, "k.jpg", cmyk, quality=95))
    assert img.pixels.shape == (12, 17, 3) and "CMYK" in img.mode


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((10, 30, 3), dtype=np.uint8)
    arr[:, :5] = 255  # white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _save(tmp_path, "rot.jpg", Image.fromarray(arr), exif=exif, quality=100)
    img = load_image(path)
    assert img.pixels.shape[:2] == (30, 10)
    assert img.pixels[:5].mean() > 0.9 and img.pixels[-5:].mean() < 0.1  # band now on top
    assert "EXIF orientation applied" in img.notes


@pytest.mark.parametrize("kind", ["rgb16", "float_grey_nan", "float_rgb", "rgba16", "minwhite", "cmyk", "palette", "planar"])
def test_tiff_variants(tmp_path, kind):
    path = tmp_path / f"{kind}.tif"
    if kind == "rgb16":
        tifffile.imwrite(path, RGB16, photometric="rgb")
        img = load_image(path)
        np.testing.assert_array_equal(np.rint(img.pixels.astype(np.float64) * 65535).astype(np.uint16), RGB16)
        assert img.bit_depth == 16
    elif kind == "float_grey_nan":
        data = RNG.rand(9, 8).astype(np.float32)
        data[2, 3] = np.nan
        data[4, 4] = np.inf
        tifffile.imwrite(path, data)
        img = load_image(path)
        assert not img.mask[2, 3] and not img.mask[4, 4] and img.mask.sum() == 70
        assert np.isfinite(img.pixels).all()
        np.testing.assert_allclose(img.pixels[img.mask, 0], data[np.isfinite(data)])
    elif kind == "float_rgb":
        data = (RNG.rand(9, 8, 3) * 1000 - 200).astype(np.float32)
        tifffile.imwrite(path, data, photometric="rgb")
        img = load_image(path)
        assert img.pixels.min() == 0.0 and img.pixels.max() == 1.0
        assert img.value_range == (pytest.approx(float(data.min())), pytest.approx(float(data.max())))
    elif kind == "rgba16":
        data = np.dstack([RGB16, np.where(np.arange(17) < 4, 0, 65535).astype(np.uint16)[None].repeat(12, 0)])
        tifffile.imwrite(path, data, photometric="rgb", extrasamples=["unassalpha"])
        img = load_image(path)
        assert img.mask.sum() == 12 * 13
    elif kind == "minwhite":
        tifffile.imwrite(path, GREY8, photometric="miniswhite")
        img = load_image(path)
        np.testing.assert_array_equal(np.rint(img.pixels[..., 0] * 255), 255 - GREY8)
    elif kind == "cmyk":
        ink = np.zeros((4, 5, 4), dtype=np.uint8)
        ink[..., 0] = 255  # full cyan
        tifffile.imwrite(path, ink, photometric="separated")
        img = load_image(path)
        np.testing.assert_allclose(img.pixels[0, 0], [0, 1, 1])
    elif kind == "palette":
        cmap = np.zeros((3, 256), dtype=np.uint16)
        cmap[0, 1] = 65535  # index 1 = red
        idx = np.zeros((4, 5), dtype=np.uint8)
        idx[1, 1] = 1
        tifffile.imwrite(path, idx, photometric="palette", colormap=cmap)
        img = load_image(path)
        np.testing.assert_allclose(img.pixels[1, 1], [1, 0, 0])
        np.testing.assert_allclose(img.pixels[0, 0], [0, 0, 0])
    elif kind == "planar":
        tifffile.imwrite(path, np.moveaxis(RGB8, -1, 0), photometric="rgb", planarconfig="separate")
        img = load_image(path)
        np.testing.assert_array_equal(np.rint(img.pixels * 255).astype(np.uint8), RGB8)


@pytest.mark.parametrize(
    "array, shape, depth",
    [
        (GREY8, (12, 17, 1), 8),
        (RGB16, (12, 17, 3), 16),
        (np.dstack([RGB8, ALPHA8]), (12, 17, 3), 8),
        (np.dstack([GREY8, ALPHA8]), (12, 17, 1), 8),
        (GREY8 > 100, (12, 17, 1), 1),
        (RNG.rand(5, 6, 3), (5, 6, 3), 32),
        (RNG.randint(0, 4000, size=(5, 6)), (5, 6, 1), 16),
    ],
)
def test_arrays(array, shape, depth):
    copy = np.array(array, copy=True)
    img = load_image(array)
    assert img.pixels.shape == shape and img.bit_depth == depth
    assert 0.0 <= img.pixels.min() and img.pixels.max() <= 1.0
    np.testing.assert_array_equal(array, copy)  # the caller's array is untouched


def test_array_nan_is_masked():
    data = RNG.rand(4, 4, 3)
    data[1, 1, 2] = np.nan
    img = from_array(data)
    assert not img.mask[1, 1] and img.mask.sum() == 15
    assert np.isfinite(img.pixels).all()


@pytest.mark.parametrize("bad", [np.zeros((3, 4, 5)), np.zeros((0, 4)), np.array([["a"]]), np.zeros((2, 2, 2, 2))])
def test_bad_arrays(bad):
    with pytest.raises(ImageLoadError):
        load_image(bad)


def _write(name, data):
    def make(tmp_path):
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return make


def _truncated_png(tmp_path):
    path = _save(tmp_path, "ok.png", Image.fromarray(RGB8))
    data = path.read_bytes()
    bad = tmp_path / "truncated.png"
    bad.write_bytes(data[: len(data) // 2])
    return bad


def _truncated_jpeg(tmp_path):
    big = RNG.randint(0, 256, size=(200, 200, 3), dtype=np.uint8)
    path = _save(tmp_path, "ok.jpg", Image.fromarray(big))
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(path.read_bytes()[:2000])
    return bad


def _huge_png(tmp_path):
    # A valid 8-bit PNG header announcing 40000 x 40000 pixels: more than any
    # default limit (which follows the memory available, up to 1000 megapixels).
    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    def chunk(k, b):
        return struct.pack(">I", len(b)) + k + b + struct.pack(">I", zlib.crc32(k + b) & 0xFFFFFFFF)
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))
    return path


def _huge_png16(tmp_path):
    path = tmp_path / "bomb16.png"
    path.write_bytes(png16_bytes(np.zeros((2, 2, 3), np.uint16), width=30000, height=30000))
    return path


def _bad_crc_png16(tmp_path):
    data = bytearray(png16_bytes(RNG.randint(0, 65535, size=(6, 6, 3)).astype(np.uint16)))
    data[60] ^= 0xFF  # inside IDAT
    path = tmp_path / "crc16.png"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda t: t / "missing.png", "file not found"),
        (lambda t: t, "is a folder"),
        (_write("empty.png", b""), "empty file"),
        (_write("notes.txt", b"hello, not an image"), "not an image"),
        (_write("fake.jpg", b"\xff\xd8\xff\xe0garbage" * 3), "cannot be read|truncated|not an image"),
        (_truncated_png, "truncated or corrupt"),
        (_truncated_jpeg, "truncated or corrupt"),
        (_huge_png, "too large"),
        (_huge_png16, "too large"),
        (_bad_crc_png16, "truncated or corrupt"),
        (_write("bad.tif", b"II*\x00" + b"\x00" * 20), "TIFF"),
    ],
)
def test_bad_files_give_one_clear_error(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(ImageLoadError, match=match) as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_max_pixels_can_be_raised(tmp_path):
    path = _save(tmp_path, "ok.png", Image.fromarray(RGB8))
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(path, max_pixels=100)
    assert load_image(path, max_pixels=10_000).pixels.shape == (12, 17, 3)


def test_atomic_write_refuses_overwrite_and_leaves_no_temp(tmp_path):
    target = tmp_path / "x.txt"
    atomic_write(target, lambda tmp: open(tmp, "w").write("one"))
    with pytest.raises(FileExistsError, match="already exists"):
        atomic_write(target, lambda tmp: open(tmp, "w").write("two"))
    assert target.read_text() == "one"

    def failing(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing, overwrite=True)
    assert target.read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]
    atomic_write(target, lambda tmp: open(tmp, "w").write("three"), overwrite=True)
    assert target.read_text() == "three"


def test_top_level_load_image():
    assert gmmseg.load_image is load_image


@pytest.mark.parametrize("kind", ["png16", "tiff-zlib", "tiff-lzma"])
def test_decompression_bombs_stop_at_the_header_size(tmp_path, kind):
    """Pixel data are inflated only up to the size the header allows: a file
    of a few hundred KB that inflates to 256 MiB (a 16-bit PNG, our own
    decoder; a deflate or LZMA TIFF strip, which tifffile would inflate
    whole) is refused without ever holding more than the image's own size."""
    import tracemalloc

    from imagefiles import png16_bomb, tiff_bomb

    path = tmp_path / ("bomb.png" if kind == "png16" else "bomb.tif")
    path.write_bytes(png16_bomb(64, 64, inflated_mib=256) if kind == "png16"
                     else tiff_bomb(kind.split("-")[1], inflated_mib=256))
    tracemalloc.start()
    try:
        with pytest.raises(ImageLoadError, match="decompression bomb"):
            load_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB allocated for a 64 x 64 image"


def test_16bit_png_with_a_short_header_is_refused(tmp_path):
    good = png16_bytes(RGB16)
    # IHDR cut to 10 bytes (length and CRC made consistent), colour type kept
    # where the sniffing reads it so that the 16-bit decoder takes it.
    body = good[16:26]
    chunk = struct.pack(">I", 10) + b"IHDR" + body + struct.pack(">I", zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF)
    path = tmp_path / "short.png"
    path.write_bytes(good[:8] + chunk + good[33:])
    with pytest.raises(ImageLoadError, match="header"):
        load_image(path)


def _tiff_bytes(array, **options):
    import io

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("writer", ["pillow", "miniswhite"])
def test_bilevel_tiffs_load(tmp_path, writer):
    bits = GREY8 > 128
    path = tmp_path / f"{writer}.tif"
    if writer == "pillow":
        Image.fromarray(bits).save(path)
    else:  # 0 = white: tifffile stores the bits as they are, the reader inverts
        tifffile.imwrite(path, ~bits, photometric="miniswhite")
    img = load_image(path)
    assert img.bit_depth == 1 and img.is_gray
    np.testing.assert_array_equal(img.pixels[..., 0] > 0.5, bits)


def test_planar_rgb_two_pixels_wide_stays_rgb(tmp_path):
    narrow = RGB8[:, :2]
    path = tmp_path / "narrow.tif"
    tifffile.imwrite(path, np.moveaxis(narrow, -1, 0), photometric="rgb", planarconfig="separate")
    img = load_image(path)
    assert img.pixels.shape == (12, 2, 3) and img.mask.all()
    np.testing.assert_array_equal(np.rint(img.pixels * 255).astype(np.uint8), narrow)


def _tiles_missing(tmp_path):
    # 16 tiles of 16 x 16 written, then the header made to claim 9000 x 9000
    # (316,969 tiles): tifffile would fill the rest with zeros.
    from imagefiles import patch_tiff_tag

    data = _tiff_bytes(np.full((64, 64), 200, np.uint8), tile=(16, 16))
    path = tmp_path / "tiles.tif"
    path.write_bytes(patch_tiff_tag(patch_tiff_tag(data, 256, 9000, type_=4), 257, 9000, type_=4))
    return path


def _width_with_two_values(tmp_path):
    from imagefiles import patch_tiff_tag

    path = tmp_path / "width2.tif"
    path.write_bytes(patch_tiff_tag(_tiff_bytes(np.full((8, 8), 200, np.uint8)), 256, count=2))
    return path


def _short_png_data(tmp_path):
    # A complete zlib stream of 5 rows in a PNG that claims 1000.
    rows = b"".join(b"\x00" + bytes([200] * 60) for _ in range(5))
    ihdr = struct.pack(">IIBBBBB", 20, 1000, 8, 2, 0, 0, 0)
    chunk = lambda k, b: struct.pack(">I", len(b)) + k + b + struct.pack(">I", zlib.crc32(k + b) & 0xFFFFFFFF)  # noqa: E731
    path = tmp_path / "short.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def _volume(shape, **options):
    def make(tmp_path):
        path = tmp_path / "volume.tif"
        tifffile.imwrite(path, np.zeros(shape, np.uint8), volumetric=True, **options)
        return path

    return make


@pytest.mark.parametrize("make, match", [
    (_volume((2, 6, 5)), "volumetric TIFF"),
    (_volume((2, 6, 5, 3), photometric="rgb"), "volumetric TIFF"),
    (_tiles_missing, "316,953 of 316,969 image tiles are missing"),
    (_width_with_two_values, "not a readable TIFF"),
    (_short_png_data, "pixel data hold 305 bytes; the header says 61,000"),
])
def test_malformed_files_are_refused_not_reinterpreted(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(ImageLoadError, match=match):
        load_image(path)


def test_tifffile_warnings_stay_out_of_stderr(tmp_path):
    """A tag of an unknown type is skipped by tifffile with a logged warning:
    the image loads, the warning becomes a note instead of a line on stderr
    (checked in a new process: pytest's own log capture would hide it)."""
    import subprocess
    import sys

    from imagefiles import patch_tiff_tag

    data = _tiff_bytes(GREY8, software="gmmseg test")
    path = tmp_path / "odd.tif"
    path.write_bytes(patch_tiff_tag(data, 305, type_=99))
    img = load_image(path)
    np.testing.assert_array_equal(np.rint(img.pixels[..., 0] * 255), GREY8)
    assert any("TIFF reader" in note and "data type" in note for note in img.notes)
    code = "import sys; from gmmseg import load_image; print(load_image(sys.argv[1]).notes)"
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                         cwd=Path(gmmseg.__file__).parent.parent)
    assert out.returncode == 0 and "data type" in out.stdout and out.stderr == ""


@pytest.mark.parametrize("umask", [0o002, 0o077])
def test_written_files_follow_the_umask_when_they_are_written(tmp_path, umask):
    """Files and staged folders get 0666 / 0777 less the umask the process
    has when it writes them (it used to be read once, at import)."""
    import os

    from gmmseg._fileio import staged_folder

    previous = os.umask(umask)
    try:
        atomic_write(tmp_path / "one.txt", lambda tmp: open(tmp, "w").write("one"))
        with staged_folder(tmp_path / "folder") as staging:
            atomic_write(staging / "inner.txt", lambda tmp: open(tmp, "w").write("two"))
    finally:
        os.umask(previous)
    assert (tmp_path / "one.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "folder" / "inner.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == ["inner.txt"]  # no staging marker left
