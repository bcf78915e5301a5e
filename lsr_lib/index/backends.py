"""Third-party sparse engines behind the :class:`~lsr_lib.index.sparse.SparseIndex` interface (DESIGN.md section 6).

- :class:`SeismicIndex` (``pyseismic-lsr``, approximate): documents are added by integer term id
  (``add_documents_by_id``; a query addresses term 42 as the string ``"42"``). ``n_postings``
  defaults to ``max(min_postings, 0.001 x N)``: the package default (3500) suits 8.8M documents
  and is slower than exact search at our sizes. ``batch_search`` answers out of query order, so
  results are mapped back by query id. Scores come from Seismic's compressed (half-precision)
  forward index: close to, not equal to, the exact scores.
- :class:`QdrantEdgeIndex` (``qdrant-edge-py``, exact): an in-process Qdrant shard with one named
  sparse vector; persistent on disk; the same sparse-vector model as a Qdrant server cluster.

PISA lives in ``lsr_lib.index.pisa``; the helpers here (``require``, ``quiet_native_output``) serve it too.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import shutil
import sys
import tempfile
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from .sparse import SparseIndex, as_csr


def require(module: str, pip_name: str, what: str):
    """Import ``module`` or raise an ImportError that names the pip package."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{what} needs the package {pip_name!r} (pip install {pip_name})") from err


@contextlib.contextmanager
def quiet_native_output(enabled: bool = True):
    """Silence stdout/stderr at the file-descriptor level (Rust / C++ progress printing)."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with open(os.devnull, "w") as null:
        for fd in saved:
            os.dup2(null.fileno(), fd)
        try:
            yield
        finally:
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)


def dir_bytes(path: Path, allocated: bool = False, skip: tuple[str, ...] = ()) -> int:
    """Total size of the files under ``path`` (allocated blocks for sparse files if asked)."""
    files = (p for p in Path(path).rglob("*") if p.is_file() and p.name not in skip)
    return int(sum(p.stat().st_blocks * 512 if allocated else p.stat().st_size for p in files))


def copy_sparse_file(src: str, dst: str) -> None:
    """Copy a file keeping its holes (Qdrant preallocates large sparse files; a plain copy fills them)."""
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        size, pos = os.fstat(fi.fileno()).st_size, 0
        while pos < size:
            try:
                start = os.lseek(fi.fileno(), pos, os.SEEK_DATA)
            except OSError:  # only a hole remains
                break
            pos = os.lseek(fi.fileno(), start, os.SEEK_HOLE)
            fi.seek(start)
            fo.seek(start)
            for _ in range(start, pos, 1 << 24):
                fo.write(fi.read(min(1 << 24, pos - fi.tell())))
        fo.truncate(size)
    shutil.copystat(src, dst)


def empty_results(n_q: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores (Q, k) all -inf and rows (Q, k) all -1."""
    return np.full((n_q, k), -np.inf, np.float32), np.full((n_q, k), -1, np.int64)  # (Q, k), (Q, k)


def dist_version(dist: str) -> str:
    """``name==version`` of an installed distribution."""
    return f"{dist}=={importlib.metadata.version(dist)}"


class SeismicIndex(SparseIndex):
    """Seismic (approximate): clustered, summarised, statically pruned posting lists."""

    kind, exact = "seismic", False
    defaults: ClassVar[dict] = {
        "n_postings": None,  # None: max(min_postings, round(n_postings_per_doc * N)), DESIGN.md section 6
        "n_postings_per_doc": 0.001,
        "min_postings": 10,
        "centroid_fraction": 0.1,
        "min_cluster_size": 2,
        "summary_energy": 0.4,
        "max_fraction": 1.5,
        "doc_cut": 15,
        "query_cut": 20,
        "heap_factor": 0.7,  # search-time: query terms kept, block-skipping factor
        "build_threads": 0,
        "quiet": True,  # 0: all cores (Rayon default)
    }
    search_params = ("query_cut", "heap_factor", "build_threads", "quiet")

    def __init__(self, **params) -> None:
        self._seismic = require("seismic", "pyseismic-lsr", "the 'seismic' index")
        super().__init__(**params)

    def backend_version(self) -> str:
        return dist_version("pyseismic-lsr")

    def _classes(self):
        large = self.n_terms > 65_535  # the default classes store term ids as u16
        s = self._seismic
        return (s.SeismicDatasetLV, s.SeismicIndexLV) if large else (s.SeismicDataset, s.SeismicIndex)

    def resolved_n_postings(self) -> int:
        """The ``n_postings`` used for this collection size."""
        p = self.params
        return int(p["n_postings"] or max(p["min_postings"], round(p["n_postings_per_doc"] * self.n_docs)))

    def _build(self, docs: sp.csr_matrix) -> None:
        dataset_cls, index_cls = self._classes()
        p = self.params
        ds = dataset_cls(dim=self.n_terms)
        ds.add_documents_by_id(
            [str(i) for i in range(self.n_docs)], docs.indices.astype(np.int64), docs.data, docs.indptr.astype(np.int64)
        )
        with quiet_native_output(p["quiet"]):
            self._index = index_cls.build_from_dataset(
                ds,
                n_postings=self.resolved_n_postings(),
                centroid_fraction=p["centroid_fraction"],
                min_cluster_size=p["min_cluster_size"],
                summary_energy=p["summary_energy"],
                max_fraction=p["max_fraction"],
                doc_cut=p["doc_cut"],
                num_threads=p["build_threads"],
            )
        self._size = None

    def _search(self, queries, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_csr(queries, self.n_terms)
        scores, rows = empty_results(q.shape[0], k)
        s_type = self._seismic.get_seismic_string()
        todo = np.flatnonzero(np.diff(q.indptr))  # empty queries have no candidates
        comps = [q.indices[q.indptr[i] : q.indptr[i + 1]].astype(s_type) for i in todo]
        vals = [q.data[q.indptr[i] : q.indptr[i + 1]] for i in todo]
        cut, heap = self.params["query_cut"], self.params["heap_factor"]
        if len(todo) == 1:
            results = [self._index.search(str(todo[0]), comps[0], vals[0], k, cut, heap)]
        else:
            ids = np.array([str(i) for i in todo], dtype=s_type)
            results = self._index.batch_search(ids, comps, vals, k, cut, heap, num_threads=threads)
        for res in results:  # out of query order: map back by query id
            for j, (qid, score, doc) in enumerate(res):
                scores[int(qid), j], rows[int(qid), j] = score, int(doc)
        return scores, rows

    def size_bytes(self) -> int:
        """Bytes of the serialised index (forward index, postings, summaries)."""
        if getattr(self, "_size", None) is None:
            with tempfile.TemporaryDirectory() as d, quiet_native_output(self.params["quiet"]):
                self._index.save(str(Path(d) / "s"))
                self._size = dir_bytes(Path(d))
        return self._size

    def _save(self, directory: Path) -> None:
        with quiet_native_output(self.params["quiet"]):
            self._index.save(str(directory / "seismic"))  # writes seismic.index.seismic

    def _load_sparse(self, directory: Path, meta: dict) -> None:
        with quiet_native_output(self.params["quiet"]):
            self._index = self._classes()[1].load(str(directory / "seismic.index.seismic"))
        self._size = None


def _close_shard(shard, tmp: str | None) -> None:
    shard.close()
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


class QdrantEdgeIndex(SparseIndex):
    """Qdrant Edge (exact): an in-process, on-disk Qdrant shard with a named sparse vector."""

    kind, exact = "qdrant_edge", True
    defaults: ClassVar[dict] = {"vector_name": "lsr", "upsert_batch": 5_000, "full_scan": False}
    search_params = ("upsert_batch", "full_scan")  # full_scan: Qdrant's exact=True, scoring every point

    def __init__(self, **params) -> None:
        self._qe = require("qdrant_edge", "qdrant-edge-py", "the 'qdrant_edge' index")
        super().__init__(**params)
        self._shard = None

    def backend_version(self) -> str:
        return dist_version("qdrant-edge-py")

    def _open(self, shard_dir: Path, shard, tmp: str | None = None) -> None:
        if self._shard is not None:
            self._finalizer()
        self._shard, self._shard_dir = shard, Path(shard_dir)
        self._finalizer = weakref.finalize(self, _close_shard, shard, tmp)

    def _build(self, docs: sp.csr_matrix) -> None:
        qe, name = self._qe, self.params["vector_name"]
        tmp = tempfile.mkdtemp(prefix="qdrant_edge_")
        config = qe.EdgeConfig(sparse_vectors={name: qe.EdgeSparseVectorParams()}, wal_enabled=False)
        self._open(Path(tmp) / "shard", qe.EdgeShard.create(str(Path(tmp) / "shard"), config), tmp)
        step = self.params["upsert_batch"]
        for lo in range(0, self.n_docs, step):
            points = []
            for i in range(lo, min(lo + step, self.n_docs)):
                a, b = docs.indptr[i], docs.indptr[i + 1]
                if b > a:  # an empty document can never match
                    points.append(
                        qe.Point(i, {name: qe.SparseVector(docs.indices[a:b].tolist(), docs.data[a:b].tolist())})
                    )
            if points:
                self._shard.update(qe.UpdateOperation.upsert_points(points))
        self._shard.optimize()  # immutable segments with a compact inverted index
        self._shard.flush()

    def _request(self, q: sp.csr_matrix, i: int, k: int):
        qe = self._qe
        a, b = q.indptr[i], q.indptr[i + 1]
        vec = qe.SparseVector(q.indices[a:b].tolist(), q.data[a:b].tolist())
        return qe.QueryRequest(
            limit=k,
            query=qe.Query.Nearest(vec, using=self.params["vector_name"]),
            with_vector=False,
            with_payload=False,
            params=qe.SearchParams(exact=self.params["full_scan"]),
        )

    def _search(self, queries, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_csr(queries, self.n_terms)
        scores, rows = empty_results(q.shape[0], k)
        todo = np.flatnonzero(np.diff(q.indptr))  # empty queries have no candidates

        def run(chunk: np.ndarray) -> list:  # Qdrant releases the GIL: chunks run in parallel
            return self._shard.query_batch(self._qe.QueryBatchRequest([self._request(q, int(i), k) for i in chunk]))

        if len(todo) <= 1:
            answers = [self._shard.query(self._request(q, int(i), k)) for i in todo]
        elif threads == 1:
            answers = run(todo)
        else:
            with ThreadPoolExecutor(min(threads, len(todo))) as pool:
                answers = [a for part in pool.map(run, np.array_split(todo, min(threads, len(todo)))) for a in part]
        for i, points in zip(todo, answers):
            for j, p in enumerate(points):
                scores[i, j], rows[i, j] = p.score, int(p.id)
        return scores, rows

    def size_bytes(self) -> int:
        """Allocated bytes of the shard's segments on disk (its files are sparse)."""
        self._shard.flush()
        return dir_bytes(self._shard_dir / "segments", allocated=True)

    def _save(self, directory: Path) -> None:
        self._shard.flush()
        shutil.copytree(self._shard_dir, directory / "shard", copy_function=copy_sparse_file)

    def _after_save(self, path: Path) -> None:
        shard_dir = Path(path) / "shard"
        self._open(shard_dir, self._qe.EdgeShard.load(str(shard_dir)))  # closes the temporary build

    def _load_sparse(self, directory: Path, meta: dict) -> None:
        self._open(directory / "shard", self._qe.EdgeShard.load(str(directory / "shard")))
