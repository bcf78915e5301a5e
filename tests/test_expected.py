"""Expected-values checker (pyserini style): every outcome reachable, the committed file well formed."""

import json
import re
from pathlib import Path

import pytest
import yaml

from lsr_lib.config.profiles import load_config
from lsr_lib.results.expected import (
    ExpectedFileError,
    evaluate,
    expected_path,
    format_table,
    judge,
    load_expected,
    lookup,
    main,
    markdown_table,
)

SOURCES = {"paper": "a paper, table 2", "bound": "a published upper bound"}


def _expected_file(tmp_path, conditions, **top):
    path = tmp_path / "expected.yaml"
    path.write_text(
        yaml.safe_dump({"profile": "x", "default_tolerance": 1.0, "sources": SOURCES, "conditions": conditions, **top})
    )
    return path


def _fake_results():
    """A small stage-02-like result dict: the shape lsr_lib writes."""
    return {
        "s1/02_d2s.json": {
            "results": {
                "test": {"with_control": {"text_to_image": {"R@1": 50.0, "R@5": 70.0, "R@10": 81.5, "MRR@10": 0.6}}},
                "checks": {"FLOPs with / without control": 0.6},
            }
        }
    }


CONDITIONS = {
    "s1/with_control": {
        "file": "s1/02_d2s.json",
        "prefix": "results.test.with_control",
        "source": "paper",
        "metrics": {
            "text_to_image.R@1": 50.4,  # |d| 0.4 <= 1        -> OK
            "text_to_image.R@5": 71.5,  # 1 < |d| 1.5 <= 2    -> OKish
            "text_to_image.R@10": 78.0,  # |d| 3.5 > 2         -> FAIL
            "text_to_image.MRR@10": {"expected": "unknown", "tolerance": 0.01},  # -> UNKNOWN
            "image_to_text.R@1": 40.0,  # key absent          -> MISSING
        },
    },
    "s1/bounds": {
        "file": "s1/02_d2s.json",
        "prefix": "results",
        "source": "bound",
        "compare": "at_most",
        "tolerance": 0.0,
        "metrics": {
            "checks.FLOPs with / without control": 1.0,  # 0.6 <= 1            -> OK
            "test.with_control.text_to_image.R@1": {"expected": 45.0, "tolerance": 2.0},  # 50 > 45 + 4 -> FAIL
            # 70 >= 75 - 6 -> OKish
            "test.with_control.text_to_image.R@5": {"expected": 75.0, "compare": "at_least", "tolerance": 3.0},
        },
    },
    "s2/dense": {
        "file": "s2/01_dense_baseline.json",
        "prefix": "results",
        "source": "paper",
        "metrics": {"a.R@1": 1.0},
    },  # no file -> MISSING
}


def test_judge_every_outcome_and_boundaries():
    assert judge(10.0, 10.5, 0.5) == "OK" and judge(10.0, 11.0, 0.5) == "OKish" and judge(10.0, 11.01, 0.5) == "FAIL"
    assert (
        judge(12.0, 10.0, 1.0, "at_most") == "OKish"
        and judge(9.0, 10.0, 0.0, "at_most") == "OK"
        and judge(10.1, 10.0, 0.0, "at_most") == "FAIL"
    )
    assert (
        judge(8.5, 10.0, 1.0, "at_least") == "OKish"
        and judge(99.0, 10.0, 1.0, "at_least") == "OK"
        and judge(7.0, 10.0, 1.0, "at_least") == "FAIL"
    )
    assert (
        judge(None, 10.0, 1.0) == "MISSING"
        and judge(None, None, 1.0) == "MISSING"
        and judge(5.0, None, 1.0) == "UNKNOWN"
    )


def test_lookup_returns_numbers_only():
    data = {"a": {"b": 1, "c": "x", "d": True, "e": float("nan")}}
    assert lookup(data, ("a", "b")) == 1.0
    assert lookup(data, ("a", "c")) is None and lookup(data, ("a", "d")) is None and lookup(data, ("a", "e")) is None
    assert lookup(data, ("a", "zz")) is None and lookup(data, ("a", "b", "c")) is None


def test_evaluate_fake_results_reaches_every_status(tmp_path):
    checks, sources = load_expected(_expected_file(tmp_path, CONDITIONS))
    outcomes = evaluate(checks, _fake_results())
    got = {(o.check.condition, o.check.metric): o.status for o in outcomes}
    assert got == {
        ("s1/with_control", "text_to_image.R@1"): "OK",
        ("s1/with_control", "text_to_image.R@5"): "OKish",
        ("s1/with_control", "text_to_image.R@10"): "FAIL",
        ("s1/with_control", "text_to_image.MRR@10"): "UNKNOWN",
        ("s1/with_control", "image_to_text.R@1"): "MISSING",
        ("s1/bounds", "checks.FLOPs with / without control"): "OK",
        ("s1/bounds", "test.with_control.text_to_image.R@1"): "FAIL",
        ("s1/bounds", "test.with_control.text_to_image.R@5"): "OKish",
        ("s2/dense", "a.R@1"): "MISSING",
    }
    table = format_table(outcomes)
    assert table.splitlines()[0].split()[:3] == ["condition", "metric", "expected"]
    assert (
        all(s in table for s in ("OK", "OKish", "FAIL", "UNKNOWN", "MISSING")) and "<= 1" in table and ">= 75" in table
    )
    md = markdown_table(outcomes, sources)
    assert md.count("\n| s1/") == 8 and "- `bound`: a published upper bound" in md


def _write_results(root, results):
    for name, data in results.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(data))


def test_main_exit_codes(tmp_path, capsys):
    results = tmp_path / "results"
    _write_results(results, _fake_results())
    failing = _expected_file(tmp_path, CONDITIONS)
    assert main(["--expected", str(failing), "--results", str(results), "--markdown", str(tmp_path / "check.md")]) == 1
    assert "FAIL" in capsys.readouterr().out and (tmp_path / "check.md").read_text().startswith("| condition |")
    passing = {
        "s1/with_control": {
            **CONDITIONS["s1/with_control"],
            "metrics": {"text_to_image.R@1": 50.0, "text_to_image.R@5": 71.5},
        },
        "s2/dense": CONDITIONS["s2/dense"],
    }
    sub = tmp_path / "passing"
    sub.mkdir()
    path = _expected_file(sub, passing)
    assert main(["--expected", str(path), "--results", str(results)]) == 0  # OK, OKish and MISSING do not fail ...
    assert main(["--expected", str(path), "--results", str(results), "--strict"]) == 1  # ... unless --strict
    out = capsys.readouterr().out
    assert re.search(r"1 OK, 1 OKish, 0 FAIL, 0 UNKNOWN, 1 MISSING", out)
    assert main(["--expected", str(tmp_path / "none.yaml")]) == 2


def test_a_damaged_result_file_is_named_with_the_rerun_that_rewrites_it(tmp_path, capsys):
    results = tmp_path / "results" / "smoke"
    _write_results(results, _fake_results())
    damaged = results / "s1" / "02_d2s.json"
    damaged.write_text(damaged.read_text()[:40])  # truncated
    path = _expected_file(tmp_path, CONDITIONS)
    assert main(["--expected", str(path), "--results", str(results)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {damaged} is not valid JSON") and "Traceback" not in err
    assert "python -m lsr_lib.run.pipeline --profile smoke/s1 --stages 02 --force" in err
    with pytest.raises(ValueError, match="02_d2s.json is not valid JSON"):  # --debug: the error, traceback and all
        main(["--expected", str(path), "--results", str(results), "--debug"])
    path.write_text("profile: x\nconditions: {a: [\n")
    assert main(["--expected", str(path), "--results", str(results)]) == 1
    assert re.match(rf"error: {re.escape(str(path))}, line \d+, column \d+: not valid YAML", capsys.readouterr().err)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"file": "f.json", "metrics": {"m": 1.0}, "sourse": "paper"}, "unknown key.*sourse"),
        (
            {"file": "f.json", "source": "paper", "metrics": {"m": {"expected": 1.0, "tol": 1}}},
            "metrics.m: unknown key.*tol",
        ),
        ({"file": "f.json", "source": "paper", "metrics": {"m": "about 50"}}, "expected must be a number or 'unknown'"),
        ({"file": "f.json", "source": "paper", "compare": "roughly", "metrics": {"m": 1.0}}, "compare must be one of"),
        ({"file": "f.json", "source": "blog", "metrics": {"m": 1.0}}, "source 'blog' is not in the sources section"),
        ({"file": "f.json", "source": "paper", "tolerance": -1, "metrics": {"m": 1.0}}, "tolerance must be >= 0"),
        ({"metrics": {"m": 1.0}}, "needs 'file' and 'metrics'"),
    ],
)
def test_bad_expected_files_are_named(tmp_path, bad, message):
    with pytest.raises(ExpectedFileError, match=message):
        load_expected(_expected_file(tmp_path, {"c": bad}))


def test_committed_paper_expectations_are_well_formed():
    checks, sources = load_expected(expected_path("paper"))
    settings = {s.name for s in load_config("paper").sweep}
    assert {c.file.split("/")[0] for c in checks} == settings  # every setting of the sweep has expectations
    for c in checks:
        assert c.file.split("/")[1] in ("01_dense_baseline.json", "02_d2s.json")
        if c.source == "d2s_paper":
            assert c.expected is None, "the D2S tables could not be read: no number may cite them"
        if c.source.startswith("lavis"):  # ITM-reranked numbers bound an ITC-only run from above
            assert c.compare == "at_most" and "ITM-reranked" in sources[c.source]
    numbers = {
        (c.file.split("/")[0], c.metric): c.expected
        for c in checks
        if c.expected is not None and c.source.startswith("lavis")
    }
    assert (
        numbers[("mscoco_blip", "text_to_image.R@1")] == 64.5
        and numbers[("flickr30k_albef", "image_to_text.R@1")] == 95.9
    )


# ---- expected values of the default and smoke profiles (issue 13) ----------------------------------


def _as_results(checks, shift_of=None):
    """{file: nested dict} holding every check's expected value (``shift_of``: check -> added amount)."""
    out: dict = {}
    for c in checks:
        node = out.setdefault(c.file, {})
        for key in c.path[:-1]:
            node = node.setdefault(key, {})
        node[c.path[-1]] = c.expected + (shift_of(c) if shift_of else 0.0)
    return out


@pytest.mark.parametrize("profile", ["default", "smoke"])
def test_expected_files_of_the_runnable_profiles(profile):
    checks, sources = load_expected(expected_path(profile))
    assert len(checks) >= 20 and "seeds" in sources
    assert all(c.expected is not None and c.tolerance > 0 for c in checks)
    # every check reads a number the stages write: the file and path are among the seed aggregate's headline numbers
    from lsr_lib.results.seeds import HEADLINE

    known = {(f, p) for _, f, p in HEADLINE}
    assert {(c.file, ".".join(c.path)) for c in checks} <= known


@pytest.mark.parametrize("profile", ["default", "smoke"])
def test_a_perturbed_number_is_caught(profile, tmp_path):
    checks, _ = load_expected(expected_path(profile))
    exact = evaluate(checks, _as_results(checks))
    assert {o.status for o in exact} == {"OK"}
    victim = checks[len(checks) // 2]
    bad = evaluate(checks, _as_results(checks, lambda c: 2.5 * c.tolerance if c is victim else 0.0))
    assert [o.check for o in bad if o.status == "FAIL"] == [victim]
    near = evaluate(checks, _as_results(checks, lambda c: 1.5 * c.tolerance if c is victim else 0.0))
    assert [o.check for o in near if o.status != "OK"] == [victim] and [
        o.status for o in near if o.check is victim
    ] == ["OKish"]
    # through the command line: exit code 1 on FAIL
    folder = tmp_path / "results"
    for file, data in _as_results(checks, lambda c: 2.5 * c.tolerance if c is victim else 0.0).items():
        (folder / file).parent.mkdir(parents=True, exist_ok=True)
        (folder / file).write_text(json.dumps(data))
    assert main(["--profile", profile, "--results", str(folder)]) == 1


def test_committed_default_results_meet_their_expected_values():
    from lsr_lib.results.expected import collection_mismatch

    results = load_config("default").results_dir
    if collection_mismatch(expected_path("default"), results):
        # the data set changed (issue 27): stage 01's committed result is for the multi-style collection, the
        # expected values still for the OpenMoji-only one, until `make seeds` measures the new ones; then this
        # compares every number again. Stage 02's committed numbers must be for the same collection as stage 01's.
        d2s = json.loads((results / "02_d2s.json").read_text())
        assert "heldout" in d2s["results"] and "test_matched_to_heldout" in d2s["results"]
        return
    checks, _ = load_expected(expected_path("default"))
    outcomes = evaluate(checks, results)
    assert not [(o.check.condition, o.check.metric, o.measured, o.status) for o in outcomes if o.status not in ("OK",)]


def test_expected_values_for_another_collection_are_named_not_compared(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    (results / "01_dense_baseline.json").write_text(
        json.dumps({"results": {"split_sha256": "b" * 64, "baseline": {"test": {"text_to_image": {"R@1": 20.0}}}}})
    )
    spec = {
        "profile": "default",
        "split_sha256": "a" * 64,
        "sources": {"seeds": "a test"},
        "conditions": {
            "01": {
                "file": "01_dense_baseline.json",
                "prefix": "results",
                "source": "seeds",
                "metrics": {"baseline.test.text_to_image.R@1": 20.0},
            }
        },
    }
    path = tmp_path / "expected.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["--expected", str(path), "--results", str(results)]) == 1
    err = capsys.readouterr().err
    assert "another collection" in err and "aaaaaaaaaaaa" in err and "bbbbbbbbbbbb" in err and "--write-expected" in err
    spec["split_sha256"] = "b" * 64  # the same data set: compared as usual (and equal)
    path.write_text(yaml.safe_dump(spec))
    assert main(["--expected", str(path), "--results", str(results)]) == 0


def _one_number_check(tmp_path: Path, r_at_1: float, env: dict, machine: dict | None = None, **top):
    """A results folder whose stage 01 file holds one test R@1 (measured with ``env``, on ``machine``), an expected
    file checking it at 20 +- 1 (``top``: its top-level keys), and a function that runs the check on them:
    ``check() -> (exit code, printed text)``, after ``spec`` (the file's content, returned) is changed."""
    results = tmp_path / "results"
    results.mkdir()
    doc = {
        "results": {"baseline": {"test": {"text_to_image": {"R@1": r_at_1}}}},
        "inputs": {"env": env},
        **({"provenance": {"machine": machine}} if machine is not None else {}),
    }
    (results / "01_dense_baseline.json").write_text(json.dumps(doc))
    spec = {
        **top,
        "sources": {"seeds": "a test"},
        "conditions": {
            "01": {
                "file": "01_dense_baseline.json",
                "prefix": "results",
                "source": "seeds",
                "metrics": {"baseline.test.text_to_image.R@1": {"expected": 20.0, "tolerance": 1.0}},
            }
        },
    }
    path = tmp_path / "expected.yaml"

    def check(capsys) -> tuple[int, str]:
        (results / "01_dense_baseline.json").write_text(json.dumps(doc))
        path.write_text(yaml.safe_dump(spec))
        code = main(["--expected", str(path), "--results", str(results)])
        return code, capsys.readouterr().out

    return doc, spec, check


def test_results_from_a_cpu_kind_the_expected_values_do_not_cover_are_named_with_the_commands(tmp_path, capsys):
    """A FAIL on a CPU kind never measured may be the CPU's rounding, not the code: the check says so."""
    _, spec, check = _one_number_check(tmp_path, 30.0, {"torch-cpu": "AVX512"}, profile="smoke", cpu="AVX2")
    code, out = check(capsys)
    assert code == 1  # still a FAIL: the note explains it
    assert "FAIL" in out and "AVX512" in out and "cover AVX2 only" in out and "--write-expected" in out
    spec["cpus"] = ["AVX2", "AVX512"]  # a file that covers this CPU says nothing more
    assert "cover" not in check(capsys)[1]


def test_results_from_another_cpu_model_of_the_same_kind_are_named(tmp_path, capsys):
    """torch calls an AMD EPYC and an Intel Xeon both AVX512, but MKL computes other last bits on the EPYC: the check
    names both CPU models when the results come from another one than the expected values, and nothing otherwise."""
    xeon = "Intel(R) Xeon(R) Processor"
    doc, spec, check = _one_number_check(
        tmp_path,
        20.3,
        {"torch-cpu": "AVX512"},
        {"cpu": "AMD EPYC"},
        profile="default",
        cpu="AVX512",
        cpus=["AVX2", "AVX512"],
        cpu_model=xeon,
    )
    code, out = check(capsys)
    assert code == 0  # a note, not a failure
    assert f"measured on AMD EPYC, the expected values on {xeon} (both AVX512" in out
    assert "MKL" in out and "OK" in out
    doc["provenance"]["machine"]["cpu"] = xeon
    assert "note:" not in check(capsys)[1]  # the same model
    del spec["cpu_model"]
    assert "note:" not in check(capsys)[1]  # a file that records no model
    doc["provenance"]["machine"]["cpu"] = "AMD EPYC"
    spec.update(cpu_model=xeon, cpu="AVX2", cpus=["AVX2"])  # another kind: the kind's note, which says more
    out = check(capsys)[1]
    assert "cover AVX2 only" in out and "MKL" not in out


def test_the_committed_check_table_is_the_one_the_check_writes_from_the_committed_files():
    """results/default/expected_check.md is what `make main` writes: after the expected values are rewritten (make
    seeds --write-expected) it must be written again, or a fresh clone's `make main` changes it (issue 28)."""
    results = load_config("default").results_dir
    checks, sources = load_expected(expected_path("default"))
    committed = (results / "expected_check.md").read_text()
    assert markdown_table(evaluate(checks, results), sources) == committed, (
        "results/default/expected_check.md is stale: python -m lsr_lib.results.expected --profile default "
        "--markdown results/default/expected_check.md"
    )
