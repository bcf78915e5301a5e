"""The README's summary of the results: the headline numbers with error bars and the verdicts.

Generated (``python -m lsr_lib.results.report``) from committed files only: ``results/default/seeds.json``
(mean ± sample std over the training seeds and the paired tests of the expansion control,
``lsr_lib.results.seeds``) and ``results/default/07_knob_search.json`` (the knobs chosen on validation, over
the same seeds).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..storage.errors import read_result_json
from .before_after import before_after_lines
from .currency import other_environment, stale_by_kind

# This project's goal for the controlled sparse model (README): keep RETENTION_GOAL of the dense teacher's
# text->image R@1 with at most FLOPS_GOAL x the uncontrolled model's FLOPs.
RETENTION_GOAL = 0.95
FLOPS_GOAL = 0.5
MAIN_STAGE_FILES = ("01_dense_baseline.json", "02_d2s.json", "03_analyses.json", "05_suggestion.json")


def _pm(mean: float, std: float | None, f: str = ".2f", scale: float = 1.0) -> str:
    return f"{scale * mean:{f}}" + ("" if std is None else f" ± {scale * std:{f.lstrip('+')}}")


def _metric(summary: dict, label: str, f: str = ".2f", scale: float = 1.0) -> str:
    m = summary["metrics"].get(label)
    return "" if m is None else _pm(m["mean"], m.get("std"), f, scale)


def _ratio_per_seed(summary: dict, num: str, den: str) -> tuple[float, float | None] | None:
    """Mean and sample std over the seeds of ``num / den``, paired per seed (e.g. a model's R@1 / its teacher's)."""
    a, b = summary["metrics"].get(num), summary["metrics"].get(den)
    if not a or not b:
        return None
    ratios = [a["values"][k] / b["values"][k] for k in a["values"] if k in b["values"] and b["values"][k]]
    if not ratios:
        return None
    mean = sum(ratios) / len(ratios)
    std = (sum((r - mean) ** 2 for r in ratios) / (len(ratios) - 1)) ** 0.5 if len(ratios) > 1 else None
    return mean, std


def currency_note(results_dir: Path) -> str:
    """One line naming the result files behind the summary that earlier code made ("" when all are current)."""
    groups = {
        "make main": stale_by_kind([results_dir / f for f in MAIN_STAGE_FILES]),
        "make seeds": stale_by_kind(sorted(results_dir.glob("seed*/0*.json"))),
        "make data-scale": stale_by_kind([results_dir / "07_knob_search.json"]),
    }

    def parts(kind: str) -> str:
        out = []
        for command, found in groups.items():
            if found[kind]:
                names = sorted({p.parent.name if p.parent != results_dir else p.stem for p in found[kind]})
                out.append(f"`{command}` ({', '.join(names)})")
        return ", ".join(out)

    note = ""
    if parts("code"):
        note += (
            f"**Measured with earlier code**: the result files of {parts('code')} were made by code that has changed "
            "since; `python -m lsr_lib.run.pipeline --explain` says what changed, and those commands measure them "
            "again.\n\n"
        )
    if parts("environment"):
        why = other_environment({"why": list(dict.fromkeys(w for f in groups.values() for w in f["why"]))})
        note += (
            f"**Measured in another environment**: the result files of {parts('environment')} were made by this "
            f"code elsewhere{why}; the last digits, and through training more, may differ here, and those commands "
            "measure them here.\n\n"
        )
    return note


def headline(results_dir: Path) -> str:
    """Dense teacher and D2S with / without expansion control over the seeds, the knob choice, the control effect."""
    path = results_dir / "seeds.json"
    if not path.exists():
        return "_No seed summary yet: `make seeds` writes `results/default/seeds.json`._\n"
    s = json.loads(path.read_text())
    teacher = "dense teacher, test T->I R@1"
    n = s["metrics"].get(teacher, {}).get("n", len(s["seeds"]))  # the seeds present, not the seeds planned
    lines = [
        f"Test split, mean ± sample std over {n} training seeds (R@k in percent; FLOPs: expected shared active "
        "terms per caption-image pair; retention: the model's T->I R@1 / its own seed's teacher's):",
        "",
        "| model | T->I R@1 | T->I R@10 | I->T R@1 | FLOPs | retention T->I R@1 (%) |",
        "|---|---|---|---|---|---|",
        f"| dense teacher | {_metric(s, teacher)} | {_metric(s, 'dense teacher, test T->I R@10')} | "
        f"{_metric(s, 'dense teacher, test I->T R@1')} | | 100 |",
    ]
    kept: dict[str, tuple[float, float | None] | None] = {}
    for c in ("with_control", "without_control"):
        kept[c] = _ratio_per_seed(s, f"{c}, test T->I R@1", teacher)
        cells = [_metric(s, f"{c}, test {k}") for k in ("T->I R@1", "T->I R@10", "I->T R@1", "FLOPs")]
        lines.append(
            f"| D2S, {c.replace('_', ' ')} | "
            + " | ".join(cells)
            + " | "
            + ("" if kept[c] is None else _pm(*kept[c], ".1f", 100))
            + " |"
        )
    knob = knob_choice(results_dir)
    if knob:
        lines.append(
            f"| D2S with control, knobs chosen on validation (`{knob['name']}`) | {_pm(**knob['R@1'])} | "
            f"{_pm(**knob['R@10'])} | | {_pm(**knob['FLOPs'])} | {_pm(**knob['retention'], f='.1f', scale=100)} |"
        )
    lines += ["", *goal_lines(s, kept, knob)]
    lines += cross_style_lines(s)
    lines += before_after_lines(results_dir, after_current=not aggregate_note(s, results_dir))
    eff = s.get("control_effect") or {}
    if eff:
        lines += [
            "",
            "What expansion control changes (with minus without control; paired t-test over the test queries in each "
            f"seed, Holm-corrected across {len(eff['verdict'])} metrics; significant only when significant in every "
            "seed with the same sign):",
            "",
            "| metric | with minus without | seeds significant | across seeds p (Holm) | verdict |",
            "|---|---|---|---|---|",
        ]
        for metric, v in eff["verdict"].items():
            a = eff["across_seeds"][metric]
            recall = "R@" in metric  # a hit rate per query: shown in points, as R@k elsewhere
            diff = _pm(a["mean_diff"], a.get("std_diff"), "+.2f" if recall else "+.3g", 100 if recall else 1)
            p = a.get("p_holm")
            lines.append(
                f"| {metric} | {diff}{' points' if recall else ''} | {v['seeds_significant']}/{v['n_seeds']} | "
                f"{'-' if p is None or p != p else f'{p:.2g}'} | **{v['verdict']}** |"
            )
    lines += suggestion_lines(s)
    lines += [
        "",
        f"_Generated from `results/default/seeds.json`{' and `07_knob_search.json`' if knob else ''}; every table "
        "per stage: [docs/results.md](docs/results.md)._",
    ]
    return currency_note(results_dir) + aggregate_note(s, results_dir) + "\n".join(lines) + "\n"


def aggregate_note(s: dict, results_dir: Path) -> str:
    """One line when ``seeds.json`` holds, for the main seed, other numbers than its result files now do."""
    from .expected import lookup

    main, docs, moved = str(s["seeds"][0]), {}, set()
    for m in s["metrics"].values():
        if main in m["values"] and m.get("file"):
            if m["file"] not in docs:
                docs[m["file"]] = read_result_json(results_dir / m["file"])
            now = None if docs[m["file"]] is None else lookup(docs[m["file"]], tuple(m["path"].split(".")))
            if now is not None and now != m["values"][main]:
                moved.add(m["file"].removesuffix(".json"))
    if not moved:
        return ""
    return (
        f"**Aggregated from earlier result files**: `seeds.json` holds other numbers for seed {main} than "
        f"{', '.join(sorted(moved))} now do; `make seeds` measures the other seeds and aggregates them again.\n\n"
    )


def cross_style_lines(s: dict) -> list[str]:
    """The held-out art style against the in-style test on the same emoji (galleries of comparable size)."""
    models = [("dense teacher", "dense teacher")] + [
        (f"D2S, {c.replace('_', ' ')}", c) for c in ("with_control", "without_control")
    ]
    if not any(f"{key}, heldout T->I R@10" in s["metrics"] for _, key in models):
        return []
    lines = [
        "",
        "Cross-style: the held-out style (never trained or validated on) against the in-style test galleries on the "
        "same emoji, T->I in percent; ratio: held-out R@10 / in-style R@10, paired per seed:",
        "",
        "| model | in-style R@1 | held-out R@1 | in-style R@10 | held-out R@10 | ratio R@10 (%) |",
        "|---|---|---|---|---|---|",
    ]
    for name, key in models:
        ratio = _ratio_per_seed(s, f"{key}, heldout T->I R@10", f"{key}, test_matched_to_heldout T->I R@10")
        cells = [
            _metric(s, f"{key}, {split} T->I {k}")
            for k in ("R@1", "R@10")
            for split in ("test_matched_to_heldout", "heldout")
        ]
        lines.append(
            f"| {name} | " + " | ".join(cells) + " | " + ("" if ratio is None else _pm(*ratio, ".1f", 100)) + " |"
        )
    return lines


def suggestion_lines(s: dict) -> list[str]:
    """Stage 05's M1-M4 over the seeds (the second paper), in percent."""
    configs = sorted({label.split(",")[0].split()[-1] for label in s["metrics"] if label.startswith("suggestion ")})
    if not configs:
        return []
    from ..sparse.suggest_encoders import describe

    lines = [
        "",
        "Image suggestion (stage 05, the second paper: the query is an emoji's alias or name, the document the "
        "emoji as an image, its CLDR name, or both), test split, nDCG@10, MRR@10 and R@10 in percent:",
        "",
        "| config | query | document | nDCG@10 | MRR@10 | R@10 | FLOPs |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in configs:
        q, d, di = describe(c)
        cells = [_metric(s, f"suggestion {c}, test {k}", ".1f", 100) for k in ("nDCG@10", "RR@10", "R@10")]
        lines.append(
            f"| {c} | {q} | {d}, {di} | " + " | ".join(cells) + f" | {_metric(s, f'suggestion {c}, test FLOPs')} |"
        )
    return lines


def knob_choice(results_dir: Path) -> dict | None:
    """Stage 07's choice on the test split over the seeds, with its FLOPs against the uncontrolled recipe's."""
    doc = read_result_json(results_dir / "07_knob_search.json")
    r = (doc or {}).get("results") or {}
    rows = {x["model"]: x for x in r.get("summary") or []}
    choice = rows.get(f"{r.get('chosen')}, with control")
    base = rows.get("recipe, without control")
    if not choice or not base:
        return None

    def ms(m: dict) -> dict:
        return {"mean": m["mean"], "std": m.get("std")}

    return {
        "name": r["chosen"],
        "R@1": ms(choice["T->I R@1"]),
        "R@10": ms(choice["T->I R@10"]),
        "FLOPs": ms(choice["FLOPs"]),
        "retention": ms(choice["retention R@1"]),
        "flops_ratio": choice["FLOPs"]["mean"] / base["FLOPs"]["mean"],
    }


def goal_lines(s: dict, kept: dict, knob: dict | None) -> list[str]:
    """The project's goal against the measured means: reached or not, with the numbers."""
    w, wo = s["metrics"].get("with_control, test FLOPs"), s["metrics"].get("without_control, test FLOPs")
    if not (w and wo and kept.get("with_control")):
        return []
    points = [("D2S with control", kept["with_control"][0], w["mean"] / wo["mean"])]
    if knob:
        points.append((f"the knob choice `{knob['name']}`", knob["retention"]["mean"], knob["flops_ratio"]))
    verdicts = [
        f"{name}: {100 * ret:.1f}% at {ratio:.2f}x the FLOPs, "
        + ("**reached**" if ret >= RETENTION_GOAL and ratio <= FLOPS_GOAL else "**not reached**")
        for name, ret, ratio in points
    ]
    return [
        f"The goal, {100 * RETENTION_GOAL:.0f}% of the teacher's T->I R@1 with at most {FLOPS_GOAL:g}x the "
        "uncontrolled model's FLOPs (seed means): " + "; ".join(verdicts) + "."
    ]
