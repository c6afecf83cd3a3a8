"""Regenerate the README's screenshots of the main window: one per view, the
Auto K panel and the inspection mode.

Run from the repository root: ``QT_QPA_PLATFORM=offscreen python
resources/screenshots/make_screenshots.py`` (or under xvfb-run).
"""

import shutil
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def main():
    from gmmseg.gui.main_window import MainWindow

    app = QApplication(sys.argv[:1])

    def settle(window):
        """Let the session's jobs finish and the window repaint."""
        end = time.perf_counter() + 300
        while (window.session.busy or window.runner.running()) and time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.005)
        for _ in range(10):
            app.processEvents()

    with tempfile.TemporaryDirectory() as tmp:
        w = MainWindow(QSettings(str(Path(tmp) / "s.ini"), QSettings.Format.IniFormat))
        w.resize(1500, 920)
        w.show()
        settle(w)
        w.grab().save(str(HERE / "start.png"))
        session = w.session
        w.open_image(ROOT / "sample_images" / "astronaut.jpg")
        settle(w)  # images load in a worker
        session.set_k_range(2, 9)
        w.act_autok.trigger()  # sweeps K, then fits the K chosen
        settle(w)
        w.dock_bic.raise_()
        settle(w)
        w.grab().save(str(HERE / "autok.png"))
        w.anomaly_panel.slider.setValue(20)
        shots = [("original", None), ("labels", "dock_space"), ("soft", None), ("uncertainty", None),
                 ("anomaly", "dock_anomaly")]
        w.dock_conv.raise_()
        for mode, dock in shots:
            if mode == "soft":
                w.components.selectRow(session.model_k() - 2)
            session.set_view(mode)
            if dock:
                getattr(w, dock).raise_()
            # The label view fully opaque: the label map itself (at the default
            # 60 % the mean colours blend into the photo they came from).
            w.opacity_slider.setValue(100 if mode == "labels" else 60)
            settle(w)
            w.grab().save(str(HERE / f"{mode}.png"))

        # Inspection mode on the bundled surface pair.
        parts = Path(tmp) / "parts"
        parts.mkdir()
        for name in ("surface_defect.png", "surface_good.png"):
            shutil.copy(ROOT / "sample_images" / name, parts / name)
        session.set_references([ROOT / "sample_images" / "surface_good.png"])
        session.fit_inspector()
        settle(w)
        w.files.open_folder(parts)
        settle(w)
        w.dock_inspection.raise_()
        w.inspection.regions.selectRow(0)
        settle(w)
        w.grab().save(str(HERE / "inspection.png"))
        w.close()


if __name__ == "__main__":
    main()
