"""LiT-style projections on locked towers: the embedded default's dense teacher (DESIGN.md 5).

"Locked-image tuning" (Zhai et al., 2022) with both towers locked: two small MLPs map the
image-tower features and the MiniLM sentence vector into a shared 256-d space (the size of
BLIP's ITC embedding), trained with a symmetric InfoNCE loss and a learnable temperature on the
train split. Captions of the same image in a batch are all positives (soft targets). Each
training step sees one random augmented view per image (``image_augment``), so the projection
learns what an emoji shows rather than the drawing style of the OpenMoji artists.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from ..storage.progress import progress_bar as tqdm

from ..config.profiles import LitConfig, to_dict
from ..storage.atomic import atomic_write, atomic_write_json
from .encoder import DenseEncoder
from ..metrics.retrieval import evaluate_both_directions


def image_feature_matrix(parts: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    """Concatenate the chosen tower feature parts -> (N, F)."""
    missing = [n for n in names if n not in parts]
    if missing:
        raise KeyError(f"image tower features lack part(s) {missing}; known: {sorted(parts)}")
    return np.concatenate([parts[n] for n in names], axis=1).astype(np.float32)


class LitProjection(nn.Module):
    """Standardise -> MLP -> 256-d for images; MLP -> 256-d for texts; learnable temperature."""

    def __init__(self, image_dim: int, text_dim: int, cfg: LitConfig, embed_dim: int = 256):
        super().__init__()
        self.register_buffer("img_mean", torch.zeros(image_dim))
        self.register_buffer("img_std", torch.ones(image_dim))
        self.image_proj = nn.Sequential(
            nn.Dropout(cfg.dropout),
            nn.Linear(image_dim, cfg.hidden_dim),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden_dim, embed_dim),
        )
        self.text_proj = nn.Sequential(
            nn.Linear(text_dim, cfg.hidden_dim),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden_dim, embed_dim),
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1.0 / cfg.init_temperature))))

    def image(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, F) tower features -> (B, 256) unit vectors."""
        return F.normalize(self.image_proj((feats - self.img_mean) / self.img_std), dim=-1)

    def text(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, 384) sentence vectors -> (B, 256) unit vectors."""
        return F.normalize(self.text_proj(feats), dim=-1)


def contrastive_loss(
    img: torch.Tensor, txt: torch.Tensor, same_image: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE with multi-positive soft targets; img, txt (B, D), same_image (B, B) bool."""
    logits = scale.exp().clamp(max=100) * txt @ img.T  # (B_txt, B_img)
    target = same_image.float() / same_image.float().sum(dim=1, keepdim=True)
    t2i = -(target * logits.log_softmax(dim=1)).sum(dim=1).mean()
    target_t = same_image.T.float() / same_image.T.float().sum(dim=1, keepdim=True)
    i2t = -(target_t * logits.T.log_softmax(dim=1)).sum(dim=1).mean()
    return (t2i + i2t) / 2


def train_lit(
    image_views: np.ndarray,
    text_feats: np.ndarray,
    text_image_row: np.ndarray,
    cfg: LitConfig,
    val: dict | None = None,
    progress: bool = True,
) -> tuple[LitProjection, list[dict]]:
    """Train the projections; keep the epoch with the best val text->image R@1.

    image_views: (N_img, V, F) tower features of V views per training image (view 0 = clean);
    text_feats: (N_txt, 384); text_image_row: (N_txt,) row of each caption's image.
    val: {"image": (M, F) clean features, "text": (T, 384), "text_image_ids": (T,), "image_ids": (M,)}.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # parameter initialisation
    n_img, n_views, f_dim = image_views.shape
    model = LitProjection(f_dim, text_feats.shape[1], cfg)
    flat = torch.from_numpy(image_views.reshape(-1, f_dim))
    model.img_mean.copy_(flat.mean(0))
    model.img_std.copy_(flat.std(0).clamp_min(1e-4))
    views = torch.from_numpy(image_views)
    texts = torch.from_numpy(text_feats)
    rows = torch.from_numpy(np.asarray(text_image_row, dtype=np.int64))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, (len(texts) + cfg.batch_size - 1) // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warm = max(1, total // 10)  # linear warm-up over 10% of steps, then linear decay to 0
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: min((t + 1) / warm, max(0.0, (total - t) / max(1, total - warm)))
    )
    history, best, best_state = [], -1.0, None
    bar = tqdm(range(cfg.epochs), desc="train LiT projection", disable=not progress)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(texts), generator=gen)
        losses = []
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            img_rows = rows[idx]
            view = torch.randint(0, n_views, (len(idx),), generator=gen)
            img = model.image(views[img_rows, view])  # (B, 256): one view per caption's image
            txt = model.text(texts[idx])  # (B, 256)
            same = img_rows[:, None] == img_rows[None, :]  # (B, B) captions of one image
            loss = contrastive_loss(img, txt, same, model.logit_scale)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        rec = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            "temperature": float(1 / model.logit_scale.detach().exp()),
        }
        if val is not None:
            rec["val"] = evaluate_projection(model, val)
            r1 = rec["val"]["text_to_image"]["R@1"]
            if r1 > best:
                best, best_state = r1, copy.deepcopy(model.state_dict())
            bar.set_postfix(loss=f"{rec['loss']:.3f}", val_t2i_R1=f"{r1:.1f}")
        history.append(rec)
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), history


@torch.no_grad()
def evaluate_projection(model: LitProjection, data: dict) -> dict:
    """Both-direction retrieval metrics of projected features."""
    model.eval()
    img = model.image(torch.as_tensor(data["image"]))
    txt = model.text(torch.as_tensor(data["text"]))
    return evaluate_both_directions(
        img, txt, data["text_image_ids"], data["image_ids"], image_gallery=data.get("image_gallery")
    )


def save_projection(model: LitProjection, cfg: LitConfig, path: str | Path, extra: dict | None = None) -> None:
    """Weights as safetensors plus a JSON sidecar with the config needed to rebuild it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "lit": to_dict(cfg),
        "image_dim": model.img_mean.numel(),
        "text_dim": model.text_proj[0].in_features,
        **(extra or {}),
    }
    atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp))
    atomic_write_json(path.with_suffix(".json"), meta)


def load_projection(path: str | Path) -> tuple[LitProjection, dict]:
    """Inverse of :func:`save_projection`."""
    from ..config.profiles import build_dataclass

    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    cfg = build_dataclass(LitConfig, meta["lit"], "lit")
    model = LitProjection(meta["image_dim"], meta["text_dim"], cfg)
    model.load_state_dict(load_file(str(path)))
    return model.eval(), meta


class LitDualEncoder(DenseEncoder):
    """Towers + trained projections as a :class:`DenseEncoder` (for new images and texts)."""

    name = "lit_towers"

    def __init__(
        self, image_tower, text_tower, projection: LitProjection, image_parts: tuple[str, ...], weights_sha: str
    ):
        self.image_tower, self.text_tower, self.projection = image_tower, text_tower, projection
        self.image_parts, self.weights_sha = image_parts, weights_sha
        self.dim = int(projection.image_proj[-1].out_features)

    @torch.no_grad()
    def encode_images(self, images):
        feats = image_feature_matrix(self.image_tower(images), self.image_parts)
        return self.projection.image(torch.from_numpy(feats))

    @torch.no_grad()
    def encode_texts(self, texts):
        return self.projection.text(torch.from_numpy(self.text_tower(texts)["text"]))

    def fingerprint(self) -> dict:
        return {
            "kind": self.name,
            "image": self.image_tower.fingerprint(),
            "text": self.text_tower.fingerprint(),
            "projection_sha": self.weights_sha,
        }
