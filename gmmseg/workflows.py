"""What the command line and the application do with one file, in one place.

* :func:`segment_file`, :func:`apply_model`: fit-and-segment or segment with
  a saved model, recording the settings a ``summary.json`` holds.
* :func:`write_segmentation`, :func:`write_inspection`: write an image's
  outputs into a staged folder that appears (atomically) only when every
  file in it is complete.
* :func:`inspection_row`: inspect one file and make its report row (the
  CLI's ``inspect`` and the application's report share it).
* :func:`run_task`: one image of a batch, start to finish, as plain data in
  and out (it runs in worker processes); never raises for a bad input.
* :func:`write_report`, :func:`write_run_summary`: the tables of a run.

The CLI (:mod:`gmmseg.cli`) and the application's workers call these; neither
re-implements them.
"""

import json
import os
import signal
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._fileio import atomic_write, refuse_existing, staged_folder, write_json
from .engine import ConvergenceWarning, EMProgress
from .export import OUTPUTS, REPORT_FIELDS, csv_writer, export_inspection, export_segmentation
from .inspection import InspectionResult, Inspector
from .io import SEGMENT_BYTES_PER_PIXEL, ImageData, available_memory, image_size, load_image, size_text
from .params import SegmenterParams
from .persistence import read_segmenter_state
from .segment import _STRIP_PIXELS, ImageLike, Segmentation, Segmenter

#: Columns of ``run_summary.csv`` for segment and apply runs.
SEGMENT_FIELDS = ("input", "output", "status", "error", "seconds", "n_components", "converged")
MODES = ("segment", "apply", "inspect")


@dataclass
class Task:
    """One image of a batch: plain data, so it can go to another process.

    Attributes
    ----------
    mode : {'segment', 'apply', 'inspect'}
    input : str
        The image file.
    output : str or None
        The folder its outputs go to (``None``: no files, e.g. an inspection
        that only makes a report row).
    settings : dict or None
        ``SegmenterParams.to_dict()`` for 'segment'.
    model : str or None
        Model file for 'apply' and 'inspect'.
    anomaly_percentile : float
        Threshold of ``anomaly.png`` for 'segment' and 'apply'.
    overwrite : bool
        Replace an existing output folder.
    debug : bool
        Keep the traceback of a failure in the result.
    outputs : tuple of str
        The files 'segment' and 'apply' write (see :data:`gmmseg.export.OUTPUTS`).
    max_pixels : int or None
        The largest image accepted (None: :func:`gmmseg.io.default_max_pixels`).
    """

    mode: str
    input: str
    output: str | None = None
    settings: dict | None = None
    model: str | None = None
    anomaly_percentile: float = 1.0
    overwrite: bool = False
    debug: bool = False
    outputs: tuple = OUTPUTS
    max_pixels: int | None = None


def default_message(exc: BaseException) -> str:
    """An error as one line (the library's wording)."""
    return str(exc).strip().replace("\n", " ") or type(exc).__name__


_interrupt_seen = threading.Event()


def note_interrupt(signum, frame):
    """A SIGINT handler for front ends: remember the interrupt, then raise
    KeyboardInterrupt as Python's own handler does.

    When Ctrl-C arrives while a compiled kernel is being called, Python may
    report it as a SystemError ("returned a result with an exception set")
    that is not always chained to the KeyboardInterrupt; the remembered
    interrupt still tells :func:`was_interrupted` what happened.
    """
    _interrupt_seen.set()
    raise KeyboardInterrupt


def watch_interrupts() -> None:
    """Install :func:`note_interrupt` for SIGINT (in the main thread of a
    front end), unless the caller ignores Ctrl-C; forgets earlier interrupts."""
    _interrupt_seen.clear()
    in_main_thread = threading.current_thread() is threading.main_thread()  # signal.signal needs it
    if in_main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, note_interrupt)


def was_interrupted(exc: BaseException) -> bool:
    """True for an error that an interrupt caused: chained to a
    KeyboardInterrupt, or raised after :func:`note_interrupt` saw one."""
    return (_interrupt_seen.is_set() or isinstance(exc.__cause__, KeyboardInterrupt)
            or isinstance(exc.__context__, KeyboardInterrupt))


# ---------------------------------------------------------------------------
# one image
def segmentation_settings(segmenter: Segmenter, model: str | os.PathLike | None = None) -> dict[str, Any]:
    """The settings a segmentation's ``summary.json`` records: every setting,
    whether EM converged and after how many iterations, and the model file
    when one was applied."""
    settings = segmenter.get_params()
    settings["converged"] = bool(segmenter.gmm_.converged_)
    settings["n_iter"] = int(segmenter.gmm_.n_iter_)
    if model is not None:
        settings["model"] = str(model)
    return settings


def fit_phase_text(progress: EMProgress) -> str:
    """A running fit's progress in words (e.g. for a status line)."""
    if progress.phase == "init":
        return f"fitting: initialisation {progress.init + 1}"
    if progress.phase == "spatial":
        return f"spatial fit: iteration {progress.iteration}, objective {progress.lower_bound:.4f}"
    return f"fitting: iteration {progress.iteration}, log-likelihood {progress.lower_bound:.4f}"


def segment_file(source: ImageLike, params: SegmenterParams, *, callback=None, max_pixels: int | None = None,
                 phase: Callable[[str], Any] | None = None, fitted: Callable[[Segmenter], Any] | None = None,
                 strips: Callable[[int, int, dict], Any] | None = None) -> tuple[ImageData, Segmenter, Segmentation]:
    """Fit a new Segmenter with ``params`` on an image and segment it
    (``max_pixels``: the largest image accepted, see :func:`gmmseg.load_image`).
    ``phase(text)`` hears what it is doing: loading, fitting (every
    iteration), maps (``"maps: 40 %"`` after each strip of rows); an
    exception it raises stops the work there (the application cancels so
    between strips). ``fitted(segmenter)`` is called with the fitted model
    before its maps are computed (e.g. to show a preview or keep the model
    of a fit that was stopped). ``strips(start, stop, maps)`` hears each
    strip of maps as it is computed (:meth:`gmmseg.Segmenter.predict`)."""
    if phase is not None:
        phase("loading")
    image = load_image(source, max_pixels=max_pixels)
    segmenter = Segmenter(params=params)

    def report(progress):
        if phase is not None:
            phase(fit_phase_text(progress))
        return callback(progress) if callback is not None else None

    def then_maps(model):
        if fitted is not None:
            fitted(model)
        if phase is not None:
            phase("maps")

    if phase is not None:
        phase("fitting")
    # fit_predict, not fit then predict: a colour-only model's table of
    # distinct colours is built once.
    seg = segmenter.fit_predict(image, callback=report if phase is not None or callback is not None else None,
                                fitted=then_maps, progress=_maps_progress(phase), strips=strips)
    return image, segmenter, seg


def score_image(source: ImageLike, inspector: Inspector, *, max_pixels: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """An image's unsmoothed anomaly score and its calibrated (smoothed)
    score map under a reference model: what the application keeps to
    re-threshold an image live (:meth:`gmmseg.Inspector.find_regions`)."""
    return inspector.score_maps(load_image(source, max_pixels=max_pixels))


def _maps_progress(phase: Callable[[str], Any] | None) -> Callable[[int, int], None] | None:
    if phase is None:
        return None

    def report(done, total):
        phase(f"maps: {100 * done // max(total, 1)} %")

    return report


def apply_model(source: ImageLike, segmenter: Segmenter, *, max_pixels: int | None = None,
                phase: Callable[[str], Any] | None = None, strips: Callable[[int, int, dict], Any] | None = None
                ) -> tuple[ImageData, Segmentation]:
    """Segment an image with a fitted Segmenter (e.g. a loaded model);
    ``phase`` and ``strips`` as in :func:`segment_file`."""
    if phase is not None:
        phase("loading")
    image = load_image(source, max_pixels=max_pixels)
    if phase is not None:
        phase("maps")
    return image, segmenter.predict(image, progress=_maps_progress(phase), strips=strips)


def export_files(
    segmentation: Segmentation,
    image: ImageData,
    folder: str | os.PathLike,
    segmenter: Segmenter,
    *,
    outputs: Iterable[str] = OUTPUTS,
    overwrite: bool = False,
    anomaly_percentile: float = 1.0,
    model: str | os.PathLike | None = None,
    progress: Callable[[int, int, str], Any] | None = None,
) -> list[Path]:
    """Write chosen outputs of a segmentation into ``folder`` file by file
    (each atomic; nothing is written when any exists, unless ``overwrite``).
    Other files in ``folder`` are left alone."""
    return export_segmentation(
        segmentation, image, folder, outputs=tuple(outputs), overwrite=overwrite,
        anomaly_percentile=anomaly_percentile, settings=segmentation_settings(segmenter, model), progress=progress,
    )


def write_segmentation(
    segmentation: Segmentation,
    image: ImageData,
    target: str | os.PathLike,
    segmenter: Segmenter,
    *,
    overwrite: bool = False,
    anomaly_percentile: float = 1.0,
    model: str | os.PathLike | None = None,
    outputs: Iterable[str] = OUTPUTS,
    progress: Callable[[int, int, str], Any] | None = None,
) -> Path:
    """Write the chosen outputs (default: every one) of a segmentation into
    the folder ``target``, which appears only when complete (an existing one
    is replaced only with ``overwrite``). ``progress`` as in
    :func:`gmmseg.export.export_segmentation`."""
    with staged_folder(target, overwrite=overwrite) as staging:
        export_files(segmentation, image, staging, segmenter, overwrite=True, outputs=outputs,
                     anomaly_percentile=anomaly_percentile, model=model, progress=progress)
    return Path(target)


def write_inspection(result: InspectionResult, image: ImageData, target: str | os.PathLike, *,
                     overwrite: bool = False, summary: dict | None = None) -> Path:
    """Write an image's inspection outputs into the folder ``target``, which
    appears only when complete."""
    with staged_folder(target, overwrite=overwrite) as staging:
        export_inspection(result, image, staging, overwrite=True, summary=summary)
    return Path(target)


def inspection_row(
    source: ImageLike,
    inspector: Inspector,
    threshold: float | None = None,
    *,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    model: str | os.PathLike | None = None,
    max_pixels: int | None = None,
) -> dict[str, Any]:
    """Inspect one image and return its report row (see
    :data:`gmmseg.export.REPORT_FIELDS`); with ``output``, also write its
    files there. Raises for an unreadable image (:func:`run_task` and the
    application turn that into a failed row)."""
    image = load_image(source, max_pixels=max_pixels)
    result = inspector.inspect(image, threshold=threshold)
    row: dict[str, Any] = {"input": str(source), "output": str(output or ""), "status": "ok", "error": ""}
    row.update(result.report_row())
    if output is not None:
        write_inspection(result, image, output, overwrite=overwrite,
                         summary={"image": str(source), "model": str(model) if model else None})
    return row


def failed_row(source: ImageLike, exc: BaseException, explain: Callable[[BaseException], str] = default_message
               ) -> dict[str, Any]:
    """The report row of an image that could not be processed."""
    return {"input": str(source), "output": "", "status": "failed", "error": explain(exc)}


def run_task(task: Task, explain: Callable[[BaseException], str] = default_message,
             phase: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Process one image of a batch and return its result row.

    A bad input gives a row with ``status == "failed"`` and ``error`` (worded
    by ``explain``); it never raises, except KeyboardInterrupt. Outputs go to
    a staged folder that appears only when complete. ``phase(text)``, when
    given, hears what is being done (loading, fitting with each iteration,
    maps, writing each file): a status line for one large image.
    """
    start = time.perf_counter()
    target = Path(task.output) if task.output else None
    result: dict[str, Any] = {"input": task.input, "output": str(target or ""), "status": "ok", "error": "",
                              "seconds": 0.0}
    try:
        if task.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {task.mode!r}")
        if target is not None:
            refuse_existing([target], task.overwrite)  # before any work is spent on it
        if task.mode == "inspect":
            if phase is not None:
                phase("inspecting")
            result.update(inspection_row(task.input, Inspector.load(task.model), output=target,
                                         overwrite=task.overwrite, model=task.model, max_pixels=task.max_pixels))
        else:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                if task.mode == "apply":
                    segmenter = Segmenter.load(task.model)
                    image, seg = apply_model(task.input, segmenter, max_pixels=task.max_pixels, phase=phase)
                else:
                    image, segmenter, seg = segment_file(task.input, SegmenterParams.from_dict(task.settings or {}),
                                                         max_pixels=task.max_pixels, phase=phase)

            def writing(done, total, name):
                if phase is not None and name:
                    phase(f"writing {name} ({done + 1} of {total})")

            if target is not None:
                write_segmentation(seg, image, target, segmenter, overwrite=task.overwrite, outputs=task.outputs,
                                   anomaly_percentile=task.anomaly_percentile,
                                   model=task.model if task.mode == "apply" else None, progress=writing)
            result["n_components"] = seg.n_components
            result["converged"] = bool(segmenter.gmm_.converged_)
            if any(issubclass(w.category, ConvergenceWarning) for w in caught):
                result["warning"] = f"EM did not converge within max_iter={segmenter.max_iter} iterations"
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one bad file must not stop the batch
        if was_interrupted(exc):
            raise KeyboardInterrupt from None
        if task.debug:
            result["traceback"] = traceback.format_exc()
        if isinstance(exc, MemoryError):
            exc = MemoryError(memory_message(task, exc))
        result["status"] = "failed"
        result["error"] = explain(exc)
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result


# ---------------------------------------------------------------------------
# memory
# Bytes per strip pixel (gmmseg.segment works in strips of about
# _STRIP_PIXELS pixels) per feature, per component and per texture column:
# the strip's float32 feature table, its mixture table and mean-field maps
# (two sets), and its filter bank with the context rows around it.
_STRIP_BYTES_PER_FEATURE = 4
_STRIP_BYTES_PER_COMPONENT = 12
_STRIP_BYTES_PER_TEXTURE_COLUMN = 12


def memory_needed(task: Task) -> tuple[int, int, int] | None:
    """About how many bytes processing ``task``'s image needs, with its
    width and height: ``(bytes, width, height)``, or None when its header
    cannot be read. An estimate (from the image size, K and the features),
    for ``--jobs auto`` and error messages."""
    size = image_size(task.input)
    if size is None:
        return None
    width, height = size
    try:
        if task.mode == "segment":
            params = SegmenterParams.from_dict(task.settings or {})
        else:
            params = read_segmenter_state(task.model).params
    except (ValueError, OSError):
        params = SegmenterParams()
    features = params.features
    strip = min(width * height, _STRIP_PIXELS) * (
        _STRIP_BYTES_PER_FEATURE * features.n_features(3) + _STRIP_BYTES_PER_COMPONENT * params.n_components
        + _STRIP_BYTES_PER_TEXTURE_COLUMN * features.n_texture_features)
    return width * height * SEGMENT_BYTES_PER_PIXEL + strip, width, height


def auto_jobs(tasks: Sequence[Task], cores: int) -> int:
    """How many images to process at once (``--jobs auto``): one per core,
    fewer when the memory available cannot hold that many of the largest
    image (estimated by :func:`memory_needed` from the headers), at least one."""
    jobs = max(1, min(cores, len(tasks)))
    available = available_memory()
    if available is None or jobs == 1:
        return jobs
    largest = max((needed[0] for needed in map(memory_needed, tasks) if needed is not None), default=0)
    # each worker process also holds the interpreter, NumPy, SciPy and the kernels (about 200 MB)
    per_job = largest + _PROCESS_BYTES
    return max(1, min(jobs, int(available // max(per_job, 1))))


_PROCESS_BYTES = 200_000_000


def memory_message(task: Task, exc: MemoryError) -> str:
    """What an out-of-memory failure of ``task`` says: the memory its image
    needs (estimated) and the allocation that failed (NumPy names it)."""
    detail = str(exc).strip()
    needed = memory_needed(task)
    text = "out of memory"
    if needed is not None:
        total, width, height = needed
        text += f": processing this {width} x {height} image needs about {size_text(total)}"
    if detail:
        text += f" ({detail})"
    return text


def killed_message(task: Task) -> str:
    """What fails an image whose worker process was killed (the kernel's
    out-of-memory killer is the usual reason): the memory it needs."""
    text = "out of memory: the worker process processing it was killed"
    needed = memory_needed(task)
    if needed is not None:
        total, width, height = needed
        text += f"; this {width} x {height} image needs about {size_text(total)}"
    return text


# ---------------------------------------------------------------------------
# tables of a run
def write_report(path: str | os.PathLike, rows: Sequence[dict], *, overwrite: bool = True) -> Path:
    """Write an inspection report: one CSV row per image (:data:`REPORT_FIELDS`)."""
    return atomic_write(path, csv_writer(rows, REPORT_FIELDS), overwrite=overwrite)


def run_summary_paths(out_dir: str | os.PathLike, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Where a run's ``run_summary.json`` and ``.csv`` go: those names, or
    with ``overwrite`` false and an earlier run's summary there, the first
    free ``run_summary-2``, ``-3``, ... (the earlier one is kept)."""
    out_dir = Path(out_dir)
    n = 1
    while True:
        stem = "run_summary" if n == 1 else f"run_summary-{n}"
        paths = (out_dir / f"{stem}.json", out_dir / f"{stem}.csv")
        if overwrite or not any(path.exists() for path in paths):
            return paths
        n += 1


def write_run_summary(out_dir: str | os.PathLike, results: Sequence[dict], seconds: float, *,
                      fields: Sequence[str] = SEGMENT_FIELDS, interrupted: bool = False,
                      overwrite: bool = False) -> tuple[Path, Path]:
    """``run_summary.json`` and ``run_summary.csv`` of a batch in ``out_dir``;
    an earlier run's are replaced only with ``overwrite`` (otherwise this
    run's get the first free number, see :func:`run_summary_paths`).
    Returns the paths written."""
    data = {
        "results": list(results),
        "images": len(results),
        "failed": sum(r["status"] != "ok" for r in results),
        "seconds": round(seconds, 3),
        "interrupted": interrupted,
    }
    json_path, csv_path = run_summary_paths(out_dir, overwrite=overwrite)
    write_json(json_path, data, overwrite=overwrite)
    atomic_write(csv_path, csv_writer(results, fields), overwrite=overwrite)
    return json_path, csv_path


# ---------------------------------------------------------------------------
# output folders of a batch
def _safe_stem(path: Path) -> str:
    """The output folder name of an input: its stem, never one that names
    the output folder itself or its parent (inputs called ".png", "..png")."""
    stem = path.stem
    return "image" if stem in ("", ".", "..") else stem


def _output_source(folder: Path) -> str | None:
    """The input an existing output folder was made from, by its
    summary.json (segment/apply: image.source; inspect: image)."""
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    image = summary.get("image") if isinstance(summary, dict) else None
    source = image.get("source") if isinstance(image, dict) else image
    return source if isinstance(source, str) else None


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def output_dirs(files: Sequence[Path], out_dir: str | os.PathLike) -> list[Path]:
    """``out_dir/<stem>`` per input, unique in the batch and on disk.

    The first input of each stem gets the stem itself (an existing folder
    there is that input's earlier output: it is replaced only with
    ``--force``). Every other input gets ``<stem>-2``, ``-3``, ... skipping
    names that any input of the batch has as its own stem, names given
    already, and folders that exist with the outputs of another input (by
    their summary.json), so no result overwrites another and none is lost.
    Names are compared without case (case-insensitive file systems).
    """
    out_dir = Path(out_dir)
    stems = [_safe_stem(Path(f)) for f in files]
    reserved = {stem.casefold() for stem in stems}
    taken: set[str] = set()
    existing = {p.name.casefold(): p for p in out_dir.iterdir()} if out_dir.is_dir() else {}
    result = []
    for f, stem in zip(files, stems):
        name = stem
        if name.casefold() in taken:
            n = 2
            while True:
                name = f"{stem}-{n}"
                key = name.casefold()
                other = existing.get(key)
                if key not in reserved and key not in taken and (
                        other is None or _same_file(_output_source(other) or "", f)):
                    break
                n += 1
        taken.add(name.casefold())
        result.append(out_dir / name)
    return result
