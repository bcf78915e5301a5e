"""Faithfulness of a sparse model to its dense teacher (DESIGN.md section 3, "Faithfulness").

Score matrices are (N_txt, N_img) for text->image (rows are queries); image->text uses their
transpose. Two measures:

- **Top-k Kendall tau.** For query q, the candidate set S(q) is the top-k items (k = 10) of the
  dense teacher's row (``candidates="dense"``, the default), of the sparse row (``"sparse"``) or
  the union of both (``"union"``); top-k ties are broken by lower column index. tau(q) is the
  tau-b statistic of ``scipy.stats.kendalltau(sparse[q, S], dense[q, S])`` (the statistic only:
  p-values are never read, unlike the reference code, which averaged them in). tau(q) is NaN
  when either side is constant on S (e.g. an all-zero sparse row); such queries are counted
  (``n_nan``) and excluded from the mean and the median.
- **Per-query effectiveness agreement.** From each run's pessimistic first-relevant rank r(q)
  (:func:`lsr_lib.metrics.retrieval.evaluate_scores`, ``return_ranks=True``): hit@k(q) =
  [r(q) <= k] for each k and RR(q) = 1/r(q) if r(q) <= ``rr_depth`` else 0 (the MRR@10 term).
  For each measure: Pearson and Spearman correlation between the sparse and dense per-query
  values (NaN when either is constant), the share of queries on which the two agree exactly,
  and both means. For the binary hit@k, Pearson is the phi coefficient.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from scipy import stats

from ..metrics.retrieval import evaluate_scores

CANDIDATES = ("dense", "sparse", "union")
DIRECTIONS = ("text_to_image", "image_to_text")


def _array(scores) -> np.ndarray:
    """A dense floating numpy view or copy of a numpy / torch / scipy-sparse score matrix."""
    if hasattr(scores, "toarray"):
        scores = scores.toarray()
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    scores = np.asarray(scores)
    return scores if np.issubdtype(scores.dtype, np.floating) else scores.astype(np.float64)


def topk_indices(row: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest values of a 1-D row (ties: lower index first)."""
    if k < len(row):
        kth = np.partition(row, len(row) - k)[len(row) - k]  # the k-th largest value
        cand = np.flatnonzero(row >= kth)  # every item that can be in the top k, ties included
    else:
        cand = np.arange(len(row))
    return cand[np.lexsort((cand, -row[cand]))][:k]


def candidate_set(sparse_row: np.ndarray, dense_row: np.ndarray, k: int, candidates: str = "dense") -> np.ndarray:
    """Sorted column indices of one query's candidate set S(q)."""
    if candidates not in CANDIDATES:
        raise ValueError(f"unknown candidates {candidates!r}; known: {', '.join(CANDIDATES)}")
    parts = {"dense": [dense_row], "sparse": [sparse_row], "union": [dense_row, sparse_row]}[candidates]
    return np.unique(np.concatenate([topk_indices(r, k) for r in parts]))


def per_query_kendall_tau(sparse_scores, dense_scores, k: int = 10, candidates: str = "dense") -> np.ndarray:
    """(Q,) tau-b between sparse and dense scores on each query's candidate set; NaN where undefined."""
    s, d = _array(sparse_scores), _array(dense_scores)  # (Q, D), (Q, D)
    if s.shape != d.shape:
        raise ValueError(f"sparse scores {s.shape} and dense scores {d.shape} differ in shape")
    out = np.full(s.shape[0], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)  # constant input -> NaN, counted below
        for q in range(s.shape[0]):
            idx = candidate_set(s[q], d[q], k, candidates)
            if len(idx) >= 2:
                out[q] = stats.kendalltau(s[q, idx], d[q, idx], variant="b").statistic
    return out


def kendall_tau_summary(taus: np.ndarray) -> dict:
    """Mean and median of the defined taus, with the number of NaN taus excluded."""
    taus = np.asarray(taus, dtype=np.float64)
    ok = taus[~np.isnan(taus)]
    return {
        "mean_tau": float(ok.mean()) if len(ok) else float("nan"),
        "median_tau": float(np.median(ok)) if len(ok) else float("nan"),
        "n_queries": len(taus),
        "n_defined": len(ok),
        "n_nan": int(len(taus) - len(ok)),
    }


def topk_kendall_tau(sparse_scores, dense_scores, k: int = 10, candidates: str = "dense") -> dict:
    """Top-``k`` Kendall tau-b averaged over queries (rows), with the NaN count."""
    out = kendall_tau_summary(per_query_kendall_tau(sparse_scores, dense_scores, k, candidates))
    return {**out, "k": k, "candidates": candidates}


def _correlation(fn, a: np.ndarray, b: np.ndarray) -> float:
    """``fn(a, b).statistic``, NaN for constant or too short inputs."""
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(fn(a, b).statistic)


def per_query_measures(ranks: np.ndarray, ks: tuple[int, ...] = (1, 5, 10), rr_depth: int = 10) -> pd.DataFrame:
    """(Q, len(ks) + 1) hit@k (0/1) and RR@rr_depth per query from first-relevant ranks (Q,)."""
    r = np.asarray(ranks, dtype=np.float64)
    out = {f"R@{k}": (r <= k).astype(np.float64) for k in ks}
    out[f"RR@{rr_depth}"] = np.where(r <= rr_depth, 1.0 / r, 0.0)
    return pd.DataFrame(out)


def rank_agreement(
    sparse_ranks: np.ndarray, dense_ranks: np.ndarray, ks: tuple[int, ...] = (1, 5, 10), rr_depth: int = 10
) -> pd.DataFrame:
    """Per measure: Pearson, Spearman, exact-agreement share and means of sparse vs dense per-query values."""
    if len(sparse_ranks) != len(dense_ranks):
        raise ValueError(f"{len(sparse_ranks)} sparse ranks vs {len(dense_ranks)} dense ranks")
    a, b = per_query_measures(sparse_ranks, ks, rr_depth), per_query_measures(dense_ranks, ks, rr_depth)
    rows = {}
    for m in a.columns:
        x, y = a[m].to_numpy(), b[m].to_numpy()
        rows[m] = {
            "pearson": _correlation(stats.pearsonr, x, y),
            "spearman": _correlation(stats.spearmanr, x, y),
            "agreement": float((x == y).mean()) if len(x) else float("nan"),
            "sparse_mean": float(x.mean()) if len(x) else float("nan"),
            "dense_mean": float(y.mean()) if len(y) else float("nan"),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def faithfulness_report(
    sparse_scores,
    dense_scores,
    text_image_ids,
    image_ids,
    k: int = 10,
    candidates: str = "dense",
    ks: tuple[int, ...] = (1, 5, 10),
    rr_depth: int = 10,
    image_gallery=None,
) -> dict:
    """Both directions from (N_txt, N_img) sparse and dense score matrices: {direction: {"tau", "agreement",
    "per_query"}}.

    ``per_query``: one row per query of the sparse model, hit@k, RR and tau (NaN where undefined).
    """
    s, d = _array(sparse_scores), _array(dense_scores)  # (N_txt, N_img) each
    if image_gallery is not None:  # each gallery is its own retrieval problem (metrics.retrieval.evaluate_scores)
        g = np.asarray(image_gallery).astype(str)
        row_of = dict(zip(np.asarray(image_ids).astype(str), range(len(g))))
        other = g[[row_of[i] for i in np.asarray(text_image_ids).astype(str)]][:, None] != g[None, :]
        s, d = np.where(other, -np.inf, s), np.where(other, -np.inf, d)
    ranks_s = evaluate_scores(
        torch.from_numpy(np.ascontiguousarray(s)), text_image_ids, image_ids, ks, rr_depth, return_ranks=True
    )["ranks"]
    ranks_d = evaluate_scores(
        torch.from_numpy(np.ascontiguousarray(d)), text_image_ids, image_ids, ks, rr_depth, return_ranks=True
    )["ranks"]
    out = {}
    for direction, (ss, dd) in zip(DIRECTIONS, ((s, d), (s.T, d.T))):
        taus = per_query_kendall_tau(ss, dd, k, candidates)  # (Q,)
        out[direction] = {
            "tau": {**kendall_tau_summary(taus), "k": k, "candidates": candidates},
            "agreement": rank_agreement(ranks_s[direction], ranks_d[direction], ks, rr_depth),
            # sparse side, for paired tests
            "per_query": per_query_measures(ranks_s[direction], ks, rr_depth).assign(tau=taus),
        }
    return out
