"""SPLADE's max-pooled vocabulary layer with a backward pass that touches only the active terms.

``max_p log1p(relu(W h_p + b))`` over the positions ``p`` of a text or the patches of an image is the
document (or query) vector of an MLM encoder (stage 05). Written with autograd, the backward pass costs
two more dense (B*L, H) x (H, V) products, although the gradient reaches only the position that wins the
max of each (row, term), and only where the term is active (``relu`` passes nothing back below zero):
with the bias shifted so that a few hundred of 30,522 terms fire, that is under 1% of the pairs.

:func:`max_pooled_log_saturation` computes the forward pass in vocabulary chunks (the (B, L, V) scores
never exist at once), keeps the winning position of each (row, term), and in the backward pass gathers
those positions' states for the active pairs only. The values and gradients are those of the dense
formula (tested against it); ties between positions send the gradient to the first winner.
"""

from __future__ import annotations

from typing import Optional

import torch

VOCAB_CHUNK = 4096  # vocabulary rows per forward matmul: (B*L, 4096) scores at a time
PAIR_CHUNK = 1 << 16  # active (row, term) pairs per backward gather: bounds memory when many terms fire


class _MaxPooledLogSaturation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mask: Optional[torch.Tensor]):
        B, L, _ = h.shape
        V = weight.shape[0]
        zmax = torch.empty(B, V, dtype=torch.float32, device=h.device)
        arg = torch.empty(B, V, dtype=torch.long, device=h.device)
        hidden = ~mask.bool() if mask is not None else None
        for s in range(0, V, VOCAB_CHUNK):
            z = torch.matmul(h, weight[s : s + VOCAB_CHUNK].T) + bias[s : s + VOCAB_CHUNK]  # (B, L, c)
            if hidden is not None:
                z = z.masked_fill(hidden[..., None], float("-inf"))
            best = z.max(dim=1)
            zmax[:, s : s + VOCAB_CHUNK] = best.values.float()
            arg[:, s : s + VOCAB_CHUNK] = best.indices
        ctx.save_for_backward(h, weight, zmax, arg)
        ctx.dtypes = (h.dtype, weight.dtype, bias.dtype)
        return torch.log1p(torch.relu(zmax))

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        h, weight, zmax, arg = ctx.saved_tensors
        B, L, H = h.shape
        gz = torch.where(zmax > 0, grad_out.float() / (1.0 + zmax.clamp_min(0)), torch.zeros_like(zmax))
        grad_bias = gz.sum(0)
        rows, terms = gz.nonzero(as_tuple=True)
        grad_h = torch.zeros(B * L, H, dtype=torch.float32, device=h.device)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device)
        flat_h = h.reshape(B * L, H).float()
        for s in range(0, len(rows), PAIR_CHUNK):
            r, t = rows[s : s + PAIR_CHUNK], terms[s : s + PAIR_CHUNK]
            g = gz[r, t][:, None]  # (n, 1)
            at = r * L + arg[r, t]  # the winning position of each active pair, as a row of flat_h
            grad_w.index_add_(0, t, g * flat_h[at])
            grad_h.index_add_(0, at, g * weight[t].float())
        dh, dw, db = ctx.dtypes
        return grad_h.reshape(B, L, H).to(dh), grad_w.to(dw), grad_bias.to(db), None


def max_pooled_log_saturation(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``(B, L, H)`` states -> ``(B, V)``: ``max over unmasked p of log1p(relu(h_p @ weight.T + bias))``, fp32.

    A row whose positions are all masked gives zeros.
    """
    return _MaxPooledLogSaturation.apply(h, weight, bias, mask)
