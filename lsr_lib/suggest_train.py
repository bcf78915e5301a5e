"""Training of the stage-05 encoders: InfoNCE with in-batch negatives plus a FLOPs regulariser.

For a batch of (query, relevant document) pairs, ``S = Q @ D.T`` (sparse dot products, no
temperature) and the loss is the cross-entropy of each query over the batch's documents (other
queries' documents are the negatives; a document that is also relevant to the query, e.g. two
queries of one emoji in a batch, is masked out rather than counted as a negative). The FLOPs
regulariser (SPLADE: sum over terms of the squared mean weight) keeps MLM vectors sparse; its
weight grows quadratically over the LR warm-up. AdamW, linear warm-up then linear decay. The
best epoch by validation MRR@10 is kept (``best.safetensors`` + ``best.json``); a finished run
with the same fingerprint is reused, not retrained.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .suggest_config import SuggestConfig
from .suggest_model import SuggestModel
from .typed_config import to_dict

BEST_WEIGHTS, BEST_META = "best.safetensors", "best.json"


def take(batch: dict | None, rows) -> dict | None:
    """Rows of a {"states", "token_ids", "mask"} dict (or a tensor), trimmed to the longest text."""
    if batch is None:
        return None
    if isinstance(batch, torch.Tensor):
        return batch[rows]
    mask = batch["mask"][rows]
    L = max(int(mask.sum(1).max()), 1)
    return {"states": batch["states"][rows, :L], "token_ids": batch["token_ids"][rows, :L], "mask": mask[:, :L]}


def infonce_loss(q: torch.Tensor, d: torch.Tensor, doc_rows: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each query over the batch's documents; other positives are masked out."""
    scores = q @ d.T  # (B, B)
    same = doc_rows[:, None] == doc_rows[None, :]
    eye = torch.eye(len(q), dtype=torch.bool, device=q.device)
    scores = scores.masked_fill(same & ~eye, float("-inf"))
    return torch.nn.functional.cross_entropy(scores, torch.arange(len(q), device=q.device))


def flops_reg(x: torch.Tensor) -> torch.Tensor:
    """SPLADE's FLOPs regulariser: sum over terms of the squared mean activation."""
    return (x.abs().mean(dim=0) ** 2).sum()


@torch.no_grad()
def encode(model: SuggestModel, side: str, text: dict | None, patches: torch.Tensor | None, batch_size: int) -> torch.Tensor:
    """Dense (N, V) vectors of all queries or documents, in batches (fp32)."""
    n = len(patches) if text is None else len(text["mask"])
    out = []
    for s in range(0, n, batch_size):
        rows = torch.arange(s, min(n, s + batch_size))
        if side == "query":
            out.append(model.encode_queries(take(text, rows)))
        else:
            out.append(model.encode_docs(take(text, rows), take(patches, rows)))
    return torch.cat(out)


def mrr_at_10(q: torch.Tensor, d: torch.Tensor, pos_rows: np.ndarray) -> float:
    """Validation MRR@10 (one relevant document per query; ties count against the query)."""
    s = q @ d.T
    own = s[torch.arange(len(q)), torch.as_tensor(pos_rows)]
    rank = (s >= own[:, None]).sum(1)  # 1-based, ties pessimistic
    return float(torch.where(rank <= 10, 1.0 / rank, torch.zeros_like(own)).mean())


def train_suggest(config: str, cfg: SuggestConfig, train: dict, val: dict, out_dir: Path, fingerprint: dict, progress: bool = True) -> dict:
    """Train (or reuse) one configuration. ``train`` / ``val``: {"queries", "captions", "patches", "pos"}."""
    out_dir = Path(out_dir)
    meta_path = out_dir / BEST_META
    fp = {"config": config, "suggest": to_dict(cfg), **fingerprint}
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") == json.loads(json.dumps(fp)) and meta.get("complete"):
            return meta
    torch.manual_seed(cfg.seed)
    model = SuggestModel(config, seed=cfg.seed, mlm_bias_init=cfg.mlm_bias_init)
    n = len(train["pos"])
    steps_per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    warm = max(1, int(cfg.warmup_fraction * total))
    opt = torch.optim.AdamW(model.param_groups(cfg.lr_encoder, cfg.lr_vocab), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: (t + 1) / warm if t < warm else max(0.0, (total - t) / max(1, total - warm)))
    gen = torch.Generator().manual_seed(cfg.data_seed)
    use_bf16 = cfg.cpu_bf16 and not torch.cuda.is_available()
    history, best, step, t0 = [], None, 0, time.time()
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        losses = []
        for s in tqdm(range(0, n, cfg.batch_size), desc=f"{config} epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False):
            rows = order[s : s + cfg.batch_size]
            drows = torch.from_numpy(np.asarray(train["pos"]))[rows]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                q = model.encode_queries(take(train["queries"], rows))
                d = model.encode_docs(take(train["captions"], drows), take(train["patches"], drows))
            q, d = q.float(), d.float()
            ramp = min(1.0, step / warm) ** 2
            loss = infonce_loss(q, d, drows) + ramp * (cfg.reg_weight_query * flops_reg(q) + cfg.reg_weight_doc * flops_reg(d))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{config}: loss became {loss.item()} at epoch {epoch + 1}, step {step}; lower suggest.lr_encoder")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
        model.eval()
        qv = encode(model, "query", val["queries"], None, cfg.eval_batch_size)
        dv = encode(model, "doc", val["captions"], val["patches"], max(1, cfg.eval_batch_size // 8))
        rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_mrr@10": mrr_at_10(qv, dv, val["pos"]),
               "nnz_query": float((qv > 0).sum(1).float().mean()), "nnz_doc": float((dv > 0).sum(1).float().mean()), "seconds": time.time() - t0}
        history.append(rec)
        if best is None or rec["val_mrr@10"] > best["val_mrr@10"]:
            best = rec
            out_dir.mkdir(parents=True, exist_ok=True)
            tmp = out_dir / (BEST_WEIGHTS + ".tmp")
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
            tmp.replace(out_dir / BEST_WEIGHTS)
    meta = {"fingerprint": fp, "best": best, "history": history, "complete": True}
    tmp = meta_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(meta_path)
    return json.loads(json.dumps(meta))


def load_suggest_model(out_dir: Path) -> SuggestModel:
    """The best checkpoint of a finished run."""
    out_dir = Path(out_dir)
    meta_path = out_dir / BEST_META
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path} does not exist: train this configuration first (notebooks/05_image_suggestion.ipynb)")
    meta = json.loads(meta_path.read_text())
    model = SuggestModel(meta["fingerprint"]["config"], seed=meta["fingerprint"]["suggest"]["seed"])
    model.load_state_dict(load_file(str(out_dir / BEST_WEIGHTS)))
    return model.eval()
