"""Sparsity and co-activation statistics of sparse vectors (DESIGN.md section 3, "FLOPs").

FLOPs (co-activation) is the expected number of terms active in both a query and a document,
over all query-document pairs: ``sum_v df_q(v) * df_d(v) / (N_q * N_d)``, with ``df(v)`` the
number of vectors in which term ``v`` is non-zero. It is the average number of posting-list
multiplications an exhaustive term-at-a-time inverted-index search does per pair; a few terms
active in almost every vector drive it up. Explicit zeros stored in a CSR matrix do not count.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _csr(x) -> sp.csr_matrix:
    """A CSR copy of ``x`` (scipy sparse or dense 2-D array) without explicit zeros."""
    m = sp.csr_matrix(x, dtype=np.float32, copy=True)
    m.eliminate_zeros()
    return m


def document_frequency(x) -> np.ndarray:
    """(V,) int64: in how many rows each term is non-zero."""
    m = _csr(x)
    return np.bincount(m.indices, minlength=m.shape[1]).astype(np.int64)


def flops_from_df(df_q: np.ndarray, df_d: np.ndarray, n_q: int, n_d: int) -> float:
    """``sum_v df_q(v) * df_d(v) / (n_q * n_d)`` from document frequencies."""
    if n_q == 0 or n_d == 0:
        return 0.0
    return float(np.dot(np.asarray(df_q, np.float64), np.asarray(df_d, np.float64)) / (n_q * n_d))


def coactivation_flops(q_csr, d_csr) -> float:
    """Expected number of terms active in both a query and a document (N_q, V), (N_d, V) -> float."""
    if q_csr.shape[1] != d_csr.shape[1]:
        raise ValueError(f"query vocabulary {q_csr.shape[1]} != document vocabulary {d_csr.shape[1]}")
    return flops_from_df(document_frequency(q_csr), document_frequency(d_csr), q_csr.shape[0], d_csr.shape[0])


def avg_nonzeros(x) -> float:
    """Average number of non-zero terms per row."""
    m = _csr(x)
    return float(m.nnz / m.shape[0]) if m.shape[0] else 0.0


def per_query_flops(q_csr, d_csr) -> np.ndarray:
    """(N_q,) expected postings a query touches per document: ``sum_{v in q} df_d(v) / n_d``; its mean is
    :func:`coactivation_flops`."""
    qm, dm = _csr(q_csr), _csr(d_csr)
    if qm.shape[1] != dm.shape[1]:
        raise ValueError(f"query vocabulary {qm.shape[1]} != document vocabulary {dm.shape[1]}")
    share = document_frequency(dm).astype(np.float64) / max(dm.shape[0], 1)  # (V,)
    active = qm.copy()
    active.data = (active.data != 0).astype(np.float64)
    return np.asarray(active @ share).ravel()


def sparse_summary(q, d) -> dict:
    """FLOPs, non-zeros per vector and term-usage statistics of queries ``q`` and documents ``d``."""
    qm, dm = _csr(q), _csr(d)
    df_q, df_d = document_frequency(qm), document_frequency(dm)
    nnz_q, nnz_d = np.diff(qm.indptr), np.diff(dm.indptr)
    out = {
        "n_queries": int(qm.shape[0]),
        "n_documents": int(dm.shape[0]),
        "vocab_size": int(qm.shape[1]),
        "flops": flops_from_df(df_q, df_d, qm.shape[0], dm.shape[0]),
    }
    for side, m, df, nnz in (("query", qm, df_q, nnz_q), ("document", dm, df_d, nnz_d)):
        n = max(m.shape[0], 1)
        out[f"avg_nonzeros_{side}"] = float(nnz.mean()) if len(nnz) else 0.0
        out[f"median_nonzeros_{side}"] = float(np.median(nnz)) if len(nnz) else 0.0
        out[f"empty_vectors_{side}"] = int((nnz == 0).sum())
        out[f"active_terms_{side}"] = int((df > 0).sum())  # terms used by at least one vector
        out[f"max_df_share_{side}"] = float(df.max() / n) if len(df) else 0.0  # the most co-activated term
    return out
