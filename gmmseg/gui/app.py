"""Starting the application: checks for a usable display first."""

import ctypes.util
import os
import sys
import time

# Debian packages that Qt's xcb platform plugin and GUI library need beyond a bare system.
XCB_LIBRARIES = {
    "xcb-cursor": "libxcb-cursor0",
    "xcb-icccm": "libxcb-icccm4",
    "xcb-keysyms": "libxcb-keysyms1",
    "xcb-image": "libxcb-image0",
    "xcb-render-util": "libxcb-render-util0",
    "xcb-xkb": "libxcb-xkb1",
    "xkbcommon-x11": "libxkbcommon-x11-0",
    "xcb-shape": "libxcb-shape0",
    # what Qt's GUI and D-Bus libraries link to (ldd), missing from slim images
    "EGL": "libegl1",
    "GL": "libgl1",
    "fontconfig": "libfontconfig1",
    "dbus-1": "libdbus-1-3",
}


def display_problem():
    """One line saying why no window can open, or None when it can."""
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if platform.startswith(("offscreen", "minimal", "vnc", "wayland", "eglfs")):
        return None
    if sys.platform != "linux":
        return None
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        return ("no display: run it from a desktop session, under 'xvfb-run gmmseg gui', "
                "or with QT_QPA_PLATFORM=offscreen")
    missing = [pkg for lib, pkg in XCB_LIBRARIES.items() if ctypes.util.find_library(lib) is None]
    if missing and not os.environ.get("WAYLAND_DISPLAY"):
        return ("Qt cannot open a window: system libraries are missing; install them with "
                f"'sudo apt-get install {' '.join(missing)}'")
    return None


def run(image=None, argv=None):
    """Show the main window (optionally opening ``image``); returns the exit code."""
    problem = display_problem()
    if problem:
        print(f"gmmseg gui: error: {problem}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    from PySide6.QtWidgets import QApplication

    from .main_window import MainWindow

    app = QApplication.instance() or QApplication(argv or sys.argv[:1])
    app.setApplicationName("gmmseg")
    app.setOrganizationName("gmmseg")
    window = MainWindow()
    window.show()
    # In the status area, not as a temporary status-bar message: that one was
    # drawn over the status area's own text ("loading ..." when an image is given).
    window.session.set_status(f"Ready in {time.perf_counter() - start:.2f} s. {window.session.status_text}")
    if image:
        window.open_image(image)
    return app.exec()
