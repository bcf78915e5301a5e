"""Retrieval through an inverted index: the common interface, persistence and the registry (DESIGN.md sections 5, 6).

Every engine of DESIGN.md section 6 sits behind one interface, :class:`RetrievalIndex`:
``build(docs, doc_ids)`` then ``search(queries, k, threads) -> (scores, rows)``, ``size_bytes()``,
``save(path)`` and :func:`load_index`. Result conventions, shared by all backends:

- ``scores`` (Q, k) float32 and ``rows`` (Q, k) int64, best first; ``rows`` index the rows of the
  matrix given to ``build`` (``index.doc_ids[rows]`` gives the caller's ids).
- Only documents that share at least one term with the query are candidates (an inverted index
  never sees the others); fewer than ``k`` candidates leave row ``-1`` and score ``-inf``.
- Our own exact backends break ties by ascending row; third-party engines order ties their own
  way, so compare rankings with :func:`lsr_lib.index.topk.same_topk_up_to_ties`.

A saved index is a directory: ``meta.json`` (kind, parameters, backend version, sha256 fingerprint
of the indexed vectors and ids), ``doc_ids.npy`` and the backend's files. :func:`load_or_build`
rebuilds when the vectors (a retrained model), the build parameters or the backend version
changed; search-time parameters (``search_params``) never force a rebuild. Backends:
the exact ``ScipyBruteForce`` and ``NumbaIndex`` (``exact``), Seismic and Qdrant Edge
(``backends``), PISA (``pisa``), BMP (``bmp``), kANNolo (``kannolo``), faiss (``dense``): the
modules ``lsr_lib/index/<name>.py`` of this package.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
import scipy.sparse as sp

from ..storage.code_fingerprint import code_fingerprint
from ..storage.progress import notice
from .topk import prune_topk, recall_at_k, same_topk_up_to_ties, topk_disagreements  # noqa: F401 (re-exported)

INDEX_KINDS = {  # kind -> "module:Class", imported on first use so that no backend is needed at import
    "scipy": "lsr_lib.index.exact:ScipyBruteForce",
    "numba": "lsr_lib.index.exact:NumbaIndex",
    "numba_blocked": "lsr_lib.index.exact:NumbaBlockedIndex",
    "seismic": "lsr_lib.index.backends:SeismicIndex",
    "qdrant_edge": "lsr_lib.index.backends:QdrantEdgeIndex",
    "pisa": "lsr_lib.index.pisa:PisaIndex",
    "bmp": "lsr_lib.index.bmp:BmpIndex",
    "kannolo": "lsr_lib.index.kannolo:KannoloIndex",
    "milvus": "lsr_lib.index.milvus:MilvusIndex",
    "faiss_flat": "lsr_lib.index.dense:FaissFlatIndex",
    "faiss_hnsw": "lsr_lib.index.dense:FaissHNSWIndex",
}


def as_csr(x, n_cols: Optional[int] = None) -> sp.csr_matrix:
    """CSR float32 with sorted indices and no explicit zeros (a copy only when needed)."""
    m = sp.csr_matrix(x, dtype=np.float32)
    if n_cols is not None and m.shape[1] != n_cols:
        raise ValueError(f"queries have {m.shape[1]} columns but the index was built over {n_cols} terms")
    if not m.has_sorted_indices or (m.data == 0).any():
        m = m.copy()
        m.eliminate_zeros()
        m.sort_indices()
    return m


def check_finite(x, what: str) -> None:
    """Raise ValueError when a vector of ``x`` (CSR or dense rows) holds NaN or inf: an engine would return garbage or,
    compiled without bounds checks, crash."""
    values = x.data if sp.issparse(x) else np.asarray(x)
    if values.size and not np.isfinite(values).all():
        bad = ~np.isfinite(values)
        row = int(np.searchsorted(x.indptr, np.flatnonzero(bad)[0], side="right") - 1) if sp.issparse(x) else None
        if row is None:
            row = int(np.flatnonzero(bad.reshape(values.shape[0], -1).any(1))[0]) if values.ndim > 1 else 0
        raise ValueError(
            f"{what}: {int(bad.sum()):,} NaN or inf values (first in row {row}); the model or encoder that made these "
            "vectors is broken (NaN weights, an overflow): fix it and encode again; nothing was indexed or searched"
        )


def fingerprint(docs, doc_ids: Optional[np.ndarray] = None, chunk: int = 1 << 24) -> str:
    """sha256 of the vectors (CSR or dense, content only) and of the document ids."""
    h = hashlib.sha256()
    if sp.issparse(docs):
        m = as_csr(docs)
        h.update(f"csr{m.shape}".encode())
        parts = [(m.indptr, np.int64), (m.indices, np.int32), (m.data, np.float32)]
    else:
        a = np.asarray(docs)
        h.update(f"dense{a.shape}".encode())
        parts = [(a.reshape(-1), np.float32)]
    if doc_ids is not None:
        ids = np.asarray(doc_ids)
        parts.append((ids.astype(np.int64) if ids.dtype.kind in "iu" else np.char.encode(ids.astype(str)), None))
    for arr, dtype in parts:
        for s in range(0, max(1, len(arr)), chunk):  # chunked: no full-size copy for a cast
            piece = arr[s : s + chunk]
            h.update(np.ascontiguousarray(piece if dtype is None else piece.astype(dtype, copy=False)).tobytes())
    return h.hexdigest()


class RetrievalIndex(ABC):
    """An index over document vectors with exact or approximate inner-product top-k search."""

    kind: ClassVar[str]
    exact: ClassVar[bool]
    defaults: ClassVar[dict] = {}
    search_params: ClassVar[tuple[str, ...]] = ()  # settable after building; no rebuild when they change

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise TypeError(
                f"{type(self).__name__}: unknown parameters {sorted(unknown)}; known: {sorted(self.defaults)}"
            )
        self.params = {**self.defaults, **params}
        self.doc_ids: Optional[np.ndarray] = None
        self.n_docs = 0
        self.fingerprint: Optional[str] = None
        self.from_cache = False  # set by load_or_build when the saved index was reused

    @property
    def name(self) -> str:
        """Kind plus the parameters that differ from the defaults, for tables."""
        diff = {k: v for k, v in self.params.items() if self.defaults.get(k) != v}
        return self.kind + ("" if not diff else "(" + ", ".join(f"{k}={v}" for k, v in diff.items()) + ")")

    def build(self, docs, doc_ids: Optional[np.ndarray] = None) -> "RetrievalIndex":
        """Index ``docs`` ((N, V) CSR or (N, d) dense); ``doc_ids`` (N,) default to the row numbers."""
        self.n_docs = docs.shape[0]
        ids = np.arange(self.n_docs) if doc_ids is None else np.asarray(doc_ids)
        self.doc_ids = ids.astype(str) if ids.dtype == object else ids  # saved without pickle
        if len(self.doc_ids) != self.n_docs:
            raise ValueError(f"{len(self.doc_ids)} doc_ids for {self.n_docs} documents")
        check_finite(docs, f"{self.kind}: documents")
        self._build(docs)
        self._configure_search()
        return self

    def set_search_params(self, **params: Any) -> "RetrievalIndex":
        """Change search-time settings (e.g. Seismic's ``query_cut``, HNSW's ``ef_search``) without rebuilding."""
        wrong = set(params) - set(self.search_params)
        if wrong:
            raise TypeError(
                f"{sorted(wrong)} are not search-time parameters of {self.kind}: {list(self.search_params)}"
            )
        self.params.update(params)
        self._configure_search()
        return self

    def build_params(self) -> dict:
        """The parameters that shape the built structure (compared by :func:`load_or_build`)."""
        return json.loads(json.dumps({k: v for k, v in self.params.items() if k not in self.search_params}))

    def search(self, queries, k: int, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` per query: scores (Q, k) float32, rows (Q, k) int64 (-inf / -1 where missing)."""
        if self.doc_ids is None:
            raise RuntimeError("build() or load the index before searching")
        if k <= 0 or threads <= 0:
            raise ValueError("k and threads must be positive")
        check_finite(queries, f"{self.kind}: queries")
        return self._search(queries, int(k), int(threads))

    def backend_version(self) -> str:
        """Version of the package doing the work (stored in the metadata; a change forces a rebuild)."""
        return "lsr_lib"

    def save(self, path: str | Path) -> None:
        """Write the index directory atomically (a temporary sibling renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=path.name + ".tmp", dir=path.parent))
        try:
            self._save(tmp)
            np.save(tmp / "doc_ids.npy", self.doc_ids, allow_pickle=False)
            (tmp / "meta.json").write_text(json.dumps(self.meta(), indent=1))
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._after_save(path)

    @classmethod
    def load(cls, path: str | Path, **search_params: Any) -> "RetrievalIndex":
        """Open a saved index directory (same as :func:`load_index`)."""
        return load_index(path, **search_params)

    def code(self) -> dict:
        """Content hashes of the code that builds and reads this kind of index (its module's import closure)."""
        return code_fingerprint(type(self).__module__)["code"]

    def meta(self) -> dict:
        """What ``meta.json`` holds."""
        return {
            "code": self.code(),
            "kind": self.kind,
            "params": self.params,
            "n_docs": self.n_docs,
            "backend_version": self.backend_version(),
            "fingerprint": self.fingerprint,
            "exact": self.exact,
            **self._extra_meta(),
        }

    @abstractmethod
    def _build(self, docs) -> None: ...

    @abstractmethod
    def _search(self, queries, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]: ...

    @abstractmethod
    def size_bytes(self) -> int:
        """Bytes the search structure takes (in memory or on disk, as the backend documents)."""

    @abstractmethod
    def _save(self, directory: Path) -> None: ...

    @abstractmethod
    def _load(self, directory: Path, meta: dict) -> None: ...

    def _extra_meta(self) -> dict:
        return {}

    def _configure_search(self) -> None:
        """Apply search-time parameters to the backend (after building, loading or changing them)."""

    def _after_save(self, path: Path) -> None:
        """Backends that keep files open move onto the saved copy here."""


def index_class(kind: str) -> type[RetrievalIndex]:
    """The class registered for ``kind`` (imports its module; missing packages raise ImportError)."""
    if kind not in INDEX_KINDS:
        raise KeyError(f"unknown index kind {kind!r}; known: {sorted(INDEX_KINDS)}")
    module, cls = INDEX_KINDS[kind].split(":")
    return getattr(importlib.import_module(module), cls)


def make_index(kind: str, **params: Any) -> RetrievalIndex:
    """An unbuilt index of ``kind`` with ``params``."""
    return index_class(kind)(**params)


def read_meta(path: str | Path) -> Optional[dict]:
    """``meta.json`` of a saved index, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((Path(path) / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def load_index(path: str | Path, **search_params: Any) -> RetrievalIndex:
    """Open a saved index directory, optionally with new search-time parameters."""
    meta = read_meta(path)
    if meta is None:
        raise FileNotFoundError(f"no saved index (meta.json) at {path}")
    idx = make_index(meta["kind"], **meta["params"])
    idx.n_docs, idx.fingerprint = meta["n_docs"], meta["fingerprint"]
    idx.doc_ids = np.load(Path(path) / "doc_ids.npy", allow_pickle=False)
    idx._load(Path(path), meta)
    return idx.set_search_params(**search_params)


def load_or_build(
    kind: str, path: str | Path, docs, doc_ids: Optional[np.ndarray] = None, **params: Any
) -> RetrievalIndex:
    """Reuse the index saved at ``path`` if it indexes the same vectors with the same build settings, else rebuild and
    save."""
    fresh = make_index(kind, **params)
    fp = fingerprint(docs, doc_ids)
    meta = read_meta(path)
    wanted = {"code": fresh.code(), "kind": kind, "backend_version": fresh.backend_version(), "fingerprint": fp}
    if meta is not None and all(meta.get(key) == value for key, value in wanted.items()):
        saved_build = {k: v for k, v in meta.get("params", {}).items() if k not in fresh.search_params}
        if saved_build == fresh.build_params():
            try:
                idx = load_index(path, **{k: fresh.params[k] for k in fresh.search_params})
                idx.from_cache = True
                return idx
            except Exception as err:  # a damaged or incompatible directory: rebuild it
                notice(f"rebuilding the index at {path}: loading failed ({err!r})", warn=True)
    fresh.build(docs, doc_ids)
    fresh.fingerprint = fp
    fresh.save(path)
    return fresh


class SparseIndex(RetrievalIndex):
    """Base of the sparse backends: documents and queries are (N, V) CSR matrices."""

    n_terms: int = 0

    def build(self, docs, doc_ids: Optional[np.ndarray] = None) -> "SparseIndex":
        """Index (N, V) CSR ``docs``."""
        m = as_csr(docs)
        self.n_terms = m.shape[1]
        return super().build(m, doc_ids)

    def _extra_meta(self) -> dict:
        return {"n_terms": self.n_terms}

    def _load(self, directory: Path, meta: dict) -> None:
        self.n_terms = meta["n_terms"]
        self._load_sparse(directory, meta)

    @abstractmethod
    def _load_sparse(self, directory: Path, meta: dict) -> None: ...
