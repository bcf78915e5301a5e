"""The exact score matrix of two sparse vector sets, by whichever product costs less.

``txt @ img.T`` through scipy's sparse-sparse product costs about ``sum_t df_txt(t) * df_img(t)`` scalar
operations, which is cheap for trained learned-sparse vectors (tens of terms each) but not for a barely
trained model whose vectors hold thousands of terms (the data-scale study's smallest training sets: after 15
steps the L1 has not yet thinned them). Then a dense product over the terms both sides use, in row chunks
through BLAS, is orders of magnitude faster. Both give the same scores up to float32 summation order.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

# BLAS multiply-adds per scipy sparse-product multiply-add, roughly, on a CPU (a conservative ratio: the dense
# product is chosen only when it is clearly cheaper, so trained vectors keep the sparse product and its numbers)
DENSE_SPEEDUP = 50
CHUNK_BYTES = 256 * 2**20  # one dense row chunk of the queries


def score_matrix(queries: sp.csr_matrix, docs: sp.csr_matrix) -> np.ndarray:
    """``queries @ docs.T`` as a dense array (N_queries, N_docs), in the inputs' common dtype."""
    queries, docs = sp.csr_matrix(queries), sp.csr_matrix(docs)
    if queries.shape[1] != docs.shape[1]:
        raise ValueError(f"queries have {queries.shape[1]} terms, documents {docs.shape[1]}: not the same vocabulary")
    df_q = np.bincount(queries.indices, minlength=queries.shape[1]).astype(np.float64)
    df_d = np.bincount(docs.indices, minlength=docs.shape[1]).astype(np.float64)
    shared = np.flatnonzero((df_q > 0) & (df_d > 0))
    sparse_ops = float(df_q @ df_d)
    dense_ops = float(queries.shape[0]) * docs.shape[0] * len(shared)
    if sparse_ops * DENSE_SPEEDUP <= dense_ops:
        return (queries @ docs.T).toarray()
    dtype = np.result_type(queries.dtype, docs.dtype)
    d = np.ascontiguousarray(docs[:, shared].toarray().T, dtype=dtype)  # (terms, N_docs)
    out = np.empty((queries.shape[0], docs.shape[0]), dtype=dtype)
    step = max(1, CHUNK_BYTES // max(1, dtype.itemsize * len(shared)))
    q = queries[:, shared]
    for s in range(0, queries.shape[0], step):
        out[s : s + step] = q[s : s + step].toarray().astype(dtype, copy=False) @ d
    return out
