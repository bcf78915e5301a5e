"""R@k and MRR@10 in both directions, with an explicit rule for tied scores (DESIGN.md section 3).

Image-text retrieval papers report "R@k" as the share of queries with at least one relevant item
in the top k (text->image: the caption's one image; image->text: any of the image's captions).
That is ``Success@k`` in ir_measures' terms; MRR@10 is the mean reciprocal rank of the first
relevant item, 0 beyond rank 10.

Tie rule (pessimistic): an item tied with the best relevant item is ranked *above* it when it
is not relevant. Some emoji variants render to identical images and get identical scores; with
this rule a tie never counts as a hit by accident. With no ties the numbers equal ir_measures'
(a test checks it).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch


def first_relevant_rank(scores: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Pessimistic 1-based rank of the best-scored relevant item per query.

    scores: (Q, D) float; relevant: (Q, D) bool with at least one True per row. Returns (Q,) long.
    """
    if not bool(relevant.any(dim=1).all()):
        q = int(torch.nonzero(~relevant.any(dim=1))[0])
        raise ValueError(f"query row {q} has no relevant item; every query needs one (check the qrels / ids)")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN; check the embeddings for NaN vectors")
    best_rel = scores.masked_fill(~relevant, float("-inf")).max(dim=1, keepdim=True).values  # (Q, 1)
    above = (scores > best_rel).sum(dim=1)  # strictly better items (all non-relevant)
    tied_nonrel = ((scores == best_rel) & ~relevant).sum(dim=1)  # ties go against the query
    return 1 + above + tied_nonrel


def metrics_from_ranks(ranks: np.ndarray | torch.Tensor, ks: tuple[int, ...] = (1, 5, 10), mrr_depth: int = 10) -> dict:
    """R@k (percent) and MRR@depth from first-relevant ranks (Q,)."""
    r = torch.as_tensor(ranks).double()
    out = {f"R@{k}": float((r <= k).double().mean() * 100) for k in ks}
    out[f"MRR@{mrr_depth}"] = float(torch.where(r <= mrr_depth, 1.0 / r, torch.zeros_like(r)).mean())
    out["n_queries"] = int(r.numel())
    return out


def relevance_matrix(query_keys: np.ndarray, doc_keys: np.ndarray) -> torch.Tensor:
    """(Q, D) bool: query i is relevant to document j when their keys match."""
    q = np.asarray(query_keys)[:, None]
    d = np.asarray(doc_keys)[None, :]
    return torch.from_numpy(q == d)


def ranks_chunked(
    score_fn: Callable[[slice], torch.Tensor],
    relevant_fn: Callable[[slice], torch.Tensor],
    n_queries: int,
    chunk: int = 2048,
) -> np.ndarray:
    """First-relevant ranks for many queries without holding the whole (Q, D) matrix."""
    out = []
    for start in range(0, n_queries, chunk):
        sl = slice(start, min(start + chunk, n_queries))
        scores = score_fn(sl)
        out.append(first_relevant_rank(scores, relevant_fn(sl).to(scores.device)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def evaluate_both_directions(
    image_vecs: torch.Tensor,
    text_vecs: torch.Tensor,
    text_image_ids: np.ndarray,
    image_ids: np.ndarray,
    ks: tuple[int, ...] = (1, 5, 10),
    mrr_depth: int = 10,
    return_ranks: bool = False,
    image_gallery: np.ndarray | None = None,
) -> dict:
    """Text->image and image->text metrics from (N_img, D) and (N_txt, D) vectors (dot product).

    ``text_image_ids`` (N_txt,) names each caption's image; ``image_ids`` (N_img,) the images;
    ``image_gallery`` (N_img,) optional, see :func:`evaluate_scores`.
    Works for dense and for sparse vectors given as dense tensors.
    """
    scores = text_vecs.float() @ image_vecs.float().T  # (N_txt, N_img), computed once
    return evaluate_scores(scores, text_image_ids, image_ids, ks, mrr_depth, return_ranks, image_gallery=image_gallery)


def evaluate_collection(collection, image_vecs, text_vecs, ks=(1, 5, 10), mrr_depth: int = 10) -> dict:
    """:func:`evaluate_both_directions` on an image-caption set: ``image_vecs`` / ``text_vecs`` (numpy or torch) are
    its images' and captions' rows in its order; its captions name their images, and its galleries are kept apart."""
    return evaluate_both_directions(
        torch.as_tensor(image_vecs),
        torch.as_tensor(text_vecs),
        collection.captions["image_id"].to_numpy(),
        collection.images["image_id"].to_numpy(),
        ks,
        mrr_depth,
        image_gallery=collection.image_gallery,
    )


def evaluate_scores(
    scores: torch.Tensor,
    text_image_ids: np.ndarray,
    image_ids: np.ndarray,
    ks: tuple[int, ...] = (1, 5, 10),
    mrr_depth: int = 10,
    return_ranks: bool = False,
    chunk: int = 2048,
    image_gallery: np.ndarray | None = None,
) -> dict:
    """Both directions from one (N_txt, N_img) score matrix (rows: captions, columns: images).

    ``image_gallery`` (N_img,): the gallery of each image (the emoji default: its art style). A caption is
    then ranked against the images of its own image's gallery only, and an image against the captions of
    its gallery, so each gallery is its own retrieval problem; the metrics are over all queries, and
    ``by_gallery`` gives them per gallery.
    """
    text_image_ids = np.asarray(text_image_ids).astype(str)
    image_ids = np.asarray(image_ids).astype(str)
    img_g = txt_g = None
    if image_gallery is not None:
        img_g = np.asarray(image_gallery).astype(str)
        row_of = dict(zip(image_ids, range(len(image_ids))))
        txt_g = img_g[[row_of[i] for i in text_image_ids]]

    def within(s, q_g, d_g):
        if q_g is None:
            return s
        return s.masked_fill(torch.from_numpy(q_g[:, None] != d_g[None, :]).to(s.device), float("-inf"))

    t2i = ranks_chunked(
        lambda sl: within(scores[sl], None if txt_g is None else txt_g[sl], img_g),
        lambda sl: relevance_matrix(text_image_ids[sl], image_ids),
        scores.shape[0],
        chunk,
    )
    i2t = ranks_chunked(
        lambda sl: within(scores[:, sl].T, None if img_g is None else img_g[sl], txt_g),
        lambda sl: relevance_matrix(image_ids[sl], text_image_ids),
        scores.shape[1],
        chunk,
    )
    out = {
        "text_to_image": metrics_from_ranks(t2i, ks, mrr_depth),
        "image_to_text": metrics_from_ranks(i2t, ks, mrr_depth),
    }
    if img_g is not None:
        out["by_gallery"] = {  # str keys: numpy strings would make a training state torch.load refuses
            str(g): {
                "text_to_image": metrics_from_ranks(t2i[txt_g == g], ks, mrr_depth),
                "image_to_text": metrics_from_ranks(i2t[img_g == g], ks, mrr_depth),
            }
            for g in sorted(set(img_g))
        }
    if return_ranks:
        out["ranks"] = {"text_to_image": t2i, "image_to_text": i2t}
    return out


def metrics_frame(named: dict, metrics: tuple[str, ...] = ("R@1", "R@5", "R@10", "MRR@10")):
    """{row name: evaluate_both_directions(...)} -> DataFrame with (direction, metric) columns."""
    import pandas as pd

    rows = {}
    for name, res in named.items():
        rows[name] = {(d, m): res[d][m] for d in ("text_to_image", "image_to_text") for m in metrics if m in res[d]}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    return frame
