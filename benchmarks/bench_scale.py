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
- ``large``: large photos (not written yet).

Usage:
    python benchmarks/bench_scale.py [--section batch|large|all] [--count 200] [--size 256] [--repeat 1]
                                     [--keep DIR]
"""

import argparse
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


def section_large(args, work):
    print("large: not written yet")


SECTIONS = {"batch": section_batch, "large": section_large}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", choices=[*SECTIONS, "all"], default="all")
    parser.add_argument("--count", type=int, default=200, help="batch: number of images")
    parser.add_argument("--size", type=int, default=256, help="batch: side of each image in pixels")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each configuration (medians shown)")
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
