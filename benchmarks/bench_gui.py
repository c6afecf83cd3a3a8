"""Responsiveness of the desktop application (offscreen or under Xvfb).

Prints: time from launch to a shown window (new process, warm kernel cache);
time to open a 12- and a 24-megapixel JPEG and the longest GUI-thread stall
meanwhile (a 10 ms QTimer heartbeat's worst delay); on the 24-megapixel
photo (default settings, K = 8): time from Run to the first preview, to the
first full-resolution strip of the label view, to the full-resolution maps
on screen, the longest GUI-thread stall during that run, and from Esc to an
idle, usable window (the next heartbeat served, buttons enabled), with Esc
pressed while an image loads, while the pixels are prepared, during EM and
during the maps; the worker thread then still finishes its current strip in
the background (its end is printed too).
Targets: launch < 2 s, stalls < 100 ms, Esc to idle < 0.5 s.

Usage: QT_QPA_PLATFORM=offscreen python benchmarks/bench_gui.py [--quick] [--runs N]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

LAUNCH = textwrap.dedent(
    """
    import sys, time
    from PySide6.QtWidgets import QApplication
    from PySide6.QtCore import QSettings
    from gmmseg.gui.main_window import MainWindow
    app = QApplication(sys.argv[:1])
    w = MainWindow(QSettings(sys.argv[1], QSettings.Format.IniFormat))
    w.show()
    app.processEvents()
    print("shown", flush=True)
    w.close()
    """
)


def launch_seconds(settings_path):
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", LAUNCH, settings_path], capture_output=True, text=True,
                         env=dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen")))
    assert "shown" in out.stdout, out.stderr
    return time.perf_counter() - start


class Heartbeat:
    """A 10 ms timer in the GUI thread; its longest gap beyond 10 ms is the
    longest time the GUI thread could not serve events."""

    def __init__(self):
        from PySide6.QtCore import QElapsedTimer, QTimer

        self.clock = QElapsedTimer()
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._beat)

    def start(self):
        self.gaps, self.beats = [], []
        self.clock.start()
        self.last = self.clock.elapsed()
        self.timer.start()

    def _beat(self):
        now = self.clock.elapsed()
        self.gaps.append(now - self.last)
        self.beats.append(time.perf_counter())
        self.last = now

    def stop(self):
        self.timer.stop()
        return max(self.gaps) - 10 if self.gaps else 0.0


def run_until(app, condition, timeout=600):
    end = time.perf_counter() + timeout
    while not condition() and time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.001)


def _values(values, unit):
    """'median unit (all values)', seconds with two decimals, milliseconds whole."""
    text = (lambda v: f"{v:.2f}") if unit == "s" else (lambda v: f"{v:.0f}")
    return f"median {text(statistics.median(values))} {unit} ({', '.join(text(v) for v in values)})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 and 6 megapixel images instead of 12 and 24")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement (medians)")
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_segment import make_photo

    from gmmseg.engine import warm_up
    from gmmseg.gui.main_window import MainWindow

    warm_up()
    with tempfile.TemporaryDirectory() as tmp:
        ini = str(Path(tmp) / "s.ini")
        launch_seconds(ini)  # the first launch fills OS caches
        launches = [launch_seconds(ini) for _ in range(3)]
        print(f"launch to shown window (new process, warm): median {statistics.median(launches):.2f} s "
              f"({', '.join(f'{t:.2f}' for t in launches)})")

        app = QApplication.instance() or QApplication(sys.argv[:1])
        w = MainWindow(QSettings(ini, QSettings.Format.IniFormat))
        w.resize(1400, 900)
        w.show()
        app.processEvents()
        session = w.session

        width, height = (1600, 1200) if args.quick else (4000, 3000)
        photo = Path(tmp) / "photo12.jpg"
        make_photo(photo, width, height)
        heart = Heartbeat()
        loaded = [time.perf_counter()]
        session.events.image.connect(lambda: loaded.__setitem__(0, time.perf_counter()))

        def open_runs(label, photo):
            """Open an image ``args.runs`` times: time to the image shown,
            and the GUI thread's longest stall meanwhile (it loads in a worker)."""
            shown, stalls = [], []
            for _ in range(args.runs):
                run_until(app, lambda: w.runner.running() == [])
                heart.start()
                t0 = time.perf_counter()
                w.open_image(photo)
                run_until(app, lambda: not session.busy and not session.is_running("render"))
                app.processEvents()
                stalls.append(heart.stop())
                shown.append(loaded[0] - t0)
            print(f"{label}: shown after {_values(shown, 's')}; longest GUI-thread stall {_values(stalls, 'ms')}")

        open_runs(f"open a {width} x {height} JPEG ({width * height / 1e6:.0f} Mpixel)", photo)

        width, height = (3000, 2000) if args.quick else (6000, 4000)
        photo = Path(tmp) / "photo24.jpg"
        make_photo(photo, width, height)
        open_runs(f"open a {width} x {height} JPEG ({width * height / 1e6:.0f} Mpixel)", photo)
        session.set_settings(session.settings.replace(n_components=8))
        marks = {}
        session.events.preview.connect(lambda *a: marks.setdefault("preview", time.perf_counter()))
        session.events.strip.connect(lambda *a: marks.setdefault("strip", time.perf_counter()))
        session.events.picture.connect(
            lambda *a: session.segmentation is not None and marks.setdefault("maps", time.perf_counter()))
        previews, strips, maps, stalls = [], [], [], []
        for _ in range(args.runs):
            marks.clear()
            run_until(app, lambda: w.runner.running() == [])
            heart.start()
            started = time.perf_counter()
            w.act_run.trigger()
            run_until(app, lambda: "maps" in marks)
            stalls.append(heart.stop())
            previews.append(marks["preview"] - started)
            strips.append(marks["strip"] - started)
            maps.append(marks["maps"] - started)
        mp = f"{width * height / 1e6:.0f} Mpixel"
        print(f"{mp}, K = 8, default settings ({args.runs} runs, median and all):")
        print(f"  Run to first preview:                  {_values(previews, 's')}")
        print(f"  Run to first full-resolution strip:    {_values(strips, 's')}")
        print(f"  Run to full maps on screen:            {_values(maps, 's')}")
        print(f"  longest GUI-thread stall:              {_values(stalls, 'ms')}")

        def esc_after(condition, label):
            idle, ended = [], []
            for _ in range(args.runs):
                run_until(app, lambda: w.runner.running() == [])
                w.act_run.trigger()
                run_until(app, condition)
                heart.start()
                pressed = time.perf_counter()
                w.act_cancel.trigger()
                run_until(app, lambda: heart.beats and w.act_run.isEnabled() and not session.busy)
                idle.append(heart.beats[0] - pressed)
                run_until(app, lambda: w.runner.running() == [])
                ended.append(time.perf_counter() - pressed)
                heart.stop()
            print(f"  Esc {label}: idle after {statistics.median(idle) * 1000:.0f} ms "
                  f"({', '.join(f'{v * 1000:.0f}' for v in idle)}); worker ended after "
                  f"{statistics.median(ended) * 1000:.0f} ms ({', '.join(f'{v * 1000:.0f}' for v in ended)})")

        def esc_while_loading():
            idle = []
            for _ in range(args.runs):
                run_until(app, lambda: w.runner.running() == [])
                w.open_image(photo)
                run_until(app, lambda: w.runner.running() != [])
                heart.start()
                pressed = time.perf_counter()
                w.act_cancel.trigger()
                run_until(app, lambda: heart.beats and not session.busy)
                idle.append(heart.beats[0] - pressed)
                heart.stop()
            print(f"  Esc while an image loads: idle after {_values([v * 1000 for v in idle], 'ms')}")

        esc_while_loading()
        esc_after(lambda: session.is_running("fit") and session.fit_phase == "", "while preparing the pixels")
        esc_after(lambda: len(session.ll_history) >= 3, "during EM")
        esc_after(lambda: "maps:" in session.status_text and "preview" not in session.status_text, "during the maps")
        w.close()


if __name__ == "__main__":
    main()
