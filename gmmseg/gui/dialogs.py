"""Dialogs: choosing what to export and where."""

from pathlib import Path

from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
)

from ..export import OUTPUTS, plan_outputs

DESCRIPTIONS = {
    "labels": "labels.png: palette PNG, value = component",
    "masks": "mask_<k>.png: one 0/255 mask per component",
    "probabilities": "probabilities.tif: float32 H x W x K",
    "loglik": "loglik.tif: float32 log-likelihood per pixel",
    "anomaly": "anomaly.png: 0/255 flagged pixels",
    "overlay": "overlay.png: labels blended over the image",
    "summary": "summary.json: settings and statistics",
}


class ExportDialog(QDialog):
    """Pick outputs and a folder; asks before overwriting existing files."""

    def __init__(self, parent, folder, n_components):
        super().__init__(parent)
        self.setWindowTitle("Export segmentation")
        self.n_components = n_components
        self.overwrite = False
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("Folder:"))
        self.folder_edit = QLineEdit(str(folder))
        row.addWidget(self.folder_edit, 1)
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse)
        row.addWidget(browse)
        layout.addLayout(row)
        grid = QGridLayout()
        self.checks = {}
        for i, name in enumerate(OUTPUTS):
            box = QCheckBox(DESCRIPTIONS[name])
            box.setChecked(True)
            self.checks[name] = box
            grid.addWidget(box, i, 0)
        layout.addLayout(grid)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Export")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def _browse(self):
        path = QFileDialog.getExistingDirectory(self, "Export folder", self.folder_edit.text())
        if path:
            self.folder_edit.setText(path)

    def folder(self):
        return Path(self.folder_edit.text()).expanduser()

    def outputs(self):
        return [name for name, box in self.checks.items() if box.isChecked()]

    def accept(self):
        if not self.outputs():
            QMessageBox.warning(self, "Export", "Choose at least one output.")
            return
        existing = [p for p in plan_outputs(self.folder(), self.n_components, self.outputs()).values() if p.exists()]
        if existing:
            answer = QMessageBox.question(
                self, "Replace files?",
                f"{len(existing)} file(s) already exist in {self.folder()}, e.g. {existing[0].name}. Replace them?",
            )
            if answer != QMessageBox.StandardButton.Yes:
                return
            self.overwrite = True
        super().accept()
