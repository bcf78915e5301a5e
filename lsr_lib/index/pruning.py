"""Index-side efficiency measures that need no retraining (issue 16): a setting is a spec string.

A spec joins parts with ``+``; each part is one measure, applied in this order:

- ``d<k>``: keep the k largest weights of each document vector (static document pruning);
- ``q<k>``: keep the k largest weights of each query vector (query term pruning);
- ``df<share>``: cap every posting list at ``share`` x documents, keeping its largest weights
  (term-centric pruning of very frequent terms, the ones a few learned terms make long);
- ``u<bits>``: quantise document weights to ``2^bits - 1`` uniform levels of the largest weight
  (scores are computed on the dequantised weights; the index stores ``bits`` per weight).

``none`` is the unpruned setting. Example: ``d32+q16+df0.1+u8``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..config.pruning_spec import Pruning, parse  # noqa: F401 (re-exported)
from .topk import prune_topk


def cap_posting_lists(csr, share: float) -> sp.csr_matrix:
    """Keep at most ``ceil(share x rows)`` postings per term (column): the largest weights, ties by lower row."""
    m = sp.csc_matrix(csr, dtype=np.float32, copy=True)
    m.eliminate_zeros()
    cap = int(np.ceil(share * m.shape[0]))
    lengths = np.diff(m.indptr)
    if lengths.max(initial=0) <= cap:
        return m.tocsr()
    keep = np.ones(m.nnz, dtype=bool)
    for t in np.flatnonzero(lengths > cap):
        a, b = m.indptr[t], m.indptr[t + 1]
        order = np.lexsort((m.indices[a:b], -m.data[a:b]))  # weight desc, row asc
        keep[a + order[cap:]] = False
    col = np.repeat(np.arange(m.shape[1]), lengths)[keep]
    return sp.csr_matrix((m.data[keep], (m.indices[keep], col)), shape=m.shape)


def quantise(csr, bits: int) -> sp.csr_matrix:
    """Uniform quantisation of non-negative weights to ``2^bits - 1`` levels of the largest, dequantised.

    A weight that would round to level 0 is kept at level 1 (the posting stays; its term matched).
    """
    m = sp.csr_matrix(csr, dtype=np.float32, copy=True)
    if m.nnz == 0:
        return m
    if m.data.min() < 0:
        raise ValueError("quantise expects non-negative weights (learned sparse vectors are ReLU / log-saturated)")
    levels = (1 << bits) - 1
    step = float(m.data.max()) / levels
    if step > 0:
        m.data = (np.clip(np.rint(m.data / step), 1, levels) * step).astype(np.float32)
    return m


def apply(spec: str | Pruning, docs, queries) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(documents, queries) after the spec's measures, in the module's order."""
    p = parse(spec) if isinstance(spec, str) else spec
    docs, queries = sp.csr_matrix(docs), sp.csr_matrix(queries)
    if p.doc_k:
        docs = prune_topk(docs, p.doc_k)
    if p.query_k:
        queries = prune_topk(queries, p.query_k)
    if p.df_share:
        docs = cap_posting_lists(docs, p.df_share)
    if p.bits:
        docs = quantise(docs, p.bits)
    return docs, queries
