"""The desktop application (PySide6): the only package that imports Qt."""


def main(image=None):
    """Start the application; returns the process exit code."""
    from .app import run

    return run(image)
