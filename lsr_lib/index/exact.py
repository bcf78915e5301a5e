"""The exact sparse engines: the scipy reference scorer and term-at-a-time retrieval with numba (DESIGN.md section 6).

:class:`ScipyBruteForce` computes ``queries @ docs.T`` as a sparse product: the reference every
other engine is checked against. :class:`NumbaIndex` is the fastest exact engine measured on these
machines. Its postings are the CSC form of the (N, V) document matrix: for term ``v``,
``post_doc[post_ptr[v]:post_ptr[v+1]]`` are the documents containing it and ``post_val`` their
weights. A query walks the posting lists of its own terms only, adding ``q_v * d_v`` into a dense
(N,) score accumulator and remembering which documents it touched; the top k of the touched
documents (``np.argpartition``, ties by ascending row) are the result, and only the touched
entries are reset. ``threads > 1`` splits the queries into blocks run in parallel with
``numba.prange``, each block with its own accumulator. The first search compiles the kernels (a
few seconds; cached on disk afterwards).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numba
import numpy as np
import scipy.sparse as sp

from .sparse import SparseIndex, as_csr
from .topk import topk_candidates


@numba.njit(cache=True)
def _select_topk(acc, touched, n_touched, k, out_s, out_r):  # pragma: no cover - compiled
    """Write the best ``k`` touched documents (score desc, row asc) into out_s / out_r."""
    m = min(k, n_touched)
    if m == 0:
        return
    cand = touched[:n_touched]
    sc = acc[cand]
    if n_touched > m:
        part = np.argpartition(-sc, m - 1)
        thr = sc[part[m - 1]]  # the m-th largest score
        above = cand[sc > thr]
        tied = np.sort(cand[sc == thr])[: m - above.shape[0]]  # boundary ties: lowest rows
        sel = np.sort(np.concatenate((above, tied)))
    else:
        sel = np.sort(cand)
    s = acc[sel]
    order = np.argsort(-s, kind="mergesort")  # stable: equal scores keep ascending rows
    for i in range(m):
        out_s[i] = s[order[i]]
        out_r[i] = sel[order[i]]


@numba.njit(cache=True)
def _search_range(
    q_ptr, q_idx, q_val, lo, hi, p_ptr, p_doc, p_val, k, acc, seen, touched, out_s, out_r
):  # pragma: no cover
    """Term-at-a-time scoring of queries lo..hi-1 with one accumulator."""
    n_terms = p_ptr.shape[0] - 1
    for q in range(lo, hi):
        nt = 0
        for j in range(q_ptr[q], q_ptr[q + 1]):
            t = q_idx[j]
            if t >= n_terms:
                continue
            w = q_val[j]
            for p in range(p_ptr[t], p_ptr[t + 1]):
                d = p_doc[p]
                if not seen[d]:
                    seen[d] = True
                    touched[nt] = d
                    nt += 1
                acc[d] += w * p_val[p]
        _select_topk(acc, touched, nt, k, out_s[q], out_r[q])
        for i in range(nt):  # reset only what this query touched
            acc[touched[i]] = 0.0
            seen[touched[i]] = False


@numba.njit(cache=True, parallel=True)
def _search_parallel(q_ptr, q_idx, q_val, p_ptr, p_doc, p_val, n_docs, k, n_blocks, out_s, out_r):  # pragma: no cover
    """Query blocks in parallel, one accumulator per block."""
    n_q = q_ptr.shape[0] - 1
    for b in numba.prange(n_blocks):
        acc = np.zeros(n_docs, np.float32)
        seen = np.zeros(n_docs, np.bool_)
        touched = np.empty(n_docs, np.int32)
        _search_range(
            q_ptr,
            q_idx,
            q_val,
            b * n_q // n_blocks,
            (b + 1) * n_q // n_blocks,
            p_ptr,
            p_doc,
            p_val,
            k,
            acc,
            seen,
            touched,
            out_s,
            out_r,
        )


class NumbaIndex(SparseIndex):
    """Exact term-at-a-time inverted index (numba); persisted as ``postings.npz``."""

    kind, exact = "numba", True
    defaults: ClassVar[dict] = {"blocks_per_thread": 4}  # parallel load balancing
    BYTES_PER_POSTING = 8  # int32 document id + float32 weight

    @property
    def bytes_per_posting(self) -> int:
        """Bytes one posting takes in this index's layout."""
        return self.BYTES_PER_POSTING

    search_params = ("blocks_per_thread",)

    def _build(self, docs: sp.csr_matrix) -> None:
        csc = docs.tocsc()
        csc.sort_indices()
        self._set_postings(csc.indptr.astype(np.int64), csc.indices.astype(np.int32), csc.data.astype(np.float32))

    def _set_postings(self, ptr: np.ndarray, doc: np.ndarray, val: np.ndarray) -> None:
        self._ptr, self._doc, self._val = ptr, doc, val  # (V+1,), (nnz,), (nnz,)
        self._acc = np.zeros(self.n_docs, np.float32)  # single-thread work buffers, reused across calls
        self._seen = np.zeros(self.n_docs, np.bool_)
        self._touched = np.empty(self.n_docs, np.int32)

    def _search(self, queries, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_csr(queries, self.n_terms)
        q_ptr, q_idx, q_val = q.indptr.astype(np.int64), q.indices.astype(np.int64), q.data
        n_q = q.shape[0]
        scores = np.full((n_q, k), -np.inf, np.float32)  # (Q, k)
        rows = np.full((n_q, k), -1, np.int32)  # (Q, k)
        if threads == 1 or n_q == 1:
            self._run_single((q_ptr, q_idx, q_val), n_q, k, scores, rows)
        else:
            before = numba.get_num_threads()
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            try:
                self._run_parallel(
                    (q_ptr, q_idx, q_val), min(n_q, threads * self.params["blocks_per_thread"]), k, scores, rows
                )
            finally:
                numba.set_num_threads(before)
        return scores, rows.astype(np.int64)

    def _run_single(self, q: tuple, n_q: int, k: int, scores: np.ndarray, rows: np.ndarray) -> None:
        """All queries in this thread, with the index's own work buffers."""
        _search_range(
            *q, 0, n_q, self._ptr, self._doc, self._val, k, self._acc, self._seen, self._touched, scores, rows
        )

    def _run_parallel(self, q: tuple, n_parts: int, k: int, scores: np.ndarray, rows: np.ndarray) -> None:
        """Query blocks in parallel threads, each with its own buffers."""
        _search_parallel(*q, self._ptr, self._doc, self._val, self.n_docs, k, n_parts, scores, rows)

    def size_bytes(self) -> int:
        """In-memory bytes of the posting lists (pointers, document ids, weights)."""
        return int(self._ptr.nbytes + self._doc.nbytes + self._val.nbytes)

    def _save(self, directory: Path) -> None:
        np.savez(directory / "postings.npz", ptr=self._ptr, doc=self._doc, val=self._val)

    def _load_sparse(self, directory: Path, meta: dict) -> None:
        with np.load(directory / "postings.npz") as z:
            self._set_postings(z["ptr"], z["doc"], z["val"])


class ScipyBruteForce(SparseIndex):
    """Exact reference: ``queries @ docs.T`` as a sparse product, in chunks of queries (single-threaded)."""

    kind, exact = "scipy", True
    defaults: ClassVar[dict] = {"max_chunk_entries": 20_000_000}  # bound on Q_chunk x N product entries
    search_params = ("max_chunk_entries",)

    def _build(self, docs: sp.csr_matrix) -> None:
        self._docs_t = docs.T.tocsr()  # (V, N): row v is the posting list of term v

    def _search(self, queries, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_csr(queries, self.n_terms)
        scores = np.full((q.shape[0], k), -np.inf, np.float32)  # (Q, k)
        rows = np.full((q.shape[0], k), -1, np.int64)  # (Q, k)
        step = max(1, self.params["max_chunk_entries"] // max(1, self.n_docs))
        for lo in range(0, q.shape[0], step):
            prod = (q[lo : lo + step] @ self._docs_t).tocsr()  # (Q_chunk, N), structural non-zeros = shared terms
            for i in range(prod.shape[0]):
                a, b = prod.indptr[i], prod.indptr[i + 1]
                scores[lo + i], rows[lo + i] = topk_candidates(prod.indices[a:b].astype(np.int64), prod.data[a:b], k)
        return scores, rows

    def size_bytes(self) -> int:
        """In-memory bytes of the (V, N) term-by-document CSR."""
        m = self._docs_t
        return int(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes)

    def _save(self, directory: Path) -> None:
        sp.save_npz(directory / "docs_t.npz", self._docs_t, compressed=False)

    def _load_sparse(self, directory: Path, meta: dict) -> None:
        self._docs_t = sp.csr_matrix(sp.load_npz(directory / "docs_t.npz"), dtype=np.float32)


@numba.njit(cache=True)
def _insert_topk(v, row, top_s, top_r, count, k):  # pragma: no cover - compiled
    """Insert (v, row) into the best-first arrays (score desc, row asc; rows arrive ascending); returns the new
    count."""
    if count == k and not v > top_s[k - 1]:
        return count
    pos = min(count, k - 1)
    while pos > 0 and top_s[pos - 1] < v:  # equal scores keep the earlier (lower) row first
        pos -= 1
    last = min(count, k - 1)
    for i in range(last, pos, -1):
        top_s[i] = top_s[i - 1]
        top_r[i] = top_r[i - 1]
    top_s[pos] = v
    top_r[pos] = row
    return min(count + 1, k)


@numba.njit(cache=True)
def _blocked_range(
    q_ptr, q_idx, q_val, lo, hi, blk_ptr, p_off, p_val, block, n_docs, k, acc, out_s, out_r
):  # pragma: no cover
    """Queries lo..hi-1, one document block at a time: the block's accumulator stays in cache."""
    n_terms, n_blocks = blk_ptr.shape[0], blk_ptr.shape[1] - 1
    for q in range(lo, hi):
        count, top_s, top_r = 0, out_s[q], out_r[q]  # the views once per query, not per document
        thr = -np.inf  # the k-th best score once k are held: only a larger score can enter
        for b in range(n_blocks):
            touched = False
            for j in range(q_ptr[q], q_ptr[q + 1]):
                t = q_idx[j]
                if t >= n_terms:
                    continue
                w = q_val[j]
                s, e = blk_ptr[t, b], blk_ptr[t, b + 1]
                if s < e:
                    touched = True
                for p in range(s, e):
                    acc[p_off[p]] += w * p_val[p]
            if not touched:
                continue
            base = b * block
            n = min(block, n_docs - base)
            i = 0
            while i < n and count < k:  # until k are held: every scored document enters
                if acc[i] != 0.0:
                    count = _insert_topk(acc[i], base + i, top_s, top_r, count, k)
                i += 1
            if count == k:
                thr = top_s[k - 1]
            for j in range(i, n):  # then only a score above the k-th best (> 0) can: a rarely taken branch
                if acc[j] > thr:
                    _insert_topk(acc[j], base + j, top_s, top_r, k, k)
                    thr = top_s[k - 1]
            acc[:n] = 0.0  # clear the block in one sweep


@numba.njit(cache=True, parallel=True)
def _blocked_parallel(
    q_ptr, q_idx, q_val, blk_ptr, p_off, p_val, block, n_docs, k, n_parts, out_s, out_r
):  # pragma: no cover
    n_q = q_ptr.shape[0] - 1
    for b in numba.prange(n_parts):
        acc = np.zeros(block, np.float32)
        _blocked_range(
            q_ptr,
            q_idx,
            q_val,
            b * n_q // n_parts,
            (b + 1) * n_q // n_parts,
            blk_ptr,
            p_off,
            p_val,
            block,
            n_docs,
            k,
            acc,
            out_s,
            out_r,
        )


class NumbaBlockedIndex(NumbaIndex):
    """Exact term-at-a-time retrieval over document blocks (numba): the same results as ``numba``, a cache-sized
    accumulator.

    The documents are cut into blocks of ``block`` rows. Each posting stores the document's offset
    in its block (uint16 for blocks up to 65,536 rows: 6 bytes with the float32 weight instead of
    8; int32 for larger blocks, e.g. ``block`` >= N for one block over the collection), and
    ``blk_ptr[t, b]`` points at term ``t``'s postings in block ``b`` (the CSC order, so a term's list
    is still read front to back). A query scores one block at a time into a ``block``-long
    accumulator that stays in the L2 cache, with no per-posting bookkeeping of touched documents
    (``numba``'s branch on every posting), then scans that block in row order against the running
    k-th best score (ties by ascending row, as ``numba``) and clears it. On the default's learned
    vectors, where most documents share a term with the query, this reads postings at 55-60% of
    one thread's memory bandwidth (64k-row blocks at 100k documents, one block at 1M) against numba's 13-17%
    (``benchmarks/exact_engine_layout.py``).
    Scores are summed in the same order as ``numba``'s, so results are bitwise equal.
    """

    kind, exact = "numba_blocked", True
    # block: the fastest of 4k-64k at 100k and 1M documents (results/benchmarks/exact_engine_layout_cpu.json)
    defaults: ClassVar[dict] = {"block": 65536, "blocks_per_thread": 4}
    search_params = ("blocks_per_thread",)
    BYTES_PER_POSTING = 6  # uint16 offset in the block + float32 weight

    def _block(self) -> int:
        """Rows per block: ``block``, at most the collection (``block`` >= N is one block over all documents)."""
        return max(1, min(int(self.params["block"]), self.n_docs))

    @property
    def bytes_per_posting(self) -> int:
        """6 with uint16 offsets (blocks up to 65,536 rows), 8 with int32 ones."""
        return self.BYTES_PER_POSTING if self._block() <= 1 << 16 else NumbaIndex.BYTES_PER_POSTING

    def _build(self, docs: sp.csr_matrix) -> None:
        if int(self.params["block"]) < 1:
            raise ValueError(f"numba_blocked: block must be >= 1 rows, got {self.params['block']}")
        block = self._block()
        csc = docs.tocsc()
        csc.sort_indices()
        n_blocks = max(1, -(-self.n_docs // block))
        term = np.repeat(np.arange(csc.shape[1], dtype=np.int64), np.diff(csc.indptr))  # (nnz,) term of each posting
        counts = np.bincount(term * n_blocks + csc.indices // block, minlength=csc.shape[1] * n_blocks).reshape(
            csc.shape[1], n_blocks
        )
        blk_ptr = np.zeros((csc.shape[1], n_blocks + 1), np.int64)
        blk_ptr[:, 1:] = np.cumsum(counts, axis=1)
        # postings stay in CSC order: block b of term t is a slice of t's list
        blk_ptr += csc.indptr[:-1, None].astype(np.int64)
        offsets = csc.indices % block
        self._set_blocked(
            blk_ptr, offsets.astype(np.uint16 if block <= 1 << 16 else np.int32), csc.data.astype(np.float32)
        )

    def _set_blocked(self, blk_ptr: np.ndarray, off: np.ndarray, val: np.ndarray) -> None:
        self._blk_ptr, self._off, self._val = blk_ptr, off, val  # (V, n_blocks + 1), (nnz,), (nnz,)
        self._acc = np.zeros(self._block(), np.float32)

    def _run_single(self, q: tuple, n_q: int, k: int, scores: np.ndarray, rows: np.ndarray) -> None:
        _blocked_range(
            *q, 0, n_q, self._blk_ptr, self._off, self._val, self._block(), self.n_docs, k, self._acc, scores, rows
        )

    def _run_parallel(self, q: tuple, n_parts: int, k: int, scores: np.ndarray, rows: np.ndarray) -> None:
        _blocked_parallel(*q, self._blk_ptr, self._off, self._val, self._block(), self.n_docs, k, n_parts, scores, rows)

    def size_bytes(self) -> int:
        """In-memory bytes of the block pointers, offsets and weights."""
        return int(self._blk_ptr.nbytes + self._off.nbytes + self._val.nbytes)

    def _save(self, directory: Path) -> None:
        np.savez(directory / "postings.npz", blk_ptr=self._blk_ptr, off=self._off, val=self._val)

    def _load_sparse(self, directory: Path, meta: dict) -> None:
        with np.load(directory / "postings.npz") as z:
            self._set_blocked(z["blk_ptr"], z["off"], z["val"])
