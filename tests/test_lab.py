"""JupyterLab on this project (issue 28): the notebooks open on the Lab's profile, the kernel they name
exists after setup, `make lab` / `make test` pass the profile, and working in the Lab leaves git clean."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lsr_lib.config.profiles import PROFILE_ENV, load_config, notebook_profile
from lsr_lib.run import lab
from lsr_lib.run.pipeline import LANDING

REPO = Path(__file__).resolve().parents[1]
GIT_USER = ["-c", "user.name=test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false"]


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo``; its stdout."""
    return subprocess.run(["git", *GIT_USER, *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def test_a_notebook_without_a_profile_opens_on_the_labs_profile_else_the_main_jobs(monkeypatch):
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    assert notebook_profile(None) == "default" and load_config(None).profile == "default"  # what `make main` ran
    monkeypatch.setenv(PROFILE_ENV, "smoke")  # `make lab PROFILE=smoke`, `make test`
    assert notebook_profile(None) == "smoke" and load_config(None).profile == "smoke"
    assert load_config("paper").profile == "paper"  # papermill's injected parameter wins


def _make_dry_run(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-n", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return out.replace("\\\n", " ")  # one line per command


def test_make_lab_starts_as_root_at_the_repository_on_the_landing_notebook_and_the_profile():
    out = _make_dry_run("lab", "PROFILE=smoke")
    [line] = [line for line in out.splitlines() if "jupyter lab" in line]
    assert line.startswith("LSR_PROFILE=smoke ") and "--allow-root" in line
    assert f'--ServerApp.root_dir="{REPO}"' in line
    url = line.split("--LabApp.default_url=/lab/tree/", 1)[1].split()[0]
    assert (REPO / url) == REPO / "notebooks" / f"{LANDING}.ipynb" and (REPO / url).is_file()
    assert "LSR_PROFILE=default " in _make_dry_run("lab")  # without PROFILE: what `make main` ran


def test_make_test_runs_the_notebooks_on_smoke():
    [line] = [line for line in _make_dry_run("test").splitlines() if "nbval" in line]
    assert "LSR_PROFILE=smoke" in line.split("pytest")[0] and " notebooks " in line


def test_the_kernel_the_notebooks_name_is_this_interpreter(tmp_path):
    from jupyter_client.kernelspec import KernelSpecManager

    folder = lab.install_kernel(prefix=str(tmp_path))
    spec = KernelSpecManager(kernel_dirs=[str(folder.parent)]).get_kernel_spec(lab.KERNEL_NAME)
    assert spec.argv[0] == sys.executable and spec.display_name == "Python (lsr_lib)"
    names = {json.loads(p.read_text())["metadata"]["kernelspec"]["name"] for p in (REPO / "notebooks").glob("*.ipynb")}
    assert names == {lab.KERNEL_NAME}


def _lab_save(notebook: Path, nb) -> None:
    """Save ``nb`` as the Lab started by `make lab` does: Jupyter's contents manager with its post-save hook."""
    from jupyter_server.services.contents.filemanager import FileContentsManager

    hook = _make_dry_run("lab").split("--ContentsManager.post_save_hook=", 1)[1].split()[0]
    manager = FileContentsManager(root_dir=str(notebook.parent), post_save_hook=hook)
    manager.save({"type": "notebook", "format": "json", "content": nb}, notebook.name)


def _lab_session(notebook: Path) -> None:
    """What a Lab session leaves in a notebook: run every cell in a kernel (language_info, outputs, counts),
    fold a heading, scroll an output, then save (the Lab's autosave)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}}).execute()
    nb.cells[-1].metadata["scrolled"] = True
    nb.cells[0].metadata["jp-MarkdownHeadingCollapsed"] = True
    _lab_save(notebook, nb)


@pytest.mark.slow
def test_working_in_the_lab_leaves_a_fresh_clone_clean_once_setup_has_run(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    origin = tmp_path / "origin"
    (origin / "notebooks").mkdir(parents=True)
    for p in (REPO / "notebooks").glob("*.ipynb"):
        shutil.copy(p, origin / "notebooks" / p.name)
    for name in (".gitattributes", ".gitignore"):
        shutil.copy(REPO / name, origin / name)
    git(origin, "init", "-q")
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "notebooks")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    landing = clone / "notebooks" / f"{LANDING}.ipynb"
    committed = landing.read_text()

    _lab_session(landing)  # without the filter (setup not run): the session shows in git status
    assert json.loads(landing.read_text())["cells"][-1]["outputs"], "the session saved outputs into the working copy"
    assert git(clone, "status", "--porcelain").strip()
    git(clone, "checkout", "--", ".")

    print(lab.install_notebook_filter(clone))  # what `make setup` does
    _lab_session(landing)
    assert json.loads(landing.read_text())["cells"][-1]["outputs"]
    assert git(clone, "status", "--porcelain") == "", "outputs, counts, language_info, view state: not a change"
    assert lab.committed_form(landing, clone) == json.loads(committed)

    import nbformat

    nb = nbformat.read(landing, as_version=4)
    nb.cells[2].source = "print('an edit')"
    _lab_save(landing, nb)
    assert git(clone, "status", "--porcelain").split() == ["M", f"notebooks/{LANDING}.ipynb"], "a source edit shows"
    assert git(clone, "diff", "--cached", "--name-only") == "", "and is not staged"
    _lab_save(clone / "notebooks" / "Untitled.ipynb", nbformat.v4.new_notebook())  # a new notebook is not added
    assert "?? notebooks/Untitled.ipynb" in git(clone, "status", "--porcelain").splitlines()


def test_the_landing_page_links_every_stages_executed_notebook_of_the_current_results(monkeypatch, tmp_path):
    from lsr_lib.run import pipeline

    shutil.copytree(REPO / "params", tmp_path / "params")
    monkeypatch.setattr("lsr_lib.config.profiles.REPO_ROOT", tmp_path)  # results/, runs/, data/ under tmp_path
    monkeypatch.setattr(lab, "REPO_ROOT", tmp_path)
    monkeypatch.setenv(PROFILE_ENV, "smoke")
    stage = "03_analyze_sparse_vectors"
    result = tmp_path / "results" / "smoke" / "03_analyses.json"
    result.parent.mkdir(parents=True)
    result.write_text("{}")
    executed = tmp_path / "runs" / "smoke" / f"{stage}.ipynb"
    executed.parent.mkdir(parents=True)
    executed.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    pipeline.keep_executed("smoke", stage, executed)  # as after the pipeline ran the stage

    def row(page: str, number: str) -> str:
        return next(line for line in page.splitlines() if line.startswith(f"| {number} |"))

    page = lab.start_here(None, notebooks=tmp_path / "notebooks")
    assert "**Profile `smoke`** (from `make lab PROFILE=smoke`" in page
    assert "`.venv/bin/python -m lsr_lib.run.pipeline --profile smoke` makes it" in page
    link = f"[runs/smoke/{stage}.ipynb](../runs/smoke/{stage}.ipynb)"
    assert link in row(page, "03") and "not the run" not in row(page, "03")
    assert "[results/smoke/03_analyses.json](../results/smoke/03_analyses.json)" in row(page, "03")
    assert "none yet" in row(page, "01") and "01_dense_baseline.json: missing" in row(page, "01")
    result.write_text('{"rewritten": true}')  # by another run than the one in runs/
    assert "(not the run that wrote the result files)" in row(lab.start_here(None, tmp_path / "notebooks"), "03")
