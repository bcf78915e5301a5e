"""Stage 04 glue: approximate-engine sweeps and the recall-matched comparison."""

import json

import numpy as np
import pytest
import scipy.sparse as sp

from lsr_lib.config.profiles import load_config
from lsr_lib.stages.retrieve_with_inverted_index import recall_matched, search_sweep
from lsr_lib.stages.retrieve_with_inverted_index import brute_force_topk
from test_pruning import _tiny_col


def rows():
    base = {"n_docs": 1000, "condition": "with_control"}
    return [
        {**base, "kind": "numba", "latency_p50_ms": 5.0, "recall@10": None},
        {**base, "kind": "seismic np=0.001N qc=20 hf=0.7", "latency_p50_ms": 1.0, "recall@10": 0.80},
        {**base, "kind": "seismic np=0.01N qc=20 hf=0.7", "latency_p50_ms": 3.0, "recall@10": 0.96},
        {**base, "kind": "seismic np=0.01N qc=60 hf=1.0", "latency_p50_ms": 4.0, "recall@10": 0.995},
        {**base, "condition": "dense teacher", "kind": "faiss_hnsw ef=16", "latency_p50_ms": 0.2, "recall@10": 0.7},
        {**base, "condition": "dense teacher", "kind": "faiss_hnsw ef=64", "latency_p50_ms": 0.5, "recall@10": 0.92},
    ]


def test_recall_matched_picks_fastest_setting_reaching_each_target():
    out = {(r["engine"], r["target_recall"]): r for r in recall_matched(rows(), (0.9, 0.95, 0.99))}
    assert out[("numba", 0.99)]["latency_p50_ms"] == 5.0  # exact counts as recall 1
    assert out[("seismic", 0.9)]["setting"] == "seismic np=0.01N qc=20 hf=0.7"  # 0.001N never reaches 0.9
    assert out[("seismic", 0.99)]["setting"] == "seismic np=0.01N qc=60 hf=1.0"
    assert out[("faiss_hnsw", 0.9)]["latency_p50_ms"] == 0.5
    miss = out[("faiss_hnsw", 0.95)]
    assert miss["setting"] is None and miss["latency_p50_ms"] is None and miss["best_recall"] == pytest.approx(0.92)


def test_hnsw_sweep_recall_grows_with_ef_search():
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((3000, 32)).astype(np.float32)
    queries = rng.standard_normal((40, 32)).astype(np.float32)
    exact = brute_force_topk(queries, docs, 10)[1]
    cfg = load_config("smoke", {"index": {"hnsw_ef_search": [4, 256], "latency_queries": 10}})
    out = search_sweep(cfg, "faiss_hnsw", docs, queries, exact, {"condition": "dense teacher", "n_docs": 3000})
    assert [r["kind"] for r in out] == ["faiss_hnsw ef=4", "faiss_hnsw ef=256"]
    assert out[0]["build_s"] == out[1]["build_s"]  # one build, searched twice
    assert out[1]["recall@10"] > out[0]["recall@10"] and out[1]["recall@10"] >= 0.95


def test_kannolo_is_built_with_the_configured_ef_construction_and_labelled_by_it(monkeypatch):
    """``index.kannolo_ef_construction`` reaches kANNolo's build; the label names it when it is not the default 200."""
    pytest.importorskip("kannolo")
    import lsr_lib.index.latency as latency

    builds, real = [], latency.measure_build
    monkeypatch.setattr(latency, "measure_build", lambda kind, docs, **p: builds.append(p) or real(kind, docs, **p))
    docs = sp.random(400, 300, density=0.05, format="csr", random_state=0, dtype=np.float32)
    queries = sp.random(20, 300, density=0.05, format="csr", random_state=1, dtype=np.float32)
    exact = brute_force_topk(queries, docs, 10)[1]
    for efc, label in ((24, "kannolo m=32 efc=24 ef=64"), (200, "kannolo m=32 ef=64")):
        over = {"kannolo_ef_search": [64], "kannolo_ef_construction": efc, "latency_queries": 5}
        cfg = load_config("smoke", {"index": over})
        out = search_sweep(cfg, "kannolo", docs, queries, exact, {"condition": "with_control", "n_docs": 400})
        assert [r["kind"] for r in out] == [label]
        assert builds[-1] == {"m": 32, "ef_construction": efc}


def test_hnsw_is_built_once_per_ef_construction_and_a_better_built_graph_finds_more():
    """``index.hnsw_ef_construction``: one HNSW build each, labelled only when swept; at a small efSearch the graph
    built with the larger efConstruction recalls at least as much."""
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((3000, 32)).astype(np.float32)
    queries = rng.standard_normal((40, 32)).astype(np.float32)
    exact = brute_force_topk(queries, docs, 10)[1]
    over = {"hnsw_ef_search": [8], "hnsw_ef_construction": [8, 200], "latency_queries": 10}
    cfg = load_config("smoke", {"index": over})
    out = search_sweep(cfg, "faiss_hnsw", docs, queries, exact, {"condition": "dense teacher", "n_docs": 3000})
    assert [r["kind"] for r in out] == ["faiss_hnsw efc=8 ef=8", "faiss_hnsw efc=200 ef=8"]
    assert out[0]["build_s"] != out[1]["build_s"]  # two builds
    assert out[1]["recall@10"] >= out[0]["recall@10"]
    with pytest.raises(Exception, match="hnsw_ef_construction"):
        load_config("smoke", {"index": {"hnsw_ef_construction": [0]}})


def test_the_test_split_parts_are_reused_when_only_a_scale_setting_changes(tmp_path, monkeypatch):
    """A new scale size or engine list (``SCALE_ONLY``) reuses stage 04's measured test-split parts; a setting they
    read (the HNSW efSearch sweep) measures them again."""
    from lsr_lib.stages import retrieve_with_inverted_index as stage

    calls = []

    def run(over):
        cfg = load_config("smoke", {"index": over})
        monkeypatch.setattr(type(cfg), "cache_dir", property(lambda self: tmp_path))
        return stage.measured(cfg, {"code": {"a": "1"}, "config": "ignored"}, "part", lambda: calls.append(1) or 7)

    assert run({}) == 7 and len(calls) == 1
    assert run({"scale_sizes": [123], "scale_backends": ["numba"]}) == 7 and len(calls) == 1  # reused
    assert run({"hnsw_ef_search": [5, 7]}) == 7 and len(calls) == 2  # measured again


def test_every_scale_only_setting_is_one_the_scale_benchmark_is_keyed_by():
    """``SCALE_ONLY`` settings are left out of the measured test-split parts' key; each must still key the scale rows
    (``SCALE_SETTINGS``) and name a real index setting, or a change to it would be reused silently somewhere."""
    import dataclasses

    from lsr_lib.config.profiles import IndexConfig
    from lsr_lib.stages.retrieve_with_inverted_index import SCALE_ONLY, SCALE_SETTINGS

    fields = {f.name for f in dataclasses.fields(IndexConfig)}
    assert set(SCALE_ONLY) <= set(SCALE_SETTINGS) <= fields, set(SCALE_ONLY) - set(SCALE_SETTINGS)


def test_search_sweep_rejects_engines_without_a_sweep():
    cfg = load_config("smoke")
    with pytest.raises(ValueError, match="no search sweep"):
        search_sweep(cfg, "numba", None, None, None, {})


def _tiny_vectors(rng, n=60, v=300):
    def sparse(rows):
        return sp.csr_matrix((rng.random((rows, v)) * (rng.random((rows, v)) < 0.05)).astype(np.float32))

    return {"with_control": {"images": sparse(n), "texts": sparse(n)}}


def _tiny_models(dense_dim, vocab, conditions=("with_control",)):
    import torch

    from lsr_lib.sparse.head import D2SModel

    g = torch.Generator().manual_seed(0)
    parts = {"weight": torch.randn(vocab, 8, generator=g), "bias": torch.zeros(vocab)}
    return {c: D2SModel.build(dense_dim, parts, g).eval() for c in conditions}


def test_scale_benchmark_encodes_the_dense_documents_and_labels_the_generator_rows():
    """Model-encoded: the sparse documents are the dense documents through the model's image side (the same
    collection in both representations); independent terms: a second, labelled row set on the generator's."""
    import torch

    from lsr_lib.stages import retrieve_with_inverted_index as stage
    from lsr_lib.train.d2s import encode_sparse

    rng = np.random.default_rng(0)
    vectors = _tiny_vectors(rng)
    dense = (rng.standard_normal((60, 16)).astype(np.float32), rng.standard_normal((60, 16)).astype(np.float32))
    models = _tiny_models(16, 300)
    cfg = load_config(
        "smoke",
        {
            "index": {
                "scale_collections": ["model_encoded", "independent_terms"],
                "scale_sizes": [150],
                "scale_backends": ["numba", "faiss_flat"],
                "scale_pruning": [],
                "latency_queries": 5,
                "qps_queries": 10,
            }
        },
    )
    seen = []
    real = stage.efficiency_table
    stage.efficiency_table = lambda *a, **k: seen.append((a, k)) or real(*a, **k)
    try:
        rows = stage.scale_benchmark(cfg, None, vectors, dense, progress=False, models=models)
    finally:
        stage.efficiency_table = real
    (enc_args, _), (ind_args, ind_kw) = seen
    enc_docs, ind_docs = enc_args[4], ind_args[4]
    want = encode_sparse(models["with_control"], torch.from_numpy(enc_docs["dense teacher"]), "image")
    # the same 150 documents, sparse and dense (batches of another size: float sums in another order)
    np.testing.assert_allclose(enc_docs["with_control"].toarray(), want.toarray(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(enc_docs["dense teacher"], stage.dense_like(dense[0], 150, seed=cfg.seed))
    assert set(ind_docs) == {"with_control · independent terms", "dense teacher"} and not ind_kw["dense_rows"]
    got = {(r["condition"], r["collection"], r["kind"]) for r in rows}
    assert got == {
        ("with_control", "150 model-encoded", "numba"),
        ("dense teacher", "150 model-encoded", "faiss_flat"),
        ("with_control · independent terms", "150 independent-term", "numba"),
    }
    # chunked encoding equals one pass
    one = stage.encode_documents(models["with_control"], enc_docs["dense teacher"], 64, chunk=1000, progress=False)
    two = stage.encode_documents(models["with_control"], enc_docs["dense teacher"], 64, chunk=40, progress=False)
    np.testing.assert_allclose(one.toarray(), two.toarray(), rtol=1e-5, atol=1e-6)
    assert one.shape == (150, 300) and one.nnz > 0

    # index.independent_terms_max_docs: the generator's rows only up to that size
    capped = load_config(
        "smoke",
        {
            "index": {
                "scale_collections": ["model_encoded", "independent_terms"],
                "scale_sizes": [100, 150],
                "independent_terms_max_docs": 100,
                "scale_backends": ["numba"],
                "scale_pruning": [],
                "latency_queries": 5,
                "qps_queries": 10,
            }
        },
    )
    rows = stage.scale_benchmark(capped, None, vectors, dense, progress=False, models=models)
    assert sorted({(r["condition"], r["collection"]) for r in rows}) == [
        ("with_control", "100 model-encoded"),
        ("with_control", "150 model-encoded"),
        ("with_control · independent terms", "100 independent-term"),
    ]


def test_scale_collections_are_checked():
    from lsr_lib.config.profiles import ConfigError

    with pytest.raises(ConfigError, match="scale_collections"):
        load_config("smoke", {"index": {"scale_collections": ["gaussian"]}})


def _small_scale_cfg(tmp_path, monkeypatch):
    """Smoke with a 200-document scale benchmark through two engines, results under ``tmp_path``."""
    cfg = load_config(
        "smoke",
        {
            "index": {
                "scale_sizes": [200],
                "scale_backends": ["numba", "faiss_flat"],
                "scale_pruning": [],
                "latency_queries": 5,
                "qps_queries": 10,
            }
        },
    )
    monkeypatch.setattr(type(cfg), "results_dir", property(lambda self: tmp_path / "results"))
    return cfg


def test_scale_rows_measure_then_reuse_only_while_inputs_are_current(tmp_path, monkeypatch, capsys):
    from lsr_lib.stages.retrieve_with_inverted_index import SCALE_RESULT, scale_rows

    rng = np.random.default_rng(0)
    cfg = _small_scale_cfg(tmp_path, monkeypatch)
    vectors = _tiny_vectors(rng)
    dense = (rng.standard_normal((60, 16)).astype(np.float32), rng.standard_normal((60, 16)).astype(np.float32))
    inputs = {"stage": "04", "vectors": "a"}
    bench_cfg = load_config("default")
    assert bench_cfg.scale_benchmark == "bench" and cfg.scale_benchmark == "stage"
    # nothing measured yet and not asked to measure: empty, and the message says how to measure it
    assert scale_rows(cfg, None, vectors, dense, inputs, run=False, progress=False) == []
    assert "make bench" in capsys.readouterr().out
    # smoke: scale_benchmark "stage" measures
    rows = scale_rows(cfg, None, vectors, dense, inputs, run=None, progress=False, models=_tiny_models(16, 300))
    assert {r["n_docs"] for r in rows} == {200} and {r["kind"] for r in rows} == {"numba", "faiss_flat"}
    assert (tmp_path / "results" / f"{SCALE_RESULT}.json").exists()
    assert scale_rows(cfg, None, vectors, dense, inputs, run=False, progress=False) == rows  # read back while current
    assert "inputs current" in capsys.readouterr().out
    # other inputs (say, retrained vectors): the old latencies are not shown as current
    assert scale_rows(cfg, None, vectors, dense, {**inputs, "vectors": "b"}, run=False, progress=False) == []
    assert "other inputs" in capsys.readouterr().out
    # a test-split engine or pruning list is not a scale input; a scale setting is
    from dataclasses import replace

    other_test_split = replace(cfg, index=replace(cfg.index, exact_backends=("numba",), pruning=("none",)))
    assert scale_rows(other_test_split, None, vectors, dense, inputs, run=False, progress=False) == rows
    other_sizes = replace(cfg, index=replace(cfg.index, scale_sizes=(300,)))
    assert scale_rows(other_sizes, None, vectors, dense, inputs, run=False, progress=False) == []


def test_an_interrupted_scale_benchmark_resumes_at_the_first_job_not_yet_measured(tmp_path, monkeypatch, capsys):
    """`make bench` takes 1-2 hours: each (collection, condition, engine) job is kept once measured, so a rerun after
    an interruption measures only what is left, and a new engine in the list only that engine."""
    from dataclasses import replace

    import lsr_lib.index.latency as latency
    from lsr_lib.stages.retrieve_with_inverted_index import SCALE_PARTS_DIR, scale_rows

    rng = np.random.default_rng(0)
    cfg = _small_scale_cfg(tmp_path, monkeypatch)
    vectors, models = _tiny_vectors(rng), _tiny_models(16, 300)
    dense = (rng.standard_normal((60, 16)).astype(np.float32), rng.standard_normal((60, 16)).astype(np.float32))
    inputs = {"stage": "04", "vectors": "a"}
    real, timed = latency.benchmark_index, []

    def interrupted_after_two(engine, *a, **kw):
        if len(timed) == 2:
            raise KeyboardInterrupt
        timed.append(engine)
        return real(engine, *a, **kw)

    monkeypatch.setattr(latency, "benchmark_index", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        scale_rows(cfg, None, vectors, dense, inputs, run=True, progress=False, models=models)
    assert len(list((tmp_path / "results" / SCALE_PARTS_DIR).glob("*.json"))) == 2
    timed.clear()
    monkeypatch.setattr(
        latency, "benchmark_index", lambda engine, *a, **kw: timed.append(engine) or real(engine, *a, **kw)
    )
    capsys.readouterr()
    rows = scale_rows(cfg, None, vectors, dense, inputs, run=True, progress=True, models=models)
    assert len(timed) == 1 and len(rows) == 3  # with_control, without_control numba; dense faiss_flat
    out = capsys.readouterr().out  # said up front, as a 1M run takes hours
    assert "benchmark (200 model-encoded): 2 of 2 jobs measured already (read back), 0 to measure" in out
    assert "benchmark (200 independent-term): 0 of 1 jobs measured already (read back), 1 to measure" in out
    assert all(r["machine"] for r in rows)
    # a new engine in the list: the jobs measured stay, only the new one is measured
    timed.clear()
    more = replace(cfg, index=replace(cfg.index, scale_backends=("numba", "numba_blocked", "faiss_flat")))
    again = scale_rows(more, None, vectors, dense, inputs, run=True, progress=False, models=models)
    assert sorted(timed) == ["numba_blocked", "numba_blocked"] and len(again) == 5
    assert [r for r in again if r["kind"] != "numba_blocked"] == rows
    # other vectors (a retrained model): every sparse job is measured again; the dense teacher's reads none of them
    timed.clear()
    scale_rows(cfg, None, vectors, dense, {**inputs, "vectors": "b"}, run=True, progress=False, models=models)
    assert sorted(timed) == ["numba", "numba"]


def test_scale_benchmark_setting_is_checked():
    from lsr_lib.config.profiles import ConfigError

    with pytest.raises(ConfigError, match="scale_benchmark"):
        load_config("smoke", {"scale_benchmark": "later"})


def test_bmp_and_kannolo_are_swept_and_measured_against_exact():
    from lsr_lib.stages.retrieve_with_inverted_index import efficiency_table

    rng = np.random.default_rng(1)
    vectors = _tiny_vectors(rng, n=80)
    dense = (rng.standard_normal((80, 16)).astype(np.float32), rng.standard_normal((80, 16)).astype(np.float32))
    cfg = load_config(
        "smoke",
        {
            "index": {
                "exact_backends": ["numba"],
                "approx_backends": ["bmp", "kannolo"],
                "dense_backends": [],
                "bmp_search": [[1.0, 1.0], [0.5, 0.5]],
                "kannolo_ef_search": [4, 200],
                "latency_queries": 5,
                "qps_queries": 20,
            }
        },
    )
    rows = {r["kind"]: r for r in efficiency_table(cfg, _tiny_col(80), vectors, dense, progress=False)}
    assert {
        "numba",
        "bmp b=32 a=1 beta=1",
        "bmp b=32 a=0.5 beta=0.5",
        "kannolo m=32 ef=4",
        "kannolo m=32 ef=200",
    } <= set(rows)
    assert rows["bmp b=32 a=1 beta=1"]["recall@10"] >= rows["bmp b=32 a=0.5 beta=0.5"]["recall@10"]
    assert (
        rows["kannolo m=32 ef=200"]["recall@10"] >= rows["kannolo m=32 ef=4"]["recall@10"]
        and rows["kannolo m=32 ef=200"]["recall@10"] > 0.8
    )
    assert np.isnan(rows["numba"].get("recall@10", np.nan)) or rows["numba"]["recall@10"] == 1.0


def test_postings_per_query_sums_the_query_terms_document_frequencies():
    from lsr_lib.index.latency import postings_per_query, read_bandwidth_gbs

    docs = sp.csr_matrix(np.array([[1, 0, 2, 0], [0, 0, 3, 1], [5, 0, 1, 0]], dtype=np.float32))  # df = [2, 0, 3, 1]
    queries = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 1]], dtype=np.float32))
    assert postings_per_query(docs, queries) == (5 + 0 + 1) / 3  # the empty query reads nothing
    assert postings_per_query(docs, queries, 1) == 5
    assert read_bandwidth_gbs(1 << 22, repeats=2) > 0


def test_bmp_sweep_builds_once_per_document_order_and_the_safe_setting_stays_exact():
    """``index.bmp_reorder``: one BMP build per order, labelled; at alpha = beta = 1 both orders are exact on the
    quantised weights, the clustered one through its own build."""
    from lsr_lib.config.profiles import BMP_REORDERINGS, ConfigError
    from lsr_lib.index.reorder import REORDERINGS

    assert BMP_REORDERINGS == REORDERINGS
    docs = sp.random(600, 300, density=0.05, random_state=1, format="csr", dtype=np.float32)
    queries = sp.random(30, 300, density=0.05, random_state=2, format="csr", dtype=np.float32)
    exact = brute_force_topk(queries, docs, 10)[1]
    cfg = load_config(
        "smoke",
        {
            "index": {
                "bmp_bsize": [16],
                "bmp_reorder": ["none", "cluster"],
                "bmp_search": [[1.0, 1.0]],
                "latency_queries": 5,
            }
        },
    )
    out = search_sweep(cfg, "bmp", docs, queries, exact, {"condition": "with_control", "n_docs": 600})
    assert [r["kind"] for r in out] == ["bmp b=16 a=1 beta=1", "bmp b=16 cluster a=1 beta=1"]
    # exact on BMP's 8-bit weights (tests/test_learned_engines.py): the float brute force differs on near-ties only
    assert all(r["recall@10"] >= 0.95 for r in out)
    assert out[0]["recall@10"] == pytest.approx(out[1]["recall@10"], abs=0.02)
    assert out[0]["build_s"] != out[1]["build_s"]  # two builds
    with pytest.raises(ConfigError, match="bmp_reorder"):
        load_config("smoke", {"index": {"bmp_reorder": ["graph"]}})


def _count_measured(monkeypatch):
    """[(condition, engine)] of every scale job measured from now on (not read back)."""
    import lsr_lib.index.latency as latency
    from lsr_lib.stages import retrieve_with_inverted_index as stage

    real_bench, real_sweep, seen = latency.benchmark_index, stage.search_sweep, []

    def bench(engine, docs, *a, **kw):
        seen.append(engine)
        return real_bench(engine, docs, *a, **kw)

    def sweep(cfg, kind, *a, **kw):
        seen.append(kind)
        return real_sweep(cfg, kind, *a, **kw)

    monkeypatch.setattr(latency, "benchmark_index", bench)
    monkeypatch.setattr(stage, "search_sweep", sweep)
    return seen


def test_a_scale_job_is_measured_again_only_when_its_own_model_or_engine_settings_change(tmp_path, monkeypatch):
    """A job's record is its own model's vectors and its engine's settings: a retrained model measures only that
    model's jobs again, a new HNSW setting only the HNSW jobs (not hours of other engines at 1M)."""
    from dataclasses import replace

    from lsr_lib.stages.retrieve_with_inverted_index import engine_settings, scale_rows

    hnsw = {"latency_queries", "qps_queries", "hnsw_max_docs", "hnsw_ef_search", "hnsw_ef_construction"}
    assert set(engine_settings("faiss_hnsw")) == hnsw
    assert engine_settings("numba-pruned d32+q16") == engine_settings("numba_blocked") == engine_settings("faiss_flat")
    assert "kannolo_ef_search" in engine_settings("kannolo") and "milvus_queries" in engine_settings("milvus")

    rng = np.random.default_rng(0)
    cfg = _small_scale_cfg(tmp_path, monkeypatch)
    ix = replace(cfg.index, scale_backends=("numba", "faiss_flat", "faiss_hnsw"), scale_collections=("model_encoded",))
    cfg = replace(cfg, index=ix)
    vectors = {**_tiny_vectors(rng), "without_control": _tiny_vectors(rng)["with_control"]}
    models = _tiny_models(16, 300, ("with_control", "without_control"))
    dense = (rng.standard_normal((60, 16)).astype(np.float32), rng.standard_normal((60, 16)).astype(np.float32))
    inputs = {"stage": "04", "dense": "d", "vectors": {"with_control": "a", "without_control": "b"}}
    seen = _count_measured(monkeypatch)
    first = scale_rows(cfg, None, vectors, dense, inputs, run=True, progress=False, models=models)
    assert sorted(seen) == ["faiss_flat", "faiss_hnsw", "numba", "numba"]
    seen.clear()
    assert scale_rows(cfg, None, vectors, dense, inputs, run=True, progress=False, models=models) == first
    assert seen == []
    # stage 02 retrained the uncontrolled model: its job only
    retrained = {**inputs, "vectors": {"with_control": "a", "without_control": "c"}}
    scale_rows(cfg, None, vectors, dense, retrained, run=True, progress=False, models=models)
    assert seen == ["numba"]
    seen.clear()
    # a new efSearch list: the HNSW job only
    more_ef = replace(cfg, index=replace(cfg.index, hnsw_ef_search=(8, 16)))
    scale_rows(more_ef, None, vectors, dense, retrained, run=True, progress=False, models=models)
    assert seen == ["faiss_hnsw"]
    seen.clear()
    # the dense documents (the teacher's test vectors, which every collection is drawn from): every job
    scale_rows(more_ef, None, vectors, dense, {**retrained, "dense": "e"}, run=True, progress=False, models=models)
    assert len(seen) == 4


def test_a_resumed_scale_benchmark_encodes_only_the_documents_of_jobs_it_measures(tmp_path, monkeypatch):
    from lsr_lib.stages import retrieve_with_inverted_index as stage

    rng = np.random.default_rng(0)
    cfg = _small_scale_cfg(tmp_path, monkeypatch)
    vectors = {**_tiny_vectors(rng), "without_control": _tiny_vectors(rng)["with_control"]}
    models = _tiny_models(16, 300, ("with_control", "without_control"))
    dense = (rng.standard_normal((60, 16)).astype(np.float32), rng.standard_normal((60, 16)).astype(np.float32))
    inputs = {"stage": "04", "dense": "d", "vectors": {"with_control": "a", "without_control": "b"}}
    real, encoded = stage.encode_documents, []
    monkeypatch.setattr(stage, "encode_documents", lambda m, d, *a, **kw: encoded.append(m) or real(m, d, *a, **kw))
    stage.scale_rows(cfg, None, vectors, dense, inputs, run=True, progress=False, models=models)
    assert len(encoded) == 2
    encoded.clear()
    stage.scale_rows(
        cfg,
        None,
        vectors,
        dense,
        {**inputs, "vectors": {**inputs["vectors"], "without_control": "c"}},
        run=True,
        progress=False,
        models=models,
    )
    assert encoded == [models["without_control"]]  # the with-control jobs are read back: its documents never made


def test_on_demand_values_are_made_once_and_released():
    from lsr_lib.stages.retrieve_with_inverted_index import OnDemand

    made = []
    d = OnDemand({"a": lambda: made.append("a") or 1}, {"b": 2})
    assert list(d) == ["b", "a"] and len(d) == 2 and "a" in d and made == []
    assert d.get("a") == 1 and d["a"] == 1 and made == ["a"]
    assert d.get("c", 3) == 3
    d.release("a")
    d.release("b")  # given, not made: kept
    assert d["b"] == 2 and d["a"] == 1 and made == ["a", "a"]
    with pytest.raises(KeyError):
        d["c"]


def _knob_result(cfg, chosen):
    from lsr_lib.artifacts.catalog import result_path

    path = result_path(cfg, "07_knob_search")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"inputs_fingerprint": "f07", "results": {"chosen": chosen}}))


def test_the_scale_benchmark_adds_stage_07s_chosen_model_when_its_result_is_current(tmp_path, monkeypatch, capsys):
    """Issue 29: `make bench` measures the knob search's chosen model beside stage 02's, on the model-encoded
    collections; none when stage 07 has not chosen one or chose the recipe."""
    from lsr_lib.stages import retrieve_with_inverted_index as stage

    cfg = _small_scale_cfg(tmp_path, monkeypatch)
    assert stage.stage07_choice(cfg) == {} and "make data-scale" in capsys.readouterr().out
    _knob_result(cfg, "recipe")
    assert stage.stage07_choice(cfg) == {}
    _knob_result(cfg, "epochs6")
    monkeypatch.setattr(type(cfg), "cache_dir", property(lambda self: tmp_path / "cache"))
    ((label, (record, load)),) = stage.stage07_choice(cfg).items()
    assert label == "stage 07 choice epochs6" and record == {"trial": "epochs6", "stage07_inputs": "f07"}
    with pytest.raises(FileNotFoundError, match="make data-scale"):
        load()  # no run on this machine: said when a job of it must be measured, not before

    rng = np.random.default_rng(0)
    vectors, models = _tiny_vectors(rng), _tiny_models(16, 300)
    chosen = _tiny_models(16, 300, ("x",))["x"]
    dense = (rng.standard_normal((60, 16)).astype(np.float32), rng.standard_normal((60, 16)).astype(np.float32))
    cfg2 = load_config(
        "smoke",
        {
            "index": {
                "scale_collections": ["model_encoded", "independent_terms"],
                "scale_sizes": [150],
                "scale_backends": ["numba"],
                "scale_pruning": [],
                "latency_queries": 5,
                "qps_queries": 10,
            }
        },
    )
    rows = stage.scale_benchmark(cfg2, None, vectors, dense, False, models, extra={label: lambda: chosen})
    assert sorted({(r["condition"], r["collection"]) for r in rows}) == [
        ("stage 07 choice epochs6", "150 model-encoded"),
        ("with_control", "150 model-encoded"),
        ("with_control · independent terms", "150 independent-term"),
    ]
    # its queries are the test captions through the chosen model (as stage 02 writes its conditions' vectors)
    want = stage.test_vectors(chosen, dense, cfg2.d2s.eval_batch_size)
    got = next(r for r in rows if r["condition"] == label)
    from lsr_lib.metrics.sparse_stats import sparse_summary

    docs = stage.encode_documents(chosen, stage.dense_like(dense[0], 150, seed=cfg2.seed), 64, progress=False)
    assert got["FLOPs"] == pytest.approx(sparse_summary(want["texts"][:10], docs)["flops"], rel=1e-5)
