"""JupyterLab on this project: its kernel, the notebooks' git filter, and the landing page (issue 28).

``make setup`` runs ``python -m lsr_lib.run.lab --setup``, which installs

- the Jupyter kernel ``lsr`` ("Python (lsr_lib)") into the venv (``ipykernel install --sys-prefix``):
  the kernel every notebook's metadata names, so the Lab starts it without asking;
- the nbstripout git filter of ``.gitattributes`` (``nbstripout --install``), with the extra keys
  :data:`STRIP_KEYS`: git stores a notebook without outputs, execution counts, the kernel's
  ``language_info`` or the Lab's view state, with cell ids numbered in order; ``git diff`` shows the
  stripped notebooks. With :func:`refresh_git_index`, the post-save hook ``make lab`` sets, running
  cells in the Lab and its autosave leave ``git status`` clean.

``notebooks/00_start_here.ipynb`` shows :func:`start_here`: for the Lab's profile, every stage's
notebook, its executed copy in ``runs/<profile>/``, its result files, and the command that makes
what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from ..artifacts.catalog import RESULT_FILES, make_command, result_path
from ..config.profiles import MAIN_PROFILE, PROFILE_ENV, REPO_ROOT, load_config
from .pipeline import STAGES, executed_matches, result_checksums

KERNEL_NAME = "lsr"
KERNEL_DISPLAY_NAME = "Python (lsr_lib)"
KERNELSPEC = {"display_name": KERNEL_DISPLAY_NAME, "language": "python", "name": KERNEL_NAME}
# Stripped by the git filter on top of nbstripout's defaults (outputs, counts, ids, widget state): what the
# Lab writes on opening or saving a notebook. The kernelspec stays: it names the project kernel.
STRIP_KEYS = ("metadata.language_info", "cell.metadata.jp-MarkdownHeadingCollapsed")


def install_kernel(prefix: str = sys.prefix) -> Path:
    """Install the kernel ``lsr`` (this interpreter) under ``prefix``/share/jupyter/kernels; returns its folder."""
    from ipykernel.kernelspec import install

    return Path(install(kernel_name=KERNEL_NAME, display_name=KERNEL_DISPLAY_NAME, prefix=prefix))


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """``git <args>`` in ``repo``; a failed process (exit code 127) when git cannot be started there."""
    try:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    except OSError as err:  # no git on PATH, or the folder is gone
        return subprocess.CompletedProcess(["git", *args], 127, "", str(err))


def install_notebook_filter(repo: Path = REPO_ROOT, python: str = sys.executable) -> str:
    """Configure the nbstripout filter of ``.gitattributes`` in ``repo``'s git config; one line saying what was done."""
    if _git(repo, "rev-parse", "--git-dir").returncode != 0:
        return f"{repo} is not a git checkout: no notebook filter installed"
    done = subprocess.run(
        [python, "-m", "nbstripout", "--install", "--attributes", ".gitattributes"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"nbstripout --install failed in {repo}: {done.stderr.strip()}; is nbstripout installed?")
    _git(repo, "config", "--local", "filter.nbstripout.extrakeys", " ".join(STRIP_KEYS)).check_returncode()
    return "git filter nbstripout: notebooks are stored without outputs (docs/lab.md)"


def committed_form(path: Path, repo: Path = REPO_ROOT) -> dict:
    """The notebook ``path`` as ``git add`` would store it: through ``repo``'s clean filter when one is set up
    for it, else as it is on disk."""
    text = Path(path).read_text(encoding="utf-8")
    attr = _git(repo, "check-attr", "filter", "--", str(Path(path).resolve().relative_to(repo.resolve())))
    driver = attr.stdout.strip().rsplit(": ", 1)[-1] if attr.returncode == 0 else ""
    clean = _git(repo, "config", f"filter.{driver}.clean") if driver not in ("", "unspecified", "unset") else None
    if clean is not None and clean.returncode == 0 and clean.stdout.strip():
        text = subprocess.run(
            clean.stdout.strip(), shell=True, cwd=repo, input=text, capture_output=True, text=True, check=True
        ).stdout
    return json.loads(text)


def refresh_git_index(model: dict, os_path: str, contents_manager=None, **kwargs) -> None:
    """Jupyter post-save hook (``make lab`` sets it): after the Lab saved a tracked notebook whose stored
    form is unchanged (outputs only), refresh its git index entry, so ``git status`` stays clean.

    Git reports a file whose size changed as modified without running its clean filter (``git diff``
    runs it and shows nothing); ``git add`` of content equal to the index stages nothing and records the
    new size. A notebook whose stored form did change (a source edit) is left alone: git shows it.
    """
    if model.get("type") != "notebook":
        return
    path = Path(os_path)
    tracked = _git(path.parent, "ls-files", "--error-unmatch", "--", path.name).returncode == 0
    merging = bool(_git(path.parent, "ls-files", "--unmerged", "--", path.name).stdout.strip())
    if tracked and not merging and _git(path.parent, "diff", "--quiet", "--", path.name).returncode == 0:
        _git(path.parent, "add", "--", path.name)


# ---- the landing notebook ------------------------------------------------------------------------


def _link(path: Path, start: Path) -> str:
    """A markdown link to ``path`` relative to the folder ``start`` (the notebook's), named by its repo path."""
    shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    return f"[{shown}]({os.path.relpath(path, start)})"


def start_here(profile: Optional[str] = None, notebooks: Path = REPO_ROOT / "notebooks") -> str:
    """Markdown: the profile the notebooks open on, and per stage its notebook, executed copy and result files."""
    cfg = load_config(profile)
    why = (
        "set in this notebook"
        if profile
        else f"from `make lab PROFILE={cfg.profile}` (${PROFILE_ENV})"
        if os.environ.get(PROFILE_ENV)
        else "the profile `make main` runs"
    )
    runs = REPO_ROOT / "runs" / cfg.profile
    lines = [
        f"**Profile `{cfg.profile}`** ({why}). The notebooks open on it: their parameters cell says "
        '`profile = None`. Another profile: `make lab PROFILE=smoke`, or `profile = "smoke"` in a parameters cell.',
        "",
        f"What is missing below: `{make_command(cfg.profile)}` makes it (stages whose results are current are "
        "skipped in seconds, and still get their executed notebook).",
        "",
        "| stage | notebook | executed, with outputs | result files |",
        "|---|---|---|---|",
    ]
    for stage in STAGES:
        executed = runs / f"{stage}.ipynb"
        sums = result_checksums(cfg, stage)
        if not executed.exists():
            ran = "none yet"
        else:
            ran = _link(executed, notebooks) + (
                "" if executed_matches(executed, sums) else " (not the run that wrote the result files)"
            )
        results = [
            _link(p, notebooks) if (p := result_path(cfg, name)).exists() else f"{name}.json: missing"
            for name in RESULT_FILES[stage]
        ]
        lines.append(
            f"| {stage[:2]} | {_link(notebooks / f'{stage}.ipynb', notebooks)} | {ran} | {', '.join(results)} |"
        )
    figures = REPO_ROOT / "figures" if cfg.profile == MAIN_PROFILE else REPO_ROOT / "figures" / cfg.profile
    lines += [
        "",
        f"Figures: {_link(figures, notebooks)}; results: {_link(cfg.results_dir, notebooks)}; "
        f"README: {_link(REPO_ROOT / 'README.md', notebooks)}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``--setup``: install the kernel and the notebook filter (what ``make setup`` runs)."""
    ap = argparse.ArgumentParser(prog="python -m lsr_lib.run.lab", description=__doc__.split("\n\n")[0])
    ap.add_argument("--setup", action="store_true", help="install the kernel `lsr` and the notebooks' git filter")
    args = ap.parse_args(argv)
    if not args.setup:
        ap.print_help()
        return 0
    where = install_kernel()
    print(f"Jupyter kernel {KERNEL_NAME} ({KERNEL_DISPLAY_NAME}): {where}")
    try:
        print(install_notebook_filter())
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
