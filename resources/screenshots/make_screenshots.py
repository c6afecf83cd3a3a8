"""Regenerate the README's screenshots of the main window, one per view mode.

Run from the repository root: ``QT_QPA_PLATFORM=offscreen python
resources/screenshots/make_screenshots.py`` (or under xvfb-run).
"""

import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QEventLoop, QSettings, QTimer
from PySide6.QtWidgets import QApplication

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def main():
    from gmmseg.gui.main_window import MainWindow

    app = QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory() as tmp:
        w = MainWindow(QSettings(str(Path(tmp) / "s.ini"), QSettings.Format.IniFormat))
        w.resize(1500, 920)
        w.show()
        w.open_image(ROOT / "sample_images" / "astronaut.jpg")
        w.k_spin.setValue(6)
        loop = QEventLoop()
        w.fitFinished.connect(loop.quit)
        w.run_fit()
        QTimer.singleShot(120_000, loop.quit)
        loop.exec()
        w.threshold_slider.setValue(20)
        shots = [("original", None), ("labels", "dock_space"), ("soft", None), ("uncertainty", None), ("anomaly", "dock_anomaly")]
        for mode, dock in shots:
            if mode == "soft":
                w.table.selectRow(w.segmentation.n_components - 2)
            w.set_view_mode(mode)
            if dock:
                getattr(w, dock).raise_()
            for _ in range(5):
                app.processEvents()
            w.grab().save(str(HERE / f"{mode}.png"))

        # Inspection mode on the bundled surface pair.
        import shutil

        parts = Path(tmp) / "parts"
        parts.mkdir()
        for name in ("surface_defect.png", "surface_good.png"):
            shutil.copy(ROOT / "sample_images" / name, parts / name)
        panel = w.inspection
        panel.set_references([ROOT / "sample_images" / "surface_good.png"])
        loop = QEventLoop()
        panel.fitted.connect(loop.quit)
        panel.fit()
        loop.exec()
        loop = QEventLoop()
        panel.inspected.connect(loop.quit)
        panel.open_folder(parts)
        loop.exec()
        w.dock_inspection.raise_()
        panel.regions.selectRow(0)
        for _ in range(5):
            app.processEvents()
        w.grab().save(str(HERE / "inspection.png"))
        w.close()


if __name__ == "__main__":
    main()
