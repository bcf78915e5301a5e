"""Which terms make sparse vectors co-activate (DESIGN.md section 3, "FLOPs (co-activation)").

FLOPs is ``sum_v df_q(v) * df_d(v) / (N_q * N_d)`` (:mod:`lsr_lib.metrics.sparse_stats`), so each term
``v`` contributes ``df_q(v) * df_d(v) / (N_q * N_d)``: the probability that a random query and a
random document are both active on ``v``. A term's *FLOPs share* is that contribution over the
total. The functions here break FLOPs down by term and show the few terms active almost
everywhere, which is what expansion control is meant to reduce:

- :func:`term_df_table`: per-term document frequency ``df(v)`` (number of rows where ``v`` is
  non-zero) and ``df_share(v) = df(v) / N``, with the term's WordPiece string;
- :func:`high_df_terms`: how many terms have ``df_share > t`` (strictly) for t = 10% and 50%,
  as counts, share of the vocabulary and share of the active terms (``df > 0``);
- :func:`top_coactivated_terms`: terms sorted by their FLOPs contribution, with FLOPs share;
- :func:`coactivation_matrix`: for terms ``a, b``, the fraction of rows where both are
  non-zero (the diagonal is ``df_share``);
- :func:`plot_df_curves` and :func:`plot_coactivation_heatmap`: the two figures of stage 03.

Explicit zeros stored in a CSR matrix never count as active (as in ``sparse_stats``).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..metrics.sparse_stats import _csr, document_frequency, flops_from_df


def term_strings(tokenizer, term_ids: Sequence[int]) -> list[str]:
    """WordPiece strings of vocabulary ids."""
    return list(tokenizer.convert_ids_to_tokens([int(i) for i in term_ids]))


def term_df_table(x, tokenizer, active_only: bool = True) -> pd.DataFrame:
    """Per-term df over the rows of ``x`` (N, V): term_id, term, df, df_share; sorted by df, descending."""
    df = document_frequency(x)  # (V,)
    n = max(x.shape[0], 1)
    ids = np.flatnonzero(df) if active_only else np.arange(len(df))
    ids = ids[np.lexsort((ids, -df[ids]))]  # df descending, ties by term id
    return pd.DataFrame({"term_id": ids, "term": term_strings(tokenizer, ids), "df": df[ids], "df_share": df[ids] / n})


def query_document_df(q, d, tokenizer) -> pd.DataFrame:
    """Per-term df over queries (N_q, V) and documents (N_d, V), outer-joined, sorted by FLOPs contribution."""
    df_q, df_d = document_frequency(q), document_frequency(d)  # (V,), (V,)
    ids = np.flatnonzero((df_q > 0) | (df_d > 0))
    contrib = df_q[ids].astype(np.float64) * df_d[ids] / max(q.shape[0] * d.shape[0], 1)
    order = np.lexsort((ids, -df_q[ids] - df_d[ids], -contrib))
    ids, contrib = ids[order], contrib[order]
    return pd.DataFrame(
        {
            "term_id": ids,
            "term": term_strings(tokenizer, ids),
            "df_query": df_q[ids],
            "df_document": df_d[ids],
            "df_share_query": df_q[ids] / max(q.shape[0], 1),
            "df_share_document": df_d[ids] / max(d.shape[0], 1),
            "flops_contribution": contrib,
        }
    )


def high_df_terms(x, thresholds: Sequence[float] = (0.1, 0.5)) -> pd.DataFrame:
    """Terms active in more than ``t`` of the rows of ``x``: count, share of vocabulary, share of active terms."""
    df = document_frequency(x)  # (V,)
    share = df / max(x.shape[0], 1)
    n_active = int((df > 0).sum())
    rows = []
    for t in thresholds:
        n = int((share > t).sum())
        rows.append(
            {
                "threshold": float(t),
                "n_terms": n,
                "share_of_vocabulary": n / len(df),
                "share_of_active_terms": n / n_active if n_active else 0.0,
            }
        )
    return pd.DataFrame(rows)


def top_coactivated_terms(q, d, tokenizer, k: int = 20) -> pd.DataFrame:
    """The ``k`` terms with the largest ``df_q(v) df_d(v) / (N_q N_d)``, with their share of FLOPs."""
    if q.shape[1] != d.shape[1]:
        raise ValueError(f"query vocabulary {q.shape[1]} != document vocabulary {d.shape[1]}")
    table = query_document_df(q, d, tokenizer)
    total = flops_from_df(document_frequency(q), document_frequency(d), q.shape[0], d.shape[0])
    table["flops_share"] = table["flops_contribution"] / total if total > 0 else 0.0
    table["cumulative_flops_share"] = table["flops_share"].cumsum()
    return table.head(k).reset_index(drop=True)


def coactivation_matrix(x, term_ids: Sequence[int]) -> np.ndarray:
    """(k, k) fraction of rows of ``x`` (N, V) in which both terms are non-zero."""
    m = _csr(x)
    b = m[:, np.asarray(term_ids, dtype=np.int64)]  # (N, k)
    b.data[:] = 1.0
    both = (b.T @ b).toarray()  # (k, k) co-occurrence counts
    return both / max(m.shape[0], 1)


def top_term_coactivation(x, tokenizer, k: int = 20, term_ids: Optional[Sequence[int]] = None) -> pd.DataFrame:
    """Co-activation matrix of the ``k`` highest-df terms of ``x`` (or of ``term_ids``), labelled by term."""
    if term_ids is None:
        term_ids = term_df_table(x, tokenizer)["term_id"].head(k).to_numpy()
    labels = term_strings(tokenizer, term_ids)
    return pd.DataFrame(coactivation_matrix(x, term_ids), index=labels, columns=labels)


def sorted_df_share(x) -> np.ndarray:
    """(n_active,) df shares of the active terms of ``x``, descending (the curve of :func:`plot_df_curves`)."""
    df = document_frequency(x)
    return np.sort(df[df > 0])[::-1] / max(x.shape[0], 1)


def plot_df_curves(vectors: Mapping[str, sp.spmatrix], title: str = "", ax=None):
    """Sorted per-term df share (log-log) of each labelled matrix, e.g. {'with_control texts': csr, ...}."""
    import matplotlib.pyplot as plt

    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5.5, 3.8))
    for label, x in vectors.items():
        curve = sorted_df_share(x)
        ax.plot(np.arange(1, len(curve) + 1), curve, label=f"{label} ({len(curve)} active terms)")
    for t in (0.1, 0.5):
        ax.axhline(t, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("term rank (by document frequency)")
    ax.set_ylabel("share of vectors with the term active")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def plot_coactivation_heatmap(matrix: pd.DataFrame, title: str = "", ax=None, annotate: bool = False):
    """Heatmap of a :func:`top_term_coactivation` frame (fraction of vectors with both terms active)."""
    import matplotlib.pyplot as plt

    k = len(matrix)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(0.32 * k + 2.5, 0.32 * k + 1.8))
    im = ax.imshow(matrix.to_numpy(), vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(k), matrix.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(k), matrix.index, fontsize=7)
    ax.grid(False)
    if annotate:
        for (i, j), v in np.ndenumerate(matrix.to_numpy()):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=5, color="w" if v < 0.6 else "k")
    fig.colorbar(im, ax=ax, label="share of vectors with both terms active", fraction=0.046)
    ax.set_title(title)
    return fig
