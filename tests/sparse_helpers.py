"""Helpers shared by tests that build sparse vectors from readable terms."""

import numpy as np
import scipy.sparse as sp

V = 30522  # BERT-uncased WordPiece vocabulary


def vec(tok, weights: dict) -> sp.csr_matrix:
    """(1, V) CSR from {token string: weight}."""
    ids = tok.convert_tokens_to_ids(list(weights))
    assert tok.unk_token_id not in ids
    return sp.csr_matrix((list(weights.values()), ([0] * len(ids), ids)), shape=(1, V), dtype=np.float32)


def random_csr(n: int, v: int, nnz: int, seed) -> sp.csr_matrix:
    """(n, v) CSR float32 with about ``nnz`` non-zeros per row, weights in (0.01, 1.01]: positive like LSR weights."""
    rng = np.random.default_rng(seed)
    m = sp.random(n, v, density=nnz / v, format="csr", dtype=np.float32, random_state=rng)
    m.data[:] = rng.random(m.nnz, dtype=np.float32) + np.float32(0.01)
    return m
