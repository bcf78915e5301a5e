"""Dense-to-sparse distillation loss and sparsity regularisers (DESIGN.md section 2).

Loss: ``S = sparse_img @ sparse_txt.T`` (no temperature); teacher ``P = softmax(dense_img @
dense_txt.T / tau)`` with ``tau = 1e-3`` and no gradient; the loss is the mean of the soft-target
cross-entropy over rows (image -> text) and over columns (text -> image).

Regularisers: L1 = mean over the batch of the sum of weights; FLOPs (Paria et al. 2020, as in
SPLADE) = sum over terms of the squared mean activation. Their weight is warmed up
quadratically, ``w_t = w * min(1, t / T)^2``, with T the LR warm-up steps.

Everything here is computed in float32, also under mixed-precision autocast: teacher logits
divided by ``tau = 1e-3`` reach 1000 and lose their ranking in half precision.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-sum_j P_ij log softmax(logits)_ij``; (B, B), (B, B) -> scalar."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def distillation_loss(
    sparse_img: torch.Tensor,
    sparse_txt: torch.Tensor,
    dense_img: torch.Tensor,
    dense_txt: torch.Tensor,
    tau: float = 1e-3,
) -> torch.Tensor:
    """In-batch dense -> sparse distillation: (B, V), (B, V), (B, d), (B, d) -> scalar."""
    with torch.autocast(device_type=sparse_img.device.type, enabled=False):
        scores = sparse_img.float() @ sparse_txt.float().T  # (B_img, B_txt), no temperature
        with torch.no_grad():
            teacher = dense_img.float() @ dense_txt.float().T / tau  # (B_img, B_txt)
            p_i2t = torch.softmax(teacher, dim=1)  # each image's distribution over texts
            p_t2i = torch.softmax(teacher.T, dim=1)  # each text's distribution over images
        return 0.5 * (soft_cross_entropy(scores, p_i2t) + soft_cross_entropy(scores.T, p_t2i))


def l1_penalty(x: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the sum of term weights (non-negative, as log1p(relu)); (B, V) -> scalar."""
    return x.float().sum(dim=1).mean()  # no abs(): x >= 0, and abs + its backward cost ~4% of a CPU step


def flops_penalty(x: torch.Tensor) -> torch.Tensor:
    """Sum over terms of the squared mean activation (non-negative weights); (B, V) -> scalar."""
    return (x.float().mean(dim=0) ** 2).sum()


REGULARIZERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"l1": l1_penalty, "flops": flops_penalty}


def reg_weight(step: int, base: float, warmup_steps: int) -> float:
    """Quadratic warm-up ``base * min(1, step / T)^2``; ``base`` from the start when T <= 0."""
    if warmup_steps <= 0:
        return float(base)
    return float(base) * min(1.0, step / warmup_steps) ** 2
