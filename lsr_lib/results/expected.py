"""Expected paper-scale numbers as data, checked against the result files (pyserini style).

    python -m lsr_lib.results.expected --profile paper            # table of OK / OKish / FAIL / UNKNOWN / MISSING
    python -m lsr_lib.results.expected --profile paper --markdown results/paper/expected_check.md

``results/expected/<profile>.yaml`` maps condition -> metric -> expected value, tolerance and
source (the ``sources`` section says where each number was read). A metric is a dotted path into
a stage's result file ``results/<profile>/<file>``; a value may be ``unknown`` when no quotable
source gives it (never guessed). Comparisons: ``equal`` (the reproduction should match),
``at_most`` / ``at_least`` (a published bound, e.g. ITM-reranked numbers an ITC-only run cannot
beat). Status: OK within the tolerance, OKish within twice it, FAIL beyond, UNKNOWN when the
expected value is unknown, MISSING when the result file or key is absent. Exit code 1 on FAIL.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import yaml

from ..config.profiles import REPO_ROOT, yaml_problem
from ..storage.errors import one_line_errors, read_result_json

COMPARES = ("equal", "at_most", "at_least")
STATUSES = ("OK", "OKish", "FAIL", "UNKNOWN", "MISSING")
CONDITION_KEYS = {"file", "prefix", "metrics", "source", "compare", "tolerance", "note"}
METRIC_KEYS = {"expected", "source", "compare", "tolerance", "note", "main_job_by_cpu"}
TOP_KEYS = {"profile", "sources", "default_tolerance", "conditions", "split_sha256", "cpu", "cpus", "cpu_model"}


class ExpectedFileError(ValueError):
    """The expected-values file has an unknown key or a bad value."""


@dataclass(frozen=True)
class Check:
    """One expected number: where to read the measured value and how to compare."""

    condition: str  # e.g. mscoco_blip/with_control
    metric: str  # dotted path below the condition's prefix, e.g. text_to_image.R@1
    file: str  # result file relative to results/<profile>/
    path: tuple[str, ...]  # full key path inside that file
    expected: Optional[float]  # None = unknown
    tolerance: float
    compare: str  # equal | at_most | at_least
    source: str  # key of the file's `sources` section
    note: str = ""


@dataclass(frozen=True)
class Outcome:
    check: Check
    measured: Optional[float]
    status: str


def judge(measured: Optional[float], expected: Optional[float], tolerance: float, compare: str = "equal") -> str:
    """OK / OKish / FAIL / UNKNOWN / MISSING for one number."""
    if measured is None:
        return "MISSING"
    if expected is None:
        return "UNKNOWN"
    excess = {"equal": abs(measured - expected), "at_most": measured - expected, "at_least": expected - measured}[
        compare
    ]
    if excess <= tolerance:
        return "OK"
    return "OKish" if excess <= 2 * tolerance else "FAIL"


def load_expected(path: Union[str, Path]) -> tuple[list[Check], dict[str, str]]:
    """(checks, sources) from an expected-values YAML; unknown keys and bad values raise by name."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ExpectedFileError(f"{yaml_problem(path, e)}; fix that line") from None
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise ExpectedFileError(f"{path}: unknown top-level key(s) {', '.join(unknown)}")
    sources = {str(k): str(v).strip() for k, v in (raw.get("sources") or {}).items()}
    default_tol = float(raw.get("default_tolerance", 1.0))
    checks = []
    for cond, spec in (raw.get("conditions") or {}).items():
        where = f"{path}: conditions.{cond}"
        if not isinstance(spec, dict) or not {"file", "metrics"} <= set(spec):
            raise ExpectedFileError(f"{where}: needs 'file' and 'metrics'")
        if set(spec) - CONDITION_KEYS:
            raise ExpectedFileError(
                f"{where}: unknown key(s) {', '.join(sorted(set(spec) - CONDITION_KEYS))}; allowed: "
                f"{', '.join(sorted(CONDITION_KEYS))}"
            )
        prefix = tuple(spec["prefix"].split(".")) if spec.get("prefix") else ()
        for metric, entry in spec["metrics"].items():
            entry = entry if isinstance(entry, dict) else {"expected": entry}
            if set(entry) - METRIC_KEYS:
                raise ExpectedFileError(
                    f"{where}.metrics.{metric}: unknown key(s) {', '.join(sorted(set(entry) - METRIC_KEYS))}"
                )
            merged = {
                "source": spec.get("source", ""),
                "compare": spec.get("compare", "equal"),
                "tolerance": spec.get("tolerance", default_tol),
                "note": spec.get("note", ""),
                **entry,
            }
            checks.append(_check(f"{where}.metrics.{metric}", cond, metric, spec["file"], prefix, merged, sources))
    return checks, sources


def _expected_and_stage01(expected: Union[str, Path], results_dir: Path) -> tuple[dict, dict]:
    """The expected-values file, and stage 01's result file of the results it is checked against (or {})."""
    raw = yaml.safe_load(Path(expected).read_text()) or {}
    return raw, read_result_json(Path(results_dir) / "01_dense_baseline.json") or {}


def collection_mismatch(expected: Union[str, Path], results_dir: Path) -> Optional[str]:
    """One line when the expected values were written for another data set than the results' (the emoji
    default's split checksum, ``split_sha256``); None when they match or either side does not say."""
    raw, doc = _expected_and_stage01(expected, results_dir)
    have = (doc.get("results") or {}).get("split_sha256")
    want = raw.get("split_sha256")
    if not want or not have or want == have:
        return None
    profile = raw.get("profile", Path(expected).stem)
    return (
        f"{expected} holds expected values for another collection (split sha256 {want[:12]}...) than "
        f"{results_dir}/01_dense_baseline.json ({have[:12]}...): the data set changed, so its numbers are new; "
        f"measure them over the seeds (`python -m lsr_lib.run.seeds --profile {profile}`), then write new expected "
        f"values with `python -m lsr_lib.results.seeds --profile {profile} --write-expected`"
    )


def measured_on(doc: dict) -> tuple[Optional[str], Optional[str]]:
    """(CPU kind, CPU model) a stage-01 result file records: its environment's ``torch-cpu`` (AVX2, AVX512, ...)
    and its provenance's machine (``Intel(R) Xeon(R) Processor``, ``AMD EPYC``); None where it says nothing."""
    kind = ((doc.get("inputs") or {}).get("env") or {}).get("torch-cpu")
    model = ((doc.get("provenance") or {}).get("machine") or {}).get("cpu")
    return kind, model


def cpu_note(expected: Union[str, Path], results_dir: Path) -> Optional[str]:
    """One line when the results were measured on a CPU kind (``torch-cpu``) none of the expected values were:
    on the smoke slice a new CPU's rounding can move a Bernoulli-trained number as far as a new seed does. Or, on
    the same kind, when they were measured on another CPU model than the expected values (:func:`_cpu_model_note`)."""
    raw, doc = _expected_and_stage01(expected, results_dir)
    have, model = measured_on(doc)
    known = raw.get("cpus") or ([raw["cpu"]] if raw.get("cpu") else [])
    if have and known and have in known:
        return _cpu_model_note(raw, model, have)
    if not have or not known:
        return None
    profile = raw.get("profile", Path(expected).stem)
    return (
        f"note: these results were measured on {have} CPUs; the expected values cover {', '.join(known)} only, so a "
        f"FAIL may be the CPU, not the code. To cover this CPU: `python -m lsr_lib.run.seeds --profile {profile}`, "
        f"then `python -m lsr_lib.results.seeds --profile {profile} --write-expected` (keeps the other CPUs' values)"
    )


def _cpu_model_note(raw: dict, have: Optional[str], kind: str) -> Optional[str]:
    """One line when the results come from another CPU model than the expected values (``cpu_model``) with the same
    ``torch-cpu`` kind: MKL, which computes torch's fp32 GEMMs, takes its instruction-set paths on Intel CPUs only,
    so an AMD EPYC computes other last bits than an Intel Xeon that torch also calls AVX512 (docs/reliability.md)."""
    want = raw.get("cpu_model")
    if not want or not have or want == have or kind != raw.get("cpu"):
        return None
    return (
        f"note: these results were measured on {have}, the expected values on {want} (both {kind} to torch): "
        "another CPU model can compute other last bits (MKL takes its instruction-set paths on Intel CPUs only), and "
        "training moves them as far as a seed does: the tolerances are there for that (docs/reliability.md, "
        '"Two CPUs that torch calls the same")'
    )


def _check(where: str, cond: str, metric: str, file: str, prefix: tuple[str, ...], e: dict, sources: dict) -> Check:
    value = e.get("expected")
    if value == "unknown":
        value = None
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExpectedFileError(f"{where}: expected must be a number or 'unknown', got {value!r}")
    if e["compare"] not in COMPARES:
        raise ExpectedFileError(f"{where}: compare must be one of {', '.join(COMPARES)}, got {e['compare']!r}")
    if e["source"] not in sources:
        raise ExpectedFileError(f"{where}: source {e['source']!r} is not in the sources section ({', '.join(sources)})")
    tol = float(e["tolerance"])
    if not tol >= 0:
        raise ExpectedFileError(f"{where}: tolerance must be >= 0, got {tol}")
    return Check(
        cond,
        metric,
        file,
        prefix + tuple(metric.split(".")),
        None if value is None else float(value),
        tol,
        e["compare"],
        e["source"],
        str(e["note"]).strip(),
    )


def lookup(data: dict, path: tuple[str, ...]) -> Optional[float]:
    """The number at ``path`` in a nested dict, or None when any key is missing or it is not a number."""
    node = data
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    ok = isinstance(node, (int, float)) and not isinstance(node, bool) and math.isfinite(node)
    return float(node) if ok else None


def evaluate(checks: list[Check], results: Union[Path, dict]) -> list[Outcome]:
    """Compare every check with ``results``: a folder of result files, or ``{file: loaded dict}``."""
    cache: dict[str, Optional[dict]] = {}
    out = []
    for c in checks:
        if c.file not in cache:
            if isinstance(results, dict):
                cache[c.file] = results.get(c.file)
            else:
                cache[c.file] = read_result_json(Path(results) / c.file)
        data = cache[c.file]
        measured = None if data is None else lookup(data, c.path)
        out.append(Outcome(c, measured, judge(measured, c.expected, c.tolerance, c.compare)))
    return out


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3f}".rstrip("0").rstrip(".")


def _rows(outcomes: list[Outcome]) -> list[list[str]]:
    sign = {"equal": "=", "at_most": "<=", "at_least": ">="}
    return [
        [
            o.check.condition,
            o.check.metric,
            f"{sign[o.check.compare]} {_fmt(o.check.expected)}" if o.check.expected is not None else "unknown",
            _fmt(o.measured),
            f"±{_fmt(o.check.tolerance)}",
            o.status,
            o.check.source,
        ]
        for o in outcomes
    ]


HEAD = ["condition", "metric", "expected", "measured", "tol.", "status", "source"]


def format_table(outcomes: list[Outcome]) -> str:
    """Fixed-width plain-text table for the terminal."""
    rows = [HEAD] + _rows(outcomes)
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEAD))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


def markdown_table(outcomes: list[Outcome], sources: dict[str, str]) -> str:
    """Markdown table plus the source legend (for results/<profile>/summary.md)."""
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(outcomes)]
    used = sorted({o.check.source for o in outcomes})
    lines += ["", "Sources:", ""] + [f"- `{k}`: {' '.join(sources[k].split())}" for k in used]
    return "\n".join(lines) + "\n"


def write_check(outcomes: list[Outcome], sources: dict[str, str], path: Path) -> None:
    """The check's markdown table to ``path`` (``make main``: results/default/expected_check.md)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown_table(outcomes, sources))


def summary_counts(outcomes: list[Outcome]) -> dict[str, int]:
    """How many checks ended in each status."""
    return {s: sum(o.status == s for o in outcomes) for s in STATUSES}


def expected_path(profile: str) -> Path:
    return REPO_ROOT / "results" / "expected" / f"{profile}.yaml"


@one_line_errors(ExpectedFileError)
def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; 1 when any check FAILs (or is MISSING with --strict) or a file cannot be read."""
    ap = argparse.ArgumentParser(
        prog="python -m lsr_lib.results.expected",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--profile", default="paper")
    ap.add_argument(
        "--expected", type=Path, default=None, help="expected-values YAML (default results/expected/<profile>.yaml)"
    )
    ap.add_argument("--results", type=Path, default=None, help="results folder (default results/<profile>)")
    ap.add_argument("--markdown", type=Path, default=None, help="also write the table as markdown to this file")
    ap.add_argument("--strict", action="store_true", help="MISSING results also fail")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error, not only its one line")
    args = ap.parse_args(argv)
    expected = args.expected or expected_path(args.profile)
    if not expected.exists():
        print(f"no expected-values file {expected}; write one like results/expected/paper.yaml", file=sys.stderr)
        return 2
    checks, sources = load_expected(expected)
    mismatch = collection_mismatch(expected, args.results or REPO_ROOT / "results" / args.profile)
    if mismatch:
        print(mismatch, file=sys.stderr)
        return 1
    outcomes = evaluate(checks, args.results or REPO_ROOT / "results" / args.profile)
    print(format_table(outcomes))
    note = cpu_note(expected, args.results or REPO_ROOT / "results" / args.profile)
    if note:
        print(note)
    counts = summary_counts(outcomes)
    shown = expected.resolve().relative_to(REPO_ROOT) if expected.resolve().is_relative_to(REPO_ROOT) else expected
    print("\n" + ", ".join(f"{n} {s}" for s, n in counts.items()) + f"  (expected values: {shown})")
    if args.markdown:
        write_check(outcomes, sources, args.markdown)
    return 1 if counts["FAIL"] or (args.strict and counts["MISSING"]) else 0


if __name__ == "__main__":
    sys.exit(main())
