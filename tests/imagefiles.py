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


def zlib_bomb(inflated_mib):
    """A valid zlib stream of ``inflated_mib`` MiB of zeros (about 1 KB per
    MiB), made in a blink."""
    block = bytes(1 << 20)
    compressor = zlib.compressobj(9)
    # Full flushes make the middle part byte-aligned; its window is all
    # zeros like the data, so it can be repeated. The checksum of the whole
    # is written by hand.
    head = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    middle = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.flush()
    adler = 1
    for _ in range(inflated_mib):
        adler = zlib.adler32(block, adler)
    return head + middle * (inflated_mib - 1) + tail[:-4] + struct.pack(">I", adler)


def png16_bomb(width=64, height=64, inflated_mib=64):
    """A valid 16-bit RGB PNG whose pixel data inflate to ``inflated_mib``
    MiB of zeros, far beyond the ``height * (6 * width + 1)`` bytes its
    header allows (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib_bomb(inflated_mib))
            + _chunk(b"IEND", b""))


def tiff_bomb(codec="zlib", inflated_mib=64):
    """A 64 x 64 grey TIFF in one deflate or LZMA strip that inflates to
    ``inflated_mib`` MiB (the strip allows 4 KiB)."""
    import io
    import lzma

    import tifffile

    if codec == "zlib":
        stream = zlib_bomb(inflated_mib)
    else:
        compressor = lzma.LZMACompressor(preset=0)
        block = bytes(1 << 20)
        stream = b"".join(compressor.compress(block) for _ in range(inflated_mib)) + compressor.flush()
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((64, 64), np.uint8), compression=codec, rowsperstrip=64)
    data = buffer.getvalue()
    # The bomb goes after everything else; the strip's offset and size point at it.
    data = patch_tiff_tag(data, 273, len(data), type_=4)
    return patch_tiff_tag(data, 279, len(stream), type_=4) + stream


def patch_tiff_tag(data, tag, value=None, count=None, type_=None):
    """A little-endian classic TIFF with one entry of its first IFD changed:
    its type, count and/or (inline SHORT or LONG) value. For files that
    lie about themselves."""
    data = bytearray(data)
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        pos = ifd + 2 + 12 * i
        entry_tag, entry_type = struct.unpack_from("<HH", data, pos)
        if entry_tag != tag:
            continue
        if type_ is not None:
            struct.pack_into("<H", data, pos + 2, type_)
            entry_type = type_
        if count is not None:
            struct.pack_into("<I", data, pos + 4, count)
        if value is not None:
            struct.pack_into("<HH" if entry_type == 3 else "<I", data, pos + 8, *((value, 0) if entry_type == 3 else (value,)))
        return bytes(data)
    raise KeyError(f"tag {tag} not in the first IFD")


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


def corner_regions_image(n, size, noise, seed):
    """Voronoi regions, each a distinct corner of the colour cube [0.2, 0.8]^3
    (so that noise rarely clips), with Gaussian noise; uint8 RGB."""
    rng = np.random.RandomState(seed)
    corners = np.array([[a, b, c] for a in (0.2, 0.8) for b in (0.2, 0.8) for c in (0.2, 0.8)])
    centres = rng.rand(n, 2) * size
    yy, xx = np.mgrid[:size, :size]
    truth = ((yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2).argmin(axis=2)
    img = corners[rng.permutation(8)[:n]][truth] + rng.normal(scale=noise, size=(size, size, 3))
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def surface(seed, size=256):
    """A brushed, unevenly shaded metal-like surface (float RGB 0-255)."""
    from scipy import ndimage

    rng = np.random.RandomState(seed)
    # 'wrap' keeps the texture's statistics the same up to the borders
    # (reflection would make the edges more extreme than the middle).
    streaks = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma=(0.6, 12.0), mode="wrap") * 60.0
    shading = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma=40.0, mode="wrap") * 300.0
    grain = rng.normal(scale=4.0, size=(size, size, 3))
    return np.array([168.0, 164.0, 152.0]) + (streaks + shading)[..., None] + grain


def paint_defects(img, seed, faint=False):
    """Paint a stain, a thin scratch and two small spots at random places.

    Returns ``(uint8 image, list of boolean masks, one per defect)``.
    """
    rng = np.random.RandomState(seed)
    size = img.shape[0]
    yy, xx = np.mgrid[:size, :size]
    out = img.copy()
    masks = []
    # Stain: darker, brownish, soft edge.
    cy, cx, r = rng.randint(30, size - 30), rng.randint(30, size - 30), rng.randint(9, 16)
    d = np.hypot(yy - cy, (xx - cx) / 1.3)
    alpha = np.clip((r - d) / 4.0, 0.0, 1.0)[..., None] * (0.3 if faint else 0.55)
    out = out * (1 - alpha) + alpha * np.array([70.0, 55.0, 35.0])
    masks.append(alpha[..., 0] >= 0.1)  # a visible change of 10 % or more
    # Thin scratch: a bright line, 1-2 pixels wide.
    y0, x0 = rng.randint(20, size - 80), rng.randint(20, size - 100)
    length, angle = rng.randint(50, 90), rng.uniform(-0.6, 0.6)
    scratch = np.zeros((size, size), bool)
    for t in np.linspace(0, 1, length * 3):
        y, x = int(y0 + t * length * np.sin(angle)), int(x0 + t * length * np.cos(angle))
        scratch[y : y + 2, x] = True
    strength = 0.45 if faint else 0.7
    out[scratch] = out[scratch] * (1 - strength) + 240.0 * strength
    masks.append(scratch)
    # Small spots of another colour.
    for _ in range(2):
        cy, cx = rng.randint(10, size - 10), rng.randint(10, size - 10)
        spot = np.hypot(yy - cy, xx - cx) < 3.2
        colour = np.array([150.0, 75.0, 35.0]) if not faint else np.array([160.0, 120.0, 95.0])
        out[spot] = colour
        masks.append(spot)
    return np.clip(out, 0, 255).astype(np.uint8), masks


def auroc(scores, truth):
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula."""
    from scipy.stats import rankdata

    scores, truth = np.asarray(scores, float), np.asarray(truth, bool)
    ranks = rankdata(scores)
    n_pos, n_neg = truth.sum(), (~truth).sum()
    return (ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def write_inspection_set(folder, ref_seeds, defect_seeds, good_seed):
    """Reference surfaces and a folder of parts (defective ones and one good)
    as PNG files; returns (reference paths, parts folder)."""
    from PIL import Image

    refs = []
    for seed in ref_seeds:
        path = folder / f"ref{seed}.png"
        Image.fromarray(np.clip(surface(seed), 0, 255).astype(np.uint8)).save(path)
        refs.append(path)
    parts = folder / "parts"
    parts.mkdir()
    for seed in defect_seeds:
        img, _ = paint_defects(surface(seed), seed)
        Image.fromarray(img).save(parts / f"part{seed}.png")
    Image.fromarray(np.clip(surface(good_seed), 0, 255).astype(np.uint8)).save(parts / "part99_good.png")
    return refs, parts


def paint_scratch(img, seed, width, strength=0.7):
    """Paint one straight bright scratch, ``width`` pixels thick in every
    column it crosses, over most of the image's width at a shallow random
    angle. Returns ``(uint8 image, boolean mask)``; the mask holds exactly
    ``width`` pixels per crossed column."""
    rng = np.random.RandomState(seed)
    size = img.shape[0]
    x0, x1 = 20, size - 20
    y0, slope = rng.randint(size // 2 - 40, size // 2 + 40), rng.uniform(-0.2, 0.2)
    mask = np.zeros(img.shape[:2], bool)
    for x in range(x0, x1):
        y = int(round(y0 + slope * (x - x0)))
        mask[y:y + width, x] = True
    out = img.copy()
    out[mask] = out[mask] * (1 - strength) + 240.0 * strength
    return np.clip(out, 0, 255).astype(np.uint8), mask
