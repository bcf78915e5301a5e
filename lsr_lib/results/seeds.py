"""Mean +- std over training seeds, the paired tests of the control effect, and expected values from the spread.

    python -m lsr_lib.results.seeds --profile default                    # results/default/seeds.{json,md}
    python -m lsr_lib.results.seeds --profile smoke --write-expected     # also results/expected/smoke.yaml

Reads only result files: seed ``seeds[0]`` (the main job) from ``results/<profile>/``, seed ``k`` from
``results/<profile>/seed<k>/`` (``python -m lsr_lib.run.seeds``). For every headline number
(``HEADLINE``): its value per seed, mean and sample std. For the expansion-control effect: per seed,
a paired t-test of with against without control over the test queries for each metric of
``lsr_lib.analysis.control_effect.EFFECT_METRICS``, Holm-corrected across the metrics; across
seeds, a paired t-test on the per-seed means (low power with 3 seeds: read it with the per-seed
tests). An effect is called significant only when it is significant in every seed with the same
sign (``lsr_lib.metrics.significance.compare_conditions``).

Expected values (``--write-expected``): the main seed's value, with tolerance
``max(TOLERANCE_STDS x std over seeds, distance to the main job's value on another CPU kind, floor)``
(the values of the CPU kinds measured before are kept from the file being rewritten). A rerun of the
main job with the same seed on the same lock should land well inside the seed-to-seed spread; the floor
(``FLOORS``) covers numbers that barely move across seeds. ``lsr_lib.results.expected`` then reports OK
within the tolerance, OKish within twice it, FAIL beyond.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Optional

import yaml

from ..analysis.control_effect import EFFECT_METRICS, PER_QUERY_FILE, paired_values, read_per_query
from ..config.profiles import REPO_ROOT, Config, load_config
from .expected import measured_on
from ..metrics.significance import compare_conditions, mean_std
from ..storage.atomic import atomic_write_json, atomic_write_text
from .expected import lookup

CONDITIONS = ("with_control", "without_control")
SUGGEST = ("M1", "M2", "M3", "M4")


def _headline() -> list[tuple[str, str, str]]:
    """(label, result file, dotted path) of every number reported over seeds."""
    rows = [
        ("dense teacher, test T->I R@1", "01_dense_baseline.json", "results.baseline.test.text_to_image.R@1"),
        ("dense teacher, test T->I R@10", "01_dense_baseline.json", "results.baseline.test.text_to_image.R@10"),
        ("dense teacher, test I->T R@1", "01_dense_baseline.json", "results.baseline.test.image_to_text.R@1"),
        ("dense teacher, val T->I R@1", "01_dense_baseline.json", "results.baseline.val.text_to_image.R@1"),
    ]
    for c in CONDITIONS:
        rows += [
            (f"{c}, test T->I R@1", "02_d2s.json", f"results.test.{c}.text_to_image.R@1"),
            (f"{c}, test T->I R@10", "02_d2s.json", f"results.test.{c}.text_to_image.R@10"),
            (f"{c}, test I->T R@1", "02_d2s.json", f"results.test.{c}.image_to_text.R@1"),
            (f"{c}, test FLOPs", "02_d2s.json", f"results.test.{c}.sparsity_text_to_image.flops"),
            (f"{c}, test nnz caption", "02_d2s.json", f"results.test.{c}.sparsity_text_to_image.avg_nonzeros_query"),
            (f"{c}, test nnz image", "02_d2s.json", f"results.test.{c}.sparsity_text_to_image.avg_nonzeros_document"),
            (f"{c}, mean Kendall tau T->I", "03_analyses.json", f"results.faithfulness.{c}.text_to_image.tau.mean_tau"),
            (
                f"{c}, image caption precision@k",
                "03_analyses.json",
                f"results.image_deviation.{c}.caption_precision_at_k (mean)",
            ),
            (
                f"{c}, unrelated expansion share",
                "03_analyses.json",
                f"results.text_deviation.{c}.unrelated_expansion_share (mean)",
            ),
        ]
    # the held-out art style, and the in-style test on the same emoji (profiles with data.heldout_style)
    for split in ("heldout", "test_matched_to_heldout"):
        for k in ("R@1", "R@10"):
            rows.append(
                (
                    f"dense teacher, {split} T->I {k}",
                    "01_dense_baseline.json",
                    f"results.baseline.{split}.text_to_image.{k}",
                )
            )
            rows += [
                (f"{c}, {split} T->I {k}", "02_d2s.json", f"results.{split}.{c}.text_to_image.{k}") for c in CONDITIONS
            ]
    for m in SUGGEST:
        rows += [
            (f"suggestion {m}, test {k}", "05_suggestion.json", f"results.results.{m}.{k}")
            for k in ("nDCG@10", "RR@10", "R@10", "FLOPs")
        ]
    return rows


HEADLINE = _headline()
TOLERANCE_STDS = 2.0


def floor_for(path: str, value: float) -> float:
    """The smallest tolerance for a number: R@k in percent 0.5 points, FLOPs and lengths 2 %, fractions 0.005."""
    last = path.rsplit(".", 1)[-1]
    if last.startswith("R@") and not path.startswith("results.results."):
        return 0.5  # stage 01 / 02 recall in percent
    if last in ("flops", "FLOPs", "avg_nonzeros_query", "avg_nonzeros_document"):
        return 0.02 * abs(value)
    return 0.005


def seed_results_dirs(cfg: Config) -> dict[int, Path]:
    """seed -> its results folder (the first seed's is the profile's own)."""
    seeds = list(cfg.seeds) or [cfg.seed]
    return {k: cfg.results_dir if i == 0 else cfg.results_dir / f"seed{k}" for i, k in enumerate(seeds)}


def _read(folder: Path, file: str) -> Optional[dict]:
    p = folder / file
    return json.loads(p.read_text()) if p.exists() else None


def collection_of(folder: Path) -> Optional[str]:
    """The data set a seed's results were measured on: ``split_sha256`` of its ``01_dense_baseline.json``."""
    doc = _read(folder, "01_dense_baseline.json")
    return ((doc or {}).get("results") or {}).get("split_sha256")


def aggregate(cfg: Config) -> dict:
    """Per headline number: values per seed, mean and std; the control effect per seed and across seeds.

    A seed whose results were measured on another collection than the main seed's (another ``split_sha256``,
    e.g. left from before the data set changed) is left out and listed under ``other_collection``."""
    dirs = seed_results_dirs(cfg)
    main = collection_of(next(iter(dirs.values())))
    other = {k: f for k, f in dirs.items() if main and collection_of(f) not in (None, main)}
    dirs = {k: f for k, f in dirs.items() if k not in other}
    cache: dict = {}
    metrics = {}
    for label, file, path in HEADLINE:
        values = {}
        for k, folder in dirs.items():
            key = (k, file)
            if key not in cache:
                cache[key] = _read(folder, file)
            v = None if cache[key] is None else lookup(cache[key], tuple(path.split(".")))
            if v is not None:
                values[k] = v
        if values:
            metrics[label] = {
                "file": file,
                "path": path,
                **mean_std(list(values.values())),
                "values": {str(k): v for k, v in values.items()},
            }
    per_seed = {}
    for k, folder in dirs.items():
        if (folder / PER_QUERY_FILE).exists():
            table = read_per_query(folder)
            if set(CONDITIONS) <= set(table["condition"]):
                per_seed[k] = paired_values(table)
    effect = compare_conditions(per_seed) if per_seed else {}
    missing = {
        str(k): [f for f in sorted({f for _, f, _ in HEADLINE} | {PER_QUERY_FILE}) if not (folder / f).exists()]
        for k, folder in dirs.items()
    }
    return {
        "profile": cfg.profile,
        "seeds": list(dirs),
        "missing": {k: v for k, v in missing.items() if v},
        "other_collection": [str(k) for k in other],
        "metrics": metrics,
        "control_effect": effect,
        "effect_metrics": list(EFFECT_METRICS),
    }


def _p(p: float) -> str:
    """A p-value for a table; one that underflowed to 0 is shown as below the smallest double."""
    return "<1e-300" if p == 0 else f"{p:.2g}"


def _pm(m: dict, digits: int = 2) -> str:
    std = "" if m.get("std") is None else f" ± {m['std']:.{digits}f}"
    return f"{m['mean']:.{digits}f}{std}"


def markdown(summary: dict) -> str:
    """The tables of ``seeds.md``."""
    seeds = summary["seeds"]
    lines = [
        f"# Seeds: profile `{summary['profile']}`",
        "",
        f"Training seeds {seeds} (the first is the main job's). Mean ± sample std over the seeds present; "
        "written by `python -m lsr_lib.results.seeds` from the result files.",
        "",
    ]
    if summary["missing"]:
        lines += [
            "Missing result files (run `python -m lsr_lib.run.seeds`): "
            + "; ".join(f"seed {k}: {', '.join(v)}" for k, v in summary["missing"].items()),
            "",
        ]
    if summary.get("other_collection"):
        lines += [
            f"Left out, measured on another collection than seed {seeds[0]}'s (run `python -m lsr_lib.run.seeds`): "
            + ", ".join(f"seed {k}" for k in summary["other_collection"]),
            "",
        ]
    lines += [
        "| number | mean ± std | n | " + " | ".join(f"seed {k}" for k in seeds) + " |",
        "|---|---|---|" + "---|" * len(seeds),
    ]
    for label, m in summary["metrics"].items():
        digits = 2 if abs(m["mean"]) >= 1 else 4
        lines.append(
            f"| {label} | {_pm(m, digits)} | {m['n']} | "
            + " | ".join(f"{m['values'][str(k)]:.{digits}f}" if str(k) in m["values"] else "-" for k in seeds)
            + " |"
        )
    eff = summary["control_effect"]
    if eff:
        lines += [
            "",
            "## The expansion-control effect (with minus without control)",
            "",
            "Per seed: paired t-test over the test queries, Holm-corrected across the "
            f"{len(summary['effect_metrics'])} metrics (α = {eff['alpha']}). "
            "Across seeds: paired t-test on the per-seed means (few seeds: low power). Verdict: significant only "
            "when every seed is significant with the same sign.",
            "",
            "| metric | with control | without control | difference | per-seed Holm p | across seeds p (Holm) | "
            "verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for metric, v in eff["verdict"].items():
            a = eff["across_seeds"][metric]
            ps = ", ".join(_p(eff["per_seed"][k][metric]["p_holm"]) for k in eff["per_seed"])
            diff_std = "" if a.get("std_diff") is None else f" ± {a['std_diff']:.3g}"
            p_across = (
                "-"
                if a.get("p_holm") is None or (isinstance(a.get("p_holm"), float) and math.isnan(a["p_holm"]))
                else f"{a['p_holm']:.2g}"
            )
            with_, without = {"mean": a["mean_a"], "std": a.get("std_a")}, {"mean": a["mean_b"], "std": a.get("std_b")}
            same = a["mean_diff"] == 0 and not a.get("std_diff")
            direction = (
                "no difference"
                if same
                else {"A higher": "higher with control", "B higher": "higher without control"}.get(
                    v["direction"], "sign differs across seeds"
                )
            )
            lines.append(
                f"| {metric} | {_pm(with_, 3)} | {_pm(without, 3)} | {a['mean_diff']:+.3g}{diff_std} | {ps} | "
                f"{p_across} | **{v['verdict']}** ({direction}; {v['seeds_significant']}/{v['n_seeds']} seeds "
                "significant) |"
            )
    return "\n".join(lines) + "\n"


def cpu_of(folder: Path) -> tuple[Optional[str], Optional[str]]:
    """(CPU kind, CPU model) a seed's results were measured on, from its stage 01 file
    (:func:`lsr_lib.results.expected.measured_on`)."""
    return measured_on(_read(folder, "01_dense_baseline.json") or {})


def earlier_main_job_values(path: Path, split: Optional[str]) -> dict[str, dict[str, float]]:
    """metric path -> {CPU kind: the main job's value} from an expected-values file written before (same data set).

    A file written before CPUs were recorded per metric says its CPU once, at the top (``cpu``)."""
    raw = yaml.safe_load(path.read_text()) if path.exists() else None
    if not raw or (split and raw.get("split_sha256") not in (None, split)):
        return {}
    out: dict[str, dict[str, float]] = {}
    for spec in (raw.get("conditions") or {}).values():
        for metric, e in (spec.get("metrics") or {}).items():
            by_cpu = dict(e.get("main_job_by_cpu") or {})
            if not by_cpu and raw.get("cpu") and isinstance(e.get("expected"), (int, float)):
                by_cpu = {raw["cpu"]: e["expected"]}
            out[f"results.{metric}"] = {str(c): float(v) for c, v in by_cpu.items()}
    return out


def expected_yaml(summary: dict, cfg: Config, earlier: Optional[dict[str, dict[str, float]]] = None) -> str:
    """``results/expected/<profile>.yaml``: the main seed's values, tolerances from the seed spread.

    ``earlier`` (:func:`earlier_main_job_values`) holds the main job's values measured on other CPU kinds: on a
    tiny slice a new CPU's rounding can send a Bernoulli-sampled training elsewhere, as a new seed would, so the
    tolerance also covers the main job's value on every CPU kind measured."""
    main = str(summary["seeds"][0])
    main_dir = seed_results_dirs(cfg)[summary["seeds"][0]]
    cpu, model = cpu_of(main_dir)
    earlier = earlier or {}
    conditions: dict = {}
    for label, m in summary["metrics"].items():
        if main not in m["values"]:
            continue
        value = m["values"][main]
        by_cpu = {**earlier.get(m["path"], {}), **({cpu: value} if cpu else {})}
        spread = 0.0 if m.get("std") is None else TOLERANCE_STDS * m["std"]
        other_cpus = max((abs(v - value) for v in by_cpu.values()), default=0.0)
        tol = max(spread, other_cpus, floor_for(m["path"], value))
        cond = conditions.setdefault(
            m["file"].removesuffix(".json"), {"file": m["file"], "prefix": "results", "source": "seeds", "metrics": {}}
        )
        cond["metrics"][m["path"].removeprefix("results.")] = {
            "expected": round(value, 6),
            "tolerance": round(tol, 6),
            **({"main_job_by_cpu": {c: round(v, 6) for c, v in sorted(by_cpu.items())}} if by_cpu else {}),
            "note": label,
        }
    n = {len(m["values"]) for m in summary["metrics"].values()}
    cpus = sorted({c for m in conditions.values() for e in m["metrics"].values() for c in e.get("main_job_by_cpu", {})})
    head = (
        f"# Expected numbers for the {cfg.profile} profile, written by `python -m lsr_lib.results.seeds --profile "
        f"{cfg.profile} --write-expected`\n"
        f"# from results/{cfg.profile}/seeds.json. Checked by `python -m lsr_lib.results.expected --profile "
        f"{cfg.profile}` (make main / make test).\n"
        f"# expected: seed {main}'s value (the main job) on {cpu or 'an unrecorded'} CPUs. tolerance: "
        f"max({TOLERANCE_STDS:g} x sample std over the training seeds,\n"
        "# the distance to the main job's value on each other CPU kind measured (main_job_by_cpu), floor);\n"
        "# floors: 0.5 points for R@k in percent, 2 % of the value for FLOPs and vector lengths, 0.005 for fractions.\n"
    )
    split = collection_of(main_dir)
    body = {
        "profile": cfg.profile,
        **({"split_sha256": split} if split else {}),  # the data set these numbers are for (lsr_lib.results.expected)
        **({"cpu": cpu} if cpu else {}),  # the CPU kind (torch-cpu) of `expected` and of the seed spread
        **({"cpus": cpus} if cpus else {}),  # every CPU kind whose main-job values the tolerances cover
        **({"cpu_model": model} if model else {}),  # the CPU model of `expected`
        "sources": {
            "seeds": (
                f"results/{cfg.profile}/seeds.json: seeds {summary['seeds']} "
                f"({'/'.join(str(x) for x in sorted(n))} present per number) on {cpu or 'an unrecorded'} CPU; "
                "a rerun of the main job on the lock should differ from its committed value by less than the "
                "seed-to-seed spread, or than the main job's value on another CPU kind measured"
            )
        },
        "conditions": conditions,
    }
    return head + yaml.safe_dump(body, sort_keys=False, width=200)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m lsr_lib.results.seeds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--profile", default="default")
    ap.add_argument(
        "--write-expected", action="store_true", help="also write results/expected/<profile>.yaml from the spread"
    )
    args = ap.parse_args(argv)
    cfg = load_config(args.profile)
    summary = aggregate(cfg)
    atomic_write_json(cfg.results_dir / "seeds.json", summary)
    text = markdown(summary)
    atomic_write_text(cfg.results_dir / "seeds.md", text)
    print(text)
    if args.write_expected:
        path = REPO_ROOT / "results" / "expected" / f"{cfg.profile}.yaml"
        split = collection_of(seed_results_dirs(cfg)[summary["seeds"][0]])
        atomic_write_text(path, expected_yaml(summary, cfg, earlier_main_job_values(path, split)))
        print(f"wrote {path.relative_to(REPO_ROOT)}")
        check = cfg.results_dir / "expected_check.md"
        if check.exists():  # the table `make main` writes, made from the old expected values: written again
            from .expected import evaluate, load_expected, write_check

            checks, sources = load_expected(path)
            write_check(evaluate(checks, cfg.results_dir), sources, check)
            print(f"wrote {check.relative_to(REPO_ROOT) if check.is_relative_to(REPO_ROOT) else check}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
