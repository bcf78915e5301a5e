"""Training seeds for error bars: the profile's other ``seeds`` through the trained stages, then the aggregate.

    python -m lsr_lib.run.seeds --profile default          # seeds[1:] through stages 01 02 03 05, then the aggregate
    python -m lsr_lib.run.seeds --profile smoke --seeds 1  # one seed
    python -m lsr_lib.run.seeds --profile default --summary-only

The main job (``make main``) trains the first seed of the profile's ``seeds`` list; this runs the
others as profiles ``<profile>/seed<k>`` (results in ``results/<profile>/seed<k>/``, caches in
``data/cache/<profile>/seed<k>/``; the frozen towers' feature caches are shared, see
``lsr_lib.config.profiles.seed_overrides`` for what a seed changes). Stages whose artifacts are
current are reused, so an interrupted run resumes. Then ``lsr_lib.results.seeds`` writes
``results/<profile>/seeds.json`` and ``seeds.md``: mean +- std over seeds and the paired tests of
the expansion-control effect. ``make seeds`` runs this for the default profile.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..config.profiles import ConfigError, load_config
from . import pipeline

# the stages that train something, and stage 03 (the control effect's per-query values)
SEED_STAGES = ("01", "02", "03", "05")

log = logging.getLogger("lsr_lib.run.seeds")


def seed_commands(profile: str, seeds: list[int], progress: bool = True, force: bool = False) -> list[list[str]]:
    """The ``lsr_lib.run.pipeline`` arguments for each extra seed, in order."""
    flags = (["--no-progress"] if not progress else []) + (["--force"] if force else [])
    return [["--profile", f"{profile}/seed{k}", "--stages", *SEED_STAGES, *flags] for k in seeds]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; 1 when a seed's stage failed, 130 when interrupted."""
    ap = argparse.ArgumentParser(
        prog="python -m lsr_lib.run.seeds", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--profile", default="default")
    ap.add_argument(
        "--seeds", type=int, nargs="*", help="only these of the profile's extra seeds (default: all of seeds[1:])"
    )
    ap.add_argument("--summary-only", action="store_true", help="only aggregate the result files that exist")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        cfg = load_config(args.profile)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    extra = list(cfg.seeds[1:])
    wanted = extra if args.seeds is None else args.seeds
    unknown = sorted(set(wanted) - set(extra))
    if unknown:
        print(
            f"error: seed(s) {unknown} are not among profile {args.profile!r}'s extra seeds {extra} "
            f"(params/{args.profile}.yaml `seeds`)",
            file=sys.stderr,
        )
        return 2
    commands = [] if args.summary_only else seed_commands(args.profile, wanted, not args.no_progress, args.force)
    if args.dry_run:
        for c in commands:
            print("python -m lsr_lib.run.pipeline " + " ".join(c))
        print(f"python -m lsr_lib.results.seeds --profile {args.profile}")
        return 0
    failed = []
    for k, command in zip(wanted, commands):
        log.info("seed %d of %s (%s)", k, cfg.seeds, command[1])
        code = pipeline.main(command)
        if code == 130:
            return 130
        if code:
            failed.append(k)
    from ..results import seeds as aggregate

    code = aggregate.main(["--profile", args.profile])
    if failed:
        log.error("seeds with a failed stage: %s", failed)
    return 1 if failed or code else 0


if __name__ == "__main__":
    sys.exit(main())
