"""BLIP image-text contrastive (ITC) embeddings through Hugging Face ``transformers``.

The frozen dense model of D2S (DESIGN.md sections 1A and 5, paper profile): a BLIP retrieval
checkpoint fine-tuned on COCO or Flickr30k. Its ITC embedding of an image is
``normalize(vision_proj(ViT(image)[:, 0]))`` and of a caption
``normalize(text_proj(BERT(caption)[:, 0]))`` (256-d), exactly as LAVIS computes them for
retrieval (``lavis.models.albef_models.compute_sim_matrix``). Captions get LAVIS' ``blip_caption``
cleaning (lower case, some punctuation removed, at most 50 words) and at most 35 tokens, as in
LAVIS' retrieval evaluation. Images go through the PIL image processor (no torchvision).

``transformers`` is imported only when an encoder is built, so this module also imports in the
legacy LAVIS environment, which needs :func:`weights_digest` from here.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from .encoder import DenseEncoder, pick_device

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def weights_digest(module: torch.nn.Module, per_tensor: int = 256) -> str:
    """Short hash of a model's weights: every tensor's name, dtype, shape and first/last values."""
    h = hashlib.sha256()
    for key, t in sorted(module.state_dict().items()):
        flat = t.detach().reshape(-1)
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        if flat.numel() and not flat.is_complex():
            sample = torch.cat([flat[:per_tensor], flat[-per_tensor:]]).to("cpu", torch.float64)
            h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def blip_pre_caption(text: str, max_words: int = 50) -> str:
    """LAVIS ``blip_caption`` cleaning: lower case, drop ``.!"()*#:;~``, squeeze spaces, cut words."""
    text = re.sub(r"([.!\"()*#:;~])", " ", text.lower())
    text = re.sub(r"\s{2,}", " ", text).rstrip("\n").strip(" ")
    words = text.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else text


def autocast_context(device: torch.device, mixed_precision: bool, amp_dtype: str) -> Any:
    """Autocast to ``amp_dtype`` on CUDA when ``mixed_precision``; a no-op elsewhere."""
    if device.type == "cuda" and mixed_precision:
        return torch.autocast("cuda", dtype=AMP_DTYPES[amp_dtype])
    return contextlib.nullcontext()


class BlipHFEncoder(DenseEncoder):
    """BLIP ITC embeddings from a ``BlipForImageTextRetrieval`` (checkpoint or built model)."""

    name = "blip_hf"

    def __init__(
        self,
        checkpoint: str | None = None,
        *,
        model: torch.nn.Module | None = None,
        image_processor: Any = None,
        tokenizer: Any = None,
        device: str = "auto",
        mixed_precision: bool = True,
        amp_dtype: str = "float16",
        batch_size: int = 64,
        max_length: int = 35,
        max_words: int | None = 50,
    ) -> None:
        """Load ``checkpoint`` (hub name or local folder), or wrap ``model`` + processor + tokenizer."""
        if (checkpoint is None) == (model is None):
            raise ValueError("BlipHFEncoder needs exactly one of: a checkpoint name/path, or an already built model")
        if amp_dtype not in AMP_DTYPES:
            raise ValueError(f"amp_dtype {amp_dtype!r} is not one of {sorted(AMP_DTYPES)}")
        self.device = pick_device(device)  # before any download: a missing GPU fails fast
        if checkpoint is not None:
            model, image_processor, tokenizer = _load_checkpoint(checkpoint)
        elif image_processor is None or tokenizer is None:
            raise ValueError("with a built model, also pass its image_processor (BlipImageProcessorPil) and tokenizer")
        self.checkpoint = checkpoint
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.mixed_precision = mixed_precision
        self.amp_dtype = amp_dtype
        self.batch_size = batch_size
        self.max_length = max_length
        self.max_words = max_words
        self.dim = int(self.model.vision_proj.out_features)
        self._digest: str | None = None

    def _autocast(self) -> Any:
        return autocast_context(self.device, self.mixed_precision, self.amp_dtype)

    @torch.inference_mode()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """RGB PIL images -> (B, D) float32 on CPU, L2-normalised."""
        out = [torch.empty(0, self.dim)]
        for i in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[i : i + self.batch_size]]
            pixels = self.image_processor(images=batch, return_tensors="pt")["pixel_values"]  # (b, 3, H, W)
            with self._autocast():
                hidden = self.model.vision_model(pixel_values=pixels.to(self.device)).last_hidden_state  # (b, 1+P, W)
                emb = self.model.vision_proj(hidden[:, 0, :])  # (b, D)
            out.append(F.normalize(emb.float(), dim=-1).cpu())
        return torch.cat(out)

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Caption strings -> (B, D) float32 on CPU, L2-normalised."""
        out = [torch.empty(0, self.dim)]
        for i in range(0, len(texts), self.batch_size):
            batch = list(texts[i : i + self.batch_size])
            if self.max_words is not None:
                batch = [blip_pre_caption(t, self.max_words) for t in batch]
            tok = self.tokenizer(
                batch, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            with self._autocast():
                hidden = self.model.text_encoder(
                    input_ids=tok["input_ids"].to(self.device),  # (b, L)
                    attention_mask=tok["attention_mask"].to(self.device),  # (b, L)
                ).last_hidden_state  # (b, L, H)
                emb = self.model.text_proj(hidden[:, 0, :])  # (b, D)
            out.append(F.normalize(emb.float(), dim=-1).cpu())
        return torch.cat(out)

    def fingerprint(self) -> dict:
        """Kind, checkpoint, weights hash and the preprocessing settings that change the vectors."""
        if self._digest is None:
            self._digest = weights_digest(self.model)
        return {
            "kind": "blip_hf",
            "checkpoint": self.checkpoint or "in-memory model",
            "weights": self._digest,
            "dim": self.dim,
            "image_size": _image_size(self.image_processor),
            "max_length": self.max_length,
            "max_words": self.max_words,
            "precision": self.amp_dtype if (self.device.type == "cuda" and self.mixed_precision) else "float32",
        }


def _image_size(image_processor: Any) -> list | None:
    """``[height, width]`` the processor resizes to (SizeDict or plain dict), if it says."""
    size = getattr(image_processor, "size", None)
    if size is None:
        return None
    get = size.get if isinstance(size, dict) else lambda k: getattr(size, k, None)
    return [get("height"), get("width")]


def _load_checkpoint(checkpoint: str) -> tuple[torch.nn.Module, Any, Any]:
    """``from_pretrained`` model, PIL image processor and tokenizer; a clear error when offline."""
    from transformers import AutoTokenizer, BlipForImageTextRetrieval, BlipImageProcessorPil

    try:
        model = BlipForImageTextRetrieval.from_pretrained(checkpoint)
        image_processor = BlipImageProcessorPil.from_pretrained(checkpoint)
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    except (OSError, ValueError) as e:
        raise RuntimeError(
            f"could not load BLIP checkpoint {checkpoint!r} ({type(e).__name__}: {e}). A hub name such as "
            "'Salesforce/blip-itm-base-coco' needs internet once (unset HF_HUB_OFFLINE); otherwise point "
            "encoder.checkpoint at a local folder saved with save_pretrained, or use encoder.kind: feature_files "
            "with the authors' released features"
        ) from e
    return model, image_processor, tokenizer
