"""D2S training loop (DESIGN.md section 2) on a tiny synthetic problem: V = 64 terms, H = 16, d = 16."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import lsr_lib.train.d2s as d2s_train
from lsr_lib.config.profiles import ConfigError, build_dataclass
from lsr_lib.storage.manifest import Artifact, ArtifactError
from lsr_lib.storage.sparse_files import load_sparse, save_sparse
from lsr_lib.train.d2s import D2SConfig, build_model, encode_sparse, load_best, train_d2s, validate_sparse
from conftest import run_twice_at_once

D, V, H, CONCEPTS, CAPS = 16, 64, 16, 12, 2


def _split(n_img: int, g: torch.Generator, concepts: torch.Tensor, terms: torch.Tensor) -> dict:
    """Images mixing two concepts; captions = the image's concepts + noise; caption tokens = concept terms."""
    pick = torch.randint(0, CONCEPTS, (n_img, 2), generator=g)  # (N, 2)
    base = concepts[pick[:, 0]] + 0.6 * concepts[pick[:, 1]]  # (N, d)
    img = F.normalize(base + 0.3 * torch.randn(n_img, D, generator=g), dim=1)
    txt = F.normalize(base.repeat_interleave(CAPS, 0) + 0.3 * torch.randn(n_img * CAPS, D, generator=g), dim=1)
    mask_ids = terms[pick].reshape(n_img, -1).repeat_interleave(CAPS, 0)  # (N * CAPS, 6)
    ids = np.array([f"i{k}" for k in range(n_img)])
    return {"img": img, "txt": txt, "mask_ids": mask_ids, "image_ids": ids, "text_image_ids": ids.repeat(CAPS)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: on a busy 2-core machine intra-op threads cost far more than they give (about 5x)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    concepts = F.normalize(torch.randn(CONCEPTS, D, generator=g), dim=1)
    terms = torch.randperm(V, generator=g)[: CONCEPTS * 3].reshape(CONCEPTS, 3)
    tr, va = _split(120, g, concepts, terms), _split(40, g, concepts, terms)
    vocab = tmp_path_factory.mktemp("vocab") / "random_vocab.safetensors"
    save_file({"weight": torch.randn(V, H, generator=g), "bias": torch.zeros(V)}, str(vocab))
    train = {"img_emb": tr["img"].repeat_interleave(CAPS, 0), "txt_emb": tr["txt"], "txt_mask_ids": tr["mask_ids"]}
    val = {
        "img_emb": va["img"],
        "txt_emb": va["txt"],
        "image_ids": va["image_ids"],
        "text_image_ids": va["text_image_ids"],
    }
    return {"train": train, "val": val, "vocab": str(vocab)}


def _cfg(problem, **kw) -> D2SConfig:
    base = dict(
        vocab_init=problem["vocab"], epochs=4, batch_size=32, lr_projection=3e-2, lr_vocab=3e-2, teacher_tau=1e-3
    )
    return D2SConfig(**{**base, **kw})


def _numbers(result: dict) -> list:
    return [{k: v for k, v in h.items() if not k.endswith("seconds")} for h in result["history"]] + [
        result["best_epoch"]
    ]


def test_bad_config_values_name_the_key():
    bad = {
        "expansion_schedule": "exponential",
        "gate": "token",
        "regularizer": "l2",
        "amp_dtype": "fp8",
        "reg_weight_image": -1.0,
        "reg_weight_text": -1e-3,
        "epochs": 0,
        "batch_size": -4,
        "teacher_tau": 0.0,
        "warmup_fraction": 1.0,
        "expansion_p0": 1.5,
        "expansion_end_fraction": 0.0,
        "lr_vocab": 0.0,
        "hidden_dim": 0,
    }
    for key, value in bad.items():
        with pytest.raises(ConfigError, match=key):
            build_dataclass(D2SConfig, {key: value})
    with pytest.raises(ConfigError, match="expansion_shedule"):
        build_dataclass(D2SConfig, {"expansion_shedule": "linear"})
    with pytest.raises(ConfigError, match="epochs"):
        build_dataclass(D2SConfig, {"epochs": "200"})
    cfg = build_dataclass(D2SConfig, {"expansion_schedule": "constant", "expansion_p0": 0})
    assert cfg.p(0) == 0.0 and D2SConfig(epochs=20).p(0) == 1.0 and D2SConfig(epochs=20).p(19) == 0.0


def test_hidden_dim_must_match_vocab_init(problem):
    with pytest.raises(ConfigError, match="hidden_dim"):
        build_model(_cfg(problem, hidden_dim=H + 1), D)


def test_distillation_improves_val_recall(problem, tmp_path):
    cfg = _cfg(
        problem, epochs=20, expansion_schedule="constant", expansion_p0=0.0, reg_weight_image=0.0, reg_weight_text=0.0
    )
    before = validate_sparse(build_model(cfg, D), problem["val"], cfg)["text_to_image"]
    result = train_d2s(cfg, problem["train"], problem["val"], tmp_path, progress=False)
    after = result["best_val"]["text_to_image"]
    assert result["history"][-1]["loss"] < result["history"][0]["loss"]
    assert after["R@1"] >= before["R@1"] + 8.0, (before, after)
    assert after["MRR@10"] > before["MRR@10"]


@pytest.mark.parametrize("cpu_bf16", [False, True], ids=["fp32", "cpu_bf16"])
def test_same_seed_twice_gives_identical_numbers(problem, tmp_path, cpu_bf16):
    cfg = _cfg(problem, epochs=3, gate="example", cpu_bf16=cpu_bf16)
    a = train_d2s(cfg, problem["train"], problem["val"], tmp_path / "a", progress=False)
    b = train_d2s(cfg, problem["train"], problem["val"], tmp_path / "b", progress=False)
    assert _numbers(a) == _numbers(b)
    wa, wb = load_file(str(tmp_path / "a" / "best.safetensors")), load_file(str(tmp_path / "b" / "best.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    content = [Artifact(tmp_path / r, "D2S run", "stage 02").content_id() for r in ("a", "b")]
    assert content[0] == content[1]  # its checksummed files (best.json included) hold no wall-clock time


def test_resume_equals_uninterrupted(problem, tmp_path):
    cfg = _cfg(problem, epochs=5, eval_every_epochs=2)
    full = train_d2s(cfg, problem["train"], problem["val"], tmp_path / "full", progress=False)
    part = train_d2s(cfg, problem["train"], problem["val"], tmp_path / "cut", progress=False, stop_after_epoch=2)
    assert not part["completed"] and len(part["history"]) == 2
    resumed = train_d2s(cfg, problem["train"], problem["val"], tmp_path / "cut", progress=False)
    assert resumed["completed"] and _numbers(resumed) == _numbers(full)
    wf, wr = (
        load_file(str(tmp_path / "full" / "best.safetensors")),
        load_file(str(tmp_path / "cut" / "best.safetensors")),
    )
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    # finished: nothing to do
    again = train_d2s(cfg, problem["train"], problem["val"], tmp_path / "cut", progress=False)
    assert _numbers(again) == _numbers(full)
    # another config in the same folder is stale: retrained (the one reuse rule), not reused
    other = train_d2s(
        dataclasses.replace(cfg, lr_vocab=1e-4), problem["train"], problem["val"], tmp_path / "cut", progress=False
    )
    assert other["completed"] and _numbers(other) != _numbers(full)


def test_a_run_validated_per_gallery_resumes(problem, tmp_path):
    """The multi-style default validates per art style (``image_gallery``): its saved state holds per-gallery
    metrics, and an interrupted run resumes from it as any other (it crashed on numpy string keys once)."""
    n = len(problem["val"]["image_ids"])
    val = {**problem["val"], "image_gallery": np.array(["openmoji", "twemoji"] * (n // 2) + ["openmoji"] * (n % 2))}
    cfg = _cfg(problem, epochs=3, eval_every_epochs=1)
    full = train_d2s(cfg, problem["train"], val, tmp_path / "full", progress=False)
    train_d2s(cfg, problem["train"], val, tmp_path / "cut", progress=False, stop_after_epoch=1)
    resumed = train_d2s(cfg, problem["train"], val, tmp_path / "cut", progress=False)
    assert resumed["completed"] and _numbers(resumed) == _numbers(full)


def test_truncated_state_is_ignored_when_finished_and_set_aside_when_not(problem, tmp_path):
    cfg = _cfg(problem, epochs=4, eval_every_epochs=2)
    full = train_d2s(cfg, problem["train"], problem["val"], tmp_path / "full", progress=False)
    state = tmp_path / "full" / "last_state.pt"
    state.write_bytes(state.read_bytes()[:100])  # truncated after the run finished
    assert _numbers(train_d2s(cfg, problem["train"], problem["val"], tmp_path / "full", progress=False)) == _numbers(
        full
    )
    train_d2s(cfg, problem["train"], problem["val"], tmp_path / "cut", progress=False, stop_after_epoch=2)
    state = tmp_path / "cut" / "last_state.pt"
    state.write_bytes(state.read_bytes()[:-10])  # truncated mid-run: set aside, training restarts
    with pytest.warns(UserWarning, match="does not match its checksum"):
        resumed = train_d2s(cfg, problem["train"], problem["val"], tmp_path / "cut", progress=False)
    assert _numbers(resumed) == _numbers(full)


def test_two_trainings_of_one_folder_at_once_train_once(problem, tmp_path, monkeypatch):
    """Two stage-02 runs at once: the second waits on the run folder's lock, then reuses the finished run."""
    from lsr_lib.storage.checkpoint import TrainingRun
    from lsr_lib.storage.progress import NOTICES_ENV

    epochs, save_state = [], TrainingRun.save_state

    def slow_save_state(self, snapshot):
        epochs.append(snapshot["progress"]["epoch"])
        time.sleep(0.3)  # the other run starts meanwhile
        save_state(self, snapshot)

    monkeypatch.setattr(TrainingRun, "save_state", slow_save_state)
    monkeypatch.setenv(NOTICES_ENV, str(tmp_path / "notices"))
    cfg = _cfg(problem, epochs=3)
    out = run_twice_at_once(lambda: train_d2s(cfg, problem["train"], problem["val"], tmp_path / "run", progress=False))
    assert not any(isinstance(r, BaseException) for r in out), out
    assert epochs == [1, 2, 3]  # trained once (without the lock both trained, each epoch twice)
    assert _numbers(out[0]) == _numbers(out[1])
    # in the terminal
    assert "waiting for another run that is writing D2S run run" in (tmp_path / "notices").read_text()


def test_corrupt_best_weights_are_named_and_retrained(problem, tmp_path):
    cfg = _cfg(problem, epochs=2)
    full = train_d2s(cfg, problem["train"], problem["val"], tmp_path, progress=False)
    best = tmp_path / "best.safetensors"
    good = {k: v.clone() for k, v in load_file(str(best)).items()}
    raw = bytearray(best.read_bytes())
    raw[-5] ^= 0xFF
    best.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="best.safetensors does not match its checksum.*Rerun stage 02"):
        d2s_train.load_best(tmp_path)
    again = train_d2s(cfg, problem["train"], problem["val"], tmp_path, progress=False)
    assert _numbers(again) == _numbers(full)
    d2s_train.load_best(tmp_path)
    assert all(torch.equal(good[k], v) for k, v in load_file(str(best)).items())


def test_expansion_control_does_not_change_data_order(problem, tmp_path, monkeypatch):
    seen: list = []
    real = d2s_train.training_step

    def recording_step(model, opt, sched, scaler, cfg, img, txt, mask, step, warmup):
        seen.append((img.clone(), mask is not None))
        return real(model, opt, sched, scaler, cfg, img, txt, mask, step, warmup)

    monkeypatch.setattr(d2s_train, "training_step", recording_step)
    off = _cfg(problem, epochs=3, expansion_schedule="constant", expansion_p0=0.0)
    train_d2s(off, problem["train"], None, tmp_path / "off", progress=False)
    batches_off, seen[:] = list(seen), []
    train_d2s(_cfg(problem, epochs=3), problem["train"], None, tmp_path / "on", progress=False)
    assert len(seen) == len(batches_off)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(seen, batches_off))
    assert not any(m for _, m in batches_off) and any(m for _, m in seen)  # control really was on


def test_stronger_regularisation_gives_sparser_vectors(problem, tmp_path):
    nnz = {}
    for reg in ("l1", "flops"):
        for w in (0.0, 0.5):
            cfg = _cfg(problem, epochs=3, regularizer=reg, reg_weight_image=w, reg_weight_text=w, warmup_fraction=0.0)
            res = train_d2s(cfg, problem["train"], problem["val"], tmp_path / f"{reg}{w}", progress=False)
            nnz[reg, w] = res["history"][-1]["val"]["nnz_image"] + res["history"][-1]["val"]["nnz_text"]
    assert nnz["l1", 0.5] < nnz["l1", 0.0] and nnz["flops", 0.5] < nnz["flops", 0.0]


def test_encode_sparse_save_load_and_best_checkpoint(problem, tmp_path):
    cfg = _cfg(problem, epochs=2)
    train_d2s(cfg, problem["train"], problem["val"], tmp_path, progress=False)
    model, meta = load_best(tmp_path)
    assert meta["architecture"] == {"dense_dim": D, "hidden_dim": H, "vocab_size": V, "shared_head": True}
    txt = encode_sparse(model, problem["val"]["txt_emb"], "text", batch_size=7)
    assert txt.shape == (80, V) and txt.dtype == np.float32
    dense = model.encode_text(problem["val"]["txt_emb"]).detach().numpy()
    assert np.allclose(txt.toarray(), dense, atol=1e-6)
    masked = encode_sparse(model, problem["val"]["txt_emb"], "text", masks=torch.full((80, 1), 3))
    assert set(masked.indices.tolist()) <= {3}
    save_sparse(tmp_path / "txt.npz", txt)
    back = load_sparse(tmp_path / "txt.npz")
    assert (back != txt).nnz == 0 and back.dtype == np.float32
    # no temp files left, only the lock
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".lock"]


def test_checkpoint_selection_skips_the_early_share(problem, tmp_path):
    res = train_d2s(
        _cfg(problem, epochs=4, select_from_fraction=0.5),
        problem["train"],
        problem["val"],
        tmp_path / "sel",
        progress=False,
    )
    r1 = {h["epoch"]: h["val_t2i_R@1"] for h in res["history"]}
    assert res["best_epoch"] in (3, 4) and res["best_val"]["text_to_image"]["R@1"] == max(r1[3], r1[4])


def test_validation_in_caption_chunks_equals_the_full_product_and_never_holds_all_captions(problem, monkeypatch):
    from lsr_lib.metrics.retrieval import evaluate_both_directions
    from lsr_lib.metrics.sparse_stats import flops_from_df

    cfg = _cfg(problem)
    model = build_model(cfg, D)
    val = problem["val"]
    img = d2s_train.encode_dense(model, val["img_emb"], "image")
    txt = d2s_train.encode_dense(model, val["txt_emb"], "text")
    ref = evaluate_both_directions(img, txt, val["text_image_ids"], val["image_ids"])
    ref.update(
        nnz_image=float((img > 0).sum(1).float().mean()),
        nnz_text=float((txt > 0).sum(1).float().mean()),
        flops=flops_from_df((txt > 0).sum(0).numpy(), (img > 0).sum(0).numpy(), len(txt), len(img)),
    )
    rows_seen, real = [], d2s_train.encode_dense

    def spy(model, emb, side, *a, **kw):
        rows_seen.append((side, len(emb)))
        return real(model, emb, side, *a, **kw)

    monkeypatch.setattr(d2s_train, "encode_dense", spy)
    assert 0 < ref["nnz_text"] < V and ref["text_to_image"]["R@1"] > 0  # a non-trivial case
    for chunk in (7, 32, 1024):
        got = validate_sparse(model, val, dataclasses.replace(cfg, eval_batch_size=chunk))
        assert got == ref, chunk
        # captions are encoded and scored chunk by chunk
        assert max(n for side, n in rows_seen if side == "text") <= chunk
        rows_seen.clear()


def test_sparse_scoring_gives_the_dense_metrics_and_is_chosen_only_for_large_sparse_splits(problem):
    from lsr_lib.train.d2s import scoring_method

    cfg = _cfg(problem, eval_batch_size=16)
    model = build_model(cfg, D)
    dense = validate_sparse(model, problem["val"], cfg, scoring="dense")
    assert validate_sparse(model, problem["val"], cfg, scoring="sparse") == dense
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    # the default's val split: the dense sums its numbers were made with
    assert scoring_method(654, 378, 30522, 0.002, cpu) == "dense"
    assert scoring_method(25_010, 5_000, 30522, 0.002, cpu) == "sparse"  # MSCOCO val, vectors of ~60 terms
    assert scoring_method(25_010, 5_000, 30522, 0.3, cpu) == "dense"  # too dense for CSR to pay off
    assert scoring_method(25_010, 5_000, 30522, 0.002, gpu) == "dense"  # a GPU multiplies densely
