"""BLIP and ALBEF retrieval models through LAVIS, the authors' own path (DESIGN.md sections 1A, 4, 5).

The D2S reference code loads ``load_model_and_preprocess(name="blip_retrieval" | "albef_retrieval",
model_type="coco" | "flickr")`` and uses the 256-d ITC embeddings. LAVIS 1.0.2 installs only on a
legacy stack, so it lives in its own optional environment (``environment-lavis.yml``) and is
imported only when an encoder is built.

Two ways to get the embeddings, chosen by what the loaded model offers:
- ``extract_features(samples, mode="image" | "text")`` (LAVIS feature-extractor models):
  ``.image_embeds_proj[:, 0, :]`` / ``.text_embeds_proj[:, 0, :]``;
- otherwise the retrieval models' own ITC path, as in LAVIS' retrieval evaluation
  (``lavis.models.albef_models.compute_sim_matrix``; ``BlipRetrieval`` and ``AlbefRetrieval``
  have no ``extract_features``): ``vision_proj(visual_encoder.forward_features(x)[:, 0])`` and
  ``text_proj(text_encoder.forward_text(tokenizer(texts, max_length=35))[:, 0])``.
Both are L2-normalised here. Tests inject ``loader`` to mock only the weight download.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from PIL import Image

from .blip import AMP_DTYPES, autocast_context, weights_digest
from .encoder import DenseEncoder, pick_device

MOMENTUM_MODULES = ("visual_encoder_m", "text_encoder_m", "vision_proj_m", "text_proj_m")  # training only


def default_loader() -> Callable[..., tuple[Any, dict, dict]]:
    """LAVIS' ``load_model_and_preprocess``, or an error saying how to get LAVIS."""
    try:
        from lavis.models import load_model_and_preprocess
    except ImportError as e:
        raise ImportError(
            f"LAVIS is not importable here ({e}). It needs its own legacy environment: "
            "`conda env create -f environment-lavis.yml && conda activate lsr-lavis`, then run stage 01 "
            "there; or use encoder.kind: blip_hf (BLIP only) or feature_files (the authors' released features)"
        ) from e
    return load_model_and_preprocess


class LavisEncoder(DenseEncoder):
    """ITC embeddings of a LAVIS BLIP / ALBEF retrieval model."""

    def __init__(
        self,
        model_name: str = "blip_retrieval",
        model_type: str = "coco",
        *,
        device: str = "auto",
        mixed_precision: bool = True,
        amp_dtype: str = "float16",
        batch_size: int = 64,
        max_length: int = 35,
        loader: Callable[..., tuple[Any, dict, dict]] | None = None,
    ) -> None:
        """Load ``model_name`` / ``model_type`` through ``loader`` (default: LAVIS) onto ``device``."""
        if amp_dtype not in AMP_DTYPES:
            raise ValueError(f"amp_dtype {amp_dtype!r} is not one of {sorted(AMP_DTYPES)}")
        self.device = pick_device(device)
        load = loader if loader is not None else default_loader()
        # Load on CPU, drop the momentum copies (half the weights), then move: less GPU memory.
        model, vis_processors, txt_processors = load(name=model_name, model_type=model_type, is_eval=True, device="cpu")
        for attr in MOMENTUM_MODULES:
            if hasattr(model, attr):
                delattr(model, attr)
        if hasattr(model, "model_pairs"):
            model.model_pairs = []  # it holds references to the momentum modules
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.vis_processor = vis_processors["eval"]
        self.txt_processor = txt_processors["eval"]
        self.model_name, self.model_type = model_name, model_type
        self.name = f"lavis_{model_name}_{model_type}"
        self.mixed_precision, self.amp_dtype = mixed_precision, amp_dtype
        self.batch_size, self.max_length = batch_size, max_length
        self.use_extract_features = hasattr(self.model, "extract_features")
        if not self.use_extract_features:
            needed = ("visual_encoder", "vision_proj", "text_encoder", "text_proj", "tokenizer")
            missing = [a for a in needed if not hasattr(self.model, a)]
            if missing:
                raise TypeError(
                    f"LAVIS model {model_name}/{model_type} has neither extract_features nor {missing}; "
                    "use blip_retrieval or albef_retrieval"
                )
        proj = getattr(self.model, "vision_proj", None)
        # without a vision_proj (some feature extractors) the first batch sets dim
        self.dim = int(proj.out_features) if isinstance(proj, torch.nn.Linear) else DenseEncoder.dim
        self._digest: str | None = None

    def _autocast(self) -> Any:
        return autocast_context(self.device, self.mixed_precision, self.amp_dtype)

    @torch.inference_mode()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """RGB PIL images -> (B, D) float32 on CPU, L2-normalised."""
        out: list[torch.Tensor] = []
        for i in range(0, len(images), self.batch_size):
            pixels = torch.stack([self.vis_processor(im.convert("RGB")) for im in images[i : i + self.batch_size]])
            pixels = pixels.to(self.device)  # (b, 3, H, W)
            with self._autocast():
                if self.use_extract_features:
                    emb = self.model.extract_features({"image": pixels}, mode="image").image_embeds_proj[:, 0, :]
                else:
                    hidden = self.model.visual_encoder.forward_features(pixels)  # (b, 1+P, W)
                    emb = self.model.vision_proj(hidden[:, 0, :])  # (b, D)
            out.append(F.normalize(emb.float(), dim=-1).cpu())
            self.dim = out[-1].shape[1]
        return torch.cat(out) if out else torch.empty(0, self.dim)

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Caption strings -> (B, D) float32 on CPU, L2-normalised."""
        out: list[torch.Tensor] = []
        for i in range(0, len(texts), self.batch_size):
            batch = [self.txt_processor(t) for t in texts[i : i + self.batch_size]]
            with self._autocast():
                if self.use_extract_features:
                    emb = self.model.extract_features({"text_input": batch}, mode="text").text_embeds_proj[:, 0, :]
                else:
                    tok = self.model.tokenizer(
                        batch, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
                    ).to(self.device)  # input_ids, attention_mask (b, L)
                    hidden = self.model.text_encoder.forward_text(tok).last_hidden_state  # (b, L, H)
                    emb = self.model.text_proj(hidden[:, 0, :])  # (b, D)
            out.append(F.normalize(emb.float(), dim=-1).cpu())
            self.dim = out[-1].shape[1]
        return torch.cat(out) if out else torch.empty(0, self.dim)

    def fingerprint(self) -> dict:
        """Kind, model name and type, weights hash and the settings that change the vectors."""
        if self._digest is None:
            self._digest = weights_digest(self.model)
        return {
            "kind": "lavis",
            "checkpoint": f"{self.model_name}/{self.model_type}",
            "weights": self._digest,
            "dim": self.dim,
            "path": "extract_features" if self.use_extract_features else "itc_projections",
            "max_length": self.max_length,
            "precision": self.amp_dtype if (self.device.type == "cuda" and self.mixed_precision) else "float32",
        }
