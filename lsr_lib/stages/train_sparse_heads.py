"""Stage 02: train D2S heads per condition on stage 01's features, evaluate and export vectors.

Conditions (DESIGN.md section 2): ``with_control`` is the profile's ``d2s`` section (the paper's
linear schedule by default); ``without_control`` is the same with ``p = 0`` throughout. Both use
the same seeds, so they see the same batches in the same order. ``no_exp`` is not a training run:
it evaluates a trained model with every text vector restricted to its caption's own tokens.

Writes under ``cfg.cache_dir / "d2s" / <condition>``: the training run (``best.safetensors``,
``best.json``, ``last_state.pt``; its fingerprint includes stage 01's content id) and
``vectors/<split>/{images,texts,texts_own_tokens}.npz`` (scipy CSR, the input of the analysis and
indexing stages; their fingerprint includes the run's content id, so a retrained model or changed
features re-export them). Both are artifacts of :mod:`lsr_lib.artifacts.catalog`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from ..data.collection import ImageCaptionSet
from ..config.profiles import Config, D2SConfig
from ..artifacts.catalog import VECTOR_FILES, d2s_run_artifact, d2s_run_dir, dense_content_id, load_sparse, save_sparse, vectors_artifact
from ..storage.manifest import build_or_reuse
from ..train.d2s import encode_sparse, load_best, train_d2s
from ..sparse.expansion_control import bert_uncased_tokenizer, caption_token_masks
from ..metrics.retrieval import evaluate_scores
from ..metrics.sparse_stats import sparse_summary

CONDITIONS = {
    "with_control": lambda c: c,
    "without_control": lambda c: dataclasses.replace(c, expansion_schedule="constant", expansion_p0=0.0),
}


def condition_config(base: D2SConfig, name: str) -> D2SConfig:
    """The D2S config of a named condition."""
    if name not in CONDITIONS:
        raise ValueError(f"unknown D2S condition {name!r}; known: {', '.join(CONDITIONS)} (set d2s_conditions in the profile)")
    return CONDITIONS[name](base)


CODE_VERSION = 1  # bump when a change here alters the exported vectors for the same model


def run_dir(cfg: Config, name: str) -> Path:
    """Folder of one condition's run and exported vectors."""
    return d2s_run_dir(cfg, name)


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
    return {"img_emb": torch.from_numpy(img), "txt_emb": torch.from_numpy(txt), "image_ids": col.images["image_id"].to_numpy(), "text_image_ids": col.captions["image_id"].to_numpy()}


def train_condition(cfg: Config, name: str, train: dict, val: dict, device: torch.device, progress: bool = True) -> dict:
    """Train (or resume, or reuse) one condition's model."""
    return train_d2s(condition_config(cfg.d2s, name), train, val, run_dir(cfg, name), device=device, progress=progress, inputs={"dense": dense_content_id(cfg)})


def export_vectors(cfg: Config, name: str, split: str, col: ImageCaptionSet, img: np.ndarray, txt: np.ndarray, tokenizer) -> dict[str, sp.csr_matrix]:
    """CSR vectors of a split: images, texts (full expansion) and texts_own_tokens (``no_exp``); reused when up to date."""
    art = vectors_artifact(cfg, name, split)
    fingerprint = {"run": d2s_run_artifact(cfg, name).content_id(), "dense": dense_content_id(cfg), "split": split, "code": CODE_VERSION}

    def build(out: Path):
        model, _ = load_best(run_dir(cfg, name))
        d = cfg.d2s.eval_batch_size
        masks = caption_token_masks(col.captions["text"].tolist(), tokenizer)  # (N_txt, L) ids
        save_sparse(out / "images.npz", encode_sparse(model, torch.from_numpy(img), "image", d))  # (N_img, V)
        save_sparse(out / "texts.npz", encode_sparse(model, torch.from_numpy(txt), "text", d))  # (N_txt, V)
        save_sparse(out / "texts_own_tokens.npz", encode_sparse(model, torch.from_numpy(txt), "text", d, masks))  # (N_txt, V)
        return [f"{k}.npz" for k in VECTOR_FILES], {"n_images": len(img), "n_texts": len(txt)}

    build_or_reuse(art, fingerprint, build)
    art.verify()
    return {k: load_sparse(art.root / f"{k}.npz") for k in VECTOR_FILES}


def sparse_vectors(cfg: Config, name: str, split: str, col: ImageCaptionSet, img: np.ndarray, txt: np.ndarray, tokenizer, own_tokens_only: bool = False):
    """(image CSR, text CSR) of a split; ``own_tokens_only``: the ``no_exp`` text vectors."""
    v = export_vectors(cfg, name, split, col, img, txt, tokenizer)
    return v["images"], v["texts_own_tokens" if own_tokens_only else "texts"]


def evaluate_sparse(cfg: Config, col: ImageCaptionSet, img_csr, txt_csr, return_ranks: bool = False) -> dict:
    """Both-direction metrics from the exact sparse product, plus FLOPs and vector lengths (and per-query ranks)."""
    scores = torch.from_numpy((txt_csr @ img_csr.T).toarray())  # (N_txt, N_img)
    out = evaluate_scores(scores, col.captions["image_id"].to_numpy(), col.images["image_id"].to_numpy(), cfg.evaluation.ks, cfg.evaluation.mrr_depth, return_ranks)
    # text->image: queries are captions, documents images; FLOPs as in DESIGN.md section 3
    out["sparsity_text_to_image"] = sparse_summary(txt_csr, img_csr)
    return out


def tokenizer_for(cfg: Config):
    """The BERT-uncased WordPiece tokenizer (30,522 terms), installed offline with MiniLM.

    MiniLM and distilbert-base-uncased share this vocabulary, so the paper profile uses it too.
    """
    return bert_uncased_tokenizer("minilm")
