"""Where a run's time went, kept apart from the committed numbers.

papermill stores each cell's start, end and duration in the executed notebook
(``runs/<profile>/<stage>.ipynb``, written by ``lsr_lib.run.pipeline``); ``stage_times`` reads them back
and names each slow cell by its first source line.

A stage's own timestamps, durations and peak memory go to ``results/<profile>/timings/<stage>.json``
(gitignored), not into its committed result file (``split_run_facts``, used by
``lsr_lib.results.provenance.write_results``); ``read_with_timings`` merges them back for a reader that
wants them (the paper-size rehearsal).
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


# --- What a run writes that is not a number: kept out of the committed result files (issue 28) ---------------------
#
# ``results/<profile>/<stage>.json`` is committed, so a rerun whose numbers did not change must leave it
# byte-identical. What changes on every run without the numbers changing goes to an untracked sibling,
# ``results/<profile>/timings/<stage>.json`` (gitignored): when the run happened (``provenance.time_utc``), at which
# commit (``provenance.commit``: a fresh clone rebuilds its caches at a later commit; what code made the numbers is
# the file's code fingerprint, which stays), the kernel build of the host it ran on (``provenance.machine.platform``),
# its peak memory (``provenance.memory``) and every wall-clock duration inside the results (a key ``seconds`` or
# ``*_seconds``: per-epoch training seconds, a trial's seconds). Measured latencies are not durations of the run but
# results (stage 04's ``latency_*_ms``, ``build_s``) and stay.

TIMINGS_DIR = "timings"
RUN_FACTS = (
    ("provenance", "time_utc"),
    ("provenance", "commit"),
    ("provenance", "memory"),
    ("provenance", "machine", "platform"),
)


def is_duration(key: object) -> bool:
    """Whether a results key holds a wall-clock duration of the run (``seconds``, ``train_seconds``, ...)."""
    return isinstance(key, str) and (key == "seconds" or key.endswith("_seconds"))


def timings_path(result_path: Path) -> Path:
    """The untracked sibling of a result file: ``results/<profile>/timings/<stage>.json``."""
    return result_path.parent / TIMINGS_DIR / result_path.name


def _durations(node: object, path: tuple) -> tuple[object, list]:
    """``node`` without its duration keys, and ``[[path...], value]`` for each one taken out."""
    if isinstance(node, dict):
        kept, taken = {}, []
        for k, v in node.items():
            if is_duration(k):
                taken.append([[*path, k], v])
            else:
                kept[k], sub = _durations(v, (*path, k))
                taken += sub
        return kept, taken
    if isinstance(node, list):
        pairs = [_durations(v, (*path, i)) for i, v in enumerate(node)]
        return [p[0] for p in pairs], [t for p in pairs for t in p[1]]
    return node, []


def split_run_facts(doc: dict, durations_are_results: bool = False) -> tuple[dict, dict]:
    """(the committed result document, its run facts for ``timings/``); merging them gives ``doc`` back.

    ``durations_are_results``: a benchmark whose timed steps are its results (the AToMiC job) keeps them."""
    committed = json.loads(json.dumps(doc, default=jsonable))  # a deep copy, numpy values as plain numbers
    facts: dict = {"stage": doc.get("stage")}
    for path in RUN_FACTS:
        parent = committed
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and path[-1] in parent:
            facts[".".join(path)] = parent.pop(path[-1])
    if not durations_are_results and "results" in committed:
        committed["results"], taken = _durations(committed["results"], ("results",))
        if taken:
            facts["durations"] = taken
    return committed, facts


def merge_run_facts(doc: dict, facts: dict) -> dict:
    """``doc`` with the run facts of its ``timings/`` file put back (what the run wrote, in one document)."""
    out = json.loads(json.dumps(doc))
    for dotted, value in facts.items():
        if dotted in ("stage", "durations"):
            continue
        *parents, last = dotted.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    for path, value in facts.get("durations", []):
        node = out
        for key in path[:-1]:
            try:
                node = node[key]
            except (KeyError, IndexError, TypeError):
                break
        else:
            if isinstance(node, dict):
                node[path[-1]] = value
    return out


def read_with_timings(result_path: Path) -> dict | None:
    """A result file with its run facts merged back in (when its ``timings/`` sibling exists); None if absent."""
    if not result_path.exists():
        return None
    doc = json.loads(result_path.read_text())
    facts = timings_path(result_path)
    return merge_run_facts(doc, json.loads(facts.read_text())) if facts.exists() else doc


def jsonable(o):
    """numpy scalars and arrays as plain JSON values (``json.dumps(..., default=jsonable)``)."""
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")
