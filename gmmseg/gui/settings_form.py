"""Forms built from the settings table (:mod:`gmmseg.params`).

One widget per setting, chosen by its kind, labelled and explained by its
declaration; reading the form gives a settings object, and the form saves
and restores itself in ``QSettings``. A setting added to the table appears
here without a change to this file.
"""

from collections.abc import Iterable
from typing import Any

from PySide6.QtCore import QRegularExpression, QSettings, Qt, Signal
from PySide6.QtGui import QRegularExpressionValidator
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLineEdit, QSpinBox, QWidget

from ..params import Setting

_INT_MAX = 2**31 - 1
# Spin-box values that stand for None ("no limit" / "a new seed every run").
_NONE_VALUE = {"optional_int": 0, "seed": -1}
_NONE_TEXT = {"optional_int": "all", "seed": "random"}


def _make_widget(setting: Setting) -> QWidget:
    kind = setting.kind
    if kind == "choice":
        widget = QComboBox()
        widget.addItems(list(setting.choices))
    elif kind == "bool":
        widget = QCheckBox()
    elif kind == "float":
        widget = QDoubleSpinBox()
        widget.setDecimals(setting.widget_decimals)
        lo, hi = setting.widget_range or (setting.minimum or 0.0, 1e9 if setting.maximum is None else setting.maximum)
        widget.setRange(lo, hi)
        if setting.widget_step:
            widget.setSingleStep(setting.widget_step)
    elif kind in ("int", "seed", "optional_int"):
        widget = QSpinBox()
        lo, hi = setting.widget_range or (int(setting.minimum or 0), _INT_MAX if setting.maximum is None
                                          else int(setting.maximum))
        if kind in _NONE_VALUE:
            lo = _NONE_VALUE[kind]
            widget.setSpecialValueText(_NONE_TEXT[kind])
        widget.setRange(int(lo), int(hi))
    elif kind == "int_list":
        widget = QLineEdit()  # comma-separated integers, e.g. 1,2,4,8
        widget.setValidator(QRegularExpressionValidator(QRegularExpression(r"^\s*\d+(\s*,\s*\d+)*\s*$")))
    else:
        raise TypeError(f"no widget for settings of kind {kind!r} ({setting.name})")
    widget.setToolTip(setting.help[:1].upper() + setting.help[1:])
    widget.setObjectName(setting.name)
    return widget


def _widget_value(setting: Setting, widget: QWidget) -> Any:
    if setting.kind == "choice":
        return widget.currentText()
    if setting.kind == "bool":
        return widget.isChecked()
    if setting.kind == "int_list":
        try:
            return setting.check([int(v) for v in widget.text().split(",")])
        except ValueError:
            return setting.default  # incomplete or out-of-range text: the default until it is valid
    value = widget.value()
    if setting.kind in _NONE_VALUE and value == _NONE_VALUE[setting.kind]:
        return None
    return value


def _set_widget_value(setting: Setting, widget: QWidget, value: Any) -> None:
    """Show a value; ValueError when the widget cannot show it exactly (out of
    its range, or more decimals than it has), rather than clamp or round."""
    if setting.kind == "choice":
        if value not in setting.choices:
            raise ValueError(f"{setting.name}={value!r} is not one of the choices")
        widget.setCurrentText(value)
        return
    if setting.kind == "bool":
        widget.setChecked(bool(value))
        return
    if setting.kind == "int_list":
        widget.setText(",".join(str(v) for v in value))
        return
    if value is None:
        value = _NONE_VALUE[setting.kind]
    shown = round(value, setting.widget_decimals) if setting.kind == "float" else value
    if not widget.minimum() <= value <= widget.maximum() or shown != value:
        raise ValueError(f"{setting.name}={value!r} cannot be shown by the panel")
    widget.setValue(value)


def _from_text(setting: Setting, text: Any) -> Any:
    """A value saved by QSettings (often a string) back to the setting's type."""
    if setting.kind in ("choice",):
        return str(text)
    if setting.kind == "bool":
        return text if isinstance(text, bool) else str(text).lower() == "true"
    if text in ("", None) and setting.kind in _NONE_VALUE:
        return None
    if setting.kind == "float":
        return float(text)
    if setting.kind == "int_list":
        items = text if isinstance(text, list) else str(text).split(",")
        return [int(v) for v in items]
    return int(text)


class SettingsForm(QWidget):
    """A form with one widget per setting of a settings class.

    Parameters
    ----------
    settings_class : type
        :class:`gmmseg.SegmenterParams` or :class:`gmmseg.InspectionParams`.
    names : iterable of str, optional
        The settings to show (default: all that have a widget kind).

    ``widgets`` maps setting names to their widgets; ``changed`` fires when
    any of them changes.
    """

    changed = Signal()

    def __init__(self, settings_class, names: Iterable[str] | None = None, parent=None):
        super().__init__(parent)
        self.settings_class = settings_class
        wanted = None if names is None else set(names)
        self.settings = [s for s in settings_class.settings() if wanted is None or s.name in wanted]
        self.form = QFormLayout(self)
        self.widgets: dict[str, QWidget] = {}
        for setting in self.settings:
            widget = _make_widget(setting)
            self.widgets[setting.name] = widget
            self.form.addRow(setting.label, widget)
            signal = {"choice": "currentTextChanged", "bool": "toggled", "int_list": "textChanged"}.get(setting.kind,
                                                                                                       "valueChanged")
            getattr(widget, signal).connect(lambda *_: self.changed.emit())
        self.set_values(settings_class())

    def values(self) -> dict[str, Any]:
        """The shown settings as a dict (the others are not in it)."""
        return {s.name: _widget_value(s, self.widgets[s.name]) for s in self.settings}

    def params(self, base=None):
        """A settings object: ``base`` (default: the defaults) with the form's values."""
        base = self.settings_class() if base is None else base
        return base.replace(**self.values())

    def set_values(self, params) -> list[str]:
        """Show the settings of a settings object; returns the names of those
        the form cannot show exactly (their widgets keep their values)."""
        unshown = []
        for s in self.settings:
            try:
                _set_widget_value(s, self.widgets[s.name], getattr(params, s.name))
            except ValueError:
                unshown.append(s.name)
        return unshown

    def unshown(self, params) -> list[str]:
        """The names of the form's settings whose shown value is not the
        value in ``params`` (one the form could not show, after
        :meth:`set_values`)."""
        shown = self.params(params)
        return [s.name for s in self.settings if getattr(shown, s.name) != getattr(params, s.name)]

    def save(self, store: QSettings, prefix: str) -> None:
        for name, value in self.values().items():
            if isinstance(value, tuple):  # int_list: saved as "1,2,4"
                value = ",".join(str(v) for v in value)
            store.setValue(f"{prefix}{name}", "" if value is None else value)

    def restore(self, store: QSettings, prefix: str) -> None:
        """Show the saved values; a missing or invalid one keeps the widget's value."""
        for s in self.settings:
            text = store.value(f"{prefix}{s.name}")
            if text is None:
                continue
            try:
                _set_widget_value(s, self.widgets[s.name], s.check(_from_text(s, text)))
            except (TypeError, ValueError, OverflowError):
                continue  # a damaged or foreign settings file must not stop the application


def set_combo_tips(combo: QComboBox, tips: dict[str, str]) -> None:
    """Tooltips for the items of a combo box (e.g. what each covariance type means)."""
    for i in range(combo.count()):
        tip = tips.get(combo.itemText(i))
        if tip:
            combo.setItemData(i, tip, Qt.ItemDataRole.ToolTipRole)
