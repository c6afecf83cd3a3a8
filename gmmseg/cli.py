"""The ``gmmseg`` command line.

Errors are one line on stderr (``--debug`` shows the traceback). Batch runs
keep going past a bad file and exit with status 1 at the end if any failed.
Exit status: 0 success, 1 some inputs failed, 2 usage error, 3 defects found
(``inspect --fail-on-defects``), 130 interrupted.
"""

import argparse
import glob
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DEFECTS, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class UsageError(Exception):
    """Bad command-line usage: reported as one line, exit status 2."""


# ---------------------------------------------------------------------------
# argument parsing
def _k_range(text):
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


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _rate(text):
    value = _non_negative_float(text)
    if not 0 < value < 0.5:
        raise argparse.ArgumentTypeError(f"expected a rate in (0, 0.5), e.g. 0.001, got {text!r}")
    return value


def _percentile(text):
    value = _non_negative_float(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"expected a percentile in [0, 100], got {text!r}")
    return value


def _add_model_options(p):
    from .features import COLOR_SPACES

    g = p.add_argument_group("model")
    g.add_argument("-k", "--n-components", type=_positive_int, default=4, metavar="K",
                   help="number of segments (mixture components); default 4")
    g.add_argument("--covariance", choices=("full", "tied", "diag", "spherical"), default="full",
                   help="shape of each component: full (any ellipsoid, default), tied (one shared), "
                        "diag (axis-aligned), spherical (round)")
    g.add_argument("--color-space", choices=COLOR_SPACES, default="lab",
                   help="colour features: lab (perceptual, default), rgb, hsv, ycbcr, gray")
    g.add_argument("--spatial-weight", type=_non_negative_float, default=0.0, metavar="W",
                   help="add pixel position (x, y) to the features with this weight; 0 = colour only (default)")
    g.add_argument("--smoothing", type=_non_negative_float, default=0.0, metavar="S",
                   help="spatial smoothing of the label maps (Potts mean field); 0 = off (default), 1 = gentle, 3 = strong")
    g.add_argument("--max-iter", type=int, default=100, metavar="N", help="maximum EM iterations (default 100)")
    g.add_argument("--tol", type=_non_negative_float, default=1e-3,
                   help="stop when the mean log-likelihood changes less than this (default 1e-3)")
    g.add_argument("--n-init", type=_positive_int, default=1, metavar="N",
                   help="restarts from different initialisations; the best is kept (default 1)")
    g.add_argument("--seed", type=int, default=0, help="random seed of the initialisation (default 0)")
    g.add_argument("--max-samples", type=_positive_int, default=None, metavar="N",
                   help="fit on a random subset of at most N pixels (default: all)")


def _add_batch_options(p, out_required=True):
    g = p.add_argument_group("batch")
    g.add_argument("--out", required=out_required, metavar="DIR",
                   help="output folder; each image's files go to DIR/<image name>/"
                        + ("" if out_required else " (optional)"))
    g.add_argument("--recursive", action="store_true", help="look for images in sub-folders of folder inputs")
    g.add_argument("--jobs", type=_positive_int, default=None, metavar="N",
                   help="images processed in parallel (default: the number of cores)")
    g.add_argument("--force", action="store_true", help="overwrite existing outputs")
    g.add_argument("--anomaly-percentile", type=_percentile, default=1.0, metavar="P",
                   help="anomaly.png flags the P %% least likely pixels of each image (default 1)")
    g.add_argument("--quiet", action="store_true", help="print nothing but errors")


def build_parser():
    from . import __version__

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

    p = sub.add_parser("select-k", help="compare the number of components by BIC/AIC",
                       description="Fit K = first..last components and print BIC, AIC and "
                                   "log-likelihood per pixel; the best K is marked with '*'.")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--k-range", type=_k_range, default=range(1, 11), metavar="FIRST-LAST",
                   help="values of K to try (default 1-10)")
    p.add_argument("--criterion", choices=("bic", "aic"), default="bic", help="what 'best' means (default bic)")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the BIC and AIC curves into a PNG")
    p.add_argument("--force", action="store_true", help="overwrite an existing plot")
    _add_model_options(p)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    p = sub.add_parser("fit", help="fit one model on reference images and save it",
                       description="Fit one mixture on the pixels of the given images together (e.g. "
                                   "defect-free references), pick K by BIC unless -k is given, calibrate "
                                   "the anomaly threshold for --false-alarm-rate (leave-one-out over the "
                                   "references when there are several) and save a JSON model for 'gmmseg apply' "
                                   "and 'gmmseg inspect'.")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--save-model", required=True, metavar="MODEL.json", help="where to write the model")
    p.add_argument("--false-alarm-rate", type=_rate, default=1e-4, metavar="R",
                   help="fraction of good pixels allowed above the threshold (default 0.0001)")
    p.add_argument("--score-smoothing", type=_non_negative_float, default=1.5, metavar="SIGMA",
                   help="Gaussian smoothing (pixels) of the anomaly score before thresholding (default 1.5)")
    p.add_argument("--min-area", type=_positive_int, default=25, metavar="PIXELS",
                   help="ignore defect regions smaller than this (default 25)")
    p.add_argument("--force", action="store_true", help="overwrite an existing model file")
    p.add_argument("--recursive", action="store_true", help="look for images in sub-folders of folder inputs")
    _add_model_options(p)
    p.set_defaults(n_components=None)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    p = sub.add_parser("apply", help="segment images with a saved model",
                       description="Segment each image with a model saved by 'gmmseg fit' (or the "
                                   "application) and write the same files as 'gmmseg segment'.")
    p.add_argument("--model", required=True, metavar="MODEL.json")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    _add_batch_options(p)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    p = sub.add_parser("inspect", help="flag defects in images with a model fitted on good references",
                       description="Score each image with a model from 'gmmseg fit', flag pixels above its "
                                   "calibrated threshold, group them into defect regions and write one "
                                   "report row per image (verdict, score, regions, defect area). "
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
    from .io import list_images

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


def output_dirs(files, out_dir):
    """DIR/<stem> per input; clashing stems get -2, -3, ... in input order."""
    used, result = {}, []
    for f in files:
        stem = f.stem or "image"
        n = used.get(stem, 0) + 1
        used[stem] = n
        result.append(Path(out_dir) / (stem if n == 1 else f"{stem}-{n}"))
    return result


def _replace_dir(staging, target, force):
    """Move a finished staging folder into place (atomically per image)."""
    if target.exists():
        if not force:
            raise FileExistsError(f"{target} already exists; not overwriting it (use --force)")
        trash = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, trash)
        os.replace(staging, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, target)


# ---------------------------------------------------------------------------
# work done per image (runs in worker processes; returns plain data)
def process_image(task):
    """Segment, apply a model to, or inspect one image and export its files.

    ``task`` is a dict: input, output (a folder, or None for no files), mode
    ('segment', 'apply' or 'inspect'), model options or model path, anomaly
    percentile, force. Returns a result dict; never raises for a bad input.
    """
    from .engine import ConvergenceWarning
    from .export import export_inspection, export_segmentation
    from .io import load_image
    from .segment import Segmenter

    start = time.perf_counter()
    src = Path(task["input"])
    target = Path(task["output"]) if task["output"] else None
    result = {"input": str(src), "output": str(target or ""), "status": "ok", "error": "", "seconds": 0.0}
    staging = None
    try:
        if target is not None and target.exists() and not task["force"]:
            raise FileExistsError(f"{target} already exists; not overwriting it (use --force)")
        image = load_image(src)
        if task["mode"] == "inspect":
            from .inspection import Inspector

            inspection = Inspector.load(task["model"]).inspect(image)
            result.update(inspection.report_row())
            if target is not None:
                target.parent.mkdir(parents=True, exist_ok=True)
                staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
                export_inspection(inspection, image, staging, overwrite=True,
                                  summary={"image": str(src), "model": task["model"]})
                _replace_dir(staging, target, task["force"])
                staging = None
            result["seconds"] = round(time.perf_counter() - start, 3)
            return result
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            if task["mode"] == "apply":
                segmenter = Segmenter.load(task["model"])
                seg = segmenter.predict(image)
            else:
                segmenter = Segmenter(**task["options"])
                seg = segmenter.fit_predict(image)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
        settings = segmenter.get_params()
        settings["converged"] = bool(segmenter.gmm_.converged_)
        settings["n_iter"] = int(segmenter.gmm_.n_iter_)
        if task["mode"] == "apply":
            settings["model"] = str(task["model"])
        export_segmentation(seg, image, staging, anomaly_percentile=task["anomaly_percentile"],
                            settings=settings, overwrite=True)
        _replace_dir(staging, target, task["force"])
        staging = None
        result["n_components"] = seg.n_components
        result["converged"] = bool(segmenter.gmm_.converged_)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            result["warning"] = "EM did not converge within --max-iter"
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one bad file must not stop the batch
        if _was_interrupted(exc):
            raise KeyboardInterrupt from None
        result["status"] = "failed"
        result["error"] = _one_line(exc)
        if task.get("debug"):
            result["traceback"] = traceback.format_exc()
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result


def _was_interrupted(exc):
    """True for the error a compiled kernel reports when Ctrl-C arrived
    while it ran (a SystemError chained to the KeyboardInterrupt)."""
    return isinstance(exc.__cause__, KeyboardInterrupt) or isinstance(exc.__context__, KeyboardInterrupt)


def _one_line(exc):
    text = str(exc).strip().replace("\n", " ") or type(exc).__name__
    if isinstance(exc, (MemoryError,)):
        text = "out of memory; try --max-samples or a smaller image"
    return text


def _worker_init():
    import signal

    from .engine import set_num_threads

    # Ctrl-C in a terminal reaches the whole process group: the parent alone
    # handles it (no new images; running ones finish their files).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_num_threads(1)  # the processes already use every core
    warnings.simplefilter("ignore")


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
            self.stream.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{elapsed:5.1f}s {name[:30]:<30}"
            )
            self.stream.flush()
        else:
            status = "ok" if result["status"] == "ok" else "FAILED"
            print(f"[{self.done}/{self.total}] {status} {result['input']} ({result['seconds']:.2f}s)",
                  file=self.stream)

    def _clear(self):
        if self.tty and not self.quiet:
            self.stream.write("\r" + " " * 78 + "\r")

    def finish(self):
        if self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()


# ---------------------------------------------------------------------------
# commands
def _model_options(args):
    """The model options as Segmenter keyword arguments."""
    return {
        "n_components": args.n_components, "covariance_type": args.covariance, "color_space": args.color_space,
        "spatial_weight": args.spatial_weight, "smoothing": args.smoothing, "max_iter": args.max_iter,
        "tol": args.tol, "n_init": args.n_init, "random_state": args.seed, "max_samples": args.max_samples,
    }


def _check_model_options(args):
    from .segment import Segmenter

    try:
        if args.max_iter < 0:
            raise ValueError(f"--max-iter must be >= 0, got {args.max_iter}")
        options = _model_options(args)
        if options["n_components"] is None:  # fit: K chosen by BIC later
            options["n_components"] = 1
        Segmenter(**options)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def run_batch(args, mode):
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
        from .inspection import Inspector
        from .segment import Segmenter

        try:  # fail once, early, on a bad model
            (Inspector if mode == "inspect" else Segmenter).load(args.model)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    outputs = output_dirs(files, out_dir) if out_dir is not None else [None] * len(files)
    tasks = [
        {
            "input": str(f), "output": str(o) if o is not None else None, "mode": mode, "force": args.force,
            "anomaly_percentile": args.anomaly_percentile, "debug": args.debug,
            "options": _model_options(args) if mode == "segment" else None,
            "model": str(Path(args.model).resolve()) if mode != "segment" else None,
        }
        for f, o in zip(files, outputs)
    ]
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    jobs = min(args.jobs or _cores(), len(tasks))
    progress = Progress(len(tasks), quiet=args.quiet)
    results = [None] * len(tasks)
    started = time.perf_counter()
    try:
        if jobs <= 1:
            for i, task in enumerate(tasks):
                results[i] = process_image(task)
                progress.update(results[i])
        else:
            ctx = get_context("spawn")  # no fork: kernel threads do not survive it
            with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init) as pool:
                futures = {pool.submit(process_image, t): i for i, t in enumerate(tasks)}
                try:
                    for future in as_completed(futures):
                        i = futures[future]
                        results[i] = future.result()
                        progress.update(results[i])
                except KeyboardInterrupt:
                    for future in futures:
                        future.cancel()
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    except KeyboardInterrupt:
        progress.finish()
        if out_dir is not None:
            _cleanup_partials(out_dir)
        print("gmmseg: interrupted; finished images are complete, the rest were not written", file=sys.stderr)
        _write_run_summary(out_dir, report, [r for r in results if r], started, interrupted=True)
        return EXIT_INTERRUPTED
    progress.finish()
    _write_run_summary(out_dir, report, results, started)
    failed = sum(r["status"] != "ok" for r in results) + len(problems)
    if not args.quiet:
        ok = len(results) - sum(r["status"] != "ok" for r in results)
        print(f"{ok} of {len(results) + len(problems)} images done in {time.perf_counter() - started:.1f}s "
              f"-> {out_dir}" + (f"; {failed} failed" if failed else ""), file=sys.stderr)
    if failed:
        return EXIT_FAILED
    if mode == "inspect":
        defective = sum(r.get("verdict") == "fail" for r in results)
        if not args.quiet:
            print(f"{defective} of {len(results)} images have defects; report: {report}", file=sys.stderr)
        if defective and args.fail_on_defects:
            return EXIT_DEFECTS
    return EXIT_OK


def _cleanup_partials(out_dir):
    for p in Path(out_dir).glob(".*.partial"):
        shutil.rmtree(p, ignore_errors=True)


SEGMENT_FIELDS = ("input", "output", "status", "error", "seconds", "n_components", "converged")


def _write_run_summary(out_dir, report, results, started, interrupted=False):
    from .export import REPORT_FIELDS, csv_writer
    from .io import atomic_write
    from .modelfile import write_json

    fields = REPORT_FIELDS if report is not None else SEGMENT_FIELDS
    if report is not None:
        atomic_write(report, csv_writer(results, fields), overwrite=True)
    if out_dir is None:
        return
    data = {
        "results": results,
        "images": len(results),
        "failed": sum(r["status"] != "ok" for r in results),
        "seconds": round(time.perf_counter() - started, 3),
        "interrupted": interrupted,
    }
    write_json(Path(out_dir) / "run_summary.json", data, overwrite=True)
    atomic_write(Path(out_dir) / "run_summary.csv", csv_writer(results, fields), overwrite=True)


def _cores():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def cmd_segment(args):
    _check_model_options(args)
    return run_batch(args, "segment")


def cmd_apply(args):
    return run_batch(args, "apply")


def cmd_select_k(args):
    from .io import atomic_write, load_image
    from .segment import select_k

    _check_model_options(args)
    if args.plot and Path(args.plot).exists() and not args.force:
        raise UsageError(f"{args.plot} already exists; not overwriting it (use --force)")
    image = load_image(args.image)
    result = select_k(
        image, k_range=args.k_range, covariance_type=args.covariance, criterion=args.criterion,
        color_space=args.color_space, spatial_weight=args.spatial_weight, random_state=args.seed,
        n_init=args.n_init, max_iter=args.max_iter, tol=args.tol, max_samples=args.max_samples,
    )
    print(f"{image.name}: {image.width} x {image.height}, {args.color_space} features, "
          f"{args.covariance} covariance")
    print(result.format_table())
    print(f"best K by {args.criterion.upper()}: {result.best_k}")
    if args.plot:
        from .plot import criterion_chart

        chart = criterion_chart(result, title=f"{image.name}: model selection")

        def write(tmp):
            chart.save(tmp, format="PNG")

        atomic_write(args.plot, write, overwrite=args.force)
        print(f"plot written to {args.plot}")
    return EXIT_OK


def cmd_fit(args):
    from .inspection import Inspector
    from .io import load_image

    _check_model_options(args)
    files, problems = expand_inputs(args.images, args.recursive)
    for item, message in problems:
        print(f"gmmseg: error: {item}: {message}", file=sys.stderr)
    if problems or not files:
        return EXIT_FAILED
    if Path(args.save_model).exists() and not args.force:
        raise UsageError(f"{args.save_model} already exists; not overwriting it (use --force)")
    images = [load_image(f) for f in files]
    inspector = Inspector(
        args.n_components, covariance_type=args.covariance, color_space=args.color_space,
        false_alarm_rate=args.false_alarm_rate, smoothing_sigma=args.score_smoothing, min_area=args.min_area,
        random_state=args.seed, max_iter=args.max_iter, tol=args.tol, n_init=args.n_init,
        segmenter_options={"spatial_weight": args.spatial_weight, "smoothing": args.smoothing,
                           "max_samples": args.max_samples},
    )
    inspector.fit(images)
    inspector.save(args.save_model, overwrite=args.force)
    gm = inspector.segmenter_.gmm_
    chosen = "chosen by BIC" if args.n_components is None else "given"
    calibration = "held-out references (leave-one-out)" if inspector.held_out_ else "the reference itself"
    print(f"fitted K={gm.means_.shape[0]} ({chosen}) {args.covariance} on {len(images)} image(s): "
          f"{'converged' if gm.converged_ else 'not converged'} after {gm.n_iter_} iterations; "
          f"anomaly threshold {inspector.threshold_:.3f} for a false-alarm rate of {args.false_alarm_rate:g} "
          f"(calibrated on {calibration}); model saved to {args.save_model}")
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
        if _was_interrupted(exc):
            print("gmmseg: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"gmmseg: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
