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
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.collection import ImageCaptionSet
from ..config.profiles import Config, to_dict
from ..artifacts.catalog import CODE_VERSIONS, dense_artifact, dense_content_id, dense_dir, lit_artifact, load_dense_dir  # noqa: F401 (stage 01's readers, re-exported)
from ..storage.atomic import atomic_write_text
from ..storage.manifest import build_or_reuse, sha256_file
from ..storage.shard_cache import ShardedCache
from ..storage.feature_files import write_embeddings


def load_collection(cfg: Config, render: bool = True) -> ImageCaptionSet:
    """The profile's collection; for the emoji default also builds the split files and images."""
    from ..data import karpathy

    if cfg.data.name == "emoji":
        from ..data.emoji import build_emoji_collection, render_collection, split_checksum

        root = cfg.data_dir / "emoji"
        col = build_emoji_collection(cfg.data.split_seed, cfg.data.split_fractions, cfg.data.max_groups, root / f"images_{cfg.data.image_size}")
        meta = root / f"dataset_meta_{cfg.base_profile}.json"  # one split for every training seed
        karpathy.write_karpathy(col, meta)
        atomic_write_text(root / f"split_{cfg.base_profile}.sha256", split_checksum(col) + "\n")
        if render:
            render_collection(col, cfg.data.image_size)
        return col
    if cfg.data.karpathy_json is None and cfg.encoder.kind == "feature_files" and cfg.encoder.features_dir:
        return karpathy.load_karpathy(cfg.path(cfg.encoder.features_dir) / "dataset_meta.json", name=cfg.data.name)
    if cfg.data.karpathy_json is None:
        raise ValueError(f"profile {cfg.profile!r}: data.karpathy_json is not set; point it at dataset_{cfg.data.name}.json (Karpathy split file)")
    image_root = cfg.path(cfg.data.image_root) if cfg.data.image_root else None
    return karpathy.load_karpathy(cfg.path(cfg.data.karpathy_json), image_root, name=cfg.data.name)


def view_ids(collection: ImageCaptionSet, n_train_views: int, eval_transforms: tuple[str, ...]) -> list[str]:
    """Ids ``<image>@clean``, ``<image>@view<k>`` (train) and ``<image>@<transform>`` (test)."""
    ids = [f"{i}@clean" for i in collection.images["image_id"]]
    train = collection.images.loc[collection.images["split"] == "train", "image_id"]
    ids += [f"{i}@view{k}" for k in range(n_train_views) for i in train]
    test = collection.images.loc[collection.images["split"] == "test", "image_id"]
    ids += [f"{i}@{t}" for t in eval_transforms for i in test]
    return ids


def render_view(path: str, view: str, seed: int, image_id: str) -> Image.Image:
    """The RGB image for a view id suffix; random views are seeded by (seed, image id, view).

    Never by the file's path: a path includes the checkout's folder, and seeding by it gave every
    clone its own training views and so its own teacher (issue 13).
    """
    import zlib

    from ..data.image_augment import eval_transform, random_view

    try:
        rgba = Image.open(path)
        rgba.load()
        rgba = rgba.convert("RGBA")
    except Exception as e:
        raise ValueError(f"image {path} is missing or unreadable ({e}); delete it and re-run stage 01 to render it again") from e
    if view.startswith("view"):
        rng = np.random.default_rng([seed, zlib.crc32(f"{image_id}@{view}".encode())])
        return random_view(rgba, rng)
    return eval_transform(view)(rgba)


def cache_tower_features(cfg: Config, collection: ImageCaptionSet, device: torch.device, progress: bool = True) -> tuple[ShardedCache, ShardedCache]:
    """Fill (or reuse) the image-view and caption tower caches of the embedded default."""
    from ..artifacts.catalog import suggest_patch_cache
    from ..data.emoji import split_checksum
    from ..data.suggest import emoji_suggestion_set
    from ..dense.towers import ImageTower, TextTower

    from ..dense.ray_extract import extraction_engine

    engine = extraction_engine(cfg.extraction)  # None: in this process; Ray: each actor builds its own towers
    img_tower, txt_tower = ImageTower(device, cfg.data.image_size), TextTower(device)
    ids = view_ids(collection, cfg.lit.train_views, cfg.lit.eval_transforms)
    path_of = dict(zip(collection.images["image_id"], collection.images["path"]))
    base = {"collection": split_checksum(collection), "seed": cfg.lit.view_seed, "views_seeded_by": "image_id"}
    img_cache = ShardedCache(cfg.shared_cache_dir / "tower_images", {**base, **img_tower.fingerprint(), "views": ids[:3] + [len(ids)], "train_views": cfg.lit.train_views, "eval_transforms": list(cfg.lit.eval_transforms)}, cfg.extraction.shard_size)
    # Stage 05's emoji suggestion documents are these clean images: keep their patch states from the
    # same forward passes (the tower's 7x7 map, bitwise what stage 05 would compute), so that stage 05
    # does not run the tower over them again.
    docs = emoji_suggestion_set(collection).docs if cfg.suggest.source == "emoji" else None
    patches = suggest_patch_cache(cfg, docs, img_tower.fingerprint()) if docs is not None else None
    keep = engine is None and patches is not None and not patches.complete and not img_cache.complete  # on Ray, stage 05 computes its own
    kept: dict[str, np.ndarray] = {}

    def images(batch: list[str]) -> dict[str, np.ndarray]:
        pics = [render_view(path_of[b.split("@")[0]], b.split("@")[1], cfg.lit.view_seed, b.split("@")[0]) for b in batch]
        out = img_tower(pics, with_patches=keep and any(b.endswith("@clean") for b in batch))
        for b, p in zip(batch, out.pop("patches", ())):
            if b.endswith("@clean"):
                kept[b.split("@")[0]] = p
        return out

    img_cache.fill(ids, images, cfg.extraction.image_batch_size, "image tower", progress, engine, partial(_image_tower_compute, cfg.data.image_size, path_of, cfg.lit.view_seed))
    doc_ids = list(docs["doc_id"]) if keep else []
    if keep and all(d in kept for d in doc_ids):
        patches.fill(doc_ids, lambda b: {"patches": np.stack([kept.pop(d) for d in b])}, cfg.extraction.image_batch_size, "patch states for stage 05", progress)
    kept.clear()
    txt_cache = ShardedCache(cfg.shared_cache_dir / "tower_texts", {**base, **txt_tower.fingerprint()}, cfg.extraction.shard_size)
    text_of = dict(zip(collection.captions["text_id"], collection.captions["text"]))
    txt_cache.fill(list(collection.captions["text_id"]), lambda b: txt_tower([text_of[i] for i in b]), cfg.extraction.text_batch_size, "text tower", progress,
                   engine, partial(_text_tower_compute, text_of))
    return img_cache, txt_cache


def _worker_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _image_tower_compute(image_size: int, path_of: dict, view_seed: int):
    """In a Ray actor: the image tower over rendered views (what ``cache_tower_features`` computes in process)."""
    from ..dense.towers import ImageTower

    tower = ImageTower(_worker_device(), image_size)
    return lambda batch: tower([render_view(path_of[b.split("@")[0]], b.split("@")[1], view_seed, b.split("@")[0]) for b in batch])


def _text_tower_compute(text_of: dict):
    """In a Ray actor: the text tower over captions."""
    from ..dense.towers import TextTower

    tower = TextTower(_worker_device())
    return lambda batch: tower([text_of[i] for i in batch])


CODE_VERSION = CODE_VERSIONS["01_cache_dense_features"]  # bump it there when a change here alters what this stage writes for the same config


def train_or_load_projection(cfg: Config, collection: ImageCaptionSet, img_cache: ShardedCache, txt_cache: ShardedCache, progress: bool = True):
    """Train the LiT projections on the train split, or load them when up to date."""
    from ..data.emoji import split_checksum
    from ..dense.lit_projection import load_projection, save_projection, train_lit

    art = lit_artifact(cfg)
    fingerprint = {"lit": to_dict(cfg.lit), "collection": split_checksum(collection), "code": CODE_VERSION,
                   "inputs": {"tower_images": img_cache.content_id(), "tower_texts": txt_cache.content_id()}}

    def build(root: Path):
        model, history = train_lit(*_lit_training_data(cfg, collection, img_cache, txt_cache), cfg.lit, _lit_val_data(cfg, collection, img_cache, txt_cache), progress)
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
    return {"image": image_feature_matrix(vparts, cfg.lit.image_features), "text": vtxt["text"], "text_image_ids": val.captions["image_id"].to_numpy(), "image_ids": val.images["image_id"].to_numpy()}


def project_views(model, img_cache: ShardedCache, txt_cache: ShardedCache, image_ids: list[str], text_ids: list[str], parts: tuple[str, ...], view: str = "clean") -> tuple[np.ndarray, np.ndarray]:
    """256-d embeddings of images (one named view) and captions through the trained projection."""
    _, tp = txt_cache.read(text_ids)
    with torch.no_grad():
        txt = model.text(torch.from_numpy(tp["text"])).numpy()
    return project_images(model, img_cache, image_ids, parts, view), txt


def project_images(model, img_cache: ShardedCache, image_ids: list[str], parts: tuple[str, ...], view: str = "clean") -> np.ndarray:
    """256-d embeddings of one named view of images through the trained projection."""
    from ..dense.lit_projection import image_feature_matrix

    _, ip = img_cache.read([f"{i}@{view}" for i in image_ids])
    with torch.no_grad():
        return model.image(torch.from_numpy(image_feature_matrix(ip, parts))).numpy()


def train_view_vectors(cfg: Config, views: int, progress: bool = False, include_clean: bool = False) -> np.ndarray:
    """Teacher vectors of the first ``views`` augmented renderings of every training image,
    (views, N_train_images, D) in the train split's image order: more distillation data the teacher
    already provides (the data-scale study, stage 07). Reads this stage's tower cache and LiT projection.
    ``include_clean``: the clean rendering first (it must equal this stage's train vectors).
    """
    from ..dense.lit_projection import load_projection

    if cfg.encoder.kind != "lit_towers" or views > cfg.lit.train_views:
        raise ValueError(f"augmented views exist for the LiT towers only, at most lit.train_views = {cfg.lit.train_views} per image; got encoder {cfg.encoder.kind!r} and {views} views")
    collection = load_collection(cfg)
    img_cache, _ = cache_tower_features(cfg, collection, torch.device("cpu"), progress)
    lit_artifact(cfg).verify()
    model, _ = load_projection(lit_artifact(cfg).root / "projection.safetensors")
    ids = collection.split("train").images["image_id"].tolist()
    names = (["clean"] if include_clean else []) + [f"view{k}" for k in range(views)]
    return np.stack([project_images(model, img_cache, ids, cfg.lit.image_features, v) for v in names]) if names else np.zeros((0, len(ids), cfg.encoder.embed_dim), np.float32)


DENSE_FILES = ("img_embs.parquet", "text_embs.parquet", "dataset_meta.json")


def write_dense_dir(out_dir: Path, collection: ImageCaptionSet, img: np.ndarray, txt: np.ndarray, image_root: Path | None = None) -> list[str]:
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
    fingerprint = {"encoder": to_dict(cfg.encoder), "config_hash": cfg.section_hash("data", "encoder", "lit"), "collection": split_checksum(collection), "code": CODE_VERSION}
    made: dict = {}
    if kind == "lit_towers":
        img_cache, txt_cache = cache_tower_features(cfg, collection, device, progress)
        model, history = train_or_load_projection(cfg, collection, img_cache, txt_cache, progress)
        fingerprint["inputs"] = {"lit": lit_artifact(cfg).content_id(), "tower_images": img_cache.content_id(), "tower_texts": txt_cache.content_id()}
        made = {"lit_epochs": len(history)}
    elif kind == "feature_files":
        src = cfg.path(cfg.encoder.features_dir) if cfg.encoder.features_dir else None
        fingerprint["inputs"] = {f: sha256_file(src / f) for f in ("img_embs.parquet", "text_embs.parquet") if src is not None and (src / f).exists()}
    else:
        encoder = make_encoder(cfg)
        made = {"fingerprint": encoder.fingerprint()}
        fingerprint["inputs"] = made

    def build(out: Path):
        if kind == "lit_towers":
            img, txt = project_views(model, img_cache, txt_cache, collection.images["image_id"].tolist(), collection.captions["text_id"].tolist(), cfg.lit.image_features)
        elif kind == "feature_files":
            img, txt = load_released_features(cfg, collection)
        else:
            img, txt = extract_with_encoder(cfg, collection, encoder, cfg.cache_dir / f"extract_{kind}", progress)
        paths = [p for p in collection.images["path"] if p]
        root = Path(os.path.commonpath(paths)) if paths else None
        if root is not None and root.is_file():
            root = root.parent
        return write_dense_dir(out, collection, img, txt, root), {**made, **({"image_root": str(root)} if root is not None else {})}

    manifest, built = build_or_reuse(dense_artifact(cfg), fingerprint, build)
    return {"skipped": not built, "dir": str(dense_dir(cfg)), **manifest["meta"]}


def dense_baseline(cfg: Config, dense: Path) -> dict:
    """R@k / MRR@10 of the dense teacher, both directions, on each evaluation split."""
    from ..metrics.retrieval import evaluate_both_directions

    out = {}
    for split in cfg.evaluation.splits:
        col, img, txt = load_dense_dir(dense, split)
        out[split] = evaluate_both_directions(torch.from_numpy(img), torch.from_numpy(txt), col.captions["image_id"].to_numpy(), col.images["image_id"].to_numpy(), cfg.evaluation.ks, cfg.evaluation.mrr_depth)
        out[split]["counts"] = col.counts()[split]
    return out


def robustness(cfg: Config, collection: ImageCaptionSet, progress: bool = False) -> dict:
    """Test-split R@k with each held-out image transform in place of the clean image (LiT only)."""
    from ..dense.lit_projection import load_projection
    from ..metrics.retrieval import evaluate_both_directions

    img_cache, txt_cache = cache_tower_features(cfg, collection, torch.device("cpu"), progress)
    lit_artifact(cfg).verify()
    model, _ = load_projection(lit_artifact(cfg).root / "projection.safetensors")
    test = collection.split("test")
    ids, tids = test.images["image_id"].tolist(), test.captions["text_id"].tolist()
    out = {}
    for view in ("clean",) + tuple(cfg.lit.eval_transforms):
        img, txt = project_views(model, img_cache, txt_cache, ids, tids, cfg.lit.image_features, view)
        out[view] = evaluate_both_directions(torch.from_numpy(img), torch.from_numpy(txt), test.captions["image_id"].to_numpy(), test.images["image_id"].to_numpy(), cfg.evaluation.ks, cfg.evaluation.mrr_depth)
    return out
