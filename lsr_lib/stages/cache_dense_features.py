"""Stage 01: load the collection, cache dense features, and score the dense baseline.

Files this stage writes (all under ``cfg.cache_dir``, gitignored), each an artifact with a
manifest (fingerprint + checksums, :mod:`lsr_lib.storage.manifest`) and reused only when its
fingerprint matches and every file passes its checksum:

- ``tower_images/``, ``tower_texts/``: sharded tower features (embedded default only), in
  ``cfg.shared_cache_dir``: every training seed of the profile reads the same ones;
- ``lit/projection.safetensors``: the trained LiT projections (embedded default only);
- ``dense/``: ``img_embs.parquet`` and ``text_embs.parquet`` (columns id, emb; the released-features
  format of DESIGN.md section 5), ``dataset_meta.json`` (Karpathy format) and ``manifest.json``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..data.collection import ImageCaptionSet
from ..data.image_augment import render_view, view_ids  # noqa: F401 (the rendered views stage 01's towers read)
from ..data.profile_sets import load_collection  # noqa: F401 (the profile's collection, re-exported)
from ..config.profiles import Config, to_dict

# stage 01's readers, re-exported
from ..artifacts.catalog import (
    code_fingerprint,
    dense_artifact,
    dense_content_id,  # noqa: F401
    dense_dir,
    lit_artifact,
    load_dense_dir,
)
from ..storage.manifest import build_or_reuse, sha256_file
from ..storage.shard_cache import ShardedCache

# stage 01's tower caches, re-exported
from ..artifacts.tower_features import cache_tower_features, project_images  # noqa: F401
from ..storage.feature_files import write_embeddings


# What computes stage 01's LiT projection and dense features (lsr_lib.storage.code_fingerprint: the import
# closure of these modules); the tower caches have their own (lsr_lib.artifacts.tower_features.TOWER_IMAGE_CODE).
STAGE01_CODE = (__name__, "lsr_lib.dense.lit_projection", "lsr_lib.dense.extract")


def train_or_load_projection(
    cfg: Config, collection: ImageCaptionSet, img_cache: ShardedCache, txt_cache: ShardedCache, progress: bool = True
):
    """Train the LiT projections on the train split, or load them when up to date."""
    from ..data.emoji import split_checksum
    from ..dense.lit_projection import load_projection, save_projection, train_lit

    art = lit_artifact(cfg)
    fingerprint = {
        "lit": to_dict(cfg.lit),
        "collection": split_checksum(collection),
        **code_fingerprint(*STAGE01_CODE),
        "inputs": {"tower_images": img_cache.content_id(), "tower_texts": txt_cache.content_id()},
    }

    def build(root: Path):
        model, history = train_lit(
            *_lit_training_data(cfg, collection, img_cache, txt_cache),
            cfg.lit,
            _lit_val_data(cfg, collection, img_cache, txt_cache),
            progress,
        )
        save_projection(model, cfg.lit, root / "projection.safetensors", {"history": history})
        return ["projection.safetensors", "projection.json"], {"epochs": len(history)}

    build_or_reuse(art, fingerprint, build)
    art.verify()
    model, meta = load_projection(art.root / "projection.safetensors")
    return model, meta.get("history", [])


def _lit_training_data(cfg: Config, collection: ImageCaptionSet, img_cache: ShardedCache, txt_cache: ShardedCache):
    """(image features (N_img, 1 + views, F), caption features (N_txt, F), caption -> image row) of the train split."""
    from ..dense.lit_projection import image_feature_matrix

    train = collection.split("train")
    view_names = ["clean"] + [f"view{k}" for k in range(cfg.lit.train_views)]
    _, parts = img_cache.read([f"{i}@{v}" for i in train.images["image_id"] for v in view_names])
    feats = image_feature_matrix(parts, cfg.lit.image_features).reshape(len(train.images), len(view_names), -1)
    _, txt = txt_cache.read(list(train.captions["text_id"]))
    row_of = {i: k for k, i in enumerate(train.images["image_id"])}
    return feats, txt["text"], np.array([row_of[i] for i in train.captions["image_id"]])


def _lit_val_data(cfg: Config, collection: ImageCaptionSet, img_cache: ShardedCache, txt_cache: ShardedCache) -> dict:
    """Validation features for the LiT checkpoint choice."""
    from ..dense.lit_projection import image_feature_matrix

    val = collection.split("val")
    _, vparts = img_cache.read([f"{i}@clean" for i in val.images["image_id"]])
    _, vtxt = txt_cache.read(list(val.captions["text_id"]))
    return {
        "image": image_feature_matrix(vparts, cfg.lit.image_features),
        "text": vtxt["text"],
        "text_image_ids": val.captions["image_id"].to_numpy(),
        "image_ids": val.images["image_id"].to_numpy(),
        "image_gallery": val.image_gallery,
    }


def project_views(
    model,
    img_cache: ShardedCache,
    txt_cache: ShardedCache,
    image_ids: list[str],
    text_ids: list[str],
    parts: tuple[str, ...],
    view: str = "clean",
) -> tuple[np.ndarray, np.ndarray]:
    """256-d embeddings of images (one named view) and captions through the trained projection."""
    _, tp = txt_cache.read(text_ids)
    with torch.no_grad():
        txt = model.text(torch.from_numpy(tp["text"])).numpy()
    return project_images(model, img_cache, image_ids, parts, view), txt


DENSE_FILES = ("img_embs.parquet", "text_embs.parquet", "dataset_meta.json")


def write_dense_dir(
    out_dir: Path, collection: ImageCaptionSet, img: np.ndarray, txt: np.ndarray, image_root: Path | None = None
) -> list[str]:
    """Write parquet features + Karpathy meta (image paths relative to ``image_root``); returns the file names."""
    from ..data import karpathy

    write_embeddings(out_dir / "img_embs.parquet", collection.images["image_id"].tolist(), img)
    write_embeddings(out_dir / "text_embs.parquet", collection.captions["text_id"].tolist(), txt)
    karpathy.write_karpathy(collection, out_dir / "dataset_meta.json", image_root)
    return list(DENSE_FILES)


def build_dense_features(cfg: Config, collection: ImageCaptionSet, device: torch.device, progress: bool = True) -> dict:
    """Write ``dense_dir(cfg)`` for any encoder kind, or reuse it when up to date (fingerprint and checksums)."""
    from ..data.emoji import split_checksum
    from ..dense.extract import extract_with_encoder, load_released_features, make_encoder

    kind = cfg.encoder.kind
    fingerprint = {
        "encoder": to_dict(cfg.encoder),
        "config_hash": cfg.section_hash("data", "encoder", "lit"),
        "collection": split_checksum(collection),
        **code_fingerprint(*STAGE01_CODE),
    }
    made: dict = {}
    if kind == "lit_towers":
        img_cache, txt_cache = cache_tower_features(cfg, collection, device, progress)
        model, history = train_or_load_projection(cfg, collection, img_cache, txt_cache, progress)
        fingerprint["inputs"] = {
            "lit": lit_artifact(cfg).content_id(),
            "tower_images": img_cache.content_id(),
            "tower_texts": txt_cache.content_id(),
        }
        made = {"lit_epochs": len(history)}
    elif kind == "feature_files":
        src = cfg.path(cfg.encoder.features_dir) if cfg.encoder.features_dir else None
        fingerprint["inputs"] = {
            f: sha256_file(src / f)
            for f in ("img_embs.parquet", "text_embs.parquet")
            if src is not None and (src / f).exists()
        }
    else:
        encoder = make_encoder(cfg)
        made = {"fingerprint": encoder.fingerprint()}
        fingerprint["inputs"] = made

    def build(out: Path):
        if kind == "lit_towers":
            img, txt = project_views(
                model,
                img_cache,
                txt_cache,
                collection.images["image_id"].tolist(),
                collection.captions["text_id"].tolist(),
                cfg.lit.image_features,
            )
        elif kind == "feature_files":
            img, txt = load_released_features(cfg, collection)
        else:
            img, txt = extract_with_encoder(cfg, collection, encoder, cfg.cache_dir / f"extract_{kind}", progress)
        paths = [p for p in collection.images["path"] if p]
        root = Path(os.path.commonpath(paths)) if paths else None
        if root is not None and root.is_file():
            root = root.parent
        return write_dense_dir(out, collection, img, txt, root), {
            **made,
            **({"image_root": str(root)} if root is not None else {}),
        }

    manifest, built = build_or_reuse(dense_artifact(cfg), fingerprint, build)
    return {"skipped": not built, "dir": str(dense_dir(cfg)), **manifest["meta"]}


def dense_baseline(cfg: Config, dense: Path) -> dict:
    """R@k / MRR@10 of the dense teacher, both directions, on each evaluation split."""
    from ..metrics.retrieval import evaluate_collection

    ks, depth = cfg.evaluation.ks, cfg.evaluation.mrr_depth
    out = {}
    for split in cfg.evaluation.splits:
        col, img, txt = load_dense_dir(dense, split)
        out[split] = evaluate_collection(col, img, txt, ks, depth)
        out[split]["counts"] = col.counts()[split]
    if "heldout" in out and "test" in out:  # the in-style test on the held-out style's emoji only
        from ..data.heldout import MATCHED, matched_rows, subset

        col, img, txt = load_dense_dir(dense, "test")
        rows = matched_rows(col, load_dense_dir(dense, "heldout")[0])
        out[MATCHED] = evaluate_collection(subset(col, rows, MATCHED), img[rows[0]], txt[rows[1]], ks, depth)
    return out


def robustness(cfg: Config, collection: ImageCaptionSet, progress: bool = False) -> dict:
    """Test-split R@k with each held-out image transform in place of the clean image (LiT only)."""
    from ..dense.lit_projection import load_projection
    from ..metrics.retrieval import evaluate_collection

    img_cache, txt_cache = cache_tower_features(cfg, collection, torch.device("cpu"), progress)
    lit_artifact(cfg).verify()
    model, _ = load_projection(lit_artifact(cfg).root / "projection.safetensors")
    test = collection.split("test")
    ids, tids = test.images["image_id"].tolist(), test.captions["text_id"].tolist()
    out = {}
    for view in ("clean",) + tuple(cfg.lit.eval_transforms):
        img, txt = project_views(model, img_cache, txt_cache, ids, tids, cfg.lit.image_features, view)
        out[view] = evaluate_collection(test, img, txt, cfg.evaluation.ks, cfg.evaluation.mrr_depth)
    return out


def stage_results(cfg: Config, collection: ImageCaptionSet, baseline: dict, robust: dict) -> dict:
    """The content of ``results/<profile>/01_dense_baseline.json``: counts, encoder, where the features are, the dense
    baseline and its robustness."""
    results = {
        "counts": collection.counts(),
        "encoder": cfg.encoder.kind,
        "dense_dir": str(dense_dir(cfg).relative_to(cfg.data_dir.parent))
        if dense_dir(cfg).is_relative_to(cfg.data_dir.parent)
        else str(dense_dir(cfg)),
        "baseline": baseline,
        "robustness_test": robust,
    }
    if cfg.data.name == "emoji":
        from ..data.emoji import split_checksum, style_counts

        results["split_sha256"] = split_checksum(collection)
        if collection.image_gallery is not None:
            results["styles"] = style_counts(collection)  # the data card's per-style table
    return results
