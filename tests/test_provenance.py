"""Result files: a rerun with the same numbers leaves the committed file byte-identical (issue 28).

What changes on every run without the numbers changing (the time, the host's kernel build, peak memory,
wall-clock seconds) goes to ``results/<profile>/timings/<stage>.json``, untracked.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from lsr_lib.config.profiles import Config, load_config
from lsr_lib.results import provenance
from lsr_lib.results.timing import is_duration, merge_run_facts, read_with_timings, split_run_facts, timings_path

ROOT = Path(__file__).resolve().parents[1]


def d2s_like(seconds: float) -> dict:
    """A result with the shapes stage 02 writes: per-epoch history with durations, numpy numbers, NaN."""
    history = [
        {"epoch": e, "loss": 1.0 / (e + 1), "seconds": seconds + e, "train_seconds": seconds, "val_seconds": 0.5}
        for e in range(3)
    ]
    return {
        "conditions": {"with_control": {"history": history, "steps": np.int64(30), "best": np.float32(0.25)}},
        "test": {"R@1": 13.06, "latency_p50_ms": float("nan")},
    }


def test_a_second_write_of_the_same_results_leaves_the_committed_file_byte_identical(tmp_path, monkeypatch):
    monkeypatch.setattr(Config, "results_dir", property(lambda self: tmp_path / "results"))
    cfg = load_config("smoke")
    path = provenance.write_results(cfg, "02_d2s", d2s_like(5.0), {"code": {"a.py": "1"}})
    first, first_facts = path.read_bytes(), timings_path(path).read_text()

    # another run: later, at another commit (a fresh clone rebuilding its caches), on another host kernel, with
    # another peak memory and other durations
    monkeypatch.setattr(provenance, "git_commit", lambda: "0123abc")
    epoch = time.gmtime(0)
    monkeypatch.setattr(provenance.time, "gmtime", lambda *a: epoch)
    monkeypatch.setattr(provenance, "peak_memory", lambda: {"peak_rss_mib": 12345.0})
    real_machine = provenance.machine
    monkeypatch.setattr(provenance, "machine", lambda: {**real_machine(), "platform": "Linux-other-kernel"})
    provenance.write_results(cfg, "02_d2s", d2s_like(7.5), {"code": {"a.py": "1"}})

    assert path.read_bytes() == first
    assert timings_path(path).read_text() != first_facts
    committed = json.loads(first)
    assert not {"time_utc", "memory", "commit"} & set(committed["provenance"])
    assert "platform" not in committed["provenance"]["machine"] and "cpu" in committed["provenance"]["machine"]
    assert "seconds" not in first.decode() and committed["results"]["test"]["R@1"] == 13.06

    merged = read_with_timings(path)  # what the run wrote, in one document
    assert merged["provenance"]["time_utc"] == "1970-01-01T00:00:00Z"
    assert merged["provenance"]["memory"] == {"peak_rss_mib": 12345.0}
    assert merged["provenance"]["machine"]["platform"] == "Linux-other-kernel"
    assert merged["provenance"]["commit"] == "0123abc"
    assert [h["seconds"] for h in merged["results"]["conditions"]["with_control"]["history"]] == [7.5, 8.5, 9.5]

    # a number that changes does change the committed file
    changed = d2s_like(5.0)
    changed["test"]["R@1"] = 13.07
    provenance.write_results(cfg, "02_d2s", changed, {"code": {"a.py": "1"}})
    assert path.read_bytes() != first


def test_run_facts_split_off_and_merge_back():
    doc = {
        "stage": "x",
        "results": {"rows": [{"seconds": 1.0, "R@1": 2.0}, {"R@1": 3.0}], "steps": {"load": {"seconds": 4.0}}},
        "provenance": {"commit": "abc", "time_utc": "t", "machine": {"platform": "p", "cpu": "c"}, "memory": {}},
    }
    committed, facts = split_run_facts(doc)
    assert committed == {
        "stage": "x",
        "results": {"rows": [{"R@1": 2.0}, {"R@1": 3.0}], "steps": {"load": {}}},
        "provenance": {"machine": {"cpu": "c"}},
    }
    assert merge_run_facts(committed, facts) == doc
    kept, _ = split_run_facts(doc, durations_are_results=True)  # a benchmark whose timed steps are its results
    assert kept["results"] == doc["results"] and "time_utc" not in kept["provenance"]
    assert is_duration("train_seconds") and not is_duration("latency_p50_ms") and not is_duration("build_s")


def tracked_result_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / f for f in out.stdout.split() if f.endswith(".json")]


def test_committed_result_files_hold_no_run_facts():
    bad = []
    for path in tracked_result_files():
        doc = json.loads(path.read_text())
        if "provenance" not in doc:
            continue  # a benchmark file or a summary, not a stage's result
        keep_durations = path.name == "atomic_job.json"  # the AToMiC job's timed steps are what it measures
        committed, facts = split_run_facts(doc, durations_are_results=keep_durations)
        if committed != doc:
            bad.append(f"{path.relative_to(ROOT)}: {sorted(k for k in facts if k != 'stage')}")
    assert not bad, "run facts in committed result files (they belong in results/<profile>/timings/):\n" + "\n".join(
        bad
    )
