"""The ``gmmseg`` command line.

Errors are one line on stderr (``--debug`` shows the traceback). Batch runs
keep going past a bad file and exit with status 1 at the end if any failed.
Exit status: 0 success, 1 some inputs failed, 2 usage error, 3 defects found
(``inspect --fail-on-defects``), 130 interrupted.
"""

import argparse
import dataclasses
import functools
import glob
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path

from ._fileio import OutputExistsError, abandon_staging, atomic_write, remove_stale_staging
from ._version import __version__
from .engine import set_num_threads
from .export import OUTPUTS, REPORT_FIELDS
from .inspection import Inspector
from .io import ImageTooLargeError, list_images, load_image
from .params import INSPECTOR_MODEL_DEFAULTS, InspectionParams, SegmenterParams, Setting
from .plot import criterion_chart
from .segment import Segmenter, select_k
from .workflows import (
    SEGMENT_FIELDS,
    Task,
    auto_jobs,
    default_message,
    failed_row,
    killed_message,
    output_dirs,
    run_task,
    was_interrupted,
    watch_interrupts,
    write_report,
    write_run_summary,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DEFECTS, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# The optional extra that --scheduler needs (gmmseg.dask says the same; that
# module is imported only with --scheduler).
DASK_INSTALL_HINT = "pip install 'gmmseg[dask]'"


class UsageError(Exception):
    """Bad command-line usage: reported as one line, exit status 2."""


# ---------------------------------------------------------------------------
# argument parsing
def _k_range(text):
    if "," in text:  # a list such as 1,2,4,8
        try:
            values = [int(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected integers like 1,2,4 or a range like 1-10, got {text!r}") from None
        if values[0] < 1 or any(b <= a for a, b in zip(values, values[1:])):
            raise argparse.ArgumentTypeError(f"expected increasing integers >= 1, got {text!r}")
        return values
    try:
        if "-" in text:
            lo, hi = (int(v) for v in text.split("-", 1))
        else:
            lo = hi = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a range like 1-10, got {text!r}") from None
    if lo < 1 or hi < lo:
        raise argparse.ArgumentTypeError(f"expected 1 <= first <= last, got {text!r}")
    return range(lo, hi + 1)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _jobs(text):
    if text == "auto":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}") from None


def _megapixels(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of megapixels, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of megapixels, got {text!r}")
    return value


def _outputs(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in OUTPUTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(OUTPUTS)}; got {text!r}")
    return tuple(name for name in OUTPUTS if name in names)  # in the usual order, without repeats


def _max_pixels(args):
    """--max-megapixels in pixels (None: the default, from the memory available)."""
    value = getattr(args, "max_megapixels", None)
    return None if value is None else int(value * 1e6)


def _add_size_option(p):
    p.add_argument("--max-megapixels", type=_megapixels, default=None, metavar="N",
                   help="accept images up to N megapixels (default: as large as the memory available can segment, "
                        "at least 89.5; the header is checked before decoding)")


def _percentile(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"expected a percentile in [0, 100], got {text!r}")
    return value


# What an option of a setting that takes None ('optional_int', 'seed') says
# for None: options left out are None too (not given), so a given None is
# this marker until params_from_args.
_GIVEN_NONE = object()
_NONE_WORDS = {"optional_int": ("none", "all"), "seed": ("none", "random")}


def _converter(setting: Setting):
    """The argparse ``type`` of a setting: parse the text, then check it with
    the setting's own rule (so the command line and the library agree)."""
    parse = {"int": int, "seed": int, "optional_int": int, "float": float, "int_list": _k_range}[setting.kind]
    none_words = _NONE_WORDS.get(setting.kind, ())
    expected = "a number" if setting.kind == "float" else "a whole number"
    if none_words:
        expected += f" or {' / '.join(none_words)}"

    def convert(text):
        if text.strip().lower() in none_words:
            return _GIVEN_NONE
        try:
            value = parse(text)
        except ValueError:  # int("abc") says "invalid literal for int() with base 10"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        try:
            return setting.check(value)
        except ValueError as exc:
            # "None" is a library value; on the command line it means "leave the option out".
            raise argparse.ArgumentTypeError(str(exc).rstrip(".").replace("None or ", "")) from None

    convert.__name__ = setting.name  # argparse names the type in some messages
    return convert


def _add_settings(group, cls, skip=(), default_text=None):
    """One option per setting of ``cls`` that has flags (see gmmseg.params).

    Defaults are None, so that :func:`params_from_args` knows which settings
    were given; the help shows the real default.
    """
    for setting in cls.settings():
        if not setting.flags or setting.name in skip:
            continue
        default = (default_text or {}).get(setting.name, setting.describe_default())
        options = {"dest": setting.name, "default": None, "help": f"{setting.help} (default {default})"}
        if setting.kind == "choice":  # argparse checks these and lists them
            options["choices"] = setting.choices
        else:
            options["type"] = _converter(setting)
            options["metavar"] = {"int_list": "FIRST-LAST|A,B,...", "float": "X"}.get(setting.kind, "N")
        group.add_argument(*setting.flags, **options)


def params_from_args(args, cls=SegmenterParams, base=None):
    """The settings object of ``cls`` from parsed arguments: the options given
    change ``base`` (default: ``cls()``); the one place the command line
    turns its options into settings."""
    base = cls() if base is None else base
    given = {name: getattr(args, name) for name in cls.names() if getattr(args, name, None) is not None}
    given = {name: None if value is _GIVEN_NONE else value for name, value in given.items()}
    try:
        return base.replace(**given)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


#: What ``gmmseg fit`` starts from: the Inspector's settings (no spatial
#: prior or positions: inspection needs the density of good pixels'
#: features, not regions; its features, 'auto' with the row and column
#: backgrounds), but the command line's segmentation max_iter and tol, not
#: the library Inspector's 200 and 1e-4: 'fit' has always fitted like
#: 'segment'. One object, so that the help and the fit cannot disagree.
FIT_DEFAULTS = INSPECTOR_MODEL_DEFAULTS.replace(max_iter=SegmenterParams().max_iter, tol=SegmenterParams().tol)


def _changed_defaults(params: SegmenterParams) -> dict[str, str]:
    """The help's default text of every setting whose value in ``params``
    differs from the segmentation default."""
    plain = SegmenterParams()
    return {s.name: dataclasses.replace(s, default=getattr(params, s.name)).describe_default()
            for s in SegmenterParams.settings() if getattr(params, s.name) != getattr(plain, s.name)}


def _add_model_options(p, skip=(), default_text=None):
    _add_settings(p.add_argument_group("model"), SegmenterParams, skip, default_text)


def _add_batch_options(p, out_required=True):
    g = p.add_argument_group("batch")
    g.add_argument("--out", required=out_required, metavar="DIR",
                   help="output folder; each image's files go to DIR/<image name>/"
                        + ("" if out_required else " (optional)"))
    if out_required:  # segment and apply
        g.add_argument("--outputs", type=_outputs, default=OUTPUTS, metavar="LIST",
                       help="the files to write, comma-separated, from: " + ", ".join(OUTPUTS) + " (default: all)")
    g.add_argument("--recursive", action="store_true", help="look for images in sub-folders of folder inputs")
    g.add_argument("--jobs", type=_jobs, default="auto", metavar="N|auto",
                   help="images processed in parallel (default auto: one per core, fewer when the memory available "
                        "cannot hold that many of the largest image)")
    g.add_argument("--scheduler", metavar="tcp://HOST:PORT", default=None,
                   help="process the images on a Dask cluster: the address its 'dask scheduler' prints. The workers "
                        "need gmmseg installed and the same paths to the images, the model and --out (a shared "
                        f"filesystem). Needs the dask extra: {DASK_INSTALL_HINT}")
    _add_size_option(g)
    g.add_argument("--force", action="store_true", help="overwrite existing outputs")
    g.add_argument("--anomaly-percentile", type=_percentile, default=1.0, metavar="P",
                   help="anomaly.png flags the P %% least likely pixels of each image (default 1)")
    g.add_argument("--quiet", action="store_true", help="print nothing but errors")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="gmmseg",
        description="Segment images with Gaussian mixture models fitted on pixel colours.",
        epilog="Run 'gmmseg COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"gmmseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("segment", help="fit a mixture to each image and write its segmentation",
                       description="Fit a Gaussian mixture to the colours of each image and write "
                                   "labels.png, mask_<k>.png, probabilities.tif, loglik.tif, anomaly.png, "
                                   "overlay.png and summary.json into DIR/<image name>/.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or glob patterns")
    _add_model_options(p)
    _add_batch_options(p)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    p = sub.add_parser("select-k", help="compare numbers of components and choose one",
                       description="Fit K = first..last components and print BIC at 300 pixels, BIC, AIC and "
                                   "log-likelihood per pixel; the K chosen by --criterion is marked with '*'.")
    p.add_argument("image", metavar="IMAGE")
    # Checked by the K range setting's own rule (its bounds live in gmmseg.params).
    p.add_argument("--k-range", type=_converter(InspectionParams.setting("k_range")), default=range(1, 11),
                   metavar="FIRST-LAST", dest="sweep", help="values of K to try (default 1-10)")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the criterion's curve into a PNG")
    p.add_argument("--force", action="store_true", help="overwrite an existing plot")
    _add_size_option(p)
    _add_model_options(p, skip=("n_components",))
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    p = sub.add_parser("fit", help="fit one model on reference images and save it",
                       description="Fit one mixture on the pixels of the given images together (e.g. "
                                   "defect-free references), choose K by --criterion unless -k is given, calibrate "
                                   "the image threshold for --false-reject-rate and the pixel threshold for "
                                   "--false-alarm-rate (on references held out of the fit, in up to 5 folds, when "
                                   "there are several) and save a JSON model for 'gmmseg apply' and 'gmmseg inspect'.")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--save-model", required=True, metavar="MODEL.json", help="where to write the model")
    p.add_argument("--force", action="store_true", help="overwrite an existing model file")
    p.add_argument("--recursive", action="store_true", help="look for images in sub-folders of folder inputs")
    _add_size_option(p)
    _add_settings(p.add_argument_group("inspection"), InspectionParams)
    _add_model_options(p, default_text={"n_components": "chosen by --criterion over --k-range",
                                        **_changed_defaults(FIT_DEFAULTS)})
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    p = sub.add_parser("apply", help="segment images with a saved model",
                       description="Segment each image with a model saved by 'gmmseg fit' (or the "
                                   "application) and write the same files as 'gmmseg segment'.")
    p.add_argument("--model", required=True, metavar="MODEL.json")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    _add_batch_options(p)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    p = sub.add_parser("inspect", help="flag defects in images with a model fitted on good references",
                       description="Score each image with a model from 'gmmseg fit': an image fails when its "
                                   "image score is above the model's image threshold (both on the calibrated "
                                   "score scale); defect regions grow from there over pixels above the pixel "
                                   "threshold. One report row per image (verdict, image_score, image_threshold, "
                                   "pixel_threshold, regions, defect area). "
                                   "Exit status: 0 all images inspected, 1 some could not be read, "
                                   "2 usage error, 3 defects found (only with --fail-on-defects).",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="MODEL.json")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--report", required=True, metavar="REPORT.csv", help="one row per image")
    p.add_argument("--fail-on-defects", action="store_true", help="exit with status 3 when any image has defects")
    _add_batch_options(p, out_required=False)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    p = sub.add_parser("gui", help="start the desktop application")
    p.add_argument("image", nargs="?", metavar="IMAGE", help="an image to open")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


# ---------------------------------------------------------------------------
# inputs and outputs
def expand_inputs(items, recursive=False):
    """Files from files, folders and glob patterns, in order, without repeats.

    Returns ``(files, problems)``: problems are (item, message) for inputs
    that match nothing.
    """
    files, problems, seen = [], [], set()

    def add(path):
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            files.append(Path(path))

    for item in items:
        path = Path(item)
        if path.is_dir():
            found = list_images(path, recursive)
            if not found:
                problems.append((item, "folder holds no images" + ("" if recursive else " (try --recursive)")))
            for p in found:
                add(p)
        elif path.exists():
            add(path)
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item, recursive=recursive) if Path(p).is_file())
            if not found:
                problems.append((item, "pattern matches no files"))
            for p in found:
                add(p)
        else:
            problems.append((item, "file not found"))
    return files, problems


def _one_line(exc, on_cluster=False):
    """An error as one line, in the command line's words (``on_cluster``:
    the image ran on a Dask worker, where --jobs does not apply)."""
    if isinstance(exc, OutputExistsError):
        return f"{exc.what}; not overwriting it (use --force)"
    if isinstance(exc, ImageTooLargeError):
        return default_message(exc).replace(exc.allow_hint, exc.command_line_hint).replace("max_pixels", "--max-megapixels")
    if isinstance(exc, MemoryError):
        text = default_message(exc)
        if not text.startswith("out of memory"):
            text = "out of memory" + ("" if text == "MemoryError" else f" ({text})")
        if on_cluster:
            return f"{text}; give the Dask workers more memory or fewer threads each (dask worker --memory-limit, --nthreads)"
        return f"{text}; run fewer images at once (--jobs) or free memory"
    return default_message(exc)


# How often a worker checks that the process that started it is still there.
_PARENT_POLL_SECONDS = 0.25


def _worker_init(parent_pid=None):
    # Ctrl-C in a terminal reaches the whole process group: the parent alone
    # handles it (no new images; running ones finish their files).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_num_threads(1)  # the processes already use every core
    warnings.simplefilter("ignore")
    if parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(parent_pid,), name="gmmseg-parent-watch", daemon=True).start()


def _watch_parent(parent_pid):
    """Leave when the parent is gone. A parent killed outright (kill -9, an
    out-of-memory kill) cannot stop its workers, which would finish their
    image and then wait for work forever; its death shows as a new parent
    PID. The worker's unfinished staging folders go with it."""
    while os.getppid() == parent_pid:
        time.sleep(_PARENT_POLL_SECONDS)
    abandon_staging()
    os._exit(EXIT_INTERRUPTED)


# ---------------------------------------------------------------------------
# progress
class Progress:
    """A progress bar on a terminal, plain lines otherwise."""

    def __init__(self, total, quiet=False, stream=None):
        self.total, self.done, self.failed = total, 0, 0
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()

    def update(self, result):
        self.done += 1
        self.failed += result["status"] != "ok"
        if result["status"] != "ok":
            self._clear()
            print(f"gmmseg: error: {result['input']}: {result['error'].removeprefix(result['input'] + ': ')}",
                  file=sys.stderr)
            if result.get("traceback"):
                print(result["traceback"], file=sys.stderr)
        if self.quiet:
            return
        name = Path(result["input"]).name
        if self.tty:
            width = 28
            filled = int(width * self.done / max(self.total, 1))
            elapsed = time.perf_counter() - self.start
            self._clear()  # a longer phase line may be under the bar
            self.stream.write(
                f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{elapsed:5.1f}s {name[:30]:<30}"
            )
            self.stream.flush()
        else:
            status = "ok" if result["status"] == "ok" else "FAILED"
            print(f"[{self.done}/{self.total}] {status} {result['input']}{_verdict_text(result)} "
                  f"({result['seconds']:.2f}s)", file=self.stream)

    def _clear(self):
        if self.tty and not self.quiet:
            self.stream.write("\r\033[K")  # to the end of the line, whatever its length

    def phase_reporter(self, name):
        """A function that shows what the current image is doing on the
        status line (at most a few times a second)."""
        last = [0.0, ""]
        name = Path(name).name

        def show(text):
            now = time.perf_counter()
            if now - last[0] < 0.2 and text.split(":")[0] == last[1].split(":")[0]:
                return  # the same phase again within 0.2 s (an iteration): not worth a redraw
            last[0], last[1] = now, text
            elapsed = now - self.start
            self._clear()
            self.stream.write(f"[{self.done + 1}/{self.total}] {elapsed:5.1f}s {name[:30]}: {text}"[:self._columns()])
            self.stream.flush()

        return show

    def _columns(self):
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            columns = 0
        return columns - 1 if columns >= 40 else 79  # a terminal that does not say its width: 80 columns

    def note(self, text):
        """A line about the run (not about one image), unless quiet."""
        if not self.quiet:
            self._clear()
            print(f"gmmseg: {text}", file=sys.stderr)

    def finish(self):
        if self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()


def _verdict_text(result):
    """An inspection row's verdict in words (empty for other rows)."""
    if result.get("status") != "ok" or "verdict" not in result:
        return ""
    score, threshold = result.get("image_score"), result.get("image_threshold")
    if score == "" or score is None:
        return f": {result['verdict']} (no image score: fewer usable pixels than --min-area)"
    sign = "<=" if result["verdict"] == "pass" else ">"
    return f": {result['verdict']}, image score {score:.2f} {sign} image threshold {threshold:.2f}"


# ---------------------------------------------------------------------------
# commands
def run_batch(args, mode):
    """Run ``segment``, ``apply`` or ``inspect`` over the inputs; returns the exit status."""
    settings = params_from_args(args).to_dict() if mode == "segment" else None
    files, problems = expand_inputs(args.images, args.recursive)
    for item, message in problems:
        print(f"gmmseg: error: {item}: {message}", file=sys.stderr)
    if not files:
        if not problems:
            print("gmmseg: error: no input images", file=sys.stderr)
        return EXIT_FAILED
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file, not a folder")
    report = Path(args.report) if mode == "inspect" else None
    if report is not None and report.exists() and not args.force:
        raise UsageError(f"{report} already exists; not overwriting it (use --force)")
    if mode in ("apply", "inspect"):
        try:  # fail once, early, on a bad model
            (Inspector if mode == "inspect" else Segmenter).load(args.model)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    client = None
    if args.scheduler is not None:
        if args.jobs != "auto":
            raise UsageError("--jobs and --scheduler do not go together: on a cluster its workers decide how many "
                             "images run at once")
        client = _cluster_client(args.scheduler, quiet=args.quiet)
        if client is None:
            return EXIT_USAGE
    outputs = output_dirs(files, out_dir) if out_dir is not None else [None] * len(files)
    model = str(Path(args.model).resolve()) if mode != "segment" else None
    tasks = [
        Task(mode, str(f), str(o) if o is not None else None, settings=settings, model=model,
             anomaly_percentile=args.anomaly_percentile, overwrite=args.force, debug=args.debug,
             outputs=getattr(args, "outputs", OUTPUTS), max_pixels=_max_pixels(args))
        for f, o in zip(files, outputs)
    ]
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        stale = remove_stale_staging(out_dir)
        if stale and not args.quiet:
            print(f"gmmseg: removed {len(stale)} unfinished output folder(s) of earlier runs that were killed",
                  file=sys.stderr)
    if client is not None:
        jobs = None  # the cluster's workers decide
    else:
        jobs = auto_jobs(tasks, _cores()) if args.jobs == "auto" else min(args.jobs, len(tasks))
    progress = Progress(len(tasks), quiet=args.quiet)
    results = [None] * len(tasks)
    started = time.perf_counter()
    try:
        if client is not None:
            _run_on_cluster(client, tasks, results, progress)
            if out_dir is not None:
                remove_stale_staging(out_dir)  # anything killed workers on this host left
        elif jobs <= 1:
            for i, task in enumerate(tasks):
                # In this process, what each image is doing shows on a terminal.
                phase = progress.phase_reporter(task.input) if progress.tty and not progress.quiet else None
                results[i] = run_task(task, _one_line, phase)
                progress.update(results[i])
        else:
            unfinished = _run_in_pool(tasks, range(len(tasks)), jobs, results, progress)
            if unfinished:
                # A worker was killed (the kernel's out-of-memory killer, most
                # likely), which breaks the whole pool: the images it had not
                # finished run again in a new pool, and if one breaks that as
                # well, one at a time, so that only an image that cannot be
                # processed alone fails.
                progress.note(f"a worker process ended abruptly (killed, perhaps for lack of memory); "
                              f"{len(unfinished)} unfinished image(s) run again")
                unfinished = _run_in_pool(tasks, unfinished, min(jobs, len(unfinished)), results, progress)
            if unfinished:
                progress.note(f"a worker process ended abruptly again; {len(unfinished)} image(s) run one at a time")
            for i in unfinished:
                if _run_in_pool(tasks, [i], 1, results, progress):
                    results[i] = failed_row(tasks[i].input, MemoryError(killed_message(tasks[i])), _one_line)
                    results[i]["seconds"] = 0.0
                    progress.update(results[i])
            if out_dir is not None:
                remove_stale_staging(out_dir)  # anything killed workers left
    except KeyboardInterrupt:
        progress.finish()
        if out_dir is not None:
            remove_stale_staging(out_dir)  # the workers are gone: only finished outputs stay
        print("gmmseg: interrupted; finished images are complete, the rest were not written", file=sys.stderr)
        _write_tables(out_dir, report, [r for r in results if r], started, interrupted=True, overwrite=args.force)
        return EXIT_INTERRUPTED
    finally:
        if client is not None:
            client.close()
    progress.finish()
    summary = _write_tables(out_dir, report, results, started, overwrite=args.force)
    failed = sum(r["status"] != "ok" for r in results) + len(problems)
    if not args.quiet:
        ok = len(results) - sum(r["status"] != "ok" for r in results)
        kept = ""
        if summary is not None and summary.name != "run_summary.json":
            kept = f"; run summary in {summary.name} (an earlier run's is kept; --force replaces it)"
        where = f" -> {out_dir}" if out_dir is not None else ""  # inspect without --out writes only its report
        print(f"{ok} of {len(results) + len(problems)} images done in {time.perf_counter() - started:.1f}s"
              f"{where}" + (f"; {failed} failed" if failed else "") + kept, file=sys.stderr)
    if failed:
        return EXIT_FAILED
    if mode == "inspect":
        defective = sum(r.get("verdict") == "fail" for r in results)
        if not args.quiet:
            print(f"{defective} of {len(results)} images have defects; report: {report}", file=sys.stderr)
        if defective and args.fail_on_defects:
            return EXIT_DEFECTS
    return EXIT_OK


def _run_in_pool(tasks, indices, jobs, results, progress):
    """Run ``tasks[i]`` for ``i`` in ``indices`` in ``jobs`` worker processes,
    filling ``results``; returns the indices left unfinished because a worker
    died (the pool is then broken)."""
    ctx = get_context("spawn")  # no fork: kernel threads do not survive it
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(run_task, tasks[i], _one_line): i for i in indices}
        try:
            for future in as_completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except BrokenProcessPool:
                    continue  # run again by the caller
                progress.update(results[i])
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return [i for i in indices if results[i] is None]


def _cluster_client(address, quiet=False):
    """A client of the Dask scheduler at ``address`` whose workers run
    gmmseg, or None after saying on stderr why there is none."""
    from .dask import check_workers, connect  # imports Dask itself only when called

    try:
        client = connect(address)
    except ImportError:
        print(f"gmmseg: error: --scheduler needs the dask extra, which is not installed: {DASK_INSTALL_HINT}",
              file=sys.stderr)
        return None
    except (OSError, ValueError) as exc:
        print(f"gmmseg: error: {exc}", file=sys.stderr)
        return None
    try:
        versions = check_workers(client)
    except OSError as exc:
        client.close()
        print(f"gmmseg: error: {exc}", file=sys.stderr)
        return None
    if not quiet:
        if not versions:
            print(f"gmmseg: the scheduler at {address} has no workers yet; the images wait for one (Ctrl+C stops)",
                  file=sys.stderr)
        others = sorted({v for v in versions.values() if v != __version__})
        if others:
            print(f"gmmseg: warning: workers run gmmseg {', '.join(others)}, this is {__version__}: results may differ",
                  file=sys.stderr)
    return client


def _run_on_cluster(client, tasks, results, progress):
    """Run the tasks on the Dask cluster of ``client``, filling ``results``."""
    from .dask import run_tasks

    def record(i, row):
        results[i] = row
        progress.update(row)

    run_tasks(client, tasks, explain=functools.partial(_one_line, on_cluster=True), on_result=record,
              note=progress.note)


def _write_tables(out_dir, report, results, started, interrupted=False, overwrite=False):
    """The report and the run summary; returns the summary's JSON path (or None)."""
    if report is not None:
        write_report(report, results)
    if out_dir is None:
        return None
    json_path, _ = write_run_summary(out_dir, results, time.perf_counter() - started,
                                     fields=REPORT_FIELDS if report is not None else SEGMENT_FIELDS,
                                     interrupted=interrupted, overwrite=overwrite)
    return json_path


def _cores():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def cmd_segment(args):
    return run_batch(args, "segment")


def cmd_apply(args):
    return run_batch(args, "apply")


def cmd_select_k(args):
    params = params_from_args(args)
    if args.plot and Path(args.plot).exists() and not args.force:
        raise UsageError(f"{args.plot} already exists; not overwriting it (use --force)")
    image = load_image(args.image, max_pixels=_max_pixels(args))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the edge of the range is said below
        result = select_k(image, k_range=args.sweep, params=params)
    position = f" + position (weight {params.spatial_weight:g})" if params.spatial_weight > 0 else ""
    print(f"{image.name}: {image.width} x {image.height}, {params.color_space}{position} features, "
          f"{params.covariance_type} covariance")
    print(result.format_table())
    print(result.summary())
    if args.plot:
        chart = criterion_chart(result, title=f"{image.name}: model selection")

        def write(tmp):
            chart.save(tmp, format="PNG")

        atomic_write(args.plot, write, overwrite=args.force)
        print(f"plot written to {args.plot}")
    return EXIT_OK


def cmd_fit(args):
    params = params_from_args(args, base=FIT_DEFAULTS)
    inspection = params_from_args(args, InspectionParams).replace(auto_k=args.n_components is None)
    files, problems = expand_inputs(args.images, args.recursive)
    for item, message in problems:
        print(f"gmmseg: error: {item}: {message}", file=sys.stderr)
    if problems or not files:
        return EXIT_FAILED
    if Path(args.save_model).exists() and not args.force:
        raise UsageError(f"{args.save_model} already exists; not overwriting it (use --force)")
    # Paths, not loaded images: the Inspector loads a reference when it needs
    # it, so many references never sit in memory together.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the edge of the K range and one reference: said below
        inspector = Inspector(params=params, inspection=inspection).fit(files, max_pixels=_max_pixels(args))
    inspector.save(args.save_model, overwrite=args.force)
    gm = inspector.segmenter_.gmm_
    chosen = "given"
    if inspection.auto_k:
        chosen = f"chosen by {params.k_criterion.upper()}"
        if inspector.k_selection_.at_edge:
            chosen += f", at the edge of --k-range {inspection.k_range[0]}-{inspection.k_range[-1]}"
    if inspector.held_out_:
        folds = "leave-one-out" if inspector.n_folds_ == len(files) else f"{inspector.n_folds_} folds"
        calibration = f"held-out references, {folds}"
    else:
        calibration = "the reference itself: good images will fail more often than that; give several references"
    features = inspector.segmenter_.features.feature_set
    if params.feature_set == "auto":
        features += " (auto: " + ("grey" if inspector.segmenter_.channels_ == 1 else "colour") + " references)"
    print(f"fitted K={gm.means_.shape[0]} ({chosen}) {params.covariance_type}, features {features}, on {len(files)} image(s): "
          f"{'converged' if gm.converged_ else 'not converged'} after {gm.n_iter_} iterations; "
          f"image threshold {inspector.image_threshold_:.2f} for a false-reject rate of "
          f"{inspection.false_reject_rate:g}, pixel threshold {inspector.threshold_:.3f} for a false-alarm rate of "
          f"{inspection.false_alarm_rate:g} (calibrated on {calibration}); model saved to {args.save_model}")
    return EXIT_OK


def cmd_inspect(args):
    return run_batch(args, "inspect")


def cmd_gui(args):
    try:
        from .gui import main as gui_main
    except ImportError as exc:
        print(f"gmmseg: error: the desktop application is not available ({exc})", file=sys.stderr)
        return EXIT_FAILED
    return gui_main(args.image)


COMMANDS = {
    "segment": cmd_segment,
    "select-k": cmd_select_k,
    "fit": cmd_fit,
    "apply": cmd_apply,
    "gui": cmd_gui,
    "inspect": cmd_inspect,
}


def main(argv=None):
    watch_interrupts()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"gmmseg {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("gmmseg: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if was_interrupted(exc):
            print("gmmseg: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"gmmseg: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
