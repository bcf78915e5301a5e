"""lsr_lib.run.pipeline (issue 12): kernels run this checkout's lsr_lib, and Ctrl-C ends with a resume line."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lsr_lib.run.checkout import CHECKOUT_ENV, check_kernel_checkout
from lsr_lib.config.profiles import REPO_ROOT
from lsr_lib.run import pipeline
from lsr_lib.storage.progress import NOTICES_ENV


def import_lsr_lib(env_overrides: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """``import lsr_lib`` in a fresh interpreter (as a kernel would), printing where it came from."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", CHECKOUT_ENV)} | env_overrides
    return subprocess.run(
        [sys.executable, "-c", "import lsr_lib; print(lsr_lib.__file__)"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def second_clone(tmp_path: Path) -> Path:
    """A minimal second checkout: lsr_lib/__init__.py and the guard, copied from this one."""
    clone = tmp_path / "clone"
    (clone / "lsr_lib" / "run").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "lsr_lib" / "__init__.py", clone / "lsr_lib" / "__init__.py")
    shutil.copy(REPO_ROOT / "lsr_lib" / "run" / "checkout.py", clone / "lsr_lib" / "run" / "checkout.py")
    (clone / "lsr_lib" / "run" / "__init__.py").write_text("")
    return clone


def test_kernel_env_puts_the_checkout_first(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/elsewhere", str(tmp_path)]))
    env = pipeline.kernel_env(tmp_path)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(tmp_path), "/elsewhere"]
    assert env[CHECKOUT_ENV] == str(tmp_path)


def test_run_stage_hands_papermill_the_checkout_environment(monkeypatch, tmp_path):
    import papermill

    seen = {}

    def fake_execute_notebook(src, dst, parameters, cwd, kernel_name, **kw):
        seen.update(
            pythonpath=os.environ["PYTHONPATH"],
            checkout=os.environ[CHECKOUT_ENV],
            src=src,
            cwd=cwd,
            parameters=parameters,
        )
        seen.update(notices=os.environ.get(NOTICES_ENV))

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute_notebook)
    monkeypatch.delenv(CHECKOUT_ENV, raising=False)
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    pipeline.run_stage("01_cache_dense_features", "smoke", tmp_path, progress=False)
    assert seen["pythonpath"].split(os.pathsep) == [str(REPO_ROOT), "/elsewhere"]
    assert seen["checkout"] == str(REPO_ROOT)
    assert seen["src"] == str(REPO_ROOT / "notebooks" / "01_cache_dense_features.ipynb") and seen["cwd"] == str(
        REPO_ROOT / "notebooks"
    )
    assert seen["parameters"] == {"profile": "smoke", "progress": False}
    # the kernel's notices reach the terminal
    assert seen["notices"] == str(tmp_path / ".01_cache_dense_features.notices")
    assert os.environ["PYTHONPATH"] == "/elsewhere" and CHECKOUT_ENV not in os.environ, (
        "the launcher's environment is restored"
    )


def test_kernel_imports_the_checkout_on_pythonpath(second_clone, tmp_path):
    # What the pipeline of the second clone hands its kernels: the clone wins over this venv's (editable) lsr_lib.
    r = import_lsr_lib({"PYTHONPATH": str(second_clone), CHECKOUT_ENV: str(second_clone)}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).resolve() == (second_clone / "lsr_lib" / "__init__.py").resolve()


def test_kernel_of_another_checkout_stops_at_import(second_clone, tmp_path):
    # The issue: the kernel imports this checkout's lsr_lib although it was launched for the second clone.
    r = import_lsr_lib({"PYTHONPATH": str(REPO_ROOT), CHECKOUT_ENV: str(second_clone)}, cwd=tmp_path)
    assert r.returncode != 0
    assert f"imported lsr_lib from {REPO_ROOT} but was launched for checkout {second_clone}" in r.stderr
    assert "pip install -e ." in r.stderr


def test_import_is_unchanged_for_the_right_checkout_or_without_a_pipeline(tmp_path):
    assert import_lsr_lib({"PYTHONPATH": str(REPO_ROOT), CHECKOUT_ENV: str(REPO_ROOT)}, cwd=tmp_path).returncode == 0
    assert import_lsr_lib({"PYTHONPATH": str(REPO_ROOT)}, cwd=tmp_path).returncode == 0
    check_kernel_checkout(str(REPO_ROOT))
    with pytest.raises(RuntimeError, match="launched for checkout"):
        check_kernel_checkout(str(tmp_path))


def test_ctrl_c_during_a_stage_says_what_was_kept_and_how_to_resume(monkeypatch, tmp_path, caplog):
    ran = []

    def fake_run_stage(stage, profile, out_dir, progress=True, kernel_name="python3", bench=False):
        ran.append(stage)
        if stage.startswith("02_"):
            raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_stage", fake_run_stage)
    with caplog.at_level(logging.INFO, logger="lsr_lib.run.pipeline"):
        code = pipeline.main(
            ["--profile", "smoke", "--stages", "01", "02", "03", "--out", str(tmp_path), "--no-progress", "--force"]
        )
    assert code == 130 and ran == ["01_cache_dense_features", "02_train_sparse_heads"]
    text = caplog.text
    assert "interrupted during stage 02_train_sparse_heads (profile smoke)" in text
    assert "Kept: every finished stage" in text and "Rerun the same command" in text
    assert f"python -m lsr_lib.run.pipeline --profile smoke --stages 02 03 --out {tmp_path} --no-progress" in text
    assert "Traceback" not in text


def test_ctrl_c_in_the_kernel_is_an_interrupt_and_other_errors_still_fail(monkeypatch, tmp_path, caplog):
    class CellError(Exception):
        def __init__(self, ename: str):
            super().__init__(ename)
            self.ename, self.evalue = ename, ""

    for ename, expected_code in (("KeyboardInterrupt", 130), ("ValueError", 1)):

        def fake_run_stage(stage, profile, out_dir, progress=True, kernel_name="python3", bench=False, ename=ename):
            raise CellError(ename)

        monkeypatch.setattr(pipeline, "run_stage", fake_run_stage)
        caplog.clear()
        assert (
            pipeline.main(["--profile", "smoke", "--stages", "03", "--out", str(tmp_path), "--force"]) == expected_code
        )
        assert ("interrupted during stage 03_analyze_sparse_vectors" in caplog.text) == (expected_code == 130)


def test_sigint_quiets_the_shutdown_loggers_then_interrupts():
    loggers = [logging.getLogger(n) for n in pipeline.SHUTDOWN_LOGGERS]
    levels = [lg.level for lg in loggers]
    before = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            with pipeline.quiet_after_interrupt():
                signal.raise_signal(signal.SIGINT)
        assert all(lg.level == logging.ERROR for lg in loggers)
        assert signal.getsignal(signal.SIGINT) is before
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def test_bench_flag_reaches_the_stage_and_the_resume_command(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(
        pipeline,
        "run_stage",
        lambda stage, profile, out_dir, progress=True, kernel_name="python3", bench=False: seen.append((stage, bench)),
    )
    monkeypatch.setattr(pipeline, "summary", lambda profile, runs_dir: "")
    assert (
        pipeline.main(
            ["--profile", "smoke", "--stages", "04", "--force", "--bench", "--out", str(tmp_path), "--no-progress"]
        )
        == 0
    )
    assert seen == [("04_retrieve_with_inverted_index", True)]
    args = pipeline.argparse.Namespace(profile="smoke", out=None, no_progress=True, bench=True)
    assert pipeline._resume_argv(args, ["04_retrieve_with_inverted_index"])[-1] == "--bench"


def test_a_stage_that_fails_in_its_notebook_is_one_line_with_the_fix(monkeypatch, tmp_path, caplog):
    class CellError(Exception):
        ename = "ArtifactError"
        evalue = (
            "D2S run with_control (data/x) is corrupt: best.json is missing.\nRerun stage 02 (notebooks/02_....ipynb)"
        )

    def fake_run_stage(stage, profile, out_dir, progress=True, kernel_name="python3", bench=False):
        raise CellError("Traceback (most recent call last):\n  ...")

    monkeypatch.setattr(pipeline, "run_stage", fake_run_stage)
    with caplog.at_level(logging.INFO, logger="lsr_lib.run.pipeline"):
        assert pipeline.main(["--profile", "smoke", "--stages", "03", "--out", str(tmp_path), "--force"]) == 1
    [failed] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "\n" not in failed and "Traceback" not in failed
    assert failed.startswith("stage 03_analyze_sparse_vectors failed: ArtifactError: D2S run with_control")
    assert "best.json is missing. Rerun stage 02" in failed
    assert failed.endswith(f"(traceback: {tmp_path / '03_analyze_sparse_vectors.ipynb'})")


def test_a_known_error_stops_the_run_in_one_line_and_debug_shows_the_traceback(monkeypatch, tmp_path, capsys):
    from lsr_lib.config.profiles import ConfigError

    def bad_config(profile, runs_dir):
        raise ConfigError("params/smoke.yaml: lit.epochs: must be > 0, got -1")

    monkeypatch.setattr(pipeline, "run_stage", lambda *a, **kw: None)
    monkeypatch.setattr(pipeline, "summary", bad_config)
    argv = ["--profile", "smoke", "--stages", "03", "--out", str(tmp_path), "--no-progress", "--force"]
    assert pipeline.main(argv) == 1
    err = capsys.readouterr().err
    assert err == "error: params/smoke.yaml: lit.epochs: must be > 0, got -1\n"
    with pytest.raises(ConfigError, match="lit.epochs"):
        pipeline.main([*argv, "--debug"])


def test_a_damaged_result_file_in_the_closing_summary_is_named_with_its_rerun(monkeypatch, tmp_path, capsys):
    shutil.copytree(REPO_ROOT / "params", tmp_path / "params")
    monkeypatch.setattr("lsr_lib.config.profiles.REPO_ROOT", tmp_path)  # results/ under tmp_path
    monkeypatch.setattr(pipeline, "run_stage", lambda *a, **kw: None)
    damaged = tmp_path / "results" / "smoke" / "02_d2s.json"
    damaged.parent.mkdir(parents=True)
    damaged.write_text('{"results": {"test": {"with_cont')  # truncated
    assert pipeline.main(["--profile", "smoke", "--stages", "03", "--out", str(tmp_path / "runs"), "--force"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {damaged} is not valid JSON") and err.count("\n") == 1 and "Traceback" not in err
    assert "python -m lsr_lib.run.pipeline --profile smoke --stages 02 --force" in err


def test_a_stage_measured_by_an_optional_command_is_not_rerun_only_to_say_it_is_stale(monkeypatch, tmp_path, caplog):
    ran = []
    monkeypatch.setattr(pipeline, "run_stage", lambda stage, *a, **k: ran.append(stage))
    monkeypatch.setattr(pipeline, "stage_status", lambda profile, stage: (False, "made before code fingerprints"))
    monkeypatch.setattr(pipeline, "summary", lambda profile, out_dir: "summary")
    monkeypatch.setattr(pipeline, "kept_executed", lambda cfg, stage: tmp_path / "kept" / f"{stage}.ipynb")
    argv = ["--profile", "default", "--stages", "07", "--out", str(tmp_path), "--no-progress"]
    assert pipeline.main(argv) == 0 and ran == [
        "07_data_scale_study"
    ]  # no executed notebook yet: it runs once, reading the file
    (tmp_path / "07_data_scale_study.ipynb").write_text("{}")
    with caplog.at_level(logging.INFO, logger="lsr_lib.run.pipeline"):
        assert pipeline.main(argv) == 0 and ran == [
            "07_data_scale_study"
        ]  # then a stale read-only stage is skipped, saying why
    assert "measured by `make data-scale`, not by this run: skipped" in caplog.text
    assert pipeline.main([*argv, "--bench"]) == 0 and ran == ["07_data_scale_study"] * 2  # --bench measures it
    assert pipeline.measured_elsewhere("smoke", "07_data_scale_study", False) is None  # smoke measures stage 07 itself


def test_every_stage_has_its_executed_notebook_after_a_run_skipped_stages_included(monkeypatch, tmp_path, caplog):
    shutil.copytree(REPO_ROOT / "params", tmp_path / "params")
    monkeypatch.setattr("lsr_lib.config.profiles.REPO_ROOT", tmp_path)  # results/ and data/cache/ under tmp_path
    monkeypatch.setattr(pipeline, "summary", lambda profile, out_dir: "summary")
    current, ran = {"now": False}, []
    result = tmp_path / "results" / "smoke" / "03_analyses.json"

    def fake_run_stage(stage, profile, out_dir, progress=True, kernel_name="python3", bench=False):
        ran.append(stage)
        result.parent.mkdir(parents=True, exist_ok=True)
        result.write_text(json.dumps({"run": len(ran)}))
        dst = out_dir / f"{stage}.ipynb"
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(json.dumps({"cells": [], "metadata": {"run": len(ran)}, "nbformat": 4, "nbformat_minor": 5}))
        return dst

    monkeypatch.setattr(pipeline, "run_stage", fake_run_stage)
    monkeypatch.setattr(pipeline, "stage_status", lambda profile, stage: (current["now"], "why"))
    runs = tmp_path / "runs"
    argv = ["--profile", "smoke", "--stages", "03", "--out", str(runs), "--no-progress"]
    executed = runs / "03_analyze_sparse_vectors.ipynb"

    assert pipeline.main(argv) == 0 and len(ran) == 1  # stale: it runs, and its executed notebook is kept
    current["now"] = True
    shutil.rmtree(runs)
    with caplog.at_level(logging.INFO, logger="lsr_lib.run.pipeline"):
        assert pipeline.main(argv) == 0 and len(ran) == 1  # current: skipped, its executed notebook restored
    assert json.loads(executed.read_text())["metadata"]["run"] == 1
    assert "skipped (executed notebook: " in caplog.text and "restored from " in caplog.text
    assert pipeline.main(argv) == 0 and len(ran) == 1  # the one in runs/ is the current results'

    result.write_text(json.dumps({"rewritten": "by another run, e.g. nbval"}))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lsr_lib.run.pipeline"):
        assert pipeline.main(argv) == 0 and len(ran) == 2  # no executed notebook made these results: it runs
    assert "no executed notebook of these results is kept: run to make one" in caplog.text
    assert json.loads(executed.read_text())["metadata"]["run"] == 2
    # the results were current: the run for the notebook leaves them as they were (git status stays clean), says so
    assert json.loads(result.read_text()) == {"rewritten": "by another run, e.g. nbval"}
    assert "03_analyses.json is kept as it was" in caplog.text
    assert pipeline.main(argv) == 0 and len(ran) == 2  # and its executed notebook is now that of these results


def test_results_made_on_another_cpu_model_of_the_same_kind_are_named_before_the_run(tmp_path):
    """A fresh clone on an AMD EPYC reruns every stage after 01 on new content ids although torch calls both CPUs
    AVX512: the run says once, at the start, which CPU made the results and which one runs now."""
    machine_note = pipeline.machine_note
    doc = {"inputs": {"env": {"torch-cpu": "AVX512"}}, "provenance": {"machine": {"cpu": "Intel(R) Xeon(R) Processor"}}}
    (tmp_path / "01_dense_baseline.json").write_text(json.dumps(doc))
    note = machine_note(tmp_path, here="AMD EPYC", kind="AVX512")
    assert note.startswith("note: the results in ") and "made on Intel(R) Xeon(R) Processor" in note
    assert "this machine is AMD EPYC, the same AVX512 to torch" in note and "MKL" in note
    assert machine_note(tmp_path, here="Intel(R) Xeon(R) Processor", kind="AVX512") is None  # the same model
    assert machine_note(tmp_path, here="AMD EPYC", kind="AVX2") is None  # another kind: each stage's reason says so
    assert machine_note(tmp_path / "none", here="AMD EPYC", kind="AVX512") is None  # no results yet
