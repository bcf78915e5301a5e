"""Progress that reaches the terminal: tqdm bars that also write a one-line status file.

Inside a papermill kernel a tqdm bar renders into the executed notebook, which nobody sees
while it runs. :class:`progress_bar` is ``tqdm.auto.tqdm`` that also writes its state (what,
how far, elapsed, ETA) at most once a second to the file named by ``$LSR_STATUS_FILE``;
``lsr_lib.run.pipeline`` sets that variable for each stage's kernel and prints every new line
in the terminal. :func:`report` writes a free-form line ("up to date", "reusing ...").
Without the variable (a notebook opened in JupyterLab) both only do what tqdm does.

:func:`notice` is the channel for warnings about files (set aside, moved aside, recomputed,
trained again): it prints them (or warns) in the kernel and appends them to the file named by
``$LSR_NOTICES_FILE``, whose every line the pipeline prints in the terminal.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from .atomic import atomic_write_text

STATUS_ENV = "LSR_STATUS_FILE"
NOTICES_ENV = "LSR_NOTICES_FILE"
MIN_INTERVAL_S = 1.0


def status_file() -> Optional[Path]:
    """The status file of the running stage, or None outside ``lsr_lib.run.pipeline``."""
    value = os.environ.get(STATUS_ENV)
    return Path(value) if value else None


def report(message: str) -> None:
    """Write one status line (shown by the pipeline in the terminal); a no-op without ``$LSR_STATUS_FILE``."""
    path = status_file()
    if path is not None:
        try:
            atomic_write_text(path, message.strip().replace("\n", " ") + "\n")
        except OSError:
            pass  # progress must never fail the work


def notice(message: str, warn: bool = False, stacklevel: int = 2) -> None:
    """A warning about a file (set aside, recomputed): to stderr (``warn``: a warning) and the pipeline's terminal."""
    if warn:
        warnings.warn(message, stacklevel=stacklevel + 1)
    else:
        print(message, file=sys.stderr, flush=True)
    value = os.environ.get(NOTICES_ENV)
    if value:
        try:
            with open(value, "a", encoding="utf-8") as f:  # one short append: lines from concurrent writers do not mix
                f.write(" ".join(message.split()) + "\n")
        except OSError:
            pass  # a notice must never fail the work


def describe(bar: tqdm) -> str:
    """``what: n/total unit (pct), elapsed, ETA`` of a bar."""
    d = bar.format_dict
    n, total, elapsed, unit = d["n"], d["total"], d["elapsed"], d.get("unit") or "it"
    text = f"{bar.desc or 'working'}: {n:,}/{total:,} {unit}" if total else f"{bar.desc or 'working'}: {n:,} {unit}"
    if total and n:
        text += (
            f" ({100 * n / total:.0f}%), {tqdm.format_interval(elapsed)} elapsed, ETA "
            f"{tqdm.format_interval(elapsed * (total - n) / n)}"
        )
    elif total:
        text += f" (0%), {tqdm.format_interval(elapsed)} elapsed"
    return text


class progress_bar(tqdm):  # noqa: N801 (used like tqdm)
    """``tqdm.auto.tqdm`` that also reports to the status file (see the module docstring)."""

    _last_report = 0.0

    def display(self, *args, **kwargs):
        out = super().display(*args, **kwargs)
        now = time.monotonic()
        if now - self._last_report >= MIN_INTERVAL_S or (self.total and self.n >= self.total):
            self._last_report = now
            report(describe(self))
        return out
