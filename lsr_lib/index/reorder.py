"""Document reordering for block-based engines: similar documents next to each other, so that blocks are coherent.

A block-max engine (BMP) keeps, per block of ``bsize`` consecutive documents, each term's largest weight, and
skips blocks whose upper bound cannot enter the top k. In the order documents arrive in (here: random), a block of
32 documents holds the union of 32 unrelated term sets, its bounds are loose and little is skipped. BMP and PISA
reorder documents first (recursive graph bisection); :func:`cluster_order` is the cheaper clustering variant:
documents are projected to ``dim`` dimensions with a random Gaussian matrix (inner products are kept up to a small
distortion, Johnson-Lindenstrauss), grouped by spherical k-means (faiss) into clusters of about ``cluster_size``
documents, and ordered by cluster, then by row. The permutation changes which documents share a block, never a
score: an engine that is exact stays exact.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

REORDERINGS = ("none", "cluster")


def cluster_order(
    docs: sp.csr_matrix, cluster_size: int = 256, dim: int = 64, seed: int = 0, niter: int = 10
) -> np.ndarray:
    """(N,) permutation: position i holds the row of the document placed i-th (clusters of similar documents)."""
    n = docs.shape[0]
    n_clusters = n // max(1, int(cluster_size))
    if n_clusters < 2:
        return np.arange(n)
    from .dense import _faiss

    faiss = _faiss()
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((docs.shape[1], dim)).astype(np.float32)  # (V, dim)
    x = np.ascontiguousarray(sp.csr_matrix(docs, dtype=np.float32) @ proj, dtype=np.float32)  # (N, dim)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x /= np.maximum(norms, 1e-12)
    km = faiss.Kmeans(dim, n_clusters, niter=niter, seed=seed, spherical=True, verbose=False)
    km.train(x)
    _, labels = km.index.search(x, 1)  # (N, 1)
    return np.lexsort((np.arange(n), labels[:, 0]))


def apply_reordering(kind: str, docs: sp.csr_matrix, cluster_size: int = 256, seed: int = 0) -> np.ndarray:
    """The permutation of ``kind`` (:data:`REORDERINGS`): identity for "none"."""
    if kind == "none":
        return np.arange(docs.shape[0])
    if kind == "cluster":
        return cluster_order(docs, cluster_size, seed=seed)
    raise ValueError(f"unknown document reordering {kind!r}; known: {REORDERINGS}")
