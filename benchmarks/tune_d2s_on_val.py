"""Try D2S settings on the validation split only (both conditions), printing val metrics per epoch.

    python benchmarks/tune_d2s_on_val.py TAG '{"batch_size": 128, "reg_weight_image": 0.01}'

Runs go to /tmp/d2s_trials/TAG/<condition>; the test split is never read. The settings tried for
the committed default are logged in results/default/02_d2s_val_trials.log.
"""

import sys
import dataclasses
import json
import time
from lsr_lib.config.profiles import load_config
from lsr_lib.stages.train_sparse_heads import condition_config, eval_data, tokenizer_for, training_pairs
from lsr_lib.stages.cache_dense_features import dense_dir, load_dense_dir
from lsr_lib.train.d2s import train_d2s

tag = sys.argv[1]
kw = json.loads(sys.argv[2])
cfg = load_config("default")
d2s = dataclasses.replace(cfg.d2s, **kw)
tok = tokenizer_for(cfg)
tr = load_dense_dir(dense_dir(cfg), "train")
va = load_dense_dir(dense_dir(cfg), "val")
train = training_pairs(*tr, tok)
val = eval_data(*va)
for cond in ["with_control", "without_control"]:
    t = time.time()
    r = train_d2s(condition_config(d2s, cond), train, val, f"/tmp/d2s_trials/{tag}/{cond}", progress=False)
    b = r["best_val"]
    print(
        tag,
        cond,
        "best_ep",
        r["best_epoch"],
        "t2i R@1",
        round(b["text_to_image"]["R@1"], 2),
        "i2t R@1",
        round(b["image_to_text"]["R@1"], 2),
        "flops",
        round(b["flops"], 2),
        "nnz img/txt",
        round(b["nnz_image"], 1),
        round(b["nnz_text"], 1),
        f"{time.time() - t:.0f}s",
        flush=True,
    )
    for h in r["history"][::5]:
        print(
            "   ep",
            h["epoch"],
            "p",
            round(h["p"], 2),
            "R1",
            round(h.get("val_t2i_R@1", float("nan")), 2),
            "flops",
            round(h.get("val", {}).get("flops", float("nan")), 2),
            "nnz",
            round(h["nnz_img"], 0),
            round(h["nnz_txt"], 0),
            flush=True,
        )
