"""Stage 01: load the collection, cache dense features, and score the dense baseline.

Files this stage writes (all under ``cfg.cache_dir``, gitignored), each reused when present and
made with the same configuration:

- ``tower_images/``, ``tower_texts/``: sharded tower features (embedded default only);
- ``lit/projection.safetensors``: the trained LiT projections (embedded default only);
- ``dense/``: ``img_embs.parquet`` and ``text_embs.parquet`` (columns id, emb; the released-features
  format of DESIGN.md section 5), ``dataset_meta.json`` (Karpathy format) and ``manifest.json``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.collection import ImageCaptionSet
from ..config.profiles import Config, to_dict
from ..storage.shard_cache import CacheMismatchError, ShardedCache, atomic_write_text
from ..storage.feature_files import align, read_embeddings, write_embeddings


def load_collection(cfg: Config, render: bool = True) -> ImageCaptionSet:
    """The profile's collection; for the emoji default also builds the split files and images."""
    from ..data import karpathy

    if cfg.data.name == "emoji":
        from ..data.emoji import build_emoji_collection, render_collection, split_checksum

        root = cfg.data_dir / "emoji"
        col = build_emoji_collection(cfg.data.split_seed, cfg.data.split_fractions, cfg.data.max_groups, root / f"images_{cfg.data.image_size}")
        meta = root / f"dataset_meta_{cfg.profile}.json"
        karpathy.write_karpathy(col, meta)
        atomic_write_text(root / f"split_{cfg.profile}.sha256", split_checksum(col) + "\n")
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


def render_view(path: str, view: str, seed: int) -> Image.Image:
    """The RGB image for a view id suffix; random views are seeded by (seed, path, view)."""
    import zlib

    from ..data.image_augment import eval_transform, random_view

    try:
        rgba = Image.open(path)
        rgba.load()
        rgba = rgba.convert("RGBA")
    except Exception as e:
        raise ValueError(f"image {path} is missing or unreadable ({e}); delete it and re-run stage 01 to render it again") from e
    if view.startswith("view"):
        rng = np.random.default_rng([seed, zlib.crc32(f"{path}@{view}".encode())])
        return random_view(rgba, rng)
    return eval_transform(view)(rgba)


def cache_tower_features(cfg: Config, collection: ImageCaptionSet, device: torch.device, progress: bool = True) -> tuple[ShardedCache, ShardedCache]:
    """Fill (or reuse) the image-view and caption tower caches of the embedded default."""
    from ..data.emoji import split_checksum
    from ..dense.towers import ImageTower, TextTower

    img_tower = ImageTower(device, cfg.data.image_size)
    txt_tower = TextTower(device)
    ids = view_ids(collection, cfg.lit.train_views, cfg.lit.eval_transforms)
    path_of = dict(zip(collection.images["image_id"], collection.images["path"]))
    base = {"collection": split_checksum(collection), "seed": cfg.lit.seed}
    img_cache = ShardedCache(cfg.cache_dir / "tower_images", {**base, **img_tower.fingerprint(), "views": ids[:3] + [len(ids)], "train_views": cfg.lit.train_views, "eval_transforms": list(cfg.lit.eval_transforms)}, cfg.extraction.shard_size)

    def images(batch: list[str]) -> dict[str, np.ndarray]:
        pics = [render_view(path_of[b.split("@")[0]], b.split("@")[1], cfg.lit.seed) for b in batch]
        return img_tower(pics)

    img_cache.fill(ids, images, cfg.extraction.image_batch_size, "image tower", progress)
    txt_cache = ShardedCache(cfg.cache_dir / "tower_texts", {**base, **txt_tower.fingerprint()}, cfg.extraction.shard_size)
    text_of = dict(zip(collection.captions["text_id"], collection.captions["text"]))
    txt_cache.fill(list(collection.captions["text_id"]), lambda b: txt_tower([text_of[i] for i in b]), cfg.extraction.text_batch_size, "text tower", progress)
    return img_cache, txt_cache


def train_or_load_projection(cfg: Config, collection: ImageCaptionSet, img_cache: ShardedCache, txt_cache: ShardedCache, progress: bool = True):
    """Train the LiT projections on the train split, or load them when already trained."""
    from ..data.emoji import split_checksum
    from ..dense.lit_projection import image_feature_matrix, load_projection, save_projection, train_lit

    path = cfg.cache_dir / "lit" / "projection.safetensors"
    stamp = {"lit": to_dict(cfg.lit), "collection": split_checksum(collection), "tower_manifest": img_cache.manifest}
    if path.exists():
        model, meta = load_projection(path)
        if meta.get("stamp") == json.loads(json.dumps(stamp)):
            return model, meta.get("history", [])
        raise CacheMismatchError(f"{path} was trained with another configuration; nothing was deleted: remove {path.parent} to retrain")
    train = collection.split("train")
    n_views = 1 + cfg.lit.train_views
    view_names = ["clean"] + [f"view{k}" for k in range(cfg.lit.train_views)]
    _, parts = img_cache.read([f"{i}@{v}" for i in train.images["image_id"] for v in view_names])
    feats = image_feature_matrix(parts, cfg.lit.image_features).reshape(len(train.images), n_views, -1)
    _, txt = txt_cache.read(list(train.captions["text_id"]))
    row_of = {i: k for k, i in enumerate(train.images["image_id"])}
    rows = np.array([row_of[i] for i in train.captions["image_id"]])
    val = collection.split("val")
    _, vparts = img_cache.read([f"{i}@clean" for i in val.images["image_id"]])
    _, vtxt = txt_cache.read(list(val.captions["text_id"]))
    val_data = {"image": image_feature_matrix(vparts, cfg.lit.image_features), "text": vtxt["text"], "text_image_ids": val.captions["image_id"].to_numpy(), "image_ids": val.images["image_id"].to_numpy()}
    model, history = train_lit(feats, txt["text"], rows, cfg.lit, val_data, progress)
    save_projection(model, cfg.lit, path, {"stamp": stamp, "history": history})
    return model, history


def project_views(model, img_cache: ShardedCache, txt_cache: ShardedCache, image_ids: list[str], text_ids: list[str], parts: tuple[str, ...], view: str = "clean") -> tuple[np.ndarray, np.ndarray]:
    """256-d embeddings of images (one named view) and captions through the trained projection."""
    from ..dense.lit_projection import image_feature_matrix

    _, ip = img_cache.read([f"{i}@{view}" for i in image_ids])
    _, tp = txt_cache.read(text_ids)
    with torch.no_grad():
        img = model.image(torch.from_numpy(image_feature_matrix(ip, parts))).numpy()
        txt = model.text(torch.from_numpy(tp["text"])).numpy()
    return img, txt


def write_dense_dir(out_dir: Path, collection: ImageCaptionSet, img: np.ndarray, txt: np.ndarray, manifest: dict, image_root: Path | None = None) -> None:
    """Write the stage's contract with later stages: parquet features + Karpathy meta + manifest.

    Image paths are stored relative to ``image_root`` (recorded in the manifest), so later stages
    can show the images.
    """
    from ..data import karpathy

    write_embeddings(out_dir / "img_embs.parquet", collection.images["image_id"].tolist(), img)
    write_embeddings(out_dir / "text_embs.parquet", collection.captions["text_id"].tolist(), txt)
    karpathy.write_karpathy(collection, out_dir / "dataset_meta.json", image_root)
    extra = {"image_root": str(image_root)} if image_root is not None else {}
    atomic_write_text(out_dir / "manifest.json", json.dumps({**manifest, **extra}, indent=2, sort_keys=True))


def load_dense_dir(dense_dir: Path, split: str | None = None) -> tuple[ImageCaptionSet, np.ndarray, np.ndarray]:
    """Read stage 01's output: (collection, image vectors (N_img, D), text vectors (N_txt, D))."""
    from ..data import karpathy

    if not (dense_dir / "manifest.json").exists():
        raise FileNotFoundError(f"{dense_dir} has no dense features; run notebooks/01_cache_dense_features.ipynb for this profile first")
    image_root = json.loads((dense_dir / "manifest.json").read_text()).get("image_root")
    col = karpathy.load_karpathy(dense_dir / "dataset_meta.json", image_root)
    if split is not None:
        col = col.split(split)
    iid, iemb = read_embeddings(dense_dir / "img_embs.parquet")
    tid, temb = read_embeddings(dense_dir / "text_embs.parquet")
    img = align(iid, iemb, col.images["image_id"].tolist(), str(dense_dir / "img_embs.parquet"))
    txt = align(tid, temb, col.captions["text_id"].tolist(), str(dense_dir / "text_embs.parquet"))
    return col, img, txt


def dense_dir(cfg: Config) -> Path:
    """Where stage 01 writes the dense features later stages read."""
    return cfg.cache_dir / "dense"


def build_dense_features(cfg: Config, collection: ImageCaptionSet, device: torch.device, progress: bool = True) -> dict:
    """Write ``dense_dir(cfg)`` for any encoder kind, or skip when it is up to date."""
    from ..dense.extract import extract_with_encoder, load_released_features, make_encoder
    from ..data.emoji import split_checksum

    out = dense_dir(cfg)
    manifest = {"encoder": to_dict(cfg.encoder), "config_hash": cfg.section_hash("data", "encoder", "lit"), "collection": split_checksum(collection)}
    if (out / "manifest.json").exists():
        old = json.loads((out / "manifest.json").read_text())
        if {k: old.get(k) for k in manifest} == json.loads(json.dumps(manifest)):
            return {"skipped": True, "dir": str(out)}
    kind = cfg.encoder.kind
    extra: dict = {}
    if kind == "lit_towers":
        img_cache, txt_cache = cache_tower_features(cfg, collection, device, progress)
        model, history = train_or_load_projection(cfg, collection, img_cache, txt_cache, progress)
        img, txt = project_views(model, img_cache, txt_cache, collection.images["image_id"].tolist(), collection.captions["text_id"].tolist(), cfg.lit.image_features)
        extra = {"lit_epochs": len(history)}
    elif kind == "feature_files":
        img, txt = load_released_features(cfg, collection)
    else:
        encoder = make_encoder(cfg)
        img, txt = extract_with_encoder(cfg, collection, encoder, cfg.cache_dir / f"extract_{kind}", progress)
        extra = {"fingerprint": encoder.fingerprint()}
    paths = [p for p in collection.images["path"] if p]
    root = Path(os.path.commonpath(paths)) if paths else None
    if root is not None and root.is_file():
        root = root.parent
    write_dense_dir(out, collection, img, txt, {**manifest, **extra}, root)
    return {"skipped": False, "dir": str(out), **extra}


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
    model, _ = load_projection(cfg.cache_dir / "lit" / "projection.safetensors")
    test = collection.split("test")
    ids, tids = test.images["image_id"].tolist(), test.captions["text_id"].tolist()
    out = {}
    for view in ("clean",) + tuple(cfg.lit.eval_transforms):
        img, txt = project_views(model, img_cache, txt_cache, ids, tids, cfg.lit.image_features, view)
        out[view] = evaluate_both_directions(torch.from_numpy(img), torch.from_numpy(txt), test.captions["image_id"].to_numpy(), test.images["image_id"].to_numpy(), cfg.evaluation.ks, cfg.evaluation.mrr_depth)
    return out
