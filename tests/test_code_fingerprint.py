"""The code half of every fingerprint: which edits make which artifacts and stages stale, and why.

Each test works on a copy of ``lsr_lib`` and ``notebooks`` in a temporary folder (the module's
``LIB`` and ``REPO_ROOT`` pointed at it), edits the copy, and compares fingerprints before and after.
"""

from __future__ import annotations

import json
import shutil
from importlib import metadata
from pathlib import Path

import pytest

from lsr_lib.run.pipeline import STAGES
from lsr_lib.storage import code_fingerprint as cf

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A copy of lsr_lib/ and notebooks/ that the fingerprint functions read instead of the checkout."""
    shutil.copytree(REPO / "lsr_lib", tmp_path / "lsr_lib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    monkeypatch.setattr(cf, "LIB", tmp_path / "lsr_lib")
    monkeypatch.setattr(cf, "REPO_ROOT", tmp_path)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not found once in {path}"
    path.write_text(text.replace(old, new))


def _stages(root: Path) -> dict[str, dict]:
    return {s: cf.code_fingerprint(notebook=root / "notebooks" / f"{s}.ipynb") for s in STAGES}


def test_comments_docstrings_and_formatting_change_nothing(tree):
    path = tree / "lsr_lib/metrics/retrieval.py"
    before = (cf.code_fingerprint("lsr_lib.train.d2s"), _stages(tree))
    text = path.read_text()
    head, body = text.split('"""', 2)[1], text.split('"""', 2)[2]
    path.write_text(
        '"""'
        + head.upper()
        + '"""'
        + body.replace("\n\n\n", "\n\n\n# a comment added by a test\n\n")
        + "\n\n# trailing comment\n"
    )
    _edit(path, "def metrics_from_ranks(", "def   metrics_from_ranks(")
    assert path.read_text() != text
    assert (cf.code_fingerprint("lsr_lib.train.d2s"), _stages(tree)) == before


def test_a_one_token_edit_makes_exactly_its_importers_stale(tree):
    path = tree / "lsr_lib/analysis/coactivation.py"
    before = _stages(tree)
    importers = {s for s, fp in before.items() if "lsr_lib/analysis/coactivation.py" in fp["code"]}
    assert "03_analyze_sparse_vectors" in importers and "01_cache_dense_features" not in importers
    _edit(path, '"df_share": df[ids] / n})', '"df_share": df[ids] * n})')  # one token
    after = _stages(tree)
    assert {s for s in STAGES if after[s] != before[s]} == importers
    for s in importers:
        assert cf.explain_change(before[s], after[s]) == ["lsr_lib/analysis/coactivation.py changed"]


def test_an_engine_edit_does_not_retrain_d2s_but_a_loss_edit_does(tree):
    d2s, towers = cf.code_fingerprint("lsr_lib.train.d2s"), cf.code_fingerprint("lsr_lib.dense.towers")
    s04 = cf.code_fingerprint(notebook=tree / "notebooks/04_retrieve_with_inverted_index.ipynb")
    (tree / "lsr_lib/index/exact.py").write_text((tree / "lsr_lib/index/exact.py").read_text() + "\nENGINE_EDIT = 1\n")
    assert cf.code_fingerprint("lsr_lib.train.d2s") == d2s
    # reached through the engine registry
    assert cf.code_fingerprint(notebook=tree / "notebooks/04_retrieve_with_inverted_index.ipynb") != s04
    (tree / "lsr_lib/train/d2s_method.py").write_text(
        (tree / "lsr_lib/train/d2s_method.py").read_text() + "\nLOSS_EDIT = 1\n"
    )
    assert cf.explain_change(d2s, cf.code_fingerprint("lsr_lib.train.d2s")) == ["lsr_lib/train/d2s_method.py changed"]
    assert cf.code_fingerprint("lsr_lib.dense.towers") == towers  # the 15-minute tower features stay


def _notebook(tree: Path, stage: str) -> tuple[Path, dict]:
    path = tree / "notebooks" / f"{stage}.ipynb"
    return path, json.loads(path.read_text())


def test_notebook_code_counts_outputs_metadata_and_the_profile_do_not(tree):
    stage = "03_analyze_sparse_vectors"
    path, nb = _notebook(tree, stage)
    base = cf.code_fingerprint(notebook=path)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    code[-1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["42\n"]}]
    code[-1]["execution_count"] = 7
    nb["metadata"]["kernelspec"] = {"name": "another", "display_name": "Another"}
    code[-1]["metadata"]["id"] = "abc"
    nb["cells"].append({"cell_type": "markdown", "metadata": {}, "source": ["A note."]})
    params = next(c for c in code if "parameters" in c["metadata"].get("tags", []))
    lines = "".join(params["source"]).splitlines()
    assert lines[0].startswith("profile = None  # "), "the committed form: the Lab's profile"
    params["source"] = ["\n".join(['profile = "smoke"', *lines[1:]])]  # a user's switch in the Lab
    path.write_text(json.dumps(nb))
    assert cf.code_fingerprint(notebook=path) == base  # outputs, metadata, markdown and the profile line
    params["source"] = ["\n".join(['profile = "paper"  # set here', "progress = False", *lines[2:]])]
    path.write_text(json.dumps(nb))
    assert cf.code_fingerprint(notebook=path) == base  # and the progress line
    params["source"] = ["".join(params["source"]) + "\ntop_k = 11\n"]  # another default in the parameters cell
    path.write_text(json.dumps(nb))
    changed = cf.code_fingerprint(notebook=path)
    assert cf.explain_change(base, changed) == ["notebook changed"]
    params["source"] = ["".join(params["source"]).replace("\ntop_k = 11\n", "")]
    code[-1]["source"] = ["".join(code[-1]["source"]) + "\nprint('added')\n"]  # a cell edit
    path.write_text(json.dumps(nb))
    assert cf.code_fingerprint(notebook=path) != base


def test_a_package_version_is_part_of_what_computes_with_it(monkeypatch):
    d2s, engines = cf.numeric_environment({"torch", "numpy"}), cf.numeric_environment({"numba"})
    assert "torch" in d2s and "numpy" in d2s and "numba" not in d2s and "faiss-cpu" not in d2s
    assert "llvmlite" in engines  # what numba requires from the list comes with it
    real = metadata.version
    monkeypatch.setattr(cf.metadata, "version", lambda name: "2.14.0" if name == "torch" else real(name))
    moved = cf.numeric_environment({"torch", "numpy"})
    assert cf.explain_change({"code": {}, "env": d2s}, {"code": {}, "env": moved}) == [
        f"torch {d2s['torch']} -> 2.14.0"
    ]
    assert cf.numeric_environment({"numba"}) == engines  # the engines do not compute with torch


def test_the_stage_closure_is_computed_from_imports_and_registries():
    fp = cf.code_fingerprint(notebook=REPO / "notebooks/04_retrieve_with_inverted_index.ipynb")
    assert {
        "lsr_lib/index/exact.py",
        "lsr_lib/index/milvus.py",
        "notebooks/04_retrieve_with_inverted_index.ipynb",
    } <= set(fp["code"])
    assert {"numba", "faiss-cpu", "pyseismic-lsr"} <= set(fp["env"])
    assert cf.code_fingerprint("tests.test_code_fingerprint")["code"] == {}  # outside lsr_lib: nothing
    with pytest.raises(ValueError, match="lsr_lib.no_such_module is not a module of lsr_lib"):
        cf.code_fingerprint("lsr_lib.no_such_module")
    assert cf.explain_change({"code": 3}, {"code": {"a.py": "x"}}) == ["made before code fingerprints"]


def test_explain_names_the_reason_for_every_stage(tree, monkeypatch):
    from lsr_lib.artifacts import catalog
    from lsr_lib.config.profiles import load_config
    from lsr_lib.results.provenance import write_results
    from lsr_lib.run import pipeline

    params = REPO / "params"
    monkeypatch.setattr("lsr_lib.config.profiles.REPO_ROOT", tree)  # results/ under the copy
    monkeypatch.setattr(catalog, "_artifact_ids", lambda cfg, stage, missing_seeds=None: {})  # code and config only
    monkeypatch.setattr(
        pipeline,
        "stage_status",
        lambda profile, stage: catalog.result_status(load_config(profile, params_dir=params), stage),
    )
    cfg = load_config("smoke", params_dir=params)
    stages = ["02_train_sparse_heads", "03_analyze_sparse_vectors", "04_retrieve_with_inverted_index"]
    for stage in stages:
        for name in catalog.RESULT_FILES[stage]:
            write_results(cfg, name, {"x": 1}, catalog.stage_inputs(cfg, stage))
    assert all(line.split(": ")[1] == "current" for line in pipeline.explain("smoke", stages))

    _edit(tree / "lsr_lib/analysis/coactivation.py", '"df_share": df[ids] / n})', '"df_share": df[ids] * n})')
    assert pipeline.explain("smoke", stages) == [
        pipeline.explain("smoke", stages[:1])[0],
        "03: stale: lsr_lib/analysis/coactivation.py changed since results/smoke/03_analyses.json",
        pipeline.explain("smoke", stages[2:])[0],
    ]
    assert pipeline.explain("smoke", stages[2:])[0].startswith("04: current: results/smoke/04_retrieval.json")

    path, nb = _notebook(tree, "02_train_sparse_heads")
    cell = next(
        c for c in nb["cells"] if c["cell_type"] == "code" and "parameters" not in c["metadata"].get("tags", [])
    )
    cell["source"] = ["".join(cell["source"]) + "\nx = 1\n"]
    path.write_text(json.dumps(nb))
    lines = pipeline.explain("smoke", stages)
    assert lines[0] == "02: stale: notebook changed since results/smoke/02_d2s.json"
    assert lines[2].startswith("04: current, but reads the outputs of stage 02, which reruns first")

    real = metadata.version
    monkeypatch.setattr(cf.metadata, "version", lambda name: "9.9.9" if name == "numba" else real(name))
    assert (
        pipeline.explain("smoke", stages[2:])[0]
        == f"04: stale: numba {real('numba')} -> 9.9.9 since results/smoke/04_retrieval.json"
    )
    assert "numba" not in pipeline.explain("smoke", stages[:1])[0]  # stage 02 does not compute with numba


def test_a_table_measured_with_earlier_code_says_so():
    from lsr_lib.results.report import measured_with_earlier_code

    stage = "07_data_scale_study"
    now = cf.code_fingerprint(notebook=cf.stage_notebook(stage))
    assert measured_with_earlier_code({"inputs": now}, stage, "make data-scale") == ""
    old = {"inputs": {**now, "code": {**now["code"], "lsr_lib/train/d2s.py": "0"}}, "provenance": {"commit": "abc"}}
    note = measured_with_earlier_code(old, stage, "make data-scale")
    assert note.startswith("**Measured with earlier code** (commit abc;") and "`make data-scale`" in note


def test_the_cpu_instruction_set_is_part_of_what_torch_computes(monkeypatch):
    env = cf.numeric_environment({"torch"})
    assert env["torch-cpu"] == cf.torch_cpu_capability() and "torch-cpu" not in cf.numeric_environment({"numba"})
    monkeypatch.setattr(cf, "torch_cpu_capability", lambda: "AVX512")
    moved = cf.numeric_environment({"torch"})
    if env["torch-cpu"] != "AVX512":
        assert cf.explain_change({"code": {}, "env": env}, {"code": {}, "env": moved}) == [
            f"torch-cpu {env['torch-cpu']} -> AVX512"
        ]


def test_tower_caches_do_not_depend_on_the_config_code():
    """The tower caches record the config values they read; a new config key (any edit of lsr_lib/config) must not
    throw away some 27k image-tower passes: the fingerprint machinery must not pull the config package in."""
    from lsr_lib.artifacts.tower_features import TOWER_IMAGE_CODE
    from lsr_lib.storage.code_fingerprint import code_fingerprint

    for entries in (TOWER_IMAGE_CODE, ("lsr_lib.dense.towers",)):
        files = code_fingerprint(*entries)["code"]
        assert "lsr_lib/dense/towers.py" in files
        assert not [f for f in files if f.startswith("lsr_lib/config/")], files


def test_the_trainers_do_not_depend_on_the_profile_loader():
    """A trained D2S or suggestion model records its own config section; a new key elsewhere in the profile (stage 04's
    index settings) must not retrain them: their code fingerprints hold their config section, not ``profiles``."""
    from lsr_lib.storage.code_fingerprint import code_fingerprint

    for entry, section in (
        ("lsr_lib.train.d2s", "lsr_lib/config/d2s.py"),
        ("lsr_lib.train.suggest", "lsr_lib/config/suggest.py"),
    ):
        files = code_fingerprint(entry)["code"]
        assert section in files and "lsr_lib/config/profiles.py" not in files, sorted(files)


def test_a_table_measured_by_this_code_on_another_cpu_says_so_not_earlier_code(tmp_path, monkeypatch):
    """A fresh clone on a CPU whose instruction set torch dispatches to differently (AVX512 here, AVX2 where the
    results were made) reruns the stages, but the committed tables are not 'earlier code'."""
    from lsr_lib.results import currency, headline

    stage = "02_train_sparse_heads"
    now = cf.code_fingerprint(notebook=cf.stage_notebook(stage))
    elsewhere = {"inputs": {**now, "env": {**now["env"], "torch-cpu": "AVX-OTHER"}}, "provenance": {"commit": "abc"}}
    note = currency.measured_with_earlier_code(elsewhere, stage, "make main")
    assert note.startswith("**Measured in another environment** (commit abc; torch-cpu AVX-OTHER -> ")
    assert "earlier code" not in note and "`make main` measures them here" in note
    both = {"inputs": {**elsewhere["inputs"], "code": {**now["code"], "lsr_lib/train/d2s.py": "0"}}}
    assert currency.measured_with_earlier_code(both, stage, "make main").startswith("**Measured with earlier code**")
    assert currency.changes({"inputs": now}, stage) == ([], [])

    for seed, doc in (("seed1", elsewhere), ("seed2", both)):  # one seed elsewhere, one with earlier code
        (tmp_path / seed).mkdir()
        (tmp_path / seed / "02_d2s.json").write_text(json.dumps(doc))
    seeds = currency.seeds_note(tmp_path)
    assert "earlier code**: the result files of seed2 were" in seeds
    assert "another environment**: the result files of seed1 were made by this code elsewhere (torch-cpu" in seeds
    top = headline.currency_note(tmp_path)
    assert "`make seeds` (seed2) were made by code that has changed" in top
    assert "`make seeds` (seed1) were made by this code elsewhere (torch-cpu AVX-OTHER -> " in top
