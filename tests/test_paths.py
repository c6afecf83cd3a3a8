"""Bundled resources are found through the one helper (also in a wheel:
pyproject maps resources/ into the package as gmmseg.resources)."""

import pytest

from gmmseg.paths import resource, sample_images_dir


def test_app_icon_and_toolbar_icons_are_found():
    assert resource("gmmseg.svg").read_text().startswith("<svg")
    for name in ("open", "run", "cancel", "autok", "export", "fit"):
        assert resource(f"icons/{name}.svg").stat().st_size > 50


def test_missing_resource_is_named():
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        resource("nothing.png")


def test_sample_images_are_bundled_with_their_licences():
    folder = sample_images_dir()
    names = {p.name for p in folder.iterdir()}
    assert {"coffee.jpg", "surface_good.png", "surface_defect.png", "README.md"} <= names
    text = (folder / "README.md").read_text()
    images = [n for n in names if n.endswith((".jpg", ".png"))]
    assert len(images) >= 6
    for name in images:
        assert name in text, f"{name} has no source/licence line"
