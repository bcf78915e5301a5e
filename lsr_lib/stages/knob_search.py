"""Stage 07, part 2: the method's own knobs, chosen on validation only (issue 18).

Part 1 (``data_scale_study``) shows retention growing with training data. This part asks how far the
method's knobs get on the embedded default's data: more distillation data the teacher provides
(augmented renderings, as part 1's extra views), steps, batch, regulariser and its weight, the
teacher's temperature and the learning rates (``knob_search.trials`` in the profile).

1. **Search** on seed ``cfg.seed``: every trial trains with expansion control; only the validation
   split is read. The uncontrolled model of stage 02's recipe sets the FLOPs budget
   (``knob_search.flops_budget`` x its val FLOPs).
2. **Choice**: the qualifying trial with the best val text->image R@1 (ties: fewer FLOPs).
3. **Test**: the chosen trial is trained on every seed of the data-scale study (the profile's seed
   variants, each with its own teacher) and evaluated on the test split exactly as stage 02, beside
   that seed's recipe runs; retention, FLOPs and a paired test per query against the recipe.

Runs live under ``<seed cache>/knob_search/<trial>``; a trial named in the file with no changes is
stage 02's run itself. Results: ``results/<profile>/07_knob_search.json``. Every trial's validation row,
the reference, each frontier point and each (seed, model) test evaluation (with its per-query ranks, for
the paired test) is kept in ``results/<profile>/07_measured/`` as part 1's rows are
(:func:`~lsr_lib.stages.data_scale_study.measured_part`): a rerun trains only what changed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..artifacts.catalog import d2s_run_dir, dense_content_id, dense_dir, load_dense_dir, read_result
from ..config.d2s import D2SConfig
from ..config.profiles import KNOB_FIELDS, Config, KnobTrial
from ..artifacts.d2s_runs import train_condition
from ..train.d2s import encode_sparse, load_best, train_d2s
from ..train.d2s_conditions import condition_config, eval_data, evaluate_sparse, tokenizer_for
from .data_scale_study import Point, evaluate_model, measured_part, point_pairs, view_vectors  # stage 07's other part

RESULT = "07_knob_search"
CONDITION = "with_control"


def trial_config(base: D2SConfig, trial: KnobTrial) -> D2SConfig:
    """The recipe with the trial's knobs, with expansion control (``ConfigError``-style ValueError on a bad value)."""
    changes = {f: getattr(trial, f) for f in KNOB_FIELDS if f != "reg_weight" and getattr(trial, f) is not None}
    if trial.reg_weight is not None:  # one knob for both sides
        changes |= {"reg_weight_image": trial.reg_weight, "reg_weight_text": trial.reg_weight}
    cfg = condition_config(dataclasses.replace(base, **changes), CONDITION)
    cfg.validate()
    return cfg


def trial_dir(cfg_k: Config, trial: KnobTrial) -> Path:
    """Stage 02's run for the recipe, else the search's own folder."""
    return d2s_run_dir(cfg_k, CONDITION) if trial.is_recipe else cfg_k.cache_dir / "knob_search" / trial.name


class SeedData:
    """One seed variant's splits, teacher test numbers and (lazily) augmented-view vectors."""

    def __init__(self, cfg_k: Config):
        self.cfg = cfg_k
        self.train = load_dense_dir(dense_dir(cfg_k), "train")
        self.val = eval_data(*load_dense_dir(dense_dir(cfg_k), "val"))
        self.test = load_dense_dir(dense_dir(cfg_k), "test")
        self.tokenizer = tokenizer_for(cfg_k)
        self._views: np.ndarray | None = None

    def pairs(self, trial: KnobTrial) -> dict:
        col, img, txt = self.train
        if trial.views and (self._views is None or len(self._views) < trial.views):
            self._views = view_vectors(self.cfg, trial.views, img)
        return point_pairs(col, img, txt, self.tokenizer, Point(1.0, trial.views), 0, self._views)[0]


def train_trial(data: SeedData, trial: KnobTrial, device: torch.device, progress: bool = True) -> dict:
    """Train (or reuse) one trial on one seed; returns ``train_d2s``'s record."""
    cfg_k = data.cfg
    inputs = (
        {"dense": dense_content_id(cfg_k)}
        if trial.is_recipe
        else {"dense": dense_content_id(cfg_k), "knob_search": {"views": trial.views}}
    )
    return train_d2s(
        trial_config(cfg_k.d2s, trial),
        data.pairs(trial),
        data.val,
        trial_dir(cfg_k, trial),
        device=device,
        progress=progress,
        inputs=inputs,
    )


def val_row(trial: KnobTrial, run: dict) -> dict:
    """The search table's row of one trial: its knobs and best validation numbers."""
    b = run["best_val"]
    knobs = {k: v for k, v in dataclasses.asdict(trial).items() if k != "name" and v not in (None, 0)}
    return {
        "trial": trial.name,
        "changes": ", ".join(f"{k}={v}" for k, v in knobs.items()) or "(stage 02's recipe)",
        "steps": int(run.get("steps") or 0),
        "best_epoch": run.get("best_epoch"),
        "val T->I R@1": b["text_to_image"]["R@1"],
        "val T->I R@10": b["text_to_image"]["R@10"],
        "val I->T R@1": b["image_to_text"]["R@1"],
        "val FLOPs": b["flops"],
        "val nnz image": b["nnz_image"],
        "val nnz caption": b["nnz_text"],
        "seconds": float(sum(h.get("seconds", 0.0) for h in run["history"])),
    }


def uncontrolled_reference(data: SeedData, device: torch.device) -> dict:
    """Stage 02's uncontrolled model of the seed (its finished run, reused): its val numbers set the FLOPs budget."""
    cfg = data.cfg
    b = train_condition(cfg, "without_control", data.pairs(KnobTrial("recipe")), data.val, device, progress=False)[
        "best_val"
    ]
    return {
        "val T->I R@1": b["text_to_image"]["R@1"],
        "val FLOPs": b["flops"],
        "FLOPs budget": cfg.knob_search.flops_budget * b["flops"],
    }


def choose(rows: list[dict], budget: float) -> dict | None:
    """The qualifying row (val FLOPs <= budget) with the best val T->I R@1, ties to fewer FLOPs; None when none
    qualifies."""
    ok = [r for r in rows if r["val FLOPs"] <= budget]
    return max(ok, key=lambda r: (r["val T->I R@1"], -r["val FLOPs"])) if ok else None


class LazySeedData:
    """``SeedData`` of one seed variant, loaded on first use (a rerun that reuses every part loads nothing)."""

    def __init__(self, cfg_k: Config):
        self.cfg, self._data = cfg_k, None

    def __call__(self) -> SeedData:
        if self._data is None:
            self._data = SeedData(self.cfg)
        return self._data


def search(
    cfg: Config, device: torch.device, progress: bool = True, inputs: dict | None = None
) -> tuple[list[dict], dict, dict | None]:
    """(one val row per trial, the uncontrolled reference, the chosen row) on seed ``cfg.seed``; each a measured
    part (``inputs``: stage 07's)."""
    from ..storage.progress import progress_bar

    inputs = inputs if inputs is not None else _inputs(cfg)
    data = LazySeedData(cfg)
    rows = [
        measured_part(
            cfg,
            inputs,
            cfg.seed,
            f"knob_val_{t.name}",
            lambda: val_row(t, train_trial(data(), t, device, progress)),
            part="knob val",
            trial=dataclasses.asdict(t),
        )
        for t in progress_bar(cfg.knob_search.trials, desc="knob search (val)", disable=not progress)
    ]
    ref = measured_part(
        cfg,
        inputs,
        cfg.seed,
        "knob_reference",
        lambda: uncontrolled_reference(data(), device),
        part="knob reference",
        flops_budget=cfg.knob_search.flops_budget,
    )
    return rows, ref, choose(rows, ref["FLOPs budget"])


def _inputs(cfg: Config) -> dict:
    from .data_scale_study import current_inputs

    return current_inputs(cfg)[0]


def evaluated_on_test(
    data: SeedData, name: str, trial: KnobTrial | None, device: torch.device, progress: bool = True
) -> dict:
    """One model of one seed on the test split: ``{"row": its table row, "ranks": each caption's first relevant
    rank, capped at 11}`` (all the paired R@1 / R@10 test needs). ``trial`` None: stage 02's uncontrolled model."""
    cfg_k = data.cfg
    teacher = read_result(cfg_k, "02_d2s")["results"]["test"]["dense teacher"]
    col, img, txt = data.test
    if trial is None:
        train_condition(cfg_k, "without_control", data.pairs(KnobTrial("recipe")), data.val, device, progress)
        model, _ = load_best(d2s_run_dir(cfg_k, "without_control"))
        run = None
    else:
        run = train_trial(data, trial, device, progress)
        model, _ = load_best(trial_dir(cfg_k, trial))
    ev = evaluate_model(cfg_k, model, col, img, txt, return_ranks=True)
    t2i, sp_ = ev["text_to_image"], ev["sparsity_text_to_image"]
    row = {
        "seed": cfg_k.seed,
        "model": name,
        "T->I R@1": t2i["R@1"],
        "T->I R@10": t2i["R@10"],
        "I->T R@1": ev["image_to_text"]["R@1"],
        "teacher T->I R@1": teacher["text_to_image"]["R@1"],
        "retention R@1": t2i["R@1"] / teacher["text_to_image"]["R@1"],
        "retention R@10": t2i["R@10"] / teacher["text_to_image"]["R@10"],
        "FLOPs": sp_["flops"],
        "nnz caption": sp_["avg_nonzeros_query"],
        "nnz image": sp_["avg_nonzeros_document"],
        "val T->I R@1": run["best_val"]["text_to_image"]["R@1"] if run else None,
    }
    ranks = np.minimum(ev["ranks"]["text_to_image"], 11)  # (N_captions,) first relevant rank; > 10 is a miss
    return {"row": row, "ranks": ranks.astype(int).tolist()}


def test_rows(
    cfg: Config, chosen: KnobTrial, device: torch.device, progress: bool = True, inputs: dict | None = None
) -> tuple[list[dict], dict]:
    """The chosen trial and the recipe on every seed, on the test split: (one row per seed and model, paired tests).
    Each (seed, model) is a measured part (``inputs``: stage 07's)."""
    from ..metrics.significance import compare_conditions
    from ..storage.progress import progress_bar

    inputs = inputs if inputs is not None else _inputs(cfg)
    rows, per_seed = [], {}
    recipe = KnobTrial("recipe")
    for k in progress_bar(cfg.data_scale_seeds, desc="chosen setting (test)", disable=not progress):
        data = LazySeedData(cfg.seed_variant(k))
        per_seed[k] = {}
        for name, trial in (
            ("recipe, without control", None),
            ("recipe, with control", recipe),
            (f"{chosen.name}, with control", chosen),
        ):
            part = measured_part(
                cfg,
                inputs,
                k,
                f"knob_test_seed{k}_{trial.name if trial else 'recipe_without_control'}",
                lambda: evaluated_on_test(data(), name, trial, device, progress),
                part="knob test",
                model=name,
                trial=dataclasses.asdict(trial) if trial else None,
            )
            rows.append(part["row"])
            ranks = np.asarray(part["ranks"])
            per_seed[k][name] = {"R@1": (ranks <= 1).astype(float), "R@10": (ranks <= 10).astype(float)}
    paired = compare_conditions(
        {
            k: {
                "R@1": (v[f"{chosen.name}, with control"]["R@1"], v["recipe, with control"]["R@1"]),
                "R@10": (v[f"{chosen.name}, with control"]["R@10"], v["recipe, with control"]["R@10"]),
            }
            for k, v in per_seed.items()
        }
    )
    return rows, paired


def knob_inputs(cfg: Config, inputs: dict) -> dict:
    """Stage 07's inputs plus the search's own settings (the study's result file does not depend on them)."""
    return {**inputs, "knob_search": cfg.section_hash("knob_search")}


def run_knob_search(cfg: Config, device: torch.device, progress: bool = True, inputs: dict | None = None) -> dict:
    """Search on validation, choose, then test the choice on every seed: the result file's content."""
    import pandas as pd

    from ..metrics.significance import mean_std
    from .data_scale_study import seed_inputs

    seed_inputs(cfg)  # fails early, naming a missing seed variant
    inputs = inputs if inputs is not None else _inputs(cfg)
    rows, ref, chosen = search(cfg, device, progress, inputs)
    out = {
        "val": rows,
        "reference": ref,
        "chosen": chosen["trial"] if chosen else None,
        "test": [],
        "paired": None,
        "summary": [],
        "frontier": frontier_rows(cfg, progress, device, inputs) if cfg.knob_search.frontier_docs else [],
    }
    if chosen is None:
        return out
    trial = next(t for t in cfg.knob_search.trials if t.name == chosen["trial"])
    out["test"], out["paired"] = test_rows(cfg, trial, device, progress, inputs)
    df = pd.DataFrame(out["test"])
    for model, g in df.groupby("model", sort=False):
        out["summary"].append({"model": model, **{m: mean_std(g[m].to_numpy(float)) for m in TEST_METRICS}})
    return out


TEST_METRICS = ("T->I R@1", "T->I R@10", "retention R@1", "retention R@10", "FLOPs", "nnz caption", "nnz image")


def knob_results(
    cfg: Config,
    inputs: dict,
    run: bool | None = None,
    device: torch.device | None = None,
    progress: bool = True,
    unchecked: list[int] | None = None,
) -> dict | None:
    """The search's results: measured now (``run``; None follows ``knob_search.run``) or read from
    ``results/<profile>/07_knob_search.json`` while it records these inputs (else None, with a message)."""
    from .data_scale_study import read_current

    if run is None:
        run = cfg.knob_search.run == "stage"
    if run:
        return run_knob_search(cfg, device or torch.device("cpu"), progress, inputs)
    command = f"`make data-scale` (python -m lsr_lib.run.pipeline --profile {cfg.profile} --stages 07 --force --bench)"
    return read_current(cfg, RESULT, knob_inputs(cfg, inputs), "knob search", command, unchecked)


def goal_check(res: dict) -> dict:
    """Issue 18's goal on the test split, from the seeds' means: retention R@1 >= 95% with FLOPs <= half of the
    uncontrolled recipe's."""
    s = {r["model"]: r for r in res["summary"]}
    chosen = next(m for m in s if m.startswith(f"{res['chosen']},"))
    ret, flops, unc = (
        s[chosen]["retention R@1"]["mean"],
        s[chosen]["FLOPs"]["mean"],
        s["recipe, without control"]["FLOPs"]["mean"],
    )
    return {
        "chosen": res["chosen"],
        "retention R@1": ret,
        "FLOPs": flops,
        "uncontrolled FLOPs": unc,
        "FLOPs share": flops / unc,
        "recipe retention R@1": s["recipe, with control"]["retention R@1"]["mean"],
        "retention >= 95%": ret >= 0.95,
        "FLOPs <= half": flops <= 0.5 * unc,
    }


def search_figure(res: dict):
    """Validation T->I R@1 against val FLOPs, one point per trial, with the FLOPs budget and the uncontrolled
    reference."""
    from ..results import figures

    fig, ax = figures.plt.subplots(figsize=(6, 3.8))
    # labels alternate above / below along x: neighbours stay readable
    for i, r in enumerate(sorted(res["val"], key=lambda r: r["val FLOPs"])):
        chosen = r["trial"] == res["chosen"]
        ax.scatter(
            r["val FLOPs"],
            r["val T->I R@1"],
            s=60 if chosen else 25,
            marker="*" if chosen else "o",
            color="C3" if chosen else "C0",
            zorder=3,
        )
        ax.annotate(
            r["trial"],
            (r["val FLOPs"], r["val T->I R@1"]),
            fontsize=7,
            xytext=(4, 2 if i % 2 else -9),
            textcoords="offset points",
        )
    ref = res["reference"]
    ax.scatter(ref["val FLOPs"], ref["val T->I R@1"], marker="s", color="0.3", label="recipe without control")
    ax.axvline(ref["FLOPs budget"], color="0.5", ls="--", lw=0.8, label="FLOPs budget")
    ax.set(
        xscale="log",
        xlabel="val FLOPs (log)",
        ylabel="val T->I R@1",
        title="knob search with expansion control (validation split)",
    )
    ax.xaxis.set_major_formatter(figures.plt.matplotlib.ticker.ScalarFormatter())
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def frontier_rows(
    cfg: Config, progress: bool = True, device: torch.device | None = None, inputs: dict | None = None
) -> list[dict]:
    """Every trial's seed-``cfg.seed`` model, and the uncontrolled recipe, on the effectiveness-latency frontier (issue
    16).

    Effectiveness: test text->image R@1 / R@10 (exact sparse product; reported, never used to choose).
    Latency: single-query p50 of the exact engine ``knob_search.frontier_engine`` over ``knob_search.frontier_docs``
    synthetic
    documents drawn from the model's own test image vectors (as stage 04's scale benchmark), with the
    postings a query reads there: the training-side options compared by what a query costs, not only FLOPs.
    Each model's point is a measured part (``inputs``: stage 07's); a model not trained here is trained first.
    """
    from ..index.latency import benchmark_index, postings_per_query, synthetic_collection
    from ..storage.progress import progress_bar

    inputs = inputs if inputs is not None else _inputs(cfg)
    device = device or torch.device("cpu")
    data = LazySeedData(cfg)
    n_docs, n_lat, d = cfg.knob_search.frontier_docs, cfg.index.latency_queries, cfg.d2s.eval_batch_size
    engine = cfg.knob_search.frontier_engine

    def measure(name: str, trial: KnobTrial | None) -> dict:
        seed = data()
        col, img, txt = seed.test
        if trial is None:
            train_condition(cfg, "without_control", seed.pairs(KnobTrial("recipe")), seed.val, device, False)
        else:
            train_trial(seed, trial, device, progress=False)
        model, _ = load_best(d2s_run_dir(cfg, "without_control") if trial is None else trial_dir(cfg, trial))
        im, tx = (
            encode_sparse(model, torch.from_numpy(img), "image", d),
            encode_sparse(model, torch.from_numpy(txt), "text", d),
        )
        ev = evaluate_sparse(cfg, col, im, tx)
        docs, queries = synthetic_collection(im, n_docs, seed=cfg.seed), tx[: cfg.index.qps_queries]
        b = benchmark_index(engine, docs, queries, 10, n_latency=n_lat, threads=(1,))
        return {
            "model": name,
            "T->I R@1": ev["text_to_image"]["R@1"],
            "T->I R@10": ev["text_to_image"]["R@10"],
            "FLOPs": ev["sparsity_text_to_image"]["flops"],
            "n_docs": int(n_docs),
            "postings_per_query": postings_per_query(docs, queries, n_lat),
            "engine": engine,
            "exact p50 ms": b["latency_p50_ms"],
            "exact p99 ms": b["latency_p99_ms"],
            "qps_1t": b["qps_1t"],
        }

    models = [(t.name, t) for t in cfg.knob_search.trials] + [("recipe without control", None)]
    rows = []
    for name, trial in progress_bar(models, desc=f"frontier ({n_docs:,} synthetic docs)", disable=not progress):
        rows.append(
            measured_part(
                cfg,
                inputs,
                cfg.seed,
                f"knob_frontier_{trial.name if trial else 'recipe_without_control'}",
                lambda: measure(name, trial),
                part="knob frontier",
                trial=dataclasses.asdict(trial) if trial else None,
                docs=n_docs,
                engine=engine,
                latency_queries=n_lat,
                qps_queries=cfg.index.qps_queries,
            )
        )
    return rows


def frontier_figure(res: dict):
    """Test T->I R@10 against the exact engine's p50 latency on the synthetic collection, one point per model."""
    from ..results import figures

    fig, ax = figures.plt.subplots(figsize=(6, 3.8))
    for i, r in enumerate(sorted(res["frontier"], key=lambda r: r["exact p50 ms"])):
        color = "0.3" if r["model"] == "recipe without control" else ("C3" if r["model"] == res["chosen"] else "C0")
        ax.scatter(r["exact p50 ms"], r["T->I R@10"], color=color, s=25, zorder=3)
        ax.annotate(
            r["model"],
            (r["exact p50 ms"], r["T->I R@10"]),
            fontsize=7,
            xytext=(4, 2 if i % 2 else -9),
            textcoords="offset points",
        )
    n = res["frontier"][0]["n_docs"] if res["frontier"] else 0
    engine = res["frontier"][0].get("engine", "numba") if res["frontier"] else ""
    ax.set(
        xscale="log",
        xlabel=f"exact engine ({engine}) p50 latency (ms, log), {n:,} synthetic documents",
        ylabel="test T->I R@10",
        title="training-side options: effectiveness against latency (seed 0)",
    )
    ax.xaxis.set_major_formatter(figures.plt.matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(figures.plt.matplotlib.ticker.ScalarFormatter())
    fig.tight_layout()
    return fig
