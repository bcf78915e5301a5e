"""Faithfulness to the dense teacher (lsr_lib.analysis.faithfulness): top-k Kendall tau-b and per-query R@k
agreement."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy import stats

from lsr_lib.analysis import faithfulness as fa

DENSE = np.array([[0.9, 0.8, 0.7, 0.1, 0.0], [0.5, 0.4, 0.3, 0.2, 0.1], [0.9, 0.8, 0.7, 0.0, 0.0]])
SPARSE = np.array([[3.0, 1.0, 2.0, 10.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 2.0, 0.0, 0.0]])


def test_topk_indices_break_ties_by_lower_index():
    assert list(fa.topk_indices(np.array([1.0, 2.0, 2.0, 2.0, 0.0]), 2)) == [1, 2]
    assert list(fa.candidate_set(np.array([0.0, 0, 5, 4]), np.array([3.0, 2, 1, 0]), 2, "union")) == [0, 1, 2, 3]


@pytest.mark.parametrize("candidates, tau0", [("dense", 1 / 3), ("sparse", -1 / 3), ("union", -1 / 3)])
def test_per_query_tau_hand_case(candidates, tau0):
    taus = fa.per_query_kendall_tau(SPARSE, DENSE, k=3, candidates=candidates)
    assert taus[0] == pytest.approx(tau0)  # S(0) = {0,1,2}: two concordant pairs, one discordant
    assert np.isnan(taus[1])  # all-zero sparse row: constant, tau undefined
    if candidates == "dense":
        assert taus[2] == pytest.approx(-2 / math.sqrt(6))  # tau-b with one tied pair on the sparse side
        assert taus[2] == pytest.approx(stats.kendalltau([1.0, 1.0, 2.0], [0.9, 0.8, 0.7]).statistic)


def test_summary_counts_and_excludes_nan():
    out = fa.topk_kendall_tau(SPARSE, DENSE, k=3)
    assert out["n_queries"] == 3 and out["n_nan"] == 1 and out["n_defined"] == 2
    assert out["mean_tau"] == pytest.approx((1 / 3 - 2 / math.sqrt(6)) / 2)
    assert not any("p" == key[0] for key in out)  # no p-value of any kind
    assert math.isnan(fa.kendall_tau_summary(np.array([np.nan]))["mean_tau"])


def test_only_the_statistic_is_read(monkeypatch):
    class Result:
        def __init__(self, r):
            self.statistic = r.statistic

        @property
        def pvalue(self):
            raise AssertionError("p-value read")

        def __iter__(self):
            raise AssertionError("result unpacked (tau, p)")

    real = stats.kendalltau
    monkeypatch.setattr(fa.stats, "kendalltau", lambda *a, **kw: Result(real(*a, **kw)))
    taus = fa.per_query_kendall_tau(SPARSE, DENSE, k=3)
    assert taus[0] == pytest.approx(1 / 3)


def test_inputs_torch_sparse_and_shape_check():
    a = fa.per_query_kendall_tau(torch.tensor(SPARSE), sp.csr_matrix(DENSE), k=3)
    assert np.allclose(a, fa.per_query_kendall_tau(SPARSE, DENSE, k=3), equal_nan=True)
    with pytest.raises(ValueError):
        fa.per_query_kendall_tau(SPARSE, DENSE[:, :4])
    with pytest.raises(ValueError):
        fa.topk_kendall_tau(SPARSE, DENSE, candidates="both")


def test_rank_agreement_hand_case():
    sparse_r, dense_r = np.array([1, 3, 12, 1]), np.array([1, 1, 5, 20])
    t = fa.rank_agreement(sparse_r, dense_r, ks=(1, 5), rr_depth=10)
    assert list(t.index) == ["R@1", "R@5", "RR@10"]
    # R@1: sparse hits [1,0,0,1], dense [1,1,0,0] -> phi 0, agreement 1/2
    assert t.loc["R@1", "pearson"] == pytest.approx(0.0, abs=1e-12) and t.loc["R@1", "agreement"] == 0.5
    # R@5: sparse [1,1,0,1], dense [1,1,1,0] -> phi = -0.25 / 0.75
    assert t.loc["R@5", "pearson"] == pytest.approx(-1 / 3)
    assert t.loc["R@5", "sparse_mean"] == 0.75 and t.loc["R@5", "dense_mean"] == 0.75
    rr_s, rr_d = [1, 1 / 3, 0, 1], [1, 1, 1 / 5, 0]  # 1/rank within depth 10, else 0
    assert t.loc["RR@10", "pearson"] == pytest.approx(np.corrcoef(rr_s, rr_d)[0, 1])
    assert t.loc["RR@10", "spearman"] == pytest.approx(stats.spearmanr(rr_s, rr_d).statistic)
    const = fa.rank_agreement(np.array([1, 1, 1]), np.array([1, 2, 3]), ks=(1,))
    assert math.isnan(const.loc["R@1", "pearson"]) and const.loc["R@1", "agreement"] == pytest.approx(1 / 3)


def test_report_both_directions():
    rng = np.random.default_rng(0)
    image_ids = np.array(["a", "b", "c", "d"])
    text_image_ids = np.array(["a", "a", "b", "c", "d", "d"])
    dense = rng.random((6, 4))  # (N_txt, N_img)
    sparse = 2 * dense + 1  # monotone: the same ranking everywhere
    out = fa.faithfulness_report(torch.tensor(sparse, dtype=torch.float32), dense, text_image_ids, image_ids, k=3)
    assert set(out) == {"text_to_image", "image_to_text"}
    assert out["text_to_image"]["tau"]["mean_tau"] == pytest.approx(1.0)
    assert out["image_to_text"]["tau"]["n_queries"] == 4
    for d in out.values():
        assert (d["agreement"]["agreement"] == 1.0).all()
    noisy = dense + 0.3 * rng.random((6, 4))
    rep = fa.faithfulness_report(noisy, dense, text_image_ids, image_ids, k=3)
    assert rep["image_to_text"]["tau"]["mean_tau"] == pytest.approx(
        fa.topk_kendall_tau(noisy.T, dense.T, k=3)["mean_tau"]
    )
