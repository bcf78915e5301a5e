"""BMP, block-max pruning (Mallia, Suel, Tonellotto, SIGIR 2024), behind the :class:`~lsr_lib.index.sparse.SparseIndex`
interface (``bmp``).

BMP groups ``bsize`` consecutive documents into a block, keeps each term's maximum impact per
block, and visits blocks by decreasing upper bound until no remaining block can beat the k-th
score; each visited block is scored from a block forward index. Search parameters: ``alpha``
stops when the best remaining bound times ``alpha`` falls below the k-th score (1.0: safe),
``beta`` keeps the ``ceil(beta x n)`` heaviest of the query's n indexed terms (1.0: all).

Quantisation (BMP scores small integers only):

- documents: ``round(w * scale)`` as PISA (:meth:`lsr_lib.index.pisa.PisaIndex.quantise`, ``scale``
  = 100 by default, so BMP and PISA index the same impacts), then saturated at 255, since BMP
  stores impacts as u8 (bmp's own indexer would wrap larger values modulo 256; a warning says how
  many were saturated);
- queries: BMP maps each query's largest weight to 32 (``MAX_TERM_WEIGHT``) and the others to
  ``ceil(w * 32 / max w)``; the adapter does this itself, so that BMP leaves the integers as they
  are and the scores can be converted back: ``score = integer dot product / (scale * 32 / max w)``.
  Non-positive query weights are dropped.

Block scores are u16 and wrap past 65,535; queries whose bound ``sum_t q_t * max impact_t`` can
exceed it get a warning. Term ids are u16 in BMP's block forward index (at most 65,536 distinct
terms) and a document's offset in its block is u8 (``bsize`` <= 256): both are checked at build.

Workarounds for bmp 0.2.8 (``src/search.rs``), so that ``alpha = beta = 1`` is exact top-k for the
quantised vectors:

- the search loop scores a block only when another candidate block follows it, so the last
  candidate (the one with the lowest bound) is never scored, and a query whose candidates all lie
  in one block gets nothing. The adapter appends a sentinel block (one document with three
  private terms of impacts 255, 32 and 1) and adds those terms to every query with weights that
  give the sentinel the bound ``T + 1``, where ``T = max_t kth_t(k) * q_t`` is BMP's initial
  threshold (``kth``: the 10th / 100th / 1000th largest impact of the term for k <= 10 / 100 /
  1000, else 0; computed here from the same impacts). Every real candidate has a bound > T, i.e.
  >= T + 1, and the sentinel has the highest block id, so it is the block that goes unscored;
- results must beat T strictly, so documents tied with T are lost and fewer than k come back
  (and BMP panics when no block beats T, which the sentinel prevents): a query with fewer than k
  results is run again with k = 1001, where T = 0, and the first k results are kept;
- ``beta`` is applied here before the call (ties by term id, where BMP's order is a hash map's).

Documents are added in the order of ``reorder`` (:mod:`lsr_lib.index.reorder`; "none": as given, "cluster":
clusters of about ``reorder_cluster_size`` similar documents), named by their row, so results are rows either way.
The block-upper-bound traversal is BMP's own, so latency stays BMP's; ``threads`` is not used
(the binding searches one query at a time and holds the GIL).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from .backends import dist_version, empty_results, quiet_native_output, require
from .pisa import PisaIndex
from .reorder import apply_reordering
from .sparse import SparseIndex, as_csr

MAX_IMPACT = 255  # BMP stores document impacts as u8
MAX_QUERY_WEIGHT = 32  # bmp::query::MAX_TERM_WEIGHT: a query's largest weight after BMP's rescaling
MAX_SCORE = 65_535  # block scores are u16
KTH_DEPTHS = (10, 100, 1000)  # BMP's per-term kth impacts (initial threshold)
SENTINEL = (("~s255", 255), ("~s32", 32), ("~s1", 1))  # private terms (real terms are digits) and their impacts
RETRY_K = 1001  # k > 1000: BMP's initial threshold is 0


def _sentinel_weights(target: int) -> dict[str, float]:
    """Query weights of the sentinel terms for a sentinel block bound of ``target`` (1 <= target <= 255*32 + 254)."""
    a, rest = divmod(target, 255)
    b, c = divmod(rest, 32)
    return {name: float(w) for (name, _), w in zip(SENTINEL, (a, b, c)) if w > 0}


class BmpIndex(SparseIndex):
    """BMP (block-max pruning): exact top-k on quantised weights at ``alpha = beta = 1``, approximate below."""

    kind, exact = "bmp", False  # exact for the quantised vectors only
    defaults: ClassVar[dict] = {
        "scale": 100.0,
        "bsize": 32,
        "compress_range": False,
        "reorder": "none",  # lsr_lib.index.reorder: "cluster" puts similar documents in the same blocks
        "reorder_cluster_size": 256,
        "alpha": 1.0,
        "beta": 1.0,
        "quiet": True,
    }
    search_params = ("alpha", "beta", "quiet")

    def __init__(self, **params) -> None:
        self._bmp = require("bmp", "bmp", "the 'bmp' index")
        super().__init__(**params)
        self._tmp = None
        self._searcher = None

    def backend_version(self) -> str:
        return dist_version("bmp")

    def quantise(self, m: sp.csr_matrix) -> sp.csr_matrix:
        """The document impacts BMP indexes: ``round(w * scale)`` as PISA, negatives dropped, saturated at 255."""
        out = PisaIndex.quantise(self, m)  # reads self.params["scale"]
        out.data = np.clip(out.data, 0, MAX_IMPACT)
        out.eliminate_zeros()
        return out

    @staticmethod
    def quantise_queries(q: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray]:
        """BMP's query weights ``ceil(w * 32 / max w)`` (positive weights only) and each query's factor
        ``32 / max w``."""
        out = as_csr(q).copy()
        out.data[out.data < 0] = 0
        out.eliminate_zeros()
        n = out.shape[0]
        top = np.zeros(n, np.float64)
        has = np.diff(out.indptr) > 0
        if out.nnz:
            top[has] = np.maximum.reduceat(out.data.astype(np.float64), out.indptr[:-1][has])
        factor = np.divide(MAX_QUERY_WEIGHT, top, out=np.zeros(n), where=top > 0)  # (Q,)
        rows = np.repeat(np.arange(n), np.diff(out.indptr))
        # the max is exactly 32
        out.data = np.clip(np.ceil(out.data * factor[rows]), 1, MAX_QUERY_WEIGHT).astype(np.float32)
        return out, factor

    def _build(self, docs: sp.csr_matrix) -> None:
        b = self.params["bsize"]
        if not 1 <= b <= 256:
            raise ValueError(f"bsize must be in 1..256 (BMP stores a document's offset in its block as u8), got {b}")
        qd = self.quantise(docs)
        n_used = int(np.count_nonzero(np.bincount(qd.indices, minlength=self.n_terms)))
        if n_used > 65_536 - len(SENTINEL):
            raise ValueError(
                f"{n_used} distinct terms: BMP's block forward index stores term ids as u16 (at most 65,536)"
            )
        saturated = int((np.rint(docs.data * self.params["scale"]) > MAX_IMPACT).sum())
        if saturated:
            warnings.warn(
                f"bmp: {saturated} of {docs.nnz} weights exceed {MAX_IMPACT / self.params['scale']:.3g} "
                f"and were saturated at impact {MAX_IMPACT} (lower 'scale')",
                stacklevel=3,
            )
        self._stats = self._term_stats(qd)
        self._tmp = tempfile.TemporaryDirectory(prefix="bmp_")
        path = Path(self._tmp.name) / "index.bmp"
        indexer = self._bmp.Indexer(str(path), bsize=b, compress_range=self.params["compress_range"])
        order = apply_reordering(self.params["reorder"], qd, self.params["reorder_cluster_size"])
        for i in order.tolist():  # a document's name is its row: results come back in the caller's numbering
            lo, hi = qd.indptr[i], qd.indptr[i + 1]
            indexer.add_document(
                str(i), dict(zip(qd.indices[lo:hi].astype(str).tolist(), qd.data[lo:hi].astype(int).tolist()))
            )
        for _ in range(-self.n_docs % b):  # pad the last block: the sentinel gets a block of its own
            indexer.add_document("-1", {})
        indexer.add_document("-1", dict(SENTINEL))
        with quiet_native_output(self.params["quiet"]):
            indexer.finish()
        self._open(path)

    def _term_stats(self, qd: sp.csr_matrix) -> np.ndarray:
        """(V, 4) uint8 per term: the 10th, 100th, 1000th largest impact (0 if fewer postings) and the largest."""
        c = qd.tocsc()
        c.sort_indices()
        cols = np.repeat(np.arange(c.shape[1]), np.diff(c.indptr))
        data = c.data[np.lexsort((-c.data, cols))]  # each column's impacts, largest first
        df = np.diff(c.indptr)
        stats = np.zeros((c.shape[1], 4), np.uint8)
        for j, depth in enumerate(KTH_DEPTHS):
            ok = df >= depth
            stats[ok, j] = data[c.indptr[:-1][ok] + depth - 1]
        stats[df > 0, 3] = data[c.indptr[:-1][df > 0]]
        return stats

    def _open(self, path: Path) -> None:
        with quiet_native_output(self.params["quiet"]):
            self._searcher = self._bmp.Searcher(str(path))  # reads the whole index into memory
        self._path = Path(path)

    def _query(self, terms: np.ndarray, weights: np.ndarray, k: int) -> tuple[list[str], list[float]]:
        """One BMP call (terms sorted by term id, integer weights), sentinel included, retried at k = 1001 when
        short."""
        kth_col = sum(k > d for d in KTH_DEPTHS)
        threshold = (
            int((self._stats[terms, kth_col].astype(np.int64) * weights.astype(np.int64)).max()) if kth_col < 3 else 0
        )
        query = dict(zip(terms.astype(str).tolist(), weights.astype(float).tolist()))
        alpha = float(self.params["alpha"])
        docnos, scores = self._searcher.search(
            {**query, **_sentinel_weights(threshold + 1)}, k=k, alpha=alpha, beta=1.0
        )
        if len(docnos) < k and kth_col < 3:
            docnos, scores = self._searcher.search(
                {**query, **_sentinel_weights(1)}, k=max(k, RETRY_K), alpha=alpha, beta=1.0
            )
        return docnos[:k], scores[:k]

    def _search(self, queries, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        qq, factor = self.quantise_queries(as_csr(queries, self.n_terms))
        scores, rows = empty_results(qq.shape[0], k)
        beta, overflow = float(self.params["beta"]), 0
        for i in range(qq.shape[0]):
            lo, hi = qq.indptr[i], qq.indptr[i + 1]
            terms, weights = qq.indices[lo:hi], qq.data[lo:hi]
            known = self._stats[terms, 3] > 0  # terms the collection never uses cannot match
            terms, weights = terms[known], weights[known]
            if len(terms) == 0:
                continue  # no candidates (BMP panics on a query without indexed terms)
            if beta < 1.0:
                # heaviest first, ties by term id
                keep = np.sort(np.lexsort((terms, -weights))[: math.ceil(len(terms) * beta)])
                terms, weights = terms[keep], weights[keep]
            overflow += int((self._stats[terms, 3].astype(np.int64) * weights.astype(np.int64)).sum() > MAX_SCORE)
            docnos, vals = self._query(terms, weights, k)
            got = np.array(docnos, dtype=np.int64)
            ok = got >= 0  # the sentinel and the padding ("-1") are never scored; checked all the same
            n = int(ok.sum())
            rows[i, :n] = got[ok]
            scores[i, :n] = np.asarray(vals, np.float32)[ok] / np.float32(self.params["scale"] * factor[i])
        if overflow:
            warnings.warn(
                f"bmp: {overflow} queries may exceed BMP's u16 block scores (65,535) and wrap; lower 'scale'",
                stacklevel=3,
            )
        return scores, rows

    def size_bytes(self) -> int:
        """Bytes of the serialised index (inverted index of block maxima and block forward index), as loaded into
        memory."""
        return int(self._path.stat().st_size)

    def _save(self, directory: Path) -> None:
        shutil.copyfile(self._path, directory / "index.bmp")
        np.save(directory / "term_stats.npy", self._stats, allow_pickle=False)

    def _after_save(self, path: Path) -> None:
        self._path = Path(path) / "index.bmp"  # the searcher holds the index in memory: only the file moves
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _load_sparse(self, directory: Path, meta: dict) -> None:
        self._stats = np.load(directory / "term_stats.npy", allow_pickle=False)
        self._open(directory / "index.bmp")
