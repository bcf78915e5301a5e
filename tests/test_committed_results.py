"""The committed default-profile results agree with the measured parts they are built from.

Stage 04's `make bench` and stage 07's `make data-scale` keep every measured job as a part
(``results/default/04_measured/``, ``07_measured/``) and assemble the result files from them: ``04_scale.json``
and ``04_efficiency.json`` (scale and test-split rows, and the recall-matched table behind the README's efficiency
headline), ``07_data_scale.json`` (the study's rows, their seed means and stds, the growth per doubling of pairs)
and ``07_knob_search.json`` (validation rows, the choice, test rows, seed means, paired tests, frontier). The pages
are generated from those files (their currency: ``test_report``). These tests read only committed files, so they
run on a fresh clone: a number edited by hand in a part or in an assembled file, or a summary that no longer
follows from its rows, fails. A part of an engine, size or trial since taken out of the profile may stay in its
folder unused.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from lsr_lib.config.profiles import REPO_ROOT
from lsr_lib.metrics.significance import compare_conditions, mean_std
from lsr_lib.stages.data_scale_study import growth, summary
from lsr_lib.stages.knob_search import TEST_METRICS, choose
from lsr_lib.stages.retrieve_with_inverted_index import recall_matched

RESULTS = REPO_ROOT / "results" / "default"
PARTS_04, PARTS_07 = RESULTS / "04_measured", RESULTS / "07_measured"


def _results(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        pytest.skip(f"no committed {path.name}")
    return json.loads(path.read_text())["results"]


def _part(folder, name: str):
    path = folder / f"{name}.json"
    assert path.exists(), f"a committed result row has no measured part {path.name}"
    return json.loads(path.read_text())["value"]


def _same(a, b) -> bool:
    """Equal values, recursively; missing equals missing (a value kept in a DataFrame is written as NaN, a fresh one
    is None)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or all(x is None or (isinstance(x, float) and math.isnan(x)) for x in (a, b))


def _plain(value):
    """What a stage writes: JSON's view of the value (numpy numbers as Python numbers, tuples as lists)."""
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _unchanged(row: dict, other: dict, where: str) -> None:
    """Every value of ``row`` is the same in ``other`` (``other`` may hold more: derived columns, run facts)."""
    changed = {k: (v, other.get(k)) for k, v in row.items() if not _same(v, other.get(k))}
    assert not changed, f"{where}: {changed}"


# stage 04: the efficiency results


def _job(row: dict) -> tuple:
    return row["n_docs"], row["collection"], row["condition"], row["kind"]


def _rows_are_parts(measured: list[dict], assembled: list[dict], where: str) -> None:
    """Every assembled row is a measured row, each measured value unchanged (assembly adds derived columns)."""
    parts = {_job(r): r for r in measured}
    assert len(assembled) == len({_job(r) for r in assembled}), f"{where}: a job appears twice"
    unmeasured = [_job(r) for r in assembled if _job(r) not in parts]
    assert not unmeasured, f"{where} holds rows no committed part measured: {unmeasured[:3]}"
    for got in assembled:
        _unchanged(
            parts[_job(got)],
            got,
            f"{where}, {_job(got)} differs from its measured part (if a `make bench` stopped part way measured it "
            "again, finish it: it resumes, and stage 04 then assembles the files from the parts)",
        )


def test_the_scale_rows_are_the_measured_jobs_unchanged():
    scale = _results("04_scale")
    parts = [r for path in sorted((PARTS_04 / "scale").glob("*.json")) for r in _part(path.parent, path.stem)]
    assert parts, "no committed scale parts"
    _rows_are_parts(parts, scale["rows"], "04_scale.json")
    shown = _results("04_efficiency")["scale"]
    # empty where stage 04 ran on inputs the scale rows were not measured on (another CPU's `make main`): it shows
    # none then, and says to rerun `make bench`
    if shown:
        _rows_are_parts(parts, shown, "04_efficiency.json scale")


def test_the_test_split_rows_are_the_measured_part_unchanged():
    shown = _results("04_efficiency")["test_collection"]
    _rows_are_parts(_part(PARTS_04, "efficiency_test"), shown, "04_efficiency.json test_collection")


def test_the_recall_matched_table_is_recomputed_from_the_rows():
    """The README's headline (fastest setting at recall@10 >= 0.95 against HNSW) is read from this table."""
    eff = _results("04_efficiency")
    rows = pd.concat([pd.DataFrame(eff["test_collection"]), pd.DataFrame(eff["scale"])], ignore_index=True)
    again, stored = recall_matched(rows.to_dict(orient="records")), eff["recall_matched"]
    assert len(again) == len(stored)
    for new, old in zip(again, stored):
        _unchanged(new, old, f"recall_matched {new['n_docs']:,} {new['condition']} {new['engine']}")


# stage 07: the data-scale study and the knob search


def test_the_study_rows_are_the_measured_parts_and_the_summary_and_growth_follow_from_them():
    study = _results("07_data_scale")
    rows = study["rows"]
    names = [f"seed{r['seed']}_{r['condition']}_{r['point']}" for r in rows]
    assert len(set(names)) == len(names), "a study row appears twice"
    for name, row in zip(names, rows):
        _unchanged(row, _part(PARTS_07, name), f"07_data_scale.json row {name}")  # the part also holds `seconds`
    assert _same(_plain(summary(rows).reset_index().to_dict(orient="records")), study["summary"])
    assert _same(_plain(growth(rows)), study["growth"])


def test_the_knob_search_choice_tests_and_significance_follow_from_the_measured_parts():
    knobs = _results("07_knob_search")
    for row in knobs["val"]:
        _unchanged(row, _part(PARTS_07, f"knob_val_{row['trial']}"), f"val row {row['trial']}")
    assert _same(knobs["reference"], _part(PARTS_07, "knob_reference"))
    assert choose(knobs["val"], knobs["reference"]["FLOPs budget"])["trial"] == knobs["chosen"]

    chosen = knobs["chosen"]
    files = {"recipe, without control": "recipe_without_control", "recipe, with control": "recipe"}
    files[f"{chosen}, with control"] = chosen
    ranks = {}
    for row in knobs["test"]:
        part = _part(PARTS_07, f"knob_test_seed{row['seed']}_{files[row['model']]}")
        _unchanged(row, part["row"], f"test row seed {row['seed']} {row['model']}")
        ranks.setdefault(row["seed"], {})[row["model"]] = np.asarray(part["ranks"])
    for s in knobs["summary"]:
        values = [r for r in knobs["test"] if r["model"] == s["model"]]
        again = {m: mean_std(np.array([r[m] for r in values], dtype=float)) for m in TEST_METRICS}
        assert _same(_plain(again), {m: s[m] for m in TEST_METRICS}), f"summary of {s['model']}"

    def hits(model: str, k: int, at: int) -> np.ndarray:
        return (ranks[k][model] <= at).astype(float)

    recipe = "recipe, with control"
    per_seed = {
        k: {f"R@{c}": (hits(f"{chosen}, with control", k, c), hits(recipe, k, c)) for c in (1, 10)} for k in ranks
    }
    assert _same(_plain(compare_conditions(per_seed)), knobs["paired"])

    for row in knobs["frontier"]:
        name = "recipe_without_control" if row["model"] == "recipe without control" else row["model"]
        _unchanged(row, _part(PARTS_07, f"knob_frontier_{name}"), f"frontier row {row['model']}")
