"""Worker threads: the Qt runner of the session's jobs, and the kernel warm-up.

Every worker is a QThread that reports through signals and stops when asked
(``cancel()``); the runner keeps every worker it started, including those
the session has stopped listening to, and waits for them on close, so none
is left running.
"""

import threading
import time
import traceback

from PySide6.QtCore import QObject, Qt, QThread, Signal

from ..engine import warm_up
from .session import JobCancelled, _one_line, run_job


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
            self.debug_traceback = traceback.format_exc()
            self.failed.emit(_one_line(exc))
        finally:
            with Worker._running_lock:
                Worker._running -= 1

    def work(self):
        raise NotImplementedError


class JobWorker(Worker):
    """Runs one job function of the session with its :class:`JobContext`;
    the job's reports travel to the GUI thread as ``progressed`` signals."""

    progressed = Signal(object)
    succeeded = Signal(object)

    def __init__(self, name, function, job, parent=None):
        super().__init__(parent)
        self.name = name
        self.function = function
        self.job = job

    def cancel(self):
        super().cancel()
        self.job.cancel()

    def work(self):
        try:
            result = self.function(self.job)
        except (JobCancelled, InterruptedError):
            return
        if not self.job.cancelled:
            self.succeeded.emit(result)


class QtRunner(QObject):
    """Starts the session's jobs in worker threads; progress and results
    arrive in the GUI thread (queued connections)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.workers = set()

    def start(self, name, work, job, *, done=None, failed=None, inline=False):
        if inline:  # small enough to do at once in the GUI thread
            run_job(work, job, done, failed)
            return
        worker = JobWorker(name, work, job)
        queued = Qt.ConnectionType.QueuedConnection
        deliver, job._report = job._report, worker.progressed.emit
        worker.progressed.connect(deliver, queued)
        if done is not None:
            worker.succeeded.connect(done, queued)
        if failed is not None:
            worker.failed.connect(failed, queued)
        worker.finished.connect(lambda w=worker: self._forget(w), queued)
        self.workers.add(worker)
        worker.start()

    def _forget(self, worker):
        self.workers.discard(worker)
        worker.deleteLater()

    def running(self):
        return [w for w in self.workers if w.isRunning()]

    def stop_all(self, timeout_ms=30000):
        """Cancel every worker and wait for them (on close)."""
        for worker in list(self.workers):
            worker.cancel()
        for worker in list(self.workers):
            worker.wait(timeout_ms)


class WarmupWorker(Worker):
    """Compile (or load from cache) the kernels while the user looks around."""

    warmed = Signal(float)

    def work(self):
        start = time.perf_counter()
        warm_up()
        self.warmed.emit(time.perf_counter() - start)
