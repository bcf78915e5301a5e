"""MLP and MLM sparse encoders for image suggestion, configurations M1-M4 (DESIGN.md 1B).

Inputs are frozen tower states: MiniLM token states (B, L, 384) with their WordPiece ids, and
EfficientNet-Lite0 patch states (B, 49, 1280) from its 7x7 feature map.

- **MLP** (text): one weight per input token, ``log1p(relu(w . h_t + b))``, max-pooled over
  repeated tokens onto the token's own vocabulary id. No expansion: the vector's terms are the
  text's own tokens ([CLS], [SEP], [PAD] excluded).
- **MLM** (text or image): ``Linear -> LayerNorm -> Linear(H, V)`` per token (or per patch), the
  vocabulary layer initialised from MiniLM's tied word embeddings (the MLM head's decoder), then
  ``log1p(relu(.))`` max-pooled over positions (SPLADE). With expansion: any term can fire.
  For images, each patch state goes through its own projection into the MLM head.
- **MLP over image + caption** (M4's documents): the image's pooled patch state, projected to the
  text width, is added to every caption token state before the MLP scores the token. The image
  thus re-weights the caption's own terms; it adds none (an MLP has no expansion).

| config | query | document |
|---|---|---|
| M1 | MLM (text) | MLM over image patches (image only) |
| M2 | MLP (text) | MLM over caption tokens |
| M3 | MLP (text) | MLP over caption tokens |
| M4 | MLP (text) | MLP over caption tokens + image |
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .head import SparseHead, mlm_head_init
from .max_pool import max_pooled_log_saturation

SPECIAL_TOKEN_IDS = (0, 100, 101, 102, 103)  # [PAD] [UNK] [CLS] [SEP] [MASK] in BERT-uncased

CONFIG_SIDES = {  # (query encoder, document encoder, document input)
    "M1": ("mlm_text", "mlm_image", "image"),
    "M2": ("mlp_text", "mlm_text", "caption"),
    "M3": ("mlp_text", "mlp_text", "caption"),
    "M4": ("mlp_text", "mlp_fusion", "image+caption"),
}


def describe(config: str) -> tuple[str, str, str]:
    """("MLP" | "MLM", "MLP" | "MLM", document input) of a configuration, for tables and labels."""
    q, d, doc_input = CONFIG_SIDES[config]
    return q.split("_")[0].upper(), d.split("_")[0].upper(), doc_input


def _init_linear(lin: nn.Linear, g: torch.Generator) -> None:
    nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5), generator=g)
    bound = 1.0 / math.sqrt(lin.weight.shape[1])
    nn.init.uniform_(lin.bias, -bound, bound, generator=g)


class MLPText(nn.Module):
    """Token states -> weights on the text's own token ids (B, V)."""

    def __init__(self, dim: int, vocab_size: int, g: torch.Generator) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)
        _init_linear(self.score, g)
        # start with (almost) every token active: relu gives a token at zero no gradient to come back
        with torch.no_grad():
            self.score.bias.fill_(1.0)
        self.vocab_size = vocab_size

    def forward(self, states: torch.Tensor, token_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = torch.log1p(torch.relu(self.score(states).squeeze(-1))).float()  # (B, L)
        keep = mask.bool() & ~torch.isin(token_ids, torch.tensor(SPECIAL_TOKEN_IDS, device=token_ids.device))
        w = torch.where(keep, w, torch.zeros_like(w))
        out = torch.zeros(states.shape[0], self.vocab_size, device=states.device, dtype=w.dtype)
        return out.scatter_reduce(1, token_ids.long(), w, reduce="amax", include_self=True)  # (B, V)


class MLPFusion(MLPText):
    """Caption token states plus the projected pooled image state -> weights on the caption's tokens."""

    def __init__(self, dim: int, image_dim: int, vocab_size: int, g: torch.Generator) -> None:
        super().__init__(dim, vocab_size, g)
        self.image = nn.Linear(image_dim, dim)
        _init_linear(self.image, g)

    def forward(self, states, token_ids, mask, patches: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        img = self.image(patches.mean(dim=1))  # (B, dim)
        return super().forward(states + img[:, None, :], token_ids, mask)


class MLMHead(nn.Module):
    """Per-position SPLADE head, max-pooled: (B, L, d) states (+ mask) -> (B, V)."""

    def __init__(self, dim: int, vocab_parts: dict, g: torch.Generator, bias_init: float = -4.0) -> None:
        super().__init__()
        V, H = vocab_parts["weight"].shape
        self.head = SparseHead(dim, H, V)
        self.head.reset_parameters(g)
        self.head.load_vocab_init(vocab_parts)
        with torch.no_grad():
            # MiniLM has no trained MLM transform. For text (d == H) the first projection starts as the
            # identity: MiniLM's last-layer token states then score their own token highest (LayerNorm,
            # then the tied word embeddings), as a pretrained MLM head would; images keep a random one.
            if dim == H:
                self.head.proj.weight.copy_(torch.eye(H))
                self.head.proj.bias.zero_()
            # without this shift about every term fires at initialisation
            self.head.vocab.bias.add_(bias_init)

    def forward(self, states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.head.norm(self.head.proj(states))  # (B, L, H)
        # = (self.head(states) * mask).amax(dim=1), without the (B, L, V) tensor and its dense backward
        return max_pooled_log_saturation(h, self.head.vocab.weight, self.head.vocab.bias, mask)  # (B, V)


def pool_patches(patches: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, P, C) patch states of a square feature map (P = side x side) -> (B, grid * grid, C), average-pooled
    (``adaptive_avg_pool2d``); a ``grid`` at least the side returns the states as they are."""
    side = math.isqrt(patches.shape[1])
    if grid >= side:
        return patches
    b, p, c = patches.shape
    maps = patches.transpose(1, 2).reshape(b, c, side, side)
    return nn.functional.adaptive_avg_pool2d(maps, grid).reshape(b, c, grid * grid).transpose(1, 2)


class SuggestModel(nn.Module):
    """A query encoder and a document encoder for one configuration (M1-M4)."""

    def __init__(
        self,
        config: str,
        text_dim: int = 384,
        image_dim: int = 1280,
        seed: int = 0,
        vocab_init: str = "minilm",
        mlm_bias_init: float = -4.0,
        patch_grid: int = 7,
    ) -> None:
        super().__init__()
        self.patch_grid = patch_grid
        if config not in CONFIG_SIDES:
            raise ValueError(f"unknown configuration {config!r}; known: {', '.join(CONFIG_SIDES)}")
        self.config = config
        self.query_kind, self.doc_kind, self.doc_input = CONFIG_SIDES[config]
        g = torch.Generator().manual_seed(seed)
        parts = mlm_head_init(vocab_init) if "mlm" in self.query_kind + self.doc_kind else None
        V = parts["weight"].shape[0] if parts is not None else 30522

        def make(kind: str) -> nn.Module:
            if kind == "mlp_text":
                return MLPText(text_dim, V, g)
            if kind == "mlp_fusion":
                return MLPFusion(text_dim, image_dim, V, g)
            if kind == "mlm_text":
                return MLMHead(text_dim, parts, g, mlm_bias_init)
            return MLMHead(image_dim, parts, g, mlm_bias_init)  # mlm_image

        self.query_encoder = make(self.query_kind)
        self.doc_encoder = make(self.doc_kind)

    def encode_queries(self, text: dict) -> torch.Tensor:
        """``text``: {"states", "token_ids", "mask"} of the queries -> (B, V)."""
        if self.query_kind == "mlm_text":
            return self.query_encoder(text["states"], text["mask"])
        return self.query_encoder(text["states"], text["token_ids"], text["mask"])

    def encode_docs(self, caption: dict | None, patches: torch.Tensor | None) -> torch.Tensor:
        """Documents from caption token states and / or image patch states -> (B, V)."""
        if self.doc_kind == "mlm_image":
            return self.doc_encoder(pool_patches(patches, self.patch_grid))
        if self.doc_kind == "mlm_text":
            return self.doc_encoder(caption["states"], caption["mask"])
        if self.doc_kind == "mlp_fusion":
            return self.doc_encoder(caption["states"], caption["token_ids"], caption["mask"], patches)
        return self.doc_encoder(caption["states"], caption["token_ids"], caption["mask"])

    def param_groups(self, lr_encoder: float, lr_vocab: float) -> list[dict]:
        """MLM vocabulary layers (+ their LayerNorm) at ``lr_vocab``, everything else at ``lr_encoder``."""
        vocab = [p for n, p in self.named_parameters() if ".head.vocab." in n or ".head.norm." in n]
        ids = {id(p) for p in vocab}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [g for g in ({"params": rest, "lr": lr_encoder}, {"params": vocab, "lr": lr_vocab}) if g["params"]]
