"""From napari layers to gmmseg images and from gmmseg results to napari
layer data, with neither Qt nor napari (plain arrays and dicts).

Layer data are napari's ``(data, kwargs, layer_type)`` tuples, the form a
reader returns and ``napari.layers.Layer.create`` takes. Labels layers hold
``component + 1`` so that 0 is napari's background: masked (transparent)
pixels are 0 and show nothing.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..export import display_colors
from ..inspection import InspectionResult, Region
from ..io import ImageData, ImageLoadError, from_array
from ..segment import Segmentation

LayerData = tuple[Any, dict[str, Any], str]

#: Colour of anomalous pixels and of defect masks (the application's).
ANOMALY_RGBA = (1.0, 40 / 255, 40 / 255, 1.0)
#: Colour of the defect rectangles' edges and numbers (napari's Shapes take
#: colour names and hex strings).
REGION_COLOR = "#ffd900"
TRANSPARENT = (0.0, 0.0, 0.0, 0.0)
#: The key of a result layer's ``metadata`` that marks it as gmmseg's (the
#: widget never offers its own results as images to segment).
RESULT_KEY = "gmmseg_result"
#: What the result layers are called: ``"<image layer> <suffix>"``.
SUFFIXES = {
    "labels": "gmm labels",
    "probabilities": "gmm probabilities",
    "log_likelihood": "gmm log-likelihood",
    "anomaly": "gmm anomaly",
    "score": "anomaly score",
    "defects": "defects",
    "regions": "defect regions",
}


class LayerError(ValueError):
    """A layer that gmmseg cannot segment; the message says why and what to do."""


def image_from_layer(layer: Any) -> ImageData:
    """The pixels of a napari Image layer as an :class:`gmmseg.ImageData`.

    Parameters
    ----------
    layer : napari.layers.Image
        Read through ``data``, ``rgb``, ``multiscale`` and ``name`` only. A 2D
        layer is a grey image, a 2D RGB layer (napari's ``rgb``) colour, with
        a fourth channel as alpha: transparent pixels (alpha 0) are left out,
        as when gmmseg reads an RGBA file. A multiscale layer gives its
        full-resolution level.

    Raises
    ------
    LayerError
        The layer is not a 2D grey, RGB or RGBA image (a 3D stack, a time
        series, an image of other channels) or its values are not numbers.
    """
    name = str(getattr(layer, "name", "layer"))
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    shape = tuple(int(n) for n in data.shape)
    rgb = bool(getattr(layer, "rgb", False))
    spatial = shape[:-1] if rgb else shape
    if len(spatial) != 2:
        kind = "RGB " if rgb else ""
        raise LayerError(
            f"'{name}' is a {len(spatial)}D {kind}layer of shape {shape}: gmmseg segments 2D grey, RGB and RGBA "
            "images. Add one plane as a layer of its own (e.g. viewer.add_image(layer.data[i])), or colour "
            "channels as one RGB layer (rgb=True)."
        )
    if rgb and shape[-1] not in (3, 4):
        raise LayerError(f"'{name}' has {shape[-1]} colour channels: gmmseg reads RGB (3) and RGBA (4).")
    try:
        return from_array(np.asarray(data))
    except ImageLoadError as exc:
        raise LayerError(str(exc).replace("<array>", f"'{name}'", 1)) from None


def result_name(image_name: str, what: str) -> str:
    """The name of a result layer of an image layer (see :data:`SUFFIXES`)."""
    return f"{image_name} {SUFFIXES[what]}"


def _placement(scale: Sequence[float] | None, translate: Sequence[float] | None, leading: int = 0) -> dict:
    """``scale`` and ``translate`` of a result layer over its 2D image layer,
    with ``leading`` extra axes in front (the probabilities' K axis)."""
    out: dict[str, Any] = {}
    if scale is not None:
        out["scale"] = (1.0,) * leading + tuple(float(s) for s in scale)
    if translate is not None:
        out["translate"] = (0.0,) * leading + tuple(float(t) for t in translate)
    return out


def label_colormap(colors: np.ndarray) -> dict:
    """A napari labels colour dict: label ``k + 1`` in ``colors[k]`` (RGB in
    [0, 1]), 0 and unknown labels transparent."""
    mapping: dict[Any, tuple] = {None: TRANSPARENT, 0: TRANSPARENT}
    for k, rgb in enumerate(np.clip(np.asarray(colors, dtype=np.float64), 0.0, 1.0)):
        mapping[k + 1] = (float(rgb[0]), float(rgb[1]), float(rgb[2]), 1.0)
    return mapping


def labels_data(labels: np.ndarray) -> np.ndarray:
    """Component labels (-1 masked) as napari labels (``k + 1``, 0 masked),
    in the smallest unsigned type that holds them."""
    dtype = np.uint8 if labels.max(initial=-1) < 254 else np.uint16
    return (labels + 1).astype(dtype)


def finite_limits(values: np.ndarray, low: float = 0.5, high: float = 100.0) -> tuple[float, float]:
    """Contrast limits from percentiles of the finite values (NaN marks
    masked pixels, which napari's own range would turn into NaN limits)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, [low, high]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def anomaly_layer(segmentation: Segmentation, image_name: str, percentile: float, **placement: Any) -> LayerData:
    """The anomaly Labels layer: 1 where a pixel's log-likelihood is among
    the lowest ``percentile`` % of the image's."""
    mask = segmentation.anomaly_mask(percentile=percentile)
    kwargs = {"name": result_name(image_name, "anomaly"),
              "colormap": {None: TRANSPARENT, 0: TRANSPARENT, 1: ANOMALY_RGBA}, **_placement(**placement)}
    return mask.astype(np.uint8), kwargs, "labels"


def segmentation_layers(segmentation: Segmentation, image_name: str, *, anomaly_percentile: float = 1.0,
                        scale: Sequence[float] | None = None, translate: Sequence[float] | None = None,
                        is_gray: bool = False) -> list[LayerData]:
    """The layers of a segmentation, bottom to top: the probabilities (one
    plane per component, hidden), the log-likelihood (hidden), the labels in
    the components' mean colours (distinct hues for a grey image, as the
    application and labels.png) and the anomaly mask.

    Parameters
    ----------
    segmentation : Segmentation
    image_name : str
        The image layer's name; the result layers are named after it.
    anomaly_percentile : float
        The anomaly layer flags this percentage of the used pixels, those of
        lowest log-likelihood (as ``gmmseg segment`` does for anomaly.png).
    scale, translate : sequence of float, optional
        The image layer's, so the results lie over it.
    is_gray : bool
        The image is grey: its components' mean colours are greys too close
        to tell apart.
    """
    place = {"scale": scale, "translate": translate}
    stats = segmentation.component_stats()
    features = {
        "index": [0] + [s["index"] + 1 for s in stats],
        "component": ["(masked)"] + [s["name"] for s in stats],
        "weight": [float("nan")] + [round(s["weight"], 4) for s in stats],
        "area_fraction": [float("nan")] + [round(s["area_fraction"], 4) for s in stats],
    }
    labels = (labels_data(segmentation.labels),
              {"name": result_name(image_name, "labels"), "colormap": label_colormap(display_colors(segmentation.component_colors, is_gray)),
               "features": features, "opacity": 0.6, **_placement(**place)}, "labels")
    # (K, H, W): napari gives the stacked axis a slider. A view, not a copy.
    probabilities = (np.moveaxis(segmentation.probabilities, 2, 0),
                     {"name": result_name(image_name, "probabilities"), "colormap": "magma",
                      "contrast_limits": (0.0, 1.0), "visible": False, **_placement(leading=1, **place)}, "image")
    log_likelihood = (segmentation.log_likelihood,
                      {"name": result_name(image_name, "log_likelihood"), "colormap": "viridis",
                       "contrast_limits": finite_limits(segmentation.log_likelihood), "visible": False,
                       **_placement(**place)}, "image")
    return [probabilities, log_likelihood, labels, anomaly_layer(segmentation, image_name, anomaly_percentile, **place)]


def region_rectangles(regions: Sequence[Region]) -> list[np.ndarray]:
    """Each region's bounding box as napari rectangle corners, (row, column)
    in pixel coordinates: pixel ``i`` spans ``i - 0.5`` to ``i + 0.5``."""
    boxes = []
    for region in regions:
        x, y, w, h = region.bbox
        top, left, bottom, right = y - 0.5, x - 0.5, y + h - 0.5, x + w - 0.5
        boxes.append(np.array([[top, left], [top, right], [bottom, right], [bottom, left]], dtype=np.float64))
    return boxes


def inspection_layers(result: InspectionResult, image_name: str, *, scale: Sequence[float] | None = None,
                      translate: Sequence[float] | None = None) -> list[LayerData]:
    """The layers of an inspection, bottom to top: the calibrated anomaly
    score (hidden), the defect mask and the defect regions' rectangles,
    numbered as in the regions table."""
    place = {"scale": scale, "translate": translate}
    score = (result.score, {"name": result_name(image_name, "score"), "colormap": "inferno",
                            "contrast_limits": finite_limits(result.score, 0.0, 100.0), "visible": False,
                            **_placement(**place)}, "image")
    defects = (result.mask.astype(np.uint8),
               {"name": result_name(image_name, "defects"), "colormap": {None: TRANSPARENT, 0: TRANSPARENT,
                                                                         1: ANOMALY_RGBA}, **_placement(**place)},
               "labels")
    regions = list(result.regions)
    table = {key: [r.as_dict()[key] for r in regions] for key in ("region", "area", "mean_score", "max_score")}
    shapes = (region_rectangles(regions),
              {"name": result_name(image_name, "regions"), "shape_type": "rectangle", "edge_color": REGION_COLOR,
               "face_color": "transparent", "edge_width": 2, "features": table,
               "text": {"string": "{region}", "color": REGION_COLOR, "anchor": "upper_left", "size": 10},
               **_placement(**place)}, "shapes")
    return [score, defects, shapes]
