"""The artifact contract: manifests, the one reuse rule, locks, and staleness flowing downstream.

The fault table in docs/reliability.md points at these tests (and at the cache, trainer,
config and pipeline tests it names).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pytest

from lsr_lib.artifacts import catalog
from lsr_lib.config.profiles import load_config
from lsr_lib.data.karpathy import load_karpathy
from lsr_lib.results.provenance import write_results
from lsr_lib.stages import train_sparse_heads as s02
from lsr_lib.stages.cache_dense_features import build_dense_features
from lsr_lib.storage.atomic import atomic_write_text
from lsr_lib.storage.feature_files import write_embeddings
from lsr_lib.storage.manifest import Artifact, ArtifactError, build_or_reuse
from lsr_lib.storage.shard_cache import ShardedCache

FIX = Path(__file__).parent / "fixtures"


def _build(root: Path, text: str = "hello"):
    atomic_write_text(root / "a.txt", text)
    return ["a.txt"], {"n": 1}


def test_status_ok_missing_stale_corrupt(tmp_path):
    art = Artifact(tmp_path / "x", "thing", "stage 99")
    assert art.status({"k": 1}).state == "missing"
    _, built = build_or_reuse(art, {"k": 1}, _build)
    assert built and art.status({"k": 1}).ok
    assert not build_or_reuse(art, {"k": 1}, lambda r: pytest.fail("an up-to-date artifact was rebuilt"))[1]
    st = art.status({"k": 2})
    assert st.state == "stale" and "k: was 1, now 2" in st.reason
    (tmp_path / "x" / "a.txt").write_text("hellO")  # same size, other bytes
    assert art.status({"k": 1}).state == "corrupt"
    with pytest.raises(ArtifactError, match=r"a.txt does not match its checksum.*Rerun stage 99"):
        art.verify()
    _, built = build_or_reuse(art, {"k": 1}, _build)
    assert built and (tmp_path / "x" / "a.txt").read_text() == "hello"


@pytest.mark.parametrize("damage", ["content", "files", "fingerprint", "a record"])
def test_a_damaged_manifest_is_named_and_repaired(tmp_path, damage):
    art = Artifact(tmp_path / "x", "thing", "stage 99")
    build_or_reuse(art, {"k": 1}, _build)
    m = json.loads((tmp_path / "x" / "manifest.json").read_text())
    if damage == "a record":
        m["files"]["a.txt"] = {"sha256": m["files"]["a.txt"]["sha256"]}  # no size: must not pass as sound
        m["content"] = catalog.digest({"a.txt": m["files"]["a.txt"]["sha256"]})
    else:
        del m[damage]
    (tmp_path / "x" / "manifest.json").write_text(json.dumps(m))
    st = art.status({"k": 1})
    assert st.state == "corrupt" and "manifest.json" in st.reason and str(tmp_path / "x") in st.reason
    with pytest.raises(ArtifactError, match=r"thing .* is corrupt: .*manifest.json.*Rerun stage 99"):
        art.content_id()  # named, never a bare KeyError
    _, built = build_or_reuse(art, {"k": 1}, _build)  # a plain rerun repairs it, no --force needed
    assert built and art.status({"k": 1}).ok


def test_a_manifest_whose_file_list_was_edited_is_not_sound(tmp_path):
    art = Artifact(tmp_path / "x", "thing", "stage 99")
    build_or_reuse(art, {"k": 1}, _build)
    m = json.loads((tmp_path / "x" / "manifest.json").read_text())
    m["files"] = {}  # the files are no longer checked unless the content id says so
    (tmp_path / "x" / "manifest.json").write_text(json.dumps(m))
    assert art.status({"k": 1}).state == "corrupt"


def test_failed_build_leaves_no_finished_artifact(tmp_path):
    art = Artifact(tmp_path / "x", "thing", "stage 99")
    build_or_reuse(art, {"k": 1}, _build)

    def broken(root):
        (root / "a.txt").write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        build_or_reuse(art, {"k": 2}, broken)
    assert art.status({"k": 1}).state == "missing" and art.status({"k": 2}).state == "missing"


def _slow_build(root: str, log: str) -> None:
    def build(r: Path):
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(0.5)
        return _build(r)

    build_or_reuse(Artifact(root, "thing", "stage 99"), {"k": 1}, build)


def test_concurrent_runs_build_once_and_both_succeed(tmp_path):
    log = tmp_path / "log.txt"
    procs = [mp.get_context("fork").Process(target=_slow_build, args=(str(tmp_path / "x"), str(log))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert log.read_text() == "built\n"  # the second run waited, then reused the first one's work
    assert Artifact(tmp_path / "x", "thing", "stage 99").status({"k": 1}).ok


def _released(root: Path, seed: int) -> None:
    col = load_karpathy(FIX / "karpathy_tiny.json")
    rng = np.random.default_rng(seed)
    unit = lambda n: (lambda x: x / np.linalg.norm(x, axis=1, keepdims=True))(rng.normal(size=(n, 256)))  # noqa: E731
    write_embeddings(root / "img_embs.parquet", col.images["image_id"].tolist(), unit(len(col.images)))
    write_embeddings(root / "text_embs.parquet", col.captions["text_id"].tolist(), unit(len(col.captions)))


def test_changed_upstream_file_recomputes_every_downstream_artifact(tmp_path, monkeypatch):
    _released(tmp_path / "released", seed=0)
    cfg = load_config(
        "paper",
        overrides={
            "data": {
                "root": str(tmp_path / "data"),
                "karpathy_json": str(FIX / "karpathy_tiny.json"),
                "image_root": None,
            },
            "encoder": {"kind": "feature_files", "checkpoint": None, "features_dir": str(tmp_path / "released")},
            "d2s": {
                "vocab_init": "minilm",
                "hidden_dim": None,
                "epochs": 2,
                "batch_size": 4,
                "eval_batch_size": 8,
                "mixed_precision": False,
            },
        },
    )
    monkeypatch.setattr("lsr_lib.config.profiles.REPO_ROOT", tmp_path)  # results/ under tmp_path
    col = load_karpathy(FIX / "karpathy_tiny.json")
    tok = s02.tokenizer_for(cfg)

    def stage02():
        c, img, txt = catalog.load_dense_dir(catalog.dense_dir(cfg))
        train, val = c.split("train"), c.split("val")
        ti, tt = img[c.images["split"].eq("train").to_numpy()], txt[c.captions["split"].eq("train").to_numpy()]
        vi, vt = img[c.images["split"].eq("val").to_numpy()], txt[c.captions["split"].eq("val").to_numpy()]
        for name in cfg.d2s_conditions:
            s02.train_condition(
                cfg, name, s02.training_pairs(train, ti, tt, tok), s02.eval_data(val, vi, vt), "cpu", progress=False
            )
            test = c.split("test")
            s02.export_vectors(
                cfg,
                name,
                "test",
                test,
                img[c.images["split"].eq("test").to_numpy()],
                txt[c.captions["split"].eq("test").to_numpy()],
                tok,
            )

    build_dense_features(cfg, col, "cpu", progress=False)
    stage02()
    runs = {n: catalog.d2s_run_artifact(cfg, n).content_id() for n in cfg.d2s_conditions}
    vecs = catalog.vectors_content_ids(cfg)
    write_results(cfg, "03_analyses", {"x": 1}, catalog.stage_inputs(cfg, "03_analyze_sparse_vectors"))
    assert catalog.result_is_current(cfg, "03_analyze_sparse_vectors")
    for stage, file in (("01_cache_dense_features", "01_dense_baseline"), ("02_train_sparse_heads", "02_d2s")):
        assert not catalog.result_is_current(cfg, stage)  # no result file yet
        write_results(cfg, file, {"x": 1}, catalog.stage_inputs(cfg, stage))
        assert catalog.result_is_current(cfg, stage)  # a rerun with nothing changed skips the stage
        other = load_config(
            "paper",
            overrides={
                "data": {
                    "root": str(tmp_path / "data"),
                    "karpathy_json": str(FIX / "karpathy_tiny.json"),
                    "image_root": None,
                },
                "encoder": {"kind": "feature_files", "checkpoint": None, "features_dir": str(tmp_path / "released")},
                "d2s": {
                    "vocab_init": "minilm",
                    "hidden_dim": None,
                    "epochs": 3,
                    "batch_size": 4,
                    "eval_batch_size": 8,
                    "mixed_precision": False,
                },
                "evaluation": {"ks": [1, 5]},
            },
            params_dir=Path(__file__).resolve().parents[1] / "params",
        )
        assert not catalog.result_is_current(other, stage)  # another config section it reads: stale
    assert not catalog.result_is_current(cfg, "05_image_suggestion")  # its inputs (suggestion runs) do not exist

    _released(tmp_path / "released", seed=1)  # the source features change
    assert not build_dense_features(cfg, col, "cpu", progress=False)["skipped"]
    assert not catalog.result_is_current(cfg, "03_analyze_sparse_vectors")  # no stale row can reach a table
    assert not catalog.result_is_current(cfg, "01_cache_dense_features") and not catalog.result_is_current(
        cfg, "02_train_sparse_heads"
    )
    with pytest.raises(ArtifactError, match="stale"):  # the old vectors no longer match their inputs
        catalog.vectors_artifact(cfg, cfg.d2s_conditions[0], "test").verify(
            {
                "run": runs[cfg.d2s_conditions[0]],
                "dense": catalog.dense_content_id(cfg),
                "split": "test",
                **catalog.code_fingerprint(s02.__name__),
            }
        )
    stage02()
    assert all(catalog.d2s_run_artifact(cfg, n).content_id() != runs[n] for n in cfg.d2s_conditions)  # retrained
    assert catalog.vectors_content_ids(cfg) != vecs  # re-exported
    assert json.loads(catalog.result_path(cfg, "03_analyses").read_text())["inputs_fingerprint"] != catalog.digest(
        catalog.stage_inputs(cfg, "03_analyze_sparse_vectors")
    )


def test_a_corrupt_tower_shard_makes_stage01_stale_named_and_a_plain_rerun_rebuilds_it(tmp_path, monkeypatch):
    monkeypatch.setattr("lsr_lib.config.profiles.REPO_ROOT", tmp_path)  # results/ under tmp_path
    cfg = load_config(
        "smoke",
        overrides={"data": {"root": str(tmp_path / "data")}},
        params_dir=Path(__file__).resolve().parents[1] / "params",
    )
    ids = [f"i{k}" for k in range(6)]
    rows = lambda b: {"x": np.array([[float(i[1:]), 1.0] for i in b], dtype=np.float32)}  # noqa: E731
    caches = {n: ShardedCache(cfg.shared_cache_dir / n, {"tower": n}, shard_size=2) for n in catalog.TOWER_CACHES}
    for c in caches.values():
        c.fill(ids, rows, 2, progress=False)
    for art in (catalog.dense_artifact(cfg), catalog.lit_artifact(cfg)):  # stage 01's other outputs, made by hand
        build_or_reuse(art, {"k": 1}, _build)
    write_results(cfg, "01_dense_baseline", {"x": 1}, catalog.stage_inputs(cfg, "01_cache_dense_features"))
    assert catalog.result_status(cfg, "01_cache_dense_features")[0]
    shard = cfg.shared_cache_dir / "tower_images" / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF  # one flipped byte, same size
    shard.write_bytes(bytes(data))
    current, why = catalog.result_status(cfg, "01_cache_dense_features")
    # named by a plain rerun's check
    assert not current and "shard-00001.safetensors does not match its checksum" in why
    computed = []
    # what stage 01's rerun does
    caches["tower_images"].fill(ids, lambda b: (computed.extend(b), rows(b))[1], 2, progress=False)
    assert computed == ["i2", "i3"]  # that shard alone, to the same bytes
    assert catalog.result_status(cfg, "01_cache_dense_features")[0]


def test_a_missing_input_names_the_command_that_makes_it_for_its_profile(tmp_path):
    # The notebook opened first in the Lab (issue 28): what to run, for the profile the notebook is on.
    commands = {"default": "make main", "smoke": ".venv/bin/python -m lsr_lib.run.pipeline --profile smoke"}
    for profile, command in commands.items():
        with pytest.raises(ArtifactError) as err:
            catalog.load_dense_dir(tmp_path / "data" / "cache" / profile / "dense")  # how the notebooks read it
        assert f"is missing: {tmp_path}" in str(err.value)
        assert f"Rerun stage 01 (notebooks/01_cache_dense_features.ipynb) with `{command}`: it rebuilds" in str(
            err.value
        )
        cfg = load_config(profile)
        with pytest.raises(ArtifactError, match=f"Rerun stage 02 .* with `{command}`"):
            catalog.vectors_artifact(cfg, cfg.d2s_conditions[0], "no_such_split").verify()
    with pytest.raises(ArtifactError, match=r"Rerun stage 01 \(notebooks/01_cache_dense_features.ipynb\): it"):
        catalog.load_dense_dir(tmp_path / "elsewhere")  # not a profile's cache: the stage alone
