"""Where a run's time went: per stage and per cell, from the executed notebooks' papermill timings.

papermill stores each cell's start, end and duration in the executed notebook
(``runs/<profile>/<stage>.ipynb``, written by ``lsr_lib.run.pipeline``); these read them back and
name each slow cell by its first source line.
"""

from __future__ import annotations

import json
from pathlib import Path


def cell_label(cell: dict) -> str:
    """The first non-comment source line of a cell, shortened."""
    lines = [
        ln.strip()
        for ln in "".join(cell.get("source", "")).splitlines()
        if ln.strip() and not ln.strip().startswith("#")
    ]
    text = lines[0] if lines else "(empty)"
    return text if len(text) <= 100 else text[:97] + "..."


def stage_times(nb_path: Path, top: int = 5) -> dict:
    """Total seconds of one executed notebook and its ``top`` slowest cells."""
    nb = json.loads(nb_path.read_text())
    cells = [
        (c.get("metadata", {}).get("papermill", {}).get("duration") or 0.0, cell_label(c))
        for c in nb["cells"]
        if c.get("cell_type") == "code"
    ]
    meta = nb.get("metadata", {}).get("papermill", {})
    return {
        "seconds": round(float(meta.get("duration") or sum(d for d, _ in cells)), 1),
        "start": meta.get("start_time"),
        "slowest_cells": [{"seconds": round(d, 1), "cell": label} for d, label in sorted(cells, reverse=True)[:top]],
    }
