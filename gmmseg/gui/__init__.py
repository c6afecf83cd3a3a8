"""The desktop application (PySide6). The only package that imports Qt.

Not built yet: ``gmmseg gui`` reports that it is unavailable.
"""
