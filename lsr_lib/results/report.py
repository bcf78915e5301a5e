"""The generated tables of README.md and docs/*.md, from the committed result files (pyserini style: never typed
by hand).

    python -m lsr_lib.results.report            # rewrite every generated block of every page
    python -m lsr_lib.results.report --check    # exit 1 when a generated block is out of date

A block looks like ``<!-- results:NAME -->`` ... ``<!-- /results -->``; NAME picks a renderer below, which
reads ``results/default/*.json`` (or ``results/benchmarks/*.json``). A block is rewritten in whichever page
holds it (``pages``: README.md, docs/*.md, data/README.md). A block opens no section of its own: a heading
a renderer writes becomes a bold line. Generated text holds numbers, commits and machines, never the time of
a run: regenerating from the same numbers gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable

from ..config.profiles import REPO_ROOT
from ..storage.errors import one_line_errors, read_result_json
from .currency import measured_with_earlier_code, seeds_note, stage_of
from .cost import atomic_cost, main_job_time
from .headline import headline

BLOCK = re.compile(r"(<!-- results:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)


MISSING = "_No results yet: run `make main`._\n"


def from_stage(stage: str) -> Callable[[Callable[[dict], str]], Callable[[Path], str]]:
    """Renderer decorator: load ``results/default/<stage>.json``, or render a placeholder.

    A file of ``make main``'s made by code that has changed since starts with a line saying so (stage 07's
    renderers say it themselves, naming ``make data-scale``)."""

    def wrap(render_data: Callable[[dict], str]) -> Callable[[Path], str]:
        def render_dir(results_dir: Path) -> str:
            data = _load(results_dir, stage)
            if data is None:
                return MISSING
            note = "" if stage.startswith("07_") else measured_with_earlier_code(data, stage_of(stage), "make main")
            return note + render_data(data)

        render_dir.__doc__ = render_data.__doc__
        return render_dir

    return wrap


def _load(results_dir: Path, stage: str) -> dict | None:
    return read_result_json(results_dir / f"{stage}.json")


def _row(name: str, res: dict) -> str:
    t, i = res["text_to_image"], res["image_to_text"]
    cells = [t["R@1"], t["R@5"], t["R@10"], t["MRR@10"] * 100, i["R@1"], i["R@5"], i["R@10"], i["MRR@10"] * 100]
    return f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells) + " |"


HEADER = "| | T->I R@1 | R@5 | R@10 | MRR@10 | I->T R@1 | R@5 | R@10 | MRR@10 |\n|---|---|---|---|---|---|---|---|---|"


def random_r10(r: dict) -> float:
    """T->I R@10 in percent of a random ranking on the test split: 10 / gallery size, over the captions."""
    styles = {k: v["test"] for k, v in (r.get("styles") or {}).items() if isinstance(v, dict) and "test" in v}
    if not styles:
        return 1000 / r["baseline"]["test"]["counts"]["images"]
    n = sum(v["captions"] for v in styles.values())
    return sum(v["captions"] * min(100.0, 1000 / v["images"]) for v in styles.values()) / n


@from_stage("01_dense_baseline")
def dense_baseline(data: dict) -> str:
    """Dense teacher on val / test, and on transformed test images."""
    r = data["results"]
    lines = [HEADER]
    for split, res in r["baseline"].items():
        c = res.get("counts") or {
            "images": res["image_to_text"]["n_queries"],
            "captions": res["text_to_image"]["n_queries"],
        }
        lines.append(_row(f"dense teacher, {split} ({c['images']} images, {c['captions']} captions)", res))
    for view, res in r.get("robustness_test", {}).items():
        if view != "clean":
            lines.append(_row(f"test, images {view.replace('_', ' ')}", res))
    lines.append("")
    lines.append(
        f"_Generated from `results/default/01_dense_baseline.json`. "
        f"MRR@10 in percent. Random ranking: T->I R@10 = {random_r10(r):.1f}% on test"
        + (" (each caption ranked against its own style's gallery)._" if r.get("styles") else "._")
    )
    return "\n".join(lines) + "\n"


@from_stage("01_dense_baseline")
def data_counts(data: dict) -> str:
    """Images / captions / groups per split of the default collection."""
    r = data["results"]
    lines = ["| split | images | captions (training pairs) | variant groups |", "|---|---|---|---|"]
    for split in ("train", "val", "test", "heldout"):
        if split in r["counts"]:
            c = r["counts"][split]
            lines.append(f"| {split} | {c['images']:,} | {c['captions']:,} | {c['groups']:,} |")
    styles = r.get("styles")
    if styles:  # the multi-style collection: images (captions) per style and split
        per_image = styles["captions_per_image"]
        lines += ["", "| style | train | val | test | held out |", "|---|---|---|---|---|"]
        for name, per in styles.items():
            if name != "captions_per_image":
                cells = [
                    f"{per[s]['images']:,} ({per[s]['captions']:,})" if s in per else ""
                    for s in ("train", "val", "test", "heldout")
                ]
                lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"Images (captions) per style and split; captions per image: {per_image['mean']:.2f} on average "
            f"({per_image['min']} to {per_image['max']}).",
        ]
    lines.append("")
    lines.append(
        f"_Generated from `results/default/01_dense_baseline.json`; split sha256 `{r.get('split_sha256', 'n/a')}`._"
    )
    return "\n".join(lines) + "\n"


@from_stage("02_d2s")
def d2s(data: dict) -> str:
    """Stage 02: dense teacher and every D2S condition on the test split, with FLOPs and lengths."""
    r = data["results"]
    lines = [HEADER.replace(" |\n|---", " | FLOPs | nnz caption | nnz image |\n|---|---|---|---", 1)]
    for name, res in r["test"].items():
        s = res.get("sparsity_text_to_image")
        extra = (
            f" {s['flops']:.2f} | {s['avg_nonzeros_query']:.1f} | {s['avg_nonzeros_document']:.1f} |" if s else " | | |"
        )
        lines.append(_row(name.replace("_", " "), res) + extra)
    c = r.get("checks", {})
    lines.append("")
    if c:
        lines.append(
            f"With control, T->I R@1 is {c['with control: T->I R@1 as % of teacher']:.1f}% of the dense teacher's; "
            f"FLOPs with / without control = {c['FLOPs with / without control']:.2f}; "
            f"T->I R@1 without minus with control = {c['T->I R@1 without - with control (points)']:+.2f} points."
        )
        lines.append("")
    lines.append(
        "_Generated from `results/default/02_d2s.json`. MRR@10 in "
        "percent; FLOPs: expected shared active terms per caption-image pair; nnz: average non-zeros._"
    )
    return "\n".join(lines) + "\n"


@from_stage("03_analyses")
def analyses(data: dict) -> str:
    """Stage 03: co-activation and semantic deviation per condition, and the plain findings."""
    r = data["results"]
    lines = [
        "| condition | FLOPs | terms in >10% of images | caption expansion weight share | unrelated expansion share "
        "| image caption precision@10 | Kendall tau T->I |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in r["coactivation"].items():
        t, i = r["text_deviation"][name], r["image_deviation"][name]
        tau = r["faithfulness"][name]["text_to_image"]["tau"]["mean_tau"]
        lines.append(
            f"| {name.replace('_', ' ')} | {c['FLOPs']:.2f} | {c.get('terms in >10% of images', float('nan')):.0f} | "
            f"{t['expansion_weight_share (mean)']:.3f} | "
            f"{t['unrelated_expansion_share (mean)']:.3f} | {i['caption_precision_at_k (mean)']:.3f} | {tau:.3f} |"
        )
    lines.append("")
    for k, v in r.get("findings", {}).items():
        lines.append(f"- with control vs without, {k}: {v}")
    effect = r.get("control_effect") or {}
    if effect:
        lines += [
            "",
            "Paired t-test of with against without control over the same test queries (this seed; Holm-corrected "
            "across the five metrics; "
            "across seeds: the `seeds` table below):",
            "",
        ]
        for metric, t in effect.items():
            lo, hi = t["ci95"]
            verdict = "**significant**" if t["significant"] else "**not significant**"
            lines.append(
                f"- {metric}: {t['mean_a']:.3g} vs {t['mean_b']:.3g}, difference {t['mean_diff']:+.3g} (95% CI "
                f"[{lo:+.3g}, {hi:+.3g}], {t['n']} queries), {verdict} (Holm p = {t['p_holm']:.2g})"
            )
    lines.append("")
    lines.append(
        f"_Generated from `results/default/03_analyses.json`; means over "
        f"test vectors, unrelated = MiniLM cosine < {r['unrelated_threshold']}._"
    )
    return "\n".join(lines) + "\n"


@from_stage("04_efficiency")
def efficiency(data: dict) -> str:
    """Stage 04: latency at the largest collection size, per engine and condition."""
    rows = data["results"]["scale"] or data["results"]["test_collection"]
    n = max(r["n_docs"] for r in rows)
    encoded = any("model-encoded" in str(r.get("collection", "")) for r in rows)
    where = (
        (
            "dense documents drawn from a Gaussian fitted to the teacher's test images, each D2S model's encoding of "
            "the same documents, and rows marked 'independent terms' on documents drawn term by term from the "
            "model's vectors; real test captions as queries"
            if encoded
            else "sparse documents drawn term by term from each model's test vectors (independent terms), dense ones "
            "from a Gaussian fitted to the teacher's; real test captions as queries"
        )
        if data["results"]["scale"]
        else (
            "the test collection: the 100k / 1M benchmark of `make bench` was not measured on the current vectors "
            "and settings"
        )
    )
    lines = [
        f"At {n:,} documents (text->image; {where}):",
        "",
        "| condition | engine | build (s) | size (MB) | p50 latency (ms) | p99 (ms) | QPS 1 thread | QPS 2 threads | "
        "recall@10 | FLOPs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["n_docs"] != n:
            continue
        rec = r.get("recall@10")
        rec = "exact" if rec is None or rec != rec else f"{rec:.3f}"
        fl = r.get("FLOPs")
        fl = "" if fl is None or fl != fl else f"{fl:.2f}"
        lines.append(
            f"| {r['condition'].replace('_', ' ')} | {r['kind']} | {r['build_s']:.1f} | {r['size_mb']:.0f} | "
            f"{r['latency_p50_ms']:.3f} | {r['latency_p99_ms']:.3f} | {r['qps_1t']:.0f} | {r['qps_2t']:.0f} | {rec} "
            f"| {fl} |"
        )
    matched = [r for r in data["results"].get("recall_matched", []) if r["n_docs"] == n]
    if matched:
        targets = sorted({r["target_recall"] for r in matched})
        lines += [
            "",
            f"At equal recall, {n:,} documents: p50 latency (ms) of the fastest setting reaching each recall@10 "
            "(exact engines count as 1; '-' = never reached, best recall in brackets):",
            "",
            "| condition | engine | " + " | ".join(f"recall >= {t:g}" for t in targets) + " |",
            "|---|---|" + "---|" * len(targets),
        ]
        cells: dict = {}
        for r in matched:
            # None, or NaN from a DataFrame
            missing = r["latency_p50_ms"] is None or r["latency_p50_ms"] != r["latency_p50_ms"]
            v = f"- ({r['best_recall']:.2f})" if missing else f"{r['latency_p50_ms']:.3f}"
            cells.setdefault((r["condition"], r["engine"]), {})[r["target_recall"]] = v
        for (cond, engine), c in cells.items():
            lines.append(f"| {cond.replace('_', ' ')} | {engine} | " + " | ".join(c.get(t, "") for t in targets) + " |")
        every_size = [r for r in data["results"].get("recall_matched", []) if r["n_docs"] != n]
        lines += ["", *against_hnsw(matched, n), *control_effect_at_recall(matched, n)]
        for size in sorted({r["n_docs"] for r in every_size}, reverse=True):
            at = [r for r in every_size if r["n_docs"] == size]
            lines += [*against_hnsw(at, size), *control_effect_at_recall(at, size)]
    m = data["results"]["machine"]
    bw = m.get("read_bandwidth_gbs_1thread")
    exact = [r for r in rows if r["n_docs"] == n and r["kind"] == "numba" and r.get("posting_gb_per_s")]
    if bw and exact:
        lines += [
            "",
            "Exact numba engine against memory bandwidth: "
            + "; ".join(
                f"{r['condition'].replace('_', ' ')}: {r['postings_per_query'] / 1e6:.2f}M postings per query, "
                f"{r['postings_per_s'] / 1e6:.0f}M postings/s = {r['posting_gb_per_s']:.2f} GB/s "
                f"({100 * r['posting_gb_per_s'] / bw:.0f}% of the {bw:.1f} GB/s one thread reads here)"
                for r in exact
            )
            + ".",
        ]
    machines = sorted({r["machine"] for r in data["results"]["scale"] or [] if r.get("machine")})
    several = (
        f" The scale rows were measured on {len(machines)} machines ({'; '.join(machines)}, column `machine` of "
        "`04_scale.json`): compare latencies within one machine's rows."
        if len(machines) > 1
        else ""
    )
    lines.append("")
    lines.append(
        "_Generated from `results/default/04_efficiency.json` (its scale rows: `04_scale.json`, measured by `make "
        f"bench`); {m.get('cpu', '?')}, {m.get('cpu_count')} cores, {m.get('memory_gib')} GiB; one shared machine: "
        f"only 2x differences are meaningful.{several}_"
    )
    return "\n".join(lines) + "\n"


def reached(matched: list[dict], target: float) -> list[dict]:
    """The recall-matched rows for ``target`` whose engine reached it (a p50 latency, not None or NaN)."""
    return [
        r
        for r in matched
        if r["target_recall"] == target
        and r["latency_p50_ms"] is not None
        and r["latency_p50_ms"] == r["latency_p50_ms"]
    ]


def against_hnsw(matched: list[dict], n: int, target: float = 0.95) -> list[str]:
    """One line per sparse condition: its fastest engine at recall@10 >= ``target`` against HNSW on the dense
    teacher."""
    ok = reached(matched, target)
    hnsw = [r for r in ok if r["condition"] == "dense teacher"]
    if not hnsw:
        return []
    dense = min(hnsw, key=lambda r: r["latency_p50_ms"])
    out = []
    for cond in dict.fromkeys(r["condition"] for r in ok if r["condition"] != "dense teacher"):
        best = min((r for r in ok if r["condition"] == cond), key=lambda r: r["latency_p50_ms"])
        out.append(
            f"- {cond.replace('_', ' ')}, recall@10 >= {target:g} at {n:,} documents: fastest is "
            f"{best['setting'] or best['engine']} at {best['latency_p50_ms']:.2f} ms p50, "
            f"{best['latency_p50_ms'] / dense['latency_p50_ms']:.1f}x the dense teacher's "
            f"{dense['setting'] or dense['engine']} ({dense['latency_p50_ms']:.2f} ms)."
        )
    return out


def control_effect_at_recall(matched: list[dict], n: int, target: float = 0.95) -> list[str]:
    """One line: per engine that reaches recall@10 >= ``target`` for both D2S models on the same documents, the p50
    latency with expansion control against without (the paper's efficiency claim, at equal recall)."""
    best: dict = {}
    for r in reached(matched, target):
        cond, _, collection = r["condition"].partition(" · ")
        if cond in ("with_control", "without_control"):
            best.setdefault((collection, r["engine"]), {})[cond] = r["latency_p50_ms"]
    pairs = [
        f"{engine}{f' ({collection})' if collection else ''} {c['with_control']:.2f} against "
        f"{c['without_control']:.2f} ms ({c['without_control'] / c['with_control']:.1f}x)"
        for (collection, engine), c in best.items()
        if len(c) == 2
    ]
    if not pairs:
        return []
    return [
        f"- expansion control at recall@10 >= {target:g}, {n:,} documents, p50 with against without: "
        + "; ".join(pairs)
        + "."
    ]


@from_stage("04_efficiency")
def efficiency_headline(data: dict, target: float = 0.95) -> str:
    """README: at the largest scale size, each model's fastest engine at recall@10 >= ``target`` against HNSW on the
    dense teacher, on the same documents (the model-encoded collection, not the independent-term rows)."""
    ok = [r for r in reached(data["results"].get("recall_matched", []), target) if " · " not in r["condition"]]
    if not ok:
        return "_No recall-matched scale rows yet: run `make bench`._\n"
    n = max(r["n_docs"] for r in ok)
    at = [r for r in ok if r["n_docs"] == n]
    dense = [r for r in at if r["condition"] == "dense teacher" and r["engine"] == "faiss_hnsw"]
    hnsw = min(dense, key=lambda r: r["latency_p50_ms"]) if dense else None
    names = {"with_control": "D2S, with control", "without_control": "D2S, without control"}
    # and any other model benchmarked on the same documents (stage 07's chosen model: "stage 07 choice <trial>")
    names |= {
        c: f"D2S, {c}" for c in dict.fromkeys(r["condition"] for r in at) if c not in names and c != "dense teacher"
    }
    lines = [
        f"Efficiency at {n:,} documents (`make bench`): the fastest setting of any engine reaching recall@10 >= "
        f"{target:g}, single queries, p50:",
        "",
        "| model | engine, setting | p50 (ms) | recall@10 | exact search p50 (ms) | p50 / dense HNSW's |",
        "|---|---|---|---|---|---|",
    ]
    for cond, name in names.items():
        rows = [r for r in at if r["condition"] == cond]
        if not rows:
            continue
        best = min(rows, key=lambda r: r["latency_p50_ms"])
        exact = next((f"{r['latency_p50_ms']:.2f}" for r in rows if r["engine"] == "numba_blocked"), "")
        ratio = f"{best['latency_p50_ms'] / hnsw['latency_p50_ms']:.2f}x" if hnsw else "no HNSW row"
        lines.append(
            f"| {name} | {best['setting'] or best['engine']} | {best['latency_p50_ms']:.2f} | {best['recall']:.3f} | "
            f"{exact} | {ratio} |"
        )
    if hnsw:
        flat = next((f"{r['latency_p50_ms']:.2f}" for r in at if r["engine"] == "faiss_flat"), "")
        lines.append(
            f"| dense teacher | {hnsw['setting']} | {hnsw['latency_p50_ms']:.2f} | {hnsw['recall']:.3f} | {flat} | 1x |"
        )
    lines += [
        "",
        "_Generated from `results/default/04_efficiency.json` (scale rows: `04_scale.json`); exact search: "
        "`numba_blocked` for the sparse models, faiss flat for the dense teacher; the dense documents are "
        "drawn from a Gaussian fitted to the teacher's test images and each sparse model encodes the same documents; "
        "one shared machine, only 2x differences are meaningful; every engine and setting: "
        "[docs/efficiency.md](docs/efficiency.md)._",
    ]
    return "\n".join(lines) + "\n"


@from_stage("04_retrieval")
def pruning(data: dict) -> str:
    """Stage 04: index-side pruning and quantisation on the test split, exact numba engine."""
    rows = data["results"].get("pruning") or []
    if not rows or "pruning" not in rows[0]:
        return "_No pruning sweep in `results/default/04_retrieval.json` yet: rerun stage 04._\n"
    lines = [
        "| condition | setting | FLOPs | nnz caption | nnz image | T->I R@1 | R@10 | recall@10 vs unpruned | "
        "postings / query | index (MB) | p50 latency (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['condition'].replace('_', ' ')} | {r['pruning']} | {r['FLOPs']:.2f} | {r['nnz caption']:.1f} | "
            f"{r['nnz image']:.1f} | {r['R@1']:.1f} | {r['R@10']:.1f} | "
            f"{r['recall@10']:.3f} | {r['postings_per_query']:.0f} | {r['index_mb']:.2f} | {r['latency_p50_ms']:.3f} |"
        )
    return "\n".join(lines) + (
        "\n\n_Generated from `results/default/04_retrieval.json` (`pruning`); settings: `d<k>`/`q<k>` keep the "
        "top k terms of image / caption vectors, `df<share>` caps each posting list at that share of the images, "
        "`u<bits>` quantises image weights (`lsr_lib/index/pruning.py`)._\n"
    )


@from_stage("07_data_scale")
def data_scale(data: dict) -> str:
    """Stage 07: teacher retention against training pairs, mean +- std over seeds."""
    lines = [
        "| condition | training set | pairs | seeds | T->I R@1 | retention R@1 (%) | T->I R@10 | retention R@10 (%) "
        "| FLOPs | nnz caption | nnz image |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["results"]["summary"]:

        def pm(k: str, scale: float = 1.0, f: str = ".1f") -> str:
            sd = r.get(f"{k} std")
            return f"{scale * r[k]:{f}}" + ("" if sd is None or sd != sd else f" ± {scale * sd:{f}}")

        label = {"1": "100% (stage 02)"}.get(
            r["point"],
            f"{100 * float(r['point'].split('+')[0]):g}%"
            + (f" + {r['point'].split('+')[1][:-1]} augmented view(s)" if "+" in r["point"] else ""),
        )
        lines.append(
            f"| {r['condition'].replace('_', ' ')} | {label} | {r['pairs']:.0f} | {r['n']} | {pm('T->I R@1')} | "
            f"{pm('retention R@1', 100)} | {pm('T->I R@10')} | {pm('retention R@10', 100)} | "
            f"{pm('FLOPs', 1, '.2f')} | {pm('nnz caption')} | {pm('nnz image')} |"
        )
    g = data["results"]["growth"]
    lines += [
        "",
        *(
            f"- {c.replace('_', ' ')}: retention of T->I R@1 from {100 * v['retention_R@1_smallest']:.1f}% "
            f"({v['smallest']}) to {100 * v['retention_R@1_largest']:.1f}% ({v['largest']}), "
            f"{v['points_per_doubling_R@1']:+.1f} points per doubling of the training pairs (least squares over the "
            "sizes' means)"
            for c, v in g.items()
        ),
    ]
    note = measured_with_earlier_code(data, "07_data_scale_study", "make data-scale")
    return (
        note
        + "\n".join(lines)
        + (
            "\n\n_Generated from `results/default/07_data_scale.json` (`make data-scale`); mean ± sample std over "
            "seeds; retention: the sparse model's test R@k / its own seed's dense teacher's._\n"
        )
    )


@from_stage("07_knob_search")
def knob_search(data: dict) -> str:
    """Stage 07, part 2: the knob trials on validation, the choice, and the choice on the test split over seeds."""
    r = data["results"]
    ref = r["reference"]
    lines = [
        f"Validation split, seed 0, with expansion control; FLOPs budget {ref['FLOPs budget']:.2f} (half of the "
        f"uncontrolled recipe's val FLOPs {ref['val FLOPs']:.2f}):",
        "",
        "| trial | changes to stage 02's recipe | steps | val T->I R@1 | val R@10 | val FLOPs | within budget |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in r["val"]:
        mark = " **(chosen)**" if v["trial"] == r["chosen"] else ""
        lines.append(
            f"| {v['trial']}{mark} | {v['changes']} | {v['steps']} | {v['val T->I R@1']:.1f} | "
            f"{v['val T->I R@10']:.1f} | {v['val FLOPs']:.2f} | "
            f"{'yes' if v['val FLOPs'] <= ref['FLOPs budget'] else 'no'} |"
        )
    lines.append(
        f"| recipe without control | (stage 02's uncontrolled run) | | {ref['val T->I R@1']:.1f} | | "
        f"{ref['val FLOPs']:.2f} | |"
    )
    if r["summary"]:

        def pm(m: dict, scale: float = 1.0, f: str = ".1f") -> str:
            return f"{scale * m['mean']:{f}}" + ("" if m["std"] is None else f" ± {scale * m['std']:{f}}")

        n = r["summary"][0]["T->I R@1"]["n"]
        lines += [
            "",
            f"Test split, {n} seeds (mean ± sample std):",
            "",
            "| model | T->I R@1 | retention R@1 (%) | T->I R@10 | retention R@10 (%) | FLOPs | nnz caption | nnz "
            "image |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s in r["summary"]:
            lines.append(
                f"| {s['model']} | {pm(s['T->I R@1'])} | {pm(s['retention R@1'], 100)} | {pm(s['T->I R@10'])} | "
                f"{pm(s['retention R@10'], 100)} | {pm(s['FLOPs'], 1, '.2f')} | {pm(s['nnz caption'])} | "
                f"{pm(s['nnz image'])} |"
            )
        v = r["paired"]["verdict"]
        lines += [
            "",
            "Chosen against the recipe, per query in every seed (paired t-test, Holm): "
            + "; ".join(
                f"{m} {x['verdict']} ({x['direction']}, {x['seeds_significant']}/{x['n_seeds']} seeds)"
                for m, x in v.items()
            )
            + ".",
        ]
    if r.get("frontier"):
        f = r["frontier"]
        lines += [
            "",
            "Every trial's seed-0 model on the effectiveness-latency frontier (test split; exact engine "
            f"`{f[0].get('engine', 'numba')}` on {f[0]['n_docs']:,} synthetic documents drawn from its vectors, "
            "single query):",
            "",
            "| model | test T->I R@1 | test T->I R@10 | FLOPs | postings / query | exact p50 (ms) |",
            "|---|---|---|---|---|---|",
        ]
        for x in sorted(f, key=lambda x: x["exact p50 ms"]):
            lines.append(
                f"| {x['model']} | {x['T->I R@1']:.1f} | {x['T->I R@10']:.1f} | {x['FLOPs']:.2f} | "
                f"{x['postings_per_query']:,.0f} | {x['exact p50 ms']:.2f} |"
            )
    note = measured_with_earlier_code(data, "07_data_scale_study", "make data-scale")
    return (
        note
        + "\n".join(lines)
        + (
            "\n\n_Generated from `results/default/07_knob_search.json` (`make data-scale`); the choice reads the "
            "validation split only._\n"
        )
    )


def exact_layout(results_dir: Path) -> str:
    """The exact engine's layouts against the machine's read bandwidth (``benchmarks/exact_engine_layout.py``)."""
    path = results_dir.parent / "benchmarks" / "exact_engine_layout_cpu.json"
    if not path.exists():
        return "_No layout benchmark yet: `python benchmarks/exact_engine_layout.py`._\n"
    d = json.loads(path.read_text())
    bw = d["machine"]["read_bandwidth_gbs_1thread"]
    lines = [
        "| documents | condition | engine | block | p50 (ms) | postings / query | M postings / s | bytes / posting | "
        "GB/s | share of read bandwidth | ceiling (M postings / s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d["rows"]:
        lines.append(
            f"| {r['n_docs']:,} | {r['condition'].replace('_', ' ')} | {r['kind']} | "
            f"{'' if 'block' not in r else (r['block'] if r['block'] < r['n_docs'] else 'all')} | "
            f"{r['latency_p50_ms']:.2f} | {r['postings_per_query'] / 1e6:.2f}M | {r['postings_per_s'] / 1e6:.0f} | "
            f"{r['bytes_per_posting']} | {r['posting_gb_per_s']:.2f} | {100 * r['share_of_read_bandwidth']:.0f}% | "
            f"{r['ceiling_postings_per_s'] / 1e6:.0f} |"
        )
    return "\n".join(lines) + (
        f"\n\n_Generated from `results/benchmarks/exact_engine_layout_cpu.json` ({d['machine'].get('cpu', '?')}, "
        f"single-thread read bandwidth {bw:.1f} GB/s, {d['queries']} queries, commit {d['commit']}); every "
        "engine returned the same top-10 as `numba`._\n"
    )


def benchmarks(results_dir: Path) -> str:
    """CPU throughput of feature extraction (stage 01) and D2S training (stage 02)."""
    root = results_dir.parent / "benchmarks"
    lines = []
    ext = root / "01_feature_extraction_cpu.json"
    if ext.exists():
        e = json.loads(ext.read_text())
        lines.append(
            f"- Stage 01 on CPU ({e['torch_threads']} threads): SVG rendering {e['svg_render_images_per_s']:.0f} "
            "images/s, "
            f"EfficientNet-Lite0 tower {e['image_tower_images_per_s']:.1f} images/s (batch {e['image_batch']}), "
            f"MiniLM tower {e['text_tower_captions_per_s']:.0f} captions/s (batch {e['text_batch']}); peak RSS "
            f"{e['peak_rss_mib']:.0f} MiB."
        )
    tr = root / "02_d2s_training_cpu.json"
    if tr.exists():
        t = json.loads(tr.read_text())
        parts = ", ".join(f"{r['precision']} / {r['text']}: {r['pairs_per_s']:.0f} pairs/s" for r in t["rows"])
        lines.append(
            f"- Stage 02 D2S training on CPU (batch {t['batch']}, V = {t['vocab']:,}, H = {t['hidden']}): {parts}; "
            f"peak RSS {t['peak_rss_mib']} MiB."
        )
    if not lines:
        return "_No benchmark results yet._\n"
    lines.append("")
    lines.append("_Generated from `results/benchmarks/*.json` (machine described in each file)._")
    return "\n".join(lines) + "\n"


@from_stage("05_suggestion")
def suggestion(data: dict) -> str:
    """Stage 05: M1-M4 on the test split, and the paper's three findings checked."""
    from ..sparse.suggest_encoders import describe

    r = data["results"]
    res = r["results"]
    lines = [
        "| config | query | document | NDCG@10 | MAP@10 | MRR@10 | R@10 | R@100 | FLOPs | nnz query | nnz doc |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c, m in res.items():
        q, d, di = describe(c)
        lines.append(
            f"| {c} | {q} | {d}, {di} | "
            + " | ".join(f"{100 * m[k]:.1f}" for k in ("nDCG@10", "AP@10", "RR@10", "R@10", "R@100"))
            + f" | {m['FLOPs']:.2f} | {m['nnz query']:.1f} | {m['nnz doc']:.1f} |"
        )
    test = r["counts"].get("test", {})
    lines += [
        "",
        f"The paper's findings on this test split ({test.get('queries', '?')} queries, {test.get('documents', '?')} "
        "documents):",
        "",
    ]
    for f in r["findings"]:
        lines.append(f"- {f['finding']}: **{'holds' if f['holds'] else 'does not hold'}** ({f['evidence']})")
    lines += [
        "",
        "_Generated from `results/default/05_suggestion.json`; metrics in "
        "percent, "
        "retrieved through the exact numba inverted index, scored by ir_measures; best epoch by validation MRR@10: "
        + ", ".join(f"{c} {e}" for c, e in r["best_epoch"].items())
        + "._",
    ]
    return "\n".join(lines) + "\n"


def seeds(results_dir: Path) -> str:
    """Mean +- std over the training seeds and the control effect's tests (``lsr_lib.results.seeds``)."""
    from .seeds import markdown

    path = results_dir / "seeds.json"
    shown = f"results/{results_dir.name}/seeds.json"  # as the pages name it, wherever the folder is
    if not path.exists():
        return f"_No seed summary yet: run `make seeds` (writes `{shown}`)._\n"
    body = markdown(json.loads(path.read_text())).split("\n", 2)[2]  # without the title line
    return seeds_note(results_dir) + body + f"\n_Generated from `{shown}` by `make seeds`._\n"


def _setting(r: dict) -> str:
    """``kind key=value ...`` of one planning row's build and search parameters."""
    params = {**r.get("build", {}), **r.get("search", {})}
    return " ".join([r["kind"], *(f"{k}={v}" for k, v in params.items())])


def scale_engines_matched(rows: list[dict], target: float = 0.95) -> list[dict]:
    """Per (condition, engine): the setting with the lowest p50 among those at recall@10 >= ``target`` (None and
    NaN latency when none reaches it), in the shape :func:`against_hnsw` reads."""
    out = []
    timed = [r for r in rows if "kind" in r]
    for key in dict.fromkeys((r["condition"], r["kind"]) for r in timed):
        cands = [r for r in timed if (r["condition"], r["kind"]) == key]
        ok = [r for r in cands if r["recall@10"] >= target]
        best = min(ok, key=lambda r: r["latency_p50_ms"]) if ok else max(cands, key=lambda r: r["recall@10"])
        out.append(
            {
                **best,
                "engine": key[1],
                "target_recall": target,
                "setting": _setting(best) if ok else None,
                "latency_p50_ms": best["latency_p50_ms"] if ok else float("nan"),
                "best_recall": best["recall@10"],
                "latency_p50_ms_reached": best["latency_p50_ms"],
            }
        )
    return out


def scale_engines(results_dir: Path) -> str:
    """Every engine at N model-encoded documents, fastest setting at recall@10 >= 0.95
    (``benchmarks/scale_engines_at_n.py``)."""
    paths = sorted(
        (results_dir.parent / "benchmarks").glob("scale_engines_*.json"), key=lambda p: int(p.stem.split("_")[-1])
    )
    if not paths:
        return (
            "_No planning run yet: `python benchmarks/scale_engines_at_n.py 1000000 with_control,without_control`._\n"
        )
    d = json.loads(paths[-1].read_text())
    n, target = d["n_docs"], 0.95
    matched = scale_engines_matched(d["rows"], target)
    lines = [
        f"At {n:,} documents, every engine's fastest setting at recall@10 >= {target:g} (single queries, 1 thread; "
        "QPS: one batched call):",
        "",
        "| condition | engine | setting | build (s) | size (MB) | p50 (ms) | p99 (ms) | QPS 1 thread | QPS 2 threads | "
        "recall@10 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in matched:
        if r["setting"] is None:
            lines.append(
                f"| {r['condition'].replace('_', ' ')} | {r['engine']} | not reached (best recall@10 "
                f"{r['best_recall']:.3f}, {_setting(r)}) | {r['build_s']:.1f} | {r['size_mb']:.1f} | | | | | |"
            )
            continue
        lines.append(
            f"| {r['condition'].replace('_', ' ')} | {r['engine']} | {r['setting']} | {r['build_s']:.1f} | "
            f"{r['size_mb']:.1f} | {r['latency_p50_ms']:.2f} | {r['latency_p99_ms']:.2f} | {r['qps_1t']:,.0f} | "
            f"{r['qps_2t']:,.0f} | {r['recall@10']:.3f} |"
        )
    encode = {r["condition"]: r for r in d["rows"] if r.get("step") == "encode"}
    verdict = against_hnsw(matched, n, target)
    for r in matched:
        if r["engine"] == "faiss_hnsw" and r["setting"] is None:  # no ratio to draw: say how far HNSW got
            verdict.append(
                f"- the dense teacher's faiss_hnsw does not reach recall@10 >= {target:g} in this sweep: best "
                f"{r['best_recall']:.3f} ({_setting(r)}, {r['latency_p50_ms_reached']:.2f} ms p50)."
            )
    lines += ["", *verdict, ""]
    lines.append(
        f"_Generated from `results/benchmarks/{paths[-1].name}` ({d['machine'].get('cpu', '?')}, "
        f"{d['machine'].get('cpu_count', '?')} cores; a planning run, every setting in the file): the dense documents "
        "are `dense_like` of the teacher's test images, the sparse ones the same documents through each model's image "
        "side ("
        + ", ".join(
            f"{c.replace('_', ' ')} {e['nnz_per_doc']:.0f} terms a document, {e['distinct_terms']:,} distinct"
            for c, e in encode.items()
        )
        + ")._\n"
    )
    return "\n".join(lines)


RENDERERS: dict[str, Callable[[Path], str]] = {
    "headline": headline,
    "main-job-time": main_job_time,
    "atomic-cost": atomic_cost,
    "seeds": seeds,
    "benchmarks": benchmarks,
    "dense-baseline": dense_baseline,
    "data-counts": data_counts,
    "d2s": d2s,
    "analyses": analyses,
    "efficiency": efficiency,
    "efficiency-headline": efficiency_headline,
    "pruning": pruning,
    "suggestion": suggestion,
    "data-scale": data_scale,
    "knob-search": knob_search,
    "exact-layout": exact_layout,
    "scale-engines": scale_engines,
}
HEADING = re.compile(r"^#{1,6} +(?P<title>.+?)#*$", re.M)


def pages(root: Path = REPO_ROOT) -> list[Path]:
    """Every Markdown page that may hold generated blocks: README.md, docs/*.md, data/README.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "data" / "README.md"]


def without_headings(body: str) -> str:
    """``body`` with each Markdown heading turned into a bold line: a generated block sits inside a section of
    its page and must not open a section of its own (everything after it would fall under that heading)."""
    return HEADING.sub(lambda m: f"**{m.group('title').strip()}**", body)


def render(text: str, results_dir: Path) -> str:
    """A page's text with every generated block re-rendered."""

    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in RENDERERS:
            raise KeyError(f"block results:{name} has no renderer; known: {', '.join(RENDERERS)}")
        return m.group(1) + without_headings(RENDERERS[name](results_dir)) + m.group(4)

    return BLOCK.sub(sub, text)


def update_pages(results_dir: Path, root: Path = REPO_ROOT, write: bool = True) -> list[str]:
    """Re-render every page under ``root`` from ``results_dir``; the pages (relative paths) whose text changed.

    ``write=False`` only reports them (``--check``)."""
    changed = []
    for path in pages(root):
        old = path.read_text()
        new = render(old, results_dir)
        if new != old:
            changed.append(str(path.relative_to(root)))
            if write:
                path.write_text(new)
    return changed


@one_line_errors()
def main(argv: list[str] | None = None) -> int:
    """Rewrite (or ``--check``) the generated blocks of every page."""
    ap = argparse.ArgumentParser(prog="python -m lsr_lib.results.report")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error, not only its one line")
    ap.add_argument("--results", type=Path, default=REPO_ROOT / "results" / "default")
    args = ap.parse_args(argv)
    changed = update_pages(args.results, write=not args.check)
    if changed and args.check:
        print(f"{', '.join(changed)} out of date with {args.results}; run `python -m lsr_lib.results.report`")
        return 1
    for page in changed:
        print(f"updated {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
