"""The committed efficiency results of the default profile agree with the measurements they are built from.

`make bench` writes each scale job's rows to ``results/default/04_measured/scale/<job>.json`` and the
test-split rows to ``04_measured/efficiency_test.json``; stage 04 assembles ``04_scale.json`` and
``04_efficiency.json`` from them, and the README's efficiency table and docs/efficiency.md are generated from
those (their currency: ``test_report``). These tests read only committed files, so they run on a fresh
clone: a number changed by hand in any of the three layers, or a part left out of the assembled files, fails.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from lsr_lib.config.profiles import REPO_ROOT
from lsr_lib.stages.retrieve_with_inverted_index import recall_matched

RESULTS = REPO_ROOT / "results" / "default"
PARTS = RESULTS / "04_measured"

pytestmark = pytest.mark.skipif(
    not (RESULTS / "04_efficiency.json").exists(), reason="no committed default-profile efficiency results"
)


def _results(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())["results"]


def _job(row: dict) -> tuple:
    return row["n_docs"], row["collection"], row["condition"], row["kind"]


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _same(a, b) -> bool:
    """Equal, or both missing (a value the stage keeps in a DataFrame is written as NaN, a fresh one is None)."""
    return a == b or (_missing(a) and _missing(b))


def _agree(measured: list[dict], assembled: list[dict], where: str) -> None:
    """Every assembled row is a measured row with each of its measured values unchanged (assembly may add derived
    columns). A measured row may be missing from ``assembled``: a part of an engine or size since taken out of the
    profile stays in the folder until deleted."""
    parts = {_job(r): r for r in measured}
    assert len(assembled) == len({_job(r) for r in assembled}), f"{where}: a job appears twice"
    unmeasured = [_job(r) for r in assembled if _job(r) not in parts]
    assert not unmeasured, f"{where} holds rows no committed part measured: {unmeasured[:3]}"
    for got in assembled:
        row = parts[_job(got)]
        changed = {k: (v, got.get(k)) for k, v in row.items() if not _same(v, got.get(k))}
        assert not changed, (
            f"{where}, {_job(row)} differs from its measured part: {changed}. If a `make bench` stopped part way "
            "measured it again, finish it (it resumes) so that stage 04 assembles the files from the parts"
        )


def _scale_parts() -> list[dict]:
    rows = []
    for path in sorted((PARTS / "scale").glob("*.json")):
        rows += json.loads(path.read_text())["value"]
    return rows


def test_the_scale_rows_are_the_measured_jobs_unchanged():
    parts = _scale_parts()
    assert parts, "no committed scale parts"
    _agree(parts, _results("04_scale")["rows"], "04_scale.json")
    shown = _results("04_efficiency")["scale"]
    # empty where stage 04 ran on inputs the scale rows were not measured on (another CPU's `make main`): it shows
    # none then, and says to rerun `make bench`
    if shown:
        _agree(parts, shown, "04_efficiency.json scale")


def test_the_test_split_rows_are_the_measured_part_unchanged():
    part = json.loads((PARTS / "efficiency_test.json").read_text())["value"]
    _agree(part, _results("04_efficiency")["test_collection"], "04_efficiency.json test_collection")


def test_the_recall_matched_table_is_recomputed_from_the_rows():
    """The README's headline (fastest setting at recall@10 >= 0.95 against HNSW) is read from this table."""
    eff = _results("04_efficiency")
    rows = pd.concat([pd.DataFrame(eff["test_collection"]), pd.DataFrame(eff["scale"])], ignore_index=True)
    again = recall_matched(rows.to_dict(orient="records"))
    stored = eff["recall_matched"]
    assert len(again) == len(stored)
    for new, old in zip(again, stored):
        changed = {k: (v, old.get(k)) for k, v in new.items() if not _same(v, old.get(k))}
        assert not changed, f"recall_matched {new['n_docs']:,} {new['condition']} {new['engine']}: {changed}"
