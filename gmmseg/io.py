"""Loading images of every common kind.

Every loader returns an :class:`ImageData`: float32 pixels scaled to [0, 1]
with 1 (grey) or 3 (RGB) channels, a mask of the pixels to use (opaque and
finite), the bit depth and where the image came from. Problems raise one
:class:`ImageLoadError` that names the file and what is wrong with it.
"""

import os
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ._jit import kernel

# Pillow's own decompression-bomb limit (about 89.5 megapixels) is our default.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485

# File name endings taken as images when listing a folder.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jfif", ".tif", ".tiff", ".bmp", ".webp", ".gif",
                            ".ppm", ".pgm", ".pbm"})

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_pil_limit_lock = threading.Lock()


class ImageLoadError(ValueError):
    """An image could not be loaded; the message names the file and why."""


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


def load_image(source: "str | os.PathLike | ImageData | np.ndarray", *, max_pixels: int = MAX_PIXELS) -> ImageData:
    """Load an image from a path, an ``ImageData`` or a NumPy array.

    Parameters
    ----------
    source : str, Path, ImageData or ndarray
        A file (PNG, JPEG, TIFF, BMP, WebP, GIF, ... in 1/8/16-bit or float,
        grey, grey+alpha, RGB, RGBA, palette or CMYK), an ``ImageData``
        (returned as is) or an (H, W), (H, W, 1), (H, W, 2), (H, W, 3) or
        (H, W, 4) array.
    max_pixels : int
        Refuse larger images (decompression-bomb protection).

    Returns
    -------
    ImageData

    Raises
    ------
    ImageLoadError
        The file is missing, empty, not an image, truncated, corrupt or too
        large; the message names the file and the problem.
    """
    if isinstance(source, ImageData):
        return source
    if isinstance(source, np.ndarray):
        return from_array(source)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"Expected a path, an ImageData or a NumPy array, got {type(source).__name__}.")
    path = Path(source)
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
    if head.startswith(_TIFF_SIGNATURES):
        image = _load_tiff(path, max_pixels)
    elif head.startswith(_PNG_SIGNATURE) and _png_is_16bit_colour(head):
        image = _load_png16(path, max_pixels)
    else:
        image = _load_with_pillow(path, max_pixels)
    image.source = path
    return image


def _check_size(path, width, height, max_pixels):
    if width <= 0 or height <= 0:
        raise _error(path, f"image has no pixels ({width} x {height})")
    if width * height > max_pixels:
        raise _error(
            path,
            f"image is too large ({width} x {height} = {width * height / 1e6:.1f} megapixels; "
            f"the limit is {max_pixels / 1e6:.1f} megapixels to protect against "
            "decompression bombs). Pass max_pixels=... to load it anyway.",
        )


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


def _scale(colour):
    """Scale colour values to [0, 1]; returns (bit_depth, value_range, array)."""
    kind = colour.dtype.kind
    if kind == "b":
        return 1, (0.0, 1.0), colour.astype(np.float32)
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


def _load_tiff(path, max_pixels):
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages:
                raise _error(path, "TIFF file holds no image")
            page = tif.pages[0]
            _check_size(path, int(page.imagewidth), int(page.imagelength), max_pixels)
            arr = page.asarray()
            photometric = int(page.photometric)
            colormap = page.colormap
            orientation = page.tags.get(274)
            orientation = int(orientation.value) if orientation is not None else 1
            extrasamples = tuple(page.extrasamples) if page.extrasamples else ()
    except ImageLoadError:
        raise
    except (tifffile.TiffFileError, OSError, ValueError, KeyError, IndexError, zlib.error) as exc:
        raise _error(path, f"not a readable TIFF file ({exc})") from None
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (1, 2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar samples
    if arr.ndim > 3:
        arr = arr.reshape(arr.shape[-3:]) if arr.shape[-1] in (1, 2, 3, 4) else arr[(0,) * (arr.ndim - 2)]
    notes = []
    if photometric == 0:  # MINISWHITE
        arr = (np.iinfo(arr.dtype).max - arr) if arr.dtype.kind in "iu" else (arr.max() - arr)
    elif photometric == 3 and colormap is not None:  # palette
        cmap = np.asarray(colormap).T
        arr = cmap[arr]
    elif photometric == 5 and arr.ndim == 3 and arr.shape[2] >= 4:  # CMYK ink
        top = float(np.iinfo(arr.dtype).max) if arr.dtype.kind in "iu" else 1.0
        cmyk = arr[..., :4].astype(np.float64) / top
        rgb = (1.0 - cmyk[..., :3]) * (1.0 - cmyk[..., 3:4])
        arr = (rgb * top).astype(arr.dtype) if arr.dtype.kind in "iu" else rgb
        notes.append("CMYK converted to RGB without colour management")
    if arr.ndim == 3 and arr.shape[2] > 4:
        arr = arr[..., :4] if extrasamples else arr[..., :3]
    op = _TIFF_ORIENTATION_OPS.get(orientation)
    if op is not None:
        arr = np.ascontiguousarray(op(arr))
        notes.append("TIFF orientation applied")
    try:
        image = from_array(arr)
    except ImageLoadError as exc:
        raise _error(path, str(exc).split(": ", 1)[1]) from None
    image.mode = f"TIFF {image.mode}"
    image.notes.extend(notes)
    return image


# ---------------------------------------------------------------------------
# 16-bit colour PNG: Pillow reduces these to 8 bits, so we decode them here.
def _png_is_16bit_colour(head):
    # IHDR is the first chunk: signature(8) length(4) type(4) w(4) h(4) depth(1) colour(1)
    if len(head) < 26 or head[12:16] != b"IHDR":
        return False
    depth, colour_type = head[24], head[25]
    return depth == 16 and colour_type in (2, 4, 6)


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


def _png16_header(path, body):
    """Width, height, colour type and interlace of a 16-bit colour PNG's IHDR."""
    if len(body) != 13:
        raise _error(path, f"file is corrupt (PNG header chunk holds {len(body)} bytes, not 13)")
    width, height, depth, colour_type, compression, filtering, interlace = struct.unpack(">IIBBBBB", body)
    if depth != 16 or colour_type not in (2, 4, 6) or compression != 0 or filtering != 0 or interlace not in (0, 1):
        raise _error(path, "file is corrupt (invalid PNG header)")
    return width, height, colour_type, interlace


def _inflate_bounded(path, parts, size):
    """Inflate the concatenated zlib stream of ``parts`` into exactly
    ``size`` bytes, stopping as soon as it would produce more: a small file
    must not be able to make us allocate what its header does not allow (a
    decompression bomb)."""
    out = np.empty(size, dtype=np.uint8)
    filled = 0
    inflater = zlib.decompressobj()
    try:
        for part in parts:
            data = part
            while data and not inflater.eof:
                # At most one byte beyond the expected size: enough to know
                # the stream is too long without inflating the rest.
                piece = inflater.decompress(data, size + 1 - filled)
                if filled + len(piece) > size:
                    raise _error(path, "file is corrupt (pixel data inflate to more than the image size in its "
                                       "header: refused as a possible decompression bomb)")
                out[filled:filled + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
                filled += len(piece)
                data = inflater.unconsumed_tail
            if inflater.eof:
                break
    except zlib.error as exc:
        raise _error(path, f"file is truncated or corrupt ({exc})") from None
    if not inflater.eof or filled != size:
        raise _error(path, "file is truncated or corrupt (pixel data has the wrong size)")
    return out


def _load_png16(path, max_pixels):
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
            header = _png16_header(path, body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
        pos += 12 + length
    else:
        raise _error(path, "file is truncated or corrupt (no PNG end chunk)")
    width, height, colour_type, interlace = header
    _check_size(path, width, height, max_pixels)
    if interlace:
        # Rare for 16-bit colour; Pillow reads it (at 8 bits).
        image = _load_with_pillow(path, max_pixels)
        image.notes.append("interlaced 16-bit PNG read at 8 bits")
        return image
    channels = {2: 3, 4: 2, 6: 4}[colour_type]
    bpp = channels * 2
    stride = width * bpp
    raw = _inflate_bounded(path, idat, height * (stride + 1))
    rows = _png_unfilter(raw, height, stride, bpp)
    if rows.shape[0] != height:
        raise _error(path, "file is corrupt (unknown PNG filter type)")
    arr = rows.view(">u2").reshape(height, width, channels).astype(np.uint16)
    image = from_array(arr)
    image.bit_depth = 16
    image.mode = {2: "RGB", 4: "grey+alpha", 6: "RGBA"}[colour_type] + " 16-bit"
    return image
