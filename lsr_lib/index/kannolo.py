"""kANNolo (Delfino et al., ECIR 2025) sparse HNSW behind the :class:`~lsr_lib.index.sparse.SparseIndex` interface
(``kannolo``).

An approximate graph index under inner product: build parameters ``m`` (neighbours per node),
``ef_construction`` (candidate list while building), ``encoding`` (how the document values are
stored: ``"plain"``, kANNolo's blocked sparse encoder with float16 values, ``"fixed_u8"`` /
``"fixed_u16"``, 8 / 16-bit scalar quantisation) and ``graph_type`` (``"standard"``,
``"permuted"`` or ``"compressed"``: same results, other layout); search parameters ``ef_search``
(candidate list while searching, raised to k when smaller) and ``early_exit_threshold``
(kANNolo's distance-adaptive early termination; None: off). Scores come from the stored values,
so they are close to, not equal to, the float scores. ``threads`` goes to ``batch_search``'s
``num_threads`` (1: a serial loop).

Adaptations to the interface's conventions:

- term ids are u16 in kANNolo's sparse datasets (at most 65,536 terms; checked at build), and a
  query term above the largest id the collection uses aborts the process, so such terms (which
  no document has) are dropped from queries;
- the graph walk also reaches documents that share no term with the query (score 0); they are
  not candidates of an inverted index, so results with score 0 are dropped (-1 / -inf padding).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from .backends import dist_version, empty_results, quiet_native_output, require
from .sparse import SparseIndex, as_csr

ENCODINGS = {"plain": "SparsePlainHNSW", "fixed_u8": "SparseFixedU8HNSW", "fixed_u16": "SparseFixedU16HNSW"}
MAX_TERMS = 65_536  # kANNolo's sparse components are u16


class KannoloIndex(SparseIndex):
    """kANNolo sparse HNSW (approximate): graph search under inner product."""

    kind, exact = "kannolo", False
    defaults: ClassVar[dict] = {
        "m": 32,
        "ef_construction": 200,
        "encoding": "plain",
        "graph_type": "standard",
        "ef_search": 100,
        "early_exit_threshold": None,
        "quiet": True,
    }
    search_params = ("ef_search", "early_exit_threshold", "quiet")

    def __init__(self, **params) -> None:
        self._kannolo = require("kannolo", "kannolo", "the 'kannolo' index")
        super().__init__(**params)
        if self.params["encoding"] not in ENCODINGS:
            raise ValueError(f"encoding must be one of {sorted(ENCODINGS)}, got {self.params['encoding']!r}")
        self._size = None

    def backend_version(self) -> str:
        return dist_version("kannolo")

    def _class(self):
        return getattr(self._kannolo, ENCODINGS[self.params["encoding"]])

    def _kwargs(self) -> dict:
        """``metric`` where the class takes one (dot product is the plain encoder's only metric) and ``graph_type``."""
        metric = {} if self.params["encoding"] == "plain" else {"metric": "dotproduct"}
        return {**metric, "graph_type": self.params["graph_type"]}

    def _build(self, docs: sp.csr_matrix) -> None:
        if docs.nnz == 0:
            raise ValueError("kannolo: the collection has no non-zero weight")
        self.dim = int(docs.indices.max()) + 1  # kANNolo's dimension: the largest term id used, plus one
        if self.dim > MAX_TERMS:
            raise ValueError(f"kannolo stores term ids as u16: term {self.dim - 1} is out of range")
        p = self.params
        with quiet_native_output(p["quiet"]):
            self._index = self._class().build_from_arrays(
                docs.indices.astype(np.int32),
                docs.data.astype(np.float32),
                docs.indptr.astype(np.int64),
                m=p["m"],
                ef_construction=p["ef_construction"],
                **self._kwargs(),
            )
        self._size = None

    def _search(self, queries, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_csr(queries, self.n_terms)
        scores, rows = empty_results(q.shape[0], k)
        # on the raw arrays: scipy's row and column slicing took 0.15 ms a query, three times kANNolo's own search of
        # one query at 3,000 documents, and single-query latency is what the scale benchmark compares
        per_row, indices, data = np.diff(q.indptr), q.indices, q.data
        keep = indices < self.dim  # terms past the collection's largest id match nothing (and would abort kANNolo)
        if not keep.all():
            per_row = np.bincount(np.repeat(np.arange(q.shape[0]), per_row)[keep], minlength=q.shape[0])
            indices, data = indices[keep], data[keep]
        todo = np.flatnonzero(per_row)  # empty queries have no candidates (and no entries to drop)
        if len(todo) == 0:
            return scores, rows
        indptr = np.zeros(len(todo) + 1, dtype=np.int64)
        np.cumsum(per_row[todo], out=indptr[1:])
        ef = max(int(self.params["ef_search"]), k)
        # no quiet_native_output here: kANNolo prints while building and loading, not searching, and redirecting the
        # descriptors cost 0.03 ms a query
        dist, ids = self._index.batch_search(
            indices.astype(np.int32),
            data.astype(np.float32),
            indptr,
            k=k,
            ef_search=ef,
            early_exit_threshold=self.params["early_exit_threshold"],
            num_threads=threads,
        )
        dist, ids = dist.reshape(len(todo), k), ids.reshape(len(todo), k).astype(np.int64)
        ok = (ids >= 0) & np.isfinite(dist) & (dist != 0)  # padding (inf / -1) and documents without a shared term
        if ok.all():  # every query got k documents that share a term with it: no reordering
            scores[todo], rows[todo] = dist, ids
            return scores, rows
        order = np.argsort(~ok, axis=1, kind="stable")  # kept results first, best first as kANNolo returns them
        ok, dist, ids = (np.take_along_axis(a, order, axis=1) for a in (ok, dist, ids))
        scores[todo] = np.where(ok, dist, -np.inf).astype(np.float32)
        rows[todo] = np.where(ok, ids, -1)
        return scores, rows

    def size_bytes(self) -> int:
        """Bytes of the serialised index (graph and stored vectors)."""
        if self._size is None:
            with tempfile.TemporaryDirectory() as d:
                self._index.save(str(Path(d) / "k"))
                self._size = int((Path(d) / "k").stat().st_size)
        return self._size

    def _extra_meta(self) -> dict:
        return {**super()._extra_meta(), "dim": self.dim}

    def _save(self, directory: Path) -> None:
        self._index.save(str(directory / "kannolo.bin"))

    def _load_sparse(self, directory: Path, meta: dict) -> None:
        self.dim = meta["dim"]
        with quiet_native_output(self.params["quiet"]):
            self._index = self._class().load(str(directory / "kannolo.bin"), **self._kwargs())
        self._size = None
