"""Per-document rates of the AToMiC job's steps 3-4 on this machine, measured on the embedded default's suggestion set.

    python benchmarks/atomic_job_rates.py     # -> results/benchmarks/atomic_job_rates_cpu.json

The AToMiC fixture has 6 images, too few to time anything. This runs the job's own streaming
code (``lsr_lib.run.atomic_job.stream_documents``) with the default profile's trained M1-M4 encoders
and cached tower states (stage 05 must have run: ``make main``): encode every document (3,951
emoji) in chunks and insert it into Milvus (milvus-lite), then answer the test queries. The README's
per-million-image figures ("Scaling out") are these rates scaled linearly, with the tower rates of
``results/benchmarks/01_feature_extraction_cpu.json`` for the extraction step.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

from lsr_lib.artifacts.catalog import suggest_dir  # noqa: E402
from lsr_lib.config.profiles import load_config  # noqa: E402
from lsr_lib.index.latency import PeakMemory, query_latency  # noqa: E402
from lsr_lib.index.sparse import make_index  # noqa: E402
from lsr_lib.results.provenance import git_commit, machine  # noqa: E402
from lsr_lib.run.atomic_job import stream_documents  # noqa: E402
from lsr_lib.stages.image_suggestion import cache_states, load_suggestion_set, split_tensors  # noqa: E402
from lsr_lib.storage.atomic import atomic_write_json  # noqa: E402
from lsr_lib.train.suggest import encode, load_suggest_model  # noqa: E402


def main() -> int:
    cfg = load_config("default")
    torch.set_num_threads(cfg.threads)
    data = load_suggestion_set(cfg)
    tcache, icache = cache_states(cfg, data, "cpu", progress=False)
    test = split_tensors(data.split("test"), tcache, icache, need_patches=False)
    rows = []
    for config in cfg.suggest.configurations:
        model = load_suggest_model(suggest_dir(cfg) / config)
        index = make_index("milvus")
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            counts = stream_documents(cfg, model, data, tcache, icache, index, 1024, progress=False)
            t_encode_insert = time.perf_counter() - t0
            t0 = time.perf_counter()
            index.finish(len(data.docs))
            t_finish = time.perf_counter() - t0
        q = sp.csr_matrix(encode(model, "query", test["queries"], None, cfg.suggest.eval_batch_size).numpy())
        lat = query_latency(index, q, 100, 200)
        rows.append(
            {
                "configuration": config,
                "documents": counts["documents"],
                "avg_nonzeros_document": counts["avg_nonzeros_document"],
                "encode_and_insert_docs_per_s": counts["documents"] / t_encode_insert,
                "flush_and_index_s": t_finish,
                "peak_rss_delta_mb": mem.delta_mb,
                "avg_nonzeros_query": q.nnz / q.shape[0],
                **lat,
            }
        )
        print(rows[-1])
        del index
    atomic_write_json(
        ROOT / "results" / "benchmarks" / "atomic_job_rates_cpu.json",
        {
            "benchmark": (
                "AToMiC job steps 3-4 (encode + insert into milvus-lite, top-100 search) on the default's emoji "
                "suggestion set"
            ),
            "rows": rows,
            "machine": machine(),
            "commit": git_commit(),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "note": (
                "measured while other jobs ran on the same 2 cores (make bench, the data-scale study niced); rates "
                "are lower bounds"
            ),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
