"""What a job costs, as the committed benchmark files say: ``make main`` and the AToMiC job per million images.

Generated (``python -m lsr_lib.results.report``) from ``results/benchmarks/*.json`` only, with the machine
each file names, so no page quotes a run time that no file records.
"""

from __future__ import annotations

import json
from pathlib import Path


def _read(results_dir: Path, name: str) -> dict | None:
    path = results_dir.parent / "benchmarks" / name
    return json.loads(path.read_text()) if path.exists() else None


def _machine(m: dict) -> str:
    return f"{m.get('cpu', '?')}, {m.get('cpu_count')} cores, {m.get('memory_gib')} GiB"


def _duration(seconds: float | None) -> str:
    if seconds is None:  # e.g. a fresh-clone run recorded without --setup-s
        return "(not measured)"
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def main_job_time(results_dir: Path) -> str:
    """What one measured ``make main`` from a fresh clone took, as ``results/benchmarks/main_job_time.json`` says."""
    d = _read(results_dir, "main_job_time.json")
    if d is None:
        return "_`make main` has not been timed: no `results/benchmarks/main_job_time.json`._\n"
    m = d["machine"]
    stages = ", ".join(f"{k[:2]} {_duration(v['seconds'])}" for k, v in d["stages"].items())
    if not d.get("fresh_clone", True):  # every stage run, but not `make main` from a clone: no setup, no rerun
        return (
            f"One run of every stage, not from a fresh clone (`results/benchmarks/main_job_time.json`; {_machine(m)}, "
            f"Python {m.get('python')}; commit {d['commit']}; {d['label']}): stages {stages}, "
            f"{_duration(d['stages_seconds_total'])} in all.\n"
        )
    skipped = ", ".join(k[:2] for k in d.get("skipped_up_to_date", []))
    return (
        f"One timed run from a fresh clone (`results/benchmarks/main_job_time.json`; {_machine(m)}, Python "
        f"{m.get('python')}; commit {d['commit']}"
        + (f"; {d['label']}" if d.get("label", "make main") != "make main" else "")
        + "): "
        f"`make setup` into an empty `.venv` {_duration(d['setup_seconds'])}, then the pipeline "
        f"{_duration(d['wall_seconds'])} (stages {stages}"
        + (f"; {skipped} were skipped as up to date" if skipped else "")
        + f"), {_duration(d['cold_seconds'])} in all; `make main` again with nothing changed "
        + (
            f"{d['rerun_nothing_changed_seconds']:.1f} s.\n"
            if d.get("rerun_nothing_changed_seconds") is not None
            else "(not measured).\n"
        )
    )


def atomic_cost(results_dir: Path) -> str:
    """The AToMiC job per million images, from the tower and encode-and-insert rates of two benchmark files."""
    ext, job = _read(results_dir, "01_feature_extraction_cpu.json"), _read(results_dir, "atomic_job_rates_cpu.json")
    if ext is None or job is None:
        return (
            "_No rates yet: `python benchmarks/bench_feature_extraction.py`, then `benchmarks/atomic_job_rates.py`._\n"
        )
    rate = ext["image_tower_images_per_s"]
    others = {k: v for k, v in (ext.get("image_tower_images_per_s_by_backend") or {}).items() if v != rate}
    rows = {r["configuration"]: r for r in job["rows"]}
    hours = {c: 1e6 / r["encode_and_insert_docs_per_s"] / 3600 for c, r in rows.items()}
    costly = max(hours, key=hours.get)
    fast = min(rows, key=lambda c: rows[c]["latency_p50_ms"])
    slow = max(rows, key=lambda c: rows[c]["latency_p50_ms"])
    n = next(iter(rows.values()))["documents"]
    return (
        f"Per million images, from rates measured on CPU cores (no GPU rate was measured). The image tower runs at "
        f"{rate:g} images/s (batch {ext['image_batch']}"
        + "".join(f"; {k}: {v:g} images/s" for k, v in others.items())
        + f"; `results/benchmarks/01_feature_extraction_cpu.json`, {_machine(ext['machine'])}), so at that rate "
        f"the extraction step takes **about {1e6 / rate / 3600:.0f} hours per million images** there, the step Ray "
        "spreads over a cluster (it scales with the number of actors). Encoding the documents from cached states "
        "and inserting them into milvus-lite ran at "
        + ", ".join(f"{r['encode_and_insert_docs_per_s']:.0f} ({c})" for c, r in rows.items())
        + f" documents/s (`results/benchmarks/atomic_job_rates_cpu.json`, {n:,} documents, {_machine(job['machine'])}"
        + (f"; {job['note']}" if job.get("note") else "")
        + f"): **{min(hours.values()):.1f} to {max(hours.values()):.0f} hours per million images** depending on the "
        f"encoder ({costly}'s {rows[costly]['avg_nonzeros_document']:.0f} terms per document cost most). Search: p50 "
        f"{rows[fast]['latency_p50_ms']:.1f} ms ({fast}: {rows[fast]['avg_nonzeros_query']:.0f} terms per query) to "
        f"{rows[slow]['latency_p50_ms']:.0f} ms ({slow}: {rows[slow]['avg_nonzeros_query']:.0f} terms per query) per "
        f"query at {n:,} documents.\n"
    )
