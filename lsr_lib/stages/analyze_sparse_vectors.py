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

# stage 02's vectors, verified; re-exported for the notebooks
from ..artifacts.catalog import load_condition_vectors  # noqa: F401
from ..analysis.semantic_deviation import deviation_summary
from ..metrics.sparse_stats import sparse_summary


def coactivation_summary(vectors: dict[str, dict[str, sp.csr_matrix]]) -> pd.DataFrame:
    """Per condition: FLOPs, non-zeros, and the share of terms active in >10% / >50% of vectors."""
    rows = {}
    for name, v in vectors.items():
        s = sparse_summary(v["texts"], v["images"])
        row = {
            "FLOPs": s["flops"],
            "nnz caption": s["avg_nonzeros_query"],
            "nnz image": s["avg_nonzeros_document"],
            "active terms (captions)": s["active_terms_query"],
            "active terms (images)": s["active_terms_document"],
            "max df share (captions)": s["max_df_share_query"],
            "max df share (images)": s["max_df_share_document"],
        }
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


# per caption vector, summarised per condition
TEXT_COLUMNS = ["expansion_weight_share", "expansion_topk_share", "unrelated_expansion_share"]
# per image vector
IMAGE_COLUMNS = ["caption_precision_at_k", "weight_share_stopword", "weight_share_punctuation", "weight_share_subword"]


def threshold_sweep(
    vectors: dict, texts: list[str], tokenizer, top_k: int, embedded: dict, thresholds
) -> dict[str, dict[float, float]]:
    """Per condition and cosine threshold: the mean unrelated expansion share (how much the conclusion depends on the
    threshold)."""
    from ..analysis import semantic_deviation

    return {
        n: {
            t: semantic_deviation.text_deviation(v["texts"], texts, tokenizer, top_k, embedded[n], t)[
                "unrelated_expansion_share"
            ].mean()
            for t in thresholds
        }
        for n, v in vectors.items()
    }


def findings(coact: pd.DataFrame, text_dev: dict, image_dev: dict, faith: dict) -> dict[str, str]:
    """Plain statements, with control against without (empty unless both conditions are there)."""
    out = {}
    if {"with_control", "without_control"} <= set(text_dev):
        w, wo = "with_control", "without_control"
        out = {
            "FLOPs": compare(coact.loc[w, "FLOPs"], coact.loc[wo, "FLOPs"]),
            "caption expansion weight share": compare(
                text_dev[w]["expansion_weight_share"].mean(), text_dev[wo]["expansion_weight_share"].mean()
            ),
            "unrelated expansion share": compare(
                text_dev[w]["unrelated_expansion_share"].mean(), text_dev[wo]["unrelated_expansion_share"].mean()
            ),
            "image caption precision@k (higher is better)": compare(
                image_dev[w]["caption_precision_at_k"].mean(), image_dev[wo]["caption_precision_at_k"].mean()
            ),
            "mean Kendall tau, text->image (higher is better)": compare(
                faith[w]["text_to_image"]["tau"]["mean_tau"], faith[wo]["text_to_image"]["tau"]["mean_tau"]
            ),
        }
    return out


def stage_results(
    cfg: Config,
    coact: pd.DataFrame,
    top: dict,
    text_dev: dict,
    image_dev: dict,
    sweep: dict,
    faith: dict,
    found: dict,
    effect: dict,
) -> dict:
    """The content of ``results/<profile>/03_analyses.json``: co-activation, deviation, faithfulness, findings and the
    control effect."""
    return {
        "coactivation": coact.to_dict(orient="index"),
        "top_coactivated_terms": {n: t.to_dict(orient="records") for n, t in top.items()},
        "text_deviation": summary_means(text_dev, TEXT_COLUMNS).to_dict(orient="index"),
        "image_deviation": summary_means(image_dev, IMAGE_COLUMNS).to_dict(orient="index"),
        "unrelated_threshold": cfg.evaluation.unrelated_threshold,
        "unrelated_threshold_sweep": {n: {str(t): v for t, v in s.items()} for n, s in sweep.items()},
        "faithfulness": {
            n: {d: {"tau": r[d]["tau"], "agreement": r[d]["agreement"].to_dict(orient="index")} for d in r}
            for n, r in faith.items()
        },
        "findings": found,
        "control_effect": effect,
    }
