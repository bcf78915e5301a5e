"""The expansion-control effect per query, and whether it is significant (issue 13).

Stage 03 writes one row per (condition, direction, query) of the test split to
``results/<profile>/03_per_query.parquet``: hit@k and RR of the sparse model, its top-k Kendall tau
against the dense teacher, the query's FLOPs (text->image: the expected number of postings it
touches per document, whose mean is the collection FLOPs) and, for images, caption precision@k.
From it, :func:`control_effect` runs a paired test of with against without control over the same
queries for each metric of ``EFFECT_METRICS``, Holm-corrected across them
(:mod:`lsr_lib.metrics.significance`); ``lsr_lib.results.seeds`` repeats that per training seed
and across seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..metrics.significance import holm, paired_test
from ..metrics.sparse_stats import per_query_flops
from ..storage.atomic import atomic_write

PER_QUERY_FILE = "03_per_query.parquet"
# metric -> (direction, column of the per-query table, higher is better)
EFFECT_METRICS: dict[str, tuple[str, str, bool]] = {
    "T->I R@1": ("text_to_image", "R@1", True),
    "I->T R@1": ("image_to_text", "R@1", True),
    "FLOPs (T->I)": ("text_to_image", "flops", False),
    "Kendall tau (T->I)": ("text_to_image", "tau", True),
    "caption precision@k (images)": ("image_to_text", "caption_precision", True),
}
CONTROL, NO_CONTROL = "with_control", "without_control"


def per_query_table(
    vectors: Mapping[str, Mapping[str, sp.csr_matrix]], faith: Mapping[str, dict], image_dev: Mapping[str, pd.DataFrame]
) -> pd.DataFrame:
    """Long table: condition, direction, query (row index in the split), then one column per measure.

    ``vectors``: condition -> {"texts", "images"} CSR; ``faith``: condition -> ``faithfulness_report``
    output (with ``per_query``); ``image_dev``: condition -> ``image_deviation`` frame (one row per image).
    """
    parts = []
    for name, v in vectors.items():
        t2i = faith[name]["text_to_image"]["per_query"].copy()
        t2i["flops"] = per_query_flops(v["texts"], v["images"])
        i2t = faith[name]["image_to_text"]["per_query"].copy()
        i2t["caption_precision"] = image_dev[name]["caption_precision_at_k"].to_numpy()
        for direction, frame in (("text_to_image", t2i), ("image_to_text", i2t)):
            parts.append(frame.assign(condition=name, direction=direction, query=np.arange(len(frame))))
    table = pd.concat(parts, ignore_index=True)
    first = ["condition", "direction", "query"]
    return table[first + [c for c in table.columns if c not in first]]


def write_per_query(table: pd.DataFrame, results_dir: str | Path) -> Path:
    """Write the per-query table (atomically) as ``<results_dir>/03_per_query.parquet``."""
    return atomic_write(Path(results_dir) / PER_QUERY_FILE, lambda tmp: table.to_parquet(tmp, index=False), ".parquet")


def read_per_query(results_dir: str | Path) -> pd.DataFrame:
    """The per-query table of a results folder; FileNotFoundError naming the stage that writes it."""
    path = Path(results_dir) / PER_QUERY_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: run stage 03 (notebooks/03_analyze_sparse_vectors.ipynb) for this profile"
        )
    return pd.read_parquet(path)


def paired_values(
    table: pd.DataFrame, a: str = CONTROL, b: str = NO_CONTROL
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """metric -> (values of ``a``, values of ``b``) on the queries where both are defined (tau, precision can be
    NaN)."""
    out = {}
    for metric, (direction, column, _) in EFFECT_METRICS.items():
        rows = table[table["direction"] == direction]
        x = rows[rows["condition"] == a].set_index("query")[column]
        y = rows[rows["condition"] == b].set_index("query")[column]
        if len(x) != len(y) or not x.index.equals(y.index):
            raise ValueError(
                f"per-query table: {a} and {b} have different {direction} queries ({len(x)} vs {len(y)}); rerun "
                "stage 03"
            )
        ok = x.notna().to_numpy() & y.notna().to_numpy()
        out[metric] = (x.to_numpy(np.float64)[ok], y.to_numpy(np.float64)[ok])
    return out


def control_effect(table: pd.DataFrame, alpha: float = 0.05, method: str = "t") -> dict:
    """Per metric: paired test of with vs without control over the same queries, Holm-corrected across metrics."""
    tests = {m: paired_test(x, y, method=method) for m, (x, y) in paired_values(table).items()}
    corrected = holm({m: t["p_value"] for m, t in tests.items()}, alpha)
    return {
        m: {
            **t,
            "p_holm": corrected[m]["p_holm"],
            "significant": corrected[m]["significant"],
            "higher_is_better": EFFECT_METRICS[m][2],
        }
        for m, t in tests.items()
    }


def describe(effect: Mapping[str, dict]) -> dict[str, str]:
    """One line per metric: with vs without, the difference with its 95% interval, and significance."""
    out = {}
    for m, t in effect.items():
        verdict = (
            f"significant (Holm p = {t['p_holm']:.2g})"
            if t["significant"]
            else f"not significant (Holm p = {t['p_holm']:.2g})"
        )
        lo, hi = t["ci95"]
        out[m] = (
            f"{t['mean_a']:.4g} with vs {t['mean_b']:.4g} without control: {t['mean_diff']:+.4g} [{lo:+.3g}, "
            f"{hi:+.3g}] over {t['n']} queries, {verdict}"
        )
    return out
