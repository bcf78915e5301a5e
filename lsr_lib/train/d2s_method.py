"""The Dense2Sparse method on one screen: distillation loss, sparsity regulariser, expansion gate.

Paper: Nguyen, Hendriksen, Yates, de Rijke, "Multimodal Learned Sparse Retrieval with Probabilistic
Expansion Control", ECIR 2024, arXiv 2402.17535 (the method: its section 3). The exact choices made
here are DESIGN.md section 2, cited as "s2" below; the paper's own equation numbers are not quoted
(its text is not readable on these machines). Read from the top:

1. the loss: in-batch dense -> sparse distillation, ``S = sparse_img @ sparse_txt.T`` against the
   teacher ``softmax(dense_img @ dense_txt.T / tau)``, soft cross-entropy in both directions;
2. the regulariser: L1 or FLOPs on both sides, weight warmed up quadratically;
3. the objective of one training step: 1 + 2;
4. the expansion gate: ``z ~ Bernoulli(p)`` per batch (paper) or per example; ``z = 1`` masks a
   text vector to its caption's own tokens (no expansion), ``z = 0`` leaves it fully expanded.

Around it: the head ``e -> log(1 + relu(W2 LN(W1 e)))`` is :mod:`lsr_lib.sparse.head`; the caption
masks (``caption_token_masks``, ``dense_masks``) are :mod:`lsr_lib.sparse.expansion_control`; the
schedule ``p(epoch)`` is :mod:`lsr_lib.config.expansion_schedule` (``D2SConfig.p``); the loop that
puts them together is :func:`lsr_lib.train.d2s.train_d2s`.

The loss and the penalties are computed in float32, also under mixed-precision autocast: teacher
logits divided by ``tau = 1e-3`` reach 1000 and lose their ranking in half precision.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..config.d2s import D2SConfig
from ..config.expansion_schedule import GATE_MODES
from ..sparse.expansion_control import dense_masks

# ---- 1. the loss (s2 "Loss") ------------------------------------------------------------------------


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
        scores = sparse_img.float() @ sparse_txt.float().T  # (B_img, B_txt) S, no temperature (s2)
        with torch.no_grad():  # the teacher gets no gradient (s2)
            teacher = dense_img.float() @ dense_txt.float().T / tau  # (B_img, B_txt), tau = 1e-3 (s2)
            p_i2t = torch.softmax(teacher, dim=1)  # (B, B) each image's distribution over texts
            p_t2i = torch.softmax(teacher.T, dim=1)  # (B, B) each text's distribution over images
        # mean of the soft-target cross-entropy image -> text (rows) and text -> image (columns) (s2)
        return 0.5 * (soft_cross_entropy(scores, p_i2t) + soft_cross_entropy(scores.T, p_t2i))


# ---- 2. the regulariser (s2 "Sparsity") -------------------------------------------------------------


def l1_penalty(x: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the sum of term weights (non-negative, as log1p(relu)); (B, V) -> scalar."""
    return x.float().sum(dim=1).mean()  # no abs(): x >= 0, and abs + its backward cost ~4% of a CPU step


def flops_penalty(x: torch.Tensor) -> torch.Tensor:
    """Sum over terms of the squared mean activation (Paria et al. 2020, as in SPLADE); (B, V) -> scalar."""
    return (x.float().mean(dim=0) ** 2).sum()  # (V,) mean activation per term, squared, summed


REGULARIZERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"l1": l1_penalty, "flops": flops_penalty}


def reg_weight(step: int, base: float, warmup_steps: int) -> float:
    """Quadratic warm-up ``w_t = w * min(1, t / T)^2`` (s2, T = LR warm-up steps); ``w`` from the start when T <= 0."""
    if warmup_steps <= 0:
        return float(base)
    return float(base) * min(1.0, step / warmup_steps) ** 2


# ---- 3. the objective of one step -------------------------------------------------------------------


def d2s_objective(
    sparse_img: torch.Tensor,
    sparse_txt: torch.Tensor,
    dense_img: torch.Tensor,
    dense_txt: torch.Tensor,
    cfg: D2SConfig,
    step: int,
    warmup_steps: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, distillation, regulariser): loss = distillation + w_t^img R(sparse_img) + w_t^txt R(sparse_txt)."""
    penalty = REGULARIZERS[cfg.regularizer]  # R: L1 (paper) or FLOPs
    distill = distillation_loss(sparse_img, sparse_txt, dense_img, dense_txt, cfg.teacher_tau)  # scalar
    reg = reg_weight(step, cfg.reg_weight_image, warmup_steps) * penalty(sparse_img)  # 1e-3 each side (s2)
    reg = reg + reg_weight(step, cfg.reg_weight_text, warmup_steps) * penalty(sparse_txt)
    return distill + reg, distill, reg


# ---- 4. the expansion gate (s2 "Expansion control") -------------------------------------------------


class ExpansionGate:
    """Draws ``z ~ Bernoulli(p)`` once per batch (paper) or once per example, from its own generator.

    Its stream is separate from the data shuffle's, so switching control on or off never changes
    the order in which the training pairs are visited. Image vectors are never masked, and
    evaluation uses full expansion (s2).
    """

    def __init__(self, mode: str = "batch", seed: int = 0) -> None:
        if mode not in GATE_MODES:
            raise ValueError(f"unknown gate mode {mode!r}; known: {', '.join(GATE_MODES)}")
        self.mode = mode
        self.generator = torch.Generator().manual_seed(seed)  # CPU stream used only by the gate

    def draw(self, p: float, batch_size: int) -> torch.Tensor:
        """(B,) bool: True = this text is masked to its own tokens (no expansion)."""
        n = 1 if self.mode == "batch" else batch_size
        z = torch.rand(n, generator=self.generator) < p  # (1,) or (B,); always draws: the stream is the same for any p
        return z.expand(batch_size) if self.mode == "batch" else z

    def text_masks(self, z: torch.Tensor, mask_ids: torch.Tensor, vocab_size: int) -> Optional[torch.Tensor]:
        """(B, V) masks for ``encode_text``: caption mask where z, all ones where not; None if no z."""
        if not bool(z.any()):
            return None  # full expansion for the whole batch
        masks = dense_masks(mask_ids, vocab_size)  # (B, V) 0/1: the caption's own tokens
        if bool(z.all()):
            return masks
        keep = (~z).to(masks.device, masks.dtype).unsqueeze(1)  # (B, 1): 1 = expand
        return torch.maximum(masks, keep.expand_as(masks))  # (B, V)

    def state_dict(self) -> dict:
        """Resumable state of the gate's generator."""
        return {"mode": self.mode, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.mode = state["mode"]
        self.generator.set_state(state["generator"])
