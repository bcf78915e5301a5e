"""Probabilistic expansion control for D2S training (DESIGN.md section 2, paper A section 3).

A text vector may be restricted to its caption's own WordPiece ids (a 0/1 mask over the
vocabulary). Each training batch draws ``z ~ Bernoulli(p)``: ``z = 1`` gives the masked (no
expansion) text vector, ``z = 0`` the fully expanded one; image vectors are never masked and
evaluation uses full expansion. ``p`` follows a named schedule of the epoch: ``linear`` (the
paper: 1.0 at the first epoch, falling linearly after each epoch to 0 at 95% of the epochs),
``constant`` (``p0 = 0`` is "without expansion control"), ``cosine`` or ``step``.

The gate draws from its *own* generator, so switching control on or off never changes the order
in which the training data are visited (the data shuffle has its own generator).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..config.expansion_schedule import GATE_MODES, SCHEDULES, expansion_probability  # noqa: F401 (the method's public names)


def caption_token_masks(texts: Sequence[str], tokenizer, max_length: Optional[int] = None) -> torch.Tensor:
    """Each caption's 0/1 vocabulary mask in compact form: its distinct WordPiece ids.

    Returns (N, L) long, right-padded with -1 ([CLS], [SEP] and [PAD] excluded; [UNK] kept,
    as it is a real vocabulary entry of the caption). Expand a batch with :func:`dense_masks`.
    """
    enc = tokenizer(list(texts), add_special_tokens=True, truncation=max_length is not None, max_length=max_length)
    drop = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id} - {None}
    rows = [sorted({int(t) for t in ids} - drop) for ids in enc["input_ids"]]
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), max(width, 1)), -1, dtype=torch.long)  # (N, L)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def dense_masks(mask_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, L) ids padded with -1 -> (B, V) float 0/1 masks."""
    if mask_ids.numel() and int(mask_ids.max()) >= vocab_size:
        raise ValueError(f"token id {int(mask_ids.max())} >= vocabulary size {vocab_size}: tokenizer and vocab layer do not match")
    out = torch.zeros(mask_ids.shape[0], vocab_size, device=mask_ids.device)  # (B, V)
    # padding (-1) writes 0 into column 0 under "amax", which never clears a real 1
    return out.scatter_reduce_(1, mask_ids.clamp(min=0), (mask_ids >= 0).float(), reduce="amax")


def bert_uncased_tokenizer(source: str = "minilm"):
    """The BERT-uncased WordPiece tokenizer ("minilm": the installed all-MiniLM-L6-v2's, 30,522 terms)."""
    from transformers import AutoTokenizer

    from .head import MINILM_SOURCE, minilm_dir

    return AutoTokenizer.from_pretrained(str(minilm_dir()) if source == MINILM_SOURCE else source)


class ExpansionGate:
    """Draws ``z ~ Bernoulli(p)`` once per batch (paper) or once per example, from its own generator."""

    def __init__(self, mode: str = "batch", seed: int = 0) -> None:
        if mode not in GATE_MODES:
            raise ValueError(f"unknown gate mode {mode!r}; known: {', '.join(GATE_MODES)}")
        self.mode = mode
        self.generator = torch.Generator().manual_seed(seed)  # CPU stream used only by the gate

    def draw(self, p: float, batch_size: int) -> torch.Tensor:
        """(B,) bool: True = this text is masked to its own tokens (no expansion)."""
        n = 1 if self.mode == "batch" else batch_size
        z = torch.rand(n, generator=self.generator) < p  # always draws: the stream is the same for any p
        return z.expand(batch_size) if self.mode == "batch" else z

    def text_masks(self, z: torch.Tensor, mask_ids: torch.Tensor, vocab_size: int) -> Optional[torch.Tensor]:
        """(B, V) masks for ``encode_text``: caption mask where z, all ones where not; None if no z."""
        if not bool(z.any()):
            return None  # full expansion for the whole batch
        masks = dense_masks(mask_ids, vocab_size)  # (B, V)
        if bool(z.all()):
            return masks
        keep = (~z).to(masks.device, masks.dtype).unsqueeze(1)  # (B, 1): 1 = expand
        return torch.maximum(masks, keep.expand_as(masks))

    def state_dict(self) -> dict:
        """Resumable state of the gate's generator."""
        return {"mode": self.mode, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.mode = state["mode"]
        self.generator.set_state(state["generator"])
