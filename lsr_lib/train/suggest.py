"""Training of the stage-05 encoders: InfoNCE with in-batch negatives plus a FLOPs regulariser.

For a batch of (query, relevant document) pairs, ``S = Q @ D.T`` (sparse dot products, no
temperature) and the loss is the cross-entropy of each query over the batch's documents (other
queries' documents are the negatives; a document that is also relevant to the query, e.g. two
queries of one emoji in a batch, is masked out rather than counted as a negative). The FLOPs
regulariser (SPLADE: sum over terms of the squared mean weight) keeps MLM vectors sparse; its
weight grows quadratically over the LR warm-up. AdamW, linear warm-up then linear decay. The
best epoch by validation MRR@10 is kept (``best.safetensors`` + ``best.json``); a finished run
with the same fingerprint is reused, not retrained, and an interrupted one goes on after its last
finished epoch (``last_state.pt``: weights, optimiser, schedule and data order), as if never stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from ..storage.progress import notice, progress_bar as tqdm

from ..metrics.retrieval import first_relevant_rank, metrics_from_ranks
from ..config.suggest import SuggestConfig
from ..sparse.suggest_encoders import SuggestModel
from ..config.typed import to_dict
from ..storage.code_fingerprint import code_fingerprint
from ..storage.atomic import folder_lock

# file names re-exported
from ..storage.checkpoint import BEST_META, BEST_WEIGHTS, TrainingRun, load_verified_best  # noqa: F401

TOWER_WEIGHTS = "towers.safetensors"
PRODUCER = "stage 05 (notebooks/05_image_suggestion.ipynb)"


def take(batch, rows, device: torch.device | str = "cpu"):
    """Rows of cached states (a {"states", "token_ids", "mask"} dict trimmed to the longest text, or a
    patch tensor), or of live tower inputs (anything with ``take_rows(rows)``:
    ``lsr_lib.stages.image_suggestion.LiveText``)."""
    if batch is None:
        return None
    if hasattr(batch, "take_rows"):
        return batch.take_rows(rows)
    if isinstance(batch, torch.Tensor):
        return batch[rows].to(device)
    mask = batch["mask"][rows]
    L = max(int(mask.sum(1).max()), 1)
    return {
        "states": batch["states"][rows, :L].to(device),
        "token_ids": batch["token_ids"][rows, :L].to(device),
        "mask": mask[:, :L].to(device),
    }


def n_rows(batch) -> int:
    return len(batch) if hasattr(batch, "take_rows") or isinstance(batch, torch.Tensor) else len(batch["mask"])


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
def encode(
    model: SuggestModel, side: str, text, patches, batch_size: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Dense (N, V) vectors of all queries or documents, in batches (fp32, on the CPU)."""
    n = n_rows(patches) if text is None else n_rows(text)
    out = []
    for s in range(0, n, batch_size):
        rows = torch.arange(s, min(n, s + batch_size))
        if side == "query":
            out.append(model.encode_queries(take(text, rows, device)).cpu())
        else:
            out.append(model.encode_docs(take(text, rows, device), take(patches, rows, device)).cpu())
    return torch.cat(out)


def mrr_at_10(
    q: torch.Tensor, d: torch.Tensor, pos_rows: np.ndarray, relevant_pairs: np.ndarray | None = None
) -> float:
    """Validation MRR@10: the rank of the first relevant document (ties count against the query, as everywhere).

    ``relevant_pairs``: (n, 2) (query row, document row) of every qrel; without it, ``pos_rows`` (one relevant
    document per query). With several art styles a query has a relevant image in each style: counting only the
    training positive would call the other styles' images of the same emoji wrong."""
    relevant = torch.zeros(len(q), len(d), dtype=torch.bool)
    if relevant_pairs is None:
        relevant[torch.arange(len(q)), torch.as_tensor(pos_rows)] = True
    else:
        pairs = torch.as_tensor(np.asarray(relevant_pairs, dtype=np.int64))
        relevant[pairs[:, 0], pairs[:, 1]] = True
    return metrics_from_ranks(first_relevant_rank(q @ d.T, relevant), ks=(), mrr_depth=10)["MRR@10"]


def train_suggest(
    config: str,
    cfg: SuggestConfig,
    train: dict,
    val: dict,
    out_dir: Path,
    fingerprint: dict,
    progress: bool = True,
    towers: torch.nn.Module | None = None,
    device: torch.device | str = "cpu",
) -> dict:
    """Train (or reuse) one configuration. ``train`` / ``val``: {"queries", "captions", "patches", "pos"}, and in
    ``val`` optionally "relevant" (every qrel as (query row, document row), for validation MRR@10).

    With ``towers`` (``suggest.finetune_towers``: the inputs are live ``LiveText`` / ``LivePatches``
    reading those towers), the towers train too, at ``lr_vocab``, and are saved beside the heads.
    Training holds the folder's lock: a second run of the same folder waits, then reuses the finished run.
    """
    with folder_lock(out_dir, f"suggestion run {config}", notice):
        return _train_locked(config, cfg, train, val, out_dir, fingerprint, progress, towers, device)


def _train_locked(
    config: str,
    cfg: SuggestConfig,
    train: dict,
    val: dict,
    out_dir: Path,
    fingerprint: dict,
    progress: bool,
    towers: torch.nn.Module | None,
    device: torch.device | str,
) -> dict:
    """:func:`train_suggest`, under the lock of ``out_dir``."""
    out_dir = Path(out_dir)
    # a caller's "code" (a superset) wins
    fp = {"config": config, "suggest": to_dict(cfg), **code_fingerprint(__name__), **fingerprint}
    tr = TrainingRun(out_dir, fp, f"suggestion run {config}", PRODUCER)
    if (done := tr.finished()) is not None:
        return done
    torch.manual_seed(cfg.seed)
    device = torch.device(device)
    model = SuggestModel(config, seed=cfg.seed, mlm_bias_init=cfg.mlm_bias_init, patch_grid=cfg.patch_grid).to(device)
    n = len(train["pos"])
    steps_per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    warm = max(1, int(cfg.warmup_fraction * total))
    groups = model.param_groups(cfg.lr_encoder, cfg.lr_vocab)
    if towers is not None:
        groups.append({"params": [p for p in towers.parameters() if p.requires_grad], "lr": cfg.lr_vocab})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: (t + 1) / warm if t < warm else max(0.0, (total - t) / max(1, total - warm))
    )
    gen = torch.Generator().manual_seed(cfg.data_seed)
    use_amp = cfg.cpu_bf16 if device.type == "cpu" else True  # bf16 autocast: CPU when asked, always on GPU
    run = {"model": model, "opt": opt, "sched": sched, **({"towers": towers} if towers is not None else {})}
    history, best, step, t0 = [], None, 0, time.time()
    start = 0
    if (saved := tr.load_state()) is not None:  # an interrupted run of this fingerprint: go on after its last epoch
        for key, obj in run.items():
            obj.load_state_dict(saved[key])
        gen.set_state(saved["data_gen"])
        history, best, step, start = saved["history"], saved["best"], saved["step"], len(saved["history"])
        t0 -= history[-1]["seconds"]
        notice(f"suggestion run {config}: resuming after epoch {start} of {cfg.epochs} ({tr.root})")
    for epoch in range(start, cfg.epochs):
        model.train()
        if towers is not None:
            towers.train()
        order = torch.randperm(n, generator=gen)
        losses = []
        for s in tqdm(
            range(0, n, cfg.batch_size),
            desc=f"{config} epoch {epoch + 1}/{cfg.epochs}",
            disable=not progress,
            leave=False,
        ):
            rows = order[s : s + cfg.batch_size]
            drows = torch.as_tensor(train["pos"])[rows]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                q = model.encode_queries(take(train["queries"], rows, device))
                d = model.encode_docs(take(train["captions"], drows, device), take(train["patches"], drows, device))
            drows = drows.to(device)
            q, d = q.float(), d.float()
            ramp = min(1.0, step / warm) ** 2
            loss = infonce_loss(q, d, drows) + ramp * (
                cfg.reg_weight_query * flops_reg(q) + cfg.reg_weight_doc * flops_reg(d)
            )
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{config}: loss became {loss.item()} at epoch {epoch + 1}, step {step}; lower suggest.lr_encoder"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
        model.eval()
        if towers is not None:
            towers.eval()
        qv = encode(model, "query", val["queries"], None, cfg.eval_batch_size, device)
        dv = encode(model, "doc", val["captions"], val["patches"], max(1, cfg.eval_batch_size // 8), device)
        rec = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            "val_mrr@10": mrr_at_10(qv, dv, val["pos"], val.get("relevant")),
            "nnz_query": float((qv > 0).sum(1).float().mean()),
            "nnz_doc": float((dv > 0).sum(1).float().mean()),
            "seconds": time.time() - t0,
        }
        history.append(rec)
        if best is None or rec["val_mrr@10"] > best["val_mrr@10"]:
            best = rec
            timeless = {k: v for k, v in best.items() if k != "seconds"}  # best.json is checksummed: no wall-clock time
            tuned = {TOWER_WEIGHTS: towers.state_dict()} if towers is not None else None
            tr.save_best(model.state_dict(), {"fingerprint": fp, "best": timeless}, tuned)
        snapshot = {key: obj.state_dict() for key, obj in run.items()}
        tr.save_state({**snapshot, "data_gen": gen.get_state(), "history": history, "best": best, "step": step})
    meta = {"fingerprint": fp, "best": best, "history": history, "complete": True}
    return tr.finish(json.loads(json.dumps(meta)), (TOWER_WEIGHTS,) if towers is not None else ())


def load_suggest_model(out_dir: Path) -> SuggestModel:
    """The best checkpoint of a finished run."""
    weights, meta = load_verified_best(out_dir, f"suggestion run {Path(out_dir).name}", PRODUCER)
    run = meta["fingerprint"]["suggest"]  # patch_grid is recorded only when set (opt-in key)
    model = SuggestModel(meta["fingerprint"]["config"], seed=run["seed"], patch_grid=run.get("patch_grid", 7))
    model.load_state_dict(weights)
    return model.eval()


def load_tuned_towers(out_dir: Path, towers: torch.nn.Module) -> torch.nn.Module:
    """Load a fine-tuned run's tower weights (``suggest.finetune_towers``) into ``towers``."""
    path = Path(out_dir) / TOWER_WEIGHTS
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: this run did not fine-tune the towers (suggest.finetune_towers was false), or "
            "it did not finish"
        )
    towers.load_state_dict(
        load_verified_best(out_dir, f"suggestion run {Path(out_dir).name}", PRODUCER, extra=TOWER_WEIGHTS)[0]
    )
    return towers.eval()
