"""Inverted-index backends against the exact scipy scorer (DESIGN.md section 6), pruning, persistence, synthetic
data."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from sparse_helpers import random_csr

from lsr_lib.index.latency import benchmark_index, synthetic_collection
from lsr_lib.index.sparse import (
    as_csr,
    load_index,
    load_or_build,
    make_index,
    prune_topk,
    read_meta,
    recall_at_k,
    same_topk_up_to_ties,
    topk_disagreements,
)
from lsr_lib.index.backends import require

K = 10
N_DOCS, VOCAB = 500, 2000


@pytest.fixture(scope="module")
def collection():
    docs = random_csr(N_DOCS, VOCAB, 30, 0)
    docs = sp.vstack([docs[:490], docs[:10]]).tocsr()  # rows 490..499 duplicate rows 0..9: exact score ties
    queries = random_csr(60, VOCAB, 10, 1)
    exact = make_index("scipy").build(docs).search(queries, K)
    return docs, queries, exact


@pytest.fixture(scope="module")
def tied():
    """12 identical documents that all match the query: the top-10 boundary falls inside the tie."""
    row = sp.csr_matrix((np.array([0.5, 0.25], np.float32), np.array([3, 7]), np.array([0, 2])), shape=(1, 50))
    other = sp.csr_matrix((np.array([1.5], np.float32), np.array([3]), np.array([0, 1])), shape=(1, 50))
    docs = sp.vstack([row] * 6 + [other] + [row] * 6).tocsr()  # (13, 50)
    query = sp.csr_matrix((np.array([1.0, 2.0], np.float32), np.array([3, 7]), np.array([0, 2])), shape=(1, 50))
    return docs, query


@pytest.mark.parametrize("kind", ["numba", "numba_blocked", "qdrant_edge"])
@pytest.mark.parametrize("threads", [1, 2])
def test_exact_backend_matches_bruteforce(collection, kind, threads):
    docs, queries, (s_ref, r_ref) = collection
    s, r = make_index(kind).build(docs).search(queries, K, threads=threads)
    assert s.dtype == np.float32 and r.dtype == np.int64 and s.shape == r.shape == (60, K)
    assert same_topk_up_to_ties(s_ref, r_ref, s, r, K, atol=1e-5), topk_disagreements(s_ref, r_ref, s, r, K, 1e-5)


def test_pisa_is_exact_on_quantised_weights(collection):
    docs, queries, _ = collection
    pisa = make_index("pisa").build(docs)
    ref = make_index("scipy").build(pisa.quantise(docs)).search(pisa.quantise(queries), K)
    s, r = pisa.search(queries, K, threads=2)
    assert same_topk_up_to_ties(ref[0] / 100.0**2, ref[1], s, r, K, atol=1e-6)


def test_seismic_recall(collection):
    docs, queries, (_, r_ref) = collection
    seismic = make_index("seismic").build(docs)
    assert seismic.resolved_n_postings() == 10  # max(min_postings, 0.001 x 500)
    _, r = seismic.search(queries, K)
    _, r2 = seismic.search(queries, K, threads=2)  # batch_search answers out of order: mapped back by id
    assert recall_at_k(r, r_ref, K) >= 0.85 and recall_at_k(r2, r_ref, K) >= 0.85


@pytest.mark.parametrize("kind", ["scipy", "numba", "numba_blocked", "qdrant_edge", "pisa"])
def test_tie_at_the_boundary(tied, kind):
    docs, query = tied
    s_ref, r_ref = make_index("scipy").build(docs).search(query, K)
    assert r_ref[0, 0] == 6 and list(r_ref[0, 1:]) == [0, 1, 2, 3, 4, 5, 7, 8, 9]  # ties by ascending row
    s, r = make_index(kind).build(docs).search(query, K)
    assert same_topk_up_to_ties(s_ref, r_ref, s, r, K, atol=1e-6)


@pytest.mark.parametrize("block", [1, 7, 64, 65536, 1 << 30])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_blocked_layout_gives_numbas_exact_scores_and_rows(collection, block, threads):
    """Blocks change where a document's score is summed, not the order of its terms: bitwise equal results, ties
    included."""
    docs, queries, _ = collection
    for k in (1, K, 600):  # k above the candidates: padding
        ref = make_index("numba").build(docs).search(queries, k, threads=threads)
        got = make_index("numba_blocked", block=block).build(docs).search(queries, k, threads=threads)
        assert np.array_equal(ref[1], got[1]) and np.array_equal(ref[0], got[0])


def test_the_blocked_layout_refuses_an_empty_block_and_widens_offsets_for_large_ones(collection):
    with pytest.raises(ValueError, match="block must be >= 1 rows"):
        make_index("numba_blocked", block=0).build(collection[0])
    assert make_index("numba_blocked", block=64).build(collection[0]).bytes_per_posting == 6
    # one block over the collection: an N-long accumulator
    one = make_index("numba_blocked", block=1 << 30).build(collection[0])
    assert one._acc.shape == (N_DOCS,) and one.bytes_per_posting == 6  # 500 rows still fit uint16 offsets
    big, queries = random_csr(70_000, 40, 2, 5), random_csr(5, 40, 3, 6)  # more rows than uint16 offsets hold
    wide = make_index("numba_blocked", block=1 << 30).build(big)
    assert wide.bytes_per_posting == 8 and wide._off.dtype == np.int32
    ref, got = make_index("numba").build(big).search(queries, K), wide.search(queries, K)
    assert np.array_equal(ref[0], got[0]) and np.array_equal(ref[1], got[1])


def test_same_topk_up_to_ties_rules():
    s = np.array([[3.0, 2.0, 1.0, 1.0]], np.float32)
    r = np.array([[7, 5, 1, 2]])
    assert same_topk_up_to_ties(s, r, s, np.array([[7, 5, 2, 1]]), 4)  # order within a tie
    assert same_topk_up_to_ties(s[:, :3], r[:, :3], s[:, :3], np.array([[7, 5, 2]]), 3)  # boundary tie swapped
    assert not same_topk_up_to_ties(s, r, s, np.array([[5, 7, 1, 2]]), 4)  # untied documents swapped
    assert not same_topk_up_to_ties(s, r, s, np.array([[7, 9, 1, 2]]), 4)  # another document above the boundary
    short = np.array([[3.0, 2.0, -np.inf, -np.inf]], np.float32)
    assert not same_topk_up_to_ties(short, np.array([[7, 5, -1, -1]]), s, r, 4)  # fewer results
    assert not same_topk_up_to_ties(s, r, s + np.float32(0.01), r, 4, atol=1e-3)  # scores differ


def test_recall_at_k():
    exact = np.array([[1, 2, 3], [4, -1, -1], [-1, -1, -1]])
    approx = np.array([[3, 9, 1], [4, 5, -1], [1, 2, 3]])
    assert recall_at_k(approx, exact, 3) == pytest.approx((2 / 3 + 1) / 2)  # third query has no exact result


def test_missing_results_are_padded():
    docs = random_csr(20, 100, 5, 3)
    query = sp.csr_matrix(([1.0], [int(np.setdiff1d(np.arange(100), docs.indices)[0])], [0, 1]), shape=(1, 100))
    for kind in ["scipy", "numba", "numba_blocked"]:
        s, r = make_index(kind).build(docs).search(sp.vstack([query, docs[:1]]).tocsr(), 50)
        assert (r[0] == -1).all() and np.isneginf(s[0]).all()
        n_cand = int(((docs @ docs[0].T).toarray() > 0).sum())
        assert (r[1] >= 0).sum() == n_cand and np.isneginf(s[1, n_cand:]).all()


def test_prune_topk_keeps_the_largest():
    m = random_csr(40, 300, 25, 4).tolil()
    m[3, :] = 0  # an empty row
    m = as_csr(m)
    p = prune_topk(m, 7)
    assert np.array_equal(np.diff(p.indptr), np.minimum(np.diff(m.indptr), 7)) and p.has_sorted_indices
    for i in range(m.shape[0]):
        kept = np.sort(p.data[p.indptr[i] : p.indptr[i + 1]])
        assert np.array_equal(kept, np.sort(m.data[m.indptr[i] : m.indptr[i + 1]])[::-1][:7][::-1])
        assert set(p.indices[p.indptr[i] : p.indptr[i + 1]]) <= set(m.indices[m.indptr[i] : m.indptr[i + 1]])


@pytest.mark.parametrize("kind", ["scipy", "numba", "numba_blocked", "seismic", "qdrant_edge", "pisa"])
def test_persistence_round_trip(collection, kind, tmp_path):
    docs, queries, _ = collection
    ids = np.arange(N_DOCS) + 1000
    index = make_index(kind).build(docs, ids)
    s, r = index.search(queries, K)
    index.save(tmp_path / "idx")
    again = load_index(tmp_path / "idx")
    s2, r2 = again.search(queries, K)
    assert type(again) is type(index) and np.array_equal(again.doc_ids, ids)
    assert np.array_equal(r, r2) and np.allclose(s, s2) and again.size_bytes() > 0
    s3, _ = index.search(queries, K)  # still usable after save
    assert np.allclose(s, s3)


def test_load_or_build_rebuilds_when_the_model_changes(collection, tmp_path):
    docs, queries, (s_ref, r_ref) = collection
    first = load_or_build("numba", tmp_path / "img", docs)
    assert not first.from_cache and read_meta(tmp_path / "img")["fingerprint"] == first.fingerprint
    second = load_or_build("numba", tmp_path / "img", docs)
    assert second.from_cache and same_topk_up_to_ties(s_ref, r_ref, *second.search(queries, K), K)
    retrained = docs.copy()
    retrained.data = retrained.data * np.float32(1.5)  # same sparsity pattern, new weights
    third = load_or_build("numba", tmp_path / "img", retrained)
    assert not third.from_cache and np.allclose(third.search(queries, K)[0], s_ref * 1.5, rtol=1e-5)
    tuned = load_or_build("numba", tmp_path / "img", retrained, blocks_per_thread=2)  # a search-time setting
    assert tuned.from_cache and tuned.params["blocks_per_thread"] == 2
    assert not load_or_build("numba", tmp_path / "img", retrained, np.arange(N_DOCS) + 7).from_cache  # new ids


def test_search_time_parameters_do_not_force_a_rebuild(collection, tmp_path):
    docs, queries, (_, r_ref) = collection
    first = load_or_build("seismic", tmp_path / "s", docs, query_cut=5)
    low = recall_at_k(first.search(queries, K)[1], r_ref, K)
    again = load_or_build("seismic", tmp_path / "s", docs, query_cut=40)
    assert again.from_cache and again.params["query_cut"] == 40
    assert recall_at_k(again.search(queries, K)[1], r_ref, K) >= low
    assert not load_or_build("seismic", tmp_path / "s", docs, n_postings=20).from_cache
    with pytest.raises(TypeError, match="not search-time"):
        again.set_search_params(n_postings=5)


def test_unknown_params_and_missing_packages():
    with pytest.raises(TypeError, match="unknown parameters"):
        make_index("numba", n_postings=3)
    with pytest.raises(ImportError, match="pip install some-dist"):
        require("no_such_module_xyz", "some-dist", "the test index")
    code = (
        "import sys, lsr_lib.index.sparse, lsr_lib.index.dense, lsr_lib.index.latency; "
        "assert not {'seismic', 'qdrant_edge', 'pyterrier_pisa', 'faiss', 'numba'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_synthetic_collection_follows_the_source():
    src = random_csr(400, 3000, 40, 5)
    src = sp.vstack([src, random_csr(100, 3000, 120, 6)]).tolil()  # two row-length modes
    src[:, 11] = 1.0  # a term in every document, as learned sparse models produce
    src = as_csr(src)
    syn = synthetic_collection(src, 3000, seed=0, chunk_entries=20_000)  # several chunks
    assert syn.shape == (3000, 3000) and syn.has_canonical_format
    assert syn.getnnz(axis=1).mean() == pytest.approx(src.getnnz(axis=1).mean(), rel=0.10)
    df_src, df_syn = src.getnnz(axis=0) / 500, syn.getnnz(axis=0) / 3000
    assert df_syn[11] > 0.97 and np.corrcoef(df_src, df_syn)[0, 1] > 0.9
    assert syn.data.min() >= src.data.min() and syn.data.max() <= src.data.max()
    assert np.array_equal(
        synthetic_collection(src, 50, seed=1).toarray(), synthetic_collection(src, 50, seed=1).toarray()
    )


def test_benchmark_index_reports_everything(collection):
    docs, queries, (_, r_ref) = collection
    out = benchmark_index("numba", docs, queries, K, exact_rows=r_ref, n_latency=20)
    assert out["recall@10"] == 1.0 and out["size_mb"] > 0 and out["build_s"] > 0
    assert out["latency_p50_ms"] <= out["latency_p99_ms"] and out["qps_1t"] > 0 and out["qps_2t"] > 0


@pytest.mark.parametrize("kind", ["numba", "numba_blocked", "seismic", "faiss_flat"])
def test_nan_vectors_are_refused_not_indexed(kind):
    """A NaN weight used to crash the compiled exact engine (no bounds checks); now it is named."""
    docs = random_csr(30, 100, 5, 4)
    if kind.startswith("faiss"):
        docs = docs.toarray()
        docs[7, 3] = np.nan
    else:
        docs.data[docs.indptr[7]] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN or inf values \(first in row 7\)"):
        make_index(kind).build(docs)
    good = random_csr(30, 100, 5, 4)
    index = make_index("numba").build(good)
    bad_q = good[:2].copy()
    bad_q.data[-1] = np.inf
    with pytest.raises(ValueError, match=r"queries: 1 NaN or inf values \(first in row 1\)"):
        index.search(bad_q, 5)
