"""Dense2Sparse training with and without probabilistic expansion control (DESIGN.md section 2).

The method itself (distillation loss, L1 / FLOPs regulariser with its quadratic warm-up, the
Bernoulli expansion gate) is :mod:`lsr_lib.train.d2s_method`; this module is the loop around it,
in readable steps: the data (:func:`pairs_on_device`, :func:`epoch_batches`), one optimiser step
(:func:`training_step`), one epoch of steps with their gate draws (:func:`train_epoch`),
validation (:func:`validate_sparse`, full expansion) and the checkpoint rule (:func:`keep_if_best`);
:func:`train_d2s` reads them top to bottom.

AdamW (weight decay 0), LR 1e-3 for the first projection and 5e-5 for LayerNorm + vocabulary
layer, linear warm-up over 20% of the steps then linear decay to 0. The best epoch by val
text->image R@1 (full expansion) is kept as ``best.safetensors`` + ``best.json``;
``last_state.pt`` (atomic, every epoch) makes an interrupted run resume to the same final numbers
as an uninterrupted one (CPU). ``seed`` (initialisation), ``data_seed`` (batch order) and
``gate_seed`` (gate) are separate generators: switching expansion control on or off does not
change the data order.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch
from ..storage.progress import notice, progress_bar as tqdm

from ..config.d2s import D2SConfig
from ..config.typed import ConfigError, to_dict
from ..storage.atomic import folder_lock
from ..storage.checkpoint import BEST_WEIGHTS, TrainingRun, load_verified_best
from .d2s_method import ExpansionGate, d2s_objective
from ..sparse.expansion_control import dense_masks
from ..metrics.retrieval import evaluate_scores
from ..sparse.head import D2SModel, mlm_head_init, vocab_init_file
from ..storage.manifest import sha256_file
from ..storage.code_fingerprint import code_fingerprint
from ..metrics.sparse_stats import flops_from_df

PRODUCER = "stage 02 (notebooks/02_train_sparse_heads.ipynb)"


def build_model(cfg: D2SConfig, dense_dim: int) -> D2SModel:
    """A fresh D2S model: vocabulary layer from ``cfg.vocab_init``, projections from ``cfg.seed``."""
    parts = mlm_head_init(cfg.vocab_init)
    if cfg.hidden_dim is not None and cfg.hidden_dim != parts["weight"].shape[1]:
        raise ConfigError(
            f"hidden_dim: {cfg.hidden_dim} but vocab_init {cfg.vocab_init!r} has H = {parts['weight'].shape[1]}"
        )
    return D2SModel.build(dense_dim, parts, torch.Generator().manual_seed(cfg.seed), cfg.shared_head)


def make_optimizer(
    model: D2SModel, cfg: D2SConfig, total_steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR, int]:
    """AdamW with the two LR groups and the warm-up / linear-decay schedule; also returns T (warm-up steps)."""
    proj = [p for h in model.heads.values() for p in h.proj.parameters()]
    vocab = [p for h in model.heads.values() for p in (*h.norm.parameters(), *h.vocab.parameters())]
    groups = [{"params": proj, "lr": cfg.lr_projection}, {"params": vocab, "lr": cfg.lr_vocab}]
    # fused: one kernel per parameter group instead of a dozen passes over the 11.7M-weight vocabulary
    # layer; 1.17x per step on 2 CPU cores (benchmarks/d2s_optimizer.py, results/benchmarks/02_d2s_optimizer_cpu.json)
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, eps=cfg.adam_eps, fused=True)
    warmup = int(total_steps * cfg.warmup_fraction)  # as transformers' get_linear_schedule_with_warmup

    def factor(step: int) -> float:
        return step / max(1, warmup) if step < warmup else max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor), warmup


def training_step(
    model: D2SModel,
    opt,
    sched,
    scaler,
    cfg: D2SConfig,
    img: torch.Tensor,
    txt: torch.Tensor,
    txt_mask: Optional[torch.Tensor],
    step: int,
    warmup: int,
) -> dict:
    """One optimiser step on a batch: (B, d) image / text embeddings, optional (B, V) text masks."""
    dev = img.device.type
    amp = (cfg.mixed_precision and dev == "cuda") or (cfg.cpu_bf16 and dev == "cpu")
    dtype = torch.bfloat16 if cfg.amp_dtype == "bf16" or dev == "cpu" else torch.float16
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device_type=dev, dtype=dtype, enabled=amp):
        s_img, s_txt = model(img, txt, txt_mask)  # (B, V), (B, V)
        loss, distill, reg = d2s_objective(s_img, s_txt, img, txt, cfg, step, warmup)  # scalars (d2s_method)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    sched.step()
    with torch.no_grad():
        nnz_i, nnz_t = (s_img > 0).sum(1).float().mean(), (s_txt > 0).sum(1).float().mean()
        vals = torch.stack(
            [loss.detach().float(), distill.detach().float(), reg.detach().float(), nnz_i, nnz_t]
        ).tolist()  # one sync
    return dict(zip(("loss", "distill", "reg", "nnz_img", "nnz_txt"), vals))


@torch.no_grad()
def encode_dense(
    model: D2SModel,
    emb: torch.Tensor,
    side: str,
    batch_size: int = 1024,
    masks: Optional[torch.Tensor] = None,
    on_device: bool = False,
) -> torch.Tensor:
    """(N, d) embeddings -> (N, V) float32 term weights as a dense tensor (``masks``: (N, L) ids, text only).

    On the CPU unless ``on_device`` (then on the model's device, for scoring there in chunks).
    """
    if side not in ("image", "text") or (side == "image" and masks is not None):
        raise ValueError(f"side must be 'image' or 'text' (masks only for text), got {side!r}")
    dev, was_training = next(model.parameters()).device, model.training
    model.eval()
    out = []
    for s in range(0, len(emb), batch_size):
        e = emb[s : s + batch_size].to(dev).float()  # (b, d)
        m = None if masks is None else dense_masks(masks[s : s + batch_size].to(dev), model.vocab_size)  # (b, V)
        block = (model.encode_image(e) if side == "image" else model.encode_text(e, m)).float()  # (b, V)
        out.append(block if on_device else block.cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, model.vocab_size, device=dev if on_device else "cpu")


def encode_sparse(
    model: D2SModel, emb: torch.Tensor, side: str, batch_size: int = 1024, masks: Optional[torch.Tensor] = None
) -> sp.csr_matrix:
    """(N, d) embeddings -> scipy CSR (N, V) float32, full expansion unless ``masks`` (N, L) are given."""
    parts = []
    for s in range(0, len(emb), batch_size):  # one dense (b, V) block at a time
        block = encode_dense(
            model, emb[s : s + batch_size], side, batch_size, None if masks is None else masks[s : s + batch_size]
        )
        parts.append(sp.csr_matrix(block.numpy()))
    return (
        sp.vstack(parts, format="csr").astype(np.float32)
        if parts
        else sp.csr_matrix((0, model.vocab_size), dtype=np.float32)
    )


def load_best(out_dir: str | Path, device: str | torch.device = "cpu") -> tuple[D2SModel, dict]:
    """The best checkpoint of a run and its sidecar metadata."""
    weights, meta = load_verified_best(out_dir, f"D2S run {Path(out_dir).name}", PRODUCER)
    model = D2SModel(**meta["architecture"])
    model.load_state_dict(weights)
    return model.to(device).eval(), meta


# CPU validation: a dense (N_txt x V) @ (V x N_img) product up to this size (the default's val split: 1.5e10)
DENSE_SCORING_MAX_FLOPS = 5e10
SPARSE_SCORING_MAX_DENSITY = 0.01  # above it the image vectors are too dense for sparse products to pay off


def scoring_method(n_txt: int, n_img: int, vocab: int, image_density: float, device: torch.device) -> str:
    """ "dense" (a GEMM per caption chunk, on the device) or "sparse" (CSR products on the host).

    A GPU always scores densely. On a CPU the dense product of MSCOCO's val split is 7.6 TFLOP of
    mostly zeros (about 80 s on 2 cores) where the CSR product of vectors with ~100 terms takes about
    a second, so large splits of sparse vectors go through CSR; small ones (the default's and smoke's)
    keep the dense product, whose sums their committed numbers were computed with.
    """
    if (
        device.type != "cpu"
        or 2.0 * n_txt * n_img * vocab <= DENSE_SCORING_MAX_FLOPS
        or image_density > SPARSE_SCORING_MAX_DENSITY
    ):
        return "dense"
    return "sparse"


def validate_sparse(model: D2SModel, val: dict, cfg: D2SConfig, scoring: str = "auto") -> dict:
    """Val metrics (both directions, full expansion), non-zeros per vector and FLOPs.

    Computed in chunks of ``cfg.eval_batch_size`` captions, never the whole (N_txt, V) caption
    matrix (25,000 x 30,522 floats, 3 GB at MSCOCO val size, that were scored on the host before).
    ``scoring`` "dense": the image vectors (N_img, V) stay on the model's device and each caption
    chunk is scored there by one product; "sparse": images and each chunk as CSR, scored by sparse
    products on the host; "auto": :func:`scoring_method`. The (N_txt, N_img) scores stay where
    they were computed for the ranks; only metrics and per-term counts come back.
    """
    img = encode_dense(model, val["img_emb"], "image", cfg.eval_batch_size, on_device=True)  # (N_img, V), on the device
    img_on = img > 0  # (N_img, V)
    n_txt, (n_img, vocab) = len(val["txt_emb"]), img.shape
    if scoring == "auto":
        scoring = scoring_method(n_txt, n_img, vocab, float(img_on.float().mean()), img.device)
    images = sp.csr_matrix(img.cpu().numpy()) if scoring == "sparse" else img  # (N_img, V): CSR (host) or device
    img_df, nnz_image = img_on.sum(0).cpu().numpy(), float(img_on.sum(1).float().mean())  # (V,), scalar
    del img, img_on  # the sparse path keeps only the CSR copy
    scores, nnz_text, txt_df = score_captions(model, val["txt_emb"], images, cfg.eval_batch_size)  # (N_txt, N_img)
    out = evaluate_scores(scores, val["text_image_ids"], val["image_ids"], image_gallery=val.get("image_gallery"))
    out["nnz_image"] = nnz_image
    out["nnz_text"] = nnz_text
    out["flops"] = flops_from_df(txt_df, img_df, n_txt, n_img)
    return out


def score_captions(
    model: D2SModel, txt_emb: torch.Tensor, images: torch.Tensor | sp.csr_matrix, batch_size: int
) -> tuple[torch.Tensor, float, np.ndarray]:
    """Captions (N_txt, d), encoded and scored chunk by chunk against ``images`` (N_img, V).

    ``images``: a tensor on the model's device (one product per chunk there) or a CSR matrix (sparse
    products on the host). Returns scores (N_txt, N_img), mean non-zeros per caption, term df (V,).
    """
    (n_img, vocab), on_device = images.shape, isinstance(images, torch.Tensor)
    scores = torch.empty(len(txt_emb), n_img, device=images.device if on_device else "cpu")  # (N_txt, N_img)
    txt_rows, txt_df = [], np.zeros(vocab, dtype=np.int64)  # non-zeros per caption chunk, (V,) df
    for s in range(0, len(txt_emb), batch_size):
        t = encode_dense(model, txt_emb[s : s + batch_size], "text", batch_size, on_device=True)  # (b, V)
        if on_device:
            scores[s : s + len(t)] = t @ images.T  # (b, N_img)
        else:
            scores[s : s + len(t)] = torch.from_numpy((sp.csr_matrix(t.cpu().numpy()) @ images.T).toarray())
        on = t > 0  # (b, V)
        txt_rows.append(on.sum(1).cpu())
        txt_df += on.sum(0).cpu().numpy()
        del t, on
    return scores, float(torch.cat(txt_rows).float().mean()) if txt_rows else 0.0, txt_df


# ---- the loop, step by step: data, one epoch of training steps, validation, checkpoint ----------------


def pairs_on_device(
    cfg: D2SConfig, train: dict, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """The train pairs on ``device``: image and text embeddings (N, d) and caption token ids (N, L) or None."""
    img_all, txt_all = train["img_emb"].float().to(device), train["txt_emb"].float().to(device)  # (N, d)
    if txt_all.shape != img_all.shape:
        raise ValueError(
            f"train img_emb {tuple(img_all.shape)} and txt_emb {tuple(txt_all.shape)} must have one row per pair"
        )
    if train.get("txt_mask_ids") is None and any(cfg.p(e) > 0 for e in range(cfg.epochs)):
        raise ValueError(
            "train['txt_mask_ids'] is needed for expansion control (p > 0); build it with caption_token_masks"
        )
    mask_ids = train["txt_mask_ids"].to(device) if train.get("txt_mask_ids") is not None else None  # (N, L)
    return img_all, txt_all, mask_ids


def build_run(cfg: D2SConfig, dense_dim: int, n_pairs: int, device: torch.device) -> tuple[dict, int, int]:
    """A fresh run's model, optimiser, LR schedule and grad scaler, with T (warm-up steps) and the steps per epoch."""
    model = build_model(cfg, dense_dim).to(device)
    steps = n_pairs // cfg.batch_size if cfg.drop_last else math.ceil(n_pairs / cfg.batch_size)
    if cfg.max_steps_per_epoch is not None:
        steps = min(steps, cfg.max_steps_per_epoch)  # a bounded run (the rehearsal): each epoch stops early
    opt, sched, warmup = make_optimizer(model, cfg, steps * cfg.epochs)
    fp16 = cfg.mixed_precision and device.type == "cuda" and cfg.amp_dtype == "fp16"
    scaler = torch.amp.GradScaler(device.type, enabled=fp16)
    return {"model": model, "optimizer": opt, "scheduler": sched, "scaler": scaler}, warmup, steps


def run_fingerprint(cfg: D2SConfig, img_all: torch.Tensor, txt_all: torch.Tensor, inputs: Optional[dict]) -> dict:
    """What a finished run must match to be reused: config, code, the pairs' size and sum, inputs, vocab-init file."""
    (n, d), train_sum = img_all.shape, round(float(img_all.double().sum() + txt_all.double().sum()), 6)
    fingerprint = {
        "config": to_dict(cfg),
        **code_fingerprint(__name__),
        "n_pairs": n,
        "dense_dim": d,
        "train_sum": train_sum,
        "inputs": inputs or {},
    }
    if (vocab_file := vocab_init_file(cfg.vocab_init)) is not None and vocab_file.exists():
        # a file's content, not only its name: another file there retrains
        fingerprint["vocab_init_sha256"] = sha256_file(vocab_file)
    return fingerprint


def resume_or_start(tr: TrainingRun, resume: bool, run: dict, data_gen: torch.Generator, gate: ExpansionGate) -> dict:
    """The progress record: a saved state's (loaded into the run objects and both generators) or a fresh one."""
    saved = tr.load_state() if resume else None
    if saved is None:
        return {"epoch": 0, "step": 0, "history": [], "best_epoch": None, "best_r1": -1.0}
    for key, obj in run.items():
        obj.load_state_dict(saved[key])
    data_gen.set_state(saved["data_gen"])
    gate.load_state_dict(saved["gate"])
    return saved["progress"]


def epoch_batches(n_pairs: int, cfg: D2SConfig, steps: int, data_gen: torch.Generator, device: torch.device) -> list:
    """The epoch's batches of pair indices, (B,) each: one shuffle from the data stream, untouched by the gate."""
    order = torch.randperm(n_pairs, generator=data_gen).to(device)  # (N,)
    return [order[b * cfg.batch_size : (b + 1) * cfg.batch_size] for b in range(steps)]


def train_epoch(
    run: dict, cfg: D2SConfig, pairs: tuple, batches: list, gate: ExpansionGate, st: dict, warmup: int, bar
) -> dict:
    """One training step per batch, each after its gate draw; the epoch's record (step metrics averaged)."""
    img_all, txt_all, mask_ids = pairs  # (N, d), (N, d), (N, L) or None
    model, opt, t0, p = run["model"], run["optimizer"], time.perf_counter(), cfg.p(st["epoch"])
    sums = dict.fromkeys(("loss", "distill", "reg", "nnz_img", "nnz_txt", "masked"), 0.0)
    model.train()
    for b, idx in enumerate(batches):  # idx: (B,)
        z = gate.draw(p, len(idx))  # (B,) True = text masked to its caption's own tokens
        m = gate.text_masks(z, mask_ids[idx], model.vocab_size) if mask_ids is not None else None  # (B, V) or None
        out = training_step(
            model, opt, run["scheduler"], run["scaler"], cfg, img_all[idx], txt_all[idx], m, st["step"], warmup
        )
        out["masked"] = float(z.float().mean())
        sums = {k: v + out[k] for k, v in sums.items()}
        st["step"] += 1
        _show_step(bar, b == len(batches) - 1 or b % 10 == 0, out, st, p)
    means = {k: v / max(1, len(batches)) for k, v in sums.items()}
    rec = {"epoch": st["epoch"] + 1, "p": p, "lr_vocab": opt.param_groups[1]["lr"], **means}
    rec["train_seconds"] = time.perf_counter() - t0
    return rec


def _show_step(bar, describe: bool, out: dict, st: dict, p: float) -> None:
    """Advance the progress bar; when ``describe``, show loss, p, the last val R@1 and non-zeros per vector."""
    bar.update(1)
    if describe:
        last_r1 = next((h["val_t2i_R@1"] for h in reversed(st["history"]) if "val_t2i_R@1" in h), float("nan"))
        nnz = f"{out['nnz_img']:.0f}/{out['nnz_txt']:.0f}"
        loss = f"{out['loss']:.3f}"
        bar.set_postfix(epoch=st["epoch"] + 1, loss=loss, p=f"{p:.2f}", val_R1=f"{last_r1:.1f}", nnz=nnz)


def validation_due(cfg: D2SConfig, epoch: int) -> bool:
    """Whether the 1-based ``epoch`` is validated: every ``eval_every_epochs``, and always the last."""
    return epoch % cfg.eval_every_epochs == 0 or epoch == cfg.epochs


def validation_record(model: D2SModel, val: dict, cfg: D2SConfig) -> dict:
    """The epoch's val metrics (full expansion), its text->image R@1 and the seconds they took."""
    t_val = time.perf_counter()
    metrics = validate_sparse(model, val, cfg)
    return {"val": metrics, "val_t2i_R@1": metrics["text_to_image"]["R@1"], "val_seconds": time.perf_counter() - t_val}


def keep_if_best(tr: TrainingRun, model: D2SModel, cfg: D2SConfig, st: dict, rec: dict, without_val: bool) -> None:
    """Save the epoch as ``best.safetensors`` if its val R@1 is the best after the skipped early share.

    Without validation the last epoch is kept.
    """
    epoch = rec["epoch"]
    eligible = epoch > cfg.select_from_fraction * cfg.epochs or epoch == cfg.epochs
    if (eligible and rec.get("val_t2i_R@1", -math.inf) > st["best_r1"]) or (without_val and epoch == cfg.epochs):
        st["best_r1"], st["best_epoch"] = rec.get("val_t2i_R@1", float("nan")), epoch
        meta = {"epoch": epoch, "val": rec.get("val"), "config": to_dict(cfg), "architecture": model.architecture()}
        tr.save_best(model.state_dict(), meta)


def end_epoch(
    tr: TrainingRun,
    st: dict,
    rec: dict,
    t0: float,
    run: dict,
    fingerprint: dict,
    data_gen: torch.Generator,
    gate: ExpansionGate,
) -> None:
    """Append the epoch's record and save the resumable state: progress, run objects and both generators."""
    rec["seconds"] = time.perf_counter() - t0
    st["history"].append(rec)
    st["epoch"] += 1
    snapshot = {"fingerprint": fingerprint, "data_gen": data_gen.get_state(), "gate": gate.state_dict(), "progress": st}
    snapshot.update({k: obj.state_dict() for k, obj in run.items()})
    tr.save_state(snapshot)


def finish_run(tr: TrainingRun, st: dict, cfg: D2SConfig, out_dir: Path, warmup: int) -> dict:
    """The run's result (history, best epoch and its val metrics, paths); a completed run is recorded as finished."""
    best = next((h for h in st["history"] if h["epoch"] == st["best_epoch"]), {})
    result = {
        "history": st["history"],
        "best_epoch": st["best_epoch"],
        "best_val": best.get("val"),
        "best_path": str(out_dir / BEST_WEIGHTS),
        "steps": st["step"],
        "warmup_steps": warmup,
        "completed": st["epoch"] >= cfg.epochs,
    }
    return tr.finish(result) if result["completed"] else result


def train_d2s(
    cfg: D2SConfig,
    train: dict,
    val: Optional[dict],
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    progress: bool = True,
    resume: bool = True,
    stop_after_epoch: Optional[int] = None,
    inputs: Optional[dict] = None,
) -> dict:
    """Train (or resume) a D2S model; returns per-epoch history (1-based epochs), best epoch and paths.

    ``train``: ``img_emb`` (N, d), ``txt_emb`` (N, d), one row per (caption, image) pair, and ``txt_mask_ids``
    (N, L) from ``caption_token_masks`` (needed when p can be > 0). ``val``: ``img_emb``, ``txt_emb``,
    ``image_ids``, ``text_image_ids`` (or None: the last epoch is kept). ``stop_after_epoch``: return after that
    many epochs. ``inputs``: content ids of the pairs' artifacts (in the fingerprint). A finished run with the
    same fingerprint is returned without training; training holds the folder's lock, so a second run waits.
    """
    cfg.validate()
    with folder_lock(out_dir, f"D2S run {Path(out_dir).name}", notice):
        out_dir, device = Path(out_dir), torch.device(device)
        img_all, txt_all, mask_ids = pairs_on_device(cfg, train, device)  # (N, d), (N, d), (N, L) or None
        run, warmup, steps = build_run(cfg, img_all.shape[1], len(img_all), device)  # model, optimizer, ...
        data_gen, gate = torch.Generator().manual_seed(cfg.data_seed), ExpansionGate(cfg.gate, cfg.gate_seed)
        fingerprint = run_fingerprint(cfg, img_all, txt_all, inputs)
        tr = TrainingRun(out_dir, fingerprint, f"D2S run {out_dir.name}", PRODUCER)
        if resume and (done := tr.finished()) is not None:
            return done
        st = resume_or_start(tr, resume, run, data_gen, gate)  # epoch, step, history, best_epoch, best_r1
        bar = tqdm(total=steps * cfg.epochs, initial=st["step"], disable=not progress, desc="D2S", dynamic_ncols=True)
        while st["epoch"] < cfg.epochs and (stop_after_epoch is None or st["epoch"] < stop_after_epoch):
            t0, batches = time.perf_counter(), epoch_batches(len(img_all), cfg, steps, data_gen, device)  # (B,) each
            rec = train_epoch(run, cfg, (img_all, txt_all, mask_ids), batches, gate, st, warmup, bar)
            if val is not None and validation_due(cfg, rec["epoch"]):
                rec.update(validation_record(run["model"], val, cfg))
            keep_if_best(tr, run["model"], cfg, st, rec, without_val=val is None)
            end_epoch(tr, st, rec, t0, run, fingerprint, data_gen, gate)
        bar.close()
        return finish_run(tr, st, cfg, out_dir, warmup)
