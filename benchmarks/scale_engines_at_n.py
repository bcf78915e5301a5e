"""Plan the scale benchmark: every sparse engine and HNSW at N model-encoded documents, one run (issue 29).

    python benchmarks/scale_engines_at_n.py 1000000 with_control,without_control [numba_blocked,seismic,...] [--append]
    # writes results/benchmarks/scale_engines_1000000.json (--append: adds to its rows, e.g. engines run later)

The same dense documents as stage 04's scale benchmark (``dense_like`` of the teacher's test images, the profile's
seed), encoded by each condition's D2S image side; queries are the first 400 test captions. Each index is built
once per build setting and its search-time parameters are swept on that build (the profile's ``index`` sweeps:
Seismic's (query_cut, heap_factor), BMP's alpha, kANNolo's and HNSW's efSearch). Per setting: single-query
latency (mean, p50, p99 over 100 queries, 1 thread), queries/s of one batched call at 1 and 2 threads, and
recall@10 against the brute-force top-10 of the same documents. A planning tool for ``index.scale_backends`` at
1M (which engines reach recall 0.95, at what latency and build time); stage 04 (``make bench``) measures the
committed rows. Milvus (milvus-lite) is left out: exact search takes about 0.7 s a query at 100k here.
"""

from __future__ import annotations

import gc
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lsr_lib.artifacts import dense_dir, load_condition_vectors, load_dense_dir  # noqa: E402
from lsr_lib.artifacts.catalog import d2s_run_dir  # noqa: E402
from lsr_lib.config.profiles import load_config  # noqa: E402
from lsr_lib.index.latency import batch_qps, measure_build, query_latency, recall_at_k  # noqa: E402
from lsr_lib.results.provenance import machine, seed_everything  # noqa: E402
from lsr_lib.stages.retrieve_with_inverted_index import brute_force_topk, dense_like, encode_documents  # noqa: E402
from lsr_lib.storage.atomic import atomic_write_json  # noqa: E402
from lsr_lib.train.d2s import load_best  # noqa: E402

ENGINES = ("numba_blocked", "seismic", "bmp", "kannolo", "faiss_flat", "faiss_hnsw")
N_QUERIES, N_LATENCY, K = 400, 100, 10


def settings(ix) -> dict[str, list[tuple[dict, list[dict]]]]:
    """Per engine: (build parameters, [search parameters, ...]) from the profile's ``index`` section."""
    return {
        "numba_blocked": [({}, [{}])],
        "seismic": [
            ({"n_postings_per_doc": p}, [{"query_cut": q, "heap_factor": h} for q, h in ix.seismic_search])
            for p in ix.seismic_postings_per_doc
        ],
        "bmp": [({"reorder": "cluster"}, [{"alpha": a, "beta": b} for a, b in ix.bmp_search])],
        "kannolo": [
            (
                {"m": ix.kannolo_m, "ef_construction": ix.kannolo_ef_construction},
                [{"ef_search": e} for e in ix.kannolo_ef_search],
            )
        ],
        "faiss_flat": [({}, [{}])],
        "faiss_hnsw": [
            ({"ef_construction": c}, [{"ef_search": e} for e in ix.hnsw_ef_search]) for c in ix.hnsw_ef_construction
        ],
    }


def encoded(cfg, cond: str, dense_docs: np.ndarray):
    """The documents through ``cond``'s image side, cached under ``data/cache/<profile>/scale_engines/`` by model
    and collection (1M documents take minutes to encode on 2 cores)."""
    import scipy.sparse as sp

    model, meta = load_best(d2s_run_dir(cfg, cond))
    key = hashlib.sha256(json.dumps([meta, len(dense_docs), cfg.seed], sort_keys=True, default=str).encode())
    key.update(np.ascontiguousarray(dense_docs).data)  # the documents themselves: another teacher, another cache
    name = f"{cond}_{len(dense_docs)}_{key.hexdigest()[:16]}.npz"
    path = ROOT / "data" / "cache" / cfg.profile / "scale_engines" / name
    if path.exists():
        return sp.load_npz(path).tocsr()
    docs = encode_documents(model, dense_docs, 1024, progress=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    sp.save_npz(tmp, docs, compressed=False)
    tmp.replace(path)
    return docs


def main(argv: list[str]) -> int:
    append = "--append" in argv
    argv = [a for a in argv if a != "--append"]
    n, conds = int(argv[0]), [] if argv[1] == "-" else argv[1].split(",")  # "-": the dense engines only
    engines = argv[2].split(",") if len(argv) > 2 else list(ENGINES)
    cfg = load_config("default")
    seed_everything(cfg.seed, 2)
    plan = settings(cfg.index)
    _, img, txt = load_dense_dir(dense_dir(cfg), "test")
    vectors = load_condition_vectors(cfg, "test")
    dense_docs = dense_like(img, n, seed=cfg.seed)
    out = ROOT / "results" / "benchmarks" / f"scale_engines_{n}.json"
    rows: list[dict] = json.loads(out.read_text())["rows"] if append and out.exists() else []

    def record(**row) -> None:
        print(json.dumps(row), flush=True)
        rows.append(row)
        atomic_write_json(out, {"benchmark": "scale_engines_at_n", "n_docs": n, "machine": machine(), "rows": rows})

    def sweep(condition: str, kind: str, docs, queries, exact) -> None:
        for build, searches in plan[kind]:
            index, built = measure_build(kind, docs, **build)
            for search in searches:
                index.set_search_params(**search)
                row = {"condition": condition, "kind": kind, "build": build, "search": search}
                row.update({k: built[k] for k in ("build_s", "size_mb", "build_peak_rss_delta_mb")})
                row.update(query_latency(index, queries, K, N_LATENCY))
                row.update({f"qps_{t}t": batch_qps(index, queries, K, threads=t) for t in (1, 2)})
                row[f"recall@{K}"] = recall_at_k(index.search(queries, K)[1], exact, K)
                record(**row)
            del index
            gc.collect()

    for cond in conds:
        t = time.time()
        docs = encoded(cfg, cond, dense_docs)
        terms = int((np.diff(docs.tocsc().indptr) > 0).sum())
        record(condition=cond, step="encode", seconds=time.time() - t, nnz_per_doc=docs.nnz / n, distinct_terms=terms)
        queries = vectors[cond]["texts"][:N_QUERIES]
        exact = brute_force_topk(queries, docs, K)[1]
        for kind in engines:
            if kind in plan and not kind.startswith("faiss"):
                sweep(cond, kind, docs, queries, exact)
        del docs
        gc.collect()
    queries = np.ascontiguousarray(txt[:N_QUERIES], dtype=np.float32)
    exact = brute_force_topk(queries, dense_docs, K)[1]
    for kind in engines:
        if kind.startswith("faiss"):
            sweep("dense teacher", kind, dense_docs, queries, exact)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
