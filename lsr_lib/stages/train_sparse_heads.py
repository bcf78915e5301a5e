"""Stage 02: train D2S heads per condition on stage 01's features, evaluate and export vectors.

Conditions (DESIGN.md section 2, :mod:`lsr_lib.train.d2s_conditions`): ``with_control`` is the
profile's ``d2s`` section (the paper's linear schedule by default); ``without_control`` is the same
with ``p = 0`` throughout. Both use the same seeds, so they see the same batches in the same order.
Each is trained by :func:`lsr_lib.artifacts.d2s_runs.train_condition`. ``no_exp`` is not a training run:
it evaluates a trained model with every text vector restricted to its caption's own tokens.

Writes under ``cfg.cache_dir / "d2s" / <condition>``: the training run (``best.safetensors``,
``best.json``, ``last_state.pt``; its fingerprint includes stage 01's content id) and
``vectors/<split>/{images,texts,texts_own_tokens}.npz`` (scipy CSR, the input of the analysis and
indexing stages; their fingerprint includes the run's content id, so a retrained model or changed
features re-export them). Both are artifacts of :mod:`lsr_lib.artifacts.catalog`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from ..data.collection import ImageCaptionSet
from ..config.profiles import Config, to_dict
from ..artifacts.catalog import (
    VECTOR_FILES,
    d2s_run_artifact,
    d2s_run_dir,
    dense_content_id,
    load_sparse,
    save_sparse,
    vectors_artifact,
)
from ..artifacts.d2s_runs import train_condition  # noqa: F401 (one condition's run, shared with stage 07; re-exported)
from ..storage.code_fingerprint import code_fingerprint
from ..storage.manifest import build_or_reuse
from ..train.d2s import encode_sparse, load_best

# shared with stage 07; re-exported
from ..train.d2s_conditions import (
    CONDITIONS,  # noqa: F401
    condition_config,
    eval_data,  # noqa: F401
    evaluate_sparse,  # noqa: F401
    tokenizer_for,  # noqa: F401
    training_pairs,  # noqa: F401
)
from ..sparse.expansion_control import caption_token_masks


def run_dir(cfg: Config, name: str) -> Path:
    """Folder of one condition's run and exported vectors."""
    return d2s_run_dir(cfg, name)


def export_vectors(
    cfg: Config, name: str, split: str, col: ImageCaptionSet, img: np.ndarray, txt: np.ndarray, tokenizer
) -> dict[str, sp.csr_matrix]:
    """CSR vectors of a split: images, texts (full expansion) and texts_own_tokens (``no_exp``); reused when up to
    date."""
    art = vectors_artifact(cfg, name, split)
    fingerprint = {
        "run": d2s_run_artifact(cfg, name).content_id(),
        "dense": dense_content_id(cfg),
        "split": split,
        **code_fingerprint(__name__),
    }

    def build(out: Path):
        model, _ = load_best(run_dir(cfg, name))
        d = cfg.d2s.eval_batch_size
        masks = caption_token_masks(col.captions["text"].tolist(), tokenizer)  # (N_txt, L) ids
        save_sparse(out / "images.npz", encode_sparse(model, torch.from_numpy(img), "image", d))  # (N_img, V)
        save_sparse(out / "texts.npz", encode_sparse(model, torch.from_numpy(txt), "text", d))  # (N_txt, V)
        # (N_txt, V)
        save_sparse(out / "texts_own_tokens.npz", encode_sparse(model, torch.from_numpy(txt), "text", d, masks))
        return [f"{k}.npz" for k in VECTOR_FILES], {"n_images": len(img), "n_texts": len(txt)}

    build_or_reuse(art, fingerprint, build)
    art.verify()
    return {k: load_sparse(art.root / f"{k}.npz") for k in VECTOR_FILES}


def sparse_vectors(
    cfg: Config,
    name: str,
    split: str,
    col: ImageCaptionSet,
    img: np.ndarray,
    txt: np.ndarray,
    tokenizer,
    own_tokens_only: bool = False,
):
    """(image CSR, text CSR) of a split; ``own_tokens_only``: the ``no_exp`` text vectors."""
    v = export_vectors(cfg, name, split, col, img, txt, tokenizer)
    return v["images"], v["texts_own_tokens" if own_tokens_only else "texts"]


def eval_splits(cfg: Config) -> tuple[str, ...]:
    """The splits stage 02 reports on: test, and the held-out art style's ``heldout`` when the profile has one."""
    return ("test",) + (("heldout",) if cfg.data.heldout_style else ())


def split_metrics(
    cfg: Config, split: str, col: ImageCaptionSet, img: np.ndarray, txt: np.ndarray, tokenizer, rows=None
) -> dict:
    """{dense teacher, each condition, each condition's ``no_exp``: metrics} on one split (per gallery within);
    ``rows`` (image rows, caption rows): on that subset of the split only (:func:`lsr_lib.data.heldout.matched_rows`).
    """
    from ..metrics.retrieval import evaluate_scores

    if rows is not None:
        from ..data.heldout import subset

        full = (col, img, txt)
        col, img, txt = subset(col, rows, col.name), img[rows[0]], txt[rows[1]]
        cut = lambda v: (v[0][rows[0]], v[1][rows[1]])  # noqa: E731
    else:
        full, cut = (col, img, txt), lambda v: v  # noqa: E731
    ids = (col.captions["image_id"].to_numpy(), col.images["image_id"].to_numpy())
    out = {
        "dense teacher": evaluate_scores(
            torch.from_numpy(txt @ img.T),
            *ids,
            cfg.evaluation.ks,
            cfg.evaluation.mrr_depth,
            image_gallery=col.image_gallery,
        )
    }
    for name in cfg.d2s_conditions:
        out[name] = evaluate_sparse(cfg, col, *cut(sparse_vectors(cfg, name, split, *full, tokenizer)))
        no_exp = sparse_vectors(cfg, name, split, *full, tokenizer, own_tokens_only=True)
        out[f"{name}, no_exp"] = evaluate_sparse(cfg, col, *cut(no_exp))
    return out


def measure_splits(cfg: Config, splits: dict, tokenizer) -> dict:
    """{split: :func:`split_metrics`} for :func:`eval_splits`, and with a held-out style, the in-style test on the
    held-out style's emoji (``test_matched_to_heldout``: the same emoji, galleries of comparable size)."""
    from ..data.heldout import MATCHED, matched_rows

    measured = {split: split_metrics(cfg, split, *splits[split], tokenizer) for split in eval_splits(cfg)}
    if "heldout" in measured:
        rows = matched_rows(splits["test"][0], splits["heldout"][0])
        measured[MATCHED] = split_metrics(cfg, "test", *splits["test"], tokenizer, rows=rows)
    return measured


def metrics_row(r: dict) -> dict:
    """One row of the test table: R@k / MRR@10 both directions, and FLOPs and vector lengths when ``r`` is sparse."""
    out = {f"T->I {m}": r["text_to_image"][m] for m in ("R@1", "R@5", "R@10", "MRR@10")}
    out.update({f"I->T {m}": r["image_to_text"][m] for m in ("R@1", "R@5", "R@10", "MRR@10")})
    s = r.get("sparsity_text_to_image")
    if s:
        out.update(
            {"FLOPs": s["flops"], "nnz caption": s["avg_nonzeros_query"], "nnz image": s["avg_nonzeros_document"]}
        )
    return out


def claim_checks(test: dict) -> dict:
    """The paper's claims measured on ``test`` (both conditions needed, else empty): R@1 kept of the teacher, "FLOPs
    with / without control", R@1 cost."""
    teacher_r1 = test["dense teacher"]["text_to_image"]["R@1"]
    ratio = lambda a, b: a / b if b else float("nan")  # noqa: E731
    checks = {}
    if {"with_control", "without_control"} <= set(test):
        w, wo = test["with_control"], test["without_control"]
        checks = {
            "with control: T->I R@1 as % of teacher": 100 * ratio(w["text_to_image"]["R@1"], teacher_r1),
            "FLOPs with / without control": ratio(
                w["sparsity_text_to_image"]["flops"], wo["sparsity_text_to_image"]["flops"]
            ),
            "T->I R@1 without - with control (points)": wo["text_to_image"]["R@1"] - w["text_to_image"]["R@1"],
        }
    return checks


def stage_results(cfg: Config, runs: dict, test: dict, checks: dict, measured: dict | None = None) -> dict:
    """The content of ``results/<profile>/02_d2s.json``: each condition's recipe and training record, the test metrics,
    the checks; ``measured``: {split: metrics} of the other evaluated splits (the held-out style's, and the in-style
    test on the held-out style's emoji)."""
    return {
        **{k: v for k, v in (measured or {}).items() if k != "test"},
        "conditions": {
            name: {
                "config": to_dict(condition_config(cfg.d2s, name)),
                "best_epoch": r["best_epoch"],
                "steps": r["steps"],
                "best_val": r["best_val"],
                "history": r["history"],
            }
            for name, r in runs.items()
        },
        "test": test,
        "checks": checks,
    }
