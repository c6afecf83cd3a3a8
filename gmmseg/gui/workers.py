"""Long work off the GUI thread: fits, K sweeps, exports, kernel warm-up.

Every worker is a QThread that reports through signals and stops when asked
(``cancel()``); the main window keeps track of them and waits for them on
close, so none is left running.
"""

import threading
import time
import traceback
import warnings

import numpy as np
from PySide6.QtCore import QThread, Signal

from .. import workflows
from ..engine import ConvergenceWarning, GaussianMixture, warm_up
from ..inspection import Inspector
from ..segment import Segmenter, select_k
from .canvas import qimage_from_rgb
from .render import blend, full_covariances, label_colors

PREVIEW_INTERVAL_S = 0.4
PREVIEW_PIXELS = 1_500_000  # previews are drawn on a grid of at most this many pixels


class Worker(QThread):
    """Base: a cancel flag and a ``failed`` signal with a one-line message.

    ``Worker.running_count()`` tells how many workers are inside ``run()``
    right now (tests use it to prove none is left behind).
    """

    failed = Signal(str)
    _running = 0
    _running_lock = threading.Lock()

    @classmethod
    def running_count(cls):
        with cls._running_lock:
            return cls._running

    def __init__(self, parent=None):
        super().__init__(parent)
        self._cancel = threading.Event()

    def cancel(self):
        self._cancel.set()

    @property
    def cancelled(self):
        return self._cancel.is_set()

    def run(self):
        with Worker._running_lock:
            Worker._running += 1
        try:
            self.work()
        except Exception as exc:  # reported, never raised into Qt
            message = str(exc).strip() or type(exc).__name__
            self.debug_traceback = traceback.format_exc()
            self.failed.emit(message.splitlines()[0])
        finally:
            with Worker._running_lock:
                Worker._running -= 1

    def work(self):
        raise NotImplementedError


class FitWorker(Worker):
    """Fit a Segmenter on an image, reporting every EM iteration.

    Signals: ``progress(dict)`` per iteration (iteration, lower_bound,
    change, weights, means, covariances, precisions_cholesky);
    ``preview((QImage, (width, height)))`` a label view of the current
    parameters, on a grid of at most ``PREVIEW_PIXELS``, every
    ``PREVIEW_INTERVAL_S``; ``stopped()`` as the fit ends on cancel (the
    maps of the last state are computed after it);
    ``finished_fit(segmenter, segmentation, cancelled)``.
    """

    progress = Signal(object)
    preview = Signal(object)
    stopped = Signal()
    finished_fit = Signal(object, object, bool)

    def __init__(self, image, params, base_rgb=None, opacity=0.6, parent=None):
        super().__init__(parent)
        self.image = image
        self.params = params  # a SegmenterParams (immutable)
        self.base_rgb = base_rgb
        self.opacity = opacity

    def _preview_data(self, segmenter):
        """Unique-colour features and their pixel map, for fast previews
        (with position features the preview shows the colour marginal)."""
        table = segmenter.color_table(self.image)
        # Unique-colour index of each pixel on a coarse grid (-1: masked out).
        H, W = self.image.mask.shape
        step = max(1, int(np.ceil(np.sqrt(H * W / PREVIEW_PIXELS))))
        grid = np.ascontiguousarray(table.index[::step, ::step])
        base = None if self.base_rgb is None else np.ascontiguousarray(self.base_rgb[::step, ::step])
        return table.features, table.counts, grid, table.colors, base

    def _render_preview(self, data, progress, covariance_type):
        X, counts, grid, display, base = data
        c = X.shape[1]
        if progress.means.shape[1] > c:
            # Position features follow the colours: label colours by the
            # mixture's colour marginal (the colour block of each Gaussian).
            K, d = progress.means.shape
            covs = full_covariances(np.asarray(progress.covariances), K, d, covariance_type)[:, :c, :c]
            prec_chol = np.stack([np.linalg.inv(np.linalg.cholesky(cov)).T for cov in covs])
            gm = GaussianMixture.from_parameters(progress.weights, progress.means[:, :c], prec_chol)
        else:
            gm = GaussianMixture.from_parameters(progress.weights, progress.means, progress.precisions_cholesky,
                                                 covariance_type=covariance_type)
        labels_u = gm.predict(X)
        K = len(progress.weights)
        mass = np.bincount(labels_u, weights=counts, minlength=K)
        colours = np.stack([np.bincount(labels_u, weights=counts * display[:, c], minlength=K) for c in range(3)], axis=1)
        colours = np.where(mass[:, None] > 0, colours / np.maximum(mass, 1e-12)[:, None], 0.5)
        labels = np.where(grid >= 0, labels_u[np.maximum(grid, 0)], -1)
        rgb, valid = label_colors(labels, colours)
        if base is not None:
            rgb = blend(base, rgb, self.opacity, where=valid)
        return qimage_from_rgb(rgb)

    def work(self):
        segmenter = Segmenter(params=self.params)
        # Previews label pixels by the mixture's colour block; a texture-only
        # model has none, and gets no preview.
        data = self._preview_data(segmenter) if segmenter.features.uses_color else None
        last_preview = [time.perf_counter()]

        def stop_now():
            if self.cancelled:
                self.stopped.emit()  # the fit ends as the callback returns True
                return True
            return False

        def callback(p):
            if stop_now():
                return True
            if p.phase not in ("em", "spatial"):
                return False
            self.progress.emit({
                "phase": p.phase, "init": p.init, "iteration": p.iteration, "lower_bound": p.lower_bound,
                "change": p.change,
                "weights": p.weights, "means": p.means, "covariances": p.covariances,
            })
            now = time.perf_counter()
            if data is not None and now - last_preview[0] > PREVIEW_INTERVAL_S and not self.cancelled:
                size = self.image.mask.shape[::-1]
                self.preview.emit((self._render_preview(data, p, segmenter.covariance_type), size))
                last_preview[0] = time.perf_counter()
            return stop_now()

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            segmentation = segmenter.fit_predict(self.image, callback=callback, probabilities=True)  # the soft maps are shown
        self.finished_fit.emit(segmenter, segmentation, bool(segmenter.gmm_.stopped_))


class PredictWorker(Worker):
    """Apply a loaded Segmenter to an image."""

    finished_predict = Signal(object, object)

    def __init__(self, segmenter, image, parent=None):
        super().__init__(parent)
        self.segmenter, self.image = segmenter, image

    def work(self):
        self.finished_predict.emit(self.segmenter, self.segmenter.predict(self.image, probabilities=True))


class AutoKWorker(Worker):
    """BIC/AIC over a range of K; ``row(dict)`` as each K is done."""

    row = Signal(object)
    finished_sweep = Signal(object)

    def __init__(self, image, k_range, params, parent=None):
        super().__init__(parent)
        self.image, self.k_range, self.params = image, k_range, params

    def work(self):
        def on_row(row):
            self.row.emit(row)
            return self.cancelled

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the window says when K is at the edge of the range
            result = select_k(self.image, k_range=self.k_range, params=self.params, callback=on_row)
        self.finished_sweep.emit(result)


class ExportWorker(Worker):
    """Write the chosen export files; ``step(done, total, name)``."""

    step = Signal(int, int, str)
    finished_export = Signal(object)

    def __init__(self, segmentation, image, out_dir, outputs, overwrite, percentile, segmenter, parent=None):
        super().__init__(parent)
        self.args = (segmentation, image, out_dir, outputs, overwrite, percentile, segmenter)

    def work(self):
        seg, image, out_dir, outputs, overwrite, percentile, segmenter = self.args
        written = workflows.export_files(seg, image, out_dir, segmenter, outputs=outputs, overwrite=overwrite,
                                         anomaly_percentile=percentile,
                                         progress=lambda done, total, name: self.step.emit(done, total, name))
        self.finished_export.emit(written)


class WarmupWorker(Worker):
    """Compile (or load from cache) the kernels while the user looks around."""

    warmed = Signal(float)

    def work(self):
        start = time.perf_counter()
        warm_up()
        self.warmed.emit(time.perf_counter() - start)


class InspectorFitWorker(Worker):
    """Fit an Inspector on reference images."""

    finished_inspector = Signal(object)

    def __init__(self, references, params, inspection, parent=None):
        super().__init__(parent)
        self.references, self.params, self.inspection = list(references), params, inspection

    def work(self):
        inspector = Inspector(params=self.params, inspection=self.inspection)
        self.finished_inspector.emit(inspector.fit(self.references))


class ScoreWorker(Worker):
    """Anomaly score maps of one image (the slow part of an inspection)."""

    scored = Signal(object, object, object)  # image, unsmoothed score, calibrated score

    def __init__(self, inspector, image, parent=None):
        super().__init__(parent)
        self.inspector, self.image = inspector, image

    def work(self):
        raw, score = self.inspector.score_maps(self.image)
        self.scored.emit(self.image, raw, score)


class ReportWorker(Worker):
    """Inspect a list of images and write the CSV report (as the CLI does)."""

    step = Signal(int, int, str)
    finished_report = Signal(str, int, int)  # path, images, defective

    def __init__(self, inspector, paths, threshold, report, parent=None):
        super().__init__(parent)
        self.inspector, self.paths, self.threshold, self.report = inspector, list(paths), threshold, report

    def work(self):
        rows = []
        for i, path in enumerate(self.paths):
            if self.cancelled:
                break
            self.step.emit(i, len(self.paths), path.name)
            try:
                rows.append(workflows.inspection_row(path, self.inspector, self.threshold))
            except (OSError, ValueError) as exc:
                rows.append(workflows.failed_row(path, exc))
        workflows.write_report(self.report, rows)
        self.finished_report.emit(str(self.report), len(rows), sum(r.get("verdict") == "fail" for r in rows))
