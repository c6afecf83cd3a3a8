"""Loading images of every common kind.

Every loader returns an :class:`ImageData`: float32 pixels scaled to [0, 1]
with 1 (grey) or 3 (RGB) channels, a mask of the pixels to use (opaque and
finite), the bit depth and where the image came from. Problems raise one
:class:`ImageLoadError` that names the file and what is wrong with it.
"""

import logging
import math
import os
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ._jit import kernel

# Pillow's own decompression-bomb limit (about 89.5 megapixels): images up to
# this size are always accepted; larger ones when the memory available can
# segment them (see default_max_pixels), up to LARGEST_DEFAULT_PIXELS.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
LARGEST_DEFAULT_PIXELS = 1_000_000_000
# Bytes of memory per pixel that loading and segmenting an image holds at its
# peak: float32 pixels (12 for RGB), the decoded file (3), the mask, labels
# and log-likelihood maps (9), and the strips in work and the written files'
# buffers. Measured with benchmarks/bench_scale.py (peak RSS over pixels of
# 12-100 megapixel photos, K = 8, default settings), rounded up.
SEGMENT_BYTES_PER_PIXEL = 40

# File name endings taken as images when listing a folder.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jfif", ".tif", ".tiff", ".bmp", ".webp", ".gif",
                            ".ppm", ".pgm", ".pbm"})

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_pil_limit_lock = threading.Lock()
# Compressed streams are inflated in steps of this many bytes where only
# their size is checked (memory stays small whatever a stream holds).
_INFLATE_STEP = 1 << 20


class ImageLoadError(ValueError):
    """An image could not be loaded; the message names the file and why."""


class ImageTooLargeError(ImageLoadError):
    """An image has more pixels than allowed (by ``max_pixels``, or by the
    memory available); ``width``, ``height`` and ``limit`` (pixels) say by
    how much."""

    def __init__(self, message: str, width: int = 0, height: int = 0, limit: int = 0):
        super().__init__(message)
        self.width, self.height, self.limit = width, height, limit

    @property
    def bytes_needed(self) -> int:
        """About how much memory segmenting the image needs."""
        return self.width * self.height * SEGMENT_BYTES_PER_PIXEL

    @property
    def allow_hint(self) -> str:
        """How to allow the image, in the library's words (the message's end)."""
        return f"pass max_pixels={self.width * self.height}"

    @property
    def command_line_hint(self) -> str:
        """The same on the command line."""
        return f"use --max-megapixels {math.ceil(self.width * self.height / 1e6)}"


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory() -> int | None:
    """Bytes of memory this process can still use, about: the system's
    available memory (``MemAvailable``), or less when a control group (a
    container's limit) leaves less; None when unknown."""
    candidates = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    if not candidates:
        try:
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    try:  # an address-space limit (ulimit -v) caps this process whatever the system has
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit != resource.RLIM_INFINITY:
            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            candidates.append(max(0, limit - used))
    except (ImportError, OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:  # "max" or a huge value: no limit
            candidates.append(max(0, limit - usage))
    return min(candidates) if candidates else None


def default_max_pixels() -> int:
    """The largest image :func:`load_image` accepts by default: what the
    memory available can segment (``SEGMENT_BYTES_PER_PIXEL`` per pixel), at
    least ``MAX_PIXELS`` (Pillow's decompression-bomb limit) and at most
    ``LARGEST_DEFAULT_PIXELS``."""
    available = available_memory()
    if available is None:
        return MAX_PIXELS
    return int(min(LARGEST_DEFAULT_PIXELS, max(MAX_PIXELS, available // SEGMENT_BYTES_PER_PIXEL)))


def size_text(n_bytes: float) -> str:
    """A number of bytes in words (e.g. ``"3.2 GB"``)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6)):
        if n_bytes >= size:
            return f"{n_bytes / size:.1f} {unit}"
    return f"{n_bytes / 1e3:.0f} kB"


def _too_large_message(path, width: int, height: int, limit: int, explicit: bool) -> str:
    pixels = width * height
    size = f"{width} x {height} = {pixels / 1e6:.1f} megapixels"
    allow = ImageTooLargeError("", width, height).allow_hint
    if explicit:
        return f"{path}: image is too large ({size}; max_pixels allows {limit / 1e6:.1f}). To load it, {allow}."
    available = available_memory()
    memory = f"about {size_text(pixels * SEGMENT_BYTES_PER_PIXEL)} of memory to segment"
    if available is not None:
        memory += f", and {size_text(available)} is available"
    return (f"{path}: image is too large ({size}; it would need {memory}; images above {limit / 1e6:.1f} megapixels "
            f"are refused by default, which also stops decompression bombs). To try anyway, {allow}.")


@dataclass(eq=False)
class ImageData:
    """An image ready for feature extraction.

    Attributes
    ----------
    pixels : ndarray of shape (H, W, C), float32
        Values in [0, 1]; C is 1 (grey) or 3 (RGB). Masked pixels keep their
        colour for display (0 where the value was NaN or infinite).
    mask : ndarray of shape (H, W), bool
        True where the pixel is used: opaque (alpha > 0) and finite.
    bit_depth : int
        Bits per channel of the source (1, 8, 16 or 32).
    source : Path or None
        The file the image was read from.
    mode : str
        The source's pixel format in words, e.g. ``"RGBA 8-bit"``.
    value_range : tuple of float
        The source values mapped to 0 and 1.
    """

    pixels: np.ndarray
    mask: np.ndarray
    bit_depth: int = 8
    source: Path | None = None
    mode: str = ""
    value_range: tuple = (0.0, 1.0)
    notes: list = field(default_factory=list)

    @property
    def height(self):
        return self.pixels.shape[0]

    @property
    def width(self):
        return self.pixels.shape[1]

    @property
    def is_gray(self):
        return self.pixels.shape[2] == 1

    @property
    def n_valid(self):
        return int(np.count_nonzero(self.mask))

    @property
    def name(self):
        return self.source.name if self.source is not None else "<array>"

    def rgb(self):
        """Pixels as (H, W, 3) float32 (grey repeated over channels)."""
        if self.is_gray:
            return np.repeat(self.pixels, 3, axis=2)
        return self.pixels

    def to_uint8(self):
        """Pixels as (H, W, 3) uint8 sRGB, for display and overlays."""
        cached = getattr(self, "_uint8", None)
        if cached is not None and cached.shape[:2] == self.pixels.shape[:2]:
            return cached
        return (np.clip(self.rgb(), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files in a folder (by name ending), sorted by path."""
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in Path(folder).glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _error(path, problem):
    return ImageLoadError(f"{path}: {problem}")


def load_image(source: "str | os.PathLike | ImageData | np.ndarray", *, max_pixels: int | None = None) -> ImageData:
    """Load an image from a path, an ``ImageData`` or a NumPy array.

    Parameters
    ----------
    source : str, Path, ImageData or ndarray
        A file (PNG, JPEG, TIFF, BMP, WebP, GIF, ... in 1/8/16-bit or float,
        grey, grey+alpha, RGB, RGBA, palette or CMYK), an ``ImageData``
        (returned as is) or an (H, W), (H, W, 1), (H, W, 2), (H, W, 3) or
        (H, W, 4) array.
    max_pixels : int, optional
        Refuse images with more pixels (checked from the header, before
        decoding: decompression-bomb protection). By default
        :func:`default_max_pixels`: what the memory available can segment,
        at least about 89.5 megapixels; a refused image's message names the
        memory it would need and how to allow it.

    Returns
    -------
    ImageData

    Raises
    ------
    ImageLoadError
        The file is missing, empty, not an image, truncated, corrupt, too
        large, of a layout gmmseg does not read (e.g. a volumetric TIFF) or
        needs more memory than there is; the message names the file and the
        problem. No other error leaves for a file (a wrong type of
        ``source`` is a TypeError).
    """
    if isinstance(source, ImageData):
        return source
    if isinstance(source, np.ndarray):
        return from_array(source)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"Expected a path, an ImageData or a NumPy array, got {type(source).__name__}.")
    path = Path(source)
    explicit = max_pixels is not None
    max_pixels = int(max_pixels) if explicit else default_max_pixels()
    if not path.exists():
        raise _error(path, "file not found")
    if path.is_dir():
        raise _error(path, "is a folder, not an image file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError as exc:
        raise _error(path, f"cannot be read ({exc.strerror or exc})") from None
    if size == 0:
        raise _error(path, "empty file (0 bytes)")
    try:
        if head.startswith(_TIFF_SIGNATURES):
            image = _load_tiff(path, max_pixels)
        elif head.startswith(_PNG_SIGNATURE):
            image = _load_png(path, max_pixels)
        else:
            image = _load_with_pillow(path, max_pixels)
    except ImageTooLargeError as exc:
        raise ImageTooLargeError(_too_large_message(path, exc.width, exc.height, exc.limit, explicit),
                                 exc.width, exc.height, exc.limit) from None
    except ImageLoadError:
        raise
    except MemoryError:
        size = image_size(path)
        what = f" ({size[0]} x {size[1]} pixels)" if size else ""
        raise _error(path, f"not enough memory to decode it{what}") from None
    except Exception as exc:
        # The decoders (Pillow, tifffile, ours) meet hostile files with many
        # kinds of errors; the ones we expect are worded above, and this
        # keeps the promise that only ImageLoadError leaves for the rest.
        detail = str(exc).strip().replace("\n", " ") or type(exc).__name__
        raise _error(path, f"file is corrupt or cannot be decoded ({detail})") from None
    image.source = path
    return image


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) of an image file from its header, without decoding
    its pixels; None when the header cannot be read."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(32)
        if head.startswith(_PNG_SIGNATURE) and len(head) >= 24 and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            return int(width), int(height)
        if head.startswith(_TIFF_SIGNATURES):
            import tifffile

            with _tifffile_messages(), tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return int(page.imagewidth), int(page.imagelength)
        with _pil_limit_lock:
            previous = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                with Image.open(path) as img:  # reads the header only
                    return int(img.width), int(img.height)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except Exception:  # any unreadable header: the size is unknown
        return None


def _check_size(path, width, height, max_pixels):
    if width <= 0 or height <= 0:
        raise _error(path, f"image has no pixels ({width} x {height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(f"{path}: image is too large ({width} x {height})", width, height, max_pixels)


def _load_with_pillow(path, max_pixels):
    with _pil_limit_lock:
        previous = Image.MAX_IMAGE_PIXELS
        # We check the size ourselves right after reading the header.
        Image.MAX_IMAGE_PIXELS = None
        try:
            img = Image.open(path)
        except UnidentifiedImageError:
            raise _error(path, "not an image file, or a format gmmseg cannot read") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise _error(path, f"cannot be read as an image ({exc})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = previous
    with img:
        _check_size(path, img.width, img.height, max_pixels)
        try:
            img.load()
        except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
            detail = str(exc) or type(exc).__name__
            raise _error(path, f"file is truncated or corrupt ({detail})") from None
        notes = []
        if img.getexif().get(0x0112, 1) not in (1, None):
            img = ImageOps.exif_transpose(img)
            notes.append("EXIF orientation applied")
        image = _from_pil(img, path)
        image.notes.extend(notes)
        return image


def _from_pil(img, path):
    mode = img.mode
    if mode == "1":
        return from_array(np.asarray(img, dtype=bool), mode="1-bit")
    if mode in ("L", "LA"):
        return from_array(np.asarray(img), mode=f"{'grey' if mode == 'L' else 'grey+alpha'} 8-bit")
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return from_array(np.asarray(img).astype(np.uint16), mode="grey 16-bit")
    if mode == "I":
        arr = np.asarray(img)
        if arr.size and arr.min() >= 0 and arr.max() <= 65535:
            return from_array(arr.astype(np.uint16), mode="grey 16-bit")
        return from_array(arr.astype(np.float64), mode="grey 32-bit integer")
    if mode == "F":
        return from_array(np.asarray(img, dtype=np.float32), mode="grey float")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info or img.palette.mode == "RGBA"
        converted = img.convert("RGBA" if has_alpha else "RGB")
        return from_array(np.asarray(converted), mode=f"palette{'+alpha' if has_alpha else ''} 8-bit")
    if mode in ("RGBA", "RGBa", "LA", "La"):
        return from_array(np.asarray(img.convert("RGBA")), mode="RGBA 8-bit")
    if mode == "CMYK":
        image = from_array(np.asarray(img.convert("RGB")), mode="CMYK 8-bit")
        image.notes.append("CMYK converted to RGB without colour management")
        return image
    if mode in ("RGB", "RGBX", "YCbCr", "LAB", "HSV"):
        return from_array(np.asarray(img.convert("RGB")), mode=f"{mode} 8-bit")
    try:
        return from_array(np.asarray(img.convert("RGBA")), mode=f"{mode} converted to RGBA")
    except (ValueError, OSError) as exc:
        raise _error(path, f"unsupported pixel format {mode!r} ({exc})") from None


# ---------------------------------------------------------------------------
# arrays
def from_array(array, *, mode=None):
    """Build an ``ImageData`` from an array of any common layout and dtype.

    Integer arrays are scaled by their bit depth (bool: 1, uint8 and values up
    to 255: 8, up to 65535: 16); float arrays already in [0, 1] are kept, other
    float ranges are scaled by their finite minimum and maximum. NaN and
    infinite pixels are masked out. The caller's array is not modified.
    """
    arr = np.asarray(array)
    if arr.dtype.kind not in "biuf":
        raise ImageLoadError(f"<array>: pixel type {arr.dtype} is not numeric")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ImageLoadError(
            f"<array>: expected shape (H, W), (H, W, 1), (H, W, 2), (H, W, 3) or (H, W, 4), got {np.shape(array)}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageLoadError(f"<array>: image has no pixels (shape {np.shape(array)})")
    n_colour = 3 if arr.shape[2] >= 3 else 1
    colour = arr[:, :, :n_colour]
    alpha = arr[:, :, n_colour] if arr.shape[2] in (2, 4) else None

    bit_depth, value_range, scaled = _scale(colour)
    if colour.dtype.kind == "f":
        finite = np.isfinite(scaled).all(axis=2)
        if not finite.all():
            scaled = np.where(finite[:, :, None], scaled, 0.0)
        mask = finite
    else:  # integers are always finite
        mask = np.ones(colour.shape[:2], dtype=bool)
    if alpha is not None:
        mask = mask & (np.nan_to_num(alpha.astype(np.float64), nan=0.0) > 0)
    kind = {1: "grey", 3: "RGB"}[n_colour] + ("+alpha" if alpha is not None else "")
    image = ImageData(
        pixels=np.ascontiguousarray(scaled, dtype=np.float32),
        mask=np.ascontiguousarray(mask),
        bit_depth=bit_depth,
        mode=mode or f"{kind} {arr.dtype}",
        value_range=value_range,
    )
    if colour.dtype == np.uint8 and n_colour == 3:
        image._uint8 = np.ascontiguousarray(colour)  # the display copy, for free
    return image


@kernel
def _levels_to_float(values, lut, out):
    """out = lut[values] for 8-bit values, element by element."""
    flat_in, flat_out = values.ravel(), out.ravel()
    for i in range(flat_in.shape[0]):
        flat_out[i] = lut[flat_in[i]]


def _scale(colour):
    """Scale colour values to [0, 1]; returns (bit_depth, value_range, array)."""
    kind = colour.dtype.kind
    if kind == "b":
        return 1, (0.0, 1.0), colour.astype(np.float32)
    if colour.dtype == np.uint8:
        # One pass through a 256-entry table (the same float32 values as
        # dividing by 255), without a float copy of the image in between.
        lut = np.arange(256, dtype=np.float32) / np.float32(255.0)
        out = np.empty(colour.shape, dtype=np.float32)
        colour = np.ascontiguousarray(colour)
        # Row blocks on every core (the kernel releases the GIL): most of
        # the time is the first touch of the new array's pages.
        blocks = np.array_split(np.arange(colour.shape[0]), min(os.cpu_count() or 1, 8, max(1, colour.shape[0])))
        jobs = [(colour[b[0]:b[-1] + 1], out[b[0]:b[-1] + 1]) for b in blocks if b.size]
        if len(jobs) > 1 and colour.size > 1 << 20:
            with ThreadPoolExecutor(len(jobs)) as pool:
                list(pool.map(lambda job: _levels_to_float(job[0], lut, job[1]), jobs))
        else:
            _levels_to_float(colour, lut, out)
        return 8, (0.0, 255.0), out
    if kind in "iu":
        lo, hi = int(colour.min()), int(colour.max())
        if colour.dtype == np.uint16:
            return 16, (0.0, 65535.0), colour.astype(np.float32) / np.float32(65535.0)
        if lo >= 0 and hi <= 255:
            return 8, (0.0, 255.0), colour.astype(np.float32) / np.float32(255.0)
        if lo >= 0 and hi <= 65535:
            return 16, (0.0, 65535.0), colour.astype(np.float32) / np.float32(65535.0)
        span = float(hi - lo) or 1.0
        return 32, (float(lo), float(hi)), ((colour.astype(np.float64) - lo) / span).astype(np.float32)
    with np.errstate(invalid="ignore"):  # signalling NaNs in the file are masked below, not warned about
        values = colour.astype(np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 32, (0.0, 1.0), values
    lo, hi = float(finite.min()), float(finite.max())
    if lo >= 0.0 and hi <= 1.0:
        return 32, (0.0, 1.0), values
    span = (hi - lo) or 1.0
    return 32, (lo, hi), (values - lo) / span


# ---------------------------------------------------------------------------
# TIFF (tifffile handles 16-bit colour, float and planar layouts Pillow lacks)
_TIFF_ORIENTATION_OPS = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.swapaxes(a, 0, 1)[:, ::-1],
    7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
    8: lambda a: np.swapaxes(a, 0, 1)[::-1],
}
# Photometric interpretations we read, with the number of colour samples
# (samples per pixel minus the extra samples) each must have.
_TIFF_COLOUR_SAMPLES = {0: 1, 1: 1, 2: 3, 3: 1, 5: 4}
_TIFF_PHOTOMETRIC_NAMES = {0: "MINISWHITE", 1: "MINISBLACK", 2: "RGB", 3: "PALETTE", 4: "MASK", 5: "SEPARATED",
                           6: "YCBCR", 8: "CIELAB", 9: "ICCLAB", 10: "ITULAB", 32844: "LOGL", 32845: "LOGLUV"}
_MAX_TIFF_NOTES = 3


class _LogRecords(logging.Handler):
    """Keeps the messages of a logger instead of letting Python's last-resort
    handler print them on stderr (a library must not write there)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextmanager
def _tifffile_messages():
    """The warnings tifffile logs while the block runs, as a list.

    The handler sits on tifffile's logger only while we read a file; an
    application that configured logging still receives the records through
    its own handlers (they propagate as usual).
    """
    logger = logging.getLogger("tifffile")
    handler = _LogRecords()
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def _check_tiff_segments(path, page, file_size):
    """Refuse a TIFF whose strips or tiles are missing or lie past the end of
    the file: tifffile fills those with zeros, which would load a broken
    file as a black image (or a huge black one from a few bytes)."""
    kind = "tiles" if page.is_tiled else "strips"
    expected = math.prod(page.chunked)
    offsets, counts = tuple(page.dataoffsets), tuple(page.databytecounts)
    present = sum(1 for o, c in zip(offsets[:expected], counts[:expected]) if o > 0 and c > 0)
    if present < expected:
        raise _error(path, f"file is corrupt or incomplete ({expected - present:,} of {expected:,} image {kind} are "
                           "missing)")
    beyond = sum(1 for o, c in zip(offsets[:expected], counts[:expected]) if o + c > file_size)
    if beyond:
        raise _error(path, f"file is truncated ({beyond:,} of {expected:,} image {kind} lie past its end)")


# Compressions whose streams can inflate a thousand-fold and more (deflate,
# LZMA): each strip or tile is inflated once, only as far as it is allowed,
# before tifffile decodes it (which inflates everything a stream holds).
_TIFF_DEFLATE = (8, 32946)
_TIFF_LZMA = (34925,)


def _stream_exceeds(data, limit, lzma_stream):
    """True when a compressed stream inflates to more than ``limit`` bytes;
    stops one byte past it. Corrupt streams are left to the decoder."""
    import lzma

    produced = 0
    try:
        if lzma_stream:
            decompressor = lzma.LZMADecompressor()
            piece = decompressor.decompress(data, min(limit + 1, _INFLATE_STEP))
            while True:
                produced += len(piece)
                if produced > limit or decompressor.eof or decompressor.needs_input:
                    break
                piece = decompressor.decompress(b"", min(limit + 1 - produced, _INFLATE_STEP))
        else:
            decompressor = zlib.decompressobj()
            while data and produced <= limit and not decompressor.eof:
                produced += len(decompressor.decompress(data, min(limit + 1 - produced, _INFLATE_STEP)))
                data = decompressor.unconsumed_tail
    except (zlib.error, lzma.LZMAError, EOFError):
        return False
    return produced > limit


def _check_tiff_inflation(path, page):
    """Refuse a deflate or LZMA TIFF whose strips or tiles inflate beyond the
    size of a strip or tile (a decompression bomb)."""
    if page.compression not in _TIFF_DEFLATE + _TIFF_LZMA:
        return
    samples = page.samplesperpixel if page.planarconfig == 1 else 1
    if page.is_tiled:
        rows, width = page.tiledepth * page.tilelength, page.tilewidth
    else:
        rows, width = min(page.rowsperstrip, page.imagelength), page.imagewidth
    limit = rows * ((width * samples * page.bitspersample + 7) // 8)
    expected = math.prod(page.chunked)
    with open(path, "rb") as f:
        for offset, count in zip(tuple(page.dataoffsets)[:expected], tuple(page.databytecounts)[:expected]):
            f.seek(offset)
            if _stream_exceeds(f.read(count), limit, page.compression in _TIFF_LZMA):
                raise _error(path, "file is corrupt (image data inflate to more than the size in its header: "
                                   "refused as a possible decompression bomb)")


def _read_tiff_page(path, max_pixels):
    """The first page's pixels as (H, W, samples) and what is needed to
    interpret them; everything tifffile says about a bad file becomes one
    ImageLoadError."""
    import tifffile

    with _tifffile_messages() as messages:
        try:
            size = path.stat().st_size
            with tifffile.TiffFile(path) as tif:
                if not tif.pages:
                    raise _error(path, "TIFF file holds no image")
                page = tif.pages[0]
                _check_size(path, int(page.imagewidth), int(page.imagelength), max_pixels)
                if int(page.imagedepth) > 1:
                    raise _error(path, f"volumetric TIFF ({int(page.imagedepth)} slices deep): gmmseg reads 2-D "
                                       "images; save the slice you want as its own file")
                axes = page.axes
                if axes not in ("YX", "YXS", "SYX"):
                    raise _error(path, f"unsupported TIFF layout (axes {axes}, shape {page.shape}): gmmseg reads "
                                       "2-D images")
                _check_tiff_segments(path, page, size)
                _check_tiff_inflation(path, page)
                arr = page.asarray()
                if arr.shape != page.shape:
                    raise _error(path, f"file is corrupt (TIFF data decode to shape {arr.shape}, not {page.shape})")
                info = {
                    "photometric": int(page.photometric),
                    "colormap": page.colormap,
                    "orientation": int(page.tags.valueof(274, 1)),
                    "extra": len(page.extrasamples or ()),
                }
        except ImageLoadError:
            raise
        except MemoryError:
            raise
        except Exception as exc:  # tifffile raises many kinds of errors on corrupt files
            detail = str(exc).strip() or type(exc).__name__
            if messages:
                detail += f"; {messages[0]}"
            raise _error(path, f"not a readable TIFF file ({detail})") from None
    if axes == "SYX":  # planar samples: one plane per sample
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    info["notes"] = [f"TIFF reader: {m}" for m in messages[:_MAX_TIFF_NOTES]]
    return arr, info


def _tiff_colour(path, arr, photometric, colormap, extra):
    """(H, W, C) colour (+ alpha) from a TIFF's samples and photometric
    interpretation; shapes that do not fit it are refused, not guessed."""
    name = _TIFF_PHOTOMETRIC_NAMES.get(photometric, str(photometric))
    if photometric not in _TIFF_COLOUR_SAMPLES:
        raise _error(path, f"TIFF colour model {name} is not supported (gmmseg reads grey, RGB, palette and CMYK)")
    samples, colour = arr.shape[2], _TIFF_COLOUR_SAMPLES[photometric]
    if not extra and samples == colour + 1 and photometric in (0, 1, 2):
        extra = 1  # RGBA and grey+alpha files often lack the ExtraSamples tag
    if samples - extra != colour:
        raise _error(path, f"unsupported TIFF ({samples} samples per pixel, {extra} of them extra, for colour model "
                           f"{name}, which has {colour} colour sample{'s' if colour > 1 else ''})")
    alpha = arr[..., colour:colour + 1] if extra else None
    pixels = arr[..., :colour]
    notes = []
    if photometric == 0:  # MINISWHITE: 0 is white
        if pixels.dtype == bool:
            pixels = ~pixels
        elif pixels.dtype.kind in "iu":
            pixels = np.iinfo(pixels.dtype).max - pixels.astype(np.int64)
        else:
            finite = pixels[np.isfinite(pixels)]
            pixels = (finite.max() if finite.size else 0.0) - pixels
    elif photometric == 3:  # palette
        if colormap is None or pixels.dtype.kind not in "bu":
            raise _error(path, "file is corrupt (palette TIFF without a colour map or with non-integer indices)")
        cmap = np.asarray(colormap).T
        index = pixels[..., 0].astype(np.intp)
        if index.max() >= cmap.shape[0]:
            raise _error(path, f"file is corrupt (palette index {index.max()} beyond the {cmap.shape[0]} colours)")
        pixels = cmap[index]
    elif photometric == 5:  # CMYK ink
        top = float(np.iinfo(pixels.dtype).max) if pixels.dtype.kind in "iu" else 1.0
        cmyk = pixels.astype(np.float64) / top
        rgb = (1.0 - cmyk[..., :3]) * (1.0 - cmyk[..., 3:4])
        pixels = (rgb * top).astype(arr.dtype) if arr.dtype.kind in "iu" else rgb
        notes.append("CMYK converted to RGB without colour management")
    if pixels.dtype.kind == "i" and arr.dtype.kind == "u":
        pixels = pixels.astype(arr.dtype)  # back from the wider type of the inversion
    if alpha is not None:
        if pixels.dtype != alpha.dtype:
            alpha = alpha.astype(np.float64)
            pixels = pixels.astype(np.float64)
        pixels = np.concatenate([pixels, alpha], axis=2)
    return pixels, notes


def _load_tiff(path, max_pixels):
    arr, info = _read_tiff_page(path, max_pixels)
    pixels, notes = _tiff_colour(path, arr, info["photometric"], info["colormap"], info["extra"])
    op = _TIFF_ORIENTATION_OPS.get(info["orientation"])
    if op is not None:
        pixels = np.ascontiguousarray(op(pixels))
        notes.append("TIFF orientation applied")
    try:
        image = from_array(pixels)
    except ImageLoadError as exc:
        raise _error(path, str(exc).split(": ", 1)[1]) from None
    image.mode = f"TIFF {image.mode}"
    image.notes.extend(notes + info["notes"])
    return image


# ---------------------------------------------------------------------------
# PNG. Pillow reduces 16-bit colour to 8 bits, so we decode those here; for
# the others we check that the pixel data are as long as the header says
# (Pillow loads a complete but short zlib stream as a black image) and then
# let Pillow decode them.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
# Adam7 passes: first column, first row, column step, row step.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
@kernel
def _png_unfilter(raw, height, stride, bpp):
    """Undo PNG scanline filters (types 0-4) in place order; returns rows."""
    out = np.empty((height, stride), dtype=np.uint8)
    pos = 0
    for y in range(height):
        ftype = raw[pos]
        pos += 1
        for x in range(stride):
            a = out[y, x - bpp] if x >= bpp else 0
            b = out[y - 1, x] if y > 0 else 0
            c = out[y - 1, x - bpp] if (y > 0 and x >= bpp) else 0
            v = raw[pos + x]
            if ftype == 0:
                r = v
            elif ftype == 1:
                r = v + a
            elif ftype == 2:
                r = v + b
            elif ftype == 3:
                r = v + (np.int32(a) + np.int32(b)) // 2
            elif ftype == 4:
                p = np.int32(a) + np.int32(b) - np.int32(c)
                pa = abs(p - np.int32(a))
                pb = abs(p - np.int32(b))
                pc = abs(p - np.int32(c))
                if pa <= pb and pa <= pc:
                    r = v + a
                elif pb <= pc:
                    r = v + b
                else:
                    r = v + c
            else:
                return out[:0]
            out[y, x] = r & 0xFF
        pos += stride
    return out


def _png_header(path, body):
    """Width, height, bit depth, colour type and interlace of an IHDR chunk."""
    if len(body) != 13:
        raise _error(path, f"file is corrupt (PNG header chunk holds {len(body)} bytes, not 13)")
    width, height, depth, colour_type, compression, filtering, interlace = struct.unpack(">IIBBBBB", body)
    if (depth not in _PNG_DEPTHS.get(colour_type, ()) or compression != 0 or filtering != 0
            or interlace not in (0, 1)):
        raise _error(path, "file is corrupt (invalid PNG header)")
    return width, height, depth, colour_type, interlace


def _png_data_size(width, height, depth, colour_type, interlace):
    """Bytes of filtered scanlines (a filter byte per row) the header allows."""
    bits = depth * _PNG_CHANNELS[colour_type]
    if not interlace:
        return height * (1 + (width * bits + 7) // 8)
    total = 0
    for x0, y0, dx, dy in _ADAM7:
        cols, rows = max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy))
        if cols and rows:
            total += rows * (1 + (cols * bits + 7) // 8)
    return total


def _read_png_chunks(path):
    """The header of a PNG and its IDAT chunks (as views of the file),
    checking every chunk's length and CRC on the way."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _error(path, f"cannot be read ({exc.strerror or exc})") from None
    view = memoryview(data)  # chunks as views: no copy of the pixel data
    pos = 8
    header = None
    idat = []
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", view[pos : pos + 8])
        if pos + 12 + length > len(data):
            raise _error(path, "file is truncated or corrupt (PNG chunk cut short)")
        body = view[pos + 8 : pos + 8 + length]
        crc = struct.unpack(">I", view[pos + 8 + length : pos + 12 + length])[0]
        if zlib.crc32(body, zlib.crc32(ctype)) & 0xFFFFFFFF != crc:
            raise _error(path, f"file is truncated or corrupt (bad CRC in PNG chunk {ctype!r})")
        if header is None and ctype != b"IHDR":
            raise _error(path, "file is corrupt (the PNG header chunk is not first)")
        if ctype == b"IHDR" and header is None:
            header = _png_header(path, body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
        pos += 12 + length
    else:
        raise _error(path, "file is truncated or corrupt (no PNG end chunk)")
    return header, idat


def _inflate_bounded(path, parts, size, out=None):
    """Inflate the zlib stream split over ``parts``, which must hold exactly
    ``size`` bytes, into ``out`` (or only count them when ``out`` is None).

    Stops as soon as the stream would give more: a small file must not make
    us inflate more than its header allows (a decompression bomb).
    """
    filled = 0
    inflater = zlib.decompressobj()
    try:
        for part in parts:
            data = part
            while data and not inflater.eof:
                # At most one byte beyond the expected size: enough to know
                # the stream is too long without inflating the rest.
                room = size + 1 - filled
                piece = inflater.decompress(data, room if out is not None else min(room, _INFLATE_STEP))
                if filled + len(piece) > size:
                    raise _error(path, "file is corrupt (pixel data inflate to more than the image size in its "
                                       "header: refused as a possible decompression bomb)")
                if out is not None:
                    out[filled:filled + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
                filled += len(piece)
                data = inflater.unconsumed_tail
            if inflater.eof:
                break
    except zlib.error as exc:
        raise _error(path, f"file is truncated or corrupt ({exc})") from None
    if not inflater.eof or filled != size:
        raise _error(path, f"file is truncated or corrupt (pixel data hold {filled:,} bytes; the header says "
                           f"{size:,})")
    return out


def _load_png(path, max_pixels):
    header, idat = _read_png_chunks(path)
    width, height, depth, colour_type, interlace = header
    _check_size(path, width, height, max_pixels)
    size = _png_data_size(width, height, depth, colour_type, interlace)
    if depth != 16 or colour_type not in (2, 4, 6):
        _inflate_bounded(path, idat, size)  # only checked: Pillow decodes it
        return _load_with_pillow(path, max_pixels)
    if interlace:
        # Rare for 16-bit colour; Pillow reads it (at 8 bits).
        _inflate_bounded(path, idat, size)
        image = _load_with_pillow(path, max_pixels)
        image.notes.append("interlaced 16-bit PNG read at 8 bits")
        return image
    channels = _PNG_CHANNELS[colour_type]
    bpp = channels * 2
    stride = width * bpp
    raw = _inflate_bounded(path, idat, size, np.empty(size, dtype=np.uint8))
    rows = _png_unfilter(raw, height, stride, bpp)
    if rows.shape[0] != height:
        raise _error(path, "file is corrupt (unknown PNG filter type)")
    arr = rows.view(">u2").reshape(height, width, channels).astype(np.uint16)
    image = from_array(arr)
    image.bit_depth = 16
    image.mode = {2: "RGB", 4: "grey+alpha", 6: "RGBA"}[colour_type] + " 16-bit"
    return image
