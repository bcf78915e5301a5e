"""Which checkout a notebook kernel runs: the guard behind "the run is the checkout's run" (issue 12).

``lsr_lib.run.pipeline`` starts every stage kernel with ``LSR_CHECKOUT=<its repository root>``
and that root first on ``PYTHONPATH``. :func:`check_kernel_checkout`, called by ``import lsr_lib``
when the variable is set, stops a kernel that imported ``lsr_lib`` from another checkout anyway
(say the editable install of a first clone) before it reads or writes anything there.
Standard library only: it runs while ``lsr_lib`` is being imported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

CHECKOUT_ENV = "LSR_CHECKOUT"


def package_root() -> Path:
    """The repository root of the imported ``lsr_lib`` (the folder that holds ``lsr_lib/``)."""
    return Path(__file__).resolve().parents[2]


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def check_kernel_checkout(expected_root: Optional[str] = None) -> None:
    """Raise RuntimeError when ``expected_root`` (default ``$LSR_CHECKOUT``) is set and is not this lsr_lib's root."""
    expected = expected_root if expected_root is not None else os.environ.get(CHECKOUT_ENV)
    if not expected:
        return
    imported = package_root()
    if _same_folder(imported, Path(expected)):
        return
    raise RuntimeError(
        f"this kernel imported lsr_lib from {imported} but was launched for checkout {expected}; "
        f"run `pip install -e .` in {expected}'s venv or use that checkout's "
        f"`python -m lsr_lib.run.pipeline` (run from {expected}, it puts that checkout first on PYTHONPATH). "
        f"{CHECKOUT_ENV} is set by lsr_lib.run.pipeline; unset it to use another checkout on purpose."
    )
