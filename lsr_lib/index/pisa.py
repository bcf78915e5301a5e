"""PISA behind the :class:`~lsr_lib.index.sparse.SparseIndex` interface (``pyterrier-pisa``; DESIGN.md section 6).

PISA scores integer impacts, so weights are multiplied by ``scale`` = 100 and rounded to
integers, for documents and queries alike (weights below 0.005 vanish). Search is block-max WAND,
exact top-k *for the quantised vectors*; scores are the integer dot products divided by
``scale**2``, so they approximate the float scores. The package bundles PISA (no Java). The index
is built from a ``{term id as string: integer weight}`` representation of each document.
Searches call PISA's retrieval routine (``_pisathon.retrieve``) directly with pre-tokenised
queries: PyTerrier's pandas pipeline around it costs ~1.5 ms per call, far more than the search
on our collections; the call mirrors ``PisaRetrieve.transform`` of pyterrier-pisa 0.4.9.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from .sparse import SparseIndex, as_csr
from .backends import dir_bytes, empty_results, dist_version, quiet_native_output, require


def _term_weights(m: sp.csr_matrix, i: int) -> dict[str, float]:
    """Row ``i`` as PISA's pre-tokenised form: ``{term id as string: weight}``."""
    a, b = m.indptr[i], m.indptr[i + 1]
    return dict(zip(m.indices[a:b].astype(str).tolist(), m.data[a:b].tolist()))


class PisaIndex(SparseIndex):
    """PISA (block-max WAND, exact top-k on weights quantised as ``round(w * scale)``)."""

    kind, exact = "pisa", False  # exact for the quantised vectors, not for the float ones
    defaults: ClassVar[dict] = {
        "scale": 100.0,
        "query_algorithm": "block_max_wand",
        "index_encoding": "block_simdbp",
        "batch_size": 100_000,
        "quiet": True,
    }
    search_params = ("query_algorithm", "batch_size", "quiet")

    def __init__(self, **params) -> None:
        self._pp = require("pyterrier_pisa", "pyterrier-pisa", "the 'pisa' index")
        super().__init__(**params)
        self._tmp = None

    def backend_version(self) -> str:
        return dist_version("pyterrier-pisa")

    def quantise(self, m: sp.csr_matrix) -> sp.csr_matrix:
        """The integer-valued (float32) matrix PISA indexes: ``round(w * scale)``, zeros dropped."""
        out = as_csr(m).copy()
        out.data = np.rint(out.data * self.params["scale"]).astype(np.float32)
        out.eliminate_zeros()
        return out

    def _open(self, index_dir: Path) -> None:
        with quiet_native_output(self.params["quiet"]):
            self._pisa = self._pp.PisaIndex(
                str(index_dir), stemmer="none", stops="none", index_encoding=self.params["index_encoding"]
            )
            self._retriever = self._pisa.quantized(num_results=10, toks_scale=1.0)
        self._index_dir = Path(index_dir)
        self._configure_search()

    def _configure_search(self) -> None:
        if getattr(self, "_retriever", None) is not None:
            self._retriever.query_algorithm = self._pp.PisaQueryAlgorithm(self.params["query_algorithm"])

    def _build(self, docs: sp.csr_matrix) -> None:
        qd = self.quantise(docs)
        self._tmp = tempfile.TemporaryDirectory(prefix="pisa_")
        index_dir = Path(self._tmp.name) / "pisa"
        index = self._pp.PisaIndex(
            str(index_dir),
            stemmer="none",
            stops="none",
            batch_size=self.params["batch_size"],
            index_encoding=self.params["index_encoding"],
        )
        toks = ({"docno": str(i), "toks": _term_weights(qd, i)} for i in range(self.n_docs))
        with quiet_native_output(self.params["quiet"]):
            index.toks_indexer("toks", scale=1.0).index(toks)
        self._open(index_dir)  # compresses the index and builds the block-max data

    def _search(self, queries, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        qq = self.quantise(as_csr(queries, self.n_terms))
        scores, rows = empty_results(qq.shape[0], k)
        inp = [(i, _term_weights(qq, i)) for i in np.flatnonzero(np.diff(qq.indptr)).tolist()]
        if not inp:
            return scores, rows
        n = len(inp) * k
        qidx, docnos, ranks, vals = (
            np.empty(n, np.int32),
            np.empty(n, object),
            np.empty(n, np.int32),
            np.empty(n, np.float32),
        )
        r = self._retriever
        size = self._pp._pisathon.retrieve(
            r._ctxt,
            r.query_algorithm.value,
            inp,
            k=k,
            threads=threads,
            query_weighted=1,
            pretokenised=True,
            result_qidxs=qidx,
            result_docnos=docnos,
            result_ranks=ranks,
            result_scores=vals,
        )
        qi, rk = qidx[:size], ranks[:size]
        scores[qi, rk] = vals[:size] / np.float32(self.params["scale"] ** 2)
        rows[qi, rk] = docnos[:size].astype(np.int64)
        return scores, rows

    def size_bytes(self) -> int:
        """Bytes on disk of what search reads: compressed postings, block-max data, lexicons."""
        return dir_bytes(self._index_dir, skip=("inv.docs", "inv.freqs"))  # raw postings only feed compression

    def _save(self, directory: Path) -> None:
        shutil.copytree(self._index_dir, directory / "pisa")

    def _after_save(self, path: Path) -> None:
        self._open(Path(path) / "pisa")
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _load_sparse(self, directory: Path, meta: dict) -> None:
        self._open(directory / "pisa")
