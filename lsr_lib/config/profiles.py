"""Typed, frozen run configuration loaded from ``params/<profile>.yaml``.

Every stage reads one :class:`Config`. Unknown keys, wrong types and bad values (each section's
``validate()`` rules) are errors that name the full key and the profile file, raised before any
work starts (HOUSE_STYLE: "unknown keys and wrong types are errors").
Each section is a frozen dataclass; paper hyperparameters carry their source in the YAML.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .d2s import D2SConfig
from .pruning_spec import parse as parse_pruning
from .suggest import SuggestConfig
from .typed import (
    ConfigError,
    build_dataclass,
    check,
    each,
    items_from,
    non_negative,
    one_of,
    opt_in,
    opt_in_section,
    positive,
    to_dict,
)

__all__ = [
    "Config",
    "ConfigError",
    "D2SConfig",
    "SweepSetting",
    "seed_overrides",
    "split_seed_variant",
    "build_dataclass",
    "load_config",
    "notebook_profile",
    "split_profile",
    "to_dict",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILES = ("smoke", "default", "paper", "rehearsal", "atomic_fixture")
MAIN_PROFILE = "default"  # the profile `make main` runs
# The profile a notebook whose parameter is None runs: `make lab PROFILE=smoke` and `make test` set it.
PROFILE_ENV = "LSR_PROFILE"
# Names the stages know, so a typo fails at load time, not after hours of extraction; where a
# registry in a layer above holds them (config cannot import it), tests/test_config.py keeps them equal.
# lsr_lib.dense.extract, stages.cache_dense_features
ENCODER_KINDS = ("lit_towers", "blip_hf", "lavis", "feature_files")
IMAGE_PARTS = ("avg", "max", "logits")  # lsr_lib.dense.towers.IMAGE_PARTS
# data.image_augment, "clean" always runs
EVAL_TRANSFORMS = ("grayscale", "small_offset", "thick_stroke", "hue_shift", "tinted_background")
# lsr_lib.index.sparse.INDEX_KINDS
BMP_REORDERINGS = ("none", "cluster")  # lsr_lib.index.reorder.REORDERINGS (tested equal)
SPARSE_INDEX_KINDS = ("scipy", "numba", "numba_blocked", "seismic", "qdrant_edge", "pisa", "bmp", "kannolo", "milvus")
DENSE_INDEX_KINDS = ("faiss_flat", "faiss_hnsw")  # ditto
SCALE_COLLECTIONS = ("model_encoded", "independent_terms")  # stage 04's scale benchmark (IndexConfig.scale_collections)
EXTRACTION_ENGINES = ("local", "ray")  # stage 01: in-process, or Ray Data (lsr_lib.dense.ray_extract)
D2S_CONDITIONS = ("with_control", "without_control")  # lsr_lib.stages.train_sparse_heads.CONDITIONS
SPLITS = ("train", "val", "test")
# lsr_lib.data.emoji_styles.STYLES and RESERVED: the installed emoji art sets, and the art never to be used
EMOJI_STYLES = (
    "openmoji",
    "twemoji",
    "fluent-emoji-flat",
    "fluent-emoji",
    "fluent-emoji-high-contrast",
    "emojione",
    "emojione-v1",
    "streamline-emojis",
    "fxemoji",
)
RESERVED_STYLES = ("noto",)


@dataclass(frozen=True)
class DataConfig:
    """Which image-caption collection to use and how to split it."""

    name: str = "emoji"  # emoji (embedded default) | mscoco | flickr30k
    root: str = "data"  # relative to the repository root unless absolute
    max_groups: Optional[int] = None  # smoke: keep only this many variant groups
    split_seed: int = 13
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)  # train, val, test
    image_size: int = 224
    karpathy_json: Optional[str] = None  # paper profile: dataset_{coco,flickr30k}.json
    image_root: Optional[str] = None  # paper profile: folder the Karpathy file paths are under
    train_splits: tuple[str, ...] = ("train",)  # reference code: train only, restval excluded
    # emoji: art styles (lsr_lib.data.emoji_styles.STYLES). Unset: the OpenMoji-only collection of the results
    # committed so far (lsr_lib.data.emoji.build_openmoji_collection).
    styles: Optional[tuple[str, ...]] = None
    heldout_style: Optional[str] = None  # emoji: a style drawn for the test groups only, in split "heldout"

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value."""
        reserved = lambda name: any(r in name.lower() for r in RESERVED_STYLES)  # noqa: E731
        check(
            self,
            [
                (
                    "styles",
                    not any(map(reserved, self.styles or ())),
                    "free of Google's Noto art (reserved for an outside check: never used)",
                ),
                (
                    "heldout_style",
                    not reserved(self.heldout_style or ""),
                    "free of Google's Noto art (reserved for an outside check: never used)",
                ),
                ("styles", all(n in EMOJI_STYLES for n in self.styles or ()), f"styles from {EMOJI_STYLES}"),
                ("heldout_style", self.heldout_style in (None,) + EMOJI_STYLES, f"null or one of {EMOJI_STYLES}"),
                ("styles", self.heldout_style is None or bool(self.styles), "set when heldout_style is set"),
                ("heldout_style", self.heldout_style not in (self.styles or ()), "a style not in data.styles"),
            ],
        )
        f = self.split_fractions
        check(
            self,
            [
                ("root", bool(self.root), "a folder"),
                *non_negative(self, "split_seed"),
                ("max_groups", self.max_groups is None or self.max_groups > 0, "> 0 or null"),
                (
                    "split_fractions",
                    min(f) >= 0 and f[0] > 0 and abs(sum(f) - 1) < 1e-6,
                    "[train, val, test] fractions >= 0 (train > 0) summing to 1",
                ),
                ("image_size", self.image_size >= 32, ">= 32 (the image towers downsample by 32)"),
                items_from(self, "train_splits", ("train", "restval")),
            ],
        )


@dataclass(frozen=True)
class EncoderConfig:
    """The frozen dense dual encoder (DESIGN.md section 4/5)."""

    kind: str = "lit_towers"  # lit_towers | blip_hf | lavis | feature_files
    checkpoint: Optional[str] = None  # blip_hf / lavis model name or path
    features_dir: Optional[str] = None  # feature_files: folder with img_embs.parquet, text_embs.parquet
    embed_dim: int = 256

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value."""
        check(
            self,
            [
                one_of(self, "kind", ENCODER_KINDS),
                *positive(self, "embed_dim"),
                (
                    "checkpoint",
                    self.kind not in ("blip_hf", "lavis") or bool(self.checkpoint),
                    f"a model name or folder for kind {self.kind}",
                ),
                (
                    "features_dir",
                    self.kind != "feature_files" or bool(self.features_dir),
                    "a folder with img_embs.parquet and text_embs.parquet for kind feature_files",
                ),
            ],
        )


@dataclass(frozen=True)
class LitConfig:
    """LiT-style projections trained on top of the two locked towers (embedded default)."""

    image_features: tuple[str, ...] = ("avg", "max", "logits")  # parts of the tower output used
    train_views: int = 4  # augmented renderings per training image (0 = clean only)
    eval_transforms: tuple[str, ...] = ("grayscale", "small_offset", "thick_stroke", "hue_shift", "tinted_background")
    hidden_dim: int = 1024
    epochs: int = 60
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-2
    dropout: float = 0.1
    init_temperature: float = 0.07
    seed: int = 0  # projection initialisation, batch order and dropout (varied by the profile's `seeds`)
    view_seed: int = 0  # the augmented training renderings: data, the same for every training seed

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value."""
        check(
            self,
            [
                items_from(self, "image_features", IMAGE_PARTS),
                items_from(self, "eval_transforms", EVAL_TRANSFORMS, empty=True),
                *positive(self, "hidden_dim epochs batch_size lr init_temperature"),
                *non_negative(self, "train_views weight_decay seed view_seed"),
                ("dropout", 0.0 <= self.dropout < 1.0, "in [0, 1)"),
            ],
        )


@dataclass(frozen=True)
class ExtractionConfig:
    """Batched tower / encoder forward passes and the on-disk feature cache."""

    device: str = "auto"  # auto | cpu | cuda
    image_batch_size: int = 64
    text_batch_size: int = 256
    shard_size: int = 1024  # rows per cache shard: an interrupted run resumes at shard granularity
    mixed_precision: bool = True  # only used on CUDA
    # the image tower's trunk on CPU: torch (eager) or onnxruntime (about 4x faster on 2 cores,
    # results/benchmarks/01_image_tower_backends_cpu.json; features equal to about 2e-5)
    image_backend: str = "torch"
    # "local": in this process; "ray": Ray Data actors (lsr_lib/dense/ray_extract.py), same cache
    engine: str = opt_in("local")
    # None: a Ray runtime on this machine; "ray://host:10001" or "auto": a cluster (the only change)
    ray_address: Optional[str] = opt_in(None)
    ray_actors: int = opt_in(0)  # 0: one per GPU, else one per ray_threads CPUs
    ray_threads: int = opt_in(1)  # torch threads (and Ray CPUs) per actor

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value."""
        check(
            self,
            [
                (
                    "device",
                    re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
                    "auto, cpu, cuda or cuda:<n>",
                ),
                *positive(self, "image_batch_size text_batch_size shard_size ray_threads"),
                *non_negative(self, "ray_actors"),
                one_of(self, "engine", EXTRACTION_ENGINES),
                one_of(self, "image_backend", ("torch", "onnxruntime")),
            ],
        )


@dataclass(frozen=True)
class EvalConfig:
    """Retrieval evaluation, and stage 03's analyses of the vectors (DESIGN.md section 3)."""

    ks: tuple[int, ...] = (1, 5, 10)
    mrr_depth: int = 10
    splits: tuple[str, ...] = ("val", "test")
    # stage 03 (these were the notebook's own parameters; opt-in, so the hashes made before them stay valid)
    deviation_top_k: int = opt_in(10)  # top-k terms of a vector the semantic deviation reads (DESIGN.md section 3)
    # MiniLM cosine below which an expansion term is unrelated to its caption (DESIGN.md section 3)
    unrelated_threshold: float = opt_in(0.2)
    # how much the unrelated share depends on the threshold
    unrelated_threshold_sweep: tuple[float, ...] = opt_in((0.1, 0.15, 0.2, 0.25, 0.3))
    faithfulness_top_k: int = opt_in(10)  # Kendall's tau on each query's dense top-k (DESIGN.md section 3)
    # stage 06 (the explorer's static views; also the notebook's own parameters before)
    explorer_top_k: int = opt_in(8)  # terms and images each explorer view shows
    explorer_split: str = opt_in("test")  # the split the explorer loads

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value."""
        check(
            self,
            [
                ("ks", len(self.ks) > 0 and min(self.ks) > 0, "a list of cutoffs > 0 (at least one)"),
                *positive(self, "mrr_depth deviation_top_k faithfulness_top_k explorer_top_k"),
                items_from(self, "splits", SPLITS + ("heldout",)),
                ("explorer_split", self.explorer_split in SPLITS, f"one of {', '.join(SPLITS)}"),
                ("unrelated_threshold", -1 < self.unrelated_threshold < 1, "a cosine between -1 and 1"),
                (
                    "unrelated_threshold_sweep",
                    len(self.unrelated_threshold_sweep) > 0 and all(-1 < t < 1 for t in self.unrelated_threshold_sweep),
                    "a list of cosines between -1 and 1 (at least one)",
                ),
            ],
        )


def pruning_specs(obj: Any, key: str) -> tuple[str, bool, str]:
    """Rule: every entry of ``obj.key`` parses as a pruning spec (the parser's message names the bad part)."""
    for spec in getattr(obj, key):
        try:
            parse_pruning(spec)
        except ValueError as e:
            return key, False, f"a list of pruning specs ({e})"
    return key, len(set(getattr(obj, key))) == len(getattr(obj, key)), "a list of distinct pruning specs"


@dataclass(frozen=True)
class IndexConfig:
    """Stage 04: inverted-index retrieval and efficiency (DESIGN.md section 6)."""

    exact_backends: tuple[str, ...] = ("numba", "qdrant_edge")  # checked against brute force
    approx_backends: tuple[str, ...] = ("seismic", "pisa")  # recall@10 against exact (PISA: integer-quantised weights)
    dense_backends: tuple[str, ...] = ("faiss_flat", "faiss_hnsw")  # the dense teacher, exact and HNSW (M=32, ef=64)
    topk: int = 100
    # index-side measures on the test split (lsr_lib.index.pruning specs: d<k> q<k> df<share> u<bits>)
    pruning: tuple[str, ...] = ("none", "d64+q32", "d32+q16")
    # the same measures in the scale benchmark, through the exact numba engine
    scale_pruning: tuple[str, ...] = opt_in(())
    latency_queries: int = 200  # single-query calls timed per engine
    qps_queries: int = 400  # queries in one batched call for QPS
    # collections of each size in the scale benchmark: dense documents drawn from a Gaussian fitted to the teacher's
    # image vectors; "model_encoded": the same documents encoded by each D2S model's image side; "independent_terms":
    # sparse documents drawn term by term from each model's test vectors (lsr_lib.index.latency.synthetic_collection)
    scale_collections: tuple[str, ...] = ("model_encoded",)
    # the independent-term collection only up to this size (0: every size); it shows the collection's effect at 100k
    # without doubling the 1M benchmark
    independent_terms_max_docs: int = opt_in(0)
    scale_sizes: tuple[int, ...] = (100_000, 1_000_000)
    scale_backends: tuple[str, ...] = ("numba", "seismic", "faiss_flat", "faiss_hnsw")
    hnsw_max_docs: int = 200_000  # HNSW build cost on 2 cores: skipped above this size
    # (query_cut, heap_factor): recall / latency sweep, no rebuild
    seismic_search: tuple[tuple[int, float], ...] = ((20, 0.7), (40, 0.9), (60, 1.0))
    # HNSW efSearch sweep (one build): recall / latency, for recall-matched comparisons
    hnsw_ef_search: tuple[int, ...] = (64,)
    # HNSW efConstruction, one build each (faiss' default 40; kANNolo builds with 200): the graph's quality against its
    # build time, so that HNSW is not compared with a better-built sparse graph
    hnsw_ef_construction: tuple[int, ...] = opt_in((40,))
    # n_postings = fraction x documents, one build each (DESIGN.md section 6: 0.0005-0.0015)
    seismic_postings_per_doc: tuple[float, ...] = (0.001,)
    bmp_bsize: tuple[int, ...] = opt_in((32,))  # BMP documents per block, one build each
    # BMP document order, one build each (lsr_lib.index.reorder): "none" as given, "cluster" similar documents in
    # the same blocks, so that block-max bounds are tight
    bmp_reorder: tuple[str, ...] = opt_in(("none",))
    # BMP (alpha, beta): (1, 1) is safe (exact on its quantised weights)
    bmp_search: tuple[tuple[float, float], ...] = opt_in(((1.0, 1.0),))
    kannolo_m: int = opt_in(32)  # kANNolo graph: neighbours per node
    # kANNolo graph: candidate list while building (kANNolo's default 200); the build time is about proportional to it
    kannolo_ef_construction: int = opt_in(200)
    kannolo_ef_search: tuple[int, ...] = opt_in((100,))  # kANNolo efSearch sweep (one build)
    # kANNolo graph build on 2 cores (about 65 s at 100k documents): skipped above this size
    kannolo_max_docs: int = opt_in(200_000)
    milvus_max_docs: int = opt_in(200_000)  # Milvus (milvus-lite) in the scale benchmark: skipped above this size
    # Milvus in the scale benchmark: at most this many queries for latency and for QPS (0: as the other engines); its
    # exact search is slow on co-activated vectors
    milvus_queries: int = opt_in(0)

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value."""
        check(
            self,
            [
                *(items_from(self, k, SPARSE_INDEX_KINDS, empty=True) for k in ("exact_backends", "approx_backends")),
                items_from(self, "dense_backends", DENSE_INDEX_KINDS, empty=True),
                items_from(self, "scale_backends", SPARSE_INDEX_KINDS + DENSE_INDEX_KINDS, empty=True),
                items_from(self, "scale_collections", SCALE_COLLECTIONS),
                *positive(self, "topk latency_queries qps_queries"),
                *non_negative(self, "hnsw_max_docs"),
                *(pruning_specs(self, k) for k in ("pruning", "scale_pruning")),
                *each(
                    self,
                    "scale_sizes hnsw_ef_search hnsw_ef_construction",
                    lambda v: all(n > 0 for n in v),
                    "a list of integers > 0",
                ),
                (
                    "seismic_search",
                    all(c > 0 and 0 < h <= 1 for c, h in self.seismic_search),
                    "[query_cut > 0, heap_factor in (0, 1]] pairs",
                ),
                (
                    "seismic_postings_per_doc",
                    all(0 < f <= 1 for f in self.seismic_postings_per_doc),
                    "a list of fractions in (0, 1]",
                ),
                ("bmp_bsize", all(1 <= b <= 256 for b in self.bmp_bsize), "a list of block sizes in 1..256"),
                items_from(self, "bmp_reorder", BMP_REORDERINGS),
                (
                    "bmp_search",
                    all(0 < a <= 1 and 0 < b <= 1 for a, b in self.bmp_search),
                    "[alpha in (0, 1], beta in (0, 1]] pairs",
                ),
                *positive(self, "kannolo_m kannolo_ef_construction"),
                *non_negative(self, "kannolo_max_docs milvus_max_docs milvus_queries independent_terms_max_docs"),
                *each(self, "kannolo_ef_search", lambda v: all(n > 0 for n in v), "a list of integers > 0"),
            ],
        )


@dataclass(frozen=True)
class SweepSetting:
    """One (dataset, backbone) point of a profile's sweep: config overrides merged over the profile.

    Loaded as profile ``<profile>/<dataset>_<backbone>`` (e.g. ``paper/mscoco_albef``), whose
    results go to ``results/<profile>/<dataset>_<backbone>/`` and caches to
    ``data/cache/<profile>/<dataset>_<backbone>/``; ``python -m lsr_lib.run.sweep`` runs them all.
    """

    dataset: str  # mscoco | flickr30k
    backbone: str  # blip | albef
    overrides: Any = None  # nested mapping like the profile file; checked key by key when the setting is loaded
    # Jupyter kernel for stage 01 (lsr-lavis for encoder.kind lavis, environment-lavis.yml)
    extract_kernel: str = "python3"

    @property
    def name(self) -> str:
        return f"{self.dataset}_{self.backbone}"

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value."""
        keys = set(self.overrides) if isinstance(self.overrides, dict) else set()
        check(
            self,
            [
                *each(
                    self,
                    "dataset backbone",
                    lambda v: re.fullmatch(r"[a-z0-9]+", v),
                    "lower-case letters and digits (it names a results folder)",
                ),
                (
                    "overrides",
                    self.overrides is None or isinstance(self.overrides, dict),
                    "a mapping of settings like the profile file",
                ),
                (
                    "overrides",
                    not keys & {"profile", "sweep"},
                    "free of profile and sweep (the profile cannot be overridden by a sweep setting, nor its sweep)",
                ),
                ("extract_kernel", bool(self.extract_kernel), "a Jupyter kernel name"),
            ],
        )


SCALE_BENCHMARK_RUNS = ("stage", "bench")


@dataclass(frozen=True)
class DataScaleConfig:
    """Stage 07: both D2S conditions trained on nested fractions of the training pairs and, beyond
    100%, with augmented views of every training image as extra distillation data (issue 18)."""

    # nested subsets of the training images (all captions of each), in (0, 1]
    fractions: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0)
    # beyond 100% (LiT towers only: stage 01 renders the views): all pairs plus k augmented renderings of every training
    # image (stage 01's teacher vectors), each paired with the image's captions
    extra_views: tuple[int, ...] = ()
    # training seeds (empty: the profile's seeds); seed k > seeds[0] reads the seed variant's stage 01 and 02 (`make
    # seeds`)
    seeds: tuple[int, ...] = ()
    # the seeds of the extra_views points (empty: every seed); they cost (1 + views) x a full run each
    extra_view_seeds: tuple[int, ...] = opt_in(())
    subset_seed: int = 0  # the one permutation the nested subsets are cut from
    # "stage": stage 07 trains what is missing; "bench": only `make data-scale` does, stage 07 reads its result file
    run: str = "stage"
    paper_pairs: int = 414_113  # the reference point drawn on the figure: MSCOCO Karpathy train + restval captions
    # paper A, BLIP, MSCOCO 5k test: D2S with control T->I R@1 / the dense teacher's
    paper_retention: float = 55.9 / 57.0

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value."""
        check(
            self,
            [
                (
                    "fractions",
                    bool(self.fractions)
                    and all(0 < f <= 1 for f in self.fractions)
                    and list(self.fractions) == sorted(set(self.fractions)),
                    "increasing fractions in (0, 1]",
                ),
                (
                    "extra_views",
                    all(v > 0 for v in self.extra_views) and list(self.extra_views) == sorted(set(self.extra_views)),
                    "increasing view counts > 0",
                ),
                (
                    "extra_views",
                    not self.extra_views or 1.0 in self.fractions,
                    "used with fraction 1.0 (views are added to all the pairs)",
                ),
                *non_negative(self, "subset_seed"),
                one_of(self, "run", SCALE_BENCHMARK_RUNS),
            ],
        )


# the d2s settings a knob trial may change
KNOB_FIELDS = ("epochs", "batch_size", "regularizer", "reg_weight", "teacher_tau", "lr_vocab", "lr_projection")


@dataclass(frozen=True)
class KnobTrial:
    """One setting of the method's knobs (stage 07, part 2): the profile's ``d2s`` recipe with these
    values replaced (None keeps the recipe's), trained with expansion control on ``views`` augmented
    renderings per training image beyond the pairs (as ``data_scale.extra_views``)."""

    name: str
    # extra distillation data: 0 = stage 02's pairs; k = those plus k augmented renderings of every image
    views: int = 0
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    # "l1" (paper) | "flops" (a co-activation penalty: squared mean activation per term)
    regularizer: Optional[str] = None
    reg_weight: Optional[float] = None  # both sides (reg_weight_image and reg_weight_text)
    teacher_tau: Optional[float] = None
    lr_vocab: Optional[float] = None
    lr_projection: Optional[float] = None

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value (the d2s values are checked again once applied)."""
        check(
            self,
            [
                (
                    "name",
                    bool(re.fullmatch(r"[A-Za-z0-9_.+-]+", self.name)),
                    "a short name of letters, digits and _ . + - (a cache folder)",
                ),
                *non_negative(self, "views"),
            ],
        )

    @property
    def is_recipe(self) -> bool:
        """True when nothing is changed: the trial is stage 02's own run."""
        return self.views == 0 and all(getattr(self, f) is None for f in KNOB_FIELDS)


@dataclass(frozen=True)
class KnobSearchConfig:
    """Stage 07, part 2 (issue 18): can the method's own knobs close the gap to the teacher on the
    embedded default? Every trial trains with expansion control on seed ``seed``; the best validation
    text->image R@1 among those within the FLOPs budget is chosen, then trained on every seed and
    reported on the test split beside stage 02's recipe. Its seeds are the data-scale study's."""

    trials: tuple[KnobTrial, ...] = ()  # in the order they run; one named "recipe" with no changes is stage 02's run
    # a trial qualifies when its val FLOPs are at most this share of the recipe's uncontrolled model's (issue 18's goal:
    # half)
    flops_budget: float = 0.5
    # > 0: every trial's seed-0 model on the effectiveness-latency frontier (issue 16): test R@10 against exact-engine
    # latency on this many synthetic documents drawn from its image vectors
    frontier_docs: int = 0
    frontier_engine: str = opt_in("numba")  # the exact engine timed on the frontier
    # "stage": stage 07 trains what is missing; "bench": only `make data-scale` does, stage 07 reads its result file
    run: str = "stage"

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value."""
        names = [t.name for t in self.trials]
        check(
            self,
            [
                ("trials", len(set(names)) == len(names), "trials with distinct names"),
                ("flops_budget", 0 < self.flops_budget <= 1, "in (0, 1]"),
                *non_negative(self, "frontier_docs"),
                one_of(self, "run", SCALE_BENCHMARK_RUNS),
                (
                    "frontier_engine",
                    self.frontier_engine in ("numba", "numba_blocked", "scipy"),
                    "an exact sparse engine: numba, numba_blocked or scipy",
                ),
            ],
        )


@dataclass(frozen=True)
class Config:
    """One profile: every setting a stage needs."""

    profile: str
    seed: int = 0
    # torch CPU threads in every stage, 0 = torch's default; fixed where numbers must reproduce (D2S's LayerNorm
    # backward sums in thread order: results/benchmarks/determinism.json)
    threads: int = 0
    # training seeds for error bars: the first is `seed` (the main job), the rest run as <profile>/seed<k>
    # (lsr_lib.run.seeds)
    seeds: tuple[int, ...] = ()
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    lit: LitConfig = field(default_factory=LitConfig)
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    d2s: D2SConfig = field(default_factory=D2SConfig)
    d2s_conditions: tuple[str, ...] = ("with_control", "without_control")  # stage 02 runs
    index: IndexConfig = field(default_factory=IndexConfig)
    suggest: SuggestConfig = field(default_factory=SuggestConfig)  # stage 05: image suggestion, M1-M4
    sweep: tuple[SweepSetting, ...] = ()  # paper profile: the (dataset, backbone) settings lsr_lib.run.sweep runs
    data_scale: DataScaleConfig = opt_in_section(DataScaleConfig)  # stage 07: the data-scale study
    # stage 07, part 2: the method's knobs chosen on validation
    knob_search: KnobSearchConfig = opt_in_section(KnobSearchConfig)
    # stage 04's synthetic-collection benchmark (index.scale_sizes): "stage" runs it in stage 04, "bench" only in `make
    # bench` (stage 04 then reads its result file)
    scale_benchmark: str = "stage"

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value; each section has checked its own already."""
        names = [s.name for s in self.sweep]
        check(
            self,
            [
                *non_negative(self, "seed threads"),
                items_from(self, "d2s_conditions", D2S_CONDITIONS),
                (
                    "seeds",
                    not self.seeds or (len(set(self.seeds)) == len(self.seeds) and min(self.seeds) == self.seeds[0]),
                    "empty, or distinct seeds whose first (the main job's) is the smallest",
                ),
                (
                    "seed",
                    not self.seeds
                    or self.seed
                    == (
                        self.seeds[0]
                        if split_seed_variant(self.profile)[1] is None
                        else split_seed_variant(self.profile)[1]
                    ),
                    f"the first of seeds ({self.seeds[0] if self.seeds else ''}): the main job runs it, "
                    "lsr_lib.run.seeds the others",
                ),
                (
                    "index.topk",
                    self.index.topk >= max(*self.evaluation.ks, self.evaluation.mrr_depth),
                    "at least the largest evaluation cutoff (ks, mrr_depth)",
                ),
                ("sweep", len(set(names)) == len(names), "settings with distinct <dataset>_<backbone> names"),
                (
                    "scale_benchmark",
                    self.scale_benchmark in SCALE_BENCHMARK_RUNS,
                    f"one of {', '.join(SCALE_BENCHMARK_RUNS)}",
                ),
                ("suggest.index", self.suggest.index in SPARSE_INDEX_KINDS, f"one of {', '.join(SPARSE_INDEX_KINDS)}"),
                (
                    "data_scale.extra_view_seeds",
                    set(self.data_scale.extra_view_seeds) <= set(self.data_scale_seeds),
                    f"a subset of the study's seeds {list(self.data_scale_seeds)}",
                ),
            ],
        )

    def path(self, p: str | Path) -> Path:
        """Resolve a configured path against the repository root."""
        p = Path(p)
        return p if p.is_absolute() else REPO_ROOT / p

    @property
    def data_scale_seeds(self) -> tuple[int, ...]:
        """The data-scale study's seeds (stage 07): ``data_scale.seeds``, else the profile's ``seeds``, else
        ``seed``."""
        return tuple(self.data_scale.seeds or self.seeds or (self.seed,))

    def seed_variant(self, k: int) -> "Config":
        """This profile for training seed ``k``: itself for its first seed, else ``<profile>/seed<k>``
        (:func:`seed_overrides`)."""
        return self if k == (self.seeds or (self.seed,))[0] else load_config(f"{self.profile}/seed{k}")

    @property
    def data_dir(self) -> Path:
        return self.path(self.data.root)

    @property
    def cache_dir(self) -> Path:
        """Per-profile cache of features and checkpoints (gitignored)."""
        return self.data_dir / "cache" / self.profile

    @property
    def base_profile(self) -> str:
        """The profile (and sweep setting) without a ``/seed<k>`` suffix: ``default/seed1`` -> ``default``."""
        return split_seed_variant(self.profile)[0]

    @property
    def shared_cache_dir(self) -> Path:
        """Caches every training seed shares (the towers' features): the base profile's cache folder."""
        return self.data_dir / "cache" / self.base_profile

    @property
    def results_dir(self) -> Path:
        """``results/<profile>`` (``results/<profile>/<setting>`` for a sweep setting)."""
        return REPO_ROOT / "results" / self.profile

    def setting(self, name: str) -> SweepSetting:
        """The sweep setting called ``name`` (``mscoco_blip`` or ``mscoco/blip``)."""
        name = name.replace("/", "_")
        for s in self.sweep:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.sweep) or "none (the profile has no sweep section)"
        raise ConfigError(f"profile {self.profile!r} has no sweep setting {name!r}; known: {known}")

    def section_hash(self, *names: str) -> str:
        """Short stable hash of the named sections, for cache manifests."""
        blob = json.dumps({n: to_dict(getattr(self, n)) for n in names}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def split_profile(profile: str) -> tuple[str, Optional[str]]:
    """``"paper/mscoco_blip"`` -> ``("paper", "mscoco_blip")``; ``"default"`` -> ``("default", None)``."""
    base, _, setting = profile.partition("/")
    return base, (setting or None)


SEED_OFFSET = 1000  # seed k shifts every training seed by SEED_OFFSET * (k - seeds[0])
# what a training seed varies
SEEDED = {"lit": ("seed",), "d2s": ("seed", "data_seed", "gate_seed"), "suggest": ("seed", "data_seed")}


def split_seed_variant(profile: str) -> tuple[str, Optional[int]]:
    """``"default/seed1"`` -> ``("default", 1)``; ``"paper/mscoco_blip"`` -> ``("paper/mscoco_blip", None)``."""
    m = re.fullmatch(r"(.+)/seed(\d+)", profile)
    return (m.group(1), int(m.group(2))) if m else (profile, None)


def seed_overrides(raw: dict, k: int) -> dict:
    """The overrides that turn a profile into its training-seed variant ``k`` (one of its ``seeds``).

    Every seed of a trained part (``SEEDED``: LiT projection, D2S heads, stage 05 encoders) moves by
    ``SEED_OFFSET * (k - seeds[0])``, so the streams of two variants never coincide; the data (split,
    rendered training views, ``lit.view_seed``) stays the same, so the spread is the training's.
    """
    seeds = list(raw.get("seeds") or [])
    if k not in seeds[1:]:
        raise ConfigError(
            f"seed variant seed{k}: {k} is not one of the profile's extra seeds {seeds[1:]} (the first seed, "
            f"{seeds[0] if seeds else 0}, is the profile itself)"
        )
    shift = SEED_OFFSET * (k - seeds[0])
    out: dict = {"seed": k}
    for section, keys in SEEDED.items():
        given = raw.get(section) or {}
        defaults = {"lit": LitConfig, "d2s": D2SConfig, "suggest": SuggestConfig}[section]()
        out[section] = {key: int(given.get(key, getattr(defaults, key))) + shift for key in keys}
    return out


def notebook_profile(profile: Optional[str]) -> str:
    """``profile``, or for None (a notebook's ``profile`` parameter, unless papermill sets it): ``$LSR_PROFILE``,
    else ``default``, the profile `make main` runs."""
    return profile or os.environ.get(PROFILE_ENV) or MAIN_PROFILE


def load_config(profile: Optional[str], overrides: Optional[dict] = None, params_dir: Optional[Path] = None) -> Config:
    """Load ``params/<profile>.yaml`` (plus optional nested overrides) into a :class:`Config`.

    ``profile`` None: :func:`notebook_profile` (a notebook opened in JupyterLab runs the Lab's profile).

    ``profile`` may name a sweep setting, ``<profile>/<dataset>_<backbone>``: the setting's
    overrides from the profile's ``sweep`` section are merged first, then ``overrides``. A
    ``/seed<k>`` suffix (``default/seed1``, ``paper/mscoco_blip/seed2``) names the training-seed
    variant ``k`` of the profile's ``seeds`` (:func:`seed_overrides`). Every
    section's ``validate()`` runs on the merged values (then :meth:`Config.validate`), so a bad value
    fails here, before any stage works.
    """
    params_dir = params_dir or REPO_ROOT / "params"
    profile, seed_k = split_seed_variant(notebook_profile(profile))
    base, setting = split_profile(profile)
    path = Path(params_dir) / f"{base}.yaml"
    if not path.exists():
        raise ConfigError(
            f"no profile file {path}; available: {', '.join(p.stem for p in sorted(Path(params_dir).glob('*.yaml')))}"
        )
    raw = _read_profile_file(path, Path(params_dir))
    raw.setdefault("profile", base)
    if setting is not None:
        try:
            chosen = build_dataclass(Config, raw).setting(setting)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        raw = _merge(raw, chosen.overrides or {})
        # results/<profile>/<setting>/, data/cache/<profile>/<setting>/
        raw["profile"] = f"{raw['profile']}/{chosen.name}"
    if seed_k is not None:
        try:
            raw = _merge(raw, seed_overrides(raw, seed_k))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        raw["profile"] = f"{raw['profile']}/seed{seed_k}"  # results/<profile>/seed<k>/, data/cache/<profile>/seed<k>/
    raw = _merge(raw, overrides or {})
    try:
        return build_dataclass(Config, raw)
    except ConfigError as e:
        where = f" (sweep setting {setting!r})" if setting else ""
        raise ConfigError(f"{path}{where}: {e}") from None


def yaml_problem(path: Path, error: yaml.YAMLError) -> str:
    """``<path>, line L, column C: not valid YAML (<problem>)``; YAML's own message names ``"<unicode string>"``."""
    mark = getattr(error, "problem_mark", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{path}{where}: not valid YAML ({getattr(error, 'problem', None) or error})"


def _read_profile_file(path: Path, params_dir: Path, chain: tuple[str, ...] = ()) -> dict:
    """A profile file's mapping; ``extends: <profile>`` merges it over that profile's file (without its sweep)."""
    if path.stem in chain:
        raise ConfigError(f"{path}: 'extends' loops through {' -> '.join((*chain, path.stem))}")
    if not path.exists():
        raise ConfigError(f"{chain[-1]}.yaml extends {path.stem!r}, but there is no profile file {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{yaml_problem(path, e)}; fix that line of the profile") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    base = _read_profile_file(params_dir / f"{parent}.yaml", params_dir, (*chain, path.stem))
    base.pop("sweep", None)
    base.pop("profile", None)
    return _merge(base, raw)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
