"""Caption masks for probabilistic expansion control (DESIGN.md section 2, arXiv 2402.17535).

A text vector may be restricted to its caption's own WordPiece ids (a 0/1 mask over the
vocabulary): :func:`caption_token_masks` stores each caption's ids compactly, :func:`dense_masks`
expands a batch of them to (B, V) masks. ``p`` follows a named schedule of the epoch
(:mod:`lsr_lib.config.expansion_schedule`, re-exported here): ``linear`` (the paper: 1.0 at the
first epoch, falling linearly after each epoch to 0 at 95% of the epochs), ``constant`` (``p0 = 0``
is "without expansion control"), ``cosine`` or ``step``.

The Bernoulli gate that draws ``z ~ Bernoulli(p)`` and applies these masks during training, on its
own random stream, is :class:`lsr_lib.train.d2s_method.ExpansionGate`, beside the D2S loss.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

# the method's public names
from ..config.expansion_schedule import GATE_MODES, SCHEDULES, expansion_probability  # noqa: F401


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
        raise ValueError(
            f"token id {int(mask_ids.max())} >= vocabulary size {vocab_size}: tokenizer and vocab layer do not match"
        )
    out = torch.zeros(mask_ids.shape[0], vocab_size, device=mask_ids.device)  # (B, V)
    # padding (-1) writes 0 into column 0 under "amax", which never clears a real 1
    return out.scatter_reduce_(1, mask_ids.clamp(min=0), (mask_ids >= 0).float(), reduce="amax")


def bert_uncased_tokenizer(source: str = "minilm"):
    """The BERT-uncased WordPiece tokenizer ("minilm": the installed all-MiniLM-L6-v2's, 30,522 terms)."""
    from transformers import AutoTokenizer

    from .head import MINILM_SOURCE, minilm_dir

    return AutoTokenizer.from_pretrained(str(minilm_dir()) if source == MINILM_SOURCE else source)
