"""The JupyterLab path as a user walks it (issue 28): headless Chromium opens notebook 03 in a real JupyterLab,
picks Run > Run All Cells, and every code cell runs without an error on the smoke profile.

Skips (one line) without Chromium / chromedriver / selenium / jupyterlab, and when stage 01/02's smoke outputs
are missing (``make test`` runs this after nbval has run notebooks 01 and 02: tests/conftest.py puts it last).
Nothing is saved: the notebook on disk must be byte-identical afterwards. The run itself writes what notebook 03
always writes on smoke (results/smoke/, figures/smoke/, both gitignored).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from lsr_lib.run.lab_browser import (
    LabPage,
    browser_missing,
    code_cells,
    headless_chromium,
    jupyter_lab,
    kernel_missing,
    lab_missing,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "notebooks/03_analyze_sparse_vectors.ipynb"
PROFILE = "smoke"
RUN_ALL_TIMEOUT_S = 1800  # only so that a hung kernel cannot hang the suite; smoke takes about a minute

pytestmark = pytest.mark.slow


def smoke_inputs_missing() -> str | None:
    """Why notebook 03 cannot run on smoke here (its stage 01/02 inputs), or None."""
    from lsr_lib.artifacts import stage_inputs
    from lsr_lib.config.profiles import load_config

    try:
        stage_inputs(load_config(PROFILE), NOTEBOOK.split("/")[1].removesuffix(".ipynb"))
    except FileNotFoundError as err:  # ArtifactError too: missing, stale or corrupt
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        return f"notebook 03's smoke inputs are missing (run stages 01-02 on smoke first): {first}"
    return None


@pytest.fixture(scope="module")
def lab():
    why = browser_missing() or lab_missing() or smoke_inputs_missing()
    if why:
        pytest.skip(why)
    env = {"LSR_PROFILE": PROFILE, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with jupyter_lab(ROOT, env=env) as server, headless_chromium() as driver:
        yield LabPage(driver, server)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_run_all_cells_of_notebook_03_in_jupyterlab(lab):
    path = ROOT / NOTEBOOK
    assert not kernel_missing(path), kernel_missing(path)  # else the Lab would ask which kernel to start
    before, mtime = sha256(path), os.stat(path).st_mtime_ns
    lab.open(NOTEBOOK)
    report = lab.run_all(timeout_s=RUN_ALL_TIMEOUT_S)

    assert not report.errors, f"cells raised in JupyterLab: {report.errors}"
    assert len(report.prompts) == code_cells(path), report.prompts
    assert not report.unexecuted, f"code cells without an execution count: {report.unexecuted} ({report.prompts})"
    counts = [int(p.strip("[]:")) for p in report.prompts]
    assert counts == sorted(counts) and len(set(counts)) == len(counts), f"cells ran out of order: {counts}"
    assert any(f"| profile {PROFILE} |" in out for out in report.stdout), "the banner does not say the smoke profile"
    assert (sha256(path), os.stat(path).st_mtime_ns) == (before, mtime), f"{NOTEBOOK} was written by the Lab"
