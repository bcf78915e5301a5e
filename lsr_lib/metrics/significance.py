"""Paired significance tests for comparing two systems on the same queries, and across training seeds.

Typical use: is a sparse model trained "with_control" better than one trained "without_control"?
Both systems are scored on the *same* queries, so every test here is paired (per-query differences).

- Student's paired t-test (``method="t"``, ``scipy.stats.ttest_rel``, two-sided): ranx's default test
  for comparing runs. Fast; relies on the mean of the per-query differences being roughly normal, which
  holds well for a few hundred queries even when per-query values are 0/1 (R@k) or reciprocal ranks.
- Fisher's randomization test (``method="randomization"``, ``scipy.stats.permutation_test`` with
  ``permutation_type="samples"`` on the paired differences, i.e. random sign flips, statistic the mean
  difference, two-sided): no normality assumption. Smucker, Allan & Carterette, "A Comparison of
  Statistical Significance Tests for Information Retrieval Evaluation", CIKM 2007, recommend it for IR
  and find it agrees closely with the t-test. Seeded, so p-values are reproducible.
- Holm-Bonferroni (``statsmodels.stats.multitest.multipletests(method="holm")``): when several metrics
  (R@1, R@5, R@10, MRR@10, both directions) are tested for the same comparison, controls the
  family-wise error rate; uniformly more powerful than plain Bonferroni.
- Across seeds (``across_seeds``): one summary value per seed and system, paired by seed, paired t-test
  over seeds. With only a few seeds this test has little power; ``compare_conditions`` therefore also asks
  that the per-query test is (Holm-)significant in every seed with the same sign.

Conventions: all outputs are plain dicts of Python floats / ints / strs / bools / None / lists, so they pass
``json.dumps``. When all paired differences are exactly zero, the t statistic is undefined (0/0); the
functions report statistic 0.0 and p-value 1.0. Differences that are constant but non-zero give scipy's
limit (t statistic +-inf, p-value 0.0). A missing p-value (NaN or None) passes through ``holm`` as not
significant.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import scipy.stats
from statsmodels.stats.multitest import multipletests

METHODS = ("t", "randomization")


def _as_vector(x: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    """``x`` as a 1-D float64 array; ValueError if it is not 1-D or has NaN / inf entries."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per query / seed), got shape {arr.shape}")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise ValueError(
            f"{name} has {bad} non-finite (NaN/inf) entries out of {arr.size}; per-query values must be finite"
        )
    return arr


def _paired(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, min_n: int, unit: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validated equal-length 1-D finite arrays ``a`` and ``b`` with at least ``min_n`` entries."""
    a_arr, b_arr = _as_vector(a, "a"), _as_vector(b, "b")
    if a_arr.shape != b_arr.shape:
        raise ValueError(
            f"a and b have different lengths ({a_arr.size} vs {b_arr.size}); a paired test needs the same {unit} in "
            "the same order"
        )
    if a_arr.size < min_n:
        raise ValueError(f"need at least {min_n} {unit}, got {a_arr.size}")
    return a_arr, b_arr


def _mean_diff_ci95(a: np.ndarray, b: np.ndarray) -> list[float]:
    """t-based 95% confidence interval [lo, hi] of the mean paired difference ``a - b``."""
    d = a - b
    if np.all(d == d[0]):  # zero variance: the interval collapses to the (constant) difference
        return [float(d[0]), float(d[0])]
    ci = scipy.stats.ttest_rel(a, b).confidence_interval(0.95)
    return [float(ci.low), float(ci.high)]


def _mean_of_differences(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Statistic for the randomization test: mean of the (sign-flipped) paired differences."""
    return np.mean(x, axis=axis)


def paired_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    method: str = "t",
    n_resamples: int = 10000,
    seed: int = 0,
) -> dict:
    """Two-sided paired test of system A vs system B over the same queries.

    a, b: 1-D per-query values (same queries, same order, finite, at least 2).
    method: "t" (Student's paired t-test) or "randomization" (Fisher's randomization test: random sign
    flips of the differences, ``n_resamples`` draws from a generator seeded with ``seed``; exact when
    ``2**n <= n_resamples``).
    Returns {"method", "n", "mean_a", "mean_b", "mean_diff" (a - b), "ci95": [lo, hi] (t-based CI of the mean
    difference, for either method), "statistic" (t, or the mean difference for "randomization"), "p_value"}.
    All differences exactly zero -> statistic 0.0, p_value 1.0.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    a_arr, b_arr = _paired(a, b, min_n=2, unit="queries")
    d = a_arr - b_arr
    out = {
        "method": method,
        "n": int(d.size),
        "mean_a": float(a_arr.mean()),
        "mean_b": float(b_arr.mean()),
        "mean_diff": float(d.mean()),
        "ci95": _mean_diff_ci95(a_arr, b_arr),
    }
    if not np.any(d):
        return {**out, "statistic": 0.0, "p_value": 1.0}
    if method == "t":
        res = scipy.stats.ttest_rel(a_arr, b_arr, alternative="two-sided")
        statistic, p_value = float(res.statistic), float(res.pvalue)
    else:
        res = scipy.stats.permutation_test(
            (d,),
            _mean_of_differences,
            permutation_type="samples",
            vectorized=True,
            n_resamples=int(n_resamples),
            alternative="two-sided",
            rng=np.random.default_rng(seed),
        )
        statistic, p_value = float(res.statistic), float(res.pvalue)
    return {**out, "statistic": statistic, "p_value": min(p_value, 1.0)}


def _missing(p: float | None) -> bool:
    """True for a p-value that is None or NaN."""
    return p is None or (isinstance(p, float) and math.isnan(p)) or bool(np.isnan(p))


def holm(p_values: Mapping[str, float | None], alpha: float = 0.05) -> dict[str, dict]:
    """Holm-Bonferroni correction of several p-values (one per metric), via statsmodels.

    Returns per key {"p_value", "p_holm", "significant"} (significant: p_holm <= alpha, i.e. statsmodels'
    reject). A NaN or None p-value is left out of the family and passed through as p_holm NaN / None,
    not significant.
    """
    keys = list(p_values)
    present = [k for k in keys if not _missing(p_values[k])]
    for k in present:
        if not 0.0 <= float(p_values[k]) <= 1.0:
            raise ValueError(f"p-value for {k!r} is {p_values[k]}, outside [0, 1]")
    out: dict[str, dict] = {}
    if present:
        reject, p_adj, _, _ = multipletests([float(p_values[k]) for k in present], alpha=alpha, method="holm")
        for k, r, p in zip(present, reject, p_adj):
            out[k] = {"p_value": float(p_values[k]), "p_holm": float(p), "significant": bool(r)}
    for k in keys:
        if k not in out:
            p = p_values[k]
            out[k] = {
                "p_value": None if p is None else float("nan"),
                "p_holm": None if p is None else float("nan"),
                "significant": False,
            }
    return {k: out[k] for k in keys}


def _std(x: np.ndarray) -> float | None:
    """Sample standard deviation (ddof=1), None with fewer than 2 values."""
    return float(np.std(x, ddof=1)) if x.size >= 2 else None


def across_seeds(a_per_seed: Sequence[float] | np.ndarray, b_per_seed: Sequence[float] | np.ndarray) -> dict:
    """Compare one summary value per seed for systems A and B (same seeds, same order).

    Returns {"n_seeds", "mean_a", "std_a", "mean_b", "std_b", "mean_diff" (a - b), "std_diff", "p_value"}:
    stds are sample stds (ddof=1), None with one seed; p_value is a two-sided paired t-test over seeds,
    None with one seed, 1.0 when every difference is exactly zero.
    """
    a_arr, b_arr = _paired(a_per_seed, b_per_seed, min_n=1, unit="seeds")
    d = a_arr - b_arr
    if d.size < 2:
        p_value = None
    elif not np.any(d):
        p_value = 1.0
    else:
        p_value = float(scipy.stats.ttest_rel(a_arr, b_arr, alternative="two-sided").pvalue)
    return {
        "n_seeds": int(d.size),
        "mean_a": float(a_arr.mean()),
        "std_a": _std(a_arr),
        "mean_b": float(b_arr.mean()),
        "std_b": _std(b_arr),
        "mean_diff": float(d.mean()),
        "std_diff": _std(d),
        "p_value": p_value,
    }


def _direction(mean_diffs: Sequence[float]) -> str:
    """ "A higher" / "B higher" when every seed's mean difference (A - B) is > 0 / < 0, else "mixed"."""
    if all(m > 0 for m in mean_diffs):
        return "A higher"
    if all(m < 0 for m in mean_diffs):
        return "B higher"
    return "mixed"


def compare_conditions(
    per_seed: Mapping[int, Mapping[str, tuple[np.ndarray, np.ndarray]]], alpha: float = 0.05, method: str = "t"
) -> dict:
    """Compare system A vs B on several metrics, per seed (per-query tests) and across seeds.

    per_seed: seed -> metric -> (per-query values of A, per-query values of B); every seed must have the
    same metrics. Per seed: ``paired_test`` per metric, Holm across that seed's metrics. Across seeds:
    ``across_seeds`` on the per-seed means of each metric, Holm across metrics.
    Verdict per metric: "significant" when the per-query test is Holm-significant in every seed and the
    mean difference has the same sign in every seed, else "not significant"; direction "A higher",
    "B higher" or "mixed" (signs differ, or some seed's mean difference is exactly zero).
    Returns {"alpha", "method", "per_seed": {str(seed): {metric: {...paired_test..., "p_holm", "significant"}}},
    "across_seeds": {metric: {...across_seeds..., "p_holm", "significant"}},
    "verdict": {metric: {"verdict", "direction", "seeds_significant", "n_seeds"}}}.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    if not per_seed:
        raise ValueError("per_seed is empty; need at least one seed")
    seeds = list(per_seed)
    metrics = list(per_seed[seeds[0]])
    if not metrics:
        raise ValueError(f"seed {seeds[0]} has no metrics")
    for s in seeds[1:]:
        if set(per_seed[s]) != set(metrics):
            raise ValueError(
                f"seed {s} has metrics {sorted(per_seed[s])}, seed {seeds[0]} has {sorted(metrics)}; every seed "
                "needs the same metrics"
            )

    per_seed_out: dict[str, dict] = {}
    for s in seeds:
        tests = {}
        for m in metrics:
            a, b = per_seed[s][m]
            try:
                tests[m] = paired_test(a, b, method=method)
            except ValueError as e:
                raise ValueError(f"seed {s}, metric {m!r}: {e}") from e
        corrected = holm({m: tests[m]["p_value"] for m in metrics}, alpha=alpha)
        per_seed_out[str(s)] = {
            m: {**tests[m], "p_holm": corrected[m]["p_holm"], "significant": corrected[m]["significant"]}
            for m in metrics
        }

    seeds_out: dict[str, dict] = {}
    for m in metrics:
        seeds_out[m] = across_seeds(
            [per_seed_out[str(s)][m]["mean_a"] for s in seeds], [per_seed_out[str(s)][m]["mean_b"] for s in seeds]
        )
    corrected = holm({m: seeds_out[m]["p_value"] for m in metrics}, alpha=alpha)
    seeds_out = {
        m: {**seeds_out[m], "p_holm": corrected[m]["p_holm"], "significant": corrected[m]["significant"]}
        for m in metrics
    }

    verdict: dict[str, dict] = {}
    for m in metrics:
        rows = [per_seed_out[str(s)][m] for s in seeds]
        k = sum(1 for r in rows if r["significant"])
        direction = _direction([r["mean_diff"] for r in rows])
        ok = k == len(seeds) and direction != "mixed"
        verdict[m] = {
            "verdict": "significant" if ok else "not significant",
            "direction": direction,
            "seeds_significant": int(k),
            "n_seeds": len(seeds),
        }

    return {
        "alpha": float(alpha),
        "method": method,
        "per_seed": per_seed_out,
        "across_seeds": seeds_out,
        "verdict": verdict,
    }


def mean_std(values: Sequence[float] | np.ndarray) -> dict:
    """{"mean", "std" (sample std, ddof=1; None with one value), "n", "values": list of floats}."""
    arr = _as_vector(values, "values")
    if arr.size == 0:
        raise ValueError("values is empty")
    return {"mean": float(arr.mean()), "std": _std(arr), "n": int(arr.size), "values": [float(v) for v in arr]}
