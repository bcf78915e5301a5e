"""Latency, throughput, build cost and memory of the retrieval engines, and synthetic collections (DESIGN.md section 6).

Measures, for one index kind on one collection: build time, index size, peak memory while
building, per-query latency (mean / p50 / p99 over single-query ``search`` calls, the way one user
query arrives), batched queries per second with 1 and 2 threads, and recall@k against exact
results. Timings on a shared 2-core machine are noisy: DESIGN.md treats only 2x differences as
meaningful.

:func:`synthetic_collection` makes *synthetic documents drawn from a real model's output
distribution*, to measure engines at sizes (100k, 1M documents) that the embedded data set does
not have: each new row takes its number of non-zeros from the empirical non-zeros-per-row
distribution, its distinct terms so that the empirical document frequencies are reproduced
(inclusion probabilities fitted to df, exactly n terms by systematic sampling), and its weights
from the empirical distribution of all weights. Row lengths and term popularity (hence
co-activation) follow the model; term-specific weight profiles and term-term correlations do
not. It is not real data. Memory is 8 bytes per non-zero: prune dense-ish vectors first
(``lsr_lib.index.topk.prune_topk``) before asking for a million rows.
"""

from __future__ import annotations

import resource
import threading
import time
import tracemalloc
from typing import Any, Callable, Optional

import numpy as np
import scipy.sparse as sp

from .sparse import RetrievalIndex, as_csr, make_index, recall_at_k


def _rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        import psutil

        return int(psutil.Process().memory_info().rss)


class PeakMemory:
    """Context manager: peak RSS while inside (polled thread + ru_maxrss), optional tracemalloc peak."""

    def __init__(self, poll_s: float = 0.005, trace_python: bool = False) -> None:
        self.poll_s, self.trace_python = poll_s, trace_python
        self.start_rss = self.peak_rss = 0
        self.python_peak: Optional[int] = None

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.peak_rss = max(self.peak_rss, _rss_bytes())

    def __enter__(self) -> "PeakMemory":
        self.start_rss = self.peak_rss = _rss_bytes()
        self._maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        if self.trace_python:
            tracemalloc.start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, _rss_bytes())
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if maxrss > self._maxrss_before:  # a new process-wide high inside the block (catches GIL-holding code)
            self.peak_rss = max(self.peak_rss, maxrss)
        if self.trace_python:
            self.python_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()

    @property
    def delta_mb(self) -> float:
        """Peak RSS above the RSS at entry, MiB."""
        return (self.peak_rss - self.start_rss) / 2**20


def _rows(queries, n: Optional[int] = None) -> list:
    """The first ``n`` queries as one-query slices, made before timing so slicing stays out of the latency."""
    if sp.issparse(queries):
        q = as_csr(queries)
        return [q[i : i + 1] for i in range(min(q.shape[0], n or q.shape[0]))]
    q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
    return [q[i : i + 1] for i in range(min(len(q), n or len(q)))]


def measure_build(
    kind: str, docs, doc_ids: Optional[np.ndarray] = None, trace_python: bool = False, **params: Any
) -> tuple[RetrievalIndex, dict]:
    """Build an index; returns it with build seconds, size and peak memory (RSS delta, MiB)."""
    index = make_index(kind, **params)  # imports the backend outside the timed block
    with PeakMemory(trace_python=trace_python) as mem:
        t0 = time.perf_counter()
        index.build(docs, doc_ids)
        seconds = time.perf_counter() - t0
    out = {
        "kind": kind,
        "name": index.name,
        "exact": index.exact,
        "n_docs": index.n_docs,
        "build_s": seconds,
        "size_mb": index.size_bytes() / 2**20,
        "build_peak_rss_delta_mb": mem.delta_mb,
    }
    if mem.python_peak is not None:
        out["build_python_peak_mb"] = mem.python_peak / 2**20
    return index, out


def query_latency(
    index: RetrievalIndex, queries, k: int = 10, n_queries: Optional[int] = None, warmup: int = 5
) -> dict:
    """Single-query ``search`` latency in ms: mean, p50, p99 over up to ``n_queries`` queries."""
    rows = _rows(queries, n_queries)
    for q in rows[:warmup]:  # JIT compilation, lazy loading, caches
        index.search(q, k)
    times = np.empty(len(rows))
    for i, q in enumerate(rows):
        t0 = time.perf_counter()
        index.search(q, k)
        times[i] = time.perf_counter() - t0
    ms = times * 1e3
    return {
        "latency_mean_ms": float(ms.mean()),
        "latency_p50_ms": float(np.percentile(ms, 50)),
        "latency_p99_ms": float(np.percentile(ms, 99)),
        "latency_n": len(rows),
    }


def postings_per_query(docs, queries, n_queries: Optional[int] = None) -> float:
    """Mean postings an exhaustive term-at-a-time traversal reads per query: sum of the query terms' document
    frequencies."""
    d, q = as_csr(docs), as_csr(queries)[: n_queries or queries.shape[0]]
    df = np.bincount(d.indices, minlength=d.shape[1]).astype(np.float64)  # (V,)
    per_query = np.add.reduceat(df[q.indices], q.indptr[:-1]) if q.nnz else np.zeros(q.shape[0])
    per_query[np.diff(q.indptr) == 0] = 0.0  # reduceat repeats the next value for empty rows
    return float(per_query.mean()) if len(per_query) else 0.0


def read_bandwidth_gbs(n_bytes: int = 1 << 29, repeats: int = 5) -> float:
    """One thread's sequential read bandwidth in GB/s (best of ``repeats`` sums over an ``n_bytes`` array): the ceiling
    for a single-query traversal that streams postings from memory."""
    a = np.ones(n_bytes // 8, dtype=np.float64)
    a.sum()  # touch every page once
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a.sum()
        best = min(best, time.perf_counter() - t0)
    return float(n_bytes / best / 1e9)


def batch_qps(index: RetrievalIndex, queries, k: int = 10, threads: int = 1, repeats: int = 1) -> float:
    """Queries per second of one batched ``search`` call with ``threads`` threads (best of ``repeats``)."""
    n = queries.shape[0]
    index.search(queries[: min(n, 4 * threads)], k, threads=threads)  # warm-up (parallel JIT, thread pools)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        index.search(queries, k, threads=threads)
        best = min(best, time.perf_counter() - t0)
    return float(n / best)


def benchmark_index(
    kind: str,
    docs,
    queries,
    k: int = 10,
    exact_rows: Optional[np.ndarray] = None,
    n_latency: int = 200,
    threads: tuple[int, ...] = (1, 2),
    judge: Optional[Callable[[RetrievalIndex], dict]] = None,
    **params: Any,
) -> dict:
    """Build, size, memory, latency, QPS per thread count and (given exact rows) recall@k for one kind.

    ``judge(index)``: extra columns from the built index (stage 04: effectiveness on all test queries).
    """
    index, out = measure_build(kind, docs, **params)
    if judge is not None:
        out.update(judge(index))
    out.update(query_latency(index, queries, k, n_latency))
    for t in threads:
        out[f"qps_{t}t"] = batch_qps(index, queries, k, threads=t)
    if exact_rows is not None:
        out[f"recall@{k}"] = recall_at_k(index.search(queries, k)[1], exact_rows, k)
    return out


_CAP = 1.0 - 1e-6  # inclusion probabilities stay below 1: systematic sampling then never repeats a term


def _inclusion(g: np.ndarray, g_desc: np.ndarray, tail: np.ndarray, n: int) -> np.ndarray:
    """(V,) ``min(cap, c * g)`` summing to ``n`` (``g_desc``: positive g descending, ``tail[m] = g_desc[m:].sum()``)."""
    n = min(n, len(g_desc))
    m = np.arange(n)
    c = (n - m * _CAP) / tail[m]
    first = int(np.argmax(c * g_desc[m] <= _CAP))  # fewest capped terms that let the rest fit under the cap
    return np.minimum(_CAP, c[first] * g)


def _sorted_tail(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g_desc = np.sort(g[g > 0])[::-1]
    return g_desc, np.concatenate([np.cumsum(g_desc[::-1])[::-1], [0.0]])


def term_propensity(df: np.ndarray, row_nnz: np.ndarray, iters: int = 100, tol: float = 0.005) -> np.ndarray:
    """(V,) propensities ``g`` such that rows of ``n`` terms, term ``v`` kept with ``min(1, c_n g_v)``, reproduce
    ``df``.

    Fixed-point fit: average inclusion over the row-length distribution is rescaled towards
    ``df / N`` until every term is within ``tol`` (relative) or ``iters`` rounds have run.
    """
    values, counts = np.unique(row_nnz[row_nnz > 0], return_counts=True)
    weights = counts / len(row_nnz)
    target = df / len(row_nnz)  # (V,) share of rows holding each term
    live = target > 0
    g = df.astype(np.float64)
    for _ in range(iters):
        g_desc, tail = _sorted_tail(g)
        avg = sum(w * _inclusion(g, g_desc, tail, int(n)) for n, w in zip(values, weights))  # (V,)
        ratio = target[live] / avg[live]
        if np.abs(ratio - 1).max() < tol:
            break
        g[live] *= ratio
    return g


def _systematic_terms(rng: np.random.Generator, pi: np.ndarray, n_rows: int, n: int) -> np.ndarray:
    """(n_rows, n) distinct term ids per row by systematic sampling with inclusion probabilities ``pi``."""
    order = rng.permutation(len(pi))  # fresh term order: no fixed neighbour pairs
    cum = np.cumsum(pi[order], dtype=np.float64)
    cum *= n / cum[-1]
    points = rng.random((n_rows, 1)) + np.arange(n)  # (n_rows, n), spaced exactly 1 apart
    return order[np.minimum(np.searchsorted(cum, points, side="right"), len(pi) - 1)]


def synthetic_collection(like_csr, n_docs: int, seed: int = 0, chunk_entries: int = 5_000_000) -> sp.csr_matrix:
    """(n_docs, V) CSR float32 sampled from ``like_csr``'s nnz, document-frequency and weight distributions.

    Synthetic-from-real-distribution, not real documents (see the module docstring). A row of
    ``n`` non-zeros holds term ``v`` with probability ``min(1, c_n * g_v)`` (``c_n`` makes them
    sum to ``n``; ``g`` fitted by :func:`term_propensity` so that document frequencies are
    reproduced, frequent terms included; systematic sampling over a random term order gives
    exactly ``n`` distinct terms). Generated in chunks of about
    ``chunk_entries`` non-zeros: memory is the output (8 bytes per non-zero, ~1 GB for 1M
    documents of 125 non-zeros) plus one chunk.
    """
    src = as_csr(like_csr)
    if src.nnz == 0:
        raise ValueError("like_csr has no non-zeros to learn a distribution from")
    rng = np.random.default_rng(seed)
    vocab = src.shape[1]
    df = np.bincount(src.indices, minlength=vocab)  # (V,)
    nnz = rng.choice(np.diff(src.indptr), size=n_docs).astype(np.int64)  # (n_docs,)
    indptr = np.concatenate([[0], np.cumsum(nnz)])
    indices, data = np.empty(indptr[-1], np.int32), np.empty(indptr[-1], np.float32)
    g = term_propensity(df, np.diff(src.indptr))
    g_desc, tail = _sorted_tail(g)
    step = max(1, int(chunk_entries // max(1.0, nnz.mean())))
    for lo in range(0, n_docs, step):
        hi = min(n_docs, lo + step)
        keys = []
        for n in np.unique(nnz[lo:hi]):
            rows = lo + np.flatnonzero(nnz[lo:hi] == n)  # (R,)
            if n == 0:
                continue
            terms = _systematic_terms(rng, _inclusion(g, g_desc, tail, int(n)), len(rows), int(n))  # (R, n)
            keys.append((rows[:, None] * vocab + terms).ravel())
        keys = np.sort(np.concatenate(keys)) if keys else np.empty(0, np.int64)  # row-major, sorted terms
        a, b = indptr[lo], indptr[hi]
        indices[a:b] = keys % vocab
        data[a:b] = rng.choice(src.data, size=b - a)
    return sp.csr_matrix((data, indices, indptr), shape=(n_docs, vocab))
