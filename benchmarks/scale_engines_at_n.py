"""Plan the scale benchmark: every sparse engine and HNSW at N model-encoded documents, one run (issue 29).

    python benchmarks/scale_engines_at_n.py 100000 with_control,without_control
    # writes results/benchmarks/scale_engines_100000.json

The same dense documents as stage 04's scale benchmark (``dense_like`` of the teacher's test images, the profile's
seed), encoded by each condition's D2S image side; queries are the first 400 test captions. Each engine is timed
with ``lsr_lib.index.latency.benchmark_index`` (100 single queries, 1 thread) and judged by recall@10 against the
brute-force top-10. A planning tool for ``index.scale_backends`` and the sweeps at 1M (which engines reach recall
0.95, at what latency and build time), not a result: stage 04 (``make bench``) measures the committed rows.
"""

from __future__ import annotations

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
from lsr_lib.index.latency import benchmark_index  # noqa: E402
from lsr_lib.results.provenance import machine, seed_everything  # noqa: E402
from lsr_lib.stages.retrieve_with_inverted_index import brute_force_topk, dense_like, encode_documents  # noqa: E402
from lsr_lib.storage.atomic import atomic_write_json  # noqa: E402
from lsr_lib.train.d2s import load_best  # noqa: E402

SPARSE = [
    ("numba", {}),
    ("numba_blocked", {}),
    ("seismic", {"n_postings_per_doc": 0.003, "query_cut": 20, "heap_factor": 0.7}),
    ("seismic", {"n_postings_per_doc": 0.01, "query_cut": 10, "heap_factor": 0.5}),
    ("bmp", {"alpha": 1.0}),
    ("bmp", {"reorder": "cluster", "alpha": 1.0}),
    ("bmp", {"reorder": "cluster", "alpha": 0.8}),
    ("kannolo", {"ef_search": 64}),
    ("kannolo", {"ef_search": 128}),
]
HNSW_EF = (64, 128, 256)


def main(argv: list[str]) -> int:
    n, conds = int(argv[0]), argv[1].split(",")
    cfg = load_config("default")
    seed_everything(cfg.seed, 2)
    _, img, txt = load_dense_dir(dense_dir(cfg), "test")
    vectors = load_condition_vectors(cfg, "test")
    dense_docs = dense_like(img, n, seed=cfg.seed)
    rows, nq = [], 400

    def record(**row):
        print(json.dumps(row), flush=True)
        rows.append(row)

    for cond in conds:
        model = load_best(d2s_run_dir(cfg, cond))[0]
        t = time.time()
        docs = encode_documents(model, dense_docs, 1024, progress=False)
        terms = int((np.diff(docs.tocsc().indptr) > 0).sum())
        record(condition=cond, step="encode", seconds=time.time() - t, nnz_per_doc=docs.nnz / n, distinct_terms=terms)
        queries = vectors[cond]["texts"][:nq]
        exact = brute_force_topk(queries, docs, 10)[1]
        for kind, params in SPARSE:
            t = time.time()
            r = benchmark_index(kind, docs, queries, 10, exact, n_latency=100, threads=(1,), **params)
            numbers = {k: v for k, v in r.items() if isinstance(v, (int, float))}
            record(condition=cond, kind=kind, params=params, wall_seconds=time.time() - t, **numbers)
    queries = txt[:nq]
    exact = brute_force_topk(queries, dense_docs, 10)[1]
    for ef in HNSW_EF:
        t = time.time()
        r = benchmark_index("faiss_hnsw", dense_docs, queries, 10, exact, n_latency=100, threads=(1,), ef_search=ef)
        numbers = {k: v for k, v in r.items() if isinstance(v, (int, float))}
        record(
            condition="dense teacher",
            kind="faiss_hnsw",
            params={"ef_search": ef},
            wall_seconds=time.time() - t,
            **numbers,
        )
    out = ROOT / "results" / "benchmarks" / f"scale_engines_{n}.json"
    atomic_write_json(out, {"benchmark": "scale_engines_at_n", "n_docs": n, "machine": machine(), "rows": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
