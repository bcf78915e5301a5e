"""The headline numbers before and after the multi-style default (issue 27), each with its error bar.

``results/default/before_multistyle.json`` is a frozen copy of the result files of the OpenMoji-only default, taken
from git by ``python -m lsr_lib.results.before_after --freeze <commit>``: that commit's ``seeds.json`` (mean and
sample std over its three training seeds) and its stage-01 counts. The "after" column reads the current
``seeds.json``. Ratios (retention, FLOPs ratio, cross-style) are paired per seed before the mean is taken.

    python -m lsr_lib.results.before_after --freeze be79c70   # once: the earlier default's files, from git
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from ..storage.atomic import atomic_write_json

BEFORE_FILE = "before_multistyle.json"
TEACHER = "dense teacher"


def freeze(results_dir: Path, commit: str, repo: Path) -> Path:
    """Copy ``seeds.json`` and the stage-01 counts of ``commit`` (from git) into ``results_dir / BEFORE_FILE``."""
    rel = results_dir.resolve().relative_to(repo.resolve()).as_posix()

    def show(name: str) -> dict:
        out = subprocess.run(
            ["git", "show", f"{commit}:{rel}/{name}"], cwd=repo, capture_output=True, text=True, check=False
        )
        if out.returncode:
            raise SystemExit(f"git show {commit}:{rel}/{name} failed: {out.stderr.strip()}")
        return json.loads(out.stdout)

    full = subprocess.run(["git", "rev-parse", commit], cwd=repo, capture_output=True, text=True, check=True)
    doc = {
        "source": {"commit": full.stdout.strip(), "files": [f"{rel}/seeds.json", f"{rel}/01_dense_baseline.json"]},
        "seeds": show("seeds.json"),
        "counts": show("01_dense_baseline.json")["results"]["counts"],
    }
    path = results_dir / BEFORE_FILE
    atomic_write_json(path, doc)
    return path


def _per_seed(summary: dict, num: str, den: str | None = None) -> list[float]:
    a = summary["metrics"].get(num)
    if not a:
        return []
    if den is None:
        return list(a["values"].values())
    b = summary["metrics"].get(den)
    if not b:
        return []
    return [a["values"][k] / b["values"][k] for k in a["values"] if b["values"].get(k)]


def _cell(values: list[float], scale: float = 1.0, f: str = ".1f") -> str:
    if not values:
        return "not measured"
    m = sum(values) / len(values)
    sd = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else None
    return f"{scale * m:{f}}" + ("" if sd is None else f" ± {scale * sd:{f}}") + f" ({len(values)} seeds)"


def change(before: list[float], after: list[float], alpha: float = 0.05) -> str:
    """Whether after differs from before beyond the seed spread: Welch's t-test over the per-seed values (two
    collections, so unpaired; few seeds: low power)."""
    if not before or not after:
        return "not tested (not measured " + ("before)" if not before else "after)")
    if len(before) < 2 or len(after) < 2:
        return "not tested (fewer than 2 seeds a side)"
    from scipy.stats import ttest_ind

    p = float(ttest_ind(after, before, equal_var=False).pvalue)
    if p != p:  # the same constant on both sides (scipy: NaN); different constants give p = 0
        return "no change"
    return f"p = {p:.2g}: " + ("**beyond the seed spread**" if p < alpha else "within the seed spread")


METRICS = (
    ("dense teacher, test T->I R@1", f"{TEACHER}, test T->I R@1", None, 1.0, ".2f"),
    ("D2S with control, retention of the teacher's T->I R@1 (%)", "with_control, test T->I R@1",
     f"{TEACHER}, test T->I R@1", 100.0, ".1f"),
    ("D2S with control, FLOPs / without control's", "with_control, test FLOPs", "without_control, test FLOPs",
     1.0, ".2f"),
    ("dense teacher, held-out style R@10 / in-style R@10 (%)", f"{TEACHER}, heldout T->I R@10",
     f"{TEACHER}, test_matched_to_heldout T->I R@10", 100.0, ".1f"),
    ("D2S with control, held-out style R@10 / in-style R@10 (%)", "with_control, heldout T->I R@10",
     "with_control, test_matched_to_heldout T->I R@10", 100.0, ".1f"),
)  # fmt: skip


def rows(before: dict, after: dict) -> list[tuple[str, str, str]]:
    """(number, before, after) for the headline numbers of issue 27."""
    return [
        (label, _cell(_per_seed(before, num, den), scale, f), _cell(_per_seed(after, num, den), scale, f))
        for label, num, den, scale, f in METRICS
    ]


def changes(before: dict, after: dict) -> list[str]:
    """:func:`change` for each row of :func:`rows`."""
    return [change(_per_seed(before, num, den), _per_seed(after, num, den)) for _, num, den, _, _ in METRICS]


def before_after_lines(results_dir: Path, after_current: bool = True) -> list[str]:
    """The README's before/after table ([] without the frozen file or the current seeds.json). ``after_current``
    False (seeds.json aggregates other numbers than the result files now hold): the "after" column says it is
    pending instead of repeating the old aggregate."""
    bpath, apath = results_dir / BEFORE_FILE, results_dir / "seeds.json"
    if not bpath.exists() or not apath.exists():
        return []
    frozen, after = json.loads(bpath.read_text()), json.loads(apath.read_text())
    pairs = frozen["counts"]["train"]["captions"]
    lines = [
        "",
        f"Before and after the multi-style default (before: the OpenMoji-only default, {pairs:,} training pairs, "
        f"result files of commit {frozen['source']['commit'][:7]}, frozen in `results/default/{BEFORE_FILE}`; "
        "after: the current `seeds.json`; mean ± sample std over seeds, ratios paired per seed; change: Welch's "
        "t-test over the per-seed values, α = 0.05, few seeds so low power):",
        "",
        "| number | before | after | change |",
        "|---|---|---|---|",
    ]
    pending = "pending: `make seeds` aggregates the current result files"
    lines += [
        f"| {a} | {b} | {c if after_current else pending} | {d if after_current else ''} |"
        for (a, b, c), d in zip(rows(frozen["seeds"], after), changes(frozen["seeds"], after))
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``--freeze <commit>`` writes the frozen file of the default profile."""
    from ..config.profiles import REPO_ROOT, load_config

    p = argparse.ArgumentParser(prog="python -m lsr_lib.results.before_after", description=__doc__)
    p.add_argument("--freeze", metavar="COMMIT", required=True, help="the commit whose result files are 'before'")
    p.add_argument("--profile", default="default")
    args = p.parse_args(argv)
    print("wrote", freeze(load_config(args.profile).results_dir, args.freeze, REPO_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
