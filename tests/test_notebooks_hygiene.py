"""Notebook hygiene: names, one literal-only parameters cell, no outputs, all registered.

Checked on each notebook as git stores it (:func:`lsr_lib.run.lab.committed_form`): through the nbstripout
filter where `make setup` installed it, so outputs the Lab saved into a working copy do not fail it, else
as it is on disk.
"""

import ast
import re
from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell
from papermill.translators import PythonTranslator

from lsr_lib.run.lab import KERNELSPEC, committed_form
from lsr_lib.run.pipeline import LANDING, STAGES, main, select_stages

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))


def test_every_notebook_is_registered_in_order():
    assert [p.stem for p in NOTEBOOKS] == [LANDING, *STAGES]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_hygiene(path):
    assert re.fullmatch(r"\d\d_[a-z0-9]+(_[a-z0-9]+)+", path.stem), "name must be NN_verb_object"
    nb = committed_form(path)
    cells = nb["cells"]
    assert cells[0]["cell_type"] == "markdown" and "Purpose" in "".join(cells[0]["source"])
    params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1 and params[0] is cells[1]
    tree = ast.parse("".join(params[0]["source"]))
    for node in tree.body:
        assert isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant), "parameters: literals only"
    values = {t.id: n.value.value for n in tree.body for t in n.targets}
    inspected = PythonTranslator.inspect(new_code_cell("".join(params[0]["source"])))  # what papermill reads
    assert [p.name for p in inspected] == list(values), "papermill cannot parse a parameter line (no '=' in comments)"
    assert "profile" in values and values["profile"] is None, (
        "profile = None: the notebook opens on the Lab's profile ($LSR_PROFILE), else default (make main's)"
    )
    assert nb["metadata"].get("kernelspec") == KERNELSPEC, "kernelspec: the project kernel (make setup installs it)"
    assert "language_info" not in nb["metadata"], "commit notebooks through the git filter (make setup)"
    assert [c.get("id") for c in cells] == [str(k) for k in range(len(cells))], "cell ids: numbered (git filter)"
    for c in cells:
        if c["cell_type"] == "code":
            assert not c.get("outputs") and c.get("execution_count") is None, "commit notebooks without outputs"
            src = "".join(c["source"])
            assert "!pip" not in src and "%run" not in src and "import *" not in src
            assert "/work/" not in src and "/home/" not in src, "no absolute paths"


def test_pipeline_dry_run_lists_every_stage(capsys):
    assert main(["--profile", "paper", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(STAGES) and all("-p profile paper" in line for line in out)
    assert select_stages(["1"]) == STAGES[:1]
    with pytest.raises(SystemExit, match="unknown stage"):
        select_stages(["99"])


def test_readme_tables_match_result_files():
    from lsr_lib.results.report import main as report_main

    assert report_main(["--check"]) == 0, "README.md is stale: run `python -m lsr_lib.results.report`"
