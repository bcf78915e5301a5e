"""The pages a user reads: every relative link and path they name exists, and what they state holds (issue 28).

Pages: README.md, docs/*.md, data/README.md, and the markdown cells of the notebooks. Checked:

- every Markdown link or image ``[text](target)`` that is not a URL: the file or folder, relative to the
  page (a notebook's links are relative to ``notebooks/``), and its ``#anchor`` among the target page's
  headings (GitHub's slugs);
- every path the text names inside backticks or code blocks that starts at a top-level entry of the
  repository (``lsr_lib/...``, ``results/...``, ``Makefile``, ...), relative to the repository root as the
  pages write them; ``<placeholder>``, ``*``, ``{a,b}`` and ``.png|pdf`` match what they stand for;
- except the paths in ``MADE_BY_A_RUN``: made by a run or a download, absent from a fresh clone;
- the Python version the pages state is the lock's, and pyproject.toml asks for the same;
- the README stays a summary: short, with the two commands for a fresh machine as the Makefile has them.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Paths a run or a download makes (gitignored), so a fresh clone does not have them; a page may name them.
MADE_BY_A_RUN = {
    "runs/*": "executed notebooks (lsr_lib.run.pipeline)",
    "data/cache/*": "every stage's caches",
    "data/emoji/*": "stage 01's rendered images and split checksum",
    "data/mscoco/*": "downloaded for the paper profile",
    "data/flickr30k/*": "downloaded for the paper profile",
    "data/released/*": "downloaded released features (paper profile)",
    "data/atomic/*": "downloaded AToMiC files (paper profile)",
    "results/*/timings*": "each result file's time, peak memory and wall-clock seconds (lsr_lib/results/timing.py)",
    "results/smoke*": "make test",
    "figures/smoke*": "make test",
    "results/paper*": "make paper",
    "figures/paper*": "make paper",
    "results/rehearsal*": "python -m lsr_lib.run.rehearsal",
    "figures/rehearsal/*": "python -m lsr_lib.run.rehearsal",
    ".venv*": "make setup",
    ".lock-tools*": "make lock",
    "../shared/*": "the project workspace's design note, beside this repository (named by the notebooks)",
}
TOP = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")} - {"node_modules"} | {".venv", ".lock-tools"}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"```[^\n]*\n(.*?)```|`([^`\n]+)`", re.S)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
HEADING = re.compile(r"^(#{1,6}) +(.+?)#*$", re.M)


def pages() -> list[tuple[str, str, Path]]:
    """(where, markdown, folder its links are relative to) for every page and notebook markdown cell."""
    out = [
        (str(p.relative_to(ROOT)), p.read_text(), p.parent)
        for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "data" / "README.md"]
    ]
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for k, cell in enumerate(json.loads(nb.read_text())["cells"]):
            if cell["cell_type"] == "markdown":
                out.append((f"{nb.relative_to(ROOT)} cell {k}", "".join(cell["source"]), nb.parent))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(m.group(2)) for m in HEADING.finditer(FENCE.sub("", page.read_text()))}


def expand(path: str) -> list[str]:
    """Glob patterns for a path as the pages write it: ``<x>`` and ``NN`` any name, ``{a,b}``, ``x.png|pdf``."""
    path = re.sub(r"<[^>]*>", "*", path)
    m = re.search(r"\{([^}]*)\}", path)
    if m:
        return [q for alt in m.group(1).split(",") for q in expand(path[: m.start()] + alt + path[m.end() :])]
    if "|" in path:
        first, *alts = path.split("|")
        return [first] + [first.rsplit(".", 1)[0] + "." + alt for alt in alts]
    return [path]


def exists(path: str, base: Path) -> bool:
    return any(
        (base / q).exists() if not any(c in q for c in "*?[") else any(base.glob(q.rstrip("/"))) for q in expand(path)
    )


def made_by_a_run(path: str) -> bool:
    return any(fnmatch.fnmatch(path, rule) for rule in MADE_BY_A_RUN)


def named_paths(text: str) -> list[str]:
    """Every token in backticks or code blocks that starts at a top-level entry of the repository."""
    out = []
    for m in CODE.finditer(text):
        for token in (m.group(1) or m.group(2)).split():
            token = token.strip("\"'`,;:()").split("::")[0]
            if token.split("/")[0] in TOP or token.startswith("../"):
                out.append(token)
    return out


def link_from_root(page: Path) -> str:
    """A link's target as the repository root writes it (``notebooks/../runs/`` -> ``runs/``)."""
    import os

    rel = os.path.relpath(page, ROOT)
    return rel + ("/" if not Path(rel).suffix else "")


def problems(where: str, text: str, base: Path) -> list[str]:
    """What one page names that does not exist."""
    out = []
    for m in LINK.finditer(text):
        target = m.group(1)
        if re.match(r"[a-z]+:", target):
            continue  # a URL
        path, _, anchor = target.partition("#")
        page = (base / path) if path else None
        if page is not None and not page.exists() and not made_by_a_run(link_from_root(page)):
            out.append(f"{where}: link {target}: no {page.relative_to(ROOT) if page.is_relative_to(ROOT) else page}")
        elif anchor and (page is None or page.suffix == ".md"):
            known = anchors(page) if page else {slug(h.group(2)) for h in HEADING.finditer(FENCE.sub("", text))}
            if anchor not in known:
                out.append(f"{where}: link {target}: no heading #{anchor} there")
    for path in named_paths(text):
        if not made_by_a_run(path) and not exists(path, ROOT):
            out.append(f"{where}: path {path} does not exist")
    return out


PAGES = pages()


def test_the_checks_find_what_is_missing(tmp_path):
    (tmp_path / "b.md").write_text("# B title\n\n## Part two\n")
    text = "[ok](b.md#part-two) [bad anchor](b.md#part-3) [gone](c.md) [url](https://x.org/y) [self](#b-title)"
    found = problems("a.md", "# B title\n" + text, tmp_path)
    assert [p.split(": ")[1] for p in found] == ["link b.md#part-3", "link c.md"]
    assert problems("a", "`figures/04_effectiveness_latency.png`, `figures/01_*.png|pdf`", ROOT) == []
    assert problems("a", "`results/<profile>/01_dense_baseline.json`, `results/default/seeds.{json,md}`", ROOT) == []
    assert problems("a", "`tests/test_docs.py::test_the_checks_find_what_is_missing`, `runs/<profile>/`", ROOT) == []
    assert problems("notebook", "[executed runs](../runs/) [gone](../nothing/)", ROOT / "notebooks") == [
        "notebook: link ../nothing/: no notebooks/../nothing"
    ]
    assert problems("a", "see `figures/default/04_effectiveness_latency.png`", ROOT)
    assert problems("a", "```\npython lsr_lib/explorer_figures.py\n```", ROOT)
    assert problems("a", "`results/default/99_nothing.json`, `figures/06_explorer_{query,nothing}.png`", ROOT)
    assert slug("How long `make main` takes") == "how-long-make-main-takes"
    assert slug("What differs from the paper's setting, and why") == "what-differs-from-the-papers-setting-and-why"


@pytest.mark.parametrize("kind", ["link", "path"])
def test_every_link_and_path_the_pages_name_exists(kind):
    bad = [p for where, text, base in PAGES for p in problems(where, text, base) if p.split(": ")[1].startswith(kind)]
    assert not bad, "\n".join(bad)


def test_the_python_the_pages_state_is_the_locks():
    import tomllib

    from packaging.specifiers import SpecifierSet

    lock = re.search(r"pip-compile with Python (3\.\d+)", (ROOT / "requirements.lock").read_text()).group(1)
    minor = int(lock.split(".")[1])
    spec = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    assert (
        spec.contains(f"{lock}.0") and not spec.contains(f"3.{minor + 1}.0") and not spec.contains(f"3.{minor - 1}.9")
    )
    stated = {
        (where, m.group(0)) for where, text, _ in PAGES for m in re.finditer(r"Python (3\.\d+)(?![.\d])\+?", text)
    }
    assert stated and all(s == f"Python {lock}" for _, s in stated), sorted(stated)


def test_the_readme_is_a_summary_with_the_two_commands_of_the_makefile():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].split() for line in first_block.splitlines() if line.strip()]
    assert commands == [["make", "main"], ["make", "test"]] and {"main", "test"} <= targets
    assert readme.index("<!-- results:headline -->") < readme.index("## Explore the vectors")
