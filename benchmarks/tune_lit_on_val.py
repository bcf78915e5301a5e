"""Try LiT projection settings on the validation split (stage 01 tower caches must exist).

    python benchmarks/tune_lit_on_val.py

Edit the list of settings at the bottom; results go to stdout (see results/default/01_lit_val_trials.log).
"""

import dataclasses
import time
from lsr_lib.config.profiles import load_config
import numpy as np
import torch

from lsr_lib.stages.cache_dense_features import cache_tower_features, load_collection
from lsr_lib.dense.lit_projection import train_lit, image_feature_matrix

cfg = load_config("default")
col = load_collection(cfg, render=False)
ic, tc = cache_tower_features(cfg, col, torch.device("cpu"), progress=False)
train = col.split("train")
val = col.split("val")
views = ["clean"] + [f"view{k}" for k in range(cfg.lit.train_views)]
_, parts = ic.read([f"{i}@{v}" for i in train.images.image_id for v in views])
_, txt = tc.read(list(train.captions.text_id))
row_of = {i: k for k, i in enumerate(train.images.image_id)}
rows = np.array([row_of[i] for i in train.captions.image_id])
_, vp = ic.read([f"{i}@clean" for i in val.images.image_id])
_, vt = tc.read(list(val.captions.text_id))
for name, kw in [
    ("base", {}),
    ("drop0.4_wd0.1", dict(dropout=0.4, weight_decay=0.1)),
    ("no_logits", dict(image_features=("avg", "max"))),
    ("h512_drop0.3_ep30", dict(hidden_dim=512, dropout=0.3, epochs=30)),
    ("lr1e-3_drop0.3", dict(lr=1e-3, dropout=0.3)),
]:
    c = dataclasses.replace(cfg.lit, **kw)
    f = image_feature_matrix(parts, c.image_features).reshape(len(train.images), len(views), -1)
    vd = {
        "image": image_feature_matrix(vp, c.image_features),
        "text": vt["text"],
        "text_image_ids": val.captions.image_id.values,
        "image_ids": val.images.image_id.values,
    }
    t = time.time()
    m, h = train_lit(f, txt["text"], rows, c, vd, progress=False)
    best = max(h, key=lambda r: r["val"]["text_to_image"]["R@1"])
    print(
        name,
        "best ep",
        best["epoch"],
        "t2i",
        round(best["val"]["text_to_image"]["R@1"], 2),
        "R10",
        round(best["val"]["text_to_image"]["R@10"], 2),
        "i2t",
        round(best["val"]["image_to_text"]["R@1"], 2),
        f"{time.time() - t:.0f}s",
        flush=True,
    )
