"""The one small interface every frozen dense dual encoder implements (DESIGN.md section 4/5).

Implementations: the embedded default (encoder kind ``lit_towers``:
``lsr_lib.dense.lit_projection.LitDualEncoder``), BLIP through Hugging Face ``transformers``
(``lsr_lib.dense.blip.BlipHFEncoder``), BLIP / ALBEF through LAVIS (``lsr_lib.dense.lavis.LavisEncoder``).
Stage 01 only calls :meth:`encode_images`, :meth:`encode_texts` and :meth:`fingerprint`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from PIL import Image


def pick_device(preference: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("extraction.device is 'cuda' but no CUDA device is visible; set it to 'auto' or 'cpu'")
    return torch.device(preference)


class DenseEncoder(ABC):
    """A frozen image-text model giving L2-normalised embeddings of size :attr:`dim`."""

    name: str = "dense"
    dim: int = 256

    @abstractmethod
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """RGB PIL images -> (B, D) float32 on CPU, L2-normalised."""

    @abstractmethod
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Caption strings -> (B, D) float32 on CPU, L2-normalised."""

    @abstractmethod
    def fingerprint(self) -> dict:
        """What identifies this encoder in a cache manifest (kind, checkpoint, weights hash)."""
