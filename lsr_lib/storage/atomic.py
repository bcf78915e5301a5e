"""Atomic writes and per-folder locks: the only way any stage puts a file on disk.

Every file is written under a unique temporary name in its target folder and renamed into
place, so a reader (or an interrupted run) sees either the old file or the new one, never half
of one, and two processes writing the same artifact never share a temporary name. A folder lock
(``fcntl.flock`` on ``<folder>/.lock``) keeps two runs of a stage from interleaving: the second
waits, then finds the first one's work up to date.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def atomic_write(path: str | Path, write: Callable[[str], object], suffix: str = "") -> Path:
    """Call ``write(tmp_path)`` on a unique temporary sibling of ``path``, then rename it onto ``path``."""
    path = Path(path)
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
def folder_lock(folder: str | Path, what: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if needed); says so when it has to wait."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another run that is writing {what or folder} (lock {folder / '.lock'})", file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
