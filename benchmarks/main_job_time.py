"""Where the main job's time goes: per stage and per cell, from the executed notebooks' papermill timings.

    python benchmarks/main_job_time.py                       # runs/default -> results/benchmarks/main_job_time.json
    python benchmarks/main_job_time.py --runs /path/to/clone/runs/default --label "cold clone, make main" --wall-s 3600

papermill stores each cell's start, end and duration in the executed notebook
(``runs/<profile>/<stage>.ipynb``, written by ``lsr_lib.run.pipeline``). This reads them, names
each slow cell by its first source line, and writes one JSON with the machine described, so a
README number about the main job's time can be traced to a measured run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lsr_lib.results.provenance import git_commit, machine  # noqa: E402
from lsr_lib.results.timing import stage_times  # noqa: E402
from lsr_lib.run.pipeline import STAGES  # noqa: E402
from lsr_lib.storage.atomic import atomic_write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "default")
    ap.add_argument("--label", default="make main")
    ap.add_argument(
        "--wall-s",
        type=float,
        default=None,
        help="measured wall time of `make main` with the venv already installed (warm)",
    )
    ap.add_argument(
        "--setup-s",
        type=float,
        default=None,
        help="measured wall time of `make setup` into an empty .venv (cold = setup + warm)",
    )
    ap.add_argument(
        "--rerun-s", type=float, default=None, help="measured wall time of `make main` run again with nothing changed"
    )
    ap.add_argument(
        "--not-fresh-clone",
        action="store_true",
        help="the notebooks come from runs of every stage in a working copy, not from `make main` in a fresh clone",
    )
    ap.add_argument("--skipped", nargs="*", default=[], help="stages the run skipped as up to date")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "main_job_time.json")
    args = ap.parse_args(argv)
    stages = {s: stage_times(args.runs / f"{s}.ipynb") for s in STAGES if (args.runs / f"{s}.ipynb").exists()}
    if not stages:
        print(f"no executed notebooks in {args.runs}; run `make main` first", file=sys.stderr)
        return 2
    total = sum(v["seconds"] for v in stages.values())
    out = {
        "benchmark": "main_job_time",
        "label": args.label,
        "fresh_clone": not args.not_fresh_clone,
        "commit": git_commit(),
        "machine": machine(),
        "stages_seconds_total": round(total, 1),
        "wall_seconds": args.wall_s,
        "setup_seconds": args.setup_s,
        "cold_seconds": (args.wall_s + args.setup_s) if args.wall_s and args.setup_s else None,
        "rerun_nothing_changed_seconds": args.rerun_s,
        "skipped_up_to_date": args.skipped,
        "stages": stages,
    }
    atomic_write_json(args.out, out)
    for s, v in stages.items():
        print(
            f"{s:<36} {v['seconds']:>8.0f} s   slowest: {v['slowest_cells'][0]['seconds']:.0f} s  "
            f"{v['slowest_cells'][0]['cell']}"
        )
    print(
        f"{'stages together':<36} {total:>8.0f} s" + (f"   (whole command {args.wall_s:.0f} s)" if args.wall_s else "")
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
