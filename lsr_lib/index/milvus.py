"""Milvus sparse vectors behind the :class:`~lsr_lib.index.sparse.SparseIndex` interface (``milvus``).

Milvus stores learned sparse vectors in a ``SPARSE_FLOAT_VECTOR`` field with an inverted index
(``SPARSE_INVERTED_INDEX``; ``inverted_index_algo`` ``DAAT_MAXSCORE`` (default), ``DAAT_WAND`` or
``TAAT_NAIVE``) under inner product. The same ``pymilvus`` client talks to:

- **milvus-lite** (``uri`` None or a local ``*.db`` path): Milvus in a local process, what runs
  here, in the tests and in CI; the index directory keeps the database folder, so a saved index
  reopens without reinserting;
- **a Milvus server or cluster** (``uri="http://host:19530"``, ``token`` for authentication): the
  collection lives on the server; the index directory keeps only the address and collection name.
  Nothing else changes: that is the scale-out path of issue 17 (README "Scaling out").

The index is exact (every posting of every query term can count; MaxScore / WAND only skip
documents that cannot enter the top k) and is checked against brute force in stage 04. Milvus's
approximate search setting for sparse vectors, ``drop_ratio_search``, is refused by milvus-lite
3.2 ("only drop_ratio_search=0 is supported"), so no approximate sweep is offered. Document ids are the collection's row
numbers (the primary key); empty documents are not inserted
(they can never match).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
import weakref
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from .backends import dir_bytes, dist_version, empty_results, require
from .sparse import SparseIndex, as_csr

ALGORITHMS = ("DAAT_MAXSCORE", "DAAT_WAND", "TAAT_NAIVE")
LITE_DB = "milvus.db"  # the milvus-lite database folder inside a saved index directory


def _close(client) -> None:
    client.close()


def sparse_rows(m: sp.csr_matrix, rows) -> list[dict[int, float]]:
    """Milvus's sparse format for some rows of a CSR matrix: {term id: weight}."""
    out = []
    for i in rows:
        a, b = m.indptr[i], m.indptr[i + 1]
        out.append(dict(zip(m.indices[a:b].tolist(), m.data[a:b].tolist())))
    return out


class MilvusIndex(SparseIndex):
    """Milvus ``SPARSE_INVERTED_INDEX`` under inner product (exact)."""

    kind, exact = "milvus", True
    defaults: ClassVar[dict] = {
        "uri": None,
        "token": "",
        "collection": None,
        "algorithm": "DAAT_MAXSCORE",
        "insert_batch": 5_000,
    }
    search_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **params) -> None:
        self._pymilvus = require("pymilvus", "pymilvus milvus-lite", f"the {self.kind!r} index")
        super().__init__(**params)
        if self.params["algorithm"] not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {self.params['algorithm']!r}")
        self._client, self._tmp = None, None

    def backend_version(self) -> str:
        return f"pymilvus {dist_version('pymilvus')}" + (
            "" if self._server else f", milvus-lite {dist_version('milvus-lite')}"
        )

    @property
    def _server(self) -> bool:
        return self.params["uri"] is not None and str(self.params["uri"]).startswith(("http://", "https://", "tcp://"))

    def _open(self, uri: str) -> None:
        """A client on ``uri`` (the previous one is closed)."""
        if self._client is not None:
            self._finalizer()
        self._uri = uri
        self._client = self._pymilvus.MilvusClient(uri=uri, token=self.params["token"])
        self._finalizer = weakref.finalize(self, _close, self._client)

    def _build(self, docs: sp.csr_matrix) -> None:
        self.create()
        self.insert(docs, 0)
        self.finish()

    def create(self, n_terms: int | None = None) -> "MilvusIndex":
        """An empty collection, for bulk loading in chunks (:meth:`insert`, then :meth:`finish`): a
        collection larger than memory streams into a Milvus server this way (lsr_lib.run.atomic_job)."""
        if n_terms is not None:
            self.n_terms, self.n_docs = n_terms, 0
        pm = self._pymilvus
        if self.params["uri"] is not None:  # a server, or a milvus-lite path of the caller's
            uri = str(self.params["uri"])
        else:  # a milvus-lite folder of its own, removed once saved or garbage-collected
            tmp = tempfile.mkdtemp(prefix="milvus_")
            self._tmp = weakref.finalize(self, shutil.rmtree, tmp, True)
            uri = str(Path(tmp) / LITE_DB)
        self._open(uri)
        self._name = self.params["collection"] or f"lsr_{uuid.uuid4().hex[:12]}"
        if self._client.has_collection(self._name):
            self._client.drop_collection(self._name)
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", pm.DataType.INT64, is_primary=True)
        schema.add_field("v", pm.DataType.SPARSE_FLOAT_VECTOR)
        index = self._client.prepare_index_params()
        index.add_index(
            field_name="v",
            index_type="SPARSE_INVERTED_INDEX",
            metric_type="IP",
            params={"inverted_index_algo": self.params["algorithm"]},
        )
        self._client.create_collection(self._name, schema=schema, index_params=index)
        return self

    def insert(self, docs: sp.csr_matrix, first_row: int) -> None:
        """Insert documents as rows ``first_row ..`` (empty ones are skipped: they can never match)."""
        docs = as_csr(docs, self.n_terms)
        rows = np.flatnonzero(np.diff(docs.indptr))
        step = self.params["insert_batch"]
        for lo in range(0, len(rows), step):
            chunk = rows[lo : lo + step]
            self._client.insert(
                self._name, [{"id": int(first_row + i), "v": v} for i, v in zip(chunk, sparse_rows(docs, chunk))]
            )

    def finish(self, n_docs: int | None = None) -> None:
        """Flush, build the inverted index and load the collection for search."""
        if n_docs is not None:
            self.n_docs, self.doc_ids = n_docs, np.arange(n_docs)
        self._client.flush(self._name)
        self._client.load_collection(self._name)

    def _search(self, queries, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_csr(queries, self.n_terms)
        scores, rows = empty_results(q.shape[0], k)
        todo = np.flatnonzero(np.diff(q.indptr))  # empty queries have no candidates
        if len(todo) == 0:
            return scores, rows
        answers = self._client.search(
            self._name,
            data=sparse_rows(q, todo),
            anns_field="v",
            limit=k,
            search_params={"metric_type": "IP"},
            output_fields=[],
        )
        for i, hits in zip(todo, answers):
            for j, h in enumerate(hits):
                scores[i, j], rows[i, j] = h["distance"], int(h["id"])
        return scores, rows

    def size_bytes(self) -> int:
        """Bytes of the milvus-lite database folder (a server's storage is not visible here: 0)."""
        if self._server:
            return 0
        return dir_bytes(Path(self._uri))

    def _extra_meta(self) -> dict:
        return {**super()._extra_meta(), "collection": self._name, "uri": self.params["uri"] if self._server else None}

    def _save(self, directory: Path) -> None:
        if self._server:
            return  # the collection stays on the server; meta.json names it
        self._client.close()  # milvus-lite writes its folder on close
        shutil.copytree(self._uri, directory / LITE_DB)
        self._open(self._uri)  # the build copy stays usable until _after_save moves onto the saved one

    def _after_save(self, path: Path) -> None:
        if not self._server:
            self._open(str(Path(path) / LITE_DB))
            self._client.load_collection(self._name)
            if self._tmp is not None:
                self._tmp()  # the build folder

    def _load_sparse(self, directory: Path, meta: dict) -> None:
        self._name = meta["collection"]
        self._open(meta["uri"] if meta.get("uri") else str(directory / LITE_DB))
        self._client.load_collection(self._name)
