"""Names that match the tree: every module, test file and notebook the prose names exists (issue 26).

The prose is every docstring and comment of the Python files (``lsr_lib``, ``tests``,
``benchmarks``, ``scripts``), every notebook cell (markdown and code), the Markdown files
(README.md, data/README.md, docs/*.md), the Makefile, and the comments of params/*.yaml and
environment*.yml. In it:

- a path ``lsr_lib/<package>/<module>.py`` (or a folder ``lsr_lib/<package>/``), ``benchmarks/<name>.py``
  or ``scripts/<name>`` is a file (folder) of the tree;
- a dotted name ``lsr_lib.<package>.<module>``, optionally followed by ``:Name`` or ``.name``, is a module
  or package of the tree, and what follows it is a name that module defines or imports at top level;
- a test path ``tests/test_<name>.py`` is a file, and ``tests/test_<name>.py::test_<case>`` a test in it;
- a notebook path ``notebooks/<NN_name>.ipynb`` is a notebook of the tree;
- no module name from before the move into packages (``OLD_MODULES``) is used as a name (notebook
  code cells are exempt: notebook 06 still binds ``lsr_lib.stages.explore_figures`` to its old name).

Test files are named after what they test (``test_test_file_names``): ``test_<module>.py`` for
``lsr_lib/<package>/<module>.py``, ``test_<package>_<module>.py`` where the module's own name is
ambiguous or says little alone (``test_train_d2s``: ``d2s`` is also ``config/d2s.py``;
``test_index_sparse``), ``test_<package>.py`` for a package's contract, and a descriptive name only
for a behaviour that spans modules (``BEHAVIOUR_TESTS``).
"""

from __future__ import annotations

import ast
import io
import json
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lsr_lib"

# The flat modules of lsr_lib before the move into packages whose names are not also the name of a
# module of the tree now (those that kept their name, e.g. ``coactivation``, are checked by the dotted
# and path checks when written with ``lsr_lib``), with where each went.
OLD_MODULES = {
    "analysis_stage": "lsr_lib.stages.analyze_sparse_vectors",
    "blip_encoder": "lsr_lib.dense.blip",
    "d2s_config": "lsr_lib.config.d2s",
    "d2s_loss": "lsr_lib.train.d2s_method",
    "d2s_stage": "lsr_lib.stages.train_sparse_heads",
    "d2s_train": "lsr_lib.train.d2s",
    "dense_encoder": "lsr_lib.dense.encoder",
    "dense_extract": "lsr_lib.dense.extract",
    "dense_features": "lsr_lib.stages.cache_dense_features",
    "dense_index": "lsr_lib.index.dense",
    "emoji_data": "lsr_lib.data.emoji",
    "explorer_figures": "lsr_lib.stages.explore_figures",
    "explorer_widgets": "lsr_lib.stages.explore_widgets",
    "feature_cache": "lsr_lib.storage.shard_cache",
    "index_stage": "lsr_lib.stages.retrieve_with_inverted_index",
    "latency_bench": "lsr_lib.index.latency",
    "lavis_encoder": "lsr_lib.dense.lavis",
    "retrieval_metrics": "lsr_lib.metrics.retrieval",
    "sparse_head": "lsr_lib.sparse.head",
    "sparse_index": "lsr_lib.index.sparse",
    "sparse_index_backends": "lsr_lib.index.backends",
    "sparse_index_exact": "lsr_lib.index.exact",
    "sparse_index_pisa": "lsr_lib.index.pisa",
    "suggest_config": "lsr_lib.config.suggest",
    "suggest_data": "lsr_lib.data.suggest",
    "suggest_model": "lsr_lib.sparse.suggest_encoders",
    "suggest_stage": "lsr_lib.stages.image_suggestion",
    "suggest_train": "lsr_lib.train.suggest",
    "typed_config": "lsr_lib.config.typed",
}

# Tests of a behaviour that spans modules, named for the behaviour.
BEHAVIOUR_TESTS = {
    "test_committed_results": "the committed default results against the measured parts they are built from",
    "test_determinism": "bit-identical retraining (LiT, D2S) and seed_everything across modules",
    "test_docs": "the pages a user reads (README.md, docs/, data/README.md, notebook markdown): links, paths, facts",
    "test_layering": "the import graph of the whole package",
    "test_learned_engines": "BMP and kANNolo (index/bmp.py, index/kannolo.py) behind one interface",
    "test_lock": "requirements.lock, the venv and provenance",
    "test_names": "the names in all prose (this file)",
    "test_notebooks_hygiene": "every notebook's form and registration",
    "test_pipeline_run": "a pipeline run end to end: kernels, Ctrl-C, resume (run/pipeline.py)",
    "test_stage_results": "every stage module's result-building functions and their keys",
}

MODULE_PATH = re.compile(r"(?<![\w/.-])(?:lsr_lib(?:/\w+)+(?:\.py)?/?|(?:benchmarks|scripts)/\w+(?:\.\w+)?)")
DOTTED = re.compile(r"\blsr_lib(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_]\w*)?")
TEST_PATH = re.compile(r"(?<![\w/.-])tests/(test_\w+\.py)(?:::(\w+))?")
NOTEBOOK_PATH = re.compile(r"(?<![\w/.-])notebooks/(\w+\.ipynb)")
OLD_NAME = re.compile(r"(?<![\w./-])(" + "|".join(sorted(OLD_MODULES, key=len, reverse=True)) + r")(?![\w/-])")


def comments(src: str) -> list[tuple[int, str]]:
    """(line, text) of the ``#`` comments of Python source."""
    return [
        (t.start[0], t.string)
        for t in tokenize.generate_tokens(io.StringIO(src).readline)
        if t.type == tokenize.COMMENT
    ]


def python_prose(src: str) -> list[tuple[int, str]]:
    """(line, text) of every docstring line and comment of Python source."""
    out = comments(src)
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None:
                out += [(node.body[0].lineno + k, line) for k, line in enumerate(doc.splitlines())]
    return sorted(out)


def yaml_comments(path: Path) -> list[tuple[int, str]]:
    """(line, text) of the ``#`` comments of a YAML file."""
    lines = path.read_text().splitlines()
    return [(k, line[line.index("#") :]) for k, line in enumerate(lines, 1) if "#" in line]


def prose() -> list[tuple[str, str, bool]]:
    """(where, text, is_code) for everything the checks read; is_code: a notebook code cell."""
    out = []
    for pkg in ("lsr_lib", "tests", "benchmarks", "scripts"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out += [(f"{path.relative_to(ROOT)}:{n}", t, False) for n, t in python_prose(path.read_text())]
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for k, cell in enumerate(json.loads(path.read_text())["cells"]):
            src, where = "".join(cell["source"]), f"{path.relative_to(ROOT)} cell {k}"
            out.append((where, src, cell["cell_type"] == "code"))
            if cell["cell_type"] == "code":
                out += [(f"{where} line {n}", t, False) for n, t in comments(src)]
    for path in [ROOT / "README.md", ROOT / "data" / "README.md", ROOT / "Makefile", *sorted(ROOT.glob("docs/*.md"))]:
        out += [(f"{path.relative_to(ROOT)}:{n}", t, False) for n, t in enumerate(path.read_text().splitlines(), 1)]
    for path in [*sorted(ROOT.glob("params/*.yaml")), *sorted(ROOT.glob("environment*.yml"))]:
        out += [(f"{path.relative_to(ROOT)}:{n}", t, False) for n, t in yaml_comments(path)]
    return out


PROSE = prose()


def module_file(dotted: str) -> Path | None:
    """The file of an lsr_lib module or package, or None."""
    base = ROOT.joinpath(*dotted.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def top_level_names(path: Path) -> set[str]:
    """Names a module defines or imports at top level (``from .x import *`` included)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.ImportFrom) and node.names[0].name == "*":
            package = path.parent.relative_to(ROOT).parts[: len(path.parent.relative_to(ROOT).parts) - node.level + 1]
            names |= top_level_names(module_file(".".join([*package, *(node.module or "").split(".")])))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        else:  # assignments, also under an ``if`` or ``try``
            names |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            names |= {a.asname or a.name for n in ast.walk(node) if isinstance(n, ast.ImportFrom) for a in n.names}
    return names


def dotted_problem(name: str) -> str | None:
    """Why a dotted ``lsr_lib`` name (with ``.attribute`` or ``:Attribute``) names nothing in the tree, or None."""
    name, _, colon_attr = name.partition(":")
    parts = name.split(".")
    k = len(parts)
    while k > 1 and module_file(".".join(parts[:k])) is None:
        k -= 1
    module, rest = ".".join(parts[:k]), parts[k:] + ([colon_attr] if colon_attr else [])
    if not rest or rest[0] in top_level_names(module_file(module)):
        return None
    return f"no module {module}.{rest[0]}, and {module} defines no {rest[0]!r}"


def functions_in(path: Path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)}


def problems(text: str, is_code: bool = False) -> list[str]:
    """What one piece of prose names that does not exist."""
    out = []
    for m in MODULE_PATH.finditer(text):
        p, target = m.group(0), ROOT / m.group(0)
        if not (target.exists() or (not p.endswith((".py", "/")) and target.with_suffix(".py").is_file())):
            out.append(f"path {p} does not exist")
    for m in DOTTED.finditer(text):
        why = dotted_problem(m.group(0))
        if why:
            out.append(f"dotted {m.group(0)}: {why}")
    for m in TEST_PATH.finditer(text):
        path = ROOT / "tests" / m.group(1)
        if not path.is_file():
            out.append(f"test tests/{m.group(1)} does not exist")
        elif m.group(2) and m.group(2) not in functions_in(path):
            out.append(f"test tests/{m.group(1)} has no {m.group(2)}")
    for m in NOTEBOOK_PATH.finditer(text):
        if not (ROOT / "notebooks" / m.group(1)).is_file():
            out.append(f"notebook notebooks/{m.group(1)} does not exist")
    if not is_code:
        for m in OLD_NAME.finditer(text):
            out.append(f"old {m.group(1)} is a module name from before the packages: {OLD_MODULES[m.group(1)]}")
    return out


def test_the_checks_read_every_kind_of_prose():
    where = {w.split(":")[0].split(" cell")[0] for w, _, _ in PROSE}
    assert {"README.md", "Makefile", "docs/reliability.md", "data/README.md", "params/paper.yaml"} <= where
    assert any(w.startswith("notebooks/") for w in where) and any(w.startswith("lsr_lib/") for w in where)
    assert any("Stage 04 glue: retrieval through inverted indexes" in t for _, t, _ in PROSE)  # a docstring
    assert any(t.startswith("# ") and w.startswith("tests/") for w, t, _ in PROSE)  # a comment


def test_the_checks_find_wrong_names():
    assert problems("see ``lsr_lib.metrics.retrieval.evaluate_scores`` and lsr_lib/metrics/retrieval.py") == []
    assert problems("``lsr_lib.config.profiles:Config``, lsr_lib/config/, tests/test_names.py::test_names") == []
    assert problems("``lsr_lib.artifacts.stage_inputs`` (a star import), benchmarks/determinism.py") == []
    assert len(problems("``lsr_lib.retrieval_metrics``, lsr_lib/retrieval_metrics.py, ``retrieval_metrics``")) == 3
    assert len(problems("lsr_lib.metrics.retrieval.no_such_function, lsr_lib/metrics/nothing.py")) == 2
    assert len(problems("tests/test_nothing.py, tests/test_names.py::test_nothing, notebooks/99_x.ipynb")) == 3
    assert problems("(``suggest_stage.LiveText``)") and not problems("suggest_stage = 1", is_code=True)
    assert not problems("tests/test_train_d2s.py, 02_d2s_training_cpu.json, data/cache/<profile>/dense/")


@pytest.mark.parametrize("kind", ["path", "dotted", "test", "notebook", "old"])
def test_names(kind):
    bad = [f"{where}: {p}" for where, text, code in PROSE for p in problems(text, code) if p.startswith(kind + " ")]
    assert not bad, "\n".join(bad)


def test_test_file_names():
    modules = {p.stem for p in LIB.rglob("*.py")} | {p.name for p in LIB.iterdir() if (p / "__init__.py").exists()}
    modules |= {f"{p.parent.name}_{p.stem}" for p in LIB.glob("*/*.py")}
    tests = {p.stem for p in (ROOT / "tests").glob("test_*.py")}
    assert set(BEHAVIOUR_TESTS) <= tests
    bad = sorted(t for t in tests - set(BEHAVIOUR_TESTS) if t.removeprefix("test_") not in modules)
    assert not bad, f"test files named after no module of lsr_lib: {bad}"
