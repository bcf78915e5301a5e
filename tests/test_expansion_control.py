"""Expansion control (DESIGN.md section 2): caption masks, p schedules, the Bernoulli gate."""

from __future__ import annotations

import pytest
import torch

from lsr_lib.sparse.expansion_control import (
    SCHEDULES,
    bert_uncased_tokenizer,
    caption_token_masks,
    dense_masks,
    expansion_probability,
)
from lsr_lib.train.d2s_method import ExpansionGate


def test_caption_masks_from_real_wordpiece_tokenizer():
    tok = bert_uncased_tokenizer("minilm")
    texts = ["A dog on a skateboard", "grinning face"]
    ids = caption_token_masks(texts, tok)
    masks = dense_masks(ids, len(tok))  # (2, 30522)
    for row, text in zip(masks, texts):
        own = set(tok(text, add_special_tokens=False)["input_ids"])
        assert set(torch.nonzero(row).flatten().tolist()) == own
    for special in (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id):
        assert masks[:, special].sum() == 0
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    assert (ids[1] >= 0).sum() == 2  # "grinning", "face"


def test_dense_masks_padding_never_clears_a_real_id():
    m = dense_masks(torch.tensor([[0, -1, -1], [4, 2, -1], [-1, -1, -1]]), 5)
    assert m.tolist() == [[1, 0, 0, 0, 0], [0, 0, 1, 0, 1], [0, 0, 0, 0, 0]]


def test_dense_masks_rejects_ids_beyond_vocab():
    with pytest.raises(ValueError, match="vocabulary size"):
        dense_masks(torch.tensor([[3, 9]]), 5)


def test_linear_schedule_as_in_paper():
    for total in (1, 10, 20, 40, 200):
        assert expansion_probability("linear", 0, total) == 1.0
        end = 0.95 * total
        for e in range(total):
            p = expansion_probability("linear", e, total)
            if e >= end:
                assert p == 0.0
            else:
                assert p == pytest.approx(1 - e / end)
    ps = [expansion_probability("linear", e, 20) for e in range(20)]
    assert all(a > b for a, b in zip(ps[:19], ps[1:19]))  # strictly falling after each epoch until 0
    assert ps[19] == 0.0 and ps[18] > 0


def test_other_schedules():
    assert all(expansion_probability("constant", e, 10, p0=0.0) == 0.0 for e in range(10))
    assert all(expansion_probability("constant", e, 10, p0=0.3) == 0.3 for e in range(10))
    assert expansion_probability("cosine", 0, 20) == 1.0
    assert expansion_probability("cosine", 19, 20) == 0.0
    cos = [expansion_probability("cosine", e, 20) for e in range(20)]
    assert all(a >= b for a, b in zip(cos, cos[1:]))
    step = [expansion_probability("step", e, 20, step_every=0.25, step_gamma=0.5) for e in range(20)]
    assert step[:5] == [1.0] * 5 and step[5:10] == [0.5] * 5 and step[10] == 0.25 and step[19] == 0.0


def test_unknown_schedule_lists_names():
    with pytest.raises(ValueError) as e:
        expansion_probability("exponential", 0, 10)
    for name in SCHEDULES:
        assert name in str(e.value)


def test_gate_extremes_and_modes():
    gate = ExpansionGate("batch", seed=0)
    assert not gate.draw(0.0, 8).any() and gate.draw(1.0, 8).all()
    z = gate.draw(0.5, 64)
    assert z.shape == (64,) and (z.all() or not z.any())  # one z per batch
    per_ex = ExpansionGate("example", seed=0)
    draws = torch.stack([per_ex.draw(0.5, 64) for _ in range(10)])
    assert 0.3 < draws.float().mean() < 0.7 and not all(r.all() or not r.any() for r in draws)
    with pytest.raises(ValueError, match="batch, example"):
        ExpansionGate("token")


def test_gate_masks_rows_only_where_z():
    gate = ExpansionGate("example", seed=0)
    ids = torch.tensor([[1, 2, -1], [3, -1, -1]])
    m = gate.text_masks(torch.tensor([True, False]), ids, 6)
    assert m[0].tolist() == [0, 1, 1, 0, 0, 0] and m[1].tolist() == [1] * 6
    assert gate.text_masks(torch.tensor([False, False]), ids, 6) is None


def test_gate_stream_is_separate_from_data_order():
    """Switching control on or off must not change which examples the data generator draws."""

    def data_order(schedule: str) -> list:
        data_gen, gate = torch.Generator().manual_seed(7), ExpansionGate("batch", seed=3)
        orders = []
        for epoch in range(5):
            p = expansion_probability(schedule, epoch, 5, p0=0.0 if schedule == "constant" else 1.0)
            perm = torch.randperm(20, generator=data_gen)
            for b in range(4):
                gate.draw(p, 5)
            orders.append(perm.tolist())
        return orders

    assert data_order("constant") == data_order("linear")


def test_gate_state_roundtrip():
    a = ExpansionGate("example", seed=5)
    a.draw(0.5, 10)
    state = a.state_dict()
    b = ExpansionGate("example", seed=99)
    b.load_state_dict(state)
    assert torch.equal(a.draw(0.5, 10), b.draw(0.5, 10))
