"""Charts written to files with matplotlib (Agg, no display): the K criterion
against K (``gmmseg select-k --plot``). matplotlib is imported when a chart
is drawn, so ``import gmmseg`` stays light."""

import io

import numpy as np
from PIL import Image

_SERIES = (("bic", "BIC", (31, 119, 180)), ("aic", "AIC", (255, 127, 14)))
_BIC_300 = (("bic_300", "BIC at 300 pixels", (31, 119, 180)),)
_MARKERS = {"bic": ("o", "-"), "bic_300": ("o", "-"), "aic": ("^", "--")}


def criterion_series(criterion):
    """(row key, label, colour) of the curves that show a K criterion: the
    effective-sample BIC alone (its scale is not BIC's), or BIC and AIC."""
    return _BIC_300 if criterion == "bic-300" else _SERIES


def criterion_chart(selection, title="Model selection", size=(900, 540)):
    """The criterion that chose K (BIC and AIC for those two) against K, for
    the best covariance type's rows, the chosen K marked. BIC and AIC get a
    panel each, one above the other with the same K axis: at image sizes
    their values differ by far less than their size, so on one axis (or on
    two scaled alike) one curve would hide the other.

    Returns a PIL RGB image of ``size`` pixels.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = [r for r in selection.rows if r["covariance_type"] == selection.best_covariance_type]
    ks = np.array([r["k"] for r in rows])
    series = criterion_series(selection.criterion)
    dpi = 100
    figure = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    panels = figure.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
    panels[0].set_title(title)
    chosen_key = selection.criterion.replace("-", "_")
    for axes, (key, label, colour) in zip(panels, series):
        marker, style = _MARKERS[key]
        values = np.array([r[key] for r in rows], dtype=float)
        rgb = tuple(c / 255 for c in colour)
        axes.plot(ks, values, marker=marker, linestyle=style, color=rgb, label=label)
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
        axes.axvline(selection.best_k, color="#c62828", linestyle=":", linewidth=1)
        best = [r for r in rows if r["k"] == selection.best_k]
        if key == chosen_key and best:
            axes.plot([selection.best_k], [best[0][key]], marker="*", markersize=18, color="#c62828",
                      linestyle="none", label=f"chosen K = {selection.best_k} (lowest {label})")
        axes.legend(loc="upper right")
    panels[-1].set_xlabel("number of components K")
    panels[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    if selection.at_edge:
        panels[-1].text(0.01, 0.04, "the chosen K is at the edge of the range: a K outside it may be better",
                        transform=panels[-1].transAxes, color="#c62828", fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")
