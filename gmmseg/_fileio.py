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
"""

import json
import os
import secrets
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_STAGING_SUFFIX = ".partial"


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
    ``target`` is replaced only with ``overwrite``.
    """
    target = Path(target)
    refuse_existing([target], overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _create_unique(target.parent, f".{target.name}.", _STAGING_SUFFIX, _new_folder)
    try:
        yield staging
        _move_into_place(staging, target, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


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


def remove_partial_folders(folder: str | os.PathLike) -> None:
    """Remove staging folders left in ``folder`` by an interrupted run."""
    for p in Path(folder).glob(".*.partial"):
        shutil.rmtree(p, ignore_errors=True)
