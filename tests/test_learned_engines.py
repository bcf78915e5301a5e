"""BMP and kANNolo behind the sparse index interface: exactness / recall against brute force, persistence, edge
queries."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.sparse as sp
from sparse_helpers import random_csr

from lsr_lib.index.sparse import (
    load_index,
    load_or_build,
    make_index,
    recall_at_k,
    same_topk_up_to_ties,
    topk_disagreements,
)

K = 10
N_DOCS, VOCAB, N_QUERIES = 400, 3000, 20


@pytest.fixture(scope="module")
def collection():
    docs = random_csr(N_DOCS, VOCAB, 30, 10)
    docs = sp.vstack([docs[:390], docs[:10]]).tocsr()  # rows 390..399 duplicate rows 0..9: exact score ties
    queries = random_csr(N_QUERIES, VOCAB, 10, 11)
    exact = make_index("scipy").build(docs).search(queries, K)
    return docs, queries, exact


def _bmp_reference(bmp, docs, queries, k=K):
    """Brute force on the integers BMP scores, converted to BMP's float scale."""
    qq, factor = bmp.quantise_queries(queries)
    s, r = make_index("scipy").build(bmp.quantise(docs)).search(qq, k)
    return s / (bmp.params["scale"] * factor[:, None]).astype(np.float32), r


@pytest.mark.parametrize("bsize", [4, 32])
def test_bmp_safe_setting_is_exact_on_quantised_weights(collection, bsize):
    # BMP scores integers only (documents round(w * 100), queries ceil(32 w / max w)), and at
    # alpha = beta = 1 its pruning is safe for those integers: it must return the brute-force top-k
    # of the same integers (up to ties, which integers make common). Against the float scores it
    # is not exact: quantisation reorders close documents, so recall@10 there is below 1.
    docs, queries, _ = collection
    bmp = make_index("bmp", bsize=bsize).build(docs)
    ref_s, ref_r = _bmp_reference(bmp, docs, queries)
    s, r = bmp.search(queries, K)
    assert s.dtype == np.float32 and r.dtype == np.int64 and s.shape == r.shape == (N_QUERIES, K)
    assert same_topk_up_to_ties(ref_s, ref_r, s, r, K, atol=1e-5), topk_disagreements(ref_s, ref_r, s, r, K, 1e-5)


def test_bmp_reordered_documents_stay_exact_and_keep_their_rows(collection):
    """Clustered document order changes which documents share a block, never a score or a row."""
    from lsr_lib.index.reorder import apply_reordering, cluster_order

    docs, queries, _ = collection
    order = cluster_order(docs, cluster_size=20)
    assert sorted(order.tolist()) == list(range(N_DOCS)) and not np.array_equal(order, np.arange(N_DOCS))
    assert np.array_equal(apply_reordering("none", docs), np.arange(N_DOCS))
    with pytest.raises(ValueError, match="unknown document reordering 'bp'"):
        apply_reordering("bp", docs)
    bmp = make_index("bmp", bsize=8, reorder="cluster", reorder_cluster_size=20).build(docs)
    ref_s, ref_r = _bmp_reference(bmp, docs, queries)
    s, r = bmp.search(queries, K)
    assert same_topk_up_to_ties(ref_s, ref_r, s, r, K, atol=1e-5), topk_disagreements(ref_s, ref_r, s, r, K, 1e-5)


def test_cluster_order_groups_documents_that_share_terms():
    """Four topics of 40 terms each (documents draw 10 terms from their topic, among 4,000), interleaved: as given,
    the topic changes at every step; after reordering, at a few cluster boundaries only."""
    from lsr_lib.index.reorder import cluster_order

    rng = np.random.default_rng(0)
    topic = np.arange(400) % 4  # interleaved
    rows = [rng.choice(40, 10, replace=False) + 1000 * t for t in topic]
    docs = sp.csr_matrix(
        (rng.random(4000).astype(np.float32) + 0.1, np.concatenate(rows), np.arange(0, 4001, 10)), shape=(400, 4000)
    )

    def changes(order):
        return int((np.diff(topic[order]) != 0).sum())

    assert changes(np.arange(400)) == 399
    assert changes(cluster_order(docs, cluster_size=100)) <= 12  # 3 boundaries and a few misassigned documents


def test_bmp_approximate_settings_lose_recall(collection):
    docs, queries, _ = collection
    bmp = make_index("bmp").build(docs)
    _, ref_r = _bmp_reference(bmp, docs, queries)

    def recall(**search):
        return recall_at_k(bmp.set_search_params(**search).search(queries, K)[1], ref_r, K)

    safe, mild = recall(alpha=1.0, beta=1.0), recall(alpha=0.9, beta=1.0)
    low_alpha, low_beta, both = recall(alpha=0.5, beta=1.0), recall(alpha=1.0, beta=0.5), recall(alpha=0.5, beta=0.5)
    assert safe >= 0.99 and mild <= safe
    assert max(low_alpha, low_beta) < safe - 0.05 and both <= min(low_alpha, low_beta) + 0.02  # each reaches BMP


def _one_term_query(term, n_cols):
    return sp.csr_matrix((np.array([1.0], np.float32), np.array([term]), np.array([0, 1])), shape=(1, n_cols))


def test_bmp_short_and_tied_candidate_lists(collection):
    """Cases where bmp 0.2.8 alone skips its last candidate block or drops results tied with its start threshold."""
    docs, _, _ = collection
    few = docs.tolil()
    few[:, VOCAB - 2 :] = 0
    few[[5, 150, 385], VOCAB - 2] = np.array([[0.3], [0.6], [0.9]], np.float32)  # 3 documents in 3 blocks
    few[:12, VOCAB - 1] = 0.5  # 12 equal impacts: the 10th is BMP's threshold, every document ties with it
    few = few.tocsr()
    bmp = make_index("bmp").build(few)
    for term, n_expected in [(VOCAB - 2, 3), (VOCAB - 1, K)]:
        q = _one_term_query(term, VOCAB)
        s, r = bmp.search(q, K)
        assert (r >= 0).sum() == n_expected
        assert same_topk_up_to_ties(*_bmp_reference(bmp, few, q), s, r, K, atol=1e-6)
    small = few[:20]  # a single block
    one_block = make_index("bmp").build(small)
    q = sp.csr_matrix(few[0])
    assert same_topk_up_to_ties(*_bmp_reference(one_block, small, q), *one_block.search(q, K), K, atol=1e-6)
    assert (one_block.search(q, K)[1] >= 0).sum() == K


def test_bmp_saturates_large_weights():
    docs = sp.csr_matrix(np.array([[3.0, 0.5], [1.0, 0.0]], np.float32))
    with pytest.warns(UserWarning, match="saturated"):
        bmp = make_index("bmp").build(docs)
    assert bmp.quantise(docs).toarray().tolist() == [[255.0, 50.0], [100.0, 0.0]]
    s, r = bmp.search(sp.csr_matrix(np.array([[1.0, 0.0]], np.float32)), 3)
    assert r[0].tolist() == [0, 1, -1] and np.allclose(s[0, :2], [2.55, 1.0]) and np.isneginf(s[0, 2])


def test_kannolo_recall_grows_with_ef_search(collection):
    docs, queries, (_, r_ref) = collection
    index = make_index("kannolo", m=16, ef_construction=100).build(docs)
    low = recall_at_k(index.set_search_params(ef_search=10).search(queries, K)[1], r_ref, K)
    s, r = index.set_search_params(ef_search=200).search(queries, K)
    high = recall_at_k(r, r_ref, K)
    assert high >= 0.9 and low <= high - 0.05  # more candidates, more recall; ef_search reaches kANNolo
    assert np.array_equal(index.search(queries, K, threads=2)[1], r)
    valid = r >= 0
    exact = np.take_along_axis((queries @ docs.T).toarray(), np.where(valid, r, 0), axis=1)
    assert np.allclose(s[valid], exact[valid], rtol=2e-3, atol=1e-3)  # float16 values: close to the float scores


@pytest.mark.parametrize(
    "kind, build, search", [("bmp", {"bsize": 16}, {"alpha": 0.8}), ("kannolo", {"m": 8}, {"ef_search": 30})]
)
def test_persistence_and_reuse(collection, tmp_path, kind, build, search):
    docs, queries, _ = collection
    ids = np.arange(N_DOCS) + 1000
    index = make_index(kind, **build).build(docs, ids)
    s, r = index.search(queries, K)
    index.save(tmp_path / "idx")
    again = load_index(tmp_path / "idx")
    s2, r2 = again.search(queries, K)
    assert type(again) is type(index) and np.array_equal(again.doc_ids, ids)
    assert np.array_equal(r, r2) and np.array_equal(s, s2) and again.size_bytes() > 0
    assert np.array_equal(index.search(queries, K)[1], r)  # still usable after save

    first = load_or_build(kind, tmp_path / "cached", docs, ids, **build)
    assert not first.from_cache
    second = load_or_build(kind, tmp_path / "cached", docs, ids, **build)
    assert second.from_cache and np.array_equal(second.search(queries, K)[1], r)
    tuned = load_or_build(kind, tmp_path / "cached", docs, ids, **build, **search)  # search-time only
    assert tuned.from_cache and all(tuned.params[key] == v for key, v in search.items())
    rebuilt_params = {"bsize": 8} if kind == "bmp" else {"m": 12}
    assert not load_or_build(kind, tmp_path / "cached", docs, ids, **rebuilt_params).from_cache
    with pytest.raises(TypeError, match="not search-time"):
        tuned.set_search_params(**rebuilt_params)


@pytest.mark.parametrize("kind, params", [("bmp", {}), ("kannolo", {"ef_search": 500})])
def test_unseen_terms_and_empty_queries(kind, params):
    docs = random_csr(200, 500, 20, 12).tolil()
    docs[:, 490:] = 0  # terms 490..499 never occur
    docs[:, 7] = 0
    docs[[3, 80, 190], 7] = np.array([[0.2], [0.4], [0.8]], np.float32)  # term 7 in 3 documents
    docs = docs.tocsr()
    queries = sp.csr_matrix(
        (np.array([1.0, 1.0, 0.5], np.float32), np.array([499, 7, 495]), np.array([0, 1, 1, 3])), shape=(3, 500)
    )  # unseen term (the last column); empty; term 7 plus an unseen term
    s, r = make_index(kind, **params).build(docs).search(queries, K)
    assert (r[:2] == -1).all() and np.isneginf(s[:2]).all()
    assert r[2, :3].tolist() == [190, 80, 3] and (r[2, 3:] == -1).all() and np.isneginf(s[2, 3:]).all()
    assert np.allclose(s[2, :3], [0.8, 0.4, 0.2], rtol=0.05)  # BMP: 32 query levels, kANNolo: float16


@pytest.mark.parametrize("kind, dist", [("bmp", "bmp"), ("kannolo", "kannolo")])
def test_missing_package_names_the_distribution(monkeypatch, kind, dist):
    monkeypatch.setitem(sys.modules, dist, None)  # import fails as if not installed
    with pytest.raises(ImportError, match=f"pip install {dist}"):
        make_index(kind)
