"""Dense baselines for the retrieval benchmark: faiss flat (exact) and HNSW inner product (DESIGN.md section 6).

The dense teacher's 256-d L2-normalised embeddings searched by inner product, behind the same
interface as the sparse engines (:class:`lsr_lib.index.sparse.RetrievalIndex`): ``search`` returns
(Q, k) float32 scores and int64 rows, best first, ``-1`` / ``-inf`` only when k exceeds the
collection (or HNSW finds fewer). HNSW uses M = 32 and efSearch = 64 as in DESIGN.md section 6.
``threads`` sets faiss' OpenMP thread count for the call.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Optional

import numpy as np

from .sparse import RetrievalIndex
from .topk import topk_candidates


def _faiss():
    try:
        import faiss
    except ImportError as err:
        raise ImportError("the faiss indexes need the package 'faiss-cpu' (pip install faiss-cpu)") from err
    return faiss


def as_dense(x, dim: Optional[int] = None) -> np.ndarray:
    """(N, d) C-contiguous float32 (a copy only when needed)."""
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if a.ndim != 2 or (dim is not None and a.shape[1] != dim):
        raise ValueError(f"expected (n, {dim or 'd'}) vectors, got shape {a.shape}")
    return a


def numpy_topk_inner_product(queries: np.ndarray, docs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference exact dense top-k by ``queries @ docs.T`` (ties by ascending row)."""
    q, d = as_dense(queries), as_dense(docs)
    scores = np.full((len(q), k), -np.inf, np.float32)  # (Q, k)
    rows = np.full((len(q), k), -1, np.int64)  # (Q, k)
    all_rows = np.arange(len(d))
    for i, s in enumerate(q @ d.T):  # (N,) per query
        scores[i], rows[i] = topk_candidates(all_rows, s, k)
    return scores, rows


class DenseIndex(RetrievalIndex):
    """Base of the faiss backends: (N, d) float32 documents and queries, inner-product scores."""

    dim: int = 0

    def backend_version(self) -> str:
        return f"faiss-cpu=={_faiss().__version__}"

    def _new_index(self, dim: int):
        raise NotImplementedError

    def build(self, docs, doc_ids: Optional[np.ndarray] = None) -> "DenseIndex":
        """Index (N, d) ``docs``."""
        return super().build(as_dense(docs), doc_ids)

    def _build(self, docs: np.ndarray) -> None:
        self.dim = docs.shape[1]
        self._index = self._new_index(self.dim)
        self._index.add(docs)

    def _search(self, queries, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        q = as_dense(queries, self.dim)
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(threads)
        try:
            scores, rows = self._index.search(q, k)  # (Q, k), (Q, k)
        finally:
            faiss.omp_set_num_threads(before)
        scores = scores.astype(np.float32)
        scores[rows < 0] = -np.inf
        return scores, rows.astype(np.int64)

    def _extra_meta(self) -> dict:
        return {"dim": self.dim}

    def _save(self, directory: Path) -> None:
        _faiss().write_index(self._index, str(directory / "faiss.index"))

    def _load(self, directory: Path, meta: dict) -> None:
        self.dim = meta["dim"]
        self._index = _faiss().read_index(str(directory / "faiss.index"))
        self._configure_search()


class FaissFlatIndex(DenseIndex):
    """Exact inner-product search over all vectors (``faiss.IndexFlatIP``)."""

    kind, exact = "faiss_flat", True
    defaults: ClassVar[dict] = {}

    def _new_index(self, dim: int):
        return _faiss().IndexFlatIP(dim)

    def size_bytes(self) -> int:
        """Bytes of the stored vectors."""
        return int(self._index.ntotal * self.dim * 4)


class FaissHNSWIndex(DenseIndex):
    """Approximate inner-product search on an HNSW graph (``faiss.IndexHNSWFlat``)."""

    kind, exact = "faiss_hnsw", False
    defaults: ClassVar[dict] = {"M": 32, "ef_search": 64, "ef_construction": 40}  # DESIGN.md 6; faiss' efConstruction
    search_params = ("ef_search",)

    def _new_index(self, dim: int):
        index = _faiss().IndexHNSWFlat(dim, self.params["M"], _faiss().METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.params["ef_construction"]
        return index

    def _configure_search(self) -> None:
        if getattr(self, "_index", None) is not None:
            self._index.hnsw.efSearch = self.params["ef_search"]

    def size_bytes(self) -> int:
        """Bytes of the stored vectors plus the graph (neighbour lists, offsets, levels)."""
        h = self._index.hnsw
        return int(
            self._index.ntotal * self.dim * 4 + h.neighbors.size() * 4 + h.offsets.size() * 8 + h.levels.size() * 4
        )
