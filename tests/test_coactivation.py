"""Co-activation breakdown (lsr_lib.analysis.coactivation) against brute-force counts on tiny CSR matrices."""

import itertools

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import scipy.sparse as sp

from lsr_lib.analysis import coactivation as co
from lsr_lib.metrics.sparse_stats import coactivation_flops


class FakeTokenizer:
    """Term i is the string 't<i>'."""

    def convert_ids_to_tokens(self, ids):
        return [f"t{i}" for i in ids]


TOK = FakeTokenizer()


@pytest.fixture
def qd():
    rng = np.random.default_rng(0)
    q = rng.random((7, 12)) * (rng.random((7, 12)) < 0.4)  # (N_q, V)
    d = rng.random((9, 12)) * (rng.random((9, 12)) < 0.5)  # (N_d, V)
    q[:, 3] = 0.5  # term 3 active in every query
    d[:, 3] = 0.5
    qs, ds = sp.csr_matrix(q), sp.csr_matrix(d)
    qs.data[np.flatnonzero(qs.indices != 3)[0]] = 0.0  # an explicit stored zero must not count
    return qs, ds


def brute_df(x) -> np.ndarray:
    a = x.toarray()
    return np.array([sum(1 for r in range(a.shape[0]) if a[r, v] != 0) for v in range(a.shape[1])])


def test_df_table_matches_brute_force(qd):
    q, _ = qd
    df = brute_df(q)
    t = co.term_df_table(q, TOK)
    assert list(t["df"]) == sorted(df[df > 0], reverse=True)
    for _, r in t.iterrows():
        assert r["df"] == df[r["term_id"]] and r["term"] == f"t{r['term_id']}"
        assert r["df_share"] == pytest.approx(df[r["term_id"]] / q.shape[0])
    assert len(co.term_df_table(q, TOK, active_only=False)) == q.shape[1]


def test_flops_contributions_and_shares_match_brute_force(qd):
    q, d = qd
    qa, da = q.toarray() != 0, d.toarray() != 0
    # brute force: for every (query, document) pair and term, count co-active terms
    per_term = np.zeros(q.shape[1])
    for i, j in itertools.product(range(q.shape[0]), range(d.shape[0])):
        per_term += qa[i] & da[j]
    per_term /= q.shape[0] * d.shape[0]
    total = per_term.sum()
    assert coactivation_flops(q, d) == pytest.approx(total)
    top = co.top_coactivated_terms(q, d, TOK, k=5)
    assert len(top) == 5 and top["term_id"].iloc[0] == 3
    assert list(top["flops_contribution"]) == pytest.approx(sorted(per_term, reverse=True)[:5])
    for _, r in top.iterrows():
        assert r["flops_contribution"] == pytest.approx(per_term[r["term_id"]])
        assert r["flops_share"] == pytest.approx(per_term[r["term_id"]] / total)
    assert top["cumulative_flops_share"].iloc[-1] == pytest.approx(top["flops_share"].sum())
    full = co.top_coactivated_terms(q, d, TOK, k=100)
    assert full["flops_share"].sum() == pytest.approx(1.0)


def test_high_df_terms_strict_thresholds():
    x = sp.csr_matrix(
        np.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 0, 0, 0, 0], [1, 0, 0, 0, 0]], float)
    )
    # df shares: 1.0, 0.4, 0.2, 0, 0
    t = co.high_df_terms(x, thresholds=(0.2, 0.5)).set_index("threshold")
    assert t.loc[0.2, "n_terms"] == 2  # 0.2 itself is not "more than 20%"
    assert t.loc[0.5, "n_terms"] == 1
    assert t.loc[0.5, "share_of_vocabulary"] == pytest.approx(1 / 5)
    assert t.loc[0.2, "share_of_active_terms"] == pytest.approx(2 / 3)


def test_coactivation_matrix_matches_brute_force(qd):
    q, _ = qd
    a = q.toarray() != 0
    ids = [3, 0, 7, 11]
    m = co.coactivation_matrix(q, ids)
    for (x, u), (y, v) in itertools.product(enumerate(ids), repeat=2):
        assert m[x, y] == pytest.approx(np.mean(a[:, u] & a[:, v]))
    assert np.allclose(m, m.T)
    frame = co.top_term_coactivation(q, TOK, k=3)
    top3 = co.term_df_table(q, TOK)["term_id"].head(3)
    assert list(frame.index) == [f"t{i}" for i in top3]
    assert np.diag(frame.to_numpy()) == pytest.approx(brute_df(q)[top3.to_numpy()] / q.shape[0])


def test_plots_return_figures(qd):
    q, d = qd
    fig = co.plot_df_curves({"queries": q, "documents": d}, title="df")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log" and len(ax.get_lines()) >= 2
    assert ax.get_lines()[0].get_ydata()[0] == pytest.approx(1.0)  # term 3: in every query
    fig2 = co.plot_coactivation_heatmap(co.top_term_coactivation(q, TOK, k=4), annotate=True)
    assert len(fig2.axes) == 2  # heatmap + colour bar
    import matplotlib.pyplot as plt

    plt.close(fig)
    plt.close(fig2)
