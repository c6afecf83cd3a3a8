"""The window's file dialogs and what they start: open an image (asking
about huge ones), models, exports, views, the inspection's references,
models, folder and report. File dialogs start in the shown image's folder."""

from pathlib import Path

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

from .._fileio import atomic_write
from ..io import IMAGE_SUFFIXES, available_memory, size_text
from ..segment import Segmenter
from .dialogs import ExportDialog

IMAGE_FILTER = f"Images ({' '.join('*' + s for s in sorted(IMAGE_SUFFIXES))});;All files (*)"
MODEL_FILTER = "gmmseg model (*.json);;All files (*)"
MAX_RECENT = 10


class FileActions(QObject):
    """File dialogs of a :class:`MainWindow` (its ``files``); the inspection
    panel calls these too."""

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.session = window.session
        self.settings = window.settings
        self.canvas = window.canvas
        self.recent = []

    def dialog_dir(self, key):
        """Where a file dialog starts: the shown image's folder for what
        belongs to it (models, exports, views, reports), else the last one used."""
        path = self.session.image_path
        if key != "open" and path is not None and path.parent.is_dir():
            return str(path.parent)
        return str(self.settings.value(f"dirs/{key}", str(Path.home())))

    def remember_dir(self, key, path):
        self.settings.setValue(f"dirs/{key}", str(Path(path).parent if Path(path).suffix else path))

    def update_recent_menu(self):
        self.window.recent_menu.clear()
        for path in self.recent:
            self.window.recent_menu.addAction(path).triggered.connect(lambda checked=False, p=path: self.open_image(p))
        self.window.recent_menu.setEnabled(bool(self.recent))

    def open_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self.window, "Open image", self.dialog_dir("open"), IMAGE_FILTER)
        if path:
            self.open_image(path)

    def open_image(self, path, then=None, max_pixels=None):
        """Load an image (in a worker) and show it; ``then()`` once shown.
        On failure say why: the current image stays."""

        def shown():
            resolved = str(Path(path).resolve())
            self.recent = ([resolved] + [p for p in self.recent if p != resolved])[:MAX_RECENT]
            self.update_recent_menu()
            self.remember_dir("open", resolved)
            if then is not None:
                then()

        def too_large(exc):
            # Larger than the memory available can segment (by the estimate): the person decides.
            available = available_memory()
            text = (f"{Path(path).name} is {exc.width} x {exc.height} pixels ({exc.width * exc.height / 1e6:.1f} "
                    f"megapixels). Segmenting it needs about {size_text(exc.bytes_needed)} of memory"
                    + (f", and {size_text(available)} is available." if available is not None else "."))
            answer = QMessageBox.question(self.window, "Very large image", f"{text}\n\nOpen it anyway?",
                                          QMessageBox.StandardButton.Open | QMessageBox.StandardButton.Cancel,
                                          QMessageBox.StandardButton.Cancel)
            if answer == QMessageBox.StandardButton.Open:
                self.open_image(path, then, max_pixels=exc.width * exc.height)

        self.session.open_image(path, max_pixels, then=shown, too_large=too_large,
                                failed=lambda message: QMessageBox.critical(self.window, "Cannot open image", message))

    # ------------------------------------------------------------------
    def save_model_dialog(self):
        s = self.session
        if s.segmenter is None:
            return
        default = Path(self.dialog_dir("model")) / f"{s.image_path.stem if s.image_path else 'model'}_k{s.model_k()}.json"
        path, _ = QFileDialog.getSaveFileName(self.window, f"Save model (K = {s.model_k()})", str(default), MODEL_FILTER)
        if path:
            try:  # the file dialog already asked about replacing
                s.save_model(path)
            except (OSError, ValueError) as exc:
                QMessageBox.critical(self.window, "Cannot save model", str(exc))
                return
            self.remember_dir("model", path)

    def load_model_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self.window, "Load model", self.dialog_dir("model"), MODEL_FILTER)
        if path:
            self.load_model(path)

    def load_model(self, path):
        try:
            segmenter = Segmenter.load(path)
        except (OSError, ValueError) as exc:
            QMessageBox.critical(self.window, "Cannot load model", str(exc))
            return False
        self.remember_dir("model", path)
        self.session.use_model(segmenter, Path(path).name)
        unshown = self.window.model_panel.form.unshown(segmenter.params)
        if unshown:
            values = ", ".join(f"{n}={getattr(segmenter.params, n)!r}" for n in unshown)
            self.session.note_model(f"the model's {values} cannot be shown in the Model panel; a new Run uses the panel's values")
        return True

    def export_dialog(self):
        s = self.session
        if s.segmentation is None:
            return
        folder = Path(self.dialog_dir("export")) / (s.image_path.stem if s.image_path else "segmentation")
        dialog = ExportDialog(self.window, folder, s.model_k())
        dialog.setWindowTitle(f"Export the segmentation (K = {s.model_k()})")
        if dialog.exec():
            self.remember_dir("export", str(dialog.folder().parent) + "/")
            s.export(dialog.folder(), dialog.outputs(), dialog.overwrite)

    def copy_view(self):
        pixmap = self.canvas.current_pixmap()
        if not pixmap.isNull():
            QApplication.clipboard().setPixmap(pixmap)
            self.session.set_status("view copied to the clipboard")

    def save_view_dialog(self):
        if not self.canvas.has_image():
            return
        stem = self.session.image_path.stem if self.session.image_path else "view"
        default = Path(self.dialog_dir("view")) / f"{stem}_{self.session.view}.png"
        path, _ = QFileDialog.getSaveFileName(self.window, "Save view", str(default), "PNG image (*.png)")
        if path:
            self.save_view(path)

    def save_view(self, path):
        image = self.canvas.current_pixmap().toImage()

        def write(tmp):
            if not image.save(tmp, "PNG"):
                raise OSError(f"Qt could not write a PNG to {path}")

        try:
            atomic_write(path, write, overwrite=True)
        except OSError as exc:
            QMessageBox.critical(self.window, "Cannot save view", str(exc))
            return False
        self.remember_dir("view", path)
        self.session.set_status(f"view saved to {path}")
        return True

    # ------------------------------------------------------------------
    # inspection dialogs (the panel's buttons)
    def choose_references(self):
        paths, _ = QFileDialog.getOpenFileNames(self.window, "Defect-free reference images", self.dialog_dir("open"), IMAGE_FILTER)
        if paths:
            self.session.set_references(paths)

    def load_inspector_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self.window, "Load inspection model", self.dialog_dir("model"), MODEL_FILTER)
        if path:
            self.load_inspector(path)

    def load_inspector(self, path):
        try:
            self.session.load_inspector(path)
        except (OSError, ValueError) as exc:
            QMessageBox.critical(self.window, "Cannot load inspection model", str(exc))
            return False
        self.remember_dir("model", path)
        unshown = self.window.inspection.unshown_values(self.session.inspector)
        if unshown:
            self.session.note_inspector(f"the model's {', '.join(unshown)} cannot be shown in the Inspection panel; a "
                                        "new Fit uses the panel's values")
        return True

    def save_inspector_dialog(self):
        default = Path(self.dialog_dir("model")) / "inspection.json"
        path, _ = QFileDialog.getSaveFileName(self.window, "Save inspection model", str(default), MODEL_FILTER)
        if path:
            self.session.save_inspector(path)

    def open_folder_dialog(self):
        folder = QFileDialog.getExistingDirectory(self.window, "Folder of parts to inspect", self.dialog_dir("open"))
        if folder:
            self.open_folder(folder)

    def open_folder(self, folder):
        if not self.session.open_folder(folder, opener=self.open_image):
            QMessageBox.information(self.window, "Inspection", f"{folder} holds no images.")
            return False
        return True

    def step_part(self, delta):
        return self.session.step(delta, opener=self.open_image)

    def report_dialog(self):
        default = Path(self.dialog_dir("report")) / "report.csv"
        path, _ = QFileDialog.getSaveFileName(self.window, "Inspection report", str(default), "CSV (*.csv)")
        if path:
            self.session.write_report(path)

