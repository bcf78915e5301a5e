"""Index-side pruning and quantisation (issue 16): the spec grammar, each measure, and its place in stage 04."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from lsr_lib.config.profiles import load_config
from lsr_lib.config.typed import ConfigError
from lsr_lib.data.collection import ImageCaptionSet
from lsr_lib.index.pruning import Pruning, apply, cap_posting_lists, parse, quantise
from sparse_helpers import random_csr


def test_parse_reads_every_part_and_names_a_bad_one():
    assert parse("d32+q16+df0.1+u8") == Pruning(doc_k=32, query_k=16, df_share=0.1, bits=8)
    assert parse("none") == Pruning() and parse("df1") == Pruning(df_share=1.0)
    assert (
        parse("u8").bytes_per_posting == 5
        and parse("none").bytes_per_posting == 8
        and parse("u4").bytes_per_posting == 4.5
    )
    for bad, says in [
        ("d32+x", "unknown part 'x'"),
        ("d0", "out of range"),
        ("df1.5", "unknown part"),
        ("u0", "out of range"),
        ("d8+d16", "repeats"),
    ]:
        with pytest.raises(ValueError, match=says):
            parse(bad)
    with pytest.raises(
        ConfigError, match=r"index.scale_pruning: must be a list of pruning specs \(pruning spec 'q8\+df2'"
    ):
        load_config("smoke", {"index": {"scale_pruning": ["q8+df2"]}})


def test_cap_posting_lists_keeps_the_largest_weights_of_long_lists_only():
    m = random_csr(200, 40, 12, seed=0).tolil()
    m[:, 3] = np.linspace(0.1, 2.0, 200, dtype=np.float32)[:, None]  # a term in every document
    m = m.tocsr()
    capped = cap_posting_lists(m, 0.1).tocsc()
    df_before, df_after = np.diff(sp.csc_matrix(m).indptr), np.diff(capped.indptr)
    assert df_after.max() <= 20 and (df_after == np.minimum(df_before, 20)).all()
    kept = capped[:, 3].toarray().ravel()
    assert (np.flatnonzero(kept) == np.arange(180, 200)).all()  # the 20 largest weights of the dense term
    short = df_before <= 20
    assert (capped[:, short] != sp.csc_matrix(m)[:, short]).nnz == 0  # short lists untouched
    assert cap_posting_lists(m, 1.0).nnz == m.nnz


def test_quantise_keeps_every_posting_within_half_a_step():
    m = random_csr(50, 300, 20, seed=1)
    q = quantise(m, 4)
    step = m.data.max() / 15
    assert q.nnz == m.nnz and (q.indices == m.indices).all()
    rounded = m.data >= step / 2  # the rest would round to 0 and are kept at level 1
    assert len(np.unique(q.data)) <= 15 and np.abs(q.data - m.data)[rounded].max() <= step / 2 + 1e-6
    assert (~rounded).any() and np.allclose(q.data[~rounded], step)
    with pytest.raises(ValueError, match="non-negative"):
        quantise(-m, 8)


def test_apply_prunes_documents_and_queries_separately():
    docs, queries = random_csr(30, 500, 60, seed=2), random_csr(10, 500, 40, seed=3)
    d, q = apply("d16+q8", docs, queries)
    assert np.diff(d.indptr).max() == 16 and np.diff(q.indptr).max() == 8
    same_d, same_q = apply("none", docs, queries)
    assert (same_d != docs).nnz == 0 and (same_q != queries).nnz == 0


def _tiny_col(n: int) -> ImageCaptionSet:
    ids = [f"i{j}" for j in range(n)]
    images = pd.DataFrame({"image_id": ids, "split": "test", "path": "", "group_id": ids})
    captions = pd.DataFrame({"text_id": [f"t{j}" for j in range(n)], "image_id": ids, "split": "test", "text": "x"})
    return ImageCaptionSet("tiny", images, captions)


def test_stage_04_rows_carry_effectiveness_pruning_and_recall_against_unpruned_exact():
    from lsr_lib.stages.retrieve_with_inverted_index import efficiency_table, pruning_sweep

    n = 80
    images = random_csr(n, 400, 40, seed=4)
    texts = images.copy()  # each caption is its image: an exact engine finds every pair
    texts.data = texts.data + np.random.default_rng(0).random(texts.nnz, dtype=np.float32) * 0.1
    vectors = {"with_control": {"images": images, "texts": texts}}
    rng = np.random.default_rng(5)
    dense = (rng.standard_normal((n, 8)).astype(np.float32), rng.standard_normal((n, 8)).astype(np.float32))
    cfg = load_config(
        "smoke",
        {
            "index": {
                "exact_backends": ["numba"],
                "approx_backends": [],
                "dense_backends": ["faiss_flat"],
                "latency_queries": 5,
                "qps_queries": n,
                "pruning": ["none", "d4+q2", "u2"],
                "scale_pruning": ["d4+q2"],
                "scale_backends": ["numba", "faiss_flat"],
            }
        },
    )
    col = _tiny_col(n)
    test_rows = {(r["condition"], r["kind"]): r for r in efficiency_table(cfg, col, vectors, dense, progress=False)}
    assert test_rows["with_control", "numba"]["T->I R@10"] == 100.0
    assert 0 <= test_rows["dense teacher", "faiss_flat"]["T->I R@10"] < 50  # random dense vectors
    prune = {r["pruning"]: r for r in pruning_sweep(cfg, col, vectors)}
    assert (
        prune["none"]["recall@10"] == 1.0
        and prune["d4+q2"]["recall@10"] < 1.0
        and prune["d4+q2"]["FLOPs"] < prune["none"]["FLOPs"]
    )
    assert (
        prune["u2"]["index_mb"] == pytest.approx(images.nnz * 4.25 / 1e6)
        and prune["u2"]["postings_per_query"] == prune["none"]["postings_per_query"]
    )
    scale = efficiency_table(
        cfg,
        col,
        vectors,
        dense,
        docs_override={"with_control": images, "dense teacher": dense[0]},
        size_label="tiny",
        progress=False,
    )
    kinds = {r["kind"]: r for r in scale if r["condition"] == "with_control"}
    assert set(kinds) == {"numba", "numba-pruned d4+q2"}
    assert "recall@10" not in kinds["numba"] and 0 < kinds["numba-pruned d4+q2"]["recall@10"] < 1
    assert kinds["numba-pruned d4+q2"]["postings_per_query"] < kinds["numba"]["postings_per_query"]


def test_exact_engines_share_one_effectiveness_pass_per_condition(monkeypatch):
    """Every test caption through every exact engine gives the same R@10 (they return the exact top-k): computed once
    per condition (milvus-lite took minutes for it on the default); approximate engines are judged each."""
    from lsr_lib.stages import retrieve_with_inverted_index as stage

    n = 60
    images = random_csr(n, 300, 30, seed=4)
    vectors = {"with_control": {"images": images, "texts": images.copy()}}
    dense = (np.eye(n, 8, dtype=np.float32), np.eye(n, 8, dtype=np.float32))
    cfg = load_config(
        "smoke",
        {
            "index": {
                "exact_backends": ["numba", "numba_blocked", "scipy"],
                "approx_backends": ["seismic"],
                "seismic_search": [[10, 0.5], [20, 0.7]],
                "dense_backends": [],
                "latency_queries": 5,
                "qps_queries": n,
            }
        },
    )
    calls = []
    real = stage.text_to_image_metrics
    monkeypatch.setattr(stage, "text_to_image_metrics", lambda *a: calls.append(1) or real(*a))
    rows = stage.efficiency_table(cfg, _tiny_col(n), vectors, dense, progress=False)
    exact = [r for r in rows if r["kind"] in ("numba", "numba_blocked", "scipy")]
    assert len(exact) == 3 and len({r["T->I R@10"] for r in exact}) == 1 and exact[0]["T->I R@10"] == 100.0
    assert len(calls) == 1 + 2  # one for the three exact engines, one per Seismic setting
