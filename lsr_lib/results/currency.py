"""Whether a committed result file is still the current code's, for the notes above generated tables.

A table generated from a result file made by code that has changed since starts with a
**Measured with earlier code** line. It names the commit and the command that measures the numbers
again, not what changed (``python -m lsr_lib.run.pipeline --explain`` says that), so a page goes stale
only when a table's currency flips, not on every code edit. A file made by this code in another
environment (other package versions, or a CPU whose instruction set torch dispatches to differently,
e.g. AVX2 there and AVX512 here) is not "earlier code": its line says **Measured in another environment**
and names the difference, since the last digits, and through training more, may differ here.
"""

from __future__ import annotations

from pathlib import Path

from ..config.profiles import REPO_ROOT
from ..storage.errors import read_result_json


def stage_of(result: str) -> str | None:
    """The stage (notebook name) that writes ``results/<profile>/<result>.json``, from its number."""
    return next((nb.stem for nb in sorted((REPO_ROOT / "notebooks").glob(f"{result[:2]}_*.ipynb"))), None)


def changes(doc: dict, stage: str) -> tuple[list[str], list[str]]:
    """(code changes, environment changes) of the stage since ``doc`` was measured (both [] when it is current).
    A file recorded before environments were fingerprinted counts as earlier code."""
    from ..storage.code_fingerprint import code_fingerprint, explain_change, stage_notebook

    rec, now = doc.get("inputs") or {}, code_fingerprint(notebook=stage_notebook(stage))
    code = explain_change({"code": rec.get("code")}, {"code": now["code"]})
    if rec.get("env") is None:
        return code or (["made before environment fingerprints"] if now["env"] else []), []
    return code, explain_change({"code": None, "env": rec["env"]}, {"code": None, "env": now["env"]})


def measured_with_earlier_code(doc: dict, stage: str, command: str) -> str:
    """A warning line above a table made by code that has changed since, or by this code in another environment
    ("" when current)."""
    code, env = changes(doc, stage)
    commit = doc.get("provenance", {}).get("commit", "?")
    if code:
        return (
            f"**Measured with earlier code** (commit {commit}; "
            f"`python -m lsr_lib.run.pipeline --explain` says what changed): "
            f"these numbers are not those of the current code until `{command}` measures them again.\n\n"
        )
    if env:
        return (
            f"**Measured in another environment** (commit {commit}; {', '.join(env)}): the same code, but here "
            f"the last digits may differ, and through training more; `{command}` measures them here.\n\n"
        )
    return ""


def stale_by_kind(paths: list[Path]) -> dict[str, list[Path]]:
    """The result files among ``paths`` that exist and are not current: ``{"code": made by code that has changed
    since, "environment": made by this code elsewhere}``; the environments' differences under ``"why"``."""
    out: dict = {"code": [], "environment": [], "why": []}
    for path in paths:
        stage = stage_of(path.name)
        doc = read_result_json(path)
        if not (stage and doc):
            continue
        code, env = changes(doc, stage)
        if code or env:
            out["code" if code else "environment"].append(path)
        if env and not code:
            out["why"] += [e for e in env if e not in out["why"]]
    return out


def other_environment(found: dict) -> str:
    """``" (torch-cpu AVX2 -> AVX512)"``: the environments' differences of :func:`stale_by_kind`, shown."""
    return f" ({', '.join(found['why'])})" if found["why"] else ""


def seeds_note(results_dir: Path) -> str:
    """A warning line when the other seeds' result files were measured with code that has changed since, or in
    another environment."""
    found = stale_by_kind(sorted(results_dir.glob("seed*/0*.json")))
    old, elsewhere = ({p.parent.name for p in found[k]} for k in ("code", "environment"))
    elsewhere -= old
    notes = []
    if old:
        notes.append(
            f"**Measured with earlier code**: the result files of {', '.join(sorted(old))} were made by code that "
            "has changed since (their numbers are not those of the current code until `make seeds` measures them "
            "again; seed 0 is `make main`'s).\n\n"
        )
    if elsewhere:
        notes.append(
            f"**Measured in another environment**: the result files of {', '.join(sorted(elsewhere))} were made by "
            f"this code elsewhere{other_environment(found)}; `make seeds` measures them here.\n\n"
        )
    return "".join(notes)
