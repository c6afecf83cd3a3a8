"""Writers for test images that Pillow cannot produce (16-bit colour PNG)."""

import struct
import zlib

import numpy as np


def _chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def png16_bytes(array, width=None, height=None):
    """A 16-bit PNG of an (H, W, C) uint16 array, C in (2, 3, 4), using every
    filter type in turn (row y uses filter y % 5) to exercise the decoder.
    ``width``/``height`` override the header (to fake huge images)."""
    h, w, c = array.shape
    colour_type = {2: 4, 3: 2, 4: 6}[c]
    raw_rows = array.astype(">u2").reshape(h, w * c).view(np.uint8).reshape(h, w * c * 2).astype(np.int32)
    bpp = c * 2
    out = bytearray()
    prior = np.zeros(w * c * 2, dtype=np.int32)
    for y in range(h):
        row = raw_rows[y]
        left = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int32), prior[:-bpp]])
        ftype = y % 5
        if ftype == 0:
            filtered = row
        elif ftype == 1:
            filtered = row - left
        elif ftype == 2:
            filtered = row - prior
        elif ftype == 3:
            filtered = row - (left + prior) // 2
        else:
            filtered = row - _paeth(left, prior, upleft)
        out.append(ftype)
        out.extend((filtered & 0xFF).astype(np.uint8).tobytes())
        prior = row
    ihdr = struct.pack(">IIBBBBB", width or w, height or h, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(bytes(out)))
            + _chunk(b"IEND", b""))


def voronoi_image(size=160, n_regions=5, noise=0.12, seed=0):
    """Voronoi-like regions, a Gaussian colour per region, strong noise.

    Returns ``(rgb float in [0, 1], true labels)``.
    """
    rng = np.random.RandomState(seed)
    centres = rng.rand(n_regions, 2) * size
    yy, xx = np.mgrid[:size, :size]
    d = (yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2
    truth = d.argmin(axis=2)
    palette = np.array([[0.85, 0.2, 0.2], [0.2, 0.7, 0.25], [0.2, 0.3, 0.85], [0.9, 0.85, 0.2], [0.6, 0.3, 0.7],
                        [0.3, 0.8, 0.8], [0.5, 0.5, 0.5]])[:n_regions]
    img = palette[truth] + rng.normal(scale=noise, size=(size, size, 3))
    return np.clip(img, 0.0, 1.0), truth
