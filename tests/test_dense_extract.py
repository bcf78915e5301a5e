"""Stage 01's paper path end to end on the Karpathy fixture with a small real encoder stand-in:
extraction through the resumable cache, the dense directory contract, released feature files."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lsr_lib.config.profiles import load_config
from lsr_lib.dense.encoder import DenseEncoder
from lsr_lib.dense.extract import extract_with_encoder, load_released_features, make_encoder
from lsr_lib.stages.cache_dense_features import (
    build_dense_features,
    dense_artifact,
    dense_baseline,
    dense_content_id,
    dense_dir,
    load_dense_dir,
    write_dense_dir,
)
from lsr_lib.storage.manifest import ArtifactError
from lsr_lib.storage.feature_files import write_embeddings
from lsr_lib.data.karpathy import ImageLoadError, load_karpathy

FIX = Path(__file__).resolve().parent / "fixtures"


class ColourEncoder(DenseEncoder):
    """A deterministic encoder: mean colour for images, letter counts for texts (4-d)."""

    name, dim = "colour", 4

    def __init__(self):
        self.calls = 0

    def encode_images(self, images):
        self.calls += len(images)
        x = torch.tensor([np.asarray(im, dtype=np.float32).mean((0, 1)).tolist() + [1.0] for im in images])
        return torch.nn.functional.normalize(x, dim=-1)

    def encode_texts(self, texts):
        x = torch.tensor([[t.count("r") + 0.1, t.count("g") + 0.1, t.count("b") + 0.1, 1.0] for t in texts])
        return torch.nn.functional.normalize(x, dim=-1)

    def fingerprint(self):
        return {"kind": self.name}


@pytest.fixture
def cfg(tmp_path):
    base = load_config("paper")
    return dataclasses.replace(
        base,
        data=dataclasses.replace(
            base.data,
            root=str(tmp_path),
            karpathy_json=str(FIX / "karpathy_tiny.json"),
            image_root=str(FIX / "karpathy_images"),
        ),
        extraction=dataclasses.replace(base.extraction, shard_size=2, image_batch_size=1, text_batch_size=2),
    )


def test_extract_writes_contract_and_is_reused(cfg, tmp_path):
    col = load_karpathy(cfg.data.karpathy_json, cfg.data.image_root)
    enc = ColourEncoder()
    img, txt = extract_with_encoder(cfg, col, enc, tmp_path / "x", progress=False)
    assert img.shape == (len(col.images), 4) and np.allclose(np.linalg.norm(txt, axis=1), 1)
    calls = enc.calls
    extract_with_encoder(cfg, col, enc, tmp_path / "x", progress=False)
    assert enc.calls == calls  # cached
    files = write_dense_dir(tmp_path / "dense", col, img, txt, FIX / "karpathy_images")
    dense_artifact(tmp_path / "dense").commit(
        {"encoder": "colour"}, files, {"image_root": str(FIX / "karpathy_images")}
    )
    col2, img2, txt2 = load_dense_dir(tmp_path / "dense")
    assert col2.images["image_id"].tolist() == col.images["image_id"].tolist() and np.array_equal(img2, img)
    assert col2.images["path"].tolist() == col.images["path"].tolist()  # later stages can show the images
    res = dense_baseline(
        dataclasses.replace(cfg, evaluation=dataclasses.replace(cfg.evaluation, splits=("val",))), tmp_path / "dense"
    )
    assert set(res["val"]) >= {"text_to_image", "image_to_text", "counts"}


def test_corrupt_image_is_named_and_earlier_shards_kept(cfg, tmp_path):
    meta = json.loads((FIX / "karpathy_tiny.json").read_text())
    meta["images"][-1]["filename"] = "corrupt.png"  # the last image (shard 2) is broken
    meta["images"][-1]["filepath"] = "val2014"
    (tmp_path / "k.json").write_text(json.dumps(meta))
    col = load_karpathy(tmp_path / "k.json", cfg.data.image_root)
    with pytest.raises(ImageLoadError, match="corrupt.png"):
        extract_with_encoder(cfg, col, ColourEncoder(), tmp_path / "x", progress=False)
    assert (tmp_path / "x" / "images" / "shard-00000.safetensors").exists()  # nothing computed is lost


def test_missing_stage01_output_says_what_to_run(tmp_path):
    with pytest.raises(ArtifactError, match="missing.*Rerun stage 01 \\(notebooks/01_cache_dense_features.ipynb\\)"):
        load_dense_dir(tmp_path / "nothing")


def _released(cfg, tmp_path, seed=0):
    """Released-format features for the fixture collection, and a profile that reads them."""
    col = load_karpathy(FIX / "karpathy_tiny.json")
    rng = np.random.default_rng(seed)
    unit = lambda n: (lambda x: x / np.linalg.norm(x, axis=1, keepdims=True))(rng.normal(size=(n, 256)))
    src = tmp_path / "released"
    write_embeddings(src / "img_embs.parquet", col.images["image_id"].tolist(), unit(len(col.images)))
    write_embeddings(src / "text_embs.parquet", col.captions["text_id"].tolist(), unit(len(col.captions)))
    return col, dataclasses.replace(
        cfg, encoder=dataclasses.replace(cfg.encoder, kind="feature_files", checkpoint=None, features_dir=str(src))
    )


def test_nan_in_stage01_parquet_is_named_and_repaired_by_a_rerun(cfg, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    col, c = _released(cfg, tmp_path)
    assert not build_dense_features(c, col, "cpu", progress=False)["skipped"]
    _, img, _ = load_dense_dir(dense_dir(c))
    assert build_dense_features(c, col, "cpu", progress=False)["skipped"]  # up to date: reused
    path = dense_dir(c) / "img_embs.parquet"
    table = pq.read_table(path)
    emb = np.array(table.column("emb").to_pylist(), dtype=np.float32)
    emb[0, 0] = np.nan  # a damaged file on disk
    pq.write_table(
        pa.table({"id": table.column("id"), "emb": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 256)}), path
    )
    with pytest.raises(ArtifactError, match="img_embs.parquet .*checksum.*Rerun stage 01"):
        load_dense_dir(dense_dir(c))
    assert not build_dense_features(c, col, "cpu", progress=False)["skipped"]  # the rerun repairs it
    assert np.array_equal(load_dense_dir(dense_dir(c))[1], img)


def test_changed_source_features_make_stage01_stale(cfg, tmp_path):
    col, c = _released(cfg, tmp_path)
    build_dense_features(c, col, "cpu", progress=False)
    before = dense_content_id(c)
    _released(cfg, tmp_path, seed=1)  # the user replaced the released files
    assert not build_dense_features(c, col, "cpu", progress=False)["skipped"]
    assert dense_content_id(c) != before  # so every downstream fingerprint changes too


def test_released_feature_files(cfg, tmp_path):
    col = load_karpathy(FIX / "karpathy_tiny.json")
    rng = np.random.default_rng(0)
    unit = lambda n: (lambda x: x / np.linalg.norm(x, axis=1, keepdims=True))(rng.normal(size=(n, 256)))
    write_embeddings(tmp_path / "img_embs.parquet", col.images["image_id"].tolist()[::-1], unit(len(col.images)))
    write_embeddings(tmp_path / "text_embs.parquet", col.captions["text_id"].tolist(), unit(len(col.captions)))
    c = dataclasses.replace(
        cfg, encoder=dataclasses.replace(cfg.encoder, kind="feature_files", features_dir=str(tmp_path))
    )
    img, txt = load_released_features(c, col)
    assert img.shape == (len(col.images), 256)
    with pytest.raises(ValueError, match="needs encoder.checkpoint"):
        make_encoder(dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, checkpoint=None)))
