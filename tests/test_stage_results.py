"""Each stage module builds its result file's content; the keys are what the expected-values check and the report
read."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from lsr_lib.config.profiles import load_config
from lsr_lib.data.collection import ImageCaptionSet
from lsr_lib.stages import analyze_sparse_vectors as s03
from lsr_lib.stages import cache_dense_features as s01
from lsr_lib.stages import data_scale_study as s07
from lsr_lib.stages import explore_sparse_vectors as s06
from lsr_lib.stages import image_suggestion as s05
from lsr_lib.stages import retrieve_with_inverted_index as s04
from lsr_lib.stages import train_sparse_heads as s02

METRICS = {"R@1": 10.0, "R@5": 30.0, "R@10": 50.0, "MRR@10": 20.0}


@pytest.fixture(scope="module")
def cfg():
    return load_config("smoke")


def _col():
    images = pd.DataFrame(
        [("a", "test", "", "a"), ("b", "test", "", "b")], columns=["image_id", "split", "path", "group_id"]
    )
    caps = pd.DataFrame(
        [("1", "a", "test", "red apple"), ("2", "b", "test", "blue car")],
        columns=["text_id", "image_id", "split", "text"],
    )
    return ImageCaptionSet("t", images, caps)


def _sparse(r1: float, flops: float) -> dict:
    return {
        "text_to_image": {**METRICS, "R@1": r1},
        "image_to_text": METRICS,
        "sparsity_text_to_image": {"flops": flops, "avg_nonzeros_query": 3.0, "avg_nonzeros_document": 5.0},
    }


def test_stage01_results(cfg):
    res = s01.stage_results(cfg, _col(), {"test": {}}, {})
    # smoke is the emoji set
    assert set(res) == {"counts", "encoder", "dense_dir", "baseline", "robustness_test", "split_sha256"}
    assert (
        res["counts"]["test"]["images"] == 2
        and res["encoder"] == cfg.encoder.kind
        and not res["dense_dir"].startswith("/")
    )


def test_stage02_checks_include_flops_with_over_without_control(cfg):
    test = {
        "dense teacher": {"text_to_image": {**METRICS, "R@1": 40.0}, "image_to_text": METRICS},
        "with_control": _sparse(30.0, 2.0),
        "without_control": _sparse(32.0, 8.0),
    }
    checks = s02.claim_checks(test)
    assert checks == {
        "with control: T->I R@1 as % of teacher": 75.0,
        "FLOPs with / without control": 0.25,
        "T->I R@1 without - with control (points)": 2.0,
    }
    assert s02.claim_checks({k: test[k] for k in ("dense teacher", "with_control")}) == {}
    assert np.isnan(s02.claim_checks({**test, "without_control": _sparse(32.0, 0.0)})["FLOPs with / without control"])


def test_stage02_rows_and_results(cfg):
    assert set(s02.metrics_row({"text_to_image": METRICS, "image_to_text": METRICS})) == {
        f"{d} {m}" for d in ("T->I", "I->T") for m in METRICS
    }
    assert {"FLOPs", "nnz caption", "nnz image"} <= set(s02.metrics_row(_sparse(1.0, 2.0)))
    runs = {
        c: {"best_epoch": 2, "steps": 9, "best_val": {"flops": 1.0}, "history": [{"epoch": 1}]}
        for c in cfg.d2s_conditions
    }
    res = s02.stage_results(cfg, runs, {"dense teacher": {}}, {"FLOPs with / without control": 0.5})
    assert set(res) == {"conditions", "test", "checks"} and res["checks"]["FLOPs with / without control"] == 0.5
    assert set(res["conditions"]) == set(cfg.d2s_conditions)
    assert set(res["conditions"]["without_control"]) == {"config", "best_epoch", "steps", "best_val", "history"}
    assert res["conditions"]["without_control"]["config"]["expansion_p0"] == 0.0


def _deviation(values: dict) -> pd.DataFrame:
    return pd.DataFrame({c: [v, v] for c, v in values.items()})


def test_stage03_findings_and_results(cfg):
    conds = ("with_control", "without_control")
    coact = pd.DataFrame({"FLOPs": [1.0, 2.0]}, index=list(conds))
    text_dev = {c: _deviation({k: 0.1 * (i + 1) for k in s03.TEXT_COLUMNS}) for i, c in enumerate(conds)}
    image_dev = {c: _deviation({k: 0.2 * (i + 1) for k in s03.IMAGE_COLUMNS}) for i, c in enumerate(conds)}
    agreement = pd.DataFrame({"pearson": [0.5]}, index=["R@1"])
    faith = {
        c: {"text_to_image": {"tau": {"mean_tau": 0.3 * (i + 1), "n_defined": 2}, "agreement": agreement}}
        for i, c in enumerate(conds)
    }
    found = s03.findings(coact, text_dev, image_dev, faith)
    assert found["FLOPs"].startswith("lower (1 vs 2") and len(found) == 5
    assert s03.findings(coact, {"with_control": text_dev["with_control"]}, image_dev, faith) == {}
    sweep = {c: {t: 0.5 for t in cfg.evaluation.unrelated_threshold_sweep} for c in conds}
    res = s03.stage_results(
        cfg, coact, {c: pd.DataFrame({"term": ["a"]}) for c in conds}, text_dev, image_dev, sweep, faith, found, {}
    )
    assert set(res) == {
        "coactivation",
        "top_coactivated_terms",
        "text_deviation",
        "image_deviation",
        "unrelated_threshold",
        "unrelated_threshold_sweep",
        "faithfulness",
        "findings",
        "control_effect",
    }
    assert res["unrelated_threshold"] == cfg.evaluation.unrelated_threshold == 0.2
    assert list(res["unrelated_threshold_sweep"]["with_control"]) == ["0.1", "0.15", "0.2", "0.25", "0.3"]
    assert "unrelated_expansion_share (mean)" in res["text_deviation"]["with_control"]
    assert res["faithfulness"]["with_control"]["text_to_image"]["agreement"] == {"R@1": {"pearson": 0.5}}


def test_stage03_settings_live_in_the_config():
    from lsr_lib.config.typed import ConfigError

    ev = load_config("smoke").evaluation
    assert (ev.deviation_top_k, ev.unrelated_threshold, ev.faithfulness_top_k) == (10, 0.2, 10)
    assert load_config("smoke", {"evaluation": {"unrelated_threshold": 0.3}}).evaluation.unrelated_threshold == 0.3
    for bad in ({"unrelated_threshold": 1.5}, {"deviation_top_k": 0}, {"unrelated_threshold_sweep": []}, {"top_k": 10}):
        with pytest.raises(ConfigError):
            load_config("smoke", {"evaluation": bad})


def test_stage04_results(monkeypatch):
    frame = pd.DataFrame([{"condition": "with_control", "backend": "numba", "R@1": 1.0}]).set_index(
        ["condition", "backend"]
    )
    res = s04.retrieval_results(frame, frame, True, frame)
    assert set(res) == {"metrics", "checks", "exact_engines_match_brute_force", "pruning"}
    assert res["metrics"] == [{"condition": "with_control", "backend": "numba", "R@1": 1.0}]
    rows = pd.DataFrame([{"condition": "with_control", "kind": "numba", "latency_p50_ms": 0.1}])
    monkeypatch.setattr("lsr_lib.index.latency.read_bandwidth_gbs", lambda: 12.5)
    machine = s04.measuring_machine()
    assert machine["read_bandwidth_gbs_1thread"] == 12.5 and machine["cpu_count"] >= 1
    eff = s04.efficiency_results(rows, rows, rows, {**machine, "read_bandwidth_gbs_1thread": 7.5})
    assert set(eff) == {"machine", "test_collection", "scale", "recall_matched"}
    # the machine given (the one that measured the rows), not one measured while writing
    assert eff["machine"]["read_bandwidth_gbs_1thread"] == 7.5 and eff["scale"][0]["kind"] == "numba"


def test_stage05_results():
    class Data:
        def counts(self):
            return {"test": {"queries": 2}}

    runs = {"M1": {"history": [{"epoch": 1}], "best": {"epoch": 1}}}
    res = s05.stage_results(
        Data(),
        {"M1": {"nDCG@10": 0.5}},
        [{"finding": "x", "holds": True}],
        runs,
        pd.DataFrame({"term": ["a"]}, index=pd.Index([0], name="example")),
    )
    assert set(res) == {"counts", "results", "findings", "history", "best_epoch", "examples"}
    assert res["best_epoch"] == {"M1": 1} and res["examples"] == [{"example": 0, "term": "a"}]


def test_stage06_cosine_summary_and_results():
    a = sp.csr_matrix(np.array([[1.0, 0.0], [1.0, 1.0]]))
    b = sp.csr_matrix(np.array([[2.0, 0.0], [1.0, 0.0]]))
    np.testing.assert_allclose(s06.cosine_rows(a, b), [1.0, 1 / np.sqrt(2)])
    view = {
        "summary": {"model": "m", "query": "red apple"},
        "terms": pd.DataFrame({"term": ["red", "apple"]}),
        "images": pd.DataFrame({"image_id": ["a", "b"], "relevant": [True, False]}),
    }
    base = type("Base", (), {"captions": ["red apple"]})()
    summary = s06.view_summary({("m", "red apple"): view, ("m", "dog"): view}, base, 8)
    assert summary["own image in top-8"].tolist() == [True, None] and summary["top terms"].iloc[0] == "red, apple"
    res = s06.stage_results(["red apple"], {"m": 1.0}, summary)
    assert set(res) == {"queries", "fresh_vs_stored_min_cosine", "views"} and len(res["views"]) == 2


def test_stage07_results(monkeypatch, cfg):
    rows = [
        {
            "seed": k,
            "condition": "with_control",
            "point": p,
            "relative_size": f,
            "pairs": int(100 * f),
            "T->I R@1": 10.0 * f,
            "T->I R@10": 20.0 * f,
            "retention R@1": 0.5 * f,
            "retention R@10": 0.6 * f,
            "FLOPs": 2.0,
            "nnz caption": 3.0,
            "nnz image": 4.0,
        }
        for k in (0, 1)
        for p, f in (("0.5", 0.5), ("1", 1.0))
    ]
    table = s07.summary(rows)
    res = s07.stage_results(rows, table, {(0, "with_control"): True})
    assert set(res) == {"rows", "summary", "growth", "stage02_reproduced"}
    assert (
        res["stage02_reproduced"] == {"seed 0 with_control": True} and res["growth"]["with_control"]["largest"] == "1"
    )
    stage02 = {"results": {"test": {"with_control": {"text_to_image": {"R@1": 10.0}}}}}
    monkeypatch.setattr(s07, "read_result", lambda c, name: stage02)
    assert s07.stage02_reproduced(cfg, pd.DataFrame(rows)) == {(0, "with_control"): True, (1, "with_control"): True}
    assert s07.stage02_reproduced(cfg, pd.DataFrame()) == {}
