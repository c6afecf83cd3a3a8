"""Writing files so that nothing is ever half-written or silently replaced.

:func:`atomic_write` writes one file (temporary file + rename);
:func:`staged_folder` builds a whole folder under a temporary name and moves
it into place only when every file in it is complete. Messages speak the
library's language (``overwrite=True``); the command line rewords
:class:`OutputExistsError` for its ``--force``.

Temporary files and staging folders are created with the modes any program's
new files get (0666 and 0777, less the umask the process has at that moment),
not with :mod:`tempfile`'s private 0600 and 0700, so outputs follow the
user's umask (and a folder's default ACL) like any other file.

A staging folder holds a small marker naming the process that builds it (PID,
host, process start time) until it moves into place, so a later run can
remove the staging folders of runs that died (``kill -9``, out-of-memory
kills) and only those: :func:`remove_stale_staging`.
"""

import json
import os
import secrets
import shutil
import socket
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: The marker file inside a staging folder (removed before it moves into place).
STAGING_MARKER = ".gmmseg-staging.json"
_STAGING_SUFFIX = ".partial"
# Staging folders this process is building (for abandon_staging).
_active_staging: set[Path] = set()
_active_lock = threading.Lock()


def _create_unique(folder: Path, prefix: str, suffix: str, create: Callable[[Path], None]) -> Path:
    """``create(path)`` for a new random name ``prefix + random + suffix`` in
    ``folder`` (``create`` must fail with FileExistsError on a taken name)."""
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            create(path)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")


def _new_file(path: Path) -> None:
    # O_EXCL: never an existing file; 0o666: the kernel applies the umask.
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def _new_folder(path: Path) -> None:
    os.mkdir(path, 0o777)  # the kernel applies the umask


class OutputExistsError(FileExistsError):
    """An output exists and replacing it was not allowed.

    Attributes
    ----------
    path : Path
        The first output that exists.
    count : int
        How many of the planned outputs exist.
    """

    def __init__(self, path: str | os.PathLike, count: int = 1):
        self.path = Path(path)
        self.count = count
        super().__init__(f"{self.what}; nothing was written (pass overwrite=True to replace)")

    @property
    def what(self) -> str:
        """What exists, in words (front ends add their own advice)."""
        return f"{self.path} already exists" if self.count == 1 else f"{self.count} outputs already exist, e.g. {self.path}"


def refuse_existing(paths, overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` when any of ``paths`` exists and
    ``overwrite`` is false (checked before anything is written)."""
    if overwrite:
        return
    existing = [Path(p) for p in paths if Path(p).exists()]
    if existing:
        raise OutputExistsError(existing[0], len(existing))


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any], *, overwrite: bool = False) -> Path:
    """Write a file so that it is either complete or absent.

    ``write(tmp_path)`` writes the content to a temporary file in the target
    folder, which is then renamed over ``path``.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    refuse_existing([path], overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(_create_unique(path.parent, f".{path.name}.", ".part", _new_file))
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise
    return path


def write_json(path: str | os.PathLike, data: Any, *, overwrite: bool = False) -> Path:
    """Write a JSON document atomically (strict JSON: no NaN or Infinity)."""
    text = json.dumps(data, indent=1, allow_nan=False) + "\n"

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write, overwrite=overwrite)


@contextmanager
def staged_folder(target: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """A temporary folder beside ``target`` that becomes ``target`` when the
    ``with`` block ends without an error (and is removed when it fails).

    The check for an existing ``target`` happens before the block runs, so
    no work is wasted on an output that may not be written; an existing
    ``target`` is replaced only with ``overwrite``. While it is built, the
    folder is named ``.<target name>.<random>.partial`` and holds
    :data:`STAGING_MARKER`.
    """
    target = Path(target)
    refuse_existing([target], overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _create_unique(target.parent, f".{target.name}.", _STAGING_SUFFIX, _new_folder)
    with _active_lock:
        _active_staging.add(staging)
    try:
        _write_marker(staging)
        yield staging
        (staging / STAGING_MARKER).unlink()
        _move_into_place(staging, target, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        with _active_lock:
            _active_staging.discard(staging)


def _move_into_place(staging: Path, target: Path, overwrite: bool) -> None:
    """Rename a finished staging folder to ``target`` (atomic per folder)."""
    if target.exists():
        refuse_existing([target], overwrite)
        trash = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, trash)
        os.replace(staging, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, target)


# ---------------------------------------------------------------------------
# staging folders of runs that died
def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), to
    tell it from a later process given the same PID; None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count
    # fields from the last ')'. Field 22 is the start time.
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def _owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid())}


def _write_marker(staging: Path) -> None:
    with open(staging / STAGING_MARKER, "w", encoding="utf-8") as f:
        json.dump(_owner(), f)


def _is_alive(pid: int, start: str | None) -> bool:
    """True unless process ``pid`` of this host is known to have ended (or
    its PID to belong to another process now)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    except OSError:
        return True  # cannot tell: keep its folders
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
        if state[state.rfind(")") + 2:].split()[:1] == ["Z"]:
            return False  # ended, not yet reaped
    except OSError:
        pass
    current = _process_start(pid)
    return start is None or current is None or current == start


def staging_owner(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The owner recorded in a staging folder's marker, or None when
    ``folder`` is not a staging folder gmmseg is building (a finished output
    never holds the marker)."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir() or not folder.name.endswith(_STAGING_SUFFIX):
        return None
    try:
        owner = json.loads((folder / STAGING_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (not isinstance(owner, dict) or not isinstance(owner.get("pid"), int) or isinstance(owner.get("pid"), bool)
            or not isinstance(owner.get("host"), str)):
        return None
    return owner


def remove_stale_staging(folder: str | os.PathLike) -> list[Path]:
    """Remove the staging folders in ``folder`` whose owner process, on this
    host, has ended; returns them.

    Only folders named like staging folders *and* holding a marker are
    considered: a finished output never holds one (even one named
    ``.a.partial``, from an input called ``.a.partial.png``). Folders of
    live processes and of other hosts (a shared disk) are left alone.
    """
    removed = []
    here = socket.gethostname()
    try:
        candidates = sorted(Path(folder).glob(f".*{_STAGING_SUFFIX}"))
    except OSError:
        return removed
    for candidate in candidates:
        owner = staging_owner(candidate)
        if owner is None or owner["host"] != here:
            continue
        start = owner.get("start") if isinstance(owner.get("start"), str) else None
        if owner["pid"] == os.getpid() and candidate in _active_staging:
            continue
        if owner["pid"] != os.getpid() and _is_alive(owner["pid"], start):
            continue
        shutil.rmtree(candidate, ignore_errors=True)
        removed.append(candidate)
    return removed


def abandon_staging() -> None:
    """Remove the staging folders this process is building (for a worker
    whose parent died: it exits right after, without finishing them)."""
    with _active_lock:
        folders = list(_active_staging)
    for staging in folders:
        shutil.rmtree(staging, ignore_errors=True)
