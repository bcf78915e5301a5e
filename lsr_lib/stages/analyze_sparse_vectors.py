"""Stage 03 glue: read stage 02's vectors and summarise co-activation, deviation, faithfulness.

Reads only files: ``data/cache/<profile>/d2s/<condition>/vectors/<split>_*.npz`` (stage 02) and
the dense features (stage 01). The metric definitions live in ``coactivation``,
``semantic_deviation`` and ``faithfulness`` (DESIGN.md section 3).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..analysis.coactivation import high_df_terms
from ..config.profiles import Config
from ..artifacts.catalog import load_condition_vectors  # noqa: F401 (stage 02's vectors, verified; re-exported for the notebooks)
from ..analysis.semantic_deviation import deviation_summary
from ..metrics.sparse_stats import sparse_summary


def coactivation_summary(vectors: dict[str, dict[str, sp.csr_matrix]]) -> pd.DataFrame:
    """Per condition: FLOPs, non-zeros, and the share of terms active in >10% / >50% of vectors."""
    rows = {}
    for name, v in vectors.items():
        s = sparse_summary(v["texts"], v["images"])
        row = {"FLOPs": s["flops"], "nnz caption": s["avg_nonzeros_query"], "nnz image": s["avg_nonzeros_document"],
               "active terms (captions)": s["active_terms_query"], "active terms (images)": s["active_terms_document"],
               "max df share (captions)": s["max_df_share_query"], "max df share (images)": s["max_df_share_document"]}
        for side, key in (("captions", "texts"), ("images", "images")):
            h = high_df_terms(v[key]).set_index("threshold")
            for t in h.index:
                row[f"terms in >{t:.0%} of {side}"] = int(h.loc[t, "n_terms"])
        rows[name] = row
    return pd.DataFrame(rows).T


def summary_means(per_condition: dict[str, pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """Mean (and median) of the chosen per-vector columns for each condition."""
    out = {}
    for name, df in per_condition.items():
        s = deviation_summary(df[columns])
        out[name] = {f"{c} ({stat})": float(s.loc[c, stat]) for c in columns for stat in ("mean", "median")}
    return pd.DataFrame(out).T


def compare(a: float, b: float) -> str:
    """'lower' / 'higher' / 'equal' with the relative change, for plain-language findings."""
    if not np.isfinite(a) or not np.isfinite(b):
        return "not comparable (undefined)"
    word = "lower" if a < b else "higher" if a > b else "equal"
    if b == 0:
        return f"{word} ({a:.3g} vs {b:.3g})"
    return f"{word} ({a:.3g} vs {b:.3g}, {100 * (a - b) / abs(b):+.1f}%)"
