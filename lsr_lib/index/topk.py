"""Top-k helpers for retrieval (DESIGN.md section 6): selection with a tie rule, index-time pruning, agreement of lists.

Selection keeps the best k candidates, ties by ascending row. Pruning keeps the k largest
weights of each vector. Agreement: DESIGN.md section 6 compares engines against the exact scorer. Two exact engines may
legally
return different rows when scores tie (and float summation order makes "tie" mean "within a
tolerance"), including at the k boundary, where either of two tied documents may take the last
place. Results follow the convention of :mod:`lsr_lib.index.sparse`: (Q, k) scores best first,
rows ``-1`` with score ``-inf`` where fewer than k documents share a term with the query.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def topk_candidates(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` of one query's candidates (ties by ascending row), padded with -inf / -1."""
    out_s, out_r = np.full(k, -np.inf, np.float32), np.full(k, -1, np.int64)
    m = min(k, len(rows))
    if m:
        order = np.lexsort((rows, -scores))[:m]  # score desc, then row asc
        out_s[:m], out_r[:m] = scores[order], rows[order]
    return out_s, out_r


def prune_topk(csr, k: int, chunk_rows: int = 100_000) -> sp.csr_matrix:
    """Keep the ``k`` largest weights of each row (ties: lower term id first); index-time pruning."""
    if k <= 0:
        raise ValueError("k must be positive")
    m = sp.csr_matrix(csr, dtype=np.float32, copy=True)
    m.eliminate_zeros()
    m.sort_indices()
    keep = np.zeros(m.nnz, dtype=bool)
    for lo in range(0, m.shape[0], chunk_rows):  # chunked so that 1M-row matrices stay in memory
        hi = min(lo + chunk_rows, m.shape[0])
        a, b = m.indptr[lo], m.indptr[hi]
        row = np.repeat(np.arange(hi - lo), np.diff(m.indptr[lo : hi + 1]))  # (nnz_chunk,)
        order = np.lexsort((m.indices[a:b], -m.data[a:b], row))  # row, weight desc, term asc
        rank = np.arange(b - a) - (m.indptr[lo:hi] - a)[row[order]]
        keep[a + order[rank < k]] = True
    indptr = np.concatenate([[0], np.cumsum(np.minimum(np.diff(m.indptr), k))]).astype(np.int64)
    return sp.csr_matrix((m.data[keep], m.indices[keep], indptr), shape=m.shape)


def recall_at_k(approx_rows: np.ndarray, exact_rows: np.ndarray, k: int) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / |exact top-k| (queries without exact results skipped).

    approx_rows, exact_rows: (Q, >=k) int rows, -1 for missing. Ties at the exact list's k boundary
    are not forgiven here (a tied document returned instead counts as a miss), so this is a
    slightly pessimistic accuracy, the usual "top-k accuracy" of the Seismic papers.
    """
    a, e = np.asarray(approx_rows)[:, :k], np.asarray(exact_rows)[:, :k]
    if a.shape[0] != e.shape[0]:
        raise ValueError(f"{a.shape[0]} approximate vs {e.shape[0]} exact queries")
    hits, counted = 0.0, 0
    for ra, re in zip(a, e):
        ex = re[re >= 0]
        if ex.size == 0:
            continue
        hits += np.isin(ex, ra[ra >= 0]).sum() / ex.size
        counted += 1
    return float(hits / counted) if counted else 1.0


def _query_disagrees(sa: np.ndarray, ra: np.ndarray, sb: np.ndarray, rb: np.ndarray, k: int, atol: float) -> bool:
    """True when one query's two top-k lists differ by more than tie permutations."""
    va, vb = ra >= 0, rb >= 0
    if va.sum() != vb.sum():
        return True
    ssa, ssb = np.sort(sa[va])[::-1], np.sort(sb[vb])[::-1]  # rank-wise score profiles
    if not np.allclose(ssa, ssb, rtol=0.0, atol=atol):
        return True
    da, db = dict(zip(ra[va].tolist(), sa[va].tolist())), dict(zip(rb[vb].tolist(), sb[vb].tolist()))
    if any(abs(da[r] - db[r]) > atol for r in da.keys() & db.keys()):
        return True  # same document, different score
    # A full list has a boundary: documents within atol of the last score may be swapped for
    # other tied documents. A short list holds every candidate, so the sets must be equal.
    boundary = max(ssa[-1], ssb[-1]) if va.sum() == k else -np.inf
    must_a = {r for r, s in da.items() if s > boundary + atol}
    must_b = {r for r, s in db.items() if s > boundary + atol}
    return not (must_a <= db.keys() and must_b <= da.keys())


def topk_disagreements(
    scores_a: np.ndarray,
    rows_a: np.ndarray,
    scores_b: np.ndarray,
    rows_b: np.ndarray,
    k: int,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> list[int]:
    """Query indices whose top-k lists differ beyond permutations among (near-)tied scores.

    Two scores are tied within ``max(atol, rtol * the query's top score)``: float32 sums in another
    order (another engine) differ by about 1e-7 of the score's magnitude.
    """
    sa, ra = np.asarray(scores_a)[:, :k], np.asarray(rows_a)[:, :k]
    sb, rb = np.asarray(scores_b)[:, :k], np.asarray(rows_b)[:, :k]
    if sa.shape != sb.shape or ra.shape != rb.shape:
        raise ValueError(f"shapes differ: {sa.shape} vs {sb.shape}")
    top = np.nan_to_num(np.abs(np.where(ra >= 0, sa, 0.0)), posinf=0.0).max(axis=1) if sa.size else np.zeros(0)
    return [
        q
        for q in range(sa.shape[0])
        if _query_disagrees(sa[q], ra[q], sb[q], rb[q], k, max(atol, rtol * float(top[q])))
    ]


def same_topk_up_to_ties(
    scores_a: np.ndarray,
    rows_a: np.ndarray,
    scores_b: np.ndarray,
    rows_b: np.ndarray,
    k: int,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> bool:
    """True when two exact rankings agree except for permutations among tied scores (also at the k boundary).

    Per query: the same number of results; the same score at every rank (within ``atol``); a
    document in both lists has the same score; and every document scoring more than ``atol`` above
    the last place of a full list is in both lists (a short list must hold the same documents).
    """
    return not topk_disagreements(scores_a, rows_a, scores_b, rows_b, k, atol, rtol)
