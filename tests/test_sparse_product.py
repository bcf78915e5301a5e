"""The exact score matrix (lsr_lib/metrics/sparse_product.py): the same scores by either product, the sparse one
kept for sparse vectors, the dense one taken for vectors with thousands of terms (barely trained models)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from lsr_lib.metrics import sparse_product
from lsr_lib.metrics.sparse_product import score_matrix


def _vectors(n, density, seed, vocab=3000):
    return sp.random(n, vocab, density=density, format="csr", random_state=seed, dtype=np.float32)


@pytest.mark.parametrize("density", [0.003, 0.5])
def test_both_products_give_the_sparse_products_scores(density, monkeypatch):
    q, d = _vectors(300, density, 0), _vectors(200, density, 1)
    want = (q @ d.T).toarray()
    got = score_matrix(q, d)
    assert got.dtype == want.dtype and got.shape == (300, 200)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(sparse_product, "CHUNK_BYTES", 4 * 3000 * 7)  # chunks of 7 rows: the last one partial
    np.testing.assert_allclose(score_matrix(q, d), want, rtol=1e-5, atol=1e-5)


def test_sparse_vectors_keep_the_sparse_product_and_dense_ish_ones_take_blas(monkeypatch):
    calls = []
    real = sp.csr_matrix.toarray
    monkeypatch.setattr(sp.csr_matrix, "toarray", lambda self, *a, **k: calls.append(self.shape) or real(self, *a, **k))
    score_matrix(_vectors(300, 0.003, 0), _vectors(200, 0.003, 1))
    assert calls == [(300, 200)]  # the product's result only: the byte-identical path of trained vectors
    calls.clear()
    score_matrix(_vectors(300, 0.5, 0), _vectors(200, 0.5, 1))
    assert (300, 200) not in calls  # the documents and query chunks densified instead


def test_a_vocabulary_mismatch_is_named():
    with pytest.raises(ValueError, match="not the same vocabulary"):
        score_matrix(_vectors(3, 0.1, 0, vocab=10), _vectors(3, 0.1, 1, vocab=11))
