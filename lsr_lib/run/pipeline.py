"""Headless batch reproduction: run the numbered notebooks in order through papermill.

    python -m lsr_lib.run.pipeline --profile default            # every stage
    python -m lsr_lib.run.pipeline --profile smoke --stages 01  # one stage
    python -m lsr_lib.run.pipeline --profile paper --dry-run    # print what would run
    python -m lsr_lib.run.pipeline --profile paper/flickr30k_albef   # one sweep setting (see lsr_lib.run.sweep)

Executed copies go to ``runs/<profile>/`` (gitignored); the notebooks on disk stay output-free.
Each stage skips the work whose outputs are already on disk for the same configuration, so a
second run is quick and an interrupted one resumes.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from ..config.profiles import PROFILES, REPO_ROOT, split_profile

# The registered stages, in order. A test fails when a notebook on disk is missing here.
STAGES = [
    "01_cache_dense_features",
    "02_train_sparse_heads",
    "03_analyze_sparse_vectors",
    "04_retrieve_with_inverted_index",
    "05_image_suggestion",
    "06_explore_sparse_vectors",
]

log = logging.getLogger("lsr_lib.run.pipeline")


def select_stages(wanted: list[str] | None) -> list[str]:
    """Stages whose name or number prefix matches ``wanted`` (all when None), in order."""
    if not wanted:
        return list(STAGES)
    out = [s for s in STAGES if any(s == w or s.split("_", 1)[0] == w.zfill(2) for w in wanted)]
    unknown = [w for w in wanted if not any(s == w or s.split("_", 1)[0] == w.zfill(2) for s in STAGES)]
    if unknown:
        raise SystemExit(f"unknown stage(s) {unknown}; known: {', '.join(STAGES)}")
    return out


def run_stage(stage: str, profile: str, out_dir: Path, progress: bool = True, kernel_name: str = "python3") -> Path:
    """Execute one notebook with papermill, parameters ``profile`` and ``progress``, in ``kernel_name``."""
    import papermill as pm

    src = REPO_ROOT / "notebooks" / f"{stage}.ipynb"
    dst = out_dir / f"{stage}.ipynb"
    dst.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(src), str(dst), parameters={"profile": profile, "progress": progress}, cwd=str(REPO_ROOT / "notebooks"), kernel_name=kernel_name, log_output=False, progress_bar=progress)
    return dst


def _profile_name(name: str) -> str:
    """argparse type: a known profile, optionally followed by ``/<sweep setting>``."""
    if split_profile(name)[0] not in PROFILES:
        raise argparse.ArgumentTypeError(f"unknown profile {name!r}; known: {', '.join(PROFILES)} (optionally /<sweep setting>)")
    return name


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns a process exit code."""
    ap = argparse.ArgumentParser(prog="python -m lsr_lib.run.pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", type=_profile_name, default="default", help=f"{', '.join(PROFILES)}, or <profile>/<sweep setting>")
    ap.add_argument("--stages", nargs="*", help="stage numbers or names (default: all)")
    ap.add_argument("--out", type=Path, default=None, help="folder for executed notebooks (default runs/<profile>)")
    ap.add_argument("--dry-run", action="store_true", help="print the stages and commands, run nothing")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    stages = select_stages(args.stages)
    out_dir = args.out or REPO_ROOT / "runs" / args.profile
    for k, stage in enumerate(stages, 1):
        cmd = f"papermill notebooks/{stage}.ipynb {out_dir / (stage + '.ipynb')} -p profile {args.profile}"
        if args.dry_run:
            print(cmd)
            continue
        log.info("[%d/%d] %s (profile %s)", k, len(stages), stage, args.profile)
        t0 = time.time()
        try:
            run_stage(stage, args.profile, out_dir, progress=not args.no_progress)
        except Exception as e:
            reason = f"{getattr(e, 'ename', type(e).__name__)}: {getattr(e, 'evalue', e)}"
            log.error("stage %s failed: %s\nthe executed notebook with the full traceback is %s", stage, reason, out_dir / f"{stage}.ipynb")
            return 1
        log.info("[%d/%d] %s done in %.0f s", k, len(stages), stage, time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
