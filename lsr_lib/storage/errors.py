"""Errors that stop a run, each told in one line: the file or key, and the fix.

The command-line entry points (``python -m lsr_lib.run.pipeline``, ``lsr_lib.results.expected``,
``lsr_lib.results.report``) wrap their ``main`` in :func:`one_line_errors`: an error of a known kind
(:data:`KNOWN_ERRORS`, whose messages name the file or key and the fix) prints ``error: <message>``
as one line on stderr and exits 1; ``--debug`` shows the traceback instead. :func:`read_result_json`
reads a stage's result file and, when it is damaged, names it and the stage rerun that rewrites it.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path
from typing import Callable, Optional

from ..config.typed import ConfigError
from .atomic import WriteError
from .manifest import ArtifactError


class ResultFileError(ValueError):
    """A result file that exists but cannot be read; the message names it and the stage rerun that rewrites it."""


KNOWN_ERRORS: tuple[type[BaseException], ...] = (ConfigError, ArtifactError, ResultFileError, WriteError)


def rewrite_command(path: Path) -> str:
    """The pipeline command that rewrites the result file ``path`` (``results/<profile>/NN_*.json``)."""
    parts = path.resolve().parts
    k = max((i for i, part in enumerate(parts) if part == "results"), default=None)
    profile = "/".join(parts[k + 1 : -1]) if k is not None else ""
    stage = re.match(r"(\d\d)_", path.name)
    return (
        f"python -m lsr_lib.run.pipeline --profile {profile or '<profile>'} "
        f"--stages {stage.group(1) if stage else '<the stage that writes it>'} --force"
    )


def read_result_json(path: str | Path) -> Optional[dict]:
    """A result file's content, or None when there is none; :class:`ResultFileError` naming it and its fix if
    damaged."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as e:  # JSONDecodeError (truncated, edited) or UnicodeDecodeError
        raise ResultFileError(
            f"{path} is not valid JSON ({type(e).__name__}: {e}); it was truncated or edited. "
            f"Rerun its stage, which rewrites it: {rewrite_command(path)}"
        ) from None
    if not isinstance(data, dict):
        raise ResultFileError(
            f"{path} holds a JSON {type(data).__name__}, not an object. "
            f"Rerun its stage, which rewrites it: {rewrite_command(path)}"
        )
    return data


def one_line(error: BaseException) -> str:
    """An error's message on one line."""
    return " ".join(str(error).split()) or type(error).__name__


def one_line_errors(*extra: type[BaseException]) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorate ``main(argv) -> exit code``: known errors (and ``extra``) print ``error: <message>`` and return 1.

    With ``--debug`` among the arguments (the decorated ``main`` must accept it) the error is raised, traceback and all.
    """

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: Optional[list[str]] = None) -> int:
            try:
                return main(argv)
            except (*KNOWN_ERRORS, *extra) as e:
                if "--debug" in (sys.argv[1:] if argv is None else argv):
                    raise
                print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
                return 1

        return run

    return wrap
