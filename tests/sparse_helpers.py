"""Helpers shared by tests that build sparse vectors from readable terms."""
import numpy as np
import scipy.sparse as sp

V = 30522  # BERT-uncased WordPiece vocabulary


def vec(tok, weights: dict) -> sp.csr_matrix:
    """(1, V) CSR from {token string: weight}."""
    ids = tok.convert_tokens_to_ids(list(weights))
    assert tok.unk_token_id not in ids
    return sp.csr_matrix((list(weights.values()), ([0] * len(ids), ids)), shape=(1, V), dtype=np.float32)
