"""gmmseg on Dask: batches of images on a cluster, and images too big for memory.

Two uses, both with the optional extra (``pip install 'gmmseg[dask]'``:
``dask[array]`` and ``distributed``), which this module imports only when
it is used, so ``import gmmseg`` never does:

* **Batches on a cluster**: :func:`connect` and :func:`run_tasks` send the
  images of ``gmmseg segment|apply|inspect --scheduler tcp://HOST:PORT`` to
  the workers of a Dask distributed scheduler, each image as one
  :func:`gmmseg.workflows.run_task` (the same code, so the same files, as
  a local run). The workers need gmmseg installed and the same paths to the
  images, the model and the output folder (a shared filesystem).
* **Chunked arrays**: :func:`predict` applies a fitted
  :class:`~gmmseg.Segmenter` to a dask array (for example a zarr-backed
  image too big for memory) chunk by chunk, with a halo where texture
  features or the spatial prior look at neighbours, and returns lazy dask
  arrays equal to the whole image's result; :func:`fit_sample` fits a
  Segmenter on a bounded random sample of the chunks.

Example::

    import dask.array as da
    import gmmseg.dask

    image = da.from_zarr("scan.zarr")                  # (H, W, 3) uint8, chunks of e.g. 2048 x 2048
    seg = gmmseg.dask.fit_sample(image, n_components=5, spatial_weight=0, random_state=0)
    result = gmmseg.dask.predict(seg, image, probabilities=True)
    result.labels.to_zarr("labels.zarr")               # computed chunk by chunk
"""

import copy
import dataclasses
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._fileio import remove_stale_staging
from ._validation import check_int
from ._version import __version__
from .engine import NotFittedError
from .io import ImageData, from_array
from .segment import Segmenter
from .workflows import Task, default_message, failed_row, killed_message, run_task

#: What to install for this module.
INSTALL_HINT = "pip install 'gmmseg[dask]'"

def _dask():
    """``(dask, dask.array)``, or ImportError saying what to install."""
    try:
        import dask
        import dask.array as da
    except ImportError as exc:
        raise ImportError(f"gmmseg.dask needs Dask ({exc}): {INSTALL_HINT}") from None
    return dask, da


def _distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(f"running on a Dask cluster needs Dask's distributed scheduler ({exc}): {INSTALL_HINT}") from None
    return distributed


# ---------------------------------------------------------------------------
# batches on a cluster
class SchedulerUnavailable(ConnectionError):
    """The Dask scheduler could not be reached, or its workers cannot run
    gmmseg; the message says where and why."""


def connect(address: str, *, timeout: float = 10.0) -> Any:
    """A ``distributed.Client`` of the scheduler at ``address``.

    Parameters
    ----------
    address : str
        E.g. ``tcp://10.0.0.5:8786`` (what ``dask scheduler`` prints).
    timeout : float
        Seconds to wait for the connection.

    Raises
    ------
    ImportError
        ``distributed`` is not installed (the message says what to install).
    SchedulerUnavailable
        Nothing answers at ``address``, or it does not speak Dask's protocol.
    ValueError
        ``address`` is not an address Dask knows.
    """
    distributed = _distributed()
    from distributed.comm import parse_address, parse_host_port
    from distributed.comm.registry import get_backend

    try:
        scheme, location = parse_address(address)
        get_backend(scheme)  # an unknown scheme fails here, not half-way through a Client
        host_port = parse_host_port(location) if scheme in ("tcp", "tls") else None
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{address!r} is not a Dask scheduler address such as tcp://HOST:8786 ({exc})") from None
    if host_port is not None:
        # A quick look first: Dask's own connection retries a refused port
        # until its timeout, and then says only that it timed out.
        try:
            socket.create_connection(host_port, timeout=timeout).close()
        except OSError as exc:
            raise SchedulerUnavailable(f"cannot reach the Dask scheduler at {address}: {exc.strerror or exc}") from None
    try:
        return distributed.Client(address, timeout=timeout, set_as_default=False)
    except OSError as exc:
        raise SchedulerUnavailable(f"cannot reach the Dask scheduler at {address}: {default_message(exc)}") from None


def _worker_version() -> str:
    return __version__


def check_workers(client: Any) -> dict[str, str]:
    """The gmmseg version of every worker now connected (``{address:
    version}``; empty when none is yet).

    Raises
    ------
    SchedulerUnavailable
        A worker cannot run gmmseg's code (not installed there, most likely).
    """
    try:
        return client.run(_worker_version)
    except Exception as exc:  # whatever the worker raised on unpickling or running it
        raise SchedulerUnavailable(f"the Dask workers at {client.scheduler.address} cannot run gmmseg "
                                   f"({type(exc).__name__}: {default_message(exc)}); install gmmseg on every worker") from None


def _for_workers(task: Task) -> Task:
    """The task with absolute paths: a worker's working folder is not ours."""
    def absolute(path):
        return None if path is None else os.path.abspath(path)

    return dataclasses.replace(task, input=absolute(task.input), output=absolute(task.output), model=absolute(task.model))


def _tasks_to_send(tasks: Sequence[Task]) -> list[Task]:
    """The tasks as the workers get them: absolute paths, and permission to
    replace an output folder that does not exist yet.

    A worker can finish an image (its folder complete) and die before the
    scheduler hears of it; the image then runs again and would find its own
    folder. A folder that does not exist now can only come from this run's
    attempts at the same image (every image has its own), so those tasks
    may replace it; folders that exist now are refused as in a local run.
    """
    sent = [_for_workers(t) for t in tasks]
    return [dataclasses.replace(t, overwrite=True) if t.output and not t.overwrite and not os.path.exists(t.output)
            else t for t in sent]


def _as_given(row: dict, task: Task, sent: Task) -> dict:
    """A worker's result row with the paths spelled as the user gave them."""
    row = dict(row)
    for name in ("input", "output"):
        given, absolute = getattr(task, name), getattr(sent, name)
        if not absolute or given == absolute:
            continue
        if row.get(name) == absolute:
            row[name] = given
        if row.get("error"):
            row["error"] = row["error"].replace(absolute, given)
    return row


def _killed_row(task: Task, exc: BaseException, explain: Callable[[BaseException], str]) -> dict:
    """The row of an image whose workers kept dying (Dask's KilledWorker)."""
    tries = getattr(exc, "allowed_failures", None)
    times = "repeatedly" if not isinstance(tries, int) else "once" if tries == 0 else f"{tries + 1} times"
    text = (f"{killed_message(task)}; the Dask workers processing it alone died {times} and the scheduler gave up "
            "on it (give the workers more memory: dask worker --memory-limit)")
    return failed_row(task.input, RuntimeError(text), explain)


def run_tasks(
    client: Any,
    tasks: Sequence[Task],
    *,
    explain: Callable[[BaseException], str] = default_message,
    on_result: Callable[[int, dict], Any] | None = None,
    note: Callable[[str], Any] | None = None,
) -> list[dict | None]:
    """Run a batch's tasks on a Dask cluster; returns their result rows, in
    task order.

    Each task is one :func:`gmmseg.workflows.run_task` on a worker, which
    writes the image's outputs into a staged folder that appears only when
    complete. A worker that dies (killed, out of memory) has its images run
    again by the scheduler on other workers; an image whose workers keep
    dying (``distributed.scheduler.allowed-failures``, 3 by default) is
    run again alone once the others are done (the images a dying worker
    held are given up on with it), and fails with a row that says so if its
    workers die again; the batch goes on.

    Parameters
    ----------
    client : distributed.Client
        From :func:`connect`.
    tasks : sequence of Task
        Paths may be relative to this process's working folder: the workers
        get absolute ones, and the rows spell them as given.
    explain : callable
        Words an error as one line (in the workers too: it must pickle).
    on_result : callable, optional
        ``on_result(i, row)`` as soon as task ``i`` is done, in the order
        they finish.
    note : callable, optional
        ``note(text)`` with news about the run as a whole.

    Returns
    -------
    list of dict
        One row per task (None for tasks cancelled by an interrupt).

    Raises
    ------
    KeyboardInterrupt
        After an interrupt: the images the workers had been given finish
        (and reach ``on_result``), the others are cancelled; a second
        interrupt cancels those too.
    """
    distributed = _distributed()
    sent = _tasks_to_send(tasks)
    run = uuid.uuid4().hex[:8]
    keys = [f"gmmseg-{t.mode}-{run}-{i}" for i, t in enumerate(tasks)]
    futures = client.map(run_task, sent, key=keys, pure=False, explain=explain)
    # Only unfinished futures are kept: a result row held on a worker that
    # dies later would otherwise be computed again (the image processed
    # twice, and failing the second time on its own finished folder).
    pending = {f.key: f for f in futures}
    index = {key: i for i, key in enumerate(keys)}
    del futures
    rows: list[dict | None] = [None] * len(tasks)

    killed = []  # images given up on because their workers died: run again one at a time

    def finish(future, alone=False):
        i = index[future.key]
        try:
            row = _as_given(future.result(), tasks[i], sent[i])
        except distributed.KilledWorker as exc:
            if not alone:
                killed.append(i)
                del pending[future.key]
                future.release()
                return
            row = _killed_row(tasks[i], exc, explain)
        except Exception as exc:  # the cluster could not run it (e.g. lost the scheduler): this image fails
            row = failed_row(tasks[i].input, RuntimeError(f"the Dask cluster could not process it "
                                                          f"({type(exc).__name__}: {default_message(exc)})"), explain)
        del pending[future.key]
        future.release()
        row.setdefault("seconds", 0.0)
        rows[i] = row
        if on_result is not None:
            on_result(i, row)

    try:
        for future in distributed.as_completed(list(pending.values()), loop=client.loop):
            finish(future)
            del future
        if killed and note is not None:
            note(f"Dask workers died while processing {len(killed)} image(s); they run again one at a time")
        for i in killed:
            # Alone on the cluster: a worker that died may have held other,
            # innocent images of the batch, which the scheduler gave up on
            # as well; alone, only an image that cannot be processed fails.
            key = f"{keys[i]}-alone"
            index[key] = i
            pending[key] = future = client.submit(run_task, sent[i], key=key, pure=False, explain=explain)
            finish(future, alone=True)  # waits for it
            del future
    except KeyboardInterrupt:
        # As in a local run: the images being processed finish (complete,
        # and in the rows), the others are cancelled. A second interrupt
        # stops the wait.
        busy = _processing(client, set(pending))
        client.cancel([f for key, f in pending.items() if key not in busy])
        if busy and note is not None:
            note(f"stopping: waiting for the {len(busy)} image(s) the workers are processing (Ctrl+C again stops at once)")
        try:
            for future in distributed.as_completed([pending[key] for key in busy], loop=client.loop):
                finish(future)
                del future
        except KeyboardInterrupt:
            pass
        client.cancel(list(pending.values()))
        raise KeyboardInterrupt from None
    except BaseException:
        client.cancel(list(pending.values()))
        raise
    finally:
        _remove_stale_staging(client, {os.path.dirname(t.output) for t in sent if t.output})
    return rows


def _processing(client: Any, keys: set[str]) -> set[str]:
    """Which of ``keys`` the scheduler has given to workers."""
    try:
        given = client.processing()
    except Exception:  # the scheduler is gone: nothing to wait for
        return set()
    return {key for worker_keys in given.values() for key in worker_keys if key in keys}


def _remove_stale_staging(client: Any, folders: set[str]) -> None:
    """Remove unfinished output folders of dead workers: each worker removes
    those of dead processes on its own host (a folder's marker names them)."""
    for folder in sorted(folders):
        try:
            client.run(remove_stale_staging, folder, on_error="ignore")
        except Exception:  # cleaning up is best effort (the scheduler may be gone); the next run's does it too
            pass


# ---------------------------------------------------------------------------
# chunked arrays
@dataclass
class DaskSegmentation:
    """The lazy result of :func:`predict`.

    Attributes
    ----------
    labels : dask.array.Array (H, W), int32
        Most probable component; -1 where the pixel is masked out.
    probabilities : dask.array.Array (H, W, K), float32, or None
        When asked for: probability of each component (0 where masked out).
    log_likelihood : dask.array.Array (H, W), float32, or None
        When asked for: log density of each pixel under the mixture (NaN
        where masked out).
    component_colors : ndarray (K, 3)
        Display colour of each component (sRGB in [0, 1]).
    halo : int
        Pixels each chunk was extended by on each inner side.
    """

    labels: Any
    probabilities: Any
    log_likelihood: Any
    component_colors: np.ndarray
    halo: int

    @property
    def n_components(self) -> int:
        return int(self.component_colors.shape[0])


def _as_image_array(image: Any) -> Any:
    """A dask array (H, W, C) of an image, its channels in one chunk."""
    _, da = _dask()
    if not isinstance(image, da.Array):
        image = da.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"image must be a (H, W) or (H, W, C) array with C in 1..4, got shape {image.shape}.")
    if image.dtype.kind not in "biuf":
        raise ValueError(f"image pixels must be numbers, got {image.dtype}.")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image has no pixels (shape {image.shape}).")
    if len(image.chunks[2]) > 1:
        image = image.rechunk({2: -1})
    return image


def _extremes(image: Any) -> tuple | None:
    """The image's colour extremes when :func:`gmmseg.io.from_array`'s
    scaling depends on them (None when its dtype decides: uint8, uint16,
    bool, integers within [0, 255], floats within [0, 1]). Costs a pass over
    the array for dtypes other than uint8, uint16 and bool."""
    dask, da = _dask()
    if image.dtype in (np.uint8, np.uint16, np.bool_):
        return None
    colour = image[:, :, : 3 if image.shape[2] >= 3 else 1]
    if image.dtype.kind == "f":
        finite = da.where(da.isfinite(colour), colour, np.nan)
        lo, hi = dask.compute(da.nanmin(finite), da.nanmax(finite))
        if not (np.isfinite(lo) and np.isfinite(hi)) or (lo >= 0 and hi <= 1):
            return None
    else:
        lo, hi = dask.compute(colour.min(), colour.max())
        if lo >= 0 and hi <= 255:
            return None
    return (lo, hi)


def _block_image(block: np.ndarray, extremes: tuple | None) -> ImageData:
    """A chunk as an ImageData scaled as the whole image is (see
    :func:`_extremes`): with the whole image's extremes in two extra rows,
    from_array finds the same range, and they are dropped afterwards."""
    if extremes is None:
        return from_array(block)
    lo, hi = extremes
    extra = np.zeros((2,) + block.shape[1:], dtype=block.dtype)
    colours = 3 if block.shape[2] >= 3 else 1
    extra[0, :, :colours] = lo
    extra[1, :, :colours] = hi
    whole = from_array(np.concatenate([block, extra]))
    return ImageData(pixels=whole.pixels[:-2], mask=whole.mask[:-2], bit_depth=whole.bit_depth, mode=whole.mode,
                     value_range=whole.value_range)


def _core_chunks(chunks: tuple, depth: int) -> tuple:
    """The chunks of an axis before :func:`dask.array.overlap.overlap` added
    ``depth`` on each inner side (boundary 'none')."""
    if len(chunks) == 1:
        return chunks
    return tuple(c - (depth if k > 0 else 0) - (depth if k < len(chunks) - 1 else 0) for k, c in enumerate(chunks))


def _predict_block(block, *, block_id, rows, cols, depth, full_shape, segmenter, extremes, maps):
    """The result layers of one chunk from its block extended by ``depth``
    (rows, columns) on its inner sides: labels, then the probabilities and
    the log-likelihood as ``maps`` asks, as float32 (h, w, layers)."""
    i, j = block_id[0], block_id[1]
    y0, y1, x0, x1 = rows[i], rows[i + 1], cols[j], cols[j + 1]
    top = depth[0] if i > 0 else 0
    left = depth[1] if j > 0 else 0
    wx0 = x0 - left
    seg = segmenter.predict_window(_block_image(block, extremes), (y0 - top, wx0), full_shape)
    core = (slice(top, top + y1 - y0), slice(left, left + x1 - x0))
    with_probabilities, with_log_likelihood = maps
    k = seg.n_components
    out = np.empty((y1 - y0, x1 - x0, 1 + k * with_probabilities + with_log_likelihood), dtype=np.float32)
    out[:, :, 0] = seg.labels[core]  # small integers: exact in float32
    if with_probabilities:
        out[:, :, 1:1 + k] = seg.probabilities[core]
    if with_log_likelihood:
        out[:, :, -1] = seg.log_likelihood[core]
    return out


def predict(segmenter: Segmenter, image: Any, *, probabilities: bool = False,
            log_likelihood: bool = False) -> DaskSegmentation:
    """Segment a chunked image with a fitted Segmenter, chunk by chunk.

    Parameters
    ----------
    segmenter : Segmenter
        Fitted (e.g. by :func:`fit_sample` or loaded from a model file); a
        copy goes into the task graph.
    image : dask.array.Array
        (H, W) grey or (H, W, C) image (C: 1 grey, 2 grey + alpha, 3 RGB, 4
        RGBA), of any dtype :func:`gmmseg.load_image` reads from arrays.
        Scaled as the whole array would be: uint8, uint16 and bool by their
        bit depth; other dtypes by the array's range when it is outside
        [0, 1] (floats) or [0, 255] (integers), which costs one pass over it
        here to find.
    probabilities, log_likelihood : bool
        Also return these maps.

    Returns
    -------
    DaskSegmentation
        Lazy arrays in the image's chunks (merged along an axis whose chunks
        are thinner than the halo); computing them computes only what they
        need, and together they share the work.

    Notes
    -----
    Each chunk is predicted with :meth:`Segmenter.predict_window` on the
    chunk plus :meth:`Segmenter.prediction_halo` pixels of its neighbours on
    every inner side (``dask.array.overlap``, boundary 'none': the image's
    own sides are its sides), so every pixel sees what it sees in the whole
    image: labels, probabilities and log-likelihoods equal the in-memory
    ``segmenter.predict(image)``. Colour (and position) features without
    smoothing need no halo.
    """
    _, da = _dask()
    if not isinstance(segmenter, Segmenter) or not segmenter.is_fitted:
        raise NotFittedError("predict needs a fitted Segmenter; fit one (e.g. with gmmseg.dask.fit_sample) or load a model.")
    segmenter = copy.deepcopy(segmenter)  # later changes to the caller's model do not reach the graph
    image = _as_image_array(image)
    extremes = _extremes(image)
    halo = segmenter.prediction_halo()
    depth = [halo, halo] if halo else [0, 0]
    for axis in (0, 1):
        if depth[axis] and image.shape[axis] <= depth[axis] + 1:
            image = image.rechunk({axis: -1})  # the whole axis in one chunk: nothing to borrow from neighbours
        if len(image.chunks[axis]) == 1:
            depth[axis] = 0
    if any(depth):
        image = da.overlap.overlap(image, depth={0: depth[0], 1: depth[1], 2: 0}, boundary="none")
    row_chunks = _core_chunks(image.chunks[0], depth[0])
    col_chunks = _core_chunks(image.chunks[1], depth[1])
    H, W = sum(row_chunks), sum(col_chunks)
    K = segmenter.gmm_.means_.shape[0]
    layers = 1 + (K if probabilities else 0) + (1 if log_likelihood else 0)
    maps = da.map_blocks(
        _predict_block, image, dtype=np.float32, chunks=(row_chunks, col_chunks, (layers,)),
        meta=np.empty((0, 0, 0), dtype=np.float32), name="gmmseg-predict-" + uuid.uuid4().hex,
        rows=np.concatenate([[0], np.cumsum(row_chunks)]).tolist(),
        cols=np.concatenate([[0], np.cumsum(col_chunks)]).tolist(),
        depth=tuple(depth), full_shape=(H, W), segmenter=segmenter, extremes=extremes,
        maps=(bool(probabilities), bool(log_likelihood)),
    )
    return DaskSegmentation(
        labels=maps[:, :, 0].astype(np.int32),
        probabilities=maps[:, :, 1:1 + K] if probabilities else None,
        log_likelihood=maps[:, :, layers - 1] if log_likelihood else None,
        component_colors=np.array(segmenter.component_colors_, dtype=np.float64),
        halo=halo,
    )


def fit_sample(image: Any, segmenter: Segmenter | None = None, *, sample_pixels: int = 4_000_000,
               **settings: Any) -> Segmenter:
    """Fit a Segmenter on a random sample of an image's chunks.

    Parameters
    ----------
    image : dask.array.Array
        (H, W) or (H, W, C), as for :func:`predict`.
    segmenter : Segmenter, optional
        The Segmenter to fit (default: a new one with ``settings``).
    sample_pixels : int
        At most this many pixels are read: whole chunks drawn at random
        (seeded by the Segmenter's ``random_state``) while they fit, or a
        random window of one chunk when a chunk alone is larger.
    **settings
        Settings of :class:`gmmseg.SegmenterParams` (they change
        ``segmenter``'s when one is given).

    Returns
    -------
    Segmenter
        Fitted on the sampled chunks together (as :meth:`Segmenter.fit`
        fits a list of images); texture features are computed per chunk.

    Raises
    ------
    ValueError
        With position features (``spatial_weight > 0``): positions describe
        one image's layout, which a sample of chunks does not show; pass
        ``spatial_weight=0``. Or when the sampled chunks have no usable pixel.
    """
    dask, _ = _dask()
    if segmenter is None:
        segmenter = Segmenter(**settings)
    elif settings:
        segmenter.set_params(**settings)
    sample_pixels = check_int(sample_pixels, "sample_pixels", minimum=1)
    if segmenter.params.features.uses_position:
        raise ValueError("fit_sample cannot fit position features (spatial_weight > 0): they describe where pixels lie "
                         "in one image, and a sample of chunks does not show the whole layout; pass spatial_weight=0.")
    image = _as_image_array(image)
    extremes = _extremes(image)
    rng = np.random.RandomState(segmenter.random_state)
    rows = np.concatenate([[0], np.cumsum(image.chunks[0])])
    cols = np.concatenate([[0], np.cumsum(image.chunks[1])])
    blocks = [(i, j) for i in range(len(rows) - 1) for j in range(len(cols) - 1)]
    windows, total = [], 0
    for b in rng.permutation(len(blocks)):
        i, j = blocks[b]
        h, w = int(rows[i + 1] - rows[i]), int(cols[j + 1] - cols[j])
        if total + h * w <= sample_pixels:
            windows.append((slice(rows[i], rows[i + 1]), slice(cols[j], cols[j + 1])))
            total += h * w
        elif not windows:
            # Chunks larger than the sample: a random window of about
            # sample_pixels pixels of this one, as square as the chunk allows.
            hh = int(min(h, max(1, round(np.sqrt(sample_pixels * h / w)))))
            ww = int(min(w, max(1, sample_pixels // hh)))
            y, x = rows[i] + rng.randint(h - hh + 1), cols[j] + rng.randint(w - ww + 1)
            windows.append((slice(y, y + hh), slice(x, x + ww)))
            break
    parts = dask.compute(*[image[ys, xs] for ys, xs in windows])
    images = [im for im in (_block_image(np.asarray(p), extremes) for p in parts) if im.mask.any()]
    if not images:
        raise ValueError("the sampled chunks have no usable pixels (all transparent or not finite).")
    return segmenter.fit(images if len(images) > 1 else images[0])
