"""Whether a committed result file is still the current code's, for the notes above generated tables.

A table generated from a result file made by code that has changed since starts with a
**Measured with earlier code** line. It names the commit and the command that measures the numbers
again, not what changed (``python -m lsr_lib.run.pipeline --explain`` says that), so a page goes stale
only when a table's currency flips, not on every code edit.
"""

from __future__ import annotations

from pathlib import Path

from ..config.profiles import REPO_ROOT
from ..storage.errors import read_result_json


def stage_of(result: str) -> str | None:
    """The stage (notebook name) that writes ``results/<profile>/<result>.json``, from its number."""
    return next((nb.stem for nb in sorted((REPO_ROOT / "notebooks").glob(f"{result[:2]}_*.ipynb"))), None)


def earlier_code(doc: dict, stage: str) -> list[str]:
    """What changed in the stage's code and environment since ``doc`` was measured ([] when nothing did)."""
    from ..storage.code_fingerprint import code_fingerprint, explain_change, stage_notebook

    rec = doc.get("inputs") or {}
    return explain_change(
        {"code": rec.get("code"), "env": rec.get("env")}, code_fingerprint(notebook=stage_notebook(stage))
    )


def measured_with_earlier_code(doc: dict, stage: str, command: str) -> str:
    """A warning line above a table made by code that has changed since ("" when current)."""
    if not earlier_code(doc, stage):
        return ""
    return (
        f"**Measured with earlier code** (commit {doc.get('provenance', {}).get('commit', '?')}; "
        f"`python -m lsr_lib.run.pipeline --explain` says what changed): "
        f"these numbers are not those of the current code until `{command}` measures them again.\n\n"
    )


def stale_results(paths: list[Path]) -> list[Path]:
    """The result files among ``paths`` that exist and were made by code that has changed since."""
    out = []
    for path in paths:
        stage = stage_of(path.name)
        doc = read_result_json(path)
        if stage and doc and earlier_code(doc, stage):
            out.append(path)
    return out


def seeds_note(results_dir: Path) -> str:
    """A warning line when the other seeds' result files were measured with code that has changed since."""
    old = sorted({p.parent.name for p in stale_results(sorted(results_dir.glob("seed*/0*.json")))})
    if not old:
        return ""
    return (
        f"**Measured with earlier code**: the result files of {', '.join(old)} were made by code that has "
        "changed since (their numbers are not those of the current code until `make seeds` measures them again; "
        "seed 0 is `make main`'s).\n\n"
    )
