"""Spread row-range kernels over threads.

The kernels release the GIL, so plain Python threads run them in parallel.
The split into ranges depends only on the number of rows, never on the number
of threads, and partial results are combined in range order: results are
bit-for-bit identical whatever the thread count.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor

ROWS_PER_TASK = 65536  # at most this many rows per task
# ...and at least MIN_TASKS tasks of MIN_ROWS_PER_TASK rows or more, so that
# a few hundred thousand rows keep every thread busy to the end.
MIN_TASKS = 8
MIN_ROWS_PER_TASK = 4096
TASK_ALIGN = 1024  # task sizes are multiples of this (whole kernel blocks)

_lock = threading.Lock()
_pool = None
_n_threads = None


def _default_threads():
    env = os.environ.get("GMMSEG_NUM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def get_num_threads():
    """Number of threads the engine's kernels use."""
    global _n_threads
    if _n_threads is None:
        _n_threads = _default_threads()
    return _n_threads


def set_num_threads(n):
    """Set the number of threads the engine's kernels use (>= 1)."""
    global _n_threads, _pool
    n = int(n)
    if n < 1:
        raise ValueError(f"The number of threads must be at least 1, got {n}.")
    with _lock:
        _n_threads = n
        if _pool is not None:
            _pool.shutdown(wait=False)
            _pool = None


def _get_pool():
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(get_num_threads(), thread_name_prefix="gmmseg-kernel")
        return _pool


def default_rows_per_task(n_rows):
    """Rows per task for ``n_rows`` rows: tasks of about equal size, at most
    ROWS_PER_TASK rows, at least MIN_TASKS of them when each keeps
    MIN_ROWS_PER_TASK rows. Depends on ``n_rows`` only."""
    n_tasks = max(-(-n_rows // ROWS_PER_TASK), min(MIN_TASKS, n_rows // MIN_ROWS_PER_TASK), 1)
    size = -(-n_rows // n_tasks)
    return max(TASK_ALIGN, -(-size // TASK_ALIGN) * TASK_ALIGN)


def row_ranges(n_rows, rows_per_task=None):
    """Split [0, n_rows) into consecutive (start, stop) ranges."""
    if rows_per_task is None:
        rows_per_task = default_rows_per_task(n_rows)
    return [(s, min(n_rows, s + rows_per_task)) for s in range(0, n_rows, rows_per_task)]


def map_rows(func, n_rows, *args, rows_per_task=None):
    """Call ``func(start, stop, *args)`` for each row range (by default
    :func:`default_rows_per_task`); results in order."""
    ranges = row_ranges(n_rows, rows_per_task)
    if len(ranges) <= 1 or get_num_threads() == 1:
        return [func(start, stop, *args) for start, stop in ranges]
    pool = _get_pool()
    futures = [pool.submit(func, start, stop, *args) for start, stop in ranges]
    return [f.result() for f in futures]
