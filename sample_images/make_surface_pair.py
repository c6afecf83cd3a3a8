"""Generate the bundled defect-free / defective surface pair.

Run from the repository root: ``python sample_images/make_surface_pair.py``.
A brushed, slightly uneven metal-like surface; the defective one adds a
dark stain, a thin scratch and three small rust-coloured spots. Written by
the gmmseg authors and dedicated to the public domain (CC0).
"""

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

SIZE = 320
BASE = np.array([168.0, 164.0, 152.0])


def surface(seed):
    rng = np.random.RandomState(seed)
    # Brushing: noise smeared along x; slow shading across the part.
    streaks = ndimage.gaussian_filter(rng.normal(size=(SIZE, SIZE)), sigma=(0.6, 12.0)) * 60.0
    shading = ndimage.gaussian_filter(rng.normal(size=(SIZE, SIZE)), sigma=40.0) * 300.0
    grain = rng.normal(scale=4.0, size=(SIZE, SIZE, 3))
    img = BASE + (streaks + shading)[..., None] + grain
    return img


def add_defects(img, seed):
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    # A dark, soft-edged oil stain.
    r = np.hypot((yy - 90) / 1.3, xx - 210)
    stain = np.clip((26.0 - r) / 8.0, 0.0, 1.0)[..., None]
    img = img * (1 - 0.45 * stain) + stain * np.array([40.0, 30.0, 20.0]) * 0.45
    # A thin bright scratch.
    for t in np.linspace(0, 1, 600):
        y, x = int(200 + 80 * t), int(40 + 180 * t)
        img[y : y + 2, x] = img[y : y + 2, x] * 0.3 + 235 * 0.7
    # Small rust spots.
    for cy, cx in [(250, 260), (60, 60), (160, 120)]:
        spot = (np.hypot(yy - cy, xx - cx) < 3.5 + rng.rand())[..., None]
        img = np.where(spot, np.array([150.0, 75.0, 35.0]), img)
    return img


def main():
    here = Path(__file__).resolve().parent
    good = surface(1)
    bad = add_defects(surface(2), 3)
    for name, img in [("surface_good.png", good), ("surface_defect.png", bad)]:
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(here / name, optimize=True)


if __name__ == "__main__":
    main()
