"""Hyperparameters of stage 05, image suggestion with MLP / MLM sparse encoders (DESIGN.md 1B)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from .typed import check, each, items_from, non_negative, one_of, positive, opt_in

CONFIGURATIONS = ("M1", "M2", "M3", "M4")
SOURCES = ("emoji", "atomic")


@dataclass(frozen=True)
class SuggestConfig:
    """One stage-05 run; comments cite the paper (arXiv 2402.07736) or say why a value differs."""

    source: str = "emoji"  # emoji (embedded default: emoji suggestion) | atomic (TREC AToMiC files)
    atomic_texts: Optional[str] = None  # AToMiC-Texts parquet (file or folder of shards)
    atomic_images: Optional[str] = None  # AToMiC-Images parquet (file or folder of shards)
    # folder with <split> qrels (TREC text or parquet), or one file per split pattern
    atomic_qrels: Optional[str] = None
    configurations: tuple[str, ...] = CONFIGURATIONS  # paper: M1-M4
    max_text_tokens: int = 32  # WordPiece tokens per text, [CLS]/[SEP] included
    epochs: int = 5  # paper: 5
    batch_size: int = 64
    lr_encoder: float = 1e-3  # MLP scorers, MLM transforms, image projections
    lr_vocab: float = 5e-5  # MLM vocabulary layers (initialised from the tied word embeddings)
    warmup_fraction: float = 0.1
    reg_weight_query: float = 1e-3  # FLOPs regulariser (SPLADE), warmed up quadratically over the LR warm-up
    reg_weight_doc: float = 1e-3
    # added to the MLM vocabulary bias: about 50-300 active terms per vector at initialisation (0 makes all 30,522 fire:
    # MiniLM's MLM transform is untrained)
    mlm_bias_init: float = -4.0
    # M1's image documents: the tower's 7x7 patch states average-pooled to patch_grid x patch_grid before the MLM head
    # (7: all 49, as extracted); the vocabulary layer's cost grows with the number of patches
    patch_grid: int = opt_in(7)
    cpu_bf16: bool = True  # bf16 autocast for training on CPU; evaluation stays fp32
    # GPU: train MiniLM and EfficientNet-Lite0 too (at lr_vocab), reading live tower inputs instead of cached states
    finetune_towers: bool = False
    seed: int = 0
    data_seed: int = 1
    eval_batch_size: int = 256
    # the engine stage 05 and the AToMiC job (lsr_lib.run.atomic_job) retrieve through: any sparse index kind,
    # e.g. milvus
    index: str = opt_in("numba")
    # milvus only: None = milvus-lite in the cache folder; "http://host:19530" = a Milvus server or cluster
    index_uri: Optional[str] = opt_in(None)

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value."""
        check(
            self,
            [
                one_of(self, "source", SOURCES),
                items_from(self, "configurations", CONFIGURATIONS),
                *each(
                    self,
                    "atomic_texts atomic_images atomic_qrels",
                    lambda v: self.source != "atomic" or bool(v),
                    "the downloaded AToMiC file or folder when source is atomic",
                ),
                (
                    "max_text_tokens",
                    3 <= self.max_text_tokens <= 512,
                    "in [3, 512] (MiniLM positions, [CLS] and [SEP] included)",
                ),
                *positive(self, "epochs batch_size lr_encoder lr_vocab eval_batch_size"),
                *non_negative(self, "reg_weight_query reg_weight_doc seed data_seed"),
                ("warmup_fraction", 0.0 <= self.warmup_fraction < 1.0, "in [0, 1)"),
                ("mlm_bias_init", math.isfinite(self.mlm_bias_init), "a finite number"),
                ("patch_grid", 1 <= self.patch_grid <= 7, "an integer in 1..7 (the tower's feature map is 7x7)"),
            ],
        )
