"""Milvus (milvus-lite here) behind the sparse index interface: exact against brute force, persistence, edge queries."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sparse_helpers import random_csr

from lsr_lib.index.sparse import (
    load_index,
    load_or_build,
    make_index,
    same_topk_up_to_ties,
    topk_disagreements,
)

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

K, N_DOCS, VOCAB, N_QUERIES = 10, 300, 2000, 15


@pytest.fixture(scope="module")
def collection():
    docs = random_csr(N_DOCS, VOCAB, 25, 20)
    # duplicates (ties) and an empty document
    docs = sp.vstack([docs[:290], docs[:10], sp.csr_matrix((1, VOCAB), dtype=np.float32)]).tocsr()
    queries = random_csr(N_QUERIES, VOCAB, 40, 21)
    return docs, queries, make_index("scipy").build(docs).search(queries, K)


@pytest.fixture(scope="module")
def milvus(collection):
    return make_index("milvus").build(collection[0])


def test_exact_mode_returns_brute_force_top_k(collection, milvus):
    _, queries, (ref_s, ref_r) = collection
    s, r = milvus.search(queries, K)
    assert s.dtype == np.float32 and r.dtype == np.int64 and s.shape == (N_QUERIES, K)
    assert same_topk_up_to_ties(ref_s, ref_r, s, r, K, atol=1e-5), topk_disagreements(ref_s, ref_r, s, r, K, 1e-5)
    assert milvus.size_bytes() > 0 and "milvus-lite" in milvus.backend_version()
    s2, r2 = make_index("milvus", algorithm="DAAT_WAND").build(collection[0]).search(queries, K)
    assert same_topk_up_to_ties(ref_s, ref_r, s2, r2, K, atol=1e-5)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        make_index("milvus", algorithm="BLOCK_MAX")


def test_saved_index_reopens_without_reinserting(collection, milvus, tmp_path):
    docs, queries, (ref_s, ref_r) = collection
    milvus.save(tmp_path / "m")
    assert (tmp_path / "m" / "milvus.db").is_dir()
    again = load_index(tmp_path / "m")
    s, r = again.search(queries, K)
    assert same_topk_up_to_ties(ref_s, ref_r, s, r, K, atol=1e-5)
    built = load_or_build("milvus", tmp_path / "m2", docs)
    assert not built.from_cache and load_or_build("milvus", tmp_path / "m2", docs).from_cache


def test_empty_and_unmatched_queries_return_nothing(collection, milvus):
    docs, _, _ = collection
    empty = sp.csr_matrix((2, VOCAB), dtype=np.float32)
    s, r = milvus.search(empty, K)
    assert (r == -1).all() and np.isneginf(s).all()
    unused = np.setdiff1d(np.arange(VOCAB), docs.indices)[0]
    q = sp.csr_matrix((np.array([1.0], np.float32), np.array([unused]), np.array([0, 1])), shape=(1, VOCAB))
    s, r = milvus.search(q, K)
    assert (r == -1).all()
