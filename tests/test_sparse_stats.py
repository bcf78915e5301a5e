"""FLOPs (co-activation) and non-zeros (DESIGN.md section 3) against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from lsr_lib.metrics.sparse_stats import avg_nonzeros, coactivation_flops, sparse_summary


def _random_sparse(n, v, density, seed):
    rng = np.random.default_rng(seed)
    dense = rng.random((n, v)) * (rng.random((n, v)) < density)
    return dense.astype(np.float32)


def test_flops_equals_average_shared_active_terms():
    q, d = _random_sparse(7, 30, 0.3, 0), _random_sparse(11, 30, 0.2, 1)
    brute = np.mean([[np.sum((q[i] != 0) & (d[j] != 0)) for j in range(len(d))] for i in range(len(q))])
    assert coactivation_flops(sp.csr_matrix(q), sp.csr_matrix(d)) == pytest.approx(brute)


def test_explicit_zeros_do_not_count():
    m = sp.csr_matrix((np.array([0.0, 1.0], np.float32), np.array([0, 1]), np.array([0, 2])), shape=(1, 3))
    assert avg_nonzeros(m) == 1.0
    assert coactivation_flops(m, m) == 1.0


def test_avg_nonzeros_and_summary():
    q, d = _random_sparse(5, 20, 0.4, 2), _random_sparse(6, 20, 0.1, 3)
    assert avg_nonzeros(sp.csr_matrix(q)) == pytest.approx((q != 0).sum(1).mean())
    s = sparse_summary(sp.csr_matrix(q), sp.csr_matrix(d))
    assert s["n_queries"] == 5 and s["n_documents"] == 6 and s["vocab_size"] == 20
    assert s["avg_nonzeros_document"] == pytest.approx((d != 0).sum(1).mean())
    assert s["max_df_share_query"] == pytest.approx((q != 0).sum(0).max() / 5)
    assert s["flops"] == pytest.approx(coactivation_flops(sp.csr_matrix(q), sp.csr_matrix(d)))


def test_vocabulary_mismatch_is_an_error():
    with pytest.raises(ValueError, match="vocabulary"):
        coactivation_flops(sp.csr_matrix((2, 5)), sp.csr_matrix((2, 6)))
