"""Atomic writes and per-folder locks: the only way any stage puts a file on disk.

Every file is written under a unique temporary name in its target folder and renamed into
place, so a reader (or an interrupted run) sees either the old file or the new one, never half
of one, and two processes writing the same artifact never share a temporary name. A folder lock
(``fcntl.flock`` on ``<folder>/.lock``) keeps two runs of a stage from interleaving: the second
waits, then finds the first one's work up to date. A full disk (or a folder that is not writable)
raises :class:`WriteError`, which names the file and what to free.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
DENIED_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)
# writers that lose the errno: safetensors (SafetensorError ... StorageFull), torch.save (RuntimeError)
FULL_DISK_TEXTS = ("No space left on device", "Disk quota exceeded", "StorageFull", "file write failed")


class WriteError(OSError):
    """A file that could not be written (a full disk, no permission); the message names it and what to free or fix."""

    def __str__(self) -> str:
        return str(self.strerror)


def write_error(path: Path, err: BaseException) -> Optional[WriteError]:
    """A :class:`WriteError` naming ``path`` when ``err`` says the disk is full or not writable, else None."""
    if isinstance(err, WriteError):
        return None
    code = err.errno if isinstance(err, OSError) else None
    if code not in FULL_DISK_ERRNOS and any(t in str(err) for t in FULL_DISK_TEXTS):
        code = errno.ENOSPC
    cause = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
    if code in FULL_DISK_ERRNOS:
        try:
            free = f"{shutil.disk_usage(path.parent).free / 2**30:.2f} GiB free"
        except OSError:
            free = "free space unknown"
        return WriteError(
            code,
            f"cannot write {path}: no space left on the disk holding {path.parent} "
            f"({free}; {cause}). Free space there (the largest files are the caches under "
            "data/cache/, where folders named <name>@<fingerprint> are set-aside caches of other "
            "settings, and runs/), then rerun: finished files are kept",
        )
    if code in DENIED_ERRNOS:
        why = f"{os.strerror(code)} ({cause})"
        return WriteError(code, f"cannot write {path}: {why}. Make {path.parent} writable, then rerun")
    return None


@contextmanager
def naming_write_errors(path: Path) -> Iterator[None]:
    """Re-raise a full-disk or permission error of the block as a :class:`WriteError` naming ``path``."""
    try:
        yield
    except Exception as e:
        err = write_error(path, e)
        if err is None:
            raise
        raise err from e


def atomic_write(path: str | Path, write: Callable[[str], object], suffix: str = "") -> Path:
    """Call ``write(tmp_path)`` on a unique temporary sibling of ``path``, then rename it onto ``path``."""
    path = Path(path)
    with naming_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
        os.close(fd)
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a UTF-8 text file atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj, indent: int | None = 2) -> Path:
    """Write JSON atomically (sorted keys, so equal content gives equal bytes)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True, default=str) + "\n")


def atomic_write_dir(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_dir)`` on a unique temporary sibling folder, then swap it in for ``path``."""
    path = Path(path)
    with naming_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            write(tmp)
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
                os.replace(path, old / "x")
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return path


@contextmanager
def folder_lock(folder: str | Path, what: str = "", say: Optional[Callable[[str], object]] = None) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if needed); says so (``say``, else to stderr) when it has to
    wait."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting = f"waiting for another run that is writing {what or folder} (lock {folder / '.lock'})"
            (say or (lambda s: print(s, file=sys.stderr, flush=True)))(waiting)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
