"""The AToMiC full-collection job (issue 17) on the fixture: Ray extraction, streamed encoding into Milvus,
evaluation."""

from pathlib import Path

import pytest
import scipy.sparse as sp
import torch

from lsr_lib.config.profiles import Config, load_config

FIXTURE = Path(__file__).parent / "fixtures" / "atomic"
pytest.importorskip("ray")
pytest.importorskip("milvus_lite")


def test_the_job_streams_the_collection_into_milvus_and_scores_as_the_in_memory_index(tmp_path, monkeypatch):
    from lsr_lib.artifacts.catalog import suggest_dir
    from lsr_lib.run.atomic_job import run_job
    from lsr_lib.stages.image_suggestion import cache_states, evaluate_through_index, load_suggestion_set, token_states
    from lsr_lib.train.suggest import encode, load_suggest_model

    import pandas as pd

    from lsr_lib.data.suggest import COLLECTION_SPLIT

    monkeypatch.setattr(Config, "results_dir", property(lambda self: tmp_path / "results"))
    images = pd.read_parquet(FIXTURE / "images.parquet")
    # images no qrels file names: the collection beyond the qrels
    extra = images.head(3).assign(image_id=lambda d: "unjudged-" + d["image_id"])
    pd.concat([images, extra], ignore_index=True).to_parquet(tmp_path / "images.parquet")
    overrides = {"data": {"root": str(tmp_path)}, "suggest": {"atomic_images": str(tmp_path / "images.parquet")}}
    record = run_job("atomic_fixture", chunk=4, progress=False, overrides=overrides)  # 9 images: three chunks
    assert record["extraction_engine"] == "ray" and record["index"] == "milvus"
    assert (
        record["steps"]["encode + index M4"]["documents"] == 9 and (tmp_path / "results" / "atomic_job.json").exists()
    )
    # the same models through the in-memory exact engine over the whole collection give the same run
    cfg = load_config("atomic_fixture", {**overrides, "extraction": {"engine": "local"}})
    data = load_suggestion_set(cfg, all_images=True)
    assert (data.docs["split"] == COLLECTION_SPLIT).sum() == 3 and len(load_suggestion_set(cfg).docs) == 6
    tcache, icache = cache_states(cfg, data, "cpu", progress=False)  # the Ray-filled caches, reused in process
    test = data.split("test")
    everything = type(test)(test.name, test.queries, data.docs, test.qrels)

    def states(ids):
        return token_states(tcache, ids)

    for config, got in record["results"].items():
        model = load_suggest_model(suggest_dir(cfg) / config)
        q = sp.csr_matrix(encode(model, "query", states([f"q:{i}" for i in test.queries["query_id"]]), None, 8).numpy())
        d = sp.csr_matrix(
            encode(
                model,
                "doc",
                states([f"d:{i}" for i in data.docs["doc_id"]]),
                torch.from_numpy(icache.read(list(data.docs["doc_id"]))[1]["patches"]),
                2,
            ).numpy()
        )
        want = evaluate_through_index(cfg, everything, q, d, kind="numba")
        for m in ("nDCG@10", "RR@10", "R@10", "R@100"):
            assert got[m] == pytest.approx(want[m], abs=1e-9), (config, m)


def test_the_job_refuses_a_collection_that_is_not_atomic():
    from lsr_lib.config.typed import ConfigError
    from lsr_lib.run.atomic_job import run_job

    with pytest.raises(ConfigError, match="needs suggest.source: atomic"):
        run_job("smoke", progress=False)
