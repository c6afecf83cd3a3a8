"""Charts drawn with Pillow (no plotting library needed), e.g. BIC/AIC curves."""

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_SERIES = (("bic", "BIC", (31, 119, 180)), ("aic", "AIC", (255, 127, 14)))
_BIC_300 = (("bic_300", "BIC at 300 pixels", (31, 119, 180)),)


def criterion_series(criterion):
    """(row key, label, colour) of the curves that show a K criterion: the
    effective-sample BIC alone (its scale is not BIC's), or BIC and AIC."""
    return _BIC_300 if criterion == "bic-300" else _SERIES


def _font(size):
    for name in ("DejaVuSans.ttf", "Arial.ttf", "LiberationSans-Regular.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default()


def _nice_ticks(lo, hi, count=5):
    """Round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    magnitude = 10 ** np.floor(np.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    start = np.floor(lo / step) * step
    return [start + i * step for i in range(int(np.ceil((hi - start) / step)) + 1)]


def _fmt(value):
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3f}".rstrip("0").rstrip(".") + suffix
    return f"{value:.6g}"


def criterion_chart(selection, title="Model selection", size=(900, 540)):
    """The criterion that chose K (BIC and AIC for those two) against K (one
    covariance type: the best one's rows), the best K marked. Returns a PIL
    RGB image."""
    series = criterion_series(selection.criterion)
    rows = [r for r in selection.rows if r["covariance_type"] == selection.best_covariance_type]
    ks = np.array([r["k"] for r in rows], dtype=float)
    W, H = size
    left, right, top, bottom = 90, 30, 60, 70
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font, small, big = _font(15), _font(13), _font(18)
    values = np.array([[r[key] for key, _, _ in series] for r in rows])
    ticks = _nice_ticks(float(values.min()), float(values.max()))
    y_lo, y_hi = ticks[0], ticks[-1]
    x_lo, x_hi = ks.min() - 0.5, ks.max() + 0.5

    def px(k, v):
        x = left + (k - x_lo) / (x_hi - x_lo) * (W - left - right)
        y = top + (y_hi - v) / (y_hi - y_lo) * (H - top - bottom)
        return x, y

    for t in ticks:  # horizontal grid and y labels
        _, y = px(x_lo, t)
        draw.line([(left, y), (W - right, y)], fill=(230, 230, 230))
        draw.text((left - 8, y), _fmt(t), fill=(60, 60, 60), font=small, anchor="rm")
    for k in ks:
        x, _ = px(k, y_lo)
        draw.line([(x, H - bottom), (x, H - bottom + 5)], fill=(60, 60, 60))
        draw.text((x, H - bottom + 8), f"{int(k)}", fill=(60, 60, 60), font=small, anchor="mt")
    draw.rectangle([left, top, W - right, H - bottom], outline=(120, 120, 120))
    draw.text((W / 2, H - 22), "number of components K", fill=(30, 30, 30), font=font, anchor="mm")
    draw.text((left, 22), title, fill=(20, 20, 20), font=big, anchor="lm")

    for column, (_key, label, colour) in enumerate(series):
        points = [px(k, v) for k, v in zip(ks, values[:, column])]
        if len(points) > 1:
            draw.line(points, fill=colour, width=3)
        for x, y in points:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
        lx = W - right - 90 * len(series) - 90 + column * 90
        draw.line([(lx, 30), (lx + 24, 30)], fill=colour, width=3)
        draw.text((lx + 30, 30), label, fill=(30, 30, 30), font=font, anchor="lm")

    best = [r for r in rows if r["k"] == selection.best_k]
    if best:
        crit = selection.criterion
        x, y = px(best[0]["k"], best[0][crit.replace("-", "_")])
        draw.ellipse([x - 9, y - 9, x + 9, y + 9], outline=(200, 0, 0), width=3)
        anchor = "rb" if x > W - right - 120 else "lb" if x < left + 120 else "mb"
        draw.text((x, y - 14), f"best K = {selection.best_k} ({crit.upper()})", fill=(200, 0, 0), font=font, anchor=anchor)
    return img
