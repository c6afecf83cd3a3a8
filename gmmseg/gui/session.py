"""The application's state and what can be done with it, without Qt.

A :class:`Session` holds what the window shows: the image, the settings
(a :class:`gmmseg.SegmenterParams`), the fitted model and its segmentation,
the inspection model and the shown image's inspection result, the view,
the selected component and the anomaly threshold. Panels read it and call
its methods; it tells them what changed through :class:`Event` objects
(plain callbacks, as napari's model layer does with its events).

Long work (fits, maps, K sweeps, inspections, exports) runs through a
*runner* given to the session: the Qt one (:mod:`gmmseg.gui.jobs`) runs
each job in a worker thread and delivers its progress and result in the
GUI thread; :class:`InlineRunner` runs jobs at once, so the session can be
used and tested without Qt. A job's function gets a :class:`JobContext`
(``cancelled``, ``report``) and calls the workflow layer
(:mod:`gmmseg.workflows`).

Cancelling is immediate for the session: the job is dropped and the session
is idle at once; the worker stops at its next check (between EM iterations
or strips of maps) and whatever it still delivers is ignored.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import workflows
from ..engine import ConvergenceWarning
from ..inspection import Inspector
from ..io import ImageData, ImageTooLargeError, list_images, load_image
from ..params import INSPECTOR_MODEL_DEFAULTS, InspectionParams, SegmenterParams, reference_fit_params
from ..segment import Segmenter, select_k
from .render import (
    VIEW_MODES,
    ViewRequest,
    blend,
    checkerboard_under,
    display_colors,
    label_colors,
    preview_labels,
    render_view,
)

#: Views: the segmentation's (render.VIEW_MODES) and the inspection overlay.
VIEWS = VIEW_MODES + ("inspection",)
#: Images of at most this many pixels are drawn in the GUI thread (a few
#: milliseconds); larger ones in a worker, so the window never stalls.
INLINE_RENDER_PIXELS = 4_000_000
#: How often a running fit sends a preview of its labels.
PREVIEW_INTERVAL_S = 0.4
#: How often the panels are told of a running fit's iterations.
ITERATION_INTERVAL_S = 0.15
DEFAULT_K_RANGE = (1, 8)


class JobCancelled(Exception):
    """Raised inside a job's function to stop it (see :meth:`JobContext.check`)."""


class Event:
    """A list of callbacks called with the same arguments (no Qt)."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[..., Any]] = []

    def connect(self, callback: Callable[..., Any]) -> None:
        self._callbacks.append(callback)

    def disconnect(self, callback: Callable[..., Any]) -> None:
        self._callbacks.remove(callback)

    def emit(self, *args: Any) -> None:
        for callback in list(self._callbacks):
            callback(*args)


class Events:
    """The session's events; each fires after the state it names changed."""

    def __init__(self) -> None:
        self.image = Event()  # a new image (or none)
        self.settings = Event()  # the Model panel's settings
        self.model = Event()  # the fitted model and/or its segmentation
        self.fit_progress = Event()  # (EMProgress, history of lower bounds)
        self.preview = Event()  # (picture of a reduced label view, (width, height) it stands for)
        self.strip = Event()  # (start row, stop row, picture): rows of the full-resolution label view
        self.picture = Event()  # (the current view, made by Session.convert_picture)
        self.view = Event()  # view mode, component, visibility, opacity, overlay
        self.threshold = Event()  # anomaly percentile and its threshold
        self.auto_k = Event()  # K sweep rows or result
        self.inspector = Event()  # inspection model (fitted, loaded, changed)
        self.inspection = Event()  # the shown image's inspection result
        self.folder = Event()  # the folder of parts and the position in it
        self.status = Event()  # (text, fraction or None for "busy" or -1 for idle)
        self.busy = Event()  # a job started or ended
        self.message = Event()  # (title, text): an error the user must read
        self.exported = Event()  # (list of paths)
        self.report = Event()  # (path, images, defective)


# ---------------------------------------------------------------------------
# jobs
class JobContext:
    """What a job's function sees: whether it is cancelled, and a way to
    report progress (delivered to the session in the GUI thread)."""

    def __init__(self, report: Callable[[Any], None]) -> None:
        self._report = report
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True

    def check(self) -> None:
        """Raise :class:`JobCancelled` when the job was cancelled."""
        if self._cancelled:
            raise JobCancelled

    def report(self, value: Any) -> None:
        if not self._cancelled:
            self._report(value)


class InlineRunner:
    """Runs each job at once in the caller's thread (tests, scripts)."""

    def start(self, name: str, work: Callable[[JobContext], Any], job: JobContext, *, done=None, failed=None,
              inline: bool = False) -> None:
        run_job(work, job, done, failed)


def run_job(work: Callable[[JobContext], Any], job: JobContext, done=None, failed=None) -> None:
    """Run a job's function in this thread: ``done(result)`` unless it was
    cancelled, ``failed(message)`` (one line) when it raised."""
    try:
        result = work(job)
    except (JobCancelled, InterruptedError):
        return
    except Exception as exc:  # reported as one line, never raised into the event loop
        if failed is not None:
            failed(_one_line(exc))
        return
    if done is not None and not job.cancelled:
        done(result)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# ---------------------------------------------------------------------------
# results
@dataclass
class FitOutcome:
    """A fit's model and, unless it was stopped before them, its maps."""

    segmenter: Segmenter
    segmentation: Any = None  # gmmseg.Segmentation or None
    stats: list = field(default_factory=list)
    histogram: tuple | None = None  # (counts, edges) of the log-likelihood
    stopped: bool = False
    # the label view drawn as the maps arrived: (ViewRequest, rgb, picture)
    labels_view: tuple | None = None


@dataclass
class LoadedImage:
    """What showing an image needs, made in the loading worker: its RGB
    (transparent pixels over a checkerboard) and that picture converted for
    the canvas (by ``Session.convert_picture``)."""

    base_rgb: np.ndarray
    base_picture: Any

    @classmethod
    def of(cls, image: ImageData, convert: Callable[[np.ndarray], Any]) -> LoadedImage:
        rgb = checkerboard_under(image.to_uint8(), image.mask)
        return cls(rgb, convert(rgb))


@dataclass
class ScoredImage:
    image: ImageData
    raw: np.ndarray
    score: np.ndarray


def _histogram(log_likelihood: np.ndarray, mask: np.ndarray) -> tuple | None:
    values = log_likelihood[mask]
    if values.size == 0:
        return None
    sample = values[:: max(1, values.size // 2_000_000)]  # the shape of the histogram needs no more
    lo, hi = np.percentile(sample, [0.05, 100])
    counts, edges = np.histogram(values, bins=60, range=(float(lo), float(hi) if hi > lo else float(lo) + 1.0))
    return counts, edges


def _maps_outcome(segmenter: Segmenter, segmentation, job: JobContext,
                  labels_view: LabelsViewDrawer | None = None) -> FitOutcome:
    """Gather what the panels show of a segmentation, in the worker: labels
    and log-likelihood held whole, statistics, histogram, and the label
    view drawn strip by strip (those strips not drawn as they arrived)."""
    job.check()
    segmentation.labels  # noqa: B018 - gathered here, not in the GUI thread
    job.check()
    segmentation.log_likelihood  # noqa: B018
    job.check()
    stats = segmentation.component_stats()
    outcome = FitOutcome(segmenter, segmentation, stats, _histogram(segmentation.log_likelihood, segmentation.mask))
    if labels_view is not None:
        outcome.labels_view = labels_view.finish(job, segmentation)
    return outcome


class LabelsViewDrawer:
    """Draws the label view of maps as they are computed, in the worker:
    each strip is reported to the session (``("strip", (start, stop,
    picture))``) as soon as its labels are known, and the whole view is
    kept, so that it need not be drawn again once the maps are done."""

    def __init__(self, base_rgb: np.ndarray, opacity: float, overlay: bool, convert: Callable[[np.ndarray], Any]):
        self.base_rgb = base_rgb
        self.opacity = opacity
        self.overlay = overlay
        self.convert = convert
        self.colors: np.ndarray | None = None
        self.rgb: np.ndarray | None = None
        self.drawn: list[tuple[int, int]] = []

    def start(self, segmenter: Segmenter, image: ImageData) -> None:
        self.colors = display_colors(segmenter.component_colors_, image.is_gray)
        self.rgb = np.empty_like(self.base_rgb)
        self.drawn = []

    def draw(self, job: JobContext, start: int, stop: int, labels: np.ndarray) -> None:
        job.check()
        if self.rgb is None or not self.overlay:
            return
        colours, valid = label_colors(labels, self.colors)
        strip = blend(self.base_rgb[start:stop], colours, self.opacity, where=valid)
        self.rgb[start:stop] = strip
        self.drawn.append((start, stop))
        job.report(("strip", (start, stop, self.convert(strip))))

    def finish(self, job: JobContext, segmentation) -> tuple[ViewRequest, np.ndarray, Any] | None:
        """The whole label view (the request it answers, its RGB and its
        converted picture), drawing the strips the maps did not hand over
        (colour-only maps are ready at once)."""
        if self.rgb is None or not self.overlay:
            return None
        rows = np.zeros(self.rgb.shape[0], dtype=bool)
        for start, stop in self.drawn:
            rows[start:stop] = True
        for start, stop in segmentation.row_chunks():
            if not rows[start:stop].all():
                self.draw(job, start, stop, segmentation.map_rows("labels", start, stop))
        job.check()
        K = segmentation.n_components
        request = ViewRequest("labels", self.base_rgb, segmentation, opacity=self.opacity, overlay=True,
                              visible=[True] * K, colors=self.colors)
        return request, self.rgb, self.convert(self.rgb)


# ---------------------------------------------------------------------------
class Session:
    """Everything the application shows and does, without widgets.

    Parameters
    ----------
    runner : object, optional
        Starts jobs (``start(name, work, progress=, done=, failed=, inline=)``);
        default :class:`InlineRunner`.
    settings : SegmenterParams, optional
    """

    def __init__(self, runner=None, settings: SegmenterParams | None = None) -> None:
        self.runner = runner or InlineRunner()
        self.events = Events()
        self.image: ImageData | None = None
        self.image_path: Path | None = None
        self.base_rgb: np.ndarray | None = None
        self.base_picture: Any = None  # base_rgb converted for the canvas
        self.settings = settings or SegmenterParams()
        # the fitted model, the settings it was fitted with, and its maps
        self.segmenter: Segmenter | None = None
        self.model_params: SegmenterParams | None = None
        self.model_source: str = ""  # "fit", "auto K", or the model file
        # Which of a loaded model's values its panel cannot show: kept beside
        # the model line, where the next status message cannot replace it.
        self.model_note = ""
        self.segmentation = None
        self.stats: list = []
        self.histogram: tuple | None = None
        self.stopped = False
        self.ll_history: list[float] = []
        self.fit_phase = ""
        self._last_iteration = None  # the running fit's newest EMProgress
        self._shown_iteration_at = -math.inf
        # view
        self.view = "original"
        self.component = 0
        self.visible: list[bool] = []
        self.names: list[str] = []
        self.opacity = 0.6
        self.overlay = True
        self.percentile = 1.0
        self.anomaly_threshold: float | None = None
        self.anomaly_fraction: float | None = None
        self.picture: np.ndarray | None = None
        # Turns a view's RGB array into what the canvas shows; applied in the
        # worker (the window makes Qt images there, off the GUI thread).
        self.convert_picture: Callable[[np.ndarray], Any] = lambda rgb: rgb
        # Auto K
        self.k_range = DEFAULT_K_RANGE
        self.k_selection = None
        self.k_rows: list[dict] = []
        # inspection
        self.inspection_settings = InspectionParams(auto_k=False)
        # The inspection's own model settings (INSPECTION_MODEL_SETTINGS).
        self.inspection_model = INSPECTOR_MODEL_DEFAULTS
        self.references: list[Path] = []
        self.inspector: Inspector | None = None
        self.inspector_source = ""
        self.inspector_note = ""  # as model_note, for the Inspection panel
        self.false_alarm_rate = 1e-4
        self.scored: ScoredImage | None = None
        self.inspection = None  # InspectionResult of the shown image
        self.inspected_paths: list[Path] = []
        self.folder_images: list[Path] = []
        self.index = -1
        # jobs by kind; a job's results count only while it is the current one
        self._jobs: dict[str, JobContext] = {}
        self.status_text = "Open an image to start (Ctrl+O), or drop one on the window."
        self.last_cancel_seconds: float | None = None

    # ------------------------------------------------------------------
    # status and jobs
    @property
    def busy(self) -> bool:
        return bool(self._jobs.keys() - {"render"})

    def is_running(self, kind: str) -> bool:
        return kind in self._jobs

    def set_status(self, text: str, fraction: float | None = -1.0) -> None:
        """One status line; ``fraction`` in [0, 1], None for busy without a
        measure, -1 for idle (no bar)."""
        self.status_text = text
        self.events.status.emit(text, fraction)

    def _start(self, kind: str, work, *, progress=None, done=None, failed=None, inline=False) -> JobContext:
        old = self._jobs.pop(kind, None)
        if old is not None:
            old.cancel()

        def on_progress(value):
            if self._jobs.get(kind) is job and progress is not None:
                progress(value)

        def on_done(result):
            if self._jobs.get(kind) is job:
                del self._jobs[kind]
                self.events.busy.emit()
                if done is not None:
                    done(result)

        def on_failed(message):
            if self._jobs.get(kind) is job:
                del self._jobs[kind]
                self.events.busy.emit()
                self.set_status(f"failed: {message}")
                (failed or (lambda m: self.events.message.emit("gmmseg", m)))(message)

        job = JobContext(on_progress)
        self._jobs[kind] = job  # before it starts: an inline job ends inside start()
        self.events.busy.emit()
        self.runner.start(kind, work, job, done=on_done, failed=on_failed, inline=inline)
        return job

    def cancel(self) -> None:
        """Stop every running job; the session is idle when this returns
        (workers still inside a strip finish it in the background, unheard)."""
        start = time.perf_counter()
        kinds = [k for k in self._jobs if k != "render"]
        if not kinds:
            return
        for kind in kinds:
            self._jobs.pop(kind).cancel()
        if "fit" in kinds or "maps" in kinds:
            if self.segmenter is not None and self.segmentation is None:
                self.stopped = True
                self.set_status(self._model_words() + "; maps not computed (Segment > Compute Maps)")
            else:
                self.set_status("stopped")
            self.events.model.emit()
        elif kinds == ["load"]:
            self.set_status(f"opening cancelled; {self._image_words() if self.image is not None else 'no image open'}")
        else:
            self.set_status(f"stopped: {', '.join(kinds)}")
        self.events.busy.emit()
        self.last_cancel_seconds = time.perf_counter() - start

    # ------------------------------------------------------------------
    # image
    def set_image(self, image: ImageData, path: str | Path | None = None, shown: LoadedImage | None = None) -> None:
        """Show a (loaded) image: results of the previous image go, a
        reference model stays and inspects this one. ``shown``: its
        pictures, when a loading job made them already."""
        for kind in ("fit", "maps", "auto K", "predict", "score", "render"):
            job = self._jobs.pop(kind, None)
            if job is not None:
                job.cancel()
        if shown is None:
            shown = LoadedImage.of(image, self.convert_picture)
        self.image = image
        self.image_path = Path(path) if path is not None else image.source
        self.base_rgb, self.base_picture = shown.base_rgb, shown.base_picture
        self._clear_model()
        self.k_selection, self.k_rows = None, []
        self.scored, self.inspection = None, None
        self.picture = None
        if self.view not in ("original", "inspection"):
            self.view = "original"
        notes = f" ({'; '.join(image.notes)})" if image.notes else ""
        self.set_status(f"{self.image_name}: {image.width} x {image.height}, {image.mode}{notes}")
        self.events.image.emit()
        self.events.auto_k.emit()
        self.events.inspection.emit()
        self.events.busy.emit()
        if self.inspector is not None:
            self.inspect_current()
        else:
            self.refresh_picture()

    def open_image(self, path: str | Path, max_pixels: int | None = None, *, then: Callable[[], Any] | None = None,
                   too_large: Callable[[ImageTooLargeError], Any] | None = None,
                   failed: Callable[[str], Any] | None = None) -> None:
        """Load an image in a worker and show it; the shown image stays
        until then (and when the load fails or is cancelled with
        :meth:`cancel`). Opening another image while one loads replaces it.

        ``then()`` runs once the image is shown; ``too_large(error)`` when
        the image has more pixels than memory allows (by default: a message);
        ``failed(message)`` when it cannot be read (by default: a message).
        """
        path = Path(path)
        convert = self.convert_picture
        self.set_status(f"loading {path.name}...", None)

        def work(job: JobContext):
            try:
                image = load_image(path, max_pixels=max_pixels)
            except ImageTooLargeError as exc:
                return exc  # a question for the person, not a failure
            job.check()
            return image, LoadedImage.of(image, convert)

        def done(result):
            if isinstance(result, ImageTooLargeError):
                self.set_status(self._image_words())
                (too_large or (lambda exc: self.events.message.emit("gmmseg", str(exc))))(result)
                return
            image, shown = result
            self.set_image(image, path, shown)
            if then is not None:
                then()

        def on_failed(message):
            self.set_status(f"cannot open {path.name}: {message}")
            (failed or (lambda m: self.events.message.emit("gmmseg", m)))(message)

        self._start("load", work, done=done, failed=on_failed)

    def _image_words(self) -> str:
        if self.image is None:
            return "no image"
        return f"{self.image_name}: {self.image.width} x {self.image.height}, {self.image.mode}"

    @property
    def image_name(self) -> str:
        return self.image_path.name if self.image_path is not None else "image"

    def _clear_model(self) -> None:
        self.segmenter = None
        self.model_params = None
        self.model_source = ""
        self.model_note = ""
        self.segmentation = None
        self.stats, self.histogram = [], None
        self.stopped = False
        self.ll_history = []
        self.visible, self.names = [], []
        self.anomaly_threshold = self.anomaly_fraction = None
        self.events.model.emit()

    # ------------------------------------------------------------------
    # settings
    def set_settings(self, params: SegmenterParams) -> None:
        if params != self.settings:
            self.settings = params
            self.events.settings.emit()

    @property
    def settings_differ(self) -> bool:
        """True when the Model panel no longer holds the shown model's settings."""
        return self.model_params is not None and self.model_params != self.settings

    def model_k(self) -> int | None:
        return None if self.segmenter is None else int(self.segmenter.gmm_.n_components)

    # ------------------------------------------------------------------
    # fitting
    def run_fit(self, params: SegmenterParams | None = None, source: str = "fit") -> None:
        """Fit the settings (or ``params``) on the image, then compute the maps:
        a preview first, the full resolution after, strip by strip (each
        strip of the label view shown as it arrives)."""
        if self.image is None:
            return
        if params is not None:
            self.set_settings(params)
        params = self.settings
        image = self.image
        self._clear_model()
        self.ll_history = []
        self.fit_phase = ""
        self._shown_iteration_at = -math.inf
        self.set_status("preparing the pixels...", None)
        started = time.perf_counter()
        labels_view = self._labels_view_drawer()

        def work(job: JobContext):
            last_preview = [time.perf_counter()]
            preview_data = {}
            convert = labels_view.convert

            def send_preview(model):
                preview = preview_labels(image, model, params, preview_data)
                if preview is not None:  # None: no colour features to preview
                    job.report(("preview", (convert(preview[0]), preview[1])))

            def callback(p):
                if job.cancelled:
                    return True
                job.report(("iteration", p))
                now = time.perf_counter()
                if p.phase in ("em", "spatial") and now - last_preview[0] > PREVIEW_INTERVAL_S:
                    send_preview(p)
                    last_preview[0] = time.perf_counter()
                return job.cancelled

            def fitted(segmenter):
                # Ask the session to keep the model now: if the maps are
                # cancelled, the stopped model is still there.
                job.report(("model", segmenter))
                if getattr(segmenter.gmm_, "stopped_", False) or job.cancelled:
                    raise JobCancelled
                send_preview(segmenter)
                labels_view.start(segmenter, image)

            def phase(text):
                job.check()
                if text.startswith("maps: "):
                    job.report(("maps", int(text.split()[1])))

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                _, segmenter, segmentation = workflows.segment_file(
                    image, params, callback=callback, phase=phase, fitted=fitted,
                    strips=lambda start, stop, maps: labels_view.draw(job, start, stop, maps["labels"]))
            return _maps_outcome(segmenter, segmentation, job, labels_view)

        def progress(value):
            kind, data = value
            if kind == "iteration":
                self._on_iteration(data, params)
            elif kind == "preview":
                self.events.preview.emit(*data)
            elif kind == "model":
                self._show_iteration(self._last_iteration)  # the convergence curve up to its end
                self._set_model(data, params, source)
                self.set_status(f"{self._model_words()}; maps: preview", 0.0)
            elif kind == "maps":
                self.set_status(f"{self._model_words()}; maps: {data} %", data / 100.0)
            elif kind == "strip":
                self._on_strip(*data)

        def done(outcome: FitOutcome):
            self._set_maps(outcome)
            self.set_status(f"{self._model_words()}; maps in {time.perf_counter() - started:.1f} s")

        self._start("fit", work, progress=progress, done=done)

    def _on_iteration(self, p, params: SegmenterParams) -> None:
        """Keep every iteration's value; tell the panels at most every
        ``ITERATION_INTERVAL_S`` (redrawing the plots for every EM
        iteration of a large image kept the GUI thread busy half the time)."""
        self._last_iteration = p
        if p.phase == "init":
            self.fit_phase = "starts"
            self.set_status(f"starts: initialisation {p.init + 1} of {params.n_starts} (k-means)", None)
            return
        if p.iteration == 1:
            self.ll_history = []
        self.fit_phase = p.phase
        self.ll_history.append(float(p.lower_bound))
        if p.iteration == 1 or time.perf_counter() - self._shown_iteration_at >= ITERATION_INTERVAL_S:
            self._show_iteration(p)

    def _show_iteration(self, p) -> None:
        if p is None or p.phase == "init" or not self.ll_history:
            return
        self._shown_iteration_at = time.perf_counter()
        params = self.settings
        what = "spatial fit" if p.phase == "spatial" else "EM"
        value = "objective" if p.phase == "spatial" else "log-likelihood"
        self.set_status(f"{what}: iteration {p.iteration} of at most {params.max_iter}, {value} {p.lower_bound:.4f}",
                        None)
        self.events.fit_progress.emit(p, self.ll_history)

    def _labels_view_drawer(self) -> LabelsViewDrawer:
        """What the worker needs to draw the label view strip by strip as
        the maps arrive, with the view's present opacity and overlay."""
        return LabelsViewDrawer(self.base_rgb, self.opacity, self.overlay, self.convert_picture)

    def _on_strip(self, start: int, stop: int, picture) -> None:
        # Strips go over the preview, where the preview is shown.
        if self.view in ("labels", "original"):
            self.events.strip.emit(start, stop, picture)

    def _set_model(self, segmenter: Segmenter, params: SegmenterParams, source: str) -> None:
        self.segmenter = segmenter
        self.model_params = params
        self.model_source = source
        self.model_note = ""
        K = segmenter.gmm_.n_components
        self.names = list(segmenter.component_names_)
        self.visible = [True] * K
        self.component = min(self.component, K - 1)
        self.stopped = bool(getattr(segmenter.gmm_, "stopped_", False))  # a loaded model was not stopped
        self.events.model.emit()

    def _set_maps(self, outcome: FitOutcome) -> None:
        self.segmentation = outcome.segmentation
        self.stats = outcome.stats
        self.histogram = outcome.histogram
        self.stopped = False
        if self.view == "original":
            self.view = "labels"
        self.events.model.emit()
        self.events.view.emit()
        self._update_threshold()
        drawn = outcome.labels_view
        if drawn is not None and self._answers(drawn[0]):
            old = self._jobs.pop("render", None)
            if old is not None:
                old.cancel()
            self.picture = drawn[1]
            self.events.picture.emit(drawn[2])
        else:  # another view, or the view changed while the maps were computed
            self.refresh_picture()

    def _answers(self, drawn: ViewRequest) -> bool:
        """Whether a drawn view is what the current view shows."""
        now = self.view_request()
        return (now.mode == drawn.mode and now.segmentation is drawn.segmentation and now.opacity == drawn.opacity
                and now.overlay == drawn.overlay and now.visible == drawn.visible
                and np.array_equal(now.colors, drawn.colors))

    def _model_words(self) -> str:
        if self.segmenter is None:
            return "no model"
        gm = self.segmenter.gmm_
        state = "stopped" if getattr(gm, "stopped_", False) else ("converged" if gm.converged_ else "not converged")
        return f"K = {gm.n_components}: {state} after {gm.n_iter_} iterations, log-likelihood {gm.lower_bound_:.4f}"

    def compute_maps(self) -> None:
        """The maps of a model whose fit was stopped before them (or of a
        loaded model), strip by strip, cancellable; the label view is shown
        strip by strip as it arrives."""
        if self.segmenter is None or self.image is None:
            return
        segmenter, image = self.segmenter, self.image
        started = time.perf_counter()
        self.set_status(f"{self._model_words()}; maps: 0 %", 0.0)
        labels_view = self._labels_view_drawer()

        def work(job: JobContext):
            def phase(text):
                job.check()
                if text.startswith("maps: "):
                    job.report(("maps", int(text.split()[1])))

            labels_view.start(segmenter, image)
            _, segmentation = workflows.apply_model(
                image, segmenter, phase=phase,
                strips=lambda start, stop, maps: labels_view.draw(job, start, stop, maps["labels"]))
            return _maps_outcome(segmenter, segmentation, job, labels_view)

        def progress(value):
            kind, data = value
            if kind == "maps":
                self.set_status(f"{self._model_words()}; maps: {data} %", data / 100.0)
            elif kind == "strip":
                self._on_strip(*data)

        def done(outcome):
            self._set_maps(outcome)
            self.set_status(f"{self._model_words()}; maps in {time.perf_counter() - started:.1f} s")

        self._start("maps", work, progress=progress, done=done)

    # ------------------------------------------------------------------
    # model files
    def use_model(self, segmenter: Segmenter, source: str) -> None:
        """Show a loaded model: its settings go to the Model panel, and its
        maps of the shown image are computed."""
        self._clear_model()
        self.set_settings(segmenter.params)
        self._set_model(segmenter, segmenter.params, source)
        if self.image is not None:
            self.compute_maps()

    def note_model(self, text: str) -> None:
        """A note on the shown model (e.g. values its panel cannot show),
        kept until another model is shown."""
        self.model_note = text
        self.set_status(text)
        self.events.model.emit()

    def save_model(self, path: str | Path) -> Path:
        """Write the shown model (with the components' names)."""
        if self.segmenter is None:
            raise ValueError("there is no model to save: run a fit first")
        self.segmenter.rename_components(self.names)
        written = self.segmenter.save(path, overwrite=True)
        self.set_status(f"model (K = {self.model_k()}) saved to {path}")
        return written

    # ------------------------------------------------------------------
    # Auto K
    def set_k_range(self, low: int, high: int) -> None:
        low, high = int(low), int(high)
        if not 1 <= low < high:
            raise ValueError(f"the K range needs 1 <= from < to, got {low}-{high}")
        self.k_range = (low, high)
        self.events.auto_k.emit()

    def run_auto_k(self, refit: bool = True) -> None:
        """Sweep K over :attr:`k_range` by the settings' K criterion, then
        (``refit``) fit the chosen K so that the model shown is the one chosen."""
        if self.image is None:
            return
        params, image = self.settings, self.image
        ks = range(self.k_range[0], self.k_range[1] + 1)
        self.k_selection, self.k_rows = None, []
        self.events.auto_k.emit()
        self.set_status(f"Auto K: fitting K = {ks[0]} of {ks[0]}-{ks[-1]}", 0.0)

        def work(job: JobContext):
            def on_row(row):
                job.report(row)
                return job.cancelled

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # the panel shows the edge warning
                return select_k(image, k_range=ks, params=params, callback=on_row)

        def progress(row):
            self.k_rows.append(row)
            self.events.auto_k.emit()
            done_count = len(self.k_rows)
            if done_count < len(ks):
                self.set_status(f"Auto K: fitting K = {ks[done_count]} of {ks[0]}-{ks[-1]}", done_count / len(ks))

        def done(result):
            self.k_selection = result
            self.k_rows = list(result.rows)
            self.events.auto_k.emit()
            if refit:
                self.run_fit(self.settings.replace(n_components=result.best_k), source="auto K")
            self.set_status(f"Auto K: {result.summary()}; fitting K = {result.best_k}..." if refit
                            else f"Auto K: {result.summary()}", None if refit else -1.0)

        self._start("auto K", work, progress=progress, done=done)

    def choose_k(self, k: int) -> None:
        """Take another K (e.g. a point of the criterion curve): refit with it."""
        self.run_fit(self.settings.replace(n_components=int(k)), source="chosen K")

    # ------------------------------------------------------------------
    # view
    def set_view(self, mode: str) -> None:
        if mode not in VIEWS:
            raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {mode!r}")
        if mode != self.view:
            self.view = mode
            self.events.view.emit()
            self.refresh_picture()

    def select_component(self, k: int) -> None:
        if self.segmenter is None or not 0 <= k < len(self.visible):
            return
        self.component = int(k)
        self.view = "soft"
        self.events.view.emit()
        self.refresh_picture()

    def set_visible(self, k: int, visible: bool) -> None:
        if 0 <= k < len(self.visible) and self.visible[k] != bool(visible):
            self.visible[k] = bool(visible)
            self.events.view.emit()
            self.refresh_picture()

    def rename(self, k: int, name: str) -> None:
        if 0 <= k < len(self.names):
            self.names[k] = name.strip() or f"Component {k}"
            if self.segmentation is not None:
                self.segmentation.names[k] = self.names[k]
            self.events.view.emit()

    def set_opacity(self, opacity: float) -> None:
        self.opacity = float(np.clip(opacity, 0.0, 1.0))
        self.events.view.emit()
        self.refresh_picture()

    def set_overlay(self, on: bool) -> None:
        self.overlay = bool(on)
        self.events.view.emit()
        self.refresh_picture()

    def set_percentile(self, percentile: float) -> None:
        self.percentile = float(np.clip(percentile, 0.0, 100.0))
        self._update_threshold()
        if self.view == "anomaly":
            self.refresh_picture()

    def _update_threshold(self) -> None:
        self.anomaly_threshold = self.anomaly_fraction = None
        if self.histogram is not None and self.segmentation is not None:
            # The threshold from the histogram's cumulative counts: exact
            # enough to show, instant on any image; the anomaly view and the
            # exports use the exact percentile.
            counts, edges = self.histogram
            total = int(self.segmentation.mask.sum())
            below = total - counts.sum()  # under the histogram's lowest edge
            target = self.percentile / 100.0 * total
            cumulative = below + np.concatenate([[0], np.cumsum(counts)])
            self.anomaly_threshold = float(np.interp(target, cumulative, edges))
        self.events.threshold.emit()

    def describe_pixel(self, x: int, y: int) -> str:
        """What the status bar says about the pixel under the mouse."""
        image = self.image
        if image is None or not (0 <= y < image.height and 0 <= x < image.width):
            return ""
        parts = [f"x {x}, y {y}"]
        parts.append(f"grey {image.pixels[y, x, 0] * 255:.0f}" if image.is_gray else
                     "RGB " + " ".join(f"{v * 255:.0f}" for v in image.pixels[y, x]))
        seg = self.segmentation
        if not image.mask[y, x]:
            parts.append("masked out")
        elif seg is not None:
            k = int(seg.labels[y, x])
            parts.append(f"label {k} ({self.names[k]})")
            params = self.model_params
            # per-pixel features or smoothing: a row of probabilities is a strip's work, not shown on hover
            if seg.has_map("probabilities") or not (params.features.per_pixel or params.smoothing > 0):
                probs = seg.map_rows("probabilities", y, y + 1)[0, x]
                parts.append("P " + " ".join(f"{v:.2f}" for v in probs[:12]) + (" ..." if len(probs) > 12 else ""))
            parts.append(f"log-lik {seg.log_likelihood[y, x]:.2f}")
        return "   ".join(parts)

    def display_colors(self) -> np.ndarray | None:
        if self.segmentation is None:
            return None
        return display_colors(self.segmentation.component_colors, self.image.is_gray)

    def view_request(self) -> ViewRequest:
        return ViewRequest(self.view, self.base_rgb, self.segmentation, self.component, self.opacity, self.overlay,
                           list(self.visible), self.percentile, self.display_colors(), self.inspection)

    def refresh_picture(self) -> None:
        """Draw the current view: at once for small images, in a worker for
        large ones (the newest request wins)."""
        if self.base_rgb is None:
            return
        request = self.view_request()
        if request.mode == "original" or (request.mode != "inspection" and request.segmentation is None):
            # The image itself, converted when it was opened: nothing to draw.
            old = self._jobs.pop("render", None)
            if old is not None:
                old.cancel()
            self.picture = self.base_rgb
            self.events.picture.emit(self.base_picture)
            return
        inline = self.base_rgb.shape[0] * self.base_rgb.shape[1] <= INLINE_RENDER_PIXELS

        convert = self.convert_picture

        def work(job: JobContext):
            rgb, threshold, fraction = render_view(request, cancelled=lambda: job.cancelled)
            return rgb, convert(rgb), threshold, fraction

        def done(result):
            rgb, converted, threshold, fraction = result
            if threshold is not None:
                self.anomaly_threshold, self.anomaly_fraction = threshold, fraction
                self.events.threshold.emit()
            self.picture = rgb
            self.events.picture.emit(converted)

        self._start("render", work, done=done, inline=inline)

    # ------------------------------------------------------------------
    # export
    def export(self, folder: str | Path, outputs, overwrite: bool) -> None:
        if self.segmentation is None:
            return
        seg, image, segmenter = self.segmentation, self.image, self.segmenter
        segmenter.rename_components(self.names)
        percentile = self.percentile
        self.set_status(f"writing into {folder}...", 0.0)

        def work(job: JobContext):
            def step(done, total, name):
                job.check()
                job.report((done, total, name))

            return workflows.export_files(seg, image, folder, segmenter, outputs=tuple(outputs), overwrite=overwrite,
                                          anomaly_percentile=percentile, progress=step)

        def done(written):
            self.set_status(f"exported {len(written)} files (model K = {segmenter.gmm_.n_components}) to {folder}")
            self.events.exported.emit(list(written))

        self._start("export", work, done=done,
                    progress=lambda v: self.set_status(f"writing {v[2]} ({v[0] + 1} of {v[1]})", v[0] / max(v[1], 1)))

    # ------------------------------------------------------------------
    # inspection
    def set_references(self, paths) -> None:
        self.references = [Path(p) for p in paths]
        self.events.inspector.emit()

    def set_inspection_settings(self, inspection: InspectionParams) -> None:
        """The panel's inspection settings; the minimum area and the
        false-reject rate apply at once to the model in use."""
        self.inspection_settings = inspection
        ins = self.inspector
        if ins is None:
            return
        changed = False
        if inspection.min_area != ins.inspection.min_area:
            ins.set_params(min_area=inspection.min_area)
            changed = True
        if inspection.false_reject_rate != ins.inspection.false_reject_rate:
            try:
                ins.set_false_reject_rate(inspection.false_reject_rate)
                changed = True
            except ValueError as exc:  # a model file without image scores
                self.set_status(str(exc))
        if changed:
            self.events.inspector.emit()
            self._rethreshold()

    def inspection_fit_settings(self) -> tuple[SegmenterParams, InspectionParams]:
        """What a reference fit uses: the Model panel's settings without the
        spatial prior and positions (inspection models good pixels wherever
        they are, as ``gmmseg fit``) and with the inspection's own model
        settings (:func:`gmmseg.params.reference_fit_params`), and the
        inspection settings with the false-alarm rate shown."""
        inspection = self.inspection_settings.replace(false_alarm_rate=self.false_alarm_rate)
        return reference_fit_params(self.settings, self.inspection_model), inspection

    def fit_inspector(self) -> None:
        if not self.references:
            return
        params, inspection = self.inspection_fit_settings()
        references = list(self.references)
        self.set_status(f"fitting the reference model on {len(references)} image(s)...", None)

        def work(job: JobContext):
            return Inspector(params=params, inspection=inspection).fit(references)

        self._start("reference fit", work, done=lambda ins: self._use_inspector(ins, "fitted"))

    def load_inspector(self, path: str | Path) -> None:
        """Use a saved inspection model (raises ValueError/OSError)."""
        self._use_inspector(Inspector.load(path), Path(path).name)

    def _use_inspector(self, inspector: Inspector, source: str) -> None:
        self.inspector = inspector
        self.inspector_source = source
        self.inspector_note = ""
        self.false_alarm_rate = inspector.false_alarm_rate
        self.inspection_settings = inspector.inspection
        self.inspection_model = inspector.params
        self.events.inspector.emit()
        if self.image is not None:
            # The shown image is inspected too, and the verdict names it.
            self.inspect_current()
        else:
            self.set_status("reference model ready: open an image or a folder of parts to inspect")

    def note_inspector(self, text: str) -> None:
        """A note on the inspection model in use, kept until another is used."""
        self.inspector_note = text
        self.set_status(text)
        self.events.inspector.emit()

    def save_inspector(self, path: str | Path) -> None:
        self.inspector.set_false_alarm_rate(self.false_alarm_rate)
        self.inspector.save(path, overwrite=True)
        self.set_status(f"inspection model saved to {path}")

    def set_false_alarm_rate(self, rate: float) -> None:
        self.false_alarm_rate = float(rate)
        self._rethreshold()

    def pixel_threshold(self) -> float:
        if self.inspector is None:
            return math.inf
        return self.inspector.threshold_for(self.false_alarm_rate)

    def open_folder(self, folder: str | Path, opener: Callable[..., Any] | None = None) -> bool:
        """Parts to inspect: the first is opened (then :meth:`step`)."""
        images = list_images(folder)
        if not images:
            return False
        self.folder_images = images
        self.index = -1
        self.show_part(0, opener)
        return True

    def show_part(self, index: int, opener: Callable[..., Any] | None = None) -> bool:
        """Open part ``index`` of the folder (inspected as every image is);
        False when there is no such part. ``opener(path, then=)`` opens it
        (the window's asks about huge images); by default :meth:`open_image`.
        The position moves once the part is shown."""
        if not 0 <= index < len(self.folder_images):
            return False

        def shown():
            self.index = index
            self.events.folder.emit()

        (opener or self.open_image)(self.folder_images[index], then=shown)
        return True

    def step(self, delta: int, opener: Callable[..., Any] | None = None) -> bool:
        return self.show_part(self.index + delta, opener)

    def inspect_current(self) -> None:
        """Score the shown image with the reference model (in a worker)."""
        if self.inspector is None or self.image is None:
            return
        inspector, image, name = self.inspector, self.image, self.image_name
        self.scored, self.inspection = None, None
        self.events.inspection.emit()
        self.set_status(f"inspecting {name}...", None)

        def work(job: JobContext):
            raw, score = workflows.score_image(image, inspector)
            return ScoredImage(image, raw, score)

        def done(scored: ScoredImage):
            if scored.image is not self.image:
                return
            self.scored = scored
            if self.image_path is not None and self.image_path not in self.inspected_paths:
                self.inspected_paths.append(self.image_path)
            self._rethreshold()
            self.view = "inspection"
            self.events.view.emit()
            self.refresh_picture()

        self._start("score", work, done=done)

    def _rethreshold(self) -> None:
        if self.scored is None or self.inspector is None:
            return
        self.inspection = self.inspector.find_regions(self.scored.score, self.pixel_threshold(), raw=self.scored.raw)
        r = self.inspection
        self.set_status(f"{self.image_name}: {r.verdict.upper()}, {len(r.regions)} region(s) "
                        f"(reference model: {self.inspector_source})")
        self.events.inspection.emit()
        if self.view == "inspection":
            self.refresh_picture()

    def report_paths(self) -> list[Path]:
        """The images a report covers: the folder's parts, or else the
        images inspected in this session."""
        return list(self.folder_images) or list(self.inspected_paths)

    def write_report(self, path: str | Path) -> None:
        paths = self.report_paths()
        if self.inspector is None or not paths:
            return
        inspector, threshold = self.inspector, self.pixel_threshold()

        def work(job: JobContext):
            rows = []
            for i, source in enumerate(paths):
                job.check()
                job.report((i, len(paths), source.name))
                try:
                    rows.append(workflows.inspection_row(source, inspector, threshold))
                except (OSError, ValueError) as exc:
                    rows.append(workflows.failed_row(source, exc))
            workflows.write_report(path, rows)
            return rows

        def done(rows):
            defective = sum(r.get("verdict") == "fail" for r in rows)
            self.set_status(f"report: {defective} of {len(rows)} images with defects, written to {path}")
            self.events.report.emit(str(path), len(rows), defective)

        self._start("report", work, done=done,
                    progress=lambda v: self.set_status(f"inspecting {v[0] + 1} of {v[1]}: {v[2]}", v[0] / v[1]))
