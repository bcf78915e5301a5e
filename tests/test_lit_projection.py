"""LiT projection: the multi-positive InfoNCE against a hand computation, and it learns."""

import numpy as np
import pytest
import torch

from lsr_lib.config.profiles import LitConfig
from lsr_lib.dense.lit_projection import contrastive_loss, load_projection, save_projection, train_lit


def test_contrastive_loss_matches_manual():
    img = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    txt = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2], [0.1, 1.0], [1.0, 0.0]]), dim=-1)
    rows = torch.tensor([0, 1, 0])  # captions 0 and 2 belong to image 0
    img_b = img[rows]  # one image per caption, as in training
    same = rows[:, None] == rows[None, :]
    scale = torch.tensor(np.log(10.0))
    got = contrastive_loss(img_b, txt, same, scale)
    logits = 10.0 * txt @ img_b.T
    t2i = np.mean([-(same[i].float() / same[i].sum() * logits[i].log_softmax(0)).sum().item() for i in range(3)])
    i2t = np.mean(
        [-(same[:, j].float() / same[:, j].sum() * logits[:, j].log_softmax(0)).sum().item() for j in range(3)]
    )
    assert got.item() == pytest.approx((t2i + i2t) / 2, rel=1e-5)


def _toy(n_img=40, n_views=2, f=12, seed=0):
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(n_img, 6)).astype(np.float32)
    mix_i, mix_t = rng.normal(size=(6, f)), rng.normal(size=(6, 384))
    views = np.stack([topics @ mix_i + 0.3 * rng.normal(size=(n_img, f)) for _ in range(n_views)], 1).astype(np.float32)
    rows = np.repeat(np.arange(n_img), 2)
    texts = (topics[rows] @ mix_t + 0.3 * rng.normal(size=(len(rows), 384))).astype(np.float32)
    return views, texts, rows


def test_training_learns_and_round_trips(tmp_path):
    views, texts, rows = _toy()
    ids = np.array([str(i) for i in range(len(views))])
    val = {"image": views[:, 0], "text": texts, "text_image_ids": ids[rows], "image_ids": ids}
    cfg = LitConfig(hidden_dim=32, epochs=12, batch_size=20, dropout=0.0, lr=5e-3)
    model, hist = train_lit(views, texts, rows, cfg, val, progress=False)
    assert hist[0]["val"]["text_to_image"]["R@1"] < max(h["val"]["text_to_image"]["R@1"] for h in hist)
    assert max(h["val"]["text_to_image"]["R@1"] for h in hist) > 50  # chance is 2.5%
    save_projection(model, cfg, tmp_path / "p.safetensors")
    again, meta = load_projection(tmp_path / "p.safetensors")
    x = torch.from_numpy(views[:3, 0])
    assert torch.allclose(model.image(x), again.image(x))
    model2, hist2 = train_lit(views, texts, rows, cfg, val, progress=False)
    assert hist2[-1]["loss"] == hist[-1]["loss"]  # same seed, same numbers
