"""The max-pooled vocabulary layer of the MLM encoders (lsr_lib/sparse/max_pool.py) gives the dense
formula's values and gradients, with masks, inactive terms and vocabulary / pair chunks."""

from __future__ import annotations

import pytest
import torch

from lsr_lib.sparse import max_pool
from lsr_lib.sparse.max_pool import max_pooled_log_saturation
from lsr_lib.sparse.suggest_encoders import SuggestModel


def dense(h, weight, bias, mask):
    w = torch.log1p(torch.relu(h @ weight.T + bias))
    if mask is not None:
        w = w * mask[..., None].to(w.dtype)
    return w.amax(dim=1)


def inputs(seed=0, B=5, L=7, H=6, V=23):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B, L, H, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(V, H, generator=g, dtype=torch.float64, requires_grad=True)
    bias = (torch.randn(V, generator=g, dtype=torch.float64) - 1.0).requires_grad_()  # some terms never fire
    mask = torch.rand(B, L, generator=g) > 0.3
    mask[0] = False  # a row with nothing unmasked: zeros
    mask[1] = True
    return h, weight, bias, mask


@pytest.mark.parametrize("use_mask", [True, False])
@pytest.mark.parametrize("chunks", [(4096, 1 << 16), (5, 3)])
def test_values_and_gradients_are_the_dense_formulas(monkeypatch, use_mask, chunks):
    monkeypatch.setattr(max_pool, "VOCAB_CHUNK", chunks[0])
    monkeypatch.setattr(max_pool, "PAIR_CHUNK", chunks[1])
    h, weight, bias, mask = inputs()
    mask = mask if use_mask else None
    upstream = torch.randn(h.shape[0], weight.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = max_pooled_log_saturation(h, weight, bias, mask)
    grads = torch.autograd.grad((got * upstream).sum(), (h, weight, bias))
    want = dense(h, weight, bias, mask)
    ref = torch.autograd.grad((want * upstream).sum(), (h, weight, bias))
    assert 0 < int((want > 0).sum()) < want.numel()  # active and inactive terms both present
    if use_mask:
        assert torch.equal(got[0], torch.zeros_like(got[0]))
    torch.testing.assert_close(got, want.float(), rtol=1e-6, atol=1e-6)
    for a, b, name in zip(grads, ref, ("states", "weight", "bias")):
        assert a.abs().sum() > 0, name
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_a_wrong_winner_would_be_caught(monkeypatch):
    """The check above fails if the backward pass sends the gradient to another position."""
    h, weight, bias, mask = inputs()
    got = max_pooled_log_saturation(h, weight, bias, None)
    (gh,) = torch.autograd.grad(got.sum(), (h,))
    (ref,) = torch.autograd.grad(dense(h, weight, bias, None).sum(), (h,))
    assert not torch.allclose(gh.roll(1, dims=1), ref)


def test_the_mlm_encoders_match_the_dense_head():
    """M1's image documents and M2's text: the encoder equals head(states) * mask, max-pooled."""
    torch.manual_seed(0)
    for config in ("M1", "M2"):
        model = SuggestModel(config)
        enc = model.doc_encoder
        states = torch.randn(3, 5, enc.head.proj.in_features)
        mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
        want = (enc.head(states) * mask[..., None]).amax(dim=1)
        assert (want > 0).any()
        torch.testing.assert_close(enc(states, mask), want, rtol=1e-5, atol=1e-5)
