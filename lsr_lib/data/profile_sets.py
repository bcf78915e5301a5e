"""The data sets a profile names: stage 01's image-caption collection and stage 05's suggestion set.

Both are read by more than one stage (the collection by stages 01, 05 and 07; the suggestion set by
stages 05 and 06), so they are built here from the config alone, below every stage module.
"""

from __future__ import annotations

from ..config.profiles import Config
from ..storage.atomic import atomic_write_text
from .collection import ImageCaptionSet
from .suggest import SuggestionSet, emoji_suggestion_set, load_atomic


def load_collection(cfg: Config, render: bool = True) -> ImageCaptionSet:
    """The profile's collection; for the emoji default also builds the split files and images."""
    from . import karpathy

    if cfg.data.name == "emoji":
        from .emoji import build_emoji_collection, build_openmoji_collection, render_collection, split_checksum

        root = cfg.data_dir / "emoji"
        d = cfg.data
        if d.styles is None:  # the OpenMoji-only collection of the results committed so far
            col = build_openmoji_collection(
                d.split_seed, d.split_fractions, d.max_groups, root / f"images_{d.image_size}"
            )
        else:
            col = build_emoji_collection(
                d.split_seed,
                d.split_fractions,
                d.max_groups,
                root / "styles" / str(d.image_size),
                d.styles,
                d.heldout_style,
            )
        meta = root / f"dataset_meta_{cfg.base_profile}.json"  # one split for every training seed
        karpathy.write_karpathy(col, meta)
        atomic_write_text(root / f"split_{cfg.base_profile}.sha256", split_checksum(col) + "\n")
        if render:
            render_collection(col, cfg.data.image_size)
        return col
    if cfg.data.karpathy_json is None and cfg.encoder.kind == "feature_files" and cfg.encoder.features_dir:
        return karpathy.load_karpathy(cfg.path(cfg.encoder.features_dir) / "dataset_meta.json", name=cfg.data.name)
    if cfg.data.karpathy_json is None:
        raise ValueError(
            f"profile {cfg.profile!r}: data.karpathy_json is not set; point it at dataset_{cfg.data.name}.json "
            "(Karpathy split file)"
        )
    image_root = cfg.path(cfg.data.image_root) if cfg.data.image_root else None
    return karpathy.load_karpathy(cfg.path(cfg.data.karpathy_json), image_root, name=cfg.data.name)


def load_suggestion_set(cfg: Config, collection=None, all_images: bool = False) -> SuggestionSet:
    """The profile's suggestion data: emoji suggestion from stage 01's collection, or AToMiC files
    (``all_images``: also the images no qrels file names, in split ``collection``)."""
    s = cfg.suggest
    if s.source == "atomic":
        qrels = {split: cfg.path(s.atomic_qrels) / f"{split}.qrels" for split in ("train", "validation", "test")}
        qrels = {k: p if p.exists() else p.with_suffix(".parquet") for k, p in qrels.items()}
        data = load_atomic(cfg.path(s.atomic_texts), cfg.path(s.atomic_images), qrels, all_images)
        return SuggestionSet(
            data.name,
            data.queries.replace({"split": {"validation": "val"}}),
            data.docs.replace({"split": {"validation": "val"}}),
            data.qrels,
        )
    if collection is None:
        collection = load_collection(cfg)
    return emoji_suggestion_set(collection)
