"""The paper sweep: every (dataset, backbone) setting of a profile through the stage notebooks.

    python -m lsr_lib.run.sweep --profile paper --dry-run            # print every command, run nothing
    python -m lsr_lib.run.sweep --profile paper                      # all settings, then check and summarise
    python -m lsr_lib.run.sweep --profile paper --only mscoco/blip   # one setting (repeatable)
    python -m lsr_lib.run.sweep --profile paper --summary-only       # only the check and the summary

The settings are the profile's ``sweep`` section (``params/paper.yaml``: MSCOCO and Flickr30k x
BLIP and ALBEF, DESIGN.md sections 1A and 5). Setting ``mscoco_blip`` runs the notebooks with
papermill parameter ``profile = "paper/mscoco_blip"``: results go to ``results/paper/mscoco_blip/``,
caches to ``data/cache/paper/mscoco_blip/``, executed notebooks to ``runs/paper/mscoco_blip/``.
Stage 02 trains both expansion-control conditions of the profile's ``d2s_conditions``.

As in pyserini's reproduction driver, a stage runs only when its output is missing: a stage whose
``results/<profile>/<setting>/<NN>_*.json`` files exist and were written with the same
configuration, code, environment and inputs is skipped (``--force`` reruns). Every setting's configuration is loaded,
and so
checked, before any work starts. Afterwards the expected-values check (``lsr_lib.results.expected``) runs
and ``results/<profile>/summary.md`` plus ``figures/<profile>/sweep_*`` are generated from the
result files (``lsr_lib.results.sweep_summary``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from ..config.profiles import REPO_ROOT, Config, ConfigError, SweepSetting, load_config, to_dict
from .pipeline import quiet_after_interrupt, run_stage, select_stages, was_interrupted

SWEEP_STAGES = ("01", "02", "03", "04")  # the D2S stages; later stages (05 onwards) are not part of the paper sweep

log = logging.getLogger("lsr_lib.run.sweep")


def sweep_plan(profile: str, only: list[str] | None = None) -> list[tuple[SweepSetting, Config]]:
    """(setting, its loaded config) for every setting of ``profile``'s sweep (or those in ``only``), in file order."""
    base = load_config(profile)
    if not base.sweep:
        raise ConfigError(
            f"profile {profile!r} has no sweep section; add one (see params/paper.yaml) or use lsr_lib.run.pipeline"
        )
    wanted = {base.setting(n).name for n in only} if only else None
    return [(s, load_config(f"{profile}/{s.name}")) for s in base.sweep if wanted is None or s.name in wanted]


def stage_commands(cfg: Config, setting: SweepSetting, stages: list[str], runs_dir: Path) -> list[str]:
    """The papermill command line of each stage of one setting (what ``run_setting`` executes)."""
    out = []
    for stage in stages:
        kernel = setting.extract_kernel if stage.startswith("01_") else "python3"
        cmd = f"papermill notebooks/{stage}.ipynb {_rel(runs_dir / (stage + '.ipynb'))} -p profile {cfg.profile}"
        out.append(cmd + (f" -k {kernel}" if kernel != "python3" else ""))
    return out


def stage_is_current(cfg: Config, stage: str) -> bool:
    """True when the stage's result files exist, were written with this setting's configuration, and record
    the current code, environment and inputs (``lsr_lib.artifacts.result_status``, the pipeline's rule)."""
    from ..artifacts.catalog import result_status

    files = sorted(cfg.results_dir.glob(stage.split("_", 1)[0] + "_*.json"))
    if not files:
        return False
    want = _run_config(to_dict(cfg))
    for f in files:
        try:
            if _run_config(json.loads(f.read_text()).get("provenance", {}).get("config")) != want:
                return False
        except (OSError, json.JSONDecodeError):
            return False
    return result_status(cfg, stage)[0]


def _run_config(config) -> dict | None:
    """A stored or current config as plain JSON, without the sweep list (editing another setting reruns nothing)."""
    if not isinstance(config, dict):
        return None
    return json.loads(json.dumps({k: v for k, v in config.items() if k != "sweep"}))


def run_setting(
    cfg: Config, setting: SweepSetting, stages: list[str], runs_dir: Path, force: bool = False, progress: bool = True
) -> bool:
    """Run one setting's stages in order, skipping current ones; False when a stage failed."""
    for k, stage in enumerate(stages, 1):
        if not force and stage_is_current(cfg, stage):
            log.info("[%s %d/%d] %s: results are current, skipped", setting.name, k, len(stages), stage)
            continue
        log.info("[%s %d/%d] %s (profile %s)", setting.name, k, len(stages), stage, cfg.profile)
        t0 = time.time()
        kernel = setting.extract_kernel if stage.startswith("01_") else "python3"
        try:
            with quiet_after_interrupt():
                run_stage(stage, cfg.profile, runs_dir, progress=progress, kernel_name=kernel)
        except (KeyboardInterrupt, Exception) as e:
            if was_interrupted(e):
                log.warning(
                    "interrupted during %s / %s (profile %s). Kept: every finished stage and setting, and in this "
                    "stage every file "
                    "already written. Rerun the same command to resume (finished work is skipped).",
                    setting.name,
                    stage,
                    cfg.profile,
                )
                raise KeyboardInterrupt from None
            reason = f"{getattr(e, 'ename', type(e).__name__)}: {getattr(e, 'evalue', e)}"
            log.error(
                "%s / %s failed: %s\nthe executed notebook with the full traceback is %s",
                setting.name,
                stage,
                reason,
                runs_dir / f"{stage}.ipynb",
            )
            return False
        log.info("[%s %d/%d] %s done in %.0f s", setting.name, k, len(stages), stage, time.time() - t0)
    return True


def after_commands(profile: str) -> list[str]:
    """What runs once every setting is done (printed by --dry-run, executed by finish)."""
    return [
        f"python -m lsr_lib.results.expected --profile {profile} --markdown results/{profile}/expected_check.md",
        f"python -m lsr_lib.run.sweep --profile {profile} --summary-only   # writes results/{profile}/summary.md, "
        f"figures/{profile}/sweep_*",
    ]


def finish(profile: str) -> int:
    """Expected-values check, then the summary table and figures over every setting; the check's exit code."""
    from ..results import expected
    from ..results import sweep_summary

    results = REPO_ROOT / "results" / profile
    settings = list(load_config(profile).sweep)
    code = 0
    if expected.expected_path(profile).exists():
        code = expected.main(["--profile", profile, "--markdown", str(results / "expected_check.md")])
    path = sweep_summary.write_summary(profile, settings, results / "expected_check.md")
    log.info("summary: %s", _rel(path))
    return code


def _rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(p)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns a process exit code (1 when a stage or a check failed)."""
    ap = argparse.ArgumentParser(
        prog="python -m lsr_lib.run.sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--profile", default="paper")
    ap.add_argument(
        "--only",
        action="append",
        metavar="DATASET/BACKBONE",
        help="run only this setting (repeatable), e.g. mscoco/blip",
    )
    ap.add_argument(
        "--stages",
        nargs="*",
        default=list(SWEEP_STAGES),
        help=f"stage numbers or names (default {' '.join(SWEEP_STAGES)})",
    )
    ap.add_argument("--runs", type=Path, default=None, help="folder for executed notebooks (default runs/<profile>)")
    ap.add_argument("--dry-run", action="store_true", help="print every command in order, run nothing")
    ap.add_argument(
        "--summary-only", action="store_true", help="skip the notebooks: check and summarise the result files"
    )
    ap.add_argument("--force", action="store_true", help="rerun stages whose results are current")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        plan = sweep_plan(args.profile, args.only)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stages = select_stages(args.stages)
    runs_root = args.runs or REPO_ROOT / "runs" / args.profile
    if args.dry_run:
        for setting, cfg in plan:
            print(f"# {setting.name}: {setting.dataset} / {setting.backbone} -> {_rel(cfg.results_dir)}/")
            print("\n".join(stage_commands(cfg, setting, stages, runs_root / setting.name)))
        print("# after every setting")
        print("\n".join(after_commands(args.profile)))
        return 0
    failed = []
    if not args.summary_only:
        # as lsr_lib.run.pipeline: download models beforehand (README "The paper path")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        for setting, cfg in plan:
            try:
                ok = run_setting(cfg, setting, stages, runs_root / setting.name, args.force, not args.no_progress)
            except KeyboardInterrupt:
                return 130
            if not ok:
                failed.append(setting.name)
    code = finish(args.profile)
    if failed:
        log.error("settings with a failed stage: %s", ", ".join(failed))
    return 1 if failed or code else 0


if __name__ == "__main__":
    sys.exit(main())
