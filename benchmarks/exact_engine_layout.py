"""The exact engine's posting layout against the machine's read bandwidth (issue 16).

    python benchmarks/exact_engine_layout.py            # -> results/benchmarks/exact_engine_layout_cpu.json
    python benchmarks/exact_engine_layout.py --sizes 100000 --blocks 8192

Documents: synthetic collections drawn from stage 02's test image vectors of each condition (as
stage 04's scale benchmark, ``index.latency.synthetic_collection``, seed 0); queries: the first 200
real test captions. Engines: ``numba`` (CSC postings: int32 id + float32 weight, an (N,) accumulator
with touched-document bookkeeping) and ``numba_blocked`` (document blocks of ``block`` rows, uint16
offset + float32 weight, a block-sized accumulator; one block over the collection: int32 offsets) at
several block sizes; both exact, with identical
top-10 (checked here). Per engine: single-query p50 / mean latency, postings read per query, postings
per second (postings / mean latency), their bytes per second in the engine's layout, and the share of
the single-thread read bandwidth measured by ``index.latency.read_bandwidth_gbs``; the ceiling a layout
could reach is bandwidth / bytes per posting. Run it on an otherwise idle machine (make main first).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from lsr_lib.artifacts.catalog import load_condition_vectors  # noqa: E402
from lsr_lib.config.profiles import load_config  # noqa: E402
from lsr_lib.index.latency import (  # noqa: E402
    postings_per_query,
    query_latency,
    read_bandwidth_gbs,
    synthetic_collection,
)
from lsr_lib.index.sparse import make_index  # noqa: E402
from lsr_lib.results.provenance import git_commit, machine  # noqa: E402
from lsr_lib.storage.atomic import atomic_write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    # 1 << 30: one block over the collection (int32 offsets)
    ap.add_argument("--blocks", type=int, nargs="+", default=[4096, 16384, 65536, 1 << 30])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "exact_engine_layout_cpu.json"))
    args = ap.parse_args(argv)
    cfg = load_config("default")
    vectors = load_condition_vectors(cfg, "test")
    bandwidth = read_bandwidth_gbs()
    print(f"single-thread read bandwidth: {bandwidth:.1f} GB/s", flush=True)
    rows = []
    for size in args.sizes:
        for cond, v in vectors.items():
            docs, queries = synthetic_collection(v["images"], size, seed=cfg.seed), v["texts"][: args.queries]
            ppq = postings_per_query(docs, queries)
            reference = None
            for kind, params in [("numba", {})] + [("numba_blocked", {"block": b}) for b in args.blocks]:
                index = make_index(kind, **params)
                t0 = time.perf_counter()
                index.build(docs)
                build_s = time.perf_counter() - t0
                lat = query_latency(index, queries, 10)
                top = index.search(queries, 10)
                if reference is None:
                    reference = top
                same = bool(np.array_equal(top[1], reference[1]) and np.array_equal(top[0], reference[0]))
                pps = ppq / (lat["latency_mean_ms"] / 1e3)
                gbs = pps * index.bytes_per_posting / 1e9
                rows.append(
                    {
                        "n_docs": size,
                        "condition": cond,
                        "kind": kind,
                        **params,
                        "build_s": build_s,
                        "size_mb": index.size_bytes() / 2**20,
                        **lat,
                        "postings_per_query": ppq,
                        "postings_per_s": pps,
                        "bytes_per_posting": index.bytes_per_posting,
                        "posting_gb_per_s": gbs,
                        "share_of_read_bandwidth": gbs / bandwidth,
                        "ceiling_postings_per_s": bandwidth * 1e9 / index.bytes_per_posting,
                        "same_top10_as_numba": same,
                    }
                )
                r = rows[-1]
                print(
                    f"{size:>9,} {cond:<16} {kind:<14} {params.get('block', ''):>6} p50 {r['latency_p50_ms']:7.2f} "
                    f"ms  {pps / 1e6:7.0f} M postings/s  "
                    f"{gbs:5.2f} GB/s = {100 * r['share_of_read_bandwidth']:4.1f}% of {bandwidth:.1f}  same top-10: "
                    f"{same}",
                    flush=True,
                )
                if not same:
                    raise SystemExit(f"{kind} {params} returned another top-10 than numba: the engines must agree")
                del index
            del docs
    atomic_write_json(
        Path(args.out),
        {
            "machine": {**machine(), "read_bandwidth_gbs_1thread": bandwidth},
            "commit": git_commit(),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "queries": args.queries,
            "rows": rows,
        },
        indent=1,
    )
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
