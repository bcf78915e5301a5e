"""Stage 01 for the paper path: BLIP / ALBEF feature extraction, or released feature files.

Extraction runs the encoder over every image and caption of the collection in batches (GPU
when present, mixed precision there), through the same resumable :class:`ShardedCache` as the
embedded default. ``feature_files`` instead reads the authors' released ``img_embs.parquet`` /
``text_embs.parquet`` (DESIGN.md section 5) and checks them against the collection's ids.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from ..data.collection import ImageCaptionSet
from ..config.profiles import Config
from .encoder import DenseEncoder
from .ray_extract import extraction_engine
from ..storage.code_fingerprint import code_fingerprint
from ..storage.shard_cache import ShardedCache
from ..storage.feature_files import align, read_embeddings


def make_encoder(cfg: Config) -> DenseEncoder:
    """The configured BLIP (transformers) or LAVIS BLIP / ALBEF encoder."""
    kind, ex = cfg.encoder.kind, cfg.extraction
    if cfg.encoder.checkpoint is None:
        raise ValueError(
            f"encoder.kind {kind!r} needs encoder.checkpoint (e.g. Salesforce/blip-itm-base-coco, or "
            "blip_retrieval:coco for lavis)"
        )
    if kind == "blip_hf":
        from .blip import BlipHFEncoder

        return BlipHFEncoder(
            cfg.encoder.checkpoint, device=ex.device, mixed_precision=ex.mixed_precision, batch_size=ex.image_batch_size
        )
    if kind == "lavis":
        from .lavis import LavisEncoder

        name, _, model_type = cfg.encoder.checkpoint.partition(":")
        return LavisEncoder(
            name,
            model_type or "coco",
            device=ex.device,
            mixed_precision=ex.mixed_precision,
            batch_size=ex.image_batch_size,
        )
    raise ValueError(f"encoder.kind {kind!r} has no extractor; use lit_towers, blip_hf, lavis or feature_files")


def extract_with_encoder(
    cfg: Config, collection: ImageCaptionSet, encoder: DenseEncoder, cache_root: Path, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Embed every image and caption of ``collection`` with ``encoder`` -> (N_img, D), (N_txt, D)."""
    from ..data.emoji import split_checksum
    from ..data.karpathy import load_image

    base = {
        "encoder": encoder.fingerprint(),
        "collection": split_checksum(collection),
        **code_fingerprint(__name__, type(encoder).__module__),
    }
    path_of = dict(zip(collection.images["image_id"], collection.images["path"]))
    text_of = dict(zip(collection.captions["text_id"], collection.captions["text"]))
    engine = extraction_engine(cfg.extraction)  # None: in this process; Ray: each actor loads its own encoder
    img_cache = ShardedCache(cache_root / "images", base, cfg.extraction.shard_size)
    img_cache.fill(
        list(collection.images["image_id"]),
        lambda b: {"emb": encoder.encode_images([load_image(path_of[i]) for i in b]).numpy()},
        cfg.extraction.image_batch_size,
        f"{encoder.name} images",
        progress,
        engine,
        partial(_encoder_compute, cfg, "images", path_of),
    )
    txt_cache = ShardedCache(cache_root / "texts", base, cfg.extraction.shard_size)
    txt_cache.fill(
        list(collection.captions["text_id"]),
        lambda b: {"emb": encoder.encode_texts([text_of[i] for i in b]).numpy()},
        cfg.extraction.text_batch_size,
        f"{encoder.name} captions",
        progress,
        engine,
        partial(_encoder_compute, cfg, "texts", text_of),
    )
    _, img = img_cache.read(list(collection.images["image_id"]))
    _, txt = txt_cache.read(list(collection.captions["text_id"]))
    return img["emb"], txt["emb"]


def _encoder_compute(cfg: Config, side: str, source: dict):
    """In a Ray actor: the profile's encoder (loaded there, on the actor's GPU when it has one) over images or captions
    by id."""
    from ..data.karpathy import load_image

    encoder = make_encoder(cfg)
    if side == "images":
        return lambda b: {"emb": encoder.encode_images([load_image(source[i]) for i in b]).numpy()}
    return lambda b: {"emb": encoder.encode_texts([source[i] for i in b]).numpy()}


def load_released_features(cfg: Config, collection: ImageCaptionSet) -> tuple[np.ndarray, np.ndarray]:
    """The authors' released dense features, aligned to the collection's image and caption ids."""
    if cfg.encoder.features_dir is None:
        raise ValueError(
            "encoder.kind 'feature_files' needs encoder.features_dir (folder with img_embs.parquet and "
            "text_embs.parquet)"
        )
    root = cfg.path(cfg.encoder.features_dir)
    iid, iemb = read_embeddings(root / "img_embs.parquet", normalize_check=True)
    tid, temb = read_embeddings(root / "text_embs.parquet", normalize_check=True)
    img = align(iid, iemb, collection.images["image_id"].tolist(), str(root / "img_embs.parquet"))
    txt = align(tid, temb, collection.captions["text_id"].tolist(), str(root / "text_embs.parquet"))
    return img, txt
