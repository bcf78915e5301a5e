"""Stage 07 glue: how much of its dense teacher the D2S student keeps, against the training data (issue 18).

The paper's model keeps about 98% of BLIP's text->image R@1 on MSCOCO's 414k training pairs; the
embedded default keeps about 74% on about 5k. This stage trains both expansion-control conditions
of stage 02 on:

- **nested fractions** of the training images (``data_scale.fractions``): one seeded permutation of
  the train split's images (``subset_seed``), cut at each fraction; every caption of a kept image is
  kept, in stage 02's caption order. Fraction 1.0 is exactly stage 02's training set, so that point
  *is* stage 02's run (its cache is reused, not retrained);
- **more distillation data the teacher already provides** (``data_scale.extra_views``): all pairs,
  plus, for each of the first k augmented renderings of every training image that stage 01 cached
  for the LiT projection, the pairs (that view's teacher vector, each caption of the image). The
  teacher scores these pairs itself; nothing is labelled by hand.

Every run keeps the recipe of the profile's ``d2s`` section, epochs included, so a smaller set
also means fewer optimiser steps (as when the paper's 200 epochs meet a smaller dataset). Each
point is evaluated on the test split exactly as stage 02 (exact sparse product), with seeds as
``lsr_lib.run.seeds``: seed k is the profile's seed variant (its own teacher and D2S seeds), so
retention is paired per seed. Runs live under ``<seed cache>/data_scale/<condition>_<label>``.

Each job's row (and each measured part of the knob search) is kept in ``results/<profile>/07_measured/``
with the digest of what it depends on (:func:`measured_part`; committed for the default profile): a rerun,
on this machine or a fresh clone, trains only what its code, environment, config or seed features make
new, so a study longer than one sitting finishes over several.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..artifacts.catalog import ArtifactError, d2s_run_dir, dense_content_id, dense_dir, load_dense_dir, read_result
from ..config.profiles import Config
from ..artifacts.d2s_runs import train_condition
from ..train.d2s import encode_sparse, load_best, train_d2s
from ..train.d2s_conditions import condition_config, eval_data, evaluate_sparse, tokenizer_for, training_pairs

RESULT = "07_data_scale"
STAGE = "07_data_scale_study"
MEASURED = "07_measured"


def measured_part(cfg: Config, inputs: dict, k: int, name: str, measure, **what):
    """``measure()`` once per input record, kept in ``results/<profile>/07_measured/<name>.json``
    (:mod:`lsr_lib.storage.measured_parts`). The record: stage 07's code and environment fingerprints, the
    ``data``, ``evaluation`` and ``d2s`` config, seed variant ``k``'s features and ``what`` the part is (its
    condition and size, or trial): another size or trial added to the profile measures only itself."""
    from ..storage.measured_parts import measured_once

    record = {key: v for key, v in inputs.items() if key not in ("seeds_dense", "config")}
    record |= {
        "config": cfg.section_hash("data", "evaluation", "d2s"),
        "seed_variant": k,
        "dense": inputs["seeds_dense"][str(k)],
        **what,
    }
    return measured_once(cfg.results_dir / MEASURED, name, record, measure)


@dataclass(frozen=True)
class Point:
    """One training-set size: a fraction of the images, plus ``views`` augmented renderings of each."""

    fraction: float
    views: int = 0

    @property
    def label(self) -> str:
        return f"{self.fraction:g}" + (f"+{self.views}v" if self.views else "")

    @property
    def relative_size(self) -> float:
        """Pairs as a multiple of stage 02's training set."""
        return self.fraction * (1 + self.views)


def points(cfg: Config) -> list[Point]:
    """The study's sizes, smallest first."""
    ds = cfg.data_scale
    return [Point(f) for f in ds.fractions] + [Point(1.0, v) for v in ds.extra_views]


def nested_subset(n_images: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted rows of the first ``ceil(fraction x n)`` images of one seeded permutation: the sets nest."""
    order = np.random.default_rng(seed).permutation(n_images)
    return np.sort(order[: max(1, math.ceil(fraction * n_images))])


def point_pairs(
    col, img: np.ndarray, txt: np.ndarray, tokenizer, point: Point, subset_seed: int, views: np.ndarray | None = None
) -> tuple[dict, int]:
    """(training pairs of one point, number of distinct images); ``views``: (V, N_img, D) teacher vectors of augmented
    renderings."""
    keep = nested_subset(len(col.images), point.fraction, subset_seed)
    if len(keep) == len(col.images):
        sub, sub_img, sub_txt = col, img, txt  # exactly stage 02's training set (same order, so same fingerprint)
    else:
        ids = set(col.images["image_id"].iloc[keep])
        cap_rows = np.flatnonzero(col.captions["image_id"].isin(ids).to_numpy())
        sub = type(col)(
            col.name, col.images.iloc[keep].reset_index(drop=True), col.captions.iloc[cap_rows].reset_index(drop=True)
        )
        sub_img, sub_txt = img[keep], txt[cap_rows]
    pairs = training_pairs(sub, sub_img, sub_txt, tokenizer)
    if point.views:
        if views is None or len(views) < point.views:
            raise ValueError(
                f"point {point.label} needs {point.views} augmented views per training image; got "
                f"{0 if views is None else len(views)}"
            )
        row_of = {i: k for k, i in enumerate(col.images["image_id"])}
        rows = np.array([row_of[i] for i in sub.captions["image_id"]])  # caption -> its image's row
        extra_img = [torch.from_numpy(views[v][rows]) for v in range(point.views)]
        pairs = {
            "img_emb": torch.cat([pairs["img_emb"], *extra_img]),
            "txt_emb": torch.cat([pairs["txt_emb"]] * (1 + point.views)),
            "txt_mask_ids": torch.cat([pairs["txt_mask_ids"]] * (1 + point.views)),
        }
    return pairs, len(sub.images)


def run_dir(cfg_k: Config, condition: str, point: Point) -> Path:
    """Stage 02's run for the full training set, else the study's own folder."""
    if point == Point(1.0):
        return d2s_run_dir(cfg_k, condition)
    return cfg_k.cache_dir / "data_scale" / f"{condition}_{point.label}"


def view_vectors(cfg_k: Config, views: int, img_train: np.ndarray) -> np.ndarray:
    """(views, N_train_images, D) teacher vectors of augmented renderings, after checking that the clean
    rendering through the same path gives stage 01's train vectors (else the views are another teacher's)."""
    from ..artifacts.tower_features import train_view_vectors

    vecs = train_view_vectors(cfg_k, views, include_clean=True)
    if not np.allclose(vecs[0], img_train, atol=1e-5):
        raise ArtifactError(
            f"the LiT projection does not reproduce stage 01's train vectors in {dense_dir(cfg_k)}: "
            f"rerun stage 01 for profile {cfg_k.profile} (python -m lsr_lib.run.pipeline --profile {cfg_k.profile} "
            "--stages 01)"
        )
    return vecs[1:]


def seed_inputs(cfg: Config) -> dict:
    """Content ids of each study seed's stage-01 features (ArtifactError names the seed variant to run first)."""
    inputs, missing = current_inputs(cfg)
    if missing:
        k = missing[0]
        raise ArtifactError(
            f"dense features of {cfg.seed_variant(k).profile} are missing\nseed {k} of the data-scale study needs "
            "its seed variant's stages 01 and 02 first: "
            f"python -m lsr_lib.run.seeds --profile {cfg.profile} --seeds {k} (or make seeds)"
        )
    return inputs["seeds_dense"]


def evaluate_model(cfg_k: Config, model, col, img: np.ndarray, txt: np.ndarray, return_ranks: bool = False) -> dict:
    """A D2S model on a split as stage 02 evaluates it: both sides encoded, scored by the exact sparse product."""
    d = cfg_k.d2s.eval_batch_size
    return evaluate_sparse(
        cfg_k,
        col,
        encode_sparse(model, torch.from_numpy(img), "image", d),
        encode_sparse(model, torch.from_numpy(txt), "text", d),
        return_ranks=return_ranks,
    )


def run_study(cfg: Config, device: torch.device, progress: bool = True, inputs: dict | None = None) -> list[dict]:
    """Train (or reuse) every (seed, condition, point) and evaluate it on the test split; one row each, kept as a
    measured part (:func:`measured_part`; ``inputs``: stage 07's, computed when None)."""
    from ..storage.progress import progress_bar

    seed_inputs(cfg)  # fails early, naming the missing seed variant
    inputs = inputs if inputs is not None else current_inputs(cfg)[0]
    tokenizer = tokenizer_for(cfg)
    pts = points(cfg)
    view_seeds = set(cfg.data_scale.extra_view_seeds or cfg.data_scale_seeds)
    # the fractions of every seed first,
    jobs = [(k, c, p) for k in cfg.data_scale_seeds for c in cfg.d2s_conditions for p in pts if not p.views]
    jobs += [
        (k, c, p) for k in cfg.data_scale_seeds for c in cfg.d2s_conditions for p in pts if p.views and k in view_seeds
    ]  # then the costly extra-view points
    rows, loaded = [], {}

    def measure(k: int, cond: str, point: Point) -> dict:
        nonlocal loaded
        cfg_k = cfg.seed_variant(k)
        if k not in loaded:  # one seed's data at a time
            tr = load_dense_dir(dense_dir(cfg_k), "train")
            val = load_dense_dir(dense_dir(cfg_k), "val")
            test = load_dense_dir(dense_dir(cfg_k), "test")
            teacher = (read_result(cfg_k, "02_d2s") or {}).get("results", {}).get("test", {}).get("dense teacher")
            loaded = {k: [tr, None, eval_data(*val), test, teacher]}
        if point.views and loaded[k][1] is None:
            loaded[k][1] = view_vectors(cfg_k, max(p.views for p in pts), loaded[k][0][1])
        (tr_col, tr_img, tr_txt), views, val, (te_col, te_img, te_txt), teacher = loaded[k]
        pairs, n_images = point_pairs(tr_col, tr_img, tr_txt, tokenizer, point, cfg.data_scale.subset_seed, views)
        if point == Point(1.0):
            run = train_condition(cfg_k, cond, pairs, val, device, progress)  # stage 02's own run and fingerprint
        else:
            run = train_d2s(
                condition_config(cfg_k.d2s, cond),
                pairs,
                val,
                run_dir(cfg_k, cond, point),
                device=device,
                progress=progress,
                inputs={
                    "dense": dense_content_id(cfg_k),
                    "data_scale": {
                        "fraction": point.fraction,
                        "views": point.views,
                        "subset_seed": cfg.data_scale.subset_seed,
                    },
                },
            )
        ev = evaluate_model(cfg_k, load_best(run_dir(cfg_k, cond, point))[0], te_col, te_img, te_txt)
        if teacher is None:
            from ..metrics.retrieval import evaluate_collection

            teacher = evaluate_collection(te_col, te_img, te_txt, cfg.evaluation.ks, cfg.evaluation.mrr_depth)
        t2i, dense_t2i, sp_ = ev["text_to_image"], teacher["text_to_image"], ev["sparsity_text_to_image"]
        hist = run["history"]
        # training + validation, as recorded by the run
        return {
            "seed": k,
            "condition": cond,
            "point": point.label,
            "fraction": point.fraction,
            "views": point.views,
            "relative_size": point.relative_size,
            "pairs": int(pairs["img_emb"].shape[0]),
            "images": n_images,
            "steps": int(run.get("steps") or 0),
            "best_epoch": run.get("best_epoch"),
            "val T->I R@1": run["best_val"]["text_to_image"]["R@1"] if run.get("best_val") else None,
            "T->I R@1": t2i["R@1"],
            "T->I R@10": t2i["R@10"],
            "teacher T->I R@1": dense_t2i["R@1"],
            "teacher T->I R@10": dense_t2i["R@10"],
            "retention R@1": t2i["R@1"] / dense_t2i["R@1"],
            "retention R@10": t2i["R@10"] / dense_t2i["R@10"],
            "I->T R@1": ev["image_to_text"]["R@1"],
            "FLOPs": sp_["flops"],
            "nnz caption": sp_["avg_nonzeros_query"],
            "nnz image": sp_["avg_nonzeros_document"],
            "seconds": float(sum(h["seconds"] for h in hist)) if all("seconds" in h for h in hist) else None,
        }

    for k, cond, point in progress_bar(jobs, desc="data-scale study", disable=not progress):
        rows.append(
            measured_part(
                cfg,
                inputs,
                k,
                f"seed{k}_{cond}_{point.label}",
                lambda: measure(k, cond, point),
                condition=cond,
                point=point.label,
                subset_seed=cfg.data_scale.subset_seed,
            )
        )
    return rows


SUMMARY_COLUMNS = (
    "pairs",
    "T->I R@1",
    "T->I R@10",
    "retention R@1",
    "retention R@10",
    "FLOPs",
    "nnz caption",
    "nnz image",
)


def summary(rows):
    """Mean and sample std over seeds per (condition, point), sizes in order; ``n`` seeds."""
    import pandas as pd

    df = pd.DataFrame(rows)
    g = df.groupby(["condition", "relative_size", "point"], sort=True)
    out = (
        g[list(SUMMARY_COLUMNS)]
        .mean()
        .join(g[list(SUMMARY_COLUMNS[1:])].std(ddof=1).add_suffix(" std"))
        .join(g.size().rename("n"))
    )
    return out.reset_index(level="relative_size")


def retention_figure(rows, cfg: Config):
    """Teacher retention (T->I R@1, and R@10) against training pairs on a log axis, mean +- std over seeds, with the
    paper's point."""
    from ..results import figures

    s = summary(rows).reset_index()
    fig, axes = figures.plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("retention R@1", "retention R@10")):
        for cond, g in s.groupby("condition", sort=False):
            g = g.sort_values("pairs")
            ax.errorbar(
                g["pairs"],
                100 * g[metric],
                yerr=100 * g[f"{metric} std"].fillna(0),
                marker="o",
                capsize=3,
                label=cond.replace("_", " "),
            )
            for _, r in g.iterrows():
                ax.annotate(
                    r["point"], (r["pairs"], 100 * r[metric]), fontsize=6, xytext=(3, -9), textcoords="offset points"
                )
        ax.set(
            xscale="log",
            xlabel="training pairs (log)",
            ylabel=f"{metric.split()[1]}: sparse / dense teacher (%)",
            title=f"teacher retention, test T->I {metric.split()[1]}",
        )
    axes[0].scatter(
        [cfg.data_scale.paper_pairs],
        [100 * cfg.data_scale.paper_retention],
        marker="*",
        s=120,
        color="k",
        label="paper (BLIP, MSCOCO)",
        zorder=3,
    )
    axes[0].axhline(95, color="0.6", lw=0.8, ls="--")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def growth(rows) -> dict:
    """Per condition: mean retention R@1 at the smallest and largest sizes and the slope per doubling of pairs (least
    squares over seeds' means)."""
    s = summary(rows).reset_index()
    out = {}
    for cond, g in s.groupby("condition", sort=False):
        g = g.sort_values("pairs")
        slope = (
            float(np.polyfit(np.log2(g["pairs"].to_numpy(float)), 100 * g["retention R@1"].to_numpy(float), 1)[0])
            if len(g) > 1
            else float("nan")
        )
        out[cond] = {
            "smallest": g.iloc[0]["point"],
            "retention_R@1_smallest": float(g.iloc[0]["retention R@1"]),
            "largest": g.iloc[-1]["point"],
            "retention_R@1_largest": float(g.iloc[-1]["retention R@1"]),
            "points_per_doubling_R@1": slope,
        }
    return out


def current_inputs(cfg: Config) -> tuple[dict, list[int]]:
    """Stage 07's inputs (``stage_inputs``), and the study seeds whose seed variant is not built here.

    A fresh clone's ``make main`` builds seed 0 only; the seed variants' features exist after
    ``make seeds``. Those missing are left out of ``seeds_dense`` and listed, so that reading the
    committed study can still check everything that is here.
    """
    from ..artifacts.catalog import stage_inputs

    missing: list[int] = []
    return stage_inputs(cfg, STAGE, missing), missing


def study_rows(
    cfg: Config,
    inputs: dict,
    run: bool | None = None,
    device: torch.device | None = None,
    progress: bool = True,
    unchecked: list[int] | None = None,
) -> list[dict]:
    """The study's rows: trained and evaluated now (``run``; None follows ``data_scale.run``), or read from
    ``results/<profile>/07_data_scale.json`` while it records these inputs; otherwise empty, with a message
    saying how to measure it (stale numbers are never shown as current). ``unchecked``: seeds whose
    features are not built here (:func:`current_inputs`): the file is compared on everything else, and
    the message says which seeds were not checked.
    """
    if run is None:
        run = cfg.data_scale.run == "stage"
    if run:
        return run_study(cfg, device or torch.device("cpu"), progress, inputs)
    command = f"`make data-scale` (python -m lsr_lib.run.pipeline --profile {cfg.profile} --stages 07 --force --bench)"
    found = read_current(cfg, RESULT, inputs, "data-scale study", command, unchecked)
    return found["rows"] if found else []


def read_current(
    cfg: Config, result: str, inputs: dict, what: str, command: str, unchecked: list[int] | None = None
) -> dict | None:
    """The ``results`` of ``results/<profile>/<result>.json`` while it records ``inputs``, else None with a
    message saying how to measure it (stale numbers are never shown as current). ``unchecked``: seeds
    left out of ``inputs["seeds_dense"]`` (:func:`current_inputs`), compared on everything else."""
    from ..storage.manifest import digest

    doc = read_result(cfg, result)
    if doc is None:
        print(f"no {what} yet: {command} measures it")
        return None
    stored = doc.get("inputs") or {}
    if unchecked:
        stored = {
            **stored,
            "seeds_dense": {k: v for k, v in (stored.get("seeds_dense") or {}).items() if int(k) not in unchecked},
        }
    if (digest(stored) if unchecked else doc.get("inputs_fingerprint")) != digest(inputs):
        print(
            f"results/{cfg.profile}/{result}.json was measured on other inputs (features, D2S recipe or settings "
            f"changed): not shown; rerun {command}"
        )
        return None
    print(
        f"{what} read from results/{cfg.profile}/{result}.json (measured at commit "
        f"{doc['provenance'].get('commit', '?')}; inputs current"
        + (
            f"; seeds {unchecked} are not built here, so their features were not checked: `make seeds` builds them)"
            if unchecked
            else ")"
        )
    )
    return doc["results"]


def stage02_reproduced(cfg: Config, runs) -> dict[tuple[int, str], bool]:
    """Per (seed, condition): whether the study's 100% point (rows of ``runs``, a DataFrame) gives stage 02's test T->I
    R@1."""
    consistent = {}
    for _, r in (runs[runs["point"] == "1"] if len(runs) else runs).iterrows():
        stage02 = read_result(cfg.seed_variant(int(r["seed"])), "02_d2s")
        if stage02 is not None and r["condition"] in stage02["results"]["test"]:
            consistent[int(r["seed"]), r["condition"]] = (
                abs(stage02["results"]["test"][r["condition"]]["text_to_image"]["R@1"] - r["T->I R@1"]) < 1e-9
            )
    return consistent


def stage_results(rows: list[dict], table, consistent: dict) -> dict:
    """The content of ``results/<profile>/07_data_scale.json``: the rows, their summary over seeds, the growth, the
    stage-02 check."""
    return {
        "rows": rows,
        "summary": table.reset_index().to_dict(orient="records"),
        "growth": growth(rows),
        "stage02_reproduced": {f"seed {k} {c}": v for (k, c), v in consistent.items()},
    }
