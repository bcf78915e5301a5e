"""The AToMiC full-collection job (issue 17): extraction, sparse encoding, bulk indexing, retrieval and evaluation.

    python -m lsr_lib.run.atomic_job --profile paper           # the downloaded AToMiC v0.2 files (paper.yaml's suggest)
    python -m lsr_lib.run.atomic_job --profile atomic_fixture  # the same job on the fixture: local Ray, milvus-lite

Steps, each timed (``results/<profile>/atomic_job.json``):

1. **extraction** of the frozen towers' states of every text and image (stage 05's caches), on Ray
   Data when ``extraction.engine: ray`` (``extraction.ray_address``: this machine or a cluster);
2. **training** of each ``suggest.configurations`` encoder on the train split (stage 05's runs,
   reused when current);
3. **sparse encoding of the whole image collection**, streamed in chunks of
   ``--chunk`` documents read from the caches (never the whole collection in memory), and **bulk
   insertion** of each chunk into ``suggest.index`` (Milvus: milvus-lite here, a Milvus cluster at
   ``suggest.index_uri``; other engines are built from the whole matrix, so they need it in memory);
4. **retrieval** of every test query's top 100 from the whole collection and ir_measures against
   the test qrels.

The job record gives items per second of each step and the peak memory, from which the README
derives the per-million-image cost ("Scaling out").
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np
import scipy.sparse as sp
import torch

from ..config.profiles import ConfigError, load_config

log = logging.getLogger("lsr_lib.run.atomic_job")
RESULT = "atomic_job"


def stream_documents(cfg, model, data, tcache, icache, index, chunk: int, device="cpu", progress: bool = True) -> dict:
    """Encode every document in chunks read from the caches and insert each into ``index`` (created on the first chunk);
    returns counts."""
    from ..stages.image_suggestion import token_states
    from ..storage.progress import progress_bar
    from ..train.suggest import encode

    doc_ids = list(data.docs["doc_id"])
    nnz = 0
    with progress_bar(total=len(doc_ids), desc="encode + index documents", unit="doc", disable=not progress) as bar:
        for lo in range(0, len(doc_ids), chunk):
            ids = doc_ids[lo : lo + chunk]
            text = token_states(tcache, [f"d:{i}" for i in ids])
            patches = torch.from_numpy(icache.read(ids)[1]["patches"])
            d = sp.csr_matrix(
                encode(model, "doc", text, patches, max(1, cfg.suggest.eval_batch_size // 8), device).numpy()
            )
            d.eliminate_zeros()
            if lo == 0:
                index.create(n_terms=d.shape[1])
            index.insert(d, lo)
            nnz += d.nnz
            bar.update(len(ids))
    return {"documents": len(doc_ids), "avg_nonzeros_document": nnz / max(1, len(doc_ids))}


def run_job(profile: str, chunk: int = 4096, progress: bool = True, overrides: dict | None = None) -> dict:
    """The whole job for one profile (``overrides`` as in :func:`load_config`); returns (and writes) its record."""
    from ..artifacts.catalog import suggest_dir
    from ..index.latency import PeakMemory
    from ..results.provenance import machine, write_results
    from ..stages.image_suggestion import (
        cache_states,
        evaluate_through_index,
        load_suggestion_set,
        split_tensors,
        suggestion_index,
        token_states,
        train_configuration,
    )
    from ..train.suggest import encode, load_suggest_model

    cfg = load_config(profile, overrides)
    if cfg.suggest.source != "atomic":
        raise ConfigError(
            f"profile {profile!r}: suggest.source is {cfg.suggest.source!r}; the AToMiC job needs suggest.source: "
            "atomic and the AToMiC files (params/paper.yaml)"
        )
    torch.set_num_threads(cfg.threads or torch.get_num_threads())
    steps: dict = {}
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        data = load_suggestion_set(cfg, all_images=True)  # every image of the files, also those no qrels file names
        steps["load"] = {"seconds": time.perf_counter() - t0, "queries": len(data.queries), "documents": len(data.docs)}
        log.info(
            "AToMiC (%s): %d texts, %d images, %d qrels",
            cfg.profile,
            len(data.queries),
            len(data.docs),
            len(data.qrels),
        )
        t0 = time.perf_counter()
        tcache, icache = cache_states(cfg, data, "cpu", progress)
        steps["extraction"] = {
            "seconds": time.perf_counter() - t0,
            "engine": cfg.extraction.engine,
            "texts": len(data.queries) + len(data.docs),
            "images": len(data.docs),
        }
        states_fp = {"text_states": tcache.manifest, "image_states": icache.manifest}
        results = {}
        for config in cfg.suggest.configurations:
            t0 = time.perf_counter()
            tensors = {s: split_tensors(data.split(s), tcache, icache) for s in ("train", "val")}
            run = train_configuration(cfg, config, tensors["train"], tensors["val"], states_fp, progress)
            del tensors
            steps[f"training {config}"] = {"seconds": time.perf_counter() - t0, "epochs": len(run["history"])}
            model = load_suggest_model(suggest_dir(cfg) / config)
            index = suggestion_index(cfg)
            if not hasattr(index, "insert"):
                raise ConfigError(
                    f"suggest.index {index.kind!r} is built from one in-memory matrix; the full-collection job "
                    "streams into milvus (set suggest.index: milvus)"
                )
            t0 = time.perf_counter()
            counts = stream_documents(cfg, model, data, tcache, icache, index, chunk, progress=progress)
            index.finish(len(data.docs))
            steps[f"encode + index {config}"] = {"seconds": time.perf_counter() - t0, **counts}
            test = data.split("test")
            # test queries against the whole collection
            test_all_docs = type(test)(test.name, test.queries, data.docs, test.qrels)
            t0 = time.perf_counter()
            queries = sp.csr_matrix(
                encode(
                    model,
                    "query",
                    token_states(tcache, [f"q:{i}" for i in test.queries["query_id"]]),
                    None,
                    cfg.suggest.eval_batch_size,
                ).numpy()
            )
            results[config] = evaluate_through_index(
                cfg, test_all_docs, queries, sp.csr_matrix((0, queries.shape[1]), dtype=np.float32), index=index
            )
            steps[f"retrieval {config}"] = {"seconds": time.perf_counter() - t0, "queries": int(queries.shape[0])}
            del index
    rates = {
        name: {
            k: v / s["seconds"]
            for k, v in s.items()
            if k in ("texts", "images", "documents", "queries") and s["seconds"] > 0
        }
        for name, s in steps.items()
    }
    record = {
        "steps": steps,
        "per_second": rates,
        "peak_rss_delta_mb": mem.delta_mb,
        "results": results,
        "machine": machine(),
        "index": cfg.suggest.index,
        "index_uri": cfg.suggest.index_uri,
        "extraction_engine": cfg.extraction.engine,
        "ray_address": cfg.extraction.ray_address,
    }
    path = write_results(cfg, RESULT, record, durations_are_results=True)  # its timed steps are what it measures
    log.info("wrote %s", path)
    return record


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(
        prog="python -m lsr_lib.run.atomic_job",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--chunk", type=int, default=4096, help="documents encoded and inserted at a time")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    # milvus-lite answers pymilvus's AllocTimestamp probe with a logged "not implemented"
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        record = run_job(args.profile, args.chunk, not args.no_progress)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for config, r in record["results"].items():
        print(f"{config}: " + ", ".join(f"{m} {r[m]:.4f}" for m in ("nDCG@10", "MRR@10", "R@10", "R@100") if m in r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
