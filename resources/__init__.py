"""Data files of the gmmseg application (icons, style sheet, app icon).

This folder sits at the top of the repository and is installed as the
package ``gmmseg.resources``; find files through ``gmmseg.paths.resource``.
"""
