"""faiss dense baselines (DESIGN.md section 6) against numpy brute force; HNSW recall; persistence."""

from __future__ import annotations

import numpy as np
import pytest

from lsr_lib.index.dense import numpy_topk_inner_product
from lsr_lib.index.sparse import load_index, load_or_build, make_index, recall_at_k, same_topk_up_to_ties

K = 10


def _unit_vectors(n, d, seed):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def vectors():
    docs = _unit_vectors(2000, 32, 0)
    docs[1990:] = docs[:10]  # duplicates: exact ties
    return docs, _unit_vectors(50, 32, 1)


@pytest.mark.parametrize("threads", [1, 2])
def test_flat_equals_numpy_brute_force(vectors, threads):
    docs, queries = vectors
    s_ref, r_ref = numpy_topk_inner_product(queries, docs, K)
    s, r = make_index("faiss_flat").build(docs).search(queries, K, threads=threads)
    assert s.dtype == np.float32 and r.dtype == np.int64 and s.shape == (50, K)
    assert same_topk_up_to_ties(s_ref, r_ref, s, r, K, atol=1e-5)


def test_hnsw_recall(vectors):
    docs, queries = vectors
    _, r_ref = numpy_topk_inner_product(queries, docs, K)
    hnsw = make_index("faiss_hnsw").build(docs)
    assert hnsw._index.hnsw.efSearch == 64 and hnsw.params["M"] == 32
    assert recall_at_k(hnsw.search(queries, K)[1], r_ref, K) >= 0.9


def test_k_larger_than_collection_is_padded():
    docs = _unit_vectors(5, 8, 2)
    s, r = make_index("faiss_flat").build(docs).search(docs[:2], 8)
    assert (r[:, 5:] == -1).all() and np.isneginf(s[:, 5:]).all() and (r[:, :5] >= 0).all()


@pytest.mark.parametrize("kind", ["faiss_flat", "faiss_hnsw"])
def test_persistence_and_fingerprint(vectors, kind, tmp_path):
    docs, queries = vectors
    index = load_or_build(kind, tmp_path / kind, docs)
    again = load_or_build(kind, tmp_path / kind, docs)
    assert not index.from_cache and again.from_cache
    assert again._index.__class__ is index._index.__class__ and again.size_bytes() == index.size_bytes()
    (s, r), (s2, r2) = index.search(queries, K), again.search(queries, K)
    assert np.array_equal(r, r2) and np.allclose(s, s2)
    if kind == "faiss_hnsw":
        assert load_index(tmp_path / kind)._index.hnsw.efSearch == 64  # search setting survives reload
    assert not load_or_build(kind, tmp_path / kind, docs[::-1].copy()).from_cache
