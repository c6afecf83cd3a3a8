"""Scale: many small images through the command line, locally and on a Dask cluster.

Sections (``--section``, default ``all``):

- ``batch``: images per second for ``--count`` (default 200) small
  synthetic images (``--size`` 256 x 256, a few noisy colour regions each)
  through ``gmmseg segment -k 4`` with the default settings, run three
  ways: ``--jobs 1``, ``--jobs 2`` and ``--scheduler`` on a local Dask
  cluster of 2 worker processes of 1 thread each (``dask scheduler`` and
  ``dask worker --nworkers 2 --nthreads 1`` started from the command line,
  as on a real cluster, with ``GMMSEG_NUM_THREADS=1`` like the local
  pool's workers). Each run is a fresh ``gmmseg`` process writing every
  output into a fresh folder; its wall time includes starting Python and,
  for ``--jobs 2``, the pool's worker processes. The Dask workers are
  started once, before the timed runs, and warmed up by a batch of two
  images (their start is printed apart: a cluster's workers outlive a
  batch). With ``--repeat N`` the three runs take turns N times and the
  table shows medians.
- ``large``: photos of ``--megapixels`` (default 12 and 100): a JPEG made
  from ``skimage.data.astronaut()`` resized (bilinear) to the size with
  +-2 levels of noise (4:3). For each: ``gmmseg segment -k 8`` (default
  settings: positions and the spatial prior) with ``--outputs
  labels,summary`` and with every output, each in a fresh process: wall
  seconds and the process's peak RSS (``ru_maxrss`` of the child, read by
  a small parent process made for each measurement). For photos up to 20
  megapixels also the API: ``Segmenter(8).fit(image)`` then
  ``predict(image, probabilities=True)`` and reading labels and
  probabilities (median of 3 after one warm-up call), with the default
  settings and colour only (``spatial_weight=0, smoothing=0``: the
  per-colour table). ``--megapixels 400`` makes a 400-megapixel photo (about
  13 GB of memory, several minutes).

Usage:
    python benchmarks/bench_scale.py [--section batch|large|all] [--count 200] [--size 256] [--repeat 1]
                                     [--megapixels 12 100] [--keep DIR]
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _command(name):
    """A console script of this Python's environment (gmmseg, dask)."""
    script = BIN / name
    if not script.exists():
        raise SystemExit(f"{script} not found: install gmmseg with the dask extra (pip install -e '.[dask]')")
    return [str(script)]


def _env(**extra):
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, **extra)


# ---------------------------------------------------------------------------
# batch
def write_images(folder, count, size, seed=0):
    """``count`` PNGs of ``size`` x ``size``: 3-6 regions (nearest of random
    centres), a colour each, with noise."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[:size, :size]
    for i in range(count):
        n = rng.randint(3, 7)
        centres = rng.rand(n, 2) * size
        regions = ((yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2).argmin(axis=2)
        colours = rng.rand(n, 3)
        pixels = colours[regions] + rng.normal(scale=0.06, size=(size, size, 3))
        Image.fromarray((np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8)).save(folder / f"img{i:04d}.png")


class LocalDaskCluster:
    """``dask scheduler`` and ``dask worker`` as subprocesses on 127.0.0.1
    (each in its own process group, ended by its id)."""

    def __init__(self, folder, workers=2, threads=1):
        self.folder = Path(folder)
        self.processes = []
        self.scheduler_file = self.folder / "scheduler.json"
        env = _env(GMMSEG_NUM_THREADS=str(threads))
        self._start(_command("dask") + ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                        "--scheduler-file", str(self.scheduler_file)], env, "scheduler.log")
        deadline = time.time() + 60
        while not self.scheduler_file.exists():
            if time.time() > deadline:
                raise RuntimeError(f"the scheduler did not start; see {self.folder / 'scheduler.log'}")
            time.sleep(0.1)
        self._start(_command("dask") + ["worker", "--scheduler-file", str(self.scheduler_file), "--nworkers",
                                        str(workers), "--nthreads", str(threads), "--no-dashboard"], env, "worker.log")
        from distributed import Client

        with Client(scheduler_file=str(self.scheduler_file), set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=120)
            self.address = client.scheduler.address

    def _start(self, cmd, env, log):
        with open(self.folder / log, "w") as f:
            self.processes.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                                   start_new_session=True))

    def close(self):
        for proc in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # its own group: the worker's nanny and processes
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _segment(images, out, *extra):
    """Wall seconds of one ``gmmseg segment`` over ``images`` into ``out``."""
    cmd = _command("gmmseg") + ["segment", str(images), "-k", "4", "--out", str(out), "--quiet", *extra]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def section_batch(args, work):
    images = work / "batch-images"
    images.mkdir()
    write_images(images, args.count, args.size)
    warm = work / "warm-images"
    warm.mkdir()
    write_images(warm, 2, args.size, seed=1)
    print(f"batch: {args.count} images of {args.size} x {args.size}, gmmseg segment -k 4 (default settings), "
          f"{args.repeat} run(s) each")
    start = time.perf_counter()
    cluster = LocalDaskCluster(work)
    try:
        _segment(warm, work / "warm-out", "--scheduler", cluster.address)
        print(f"local Dask cluster (dask scheduler + dask worker --nworkers 2 --nthreads 1) started and warmed up "
              f"in {time.perf_counter() - start:.1f} s")
        runs = {"--jobs 1": ["--jobs", "1"], "--jobs 2": ["--jobs", "2"],
                "--scheduler (2 Dask workers)": ["--scheduler", cluster.address]}
        times = {name: [] for name in runs}
        for r in range(args.repeat):
            for k, (name, extra) in enumerate(runs.items()):
                out = work / f"out-{r}-{k}"
                times[name].append(_segment(images, out, *extra))
                found = sum(1 for p in out.iterdir() if p.is_dir())
                if found != args.count:
                    raise RuntimeError(f"{name}: {found} output folders, expected {args.count}")
                shutil.rmtree(out)
    finally:
        cluster.close()
    print()
    print("| run | seconds | images per second |")
    print("|---|---|---|")
    for name, values in times.items():
        seconds = statistics.median(values)
        print(f"| {name} | {seconds:.1f} | {args.count / seconds:.1f} |")


# ---------------------------------------------------------------------------
# large
# A parent made for each measurement runs the command and reports its
# child's peak RSS, so that each peak is that command's alone.
_MEASURE = (
    "import json, resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "print(json.dumps({'seconds': time.perf_counter() - start, 'status': done.returncode,\n"
    "                  'stderr': done.stderr[-2000:], 'stdout': done.stdout[-2000:],\n"
    "                  'rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n"
)

# The API in a fresh process: fit, then the maps with probabilities.
_API = (
    "import json, sys, time\n"
    "import gmmseg\n"
    "path, k, colour_only = sys.argv[1], int(sys.argv[2]), sys.argv[3] == '1'\n"
    "settings = dict(spatial_weight=0.0, smoothing=0.0) if colour_only else {}\n"
    "image = gmmseg.load_image(path, max_pixels=2_000_000_000)\n"
    "seg = gmmseg.Segmenter(k, **settings).fit(image)\n"
    "seg.predict(image, probabilities=True)  # the first call compiles what predict needs\n"
    "times = []\n"
    "for _ in range(3):\n"
    "    start = time.perf_counter()\n"
    "    result = seg.predict(image, probabilities=True)\n"
    "    result.labels, result.probabilities\n"
    "    times.append(time.perf_counter() - start)\n"
    "print(json.dumps({'predict': sorted(times)[1]}))\n"
)


def make_photo(path, megapixels, seed=0):
    """A photo-like JPEG of about ``megapixels`` (4:3): skimage's astronaut
    resized (bilinear) with +-2 levels of noise, built in strips."""
    from skimage import data

    width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    height = int(round(megapixels * 1e6 / width))
    arr = np.asarray(Image.fromarray(data.astronaut()).resize((width, height), Image.BILINEAR)).copy()
    rng = np.random.default_rng(seed)
    step = max(1, 4_000_000 // width)
    for y in range(0, height, step):
        noisy = arr[y:y + step].astype(np.int16) + rng.integers(-2, 3, size=arr[y:y + step].shape, dtype=np.int16)
        arr[y:y + step] = np.clip(noisy, 0, 255)
    Image.fromarray(arr).save(path, quality=92)
    return width, height


def _measured(cmd):
    done = subprocess.run([sys.executable, "-c", _MEASURE, *map(str, cmd)], capture_output=True, text=True, env=_env())
    result = json.loads(done.stdout)
    if result["status"] != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({result['status']}): {result['stderr']}")
    return result


def section_large(args, work):
    rows = []
    for megapixels in args.megapixels:
        photo = work / f"photo-{megapixels:g}.jpg"
        width, height = make_photo(photo, megapixels)
        row = {"size": f"{width} x {height} ({width * height / 1e6:.0f} MP)"}
        for name, extra in (("labels,summary", ["--outputs", "labels,summary"]), ("all outputs", [])):
            cmd = _command("gmmseg") + ["segment", photo, "-k", "8", "--out", work / "out", "--quiet", "--force",
                                        "--max-megapixels", "2000", *extra]
            row[name] = _measured(cmd)
            shutil.rmtree(work / "out")
        if megapixels <= 20:
            for name, colour_only in (("API defaults", "0"), ("API colour only", "1")):
                done = subprocess.run([sys.executable, "-c", _API, str(photo), "8", colour_only], capture_output=True,
                                      text=True, env=_env())
                if done.returncode != 0:
                    raise RuntimeError(done.stderr[-2000:])
                row[name] = json.loads(done.stdout)["predict"]
        photo.unlink()
        rows.append(row)
        print(f"large: {row['size']} done", file=sys.stderr)
    print("large: gmmseg segment -k 8 (default settings) in a fresh process: wall seconds, peak RSS")
    print()
    print("| photo | labels,summary: s | peak MB | all outputs: s | peak MB |")
    print("|---|---|---|---|---|")
    for row in rows:
        a, b = row["labels,summary"], row["all outputs"]
        print(f"| {row['size']} | {a['seconds']:.1f} | {a['rss_mb']:.0f} | {b['seconds']:.1f} | {b['rss_mb']:.0f} |")
    api = [row for row in rows if "API defaults" in row]
    if api:
        print()
        print("Segmenter(8).predict(image, probabilities=True), labels and probabilities read (median of 3):")
        print()
        print("| photo | default settings: s | colour only: s |")
        print("|---|---|---|")
        for row in api:
            print(f"| {row['size']} | {row['API defaults']:.2f} | {row['API colour only']:.2f} |")


SECTIONS = {"batch": section_batch, "large": section_large}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", choices=[*SECTIONS, "all"], default="all")
    parser.add_argument("--count", type=int, default=200, help="batch: number of images")
    parser.add_argument("--size", type=int, default=256, help="batch: side of each image in pixels")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each configuration (medians shown)")
    parser.add_argument("--megapixels", type=float, nargs="+", default=[12, 100], help="large: photo sizes")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    args = parser.parse_args(argv)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gmmseg-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        for name, section in SECTIONS.items():
            if args.section in (name, "all"):
                section_work = work / name
                section_work.mkdir(exist_ok=False)
                section(args, section_work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
