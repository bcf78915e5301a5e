"""Stage 05: suggestion data, MLP / MLM encoders, InfoNCE training, findings (no network)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lsr_lib.data.collection import ImageCaptionSet
from lsr_lib.config.profiles import ConfigError, load_config
from lsr_lib.data.suggest import SuggestionDataError, SuggestionSet, emoji_suggestion_set, load_atomic, read_qrels
from lsr_lib.sparse.suggest_encoders import SuggestModel
from lsr_lib.stages.image_suggestion import findings
from lsr_lib.train.suggest import flops_reg, infonce_loss, mrr_at_10, train_suggest
from conftest import run_twice_at_once

ATOMIC = Path(__file__).parent / "fixtures" / "atomic"
ATOMIC_QRELS = {s: ATOMIC / f"{s}.qrels" for s in ("train", "validation", "test")}


def tiny_collection() -> ImageCaptionSet:
    images = pd.DataFrame(
        {
            "image_id": ["A", "B", "C"],
            "split": ["train", "train", "test"],
            "path": ["", "", ""],
            "group_id": ["a", "b", "c"],
        }
    )
    captions = pd.DataFrame(
        {
            "text_id": ["A#0", "A#1", "A#2", "B#0", "C#0", "C#1"],
            "image_id": ["A", "A", "A", "B", "C", "C"],
            "split": ["train"] * 4 + ["test"] * 2,
            "text": ["laptop", "personal computer", "pc", "castle", "wave", "waving hand"],
        }
    )
    return ImageCaptionSet("tiny", images, captions)


def test_emoji_suggestion_queries_are_never_the_document_caption():
    s = emoji_suggestion_set(tiny_collection())
    assert s.docs.set_index("doc_id")["caption"].to_dict() == {"A": "laptop", "B": "castle", "C": "wave"}
    assert set(s.queries["text"]) == {"personal computer", "pc", "waving hand"}
    assert s.qrels.set_index("query_id")["doc_id"].to_dict() == {"A#1": "A", "A#2": "A", "C#1": "C"}
    train = s.split("train")
    assert list(train.docs["doc_id"]) == ["A", "B"] and list(train.positive_doc_rows()) == [0, 0]
    assert s.split("test").counts() == {"test": {"queries": 1, "documents": 1, "qrels": 1}}


def test_atomic_loader_reads_the_published_format():
    s = load_atomic(ATOMIC / "texts.parquet", ATOMIC / "images.parquet", ATOMIC_QRELS)
    assert s.counts()["train"] == {"queries": 4, "documents": 4, "qrels": 4}
    q = s.queries.set_index("query_id")["text"]
    assert q["sec0"] == "Red (colour) Introduction The colour red in art and nature."
    caps = s.docs.set_index("doc_id")["caption"]
    assert caps["img0"] == "a red square" and caps["img3"] == "yellow colour swatch"  # falls back to the alt text
    from lsr_lib.data.suggest import load_document_image

    assert load_document_image(s.docs.iloc[2]).getpixel((5, 5))[2] > 150  # the blue WebP decodes


def test_atomic_loader_names_mismatched_ids(tmp_path):
    bad = tmp_path / "test.qrels"
    bad.write_text("sec5 Q0 img99 1\n")
    with pytest.raises(SuggestionDataError, match="img99"):
        load_atomic(ATOMIC / "texts.parquet", ATOMIC / "images.parquet", {**ATOMIC_QRELS, "test": bad})
    with pytest.raises(FileNotFoundError, match="huggingface-cli download"):
        load_atomic(tmp_path / "nothing", ATOMIC / "images.parquet", ATOMIC_QRELS)


def test_read_qrels_keeps_positive_judgements_only(tmp_path):
    p = tmp_path / "q.qrels"
    p.write_text("t1 Q0 i1 1\nt1 Q0 i2 0\nt2 0 i3 2\n")
    assert read_qrels(p).values.tolist() == [["t1", "i1", 1], ["t2", "i3", 2]]


def test_suggestion_set_rejects_dangling_qrels():
    s = emoji_suggestion_set(tiny_collection())
    with pytest.raises(SuggestionDataError, match="not in the document table"):
        SuggestionSet(
            "x",
            s.queries,
            s.docs,
            pd.concat([s.qrels, pd.DataFrame({"query_id": ["A#1"], "doc_id": ["Z"], "relevance": [1]})]),
        )


def _text(ids: list[list[int]], dim: int = 384, seed: int = 0) -> dict:
    L = max(map(len, ids))
    tok = torch.tensor([r + [0] * (L - len(r)) for r in ids])
    return {
        "states": torch.randn(len(ids), L, dim, generator=torch.Generator().manual_seed(seed)),
        "token_ids": tok,
        "mask": (tok > 0).float(),
    }


def test_mlp_vectors_hold_only_the_texts_own_tokens():
    m = SuggestModel("M3")
    with torch.no_grad():
        m.query_encoder.score.bias.fill_(5.0)  # every token gets a positive weight
        v = m.encode_queries(_text([[101, 2023, 3899, 2023, 102], [101, 7592, 102]]))
    # [CLS] / [SEP] / padding excluded, repeats pooled
    assert set(torch.nonzero(v[0]).flatten().tolist()) == {2023, 3899}
    assert set(torch.nonzero(v[1]).flatten().tolist()) == {7592}


def test_m4_image_reweights_caption_terms_but_adds_none():
    m = SuggestModel("M4")
    with torch.no_grad():
        m.doc_encoder.score.bias.fill_(3.0)
    cap = _text([[101, 2023, 3899, 102]])
    a = m.encode_docs(cap, torch.randn(1, 49, 1280, generator=torch.Generator().manual_seed(1)))
    b = m.encode_docs(cap, torch.randn(1, 49, 1280, generator=torch.Generator().manual_seed(2)))
    assert set(torch.nonzero(a[0]).flatten().tolist()) <= {2023, 3899}
    assert not torch.allclose(a, b)  # the image changes the weights


def test_mlm_text_starts_from_its_own_tokens_and_expands():
    from lsr_lib.dense.towers import TokenTower

    tower = TokenTower("cpu", 16)
    a = tower(["a red bicycle on the beach"])
    t = {
        "states": torch.from_numpy(a["states"]),
        "token_ids": torch.from_numpy(a["token_ids"]).long(),
        "mask": torch.from_numpy(a["mask"]),
    }
    m = SuggestModel("M2")
    with torch.no_grad():
        v = m.encode_docs(t, None)[0]
    own = {i for i in a["token_ids"][0].tolist() if i > 103}
    active = set(torch.nonzero(v).flatten().tolist())
    # own tokens fire at initialisation (most of them), plus expansions
    assert len(own & active) >= 0.8 * len(own) and len(active - own) > 0
    assert len(active) < 1000  # sparse, not all 30,522 terms


def test_infonce_masks_other_positives_of_the_same_document():
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[5.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    same = infonce_loss(q, d, torch.tensor([0, 0, 1]))  # queries 0 and 1 share document row 0
    distinct = infonce_loss(q, d, torch.tensor([0, 1, 2]))
    assert same.item() < 0.01 < distinct.item()
    assert flops_reg(torch.tensor([[1.0, 0.0], [1.0, 2.0]])).item() == pytest.approx(1.0 + 1.0)


def test_mrr_counts_ties_against_the_query():
    q = torch.tensor([[1.0], [1.0]])
    d = torch.tensor([[1.0], [1.0], [0.5]])
    assert mrr_at_10(q, d, np.array([0, 2])) == pytest.approx((0.5 + 1 / 3) / 2)


def test_validation_counts_every_relevant_document_of_a_query():
    """Several styles: query 0's emoji is document 0 (its training positive) and document 1 (another style). Ranked
    first, document 1 is a hit, not a miss that pushes document 0 to rank 2; relevant_pairs reads the qrels."""
    import pandas as pd

    from lsr_lib.data.suggest import SuggestionSet
    from lsr_lib.stages.image_suggestion import relevant_pairs

    q = torch.tensor([[1.0, 0.0]])
    d = torch.tensor([[0.5, 0.0], [1.0, 0.0], [0.2, 0.0]])
    assert mrr_at_10(q, d, np.array([0])) == pytest.approx(0.5)
    assert mrr_at_10(q, d, np.array([0]), np.array([[0, 0], [0, 1]])) == pytest.approx(1.0)
    data = SuggestionSet(
        "toy",
        pd.DataFrame({"query_id": ["cat#1", "dog#1"], "split": "val", "text": ["kitty", "puppy"]}),
        pd.DataFrame(
            {
                "doc_id": ["a/dog", "a/cat", "b/cat", "b/dog"],
                "split": "val",
                "caption": ["dog", "cat", "cat", "dog"],
                "path": "",
            }
        ),
        pd.DataFrame(
            {
                "query_id": ["cat#1", "cat#1", "dog#1", "dog#1"],
                "doc_id": ["a/cat", "b/cat", "a/dog", "b/dog"],
                "relevance": 1,
            }
        ),
    )
    assert sorted(map(tuple, relevant_pairs(data).tolist())) == [(0, 1), (0, 2), (1, 0), (1, 3)]


def test_training_learns_a_separable_toy_task(tmp_path):
    """Query k's tokens are [k, k+1]; document k's caption is [k]: M3 must learn to match them."""
    n = 40
    ids = [[101, 2000 + k, 3000 + k, 102] for k in range(n)]
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(5000, 384, generator=g)

    def text(rows):
        tok = torch.tensor(rows)
        return {"states": emb[tok % 5000], "token_ids": tok, "mask": torch.ones_like(tok, dtype=torch.float32)}

    queries, captions = text(ids), text([[101, 2000 + k, 102, 0] for k in range(n)])
    captions["mask"][:, 3] = 0
    data = {"queries": queries, "captions": captions, "patches": None, "pos": np.arange(n)}
    cfg = load_config("smoke", {"suggest": {"epochs": 3, "batch_size": 8, "cpu_bf16": False}}).suggest
    run = train_suggest("M3", cfg, data, data, tmp_path / "M3", {"states": "toy"}, progress=False)
    assert run["best"]["val_mrr@10"] > 0.9  # each query shares exactly one term with its own document
    again = train_suggest("M3", cfg, data, data, tmp_path / "M3", {"states": "toy"}, progress=False)
    assert again["history"] == run["history"]  # reused, not retrained


def _toy_task(n: int = 24) -> dict:
    """Query k's tokens are [k, k+1]; document k's caption is [k] (as in the test above, smaller)."""
    emb = torch.randn(5000, 384, generator=torch.Generator().manual_seed(0))

    def text(rows):
        tok = torch.tensor(rows)
        return {"states": emb[tok % 5000], "token_ids": tok, "mask": (tok > 0).float()}

    queries = text([[101, 2000 + k, 3000 + k, 102] for k in range(n)])
    captions = text([[101, 2000 + k, 102] for k in range(n)])
    return {"queries": queries, "captions": captions, "patches": None, "pos": np.arange(n)}


def test_retraining_to_the_same_weights_gives_the_same_content_id(tmp_path):
    """best.json is checksummed, so it holds no wall-clock time: stage 05's fingerprint survives a retraining."""
    from lsr_lib.storage.checkpoint import TrainingRun

    data = _toy_task()
    cfg = load_config("smoke", {"suggest": {"epochs": 2, "batch_size": 8, "cpu_bf16": False}}).suggest
    runs = [train_suggest("M3", cfg, data, data, tmp_path / r, {"states": "toy"}, progress=False) for r in ("a", "b")]
    assert all("seconds" in h for r in runs for h in r["history"])  # timings are kept, in the manifest's meta
    ids = [TrainingRun(tmp_path / r, {}, f"suggestion run {r}", "stage 05").artifact.content_id() for r in ("a", "b")]
    assert ids[0] == ids[1]


def test_two_trainings_of_one_configuration_at_once_train_once(tmp_path, monkeypatch):
    """Two stage-05 runs at once: the second waits on the run folder's lock, then reuses the finished run."""
    import time

    import lsr_lib.train.suggest as suggest_train

    epochs, mrr = [], suggest_train.mrr_at_10

    def slow_mrr(*args):
        epochs.append(1)
        time.sleep(0.3)  # the other run starts meanwhile
        return mrr(*args)

    monkeypatch.setattr(suggest_train, "mrr_at_10", slow_mrr)
    data = _toy_task()
    cfg = load_config("smoke", {"suggest": {"epochs": 2, "batch_size": 8, "cpu_bf16": False}}).suggest
    out = run_twice_at_once(
        lambda: train_suggest("M3", cfg, data, data, tmp_path / "M3", {"states": "toy"}, progress=False)
    )
    assert not any(isinstance(r, BaseException) for r in out), out
    assert len(epochs) == 2 and out[0]["history"] == out[1]["history"]  # trained once, then reused


def test_findings_report_what_the_numbers_say():
    base = {"nDCG@10": 0.3, "nnz query": 4.0, "max df share (queries)": 0.05}
    res = {
        "M1": {**base, "nDCG@10": 0.1, "nnz query": 60.0, "max df share (queries)": 0.9},
        "M2": base,
        "M3": base,
        "M4": {**base, "nDCG@10": 0.35},
    }
    out = {f["finding"].split(" ")[0]: f["holds"] for f in findings(res)}
    assert out == {"caption-enriched": True, "image": False, "MLP": True}  # M4 is 5 points above M3: not "little"


def test_suggest_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="configurations"):
        load_config("smoke", {"suggest": {"configurations": ["M5"]}})
    with pytest.raises(ConfigError, match="atomic_texts"):
        load_config("smoke", {"suggest": {"source": "atomic"}})


def test_stage_runs_on_the_atomic_fixture(tmp_path):
    """The paper path of stage 05 end to end on the AToMiC fixture: states, training, index, metrics."""
    from lsr_lib.stages.image_suggestion import (
        cache_states,
        evaluate_through_index,
        export_vectors,
        load_suggestion_set,
        split_tensors,
        train_configuration,
    )

    cfg = load_config(
        "smoke",
        {
            "data": {"root": str(tmp_path)},
            "suggest": {
                "source": "atomic",
                "atomic_texts": str(ATOMIC / "texts.parquet"),
                "atomic_images": str(ATOMIC / "images.parquet"),
                "atomic_qrels": str(ATOMIC),
                "configurations": ["M1", "M4"],
                "epochs": 1,
                "batch_size": 4,
            },
        },
    )
    data = load_suggestion_set(cfg)
    tc, ic = cache_states(cfg, data, progress=False)
    fp = {"t": tc.manifest, "i": ic.manifest}
    tensors = {s: split_tensors(data.split(s), tc, ic) for s in ("train", "val", "test")}
    for c in ("M1", "M4"):
        train_configuration(cfg, c, tensors["train"], tensors["val"], fp, progress=False)
        q, d = export_vectors(cfg, c, "test", tensors["test"])
        out = evaluate_through_index(cfg, data.split("test"), q, d)
        assert out["R@100"] == 1.0  # one document in the test split: it is always retrieved


def test_finetuning_the_towers_trains_them_and_exports_with_them(tmp_path):
    """suggest.finetune_towers (the GPU path) on the CPU with the AToMiC fixture: towers change and are reused at
    export."""
    from lsr_lib.stages.image_suggestion import SuggestTowers, fit_and_export, load_suggestion_set, suggest_dir
    from lsr_lib.train.suggest import load_tuned_towers

    cfg = load_config(
        "smoke",
        {
            "data": {"root": str(tmp_path)},
            "suggest": {
                "source": "atomic",
                "atomic_texts": str(ATOMIC / "texts.parquet"),
                "atomic_images": str(ATOMIC / "images.parquet"),
                "atomic_qrels": str(ATOMIC),
                "configurations": ["M4"],
                "epochs": 1,
                "batch_size": 4,
                "finetune_towers": True,
                "lr_vocab": 1e-3,
            },
        },
    )
    data = load_suggestion_set(cfg)
    run, q, d = fit_and_export(cfg, "M4", data, None, {"towers": "fine-tuned"}, progress=False)
    assert run["complete"] and q.shape[0] == 1 and d.shape[0] == 1
    fresh, tuned = SuggestTowers(cfg), load_tuned_towers(suggest_dir(cfg) / "M4", SuggestTowers(cfg))
    a, b = fresh.state_dict(), tuned.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if "encoder.layer.0" in k)  # MiniLM trained
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("image._blocks.0"))  # EfficientNet trained


def test_stage_01_keeps_the_clean_images_patch_states_bitwise_as_stage_05_computes_them(tmp_path, monkeypatch):
    from lsr_lib.artifacts.catalog import suggest_patch_cache
    from lsr_lib.data.suggest import load_document_image
    from lsr_lib.dense.towers import ImageTower, patch_states
    from lsr_lib.stages.cache_dense_features import cache_tower_features, load_collection

    torch.set_num_threads(1)
    cfg = load_config(
        "smoke",
        {
            "data": {"root": str(tmp_path / "data"), "max_groups": 5},
            "lit": {"train_views": 1, "eval_transforms": ["grayscale"]},
            "extraction": {"image_batch_size": 4},
        },
    )
    monkeypatch.setattr(type(cfg), "shared_cache_dir", property(lambda self: tmp_path / "cache"))
    col = load_collection(cfg)
    cache_tower_features(cfg, col, torch.device("cpu"), progress=False)
    docs = emoji_suggestion_set(col).docs
    tower = ImageTower("cpu", cfg.data.image_size, cfg.extraction.image_backend)
    cache = suggest_patch_cache(cfg, docs, tower.fingerprint())
    assert cache.complete  # filled by stage 01: stage 05 finds it done
    _, kept = cache.read(list(docs["doc_id"]))
    fresh = np.concatenate(
        [
            patch_states(tower, [load_document_image(docs.iloc[i]) for i in range(s, min(len(docs), s + 3))])["patches"]
            for s in range(0, len(docs), 3)
        ]
    )  # stage 05's own computation, other batches
    assert kept["patches"].shape == (len(docs), 49, 1280) and np.array_equal(kept["patches"], fresh)


def test_an_interrupted_training_resumes_after_its_last_epoch_as_if_never_stopped(tmp_path, monkeypatch):
    """Stop M2 (an MLM side, AdamW state, LR schedule) during epoch 3 of 3; the rerun trains only epoch 3 and
    ends with the uninterrupted run's weights and history."""
    import lsr_lib.train.suggest as suggest_train
    from safetensors.torch import load_file

    data = _toy_task()
    cfg = load_config("smoke", {"suggest": {"epochs": 3, "batch_size": 8, "cpu_bf16": False}}).suggest
    whole = train_suggest("M2", cfg, data, data, tmp_path / "whole", {"states": "toy"}, progress=False)

    calls, mrr = [], suggest_train.mrr_at_10

    def stop_in_epoch_3(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return mrr(*args)

    monkeypatch.setattr(suggest_train, "mrr_at_10", stop_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train_suggest("M2", cfg, data, data, tmp_path / "cut", {"states": "toy"}, progress=False)
    monkeypatch.setattr(suggest_train, "mrr_at_10", mrr)
    epochs, encode = [], suggest_train.encode
    monkeypatch.setattr(suggest_train, "encode", lambda *a, **k: epochs.append(1) or encode(*a, **k))
    resumed = train_suggest("M2", cfg, data, data, tmp_path / "cut", {"states": "toy"}, progress=False)
    assert len(epochs) == 2  # one epoch: its queries and its documents
    strip = [[{k: v for k, v in h.items() if k != "seconds"} for h in r["history"]] for r in (whole, resumed)]
    assert strip[0] == strip[1] and len(strip[0]) == 3
    a, b = (load_file(str(tmp_path / r / "best.safetensors")) for r in ("whole", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_m1_patch_grid_pools_the_feature_map_and_is_recorded():
    """suggest.patch_grid: M1's 7x7 patch states average-pooled to g x g (7: unchanged); a saved run reloads with its
    grid; the other configurations ignore it."""
    from lsr_lib.config.profiles import ConfigError
    from lsr_lib.sparse.suggest_encoders import pool_patches

    x = torch.arange(2 * 49 * 3, dtype=torch.float32).reshape(2, 49, 3)
    assert torch.equal(pool_patches(x, 7), x)
    one = pool_patches(x, 1)
    torch.testing.assert_close(one[:, 0], x.mean(1))
    grid = x.reshape(2, 7, 7, 3)
    torch.testing.assert_close(pool_patches(x, 3)[:, 0], grid[:, :3, :3].mean((1, 2)))  # top-left window: rows 0-2
    m3 = SuggestModel("M1", patch_grid=3)
    p = torch.randn(2, 49, 1280)
    with torch.no_grad():
        torch.testing.assert_close(m3.encode_docs(None, p), m3.doc_encoder(pool_patches(p, 3)))
        assert not torch.allclose(m3.encode_docs(None, p), m3.doc_encoder(p))
    with pytest.raises(ConfigError, match="patch_grid"):
        load_config("smoke", {"suggest": {"patch_grid": 9}})


def test_an_m1_run_reloads_with_its_patch_grid(tmp_path):
    from lsr_lib.train.suggest import load_suggest_model

    data = {**_toy_task(8), "patches": torch.randn(8, 49, 1280, generator=torch.Generator().manual_seed(0))}
    cfg = load_config("smoke", {"suggest": {"epochs": 1, "batch_size": 4, "cpu_bf16": False, "patch_grid": 2}}).suggest
    train_suggest("M1", cfg, data, data, tmp_path / "M1", {"states": "toy"}, progress=False)
    model = load_suggest_model(tmp_path / "M1")
    assert model.patch_grid == 2
