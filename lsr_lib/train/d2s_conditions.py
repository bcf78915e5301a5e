"""The D2S conditions and the data and evaluation around a D2S run (DESIGN.md sections 2-3).

Shared by stage 02 (which trains and evaluates every condition) and stage 07 (which trains the
same conditions on other data and evaluates them the same way). ``with_control`` is the profile's
``d2s`` section (the paper's linear schedule by default); ``without_control`` is the same with
``p = 0`` throughout. Both use the same seeds, so they see the same batches in the same order.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..config.profiles import Config, D2SConfig
from ..data.collection import ImageCaptionSet
from ..metrics.retrieval import evaluate_scores
from ..metrics.sparse_product import score_matrix
from ..metrics.sparse_stats import sparse_summary
from ..sparse.expansion_control import bert_uncased_tokenizer, caption_token_masks

CONDITIONS = {
    "with_control": lambda c: c,
    "without_control": lambda c: dataclasses.replace(c, expansion_schedule="constant", expansion_p0=0.0),
}


def condition_config(base: D2SConfig, name: str) -> D2SConfig:
    """The D2S config of a named condition."""
    if name not in CONDITIONS:
        raise ValueError(
            f"unknown D2S condition {name!r}; known: {', '.join(CONDITIONS)} (set d2s_conditions in the profile)"
        )
    return CONDITIONS[name](base)


def training_pairs(col: ImageCaptionSet, img: np.ndarray, txt: np.ndarray, tokenizer) -> dict:
    """One row per (caption, image) pair of ``col``: dense vectors and caption token ids."""
    row_of = {i: k for k, i in enumerate(col.images["image_id"])}
    rows = np.array([row_of[i] for i in col.captions["image_id"]])
    return {
        "img_emb": torch.from_numpy(img[rows]),  # (N_pairs, d)
        "txt_emb": torch.from_numpy(txt),  # (N_pairs, d)
        "txt_mask_ids": caption_token_masks(col.captions["text"].tolist(), tokenizer),  # (N_pairs, L)
    }


def eval_data(col: ImageCaptionSet, img: np.ndarray, txt: np.ndarray) -> dict:
    """The dict ``train_d2s`` validates on."""
    return {
        "img_emb": torch.from_numpy(img),
        "txt_emb": torch.from_numpy(txt),
        "image_ids": col.images["image_id"].to_numpy(),
        "text_image_ids": col.captions["image_id"].to_numpy(),
        "image_gallery": col.image_gallery,
    }


def evaluate_sparse(cfg: Config, col: ImageCaptionSet, img_csr, txt_csr, return_ranks: bool = False) -> dict:
    """Both-direction metrics from the exact sparse product, plus FLOPs and vector lengths (and per-query ranks)."""
    scores = torch.from_numpy(score_matrix(txt_csr, img_csr))  # (N_txt, N_img); dense product for dense-ish vectors
    out = evaluate_scores(
        scores,
        col.captions["image_id"].to_numpy(),
        col.images["image_id"].to_numpy(),
        cfg.evaluation.ks,
        cfg.evaluation.mrr_depth,
        return_ranks,
        image_gallery=col.image_gallery,
    )
    # text->image: queries are captions, documents images; FLOPs as in DESIGN.md section 3
    out["sparsity_text_to_image"] = sparse_summary(txt_csr, img_csr)
    return out


def tokenizer_for(cfg: Config):
    """The BERT-uncased WordPiece tokenizer (30,522 terms), installed offline with MiniLM.

    MiniLM and distilbert-base-uncased share this vocabulary, so the paper profile uses it too.
    """
    return bert_uncased_tokenizer("minilm")
