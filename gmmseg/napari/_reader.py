"""napari reader of gmmseg model files, and the sample images.

A model file holds no pixels: opening one in napari docks the gmmseg widget
and loads the model into it (ready to Apply; an inspection model is the
reference model too), and gives napari no layer (its ``[(None,)]``).
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..io import load_image
from ..paths import sample_images_dir
from ..persistence import FORMAT, ModelFileError, read_document

PLUGIN = "gmmseg"
WIDGET = "GMM segmentation"


def _is_model_file(path: Any) -> bool:
    if not isinstance(path, (str, Path)) or Path(path).suffix.lower() != ".json":
        return False
    try:
        return read_document(path).get("format") == FORMAT
    except ModelFileError:
        return False  # another JSON file: napari asks its other readers


def get_reader(path: str | list[str]) -> Callable[[str], list] | None:
    """napari's reader hook: a reader for a gmmseg model file, else None."""
    return read_model if _is_model_file(path) else None


def read_model(path: str) -> list:
    """Load a model file into the gmmseg widget of the current viewer."""
    import napari

    viewer = napari.current_viewer()
    if viewer is None:
        raise ValueError(f"{path}: a gmmseg model file holds no image; open it in napari's viewer, which loads it "
                         "into the gmmseg widget.")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget.load_model(path)
    return [(None,)]


def _sample(name: str, layer_name: str) -> list:
    folder = sample_images_dir()
    if folder is None:
        raise FileNotFoundError("gmmseg's sample images are missing from the installation.")
    image = load_image(folder / name)
    pixels = image.to_uint8() if not image.is_gray else (image.pixels[:, :, 0] * 255 + 0.5).astype(np.uint8)
    return [(pixels, {"name": layer_name, "rgb": not image.is_gray})]


def sample_astronaut() -> list:
    """The astronaut photo (colour regions)."""
    return _sample("astronaut.jpg", "astronaut")


def sample_surface_good() -> list:
    """A defect-free surface (a reference for inspection)."""
    return _sample("surface_good.png", "surface good")


def sample_surface_defect() -> list:
    """The same kind of surface with defects."""
    return _sample("surface_defect.png", "surface defect")
