"""Where gmmseg finds its bundled files, in a checkout and in an installed wheel."""

from importlib import resources
from pathlib import Path


def resource(name):
    """Path of a bundled resource file (icons, style sheet, app icon).

    Raises FileNotFoundError naming the file when it is missing from the
    installation.
    """
    path = Path(str(resources.files("gmmseg.resources").joinpath(name)))
    if not path.is_file():
        raise FileNotFoundError(f"gmmseg resource {name!r} is missing from the installation ({path}).")
    return path


def sample_images_dir():
    """The bundled sample images: the checkout's ``sample_images`` folder, or
    the copy installed with the package; None when neither exists."""
    candidate = Path(__file__).resolve().parent.parent / "sample_images"
    if candidate.is_dir():
        return candidate
    try:
        installed = Path(str(resources.files("gmmseg.sample_images")))
    except ModuleNotFoundError:
        return None
    return installed if installed.is_dir() else None
