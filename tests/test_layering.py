"""The package layout shows the pipeline: lower layers never import higher ones, and no cycles.

Layers, bottom to top (README "Layout"): config -> storage -> data -> metrics -> dense, sparse ->
index, train -> analysis -> results -> artifacts -> stages -> run. A module may import its own
package and any lower layer; packages on the same layer do not import each other. Inside
``stages``, a module imports only modules of its own stage (``STAGE_OF``): stages share files, not code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lsr_lib"
LAYERS = [
    ("config",),
    ("storage",),
    ("data",),
    ("metrics",),
    ("dense", "sparse"),
    ("index", "train"),
    ("analysis",),
    ("results",),
    ("artifacts",),
    ("stages",),
    ("run",),
]
RANK = {pkg: k for k, layer in enumerate(LAYERS) for pkg in layer}


def module_name(path: Path) -> str:
    """Dotted name of a file under lsr_lib."""
    parts = path.relative_to(LIB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """lsr_lib modules imported anywhere in a file (function-level imports included)."""
    me = module_name(path).split(".")
    pkg = me if path.name == "__init__.py" else me[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = pkg[: len(pkg) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else [])) if node.level else (node.module or "")
            if target.startswith("lsr_lib"):
                out.add(target)
                out.update(
                    f"{target}.{a.name}"
                    for a in node.names
                    if (LIB.parent / f"{target}.{a.name}".replace(".", "/")).with_suffix(".py").exists()
                )
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("lsr_lib"))
    return out


FILES = sorted(LIB.rglob("*.py"))


def test_every_module_sits_in_a_layer():
    loose = [str(p.relative_to(LIB)) for p in FILES if p.parent == LIB and p.name != "__init__.py"]
    assert not loose, f"modules outside the layered sub-packages: {loose}"
    unknown = sorted({p.relative_to(LIB).parts[0] for p in FILES if p.parent != LIB} - set(RANK))
    assert not unknown, f"sub-packages missing from LAYERS: {unknown}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(LIB)))
def test_no_upward_or_sideways_import(path):
    if path.parent == LIB:
        return
    mine = path.relative_to(LIB).parts[0]
    bad = []
    for target in imports_of(path):
        parts = target.split(".")
        if len(parts) < 2 or parts[1] == mine:
            continue
        if RANK[parts[1]] >= RANK[mine]:
            bad.append(target)
    assert not bad, f"{path.relative_to(LIB)} (layer {mine}) imports {sorted(bad)} from the same or a higher layer"


def test_no_import_cycle_between_modules():
    graph = {module_name(p): {t for t in imports_of(p) if t != module_name(p)} for p in FILES}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                raise AssertionError(
                    "import cycle: " + " -> ".join(stack[stack.index(nxt) :] + [nxt]) if nxt in stack else nxt
                )
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])


# Stages exchange data only through files (the artifacts catalog), so no stage module imports another
# stage's module: what two stages share lives in a lower layer (data.profile_sets, train.d2s_conditions,
# artifacts.d2s_runs, artifacts.tower_features, ...). A stage may be split over several modules; those
# may import each other. Every module of lsr_lib/stages is mapped here to its stage (notebook) number.
STAGE_OF = {
    "cache_dense_features": "01",
    "train_sparse_heads": "02",
    "analyze_sparse_vectors": "03",
    "retrieve_with_inverted_index": "04",
    "image_suggestion": "05",
    # stage 06: views, figures, widgets
    "explore_sparse_vectors": "06",
    "explore_figures": "06",
    "explore_widgets": "06",
    "data_scale_study": "07",
    "knob_search": "07",  # stage 07 has two parts
}
STAGES = LIB / "stages"


def cross_stage_edges(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for every import of a stage module by a module of another stage."""

    def stage(mod: str) -> str | None:
        parts = mod.split(".")
        return STAGE_OF.get(parts[2]) if len(parts) > 2 and parts[:2] == ["lsr_lib", "stages"] else None

    return sorted(
        f"{a} -> {b}" for a, targets in graph.items() for b in targets if stage(a) and stage(b) and stage(a) != stage(b)
    )


def test_every_stage_module_is_mapped_to_its_stage():
    modules = {p.stem for p in STAGES.glob("*.py") if p.name != "__init__.py"}
    assert modules == set(STAGE_OF), (
        f"unmapped: {sorted(modules - set(STAGE_OF))}, gone: {sorted(set(STAGE_OF) - modules)}"
    )
    from lsr_lib.run.pipeline import STAGES as STAGE_NOTEBOOKS  # the landing notebook 00 is not a stage

    notebooks = [LIB.parent / "notebooks" / f"{stage}.ipynb" for stage in STAGE_NOTEBOOKS]
    assert set(STAGE_OF.values()) == {nb.name[:2] for nb in notebooks}
    for nb in notebooks:  # each notebook's main module is named like it
        assert STAGE_OF.get(nb.stem[3:]) == nb.name[:2], (
            f"{nb.name}: no module lsr_lib/stages/{nb.stem[3:]}.py of stage {nb.name[:2]}"
        )


def test_no_stage_module_imports_another_stage():
    graph = {module_name(p): imports_of(p) for p in STAGES.glob("*.py")}
    bad = cross_stage_edges(graph)
    assert not bad, "stage modules import other stages (move what they share to a lower layer): " + "; ".join(bad)


def test_cross_stage_check_catches_an_edge():
    graph = {
        "lsr_lib.stages.knob_search": {"lsr_lib.stages.data_scale_study", "lsr_lib.train.d2s"},
        "lsr_lib.stages.image_suggestion": {"lsr_lib.stages.cache_dense_features"},
    }
    assert cross_stage_edges(graph) == ["lsr_lib.stages.image_suggestion -> lsr_lib.stages.cache_dense_features"]
