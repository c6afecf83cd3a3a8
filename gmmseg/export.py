"""Every file gmmseg writes for a segmentation, in one place.

Per image, :func:`export_segmentation` writes into one folder:

* ``labels.png``: palette PNG, pixel value = component index, palette =
  component colours (:func:`display_colors`: the mean colours, distinct
  hues for grey images); masked-out pixels are index 255 (transparent).
* ``mask_<k>.png``: 8-bit, 255 where the label is k, else 0.
* ``probabilities.tif``: float32, H x W x K (tiled, 256 x 256; BigTIFF when
  larger than 4 GB).
* ``loglik.tif``: float32, H x W, log density per pixel (NaN if masked;
  tiled).
* ``anomaly.png``: 8-bit, 255 where the log-likelihood is below the
  anomaly threshold.
* ``overlay.png``: the image with the label colours blended over it.
* ``summary.json``: image, settings, components and anomaly statistics.

All writes are atomic (temporary file + rename) and nothing is written when
any target exists, unless ``overwrite`` is true. Each file is made when it
is written, from the segmentation's maps read a few million pixels at a
time: a large image never has all its outputs, or an (H, W, K) map, in
memory at once.
"""

import csv
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ._fileio import atomic_write, refuse_existing, write_json
from .engine import get_num_threads
from .inspection import InspectionResult
from .io import ImageData
from .params import MAX_COMPONENTS
from .segment import Segmentation

OUTPUTS = ("labels", "masks", "probabilities", "loglik", "anomaly", "overlay", "summary")
# labels.png: indices 0..254 are components, 255 marks masked pixels; the
# settings bound K by the same number (gmmseg.params.MAX_COMPONENTS).
MASKED_INDEX = MAX_COMPONENTS


def _colors_uint8(colors):
    return (np.clip(np.asarray(colors, dtype=np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# Colours that tell components apart on grey images: their mean colours are
# greys a few levels apart, so the label view would be grey on grey.
_DISTINCT = np.array([
    [0.12, 0.47, 0.71], [1.00, 0.50, 0.05], [0.17, 0.63, 0.17], [0.84, 0.15, 0.16], [0.58, 0.40, 0.74],
    [0.55, 0.34, 0.29], [0.89, 0.47, 0.76], [0.50, 0.50, 0.50], [0.74, 0.74, 0.13], [0.09, 0.75, 0.81],
])


def display_colors(component_colors, is_gray: bool) -> np.ndarray:
    """Colours to draw components with, (K, 3) in [0, 1]: their mean
    colours, or for grey images a set of distinct hues (component k always
    gets the same one). The application's views, ``labels.png`` and
    ``overlay.png`` all use these."""
    colors = np.asarray(component_colors, dtype=np.float64)
    if not is_gray:
        return colors
    K = colors.shape[0]
    if K <= len(_DISTINCT):
        return _DISTINCT[:K].copy()
    from skimage.color import hsv2rgb

    hues = (np.arange(K) * 0.618034) % 1.0  # golden-ratio steps: neighbours far apart in hue
    return hsv2rgb(np.stack([hues, np.full(K, 0.75), np.full(K, 0.9)], axis=1)[None])[0]


# PNG's optimize option tries every filter and compression setting: a few
# per cent smaller files, at several times the time. Above this many pixels
# the standard setting is used.
_OPTIMIZE_PNG_PIXELS = 4_000_000
TIFF_TILE = 256  # tile side of the float TIFFs (a multiple of 16, as TIFF asks)
# Classic TIFF addresses 4 GB; tifffile's own margin below it for the tags.
_BIGTIFF_BYTES = 2**32 - 2**25


def _png_options(shape):
    return {"optimize": True} if shape[0] * shape[1] <= _OPTIMIZE_PNG_PIXELS else {"compress_level": 6}


def _label_index(labels):
    """labels.png's uint8 values: components, MASKED_INDEX where masked."""
    return np.where(labels >= 0, labels, MASKED_INDEX).astype(np.uint8)


def label_png_writer(labels, colors):
    """Writer of a palette PNG: value = component, palette = colours.
    ``labels`` is an (H, W) array or a function that returns one."""
    K = len(colors)
    if K > MASKED_INDEX:
        raise ValueError(f"labels.png holds at most {MASKED_INDEX} components, got {K}.")
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:K] = _colors_uint8(colors)

    def write(tmp):
        index = labels() if callable(labels) else _label_index(labels)
        img = Image.frombytes("P", (index.shape[1], index.shape[0]), index.tobytes())
        img.putpalette(palette.ravel().tolist())
        img.save(tmp, format="PNG", transparency=MASKED_INDEX, **_png_options(index.shape))

    return write


def gray_png_writer(array):
    """Writer of an 8-bit greyscale PNG (``array``, or a function that
    returns it when the file is written)."""
    def write(tmp):
        data = np.ascontiguousarray(array() if callable(array) else array, dtype=np.uint8)
        Image.fromarray(data).save(tmp, format="PNG", **_png_options(data.shape))

    return write


def with_transparency(rgb_uint8: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The picture as RGBA with the masked-out (transparent) pixels
    transparent and black, so that an overlay does not show the colours
    hidden under a source's transparency; unchanged when every pixel is used."""
    if mask.all():
        return rgb_uint8
    out = np.zeros(rgb_uint8.shape[:2] + (4,), dtype=np.uint8)
    out[mask, :3] = rgb_uint8[mask]
    out[mask, 3] = 255
    return out


def rgb_png_writer(array):
    """Writer of an 8-bit RGB (or RGBA) PNG (``array``, or a function that returns it)."""
    def write(tmp):
        data = np.ascontiguousarray(array() if callable(array) else array, dtype=np.uint8)
        Image.fromarray(data).save(tmp, format="PNG")

    return write


def float_tiff_writer(array=None, *, shape=None, read_rows=None, chunks=None):
    """Writer of a float32 TIFF (H x W or H x W x K, samples interleaved),
    tiled (``TIFF_TILE`` square), as BigTIFF when larger than classic TIFF
    allows.

    Give ``array``, or its ``shape`` with ``read_rows(start, stop)`` and the
    row ``chunks`` to read it in (boundaries multiples of ``TIFF_TILE``):
    the file is then written tile by tile without the whole array.
    """
    import tifffile

    if array is not None:
        array = np.asarray(array, dtype=np.float32)
        shape = array.shape
        chunks = [(start, min(shape[0], start + 16 * TIFF_TILE)) for start in range(0, shape[0], 16 * TIFF_TILE)]

        def read_rows(start, stop):
            return array[start:stop]

    shape = tuple(int(n) for n in shape)
    big = int(np.prod(shape)) * 4 > _BIGTIFF_BYTES

    def tiles():
        for start, stop in chunks:
            if start % TIFF_TILE:
                raise ValueError("row chunks must start at multiples of the tile size")
            rows = np.asarray(read_rows(start, stop), dtype=np.float32)
            for y in range(0, stop - start, TIFF_TILE):
                for x in range(0, shape[1], TIFF_TILE):
                    yield np.ascontiguousarray(rows[y:y + TIFF_TILE, x:x + TIFF_TILE])

    def write(tmp):
        tifffile.imwrite(
            tmp, tiles(), shape=shape, dtype=np.float32, tile=(TIFF_TILE, TIFF_TILE), photometric="minisblack",
            planarconfig="contig" if len(shape) == 3 else None, compression="zlib", metadata=None, bigtiff=big,
            # tiles compressed on as many threads as the kernels use (one in
            # a batch's worker processes, which already fill the cores)
            maxworkers=get_num_threads(),
        )

    return write


def overlay_image(rgb_uint8: np.ndarray, labels: np.ndarray, colors: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """The image with each labelled pixel blended towards its component colour."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}.")
    palette = _colors_uint8(colors).astype(np.float32)
    result = np.empty(rgb_uint8.shape, dtype=np.uint8)
    step = max(1, (1 << 20) // max(rgb_uint8.shape[1], 1))  # rows at a time: float32 copies of a strip only
    for start in range(0, rgb_uint8.shape[0], step):
        out = rgb_uint8[start:start + step].astype(np.float32)
        part = labels[start:start + step]
        valid = part >= 0
        out[valid] = (1.0 - opacity) * out[valid] + opacity * palette[part[valid]]
        result[start:start + step] = out + 0.5
    return result


def plan_outputs(out_dir: str | os.PathLike, n_components: int, outputs: Iterable[str] = OUTPUTS) -> dict[str, Path]:
    """Paths that an export of ``outputs`` would write."""
    out_dir = Path(out_dir)
    unknown = set(outputs) - set(OUTPUTS)
    if unknown:
        raise ValueError(f"Unknown outputs {sorted(unknown)}; choose from {', '.join(OUTPUTS)}.")
    paths = {}
    for name in OUTPUTS:
        if name not in outputs:
            continue
        if name == "masks":
            for k in range(n_components):
                paths[f"mask_{k}"] = out_dir / f"mask_{k}.png"
        elif name in ("probabilities", "loglik"):
            paths[name] = out_dir / f"{name}.tif"
        elif name == "summary":
            paths[name] = out_dir / "summary.json"
        else:
            paths[name] = out_dir / f"{name}.png"
    return paths


def export_segmentation(
    segmentation: Segmentation,
    image: ImageData,
    out_dir: str | os.PathLike,
    *,
    outputs: Iterable[str] = OUTPUTS,
    overwrite: bool = False,
    anomaly_percentile: float = 1.0,
    anomaly_threshold: float | None = None,
    overlay_opacity: float = 0.5,
    settings: dict | None = None,
    progress: Callable[[int, int, str], object] | None = None,
) -> list[Path]:
    """Write the chosen outputs of a segmentation into ``out_dir``.

    Parameters
    ----------
    segmentation : Segmentation
    image : ImageData
        The segmented image (for the overlay and the summary).
    out_dir : path
        Created if needed.
    outputs : iterable of str
        Subset of :data:`OUTPUTS`.
    overwrite : bool
        Replace existing files; otherwise nothing is written when any target
        exists (:class:`OutputExistsError` names one).
    anomaly_percentile, anomaly_threshold : float
        Threshold of ``anomaly.png``: a log-likelihood value, or else a
        percentile of the image's own log-likelihoods.
    overlay_opacity : float
    settings : dict, optional
        Extra settings recorded in ``summary.json`` (e.g. the Segmenter's).
    progress : callable, optional
        ``progress(done, total, file_name)`` before each file is written.

    Returns
    -------
    list of Path
        The files written.
    """
    seg = segmentation
    paths = plan_outputs(out_dir, seg.n_components, outputs)
    refuse_existing(paths.values(), overwrite)
    threshold = anomaly_threshold if anomaly_threshold is not None else seg.anomaly_threshold(anomaly_percentile)
    anomaly = seg.anomaly_mask(threshold=threshold)
    colors = display_colors(seg.component_colors, image.is_gray)
    # Each file's pixels are made when it is written (see the module's notes).
    writers = {}
    chunks = seg.row_chunks(multiple=TIFF_TILE)
    for key in paths:
        if key == "labels":
            writers[key] = label_png_writer(lambda: _label_index(seg.labels), colors)
        elif key.startswith("mask_"):
            k = int(key.split("_")[1])
            writers[key] = gray_png_writer(lambda k=k: np.multiply(seg.labels == k, 255, dtype=np.uint8))
        elif key == "probabilities":
            writers[key] = float_tiff_writer(shape=seg.shape + (seg.n_components,), chunks=chunks,
                                             read_rows=lambda a, b: seg.map_rows("probabilities", a, b))
        elif key == "loglik":
            writers[key] = float_tiff_writer(shape=seg.shape, chunks=chunks,
                                             read_rows=lambda a, b: seg.map_rows("log_likelihood", a, b))
        elif key == "anomaly":
            writers[key] = gray_png_writer(lambda: np.multiply(anomaly, 255, dtype=np.uint8))
        elif key == "overlay":
            writers[key] = rgb_png_writer(
                lambda: with_transparency(overlay_image(image.to_uint8(), seg.labels, colors, overlay_opacity),
                                          seg.mask))
    written = []
    for key, path in paths.items():
        if key == "summary":
            continue
        if progress is not None:
            progress(len(written), len(paths), path.name)
        atomic_write(path, writers[key], overwrite=overwrite)
        written.append(path)
    if "summary" in paths:
        n_valid = int(seg.mask.sum())
        summary = {
            "image": {
                "source": str(image.source) if image.source is not None else None,
                "width": int(image.width),
                "height": int(image.height),
                "mode": image.mode,
                "bit_depth": int(image.bit_depth),
                "used_pixels": n_valid,
                "notes": list(image.notes),
            },
            "settings": settings or {},
            "components": seg.component_stats(),
            "anomaly": {
                "threshold_log_likelihood": float(threshold) if np.isfinite(threshold) else None,
                "percentile": None if anomaly_threshold is not None else float(anomaly_percentile),
                "flagged_pixels": int(anomaly.sum()),
                "flagged_fraction": float(anomaly.sum() / n_valid) if n_valid else 0.0,
            },
            "files": [p.name for p in written] + ["summary.json"],
        }
        if progress is not None:
            progress(len(written), len(paths), "summary.json")
        write_json(paths["summary"], summary, overwrite=overwrite)
        written.append(paths["summary"])
    if progress is not None:
        progress(len(written), len(paths), "")
    return written


# ---------------------------------------------------------------------------
# defect inspection
# One row per inspected image (gmmseg inspect --report, and the application's report).
# image_score and image_threshold are calibrated scores (the image fails when
# the first is above the second); pixel_threshold is on the unsmoothed
# negative log-likelihood, over which defect masks grow.
REPORT_FIELDS = ("input", "verdict", "image_score", "image_threshold", "pixel_threshold", "regions", "defect_area",
                 "defect_fraction", "status", "error", "output", "seconds")
REGION_FIELDS = ("region", "area", "x", "y", "width", "height", "centroid_x", "centroid_y", "mean_score", "max_score")


def inspection_overlay(rgb_uint8: np.ndarray, result: InspectionResult, color: tuple[int, int, int] = (255, 30, 30),
                       opacity: float = 0.45) -> np.ndarray:
    """The image with flagged pixels tinted and each region's box outlined."""
    out = rgb_uint8.astype(np.float32)
    tint = np.array(color, dtype=np.float32)
    out[result.mask] = (1.0 - opacity) * out[result.mask] + opacity * tint
    out = (out + 0.5).astype(np.uint8)
    h, w = result.mask.shape
    for region in result.regions:
        x, y, bw, bh = region.bbox
        x0, y0 = max(x - 2, 0), max(y - 2, 0)
        x1, y1 = min(x + bw + 1, w - 1), min(y + bh + 1, h - 1)
        out[y0:y1 + 1, [x0, x1]] = color
        out[[y0, y1], x0:x1 + 1] = color
    return out


def csv_writer(rows: Iterable[dict], fields: Sequence[str]) -> Callable[[str], None]:
    """Writer of a CSV table (header + one line per dict)."""
    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow(row)

    return write


def export_inspection(result: InspectionResult, image: ImageData, out_dir: str | os.PathLike, *, overwrite: bool = False,
                      summary: dict | None = None) -> list[Path]:
    """Write one image's inspection: anomaly.png (defect masks),
    overlay.png (regions outlined), regions.csv, score.tif (float32
    calibrated score map) and summary.json (verdict, image score, image and
    pixel thresholds, regions). Nothing is written if any target exists,
    unless ``overwrite``."""
    out_dir = Path(out_dir)
    paths = {name: out_dir / name for name in ("anomaly.png", "overlay.png", "regions.csv", "score.tif", "summary.json")}
    refuse_existing(paths.values(), overwrite)
    atomic_write(paths["anomaly.png"], gray_png_writer(np.multiply(result.mask, 255, dtype=np.uint8)), overwrite=overwrite)
    atomic_write(paths["overlay.png"], rgb_png_writer(with_transparency(inspection_overlay(image.to_uint8(), result),
                                                                                image.mask)), overwrite=overwrite)
    atomic_write(paths["regions.csv"], csv_writer([r.as_dict() for r in result.regions], REGION_FIELDS), overwrite=overwrite)
    atomic_write(paths["score.tif"], float_tiff_writer(result.score), overwrite=overwrite)
    data = {
        "verdict": result.verdict,
        "image_score": result.image_score if np.isfinite(result.image_score) else None,
        "image_threshold": result.image_threshold,
        "pixel_threshold": result.pixel_threshold,
        "regions": [r.as_dict() for r in result.regions],
        **(summary or {}),
    }
    write_json(paths["summary.json"], data, overwrite=overwrite)
    return list(paths.values())
