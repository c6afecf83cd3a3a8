"""Regenerate the README's screenshot of the napari plugin at work.

Needs the napari extra (``pip install -e '.[napari]'``) and an X display,
which Xvfb gives without a screen; run from the repository root::

    xvfb-run -a python resources/screenshots/make_napari_screenshot.py

The window is shown on that (virtual) display: napari draws its canvas
with OpenGL, and a grab under Qt's offscreen platform leaves it empty.
"""

import os
from pathlib import Path

os.environ["QT_QPA_PLATFORM"] = "xcb"  # before Qt starts; see above

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def main() -> None:
    import napari
    from qtpy.QtCore import QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication

    from gmmseg.io import load_image

    viewer = napari.Viewer(title="napari: gmmseg plugin", show=True)
    viewer.window.resize(1400, 860)
    image = load_image(ROOT / "sample_images" / "astronaut.jpg").to_uint8()
    viewer.add_image(image, name="astronaut")
    _, widget = viewer.window.add_plugin_dock_widget("gmmseg", "GMM segmentation")
    widget.form.widgets["n_components"].setValue(6)

    loop = QEventLoop()
    widget.done.connect(loop.quit)
    QTimer.singleShot(300_000, loop.quit)
    widget.run()
    loop.exec()
    if viewer.layers.selection.active is not None:
        viewer.layers.selection.active = viewer.layers["astronaut gmm labels"]  # its features in the layer list
    viewer.reset_view()
    for _ in range(10):
        QApplication.processEvents()
    viewer.screenshot(str(HERE / "napari.png"), canvas_only=False, flash=False)
    viewer.close()


if __name__ == "__main__":
    main()
