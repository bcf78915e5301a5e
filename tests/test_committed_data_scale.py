"""The committed stage-07 results of the default profile agree with the measured parts they are built from.

`make data-scale` writes every trained-and-evaluated model to ``results/default/07_measured/<part>.json`` and
assembles ``07_data_scale.json`` and ``07_knob_search.json`` from them: the study's rows, their mean and std over
seeds and the growth per doubling of pairs; the knob search's validation rows, its choice, the test rows, their
seed means and the paired significance tests. The README's retention and goal lines are generated from those
files (their currency: ``test_report``). These tests read only committed files, so they run on a fresh clone: a
number edited by hand in a part or in an assembled file, or a summary that no longer follows from its rows, fails.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lsr_lib.config.profiles import REPO_ROOT
from lsr_lib.metrics.significance import compare_conditions, mean_std
from lsr_lib.stages.data_scale_study import growth, summary
from lsr_lib.stages.knob_search import TEST_METRICS, choose

RESULTS = REPO_ROOT / "results" / "default"
PARTS = RESULTS / "07_measured"

pytestmark = pytest.mark.skipif(
    not (RESULTS / "07_knob_search.json").exists(), reason="no committed default-profile stage-07 results"
)


def _results(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())["results"]


def _part(name: str):
    path = PARTS / f"{name}.json"
    assert path.exists(), f"a committed result row has no measured part {path.name}"
    return json.loads(path.read_text())["value"]


def _same(a, b) -> bool:
    """Equal values, recursively; missing (None / NaN) equals missing."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    missing = [x is None or (isinstance(x, float) and math.isnan(x)) for x in (a, b)]
    return a == b or all(missing)


def _plain(value):
    """What the stage writes: JSON's view of the value (numpy numbers as Python numbers, tuples as lists)."""
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _unchanged(assembled: dict, part: dict, where: str) -> None:
    """Every value the assembled row holds is the part's (the row may leave out run facts such as ``seconds``). A part
    of a size or trial since taken out of the profile may stay in the folder unused."""
    changed = {k: (v, part.get(k)) for k, v in assembled.items() if not _same(v, part.get(k))}
    assert not changed, f"{where}: {changed}"


def test_the_study_rows_are_the_measured_parts_and_the_summary_and_growth_follow_from_them():
    study = _results("07_data_scale")
    rows = study["rows"]
    names = [f"seed{r['seed']}_{r['condition']}_{r['point']}" for r in rows]
    unmeasured = set(names) - {p.stem for p in PARTS.glob("seed*_*.json")}
    assert len(set(names)) == len(names) and not unmeasured, f"rows no committed part measured: {sorted(unmeasured)}"
    for name, row in zip(names, rows):
        _unchanged(row, _part(name), f"07_data_scale.json row {name}")
    assert _same(_plain(summary(rows).reset_index().to_dict(orient="records")), study["summary"])
    assert _same(_plain(growth(rows)), study["growth"])


def test_the_knob_search_choice_tests_and_significance_follow_from_the_measured_parts():
    knobs = _results("07_knob_search")
    for row in knobs["val"]:
        _unchanged(row, _part(f"knob_val_{row['trial']}"), f"val row {row['trial']}")
    assert _same(knobs["reference"], _part("knob_reference"))
    assert choose(knobs["val"], knobs["reference"]["FLOPs budget"])["trial"] == knobs["chosen"]

    chosen = knobs["chosen"]
    files = {"recipe, without control": "recipe_without_control", "recipe, with control": "recipe"}
    files[f"{chosen}, with control"] = chosen
    ranks = {}
    for row in knobs["test"]:
        part = _part(f"knob_test_seed{row['seed']}_{files[row['model']]}")
        _unchanged(row, part["row"], f"test row seed {row['seed']} {row['model']}")
        ranks.setdefault(row["seed"], {})[row["model"]] = np.asarray(part["ranks"])
    for s in knobs["summary"]:
        values = [r for r in knobs["test"] if r["model"] == s["model"]]
        again = {m: mean_std(np.array([r[m] for r in values], dtype=float)) for m in TEST_METRICS}
        assert _same(_plain(again), {m: s[m] for m in TEST_METRICS}), f"summary of {s['model']}"

    paired = compare_conditions(
        {
            k: {
                f"R@{c}": (
                    (v[f"{chosen}, with control"] <= c).astype(float),
                    (v["recipe, with control"] <= c).astype(float),
                )
                for c in (1, 10)
            }
            for k, v in ranks.items()
        }
    )
    assert _same(_plain(paired), knobs["paired"])

    for row in knobs["frontier"]:
        name = "recipe_without_control" if row["model"] == "recipe without control" else row["model"]
        _unchanged(row, _part(f"knob_frontier_{name}"), f"frontier row {row['model']}")
