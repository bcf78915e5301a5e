"""Stage 01's tower caches and LiT projection, read back as teacher vectors (DESIGN.md section 5, issue 18).

The embedded default's image and caption tower features (sharded caches under
``cfg.shared_cache_dir``) are filled by :func:`cache_tower_features`; stage 01 projects them through
its LiT projection into the dense features, and the data-scale study (stage 07) projects the
augmented renderings of the training images through the same projection
(:func:`train_view_vectors`): more distillation data the teacher already provides. Both stages read
the caches through this one function, so they agree on every fingerprint.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from ..config.profiles import Config
from ..data.collection import ImageCaptionSet
from ..data.image_augment import render_view, view_ids
from ..data.profile_sets import load_collection
from ..storage.code_fingerprint import code_fingerprint
from ..storage.shard_cache import ShardedCache
from .catalog import lit_artifact, suggest_patch_cache

# What computes the tower caches (lsr_lib.storage.code_fingerprint: the import closure of these modules):
# the towers and the view renderer only, so an edit of the LiT training or of stage 01 does not throw
# away the tower features.
TOWER_IMAGE_CODE = ("lsr_lib.dense.towers", "lsr_lib.data.image_augment", "lsr_lib.data.emoji")


def cache_tower_features(
    cfg: Config, collection: ImageCaptionSet, device: torch.device, progress: bool = True
) -> tuple[ShardedCache, ShardedCache]:
    """Fill (or reuse) the image-view and caption tower caches of the embedded default."""
    from ..data.emoji import split_checksum
    from ..data.suggest import emoji_suggestion_set
    from ..dense.towers import ImageTower, TextTower

    from ..dense.ray_extract import extraction_engine

    engine = extraction_engine(cfg.extraction)  # None: in this process; Ray: each actor builds its own towers
    img_tower, txt_tower = ImageTower(device, cfg.data.image_size, cfg.extraction.image_backend), TextTower(device)
    ids = view_ids(collection, cfg.lit.train_views, cfg.lit.eval_transforms)
    path_of = dict(zip(collection.images["image_id"], collection.images["path"]))
    base = {"collection": split_checksum(collection), "seed": cfg.lit.view_seed, "views_seeded_by": "image_id"}
    img_cache = ShardedCache(
        cfg.shared_cache_dir / "tower_images",
        {
            **base,
            **img_tower.fingerprint(),
            **code_fingerprint(*TOWER_IMAGE_CODE),
            "views": ids[:3] + [len(ids)],
            "train_views": cfg.lit.train_views,
            "eval_transforms": list(cfg.lit.eval_transforms),
        },
        cfg.extraction.shard_size,
    )
    # Stage 05's emoji suggestion documents are these clean images: keep their patch states from the
    # same forward passes (the tower's 7x7 map, bitwise what stage 05 would compute), so that stage 05
    # does not run the tower over them again.
    docs = emoji_suggestion_set(collection).docs if cfg.suggest.source == "emoji" else None
    patches = suggest_patch_cache(cfg, docs, img_tower.fingerprint()) if docs is not None else None
    # on Ray, stage 05 computes its own
    keep = engine is None and patches is not None and not patches.complete and not img_cache.complete
    kept: dict[str, np.ndarray] = {}

    def images(batch: list[str]) -> dict[str, np.ndarray]:
        pics = [
            render_view(path_of[b.split("@")[0]], b.split("@")[1], cfg.lit.view_seed, b.split("@")[0]) for b in batch
        ]
        out = img_tower(pics, with_patches=keep and any(b.endswith("@clean") for b in batch))
        for b, p in zip(batch, out.pop("patches", ())):
            if b.endswith("@clean"):
                kept[b.split("@")[0]] = p
        return out

    img_cache.fill(
        ids,
        images,
        cfg.extraction.image_batch_size,
        "image tower",
        progress,
        engine,
        partial(_image_tower_compute, cfg.data.image_size, path_of, cfg.lit.view_seed, cfg.extraction.image_backend),
    )
    doc_ids = list(docs["doc_id"]) if keep else []
    if keep and all(d in kept for d in doc_ids):
        patches.fill(
            doc_ids,
            lambda b: {"patches": np.stack([kept.pop(d) for d in b])},
            cfg.extraction.image_batch_size,
            "patch states for stage 05",
            progress,
        )
    kept.clear()
    txt_cache = ShardedCache(
        cfg.shared_cache_dir / "tower_texts", {**base, **txt_tower.fingerprint()}, cfg.extraction.shard_size
    )
    text_of = dict(zip(collection.captions["text_id"], collection.captions["text"]))
    memo: dict[str, np.ndarray] = {}  # each distinct text once: the styles of an emoji share its captions

    def texts(batch: list[str]) -> dict[str, np.ndarray]:
        todo = list(dict.fromkeys(text_of[i] for i in batch if text_of[i] not in memo))
        if todo:
            memo.update(zip(todo, txt_tower(todo)["text"]))
        return {"text": np.stack([memo[text_of[i]] for i in batch])}

    txt_cache.fill(
        list(collection.captions["text_id"]),
        texts,
        cfg.extraction.text_batch_size,
        "text tower",
        progress,
        engine,
        partial(_text_tower_compute, text_of),
    )
    return img_cache, txt_cache


def _worker_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _image_tower_compute(image_size: int, path_of: dict, view_seed: int, backend: str = "torch"):
    """In a Ray actor: the image tower over rendered views (what ``cache_tower_features`` computes in process)."""
    from ..dense.towers import ImageTower

    tower = ImageTower(_worker_device(), image_size, backend)
    return lambda batch: tower(
        [render_view(path_of[b.split("@")[0]], b.split("@")[1], view_seed, b.split("@")[0]) for b in batch]
    )


def _text_tower_compute(text_of: dict):
    """In a Ray actor: the text tower over captions."""
    from ..dense.towers import TextTower

    tower = TextTower(_worker_device())
    return lambda batch: tower([text_of[i] for i in batch])


def project_images(
    model, img_cache: ShardedCache, image_ids: list[str], parts: tuple[str, ...], view: str = "clean"
) -> np.ndarray:
    """256-d embeddings of one named view of images through the trained projection."""
    from ..dense.lit_projection import image_feature_matrix

    _, ip = img_cache.read([f"{i}@{view}" for i in image_ids])
    with torch.no_grad():
        return model.image(torch.from_numpy(image_feature_matrix(ip, parts))).numpy()


def train_view_vectors(cfg: Config, views: int, progress: bool = False, include_clean: bool = False) -> np.ndarray:
    """Teacher vectors of the first ``views`` augmented renderings of every training image,
    (views, N_train_images, D) in the train split's image order: more distillation data the teacher
    already provides (the data-scale study, stage 07). Reads stage 01's tower cache and LiT projection.
    ``include_clean``: the clean rendering first (it must equal stage 01's train vectors).
    """
    from ..dense.lit_projection import load_projection

    if cfg.encoder.kind != "lit_towers" or views > cfg.lit.train_views:
        raise ValueError(
            f"augmented views exist for the LiT towers only, at most lit.train_views = {cfg.lit.train_views} per "
            f"image; got encoder {cfg.encoder.kind!r} and {views} views"
        )
    collection = load_collection(cfg)
    img_cache, _ = cache_tower_features(cfg, collection, torch.device("cpu"), progress)
    lit_artifact(cfg).verify()
    model, _ = load_projection(lit_artifact(cfg).root / "projection.safetensors")
    ids = collection.split("train").images["image_id"].tolist()
    names = (["clean"] if include_clean else []) + [f"view{k}" for k in range(views)]
    return (
        np.stack([project_images(model, img_cache, ids, cfg.lit.image_features, v) for v in names])
        if names
        else np.zeros((0, len(ids), cfg.encoder.embed_dim), np.float32)
    )
