"""Paired significance tests (lsr_lib.metrics.significance): numbers checked by hand and against scipy."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import scipy.stats

from lsr_lib.metrics.significance import across_seeds, compare_conditions, holm, mean_std, paired_test

# Small worked example: differences d = a - b = [0.1, 0.2, 0.05, -0.05, 0.2].
A5 = np.array([0.5, 0.7, 0.9, 0.4, 0.8])
B5 = np.array([0.4, 0.5, 0.85, 0.45, 0.6])


def _hand_t(a, b) -> tuple[float, float, int]:
    """t statistic, standard error and df of the paired differences, with plain arithmetic."""
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    se = sd / math.sqrt(n)
    return mean / se, se, n - 1


def _shifted(seed: int, shift: float, n: int = 200, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) with b = a - shift + N(0, noise) per query."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 1, n)
    return a, a - shift + rng.normal(0, noise, n)


# --- paired_test, method "t" -------------------------------------------------------------------


def test_t_matches_hand_computation_and_scipy():
    r = paired_test(A5, B5, method="t")
    t, se, df = _hand_t(A5, B5)
    # mean 0.1, sd sqrt(0.045 / 4) = 0.1060660, se = 0.0474342, t = 2.1081851
    assert t == pytest.approx(2.1081851, abs=1e-6)
    assert r["statistic"] == pytest.approx(t, rel=1e-10)
    assert r["p_value"] == pytest.approx(2 * scipy.stats.t.sf(t, df), rel=1e-10)
    assert r["p_value"] == pytest.approx(scipy.stats.ttest_rel(A5, B5).pvalue, rel=1e-12)
    assert r["p_value"] == pytest.approx(0.1026, abs=5e-4)
    assert r["n"] == 5 and r["method"] == "t"
    assert r["mean_a"] == pytest.approx(0.66) and r["mean_b"] == pytest.approx(0.56)
    assert r["mean_diff"] == pytest.approx(0.1)
    half = scipy.stats.t.ppf(0.975, df) * se  # 2.7764451 * 0.0474342
    assert r["ci95"] == pytest.approx([0.1 - half, 0.1 + half], rel=1e-9)
    assert r["ci95"] == pytest.approx([-0.031697, 0.231697], abs=1e-5)


def test_t_sign_follows_a_minus_b():
    r = paired_test(B5, A5)
    assert r["mean_diff"] == pytest.approx(-0.1)
    assert r["statistic"] == pytest.approx(-2.1081851, abs=1e-6)
    assert r["p_value"] == pytest.approx(paired_test(A5, B5)["p_value"])


def test_clear_shift_is_significant():
    a, b = _shifted(seed=1, shift=0.3)
    r = paired_test(a, b)
    assert r["mean_diff"] == pytest.approx(0.3, abs=0.02)
    assert r["p_value"] < 1e-10
    assert r["ci95"][0] > 0.28 and r["ci95"][1] < 0.32


def test_no_shift_is_not_significant():
    a, b = _shifted(seed=2, shift=0.0)
    assert paired_test(a, b)["p_value"] > 0.05


@pytest.mark.parametrize("method", ["t", "randomization"])
def test_identical_arrays_give_p_one(method):
    a = np.random.default_rng(0).uniform(0, 1, 50)
    r = paired_test(a, a.copy(), method=method)
    assert r["p_value"] == 1.0 and r["statistic"] == 0.0
    assert r["mean_diff"] == 0.0 and r["ci95"] == [0.0, 0.0]


# --- paired_test, method "randomization" -------------------------------------------------------


def test_randomization_exact_on_small_example():
    """n = 5: 2**5 sign flips <= n_resamples, so scipy enumerates them; count them by hand."""
    d = A5 - B5
    observed = abs(d.mean())
    flips = list(itertools.product([1, -1], repeat=5))
    extreme = sum(1 for s in flips if abs(np.mean(d * np.array(s))) >= observed - 1e-12)
    r = paired_test(A5, B5, method="randomization")
    assert r["p_value"] == pytest.approx(extreme / len(flips))
    assert r["p_value"] == pytest.approx(6 / 32)  # sums >= 0.5 in absolute value: 3 sign patterns each side
    assert r["statistic"] == pytest.approx(0.1)
    assert r["ci95"] == pytest.approx(paired_test(A5, B5, method="t")["ci95"])


def test_randomization_close_to_t_on_normal_data():
    n = 150
    rng = np.random.default_rng(7)
    z = rng.normal(0, 1, n)
    d = (z - z.mean()) / z.std(ddof=1) * 0.2 + 1.8 * 0.2 / math.sqrt(n)  # normal differences with t = 1.8 exactly
    a = rng.normal(0.5, 0.2, n)
    b = a - d
    p_t = paired_test(a, b, method="t")["p_value"]
    p_r = paired_test(a, b, method="randomization", n_resamples=10000, seed=3)["p_value"]
    assert p_t == pytest.approx(2 * scipy.stats.t.sf(1.8, n - 1))  # ~0.074: a p where the two could visibly disagree
    assert p_r == pytest.approx(p_t, abs=0.02)


def test_randomization_reproducible_with_seed():
    rng = np.random.default_rng(11)
    a = rng.normal(0, 1, 60)
    b = a - rng.normal(0.2, 1, 60)
    r1 = paired_test(a, b, method="randomization", n_resamples=2000, seed=5)
    r2 = paired_test(a, b, method="randomization", n_resamples=2000, seed=5)
    assert r1 == r2
    r3 = paired_test(a, b, method="randomization", n_resamples=2000, seed=6)
    assert r3["p_value"] != r1["p_value"]  # Monte-Carlo p-values differ with another seed


# --- paired_test, input checks -----------------------------------------------------------------


def test_nan_and_inf_raise_with_count():
    a = np.array([0.1, np.nan, 0.3, np.inf, np.nan])
    with pytest.raises(ValueError, match=r"\b3 non-finite"):
        paired_test(a, np.zeros(5))
    with pytest.raises(ValueError, match=r"b has 1 non-finite"):
        paired_test(np.zeros(5), np.array([0.0, 0.0, -np.inf, 0.0, 0.0]))


def test_length_mismatch_and_too_few_queries_raise():
    with pytest.raises(ValueError, match="different lengths"):
        paired_test(np.zeros(4), np.zeros(5))
    with pytest.raises(ValueError, match="at least 2"):
        paired_test(np.zeros(1), np.zeros(1))
    with pytest.raises(ValueError, match="unknown method"):
        paired_test(A5, B5, method="wilcoxon-ish")


# --- holm --------------------------------------------------------------------------------------


def test_holm_hand_worked_example():
    # sorted: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 -> monotone max 0.06
    out = holm({"R@1": 0.01, "R@5": 0.04, "R@10": 0.03})
    assert list(out) == ["R@1", "R@5", "R@10"]
    assert [out[k]["p_holm"] for k in out] == pytest.approx([0.03, 0.06, 0.06])
    assert [out[k]["significant"] for k in out] == [True, False, False]
    assert out["R@5"]["p_value"] == 0.04


def test_holm_nan_passes_through():
    out = holm({"a": 0.01, "b": float("nan"), "c": 0.02})
    assert math.isnan(out["b"]["p_holm"]) and out["b"]["significant"] is False
    # family of two without the NaN: 0.01 * 2 = 0.02, 0.02 * 1 -> max(0.02, 0.02)
    assert out["a"]["p_holm"] == pytest.approx(0.02) and out["c"]["p_holm"] == pytest.approx(0.02)
    assert holm({}) == {}


def test_holm_rejects_out_of_range():
    with pytest.raises(ValueError, match="outside"):
        holm({"a": 1.5})


# --- across_seeds / mean_std -------------------------------------------------------------------


def test_across_seeds_hand_example():
    r = across_seeds([0.5, 0.6, 0.7], [0.4, 0.45, 0.65])  # d = [0.1, 0.15, 0.05]
    assert r["n_seeds"] == 3
    assert r["mean_diff"] == pytest.approx(0.1) and r["std_diff"] == pytest.approx(0.05)
    assert r["mean_a"] == pytest.approx(0.6) and r["std_a"] == pytest.approx(0.1)
    t = 0.1 / (0.05 / math.sqrt(3))
    assert r["p_value"] == pytest.approx(2 * scipy.stats.t.sf(t, 2))
    assert r["p_value"] == pytest.approx(0.0742, abs=5e-4)


def test_across_seeds_one_seed_and_equal():
    r = across_seeds([0.5], [0.4])
    assert r["std_a"] is None and r["std_diff"] is None and r["p_value"] is None
    assert r["mean_diff"] == pytest.approx(0.1)
    assert across_seeds([0.5, 0.6], [0.5, 0.6])["p_value"] == 1.0


def test_mean_std():
    r = mean_std(np.array([1.0, 2.0, 4.0]))
    assert r == {
        "mean": pytest.approx(7 / 3),
        "std": pytest.approx(math.sqrt(7 / 3)),
        "n": 3,
        "values": [1.0, 2.0, 4.0],
    }
    assert all(type(v) is float for v in r["values"])
    assert mean_std([3.0])["std"] is None


# --- compare_conditions ------------------------------------------------------------------------


def _conditions(shifts: dict[int, float]) -> dict[int, dict[str, tuple[np.ndarray, np.ndarray]]]:
    return {s: {"R@1": _shifted(100 + s, sh), "MRR@10": _shifted(200 + s, sh / 2)} for s, sh in shifts.items()}


def test_compare_all_seeds_agree_is_significant():
    out = compare_conditions(_conditions({0: 0.1, 1: 0.12, 2: 0.09}))
    for m in ("R@1", "MRR@10"):
        v = out["verdict"][m]
        assert v == {"verdict": "significant", "direction": "A higher", "seeds_significant": 3, "n_seeds": 3}
        assert out["across_seeds"][m]["n_seeds"] == 3 and out["across_seeds"][m]["mean_diff"] > 0
    assert set(out["per_seed"]) == {"0", "1", "2"}
    row = out["per_seed"]["1"]["R@1"]
    assert row["p_holm"] >= row["p_value"] and row["significant"] is True
    assert row["p_value"] == pytest.approx(paired_test(*_shifted(101, 0.12))["p_value"])


def test_compare_one_seed_disagrees_in_sign_is_not_significant():
    out = compare_conditions(_conditions({0: 0.1, 1: 0.1, 2: -0.1}))
    v = out["verdict"]["R@1"]
    assert v["verdict"] == "not significant" and v["direction"] == "mixed"
    assert v["seeds_significant"] == 3  # each seed is significant on its own; the sign rule decides


def test_compare_one_seed_not_significant():
    per_seed = _conditions({0: 0.1, 1: 0.1})
    a = np.random.default_rng(9).uniform(0, 1, 200)
    e = np.random.default_rng(10).normal(0, 0.3, 200)
    e -= e.mean()  # mean difference exactly 0.01 (same sign as the other seeds), t about 0.5
    per_seed[2] = {"R@1": (a, a - 0.01 + e), "MRR@10": (a, a.copy())}
    out = compare_conditions(per_seed)
    assert out["verdict"]["R@1"]["seeds_significant"] == 2
    assert out["verdict"]["R@1"]["verdict"] == "not significant" and out["verdict"]["R@1"]["direction"] == "A higher"
    assert (
        out["per_seed"]["2"]["R@1"]["mean_diff"] == pytest.approx(0.01) and out["per_seed"]["2"]["R@1"]["p_value"] > 0.5
    )
    assert out["per_seed"]["2"]["MRR@10"]["p_value"] == 1.0


def test_compare_output_is_json_serialisable():
    out = compare_conditions(_conditions({0: 0.1, 1: -0.05}), method="randomization")
    back = json.loads(json.dumps(out, allow_nan=False))
    assert back["method"] == "randomization" and back["alpha"] == 0.05
    assert back["verdict"]["R@1"]["direction"] == "mixed"
    one = compare_conditions(_conditions({3: 0.1}))  # one seed: across-seeds p is None, holm passes it through
    assert one["across_seeds"]["R@1"]["p_value"] is None and one["across_seeds"]["R@1"]["significant"] is False
    json.dumps(one, allow_nan=False)


def test_compare_mismatched_metrics_raise():
    per_seed = _conditions({0: 0.1, 1: 0.1})
    del per_seed[1]["MRR@10"]
    with pytest.raises(ValueError, match="same metrics"):
        compare_conditions(per_seed)
