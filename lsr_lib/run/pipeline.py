"""Headless batch reproduction: run the numbered notebooks in order through papermill.

    python -m lsr_lib.run.pipeline --profile default            # every stage
    python -m lsr_lib.run.pipeline --profile smoke --stages 01  # one stage
    python -m lsr_lib.run.pipeline --profile paper --dry-run    # print what would run
    python -m lsr_lib.run.pipeline --profile paper/flickr30k_albef   # one sweep setting (see lsr_lib.run.sweep)

Executed copies go to ``runs/<profile>/`` (gitignored); the notebooks on disk stay output-free.
Each stage skips the work whose outputs are already on disk for the same configuration, so a
second run is quick and an interrupted one resumes: Ctrl-C says what was kept and prints the
command that resumes (exit code 130).

After the run, ``runs/<profile>/`` holds an executed notebook of every stage, skipped ones
included: a stage that finishes records the checksums of its result files in its executed
notebook and keeps a copy beside its caches (``data/cache/<profile>/executed/``); a stage skipped
as current keeps or gets back the executed notebook that made its result files, and runs again
(it reuses its caches) only when there is none.

The run is the checkout's run (issue 12): each kernel starts with this checkout first on
``PYTHONPATH`` and ``LSR_CHECKOUT`` set to it, so it imports this checkout's ``lsr_lib`` (not another
clone's editable install) and writes into this checkout's ``results/``; ``import lsr_lib`` checks it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from .checkout import CHECKOUT_ENV
from ..config.profiles import PROFILES, REPO_ROOT, load_config, split_profile
from ..results.expected import measured_on
from ..storage.atomic import atomic_write_text
from ..storage.errors import one_line, one_line_errors, read_result_json
from ..storage.manifest import sha256_file
from ..storage.progress import NOTICES_ENV, STATUS_ENV

# The registered stages, in order. A test fails when a notebook on disk is missing here.
STAGES = [
    "01_cache_dense_features",
    "02_train_sparse_heads",
    "03_analyze_sparse_vectors",
    "04_retrieve_with_inverted_index",
    "05_image_suggestion",
    "06_explore_sparse_vectors",
    "07_data_scale_study",
]
LANDING = "00_start_here"  # the notebook JupyterLab opens on (lsr_lib.run.lab.start_here); not a stage

log = logging.getLogger("lsr_lib.run.pipeline")
# Loggers that report a kernel being shut down; quieted once Ctrl-C has been pressed.
SHUTDOWN_LOGGERS = ("papermill", "traitlets", "nbclient", "jupyter_client", "asyncio")


def select_stages(wanted: list[str] | None) -> list[str]:
    """Stages whose name or number prefix matches ``wanted`` (all when None), in order."""
    if not wanted:
        return list(STAGES)
    out = [s for s in STAGES if any(s == w or s.split("_", 1)[0] == w.zfill(2) for w in wanted)]
    unknown = [w for w in wanted if not any(s == w or s.split("_", 1)[0] == w.zfill(2) for s in STAGES)]
    if unknown:
        raise SystemExit(f"unknown stage(s) {unknown}; known: {', '.join(STAGES)}")
    return out


def kernel_env(root: Path) -> dict[str, str]:
    """The variables a stage kernel gets on top of this process's environment: ``root`` first on PYTHONPATH,
    LSR_CHECKOUT."""
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(root)]
    return {"PYTHONPATH": os.pathsep.join([str(root), *rest]), CHECKOUT_ENV: str(root)}


@contextmanager
def environment(variables: dict[str, str]) -> Iterator[None]:
    """Set ``variables`` in os.environ (which a kernel inherits when it starts), restoring them afterwards."""
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_stage(
    stage: str, profile: str, out_dir: Path, progress: bool = True, kernel_name: str = "python3", bench: bool = False
) -> Path:
    """Execute one notebook of this checkout with papermill, parameters ``profile`` and ``progress``, in
    ``kernel_name``.

    ``bench``: also the heavy benchmarks a profile keeps out of its main job (stage 04's scale
    benchmark under ``scale_benchmark: bench``); passed as the notebook parameter ``bench``.

    With ``progress``, what the kernel's long steps report (``lsr_lib.storage.progress``: what, how
    far, ETA, or "up to date") is printed in the terminal while the stage runs; its notices (files set
    aside or recomputed, ``lsr_lib.storage.progress.notice``) always are.
    """
    import papermill as pm

    src = REPO_ROOT / "notebooks" / f"{stage}.ipynb"
    dst = out_dir / f"{stage}.ipynb"
    dst.parent.mkdir(parents=True, exist_ok=True)
    status, notices = out_dir / f".{stage}.status", out_dir / f".{stage}.notices"
    env = {**kernel_env(REPO_ROOT), STATUS_ENV: str(status), NOTICES_ENV: str(notices)}
    with environment(env), show_status(stage, status, enabled=progress, notices=notices):
        pm.execute_notebook(
            str(src),
            str(dst),
            parameters={"profile": profile, "progress": progress, **({"bench": True} if bench else {})},
            cwd=str(REPO_ROOT / "notebooks"),
            kernel_name=kernel_name,
            log_output=False,
            progress_bar=progress,
        )
    return dst


STATUS_POLL_S = 2.0  # how often the status file is read
STATUS_REPEAT_S = 30.0  # a line about the same step at most this often


class NoticeReader:
    """The lines appended to a notices file since the last call (only whole lines, unless ``final``)."""

    def __init__(self, path: Optional[Path]) -> None:
        self.path, self.offset = path, 0

    def new_lines(self, final: bool = False) -> list[str]:
        """Lines written since the last call; a line still being written waits for the next call."""
        if self.path is None:
            return []
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        end = len(data) if final else data.rfind(b"\n") + 1
        self.offset += end
        return [line for line in data[:end].decode("utf-8", "replace").splitlines() if line.strip()]


@contextmanager
def show_status(
    stage: str,
    path: Path,
    enabled: bool = True,
    poll_s: float = STATUS_POLL_S,
    repeat_s: float = STATUS_REPEAT_S,
    notices: Optional[Path] = None,
) -> Iterator[None]:
    """While the block runs, print the stage kernel's status lines: each new step at once, the same every ``repeat_s``.

    Every line of ``notices`` is printed as it arrives, the last ones when the block ends (also without ``enabled``).
    """
    from tqdm import tqdm

    for p in (path, notices):
        try:
            if p is not None:
                p.unlink()
        except FileNotFoundError:
            pass
    if not enabled and notices is None:
        yield
        return
    stop, t0, reader = threading.Event(), time.monotonic(), NoticeReader(notices)

    def show_notices(final: bool = False) -> None:
        for line in reader.new_lines(final):
            tqdm.write(f"{time.strftime('%H:%M:%S')}   {stage.split('_', 1)[0]} warning: {line}", file=sys.stderr)

    def watch() -> None:
        last_text, last_step, last_time = None, None, 0.0
        while not stop.wait(poll_s):
            show_notices()
            if not enabled:
                continue
            try:
                text = path.read_text().strip()
            except OSError:
                continue
            step, now = text.split(":", 1)[0], time.monotonic()
            if text and text != last_text and (step != last_step or now - last_time >= repeat_s):
                elapsed = tqdm.format_interval(now - t0)
                tqdm.write(
                    f"{time.strftime('%H:%M:%S')}   {stage.split('_', 1)[0]} [{elapsed}] {text}", file=sys.stderr
                )
                last_text, last_step, last_time = text, step, now

    thread = threading.Thread(target=watch, name=f"status-{stage}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        show_notices(final=True)


def was_interrupted(error: BaseException) -> bool:
    """True for Ctrl-C here (KeyboardInterrupt) or in the kernel (a cell that ended in KeyboardInterrupt)."""
    return isinstance(error, KeyboardInterrupt) or getattr(error, "ename", None) == "KeyboardInterrupt"


@contextmanager
def quiet_after_interrupt() -> Iterator[None]:
    """On Ctrl-C, first quiet the loggers of the kernel shutdown that follows, then raise KeyboardInterrupt as usual."""

    def on_sigint(signum: int, frame: object) -> None:
        for name in SHUTDOWN_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        signal.default_int_handler(signum, frame)

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def interrupted_message(stage: str, profile: str, resume_argv: list[str]) -> str:
    """What an interrupted run kept and the command that resumes it."""
    return (
        f"interrupted during stage {stage} (profile {profile}).\n"
        "Kept: every finished stage, and in this stage every file already written (caches are written "
        "atomically; training resumes from its last finished epoch).\n"
        "Rerun the same command to resume (finished work is skipped), or only what is left:\n"
        f"  python -m lsr_lib.run.pipeline {shlex.join(resume_argv)}"
    )


def _resume_argv(args: argparse.Namespace, left: list[str]) -> list[str]:
    """The pipeline arguments that run the stages ``left`` with the same options."""
    argv = ["--profile", args.profile, "--stages", *(s.split("_", 1)[0] for s in left)]
    return (
        argv
        + (["--out", str(args.out)] if args.out else [])
        + (["--no-progress"] if args.no_progress else [])
        + (["--bench"] if getattr(args, "bench", False) else [])
    )


def _profile_name(name: str) -> str:
    """argparse type: a known profile, optionally followed by ``/<sweep setting>``."""
    if split_profile(name)[0] not in PROFILES:
        raise argparse.ArgumentTypeError(
            f"unknown profile {name!r}; known: {', '.join(PROFILES)} (optionally /<sweep setting>)"
        )
    return name


def stage_status(profile: str, stage: str) -> tuple[bool, str]:
    """(current, why in one line) for a stage's result files (``lsr_lib.artifacts.result_status``)."""
    from ..artifacts.catalog import result_status
    from ..config.profiles import load_config

    return result_status(load_config(profile), stage)


def stage_is_current(profile: str, stage: str) -> bool:
    """True for a stage whose result files were made from the current artifacts, config, code and environment."""
    return stage_status(profile, stage)[0]


def machine_note(results_dir: Path, here: Optional[str] = None, kind: Optional[str] = None) -> Optional[str]:
    """One line when the results in ``results_dir`` were made on another CPU model than this machine's (``here``)
    of the same ``torch-cpu`` kind (``kind``; a kind that differs is named in each stage's reason to rerun).

    torch calls an AMD EPYC and an Intel Xeon both AVX512, but MKL, which computes torch's fp32 GEMMs, takes its
    instruction-set paths on Intel CPUs only: a fresh clone on the EPYC rebuilds stage 01's caches with other last
    bits, so every later stage reruns on new content ids, which the stages' reasons show only as changed ids."""
    try:
        doc = read_result_json(Path(results_dir) / "01_dense_baseline.json") or {}
    except (OSError, ValueError):
        return None  # a corrupt result file is named by the stage's own check
    made_kind, made_on = measured_on(doc)
    if here is None:
        from ..results.provenance import machine

        here = machine().get("cpu")
    if kind is None:
        from ..storage.code_fingerprint import torch_cpu_capability

        kind = torch_cpu_capability()
    if not made_on or not here or made_on == here or made_kind != kind:
        return None
    return (
        f"note: the results in {_shown(Path(results_dir))} were made on {made_on}; this machine is {here}, the same "
        f"{kind} to torch. It can compute other last bits (MKL takes its instruction-set paths on Intel CPUs only): "
        "where stage 01 rebuilds its caches here, the later stages rerun on their new content ids, and their numbers "
        'move within the expected tolerances (docs/reliability.md, "Two CPUs that torch calls the same")'
    )


def measured_elsewhere(profile: str, stage: str, bench: bool) -> Optional[str]:
    """The command that measures a stage's results when this run only reads them (stage 07 with
    ``data_scale.run: bench`` and no ``--bench``), else None. Such a stage is not rerun while stale:
    rerunning it would only print that its file is stale, which ``--explain`` and the README say."""
    from ..config.profiles import load_config

    cfg = load_config(profile)
    if (
        stage == "07_data_scale_study"
        and not bench
        and cfg.data_scale.run == "bench"
        and cfg.knob_search.run == "bench"
    ):
        return "make data-scale"
    return None


# ---- executed notebooks of every stage -----------------------------------------------------------

EXECUTED_KEY = "lsr_lib"  # notebook metadata: {"stage", "profile", "result_files": {name: checksum}}


def result_checksums(cfg, stage: str) -> dict[str, Optional[str]]:
    """``{result file: short SHA-256}`` of a stage's result files (None for one that does not exist)."""
    from ..artifacts.catalog import RESULT_FILES, result_path

    return {
        name: sha256_file(p)[:16] if (p := result_path(cfg, name)).exists() else None
        for name in RESULT_FILES.get(stage, ())
    }


def executed_matches(path: Path, checksums: dict) -> bool:
    """True when ``path`` is an executed notebook recorded as having made (or read) result files ``checksums``."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {}).get(EXECUTED_KEY, {})
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(meta, dict) and meta.get("result_files") == checksums


def result_bytes(profile: str, stage: str) -> dict[Path, bytes]:
    """The bytes of a stage's existing result files, to put back after a run made only for its executed notebook."""
    from ..artifacts.catalog import RESULT_FILES, result_path
    from ..config.profiles import load_config

    cfg = load_config(profile)
    return {p: p.read_bytes() for name in RESULT_FILES.get(stage, ()) if (p := result_path(cfg, name)).exists()}


def put_back(kept: dict[Path, bytes]) -> list[Path]:
    """Write back the result files of :func:`result_bytes` that a run changed; returns those paths (issue 28: a fresh
    clone's `make main` leaves the committed results as they are when they were current)."""
    changed = [p for p, data in kept.items() if not p.exists() or p.read_bytes() != data]
    for p in changed:
        atomic_write_text(p, kept[p].decode("utf-8"))
    return changed


def kept_executed(cfg, stage: str) -> Path:
    """Where the executed notebook of a stage's last finished run is kept: beside the profile's caches."""
    return cfg.cache_dir / "executed" / f"{stage}.ipynb"


def keep_executed(profile: str, stage: str, executed: Path) -> Path:
    """After a stage finished: record its result files' checksums in ``executed`` and keep a copy; returns the copy."""
    from ..config.profiles import load_config

    cfg = load_config(profile)
    nb = json.loads(executed.read_text(encoding="utf-8"))
    nb.setdefault("metadata", {})[EXECUTED_KEY] = {
        "stage": stage,
        "profile": cfg.profile,
        "result_files": result_checksums(cfg, stage),
    }
    text = json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"  # as nbformat writes it
    atomic_write_text(executed, text)
    return atomic_write_text(kept_executed(cfg, stage), text)


def executed_notebook(profile: str, stage: str, out_dir: Path, any_results: bool = False) -> Optional[str]:
    """Make ``out_dir/<stage>.ipynb`` the executed notebook of the stage's current result files and name it (and
    the copy it was restored from), or None when neither it nor the kept copy is one (the stage must run).

    ``any_results``: any executed notebook will do (a stage that only reads numbers measured elsewhere).
    """
    from ..config.profiles import load_config

    cfg = load_config(profile)
    dst, kept = out_dir / f"{stage}.ipynb", kept_executed(cfg, stage)
    sums = result_checksums(cfg, stage)
    if dst.exists() and (any_results or executed_matches(dst, sums)):
        return _shown(dst)
    if kept.exists() and (any_results or executed_matches(kept, sums)):
        atomic_write_text(dst, kept.read_text(encoding="utf-8"))
        return f"{_shown(dst)}, restored from {_shown(kept)}"
    return None


def _shown(path: Path) -> str:
    """``path`` relative to the checkout when it lies in it."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def explain(profile: str, stages: list[str]) -> list[str]:
    """One line per stage, current or stale and why, running nothing (``--explain``, like ``dvc status``).

    A current stage that reads the outputs of a stale one is marked: it reruns after it when those
    outputs change (they often come back bit-identical, and then it stays current).
    """
    from ..artifacts.catalog import UPSTREAM

    lines, stale = [], set()
    for stage in stages:
        current, why = stage_status(profile, stage)
        number = stage.split("_", 1)[0]
        waits = [s.split("_", 1)[0] for s in UPSTREAM.get(stage, ()) if s in stale]
        if not current:
            stale.add(stage)
            lines.append(f"{number}: stale: {why}")
        elif waits:
            stale.add(stage)
            lines.append(
                f"{number}: current, but reads the outputs of stage {', '.join(waits)}, which reruns first: {why}"
            )
        else:
            lines.append(f"{number}: current: {why}")
    return lines


@one_line_errors()  # a known error (config, artifact, result file, full disk): one line naming the file and the fix
def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns a process exit code."""
    ap = argparse.ArgumentParser(
        prog="python -m lsr_lib.run.pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--profile", type=_profile_name, default="default", help=f"{', '.join(PROFILES)}, or <profile>/<sweep setting>"
    )
    ap.add_argument("--stages", nargs="*", help="stage numbers or names (default: all)")
    ap.add_argument("--out", type=Path, default=None, help="folder for executed notebooks (default runs/<profile>)")
    ap.add_argument("--dry-run", action="store_true", help="print the stages and commands, run nothing")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--force", action="store_true", help="run stages even when their results are current")
    ap.add_argument(
        "--explain", action="store_true", help="say for every stage whether it is current or stale and why; run nothing"
    )
    ap.add_argument(
        "--bench",
        action="store_true",
        help="also the heavy benchmarks kept out of the main job (stage 04's 100k / 1M scale benchmark); `make bench`",
    )
    ap.add_argument(
        "--debug", action="store_true", help="show the traceback of an error that stops the run, not one line"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    stages = select_stages(args.stages)
    out_dir = args.out or REPO_ROOT / "runs" / args.profile
    if args.explain:
        print("\n".join(explain(args.profile, stages)))
        return 0
    if not args.dry_run:
        log.info("checkout %s, profile %s", REPO_ROOT, args.profile)
        if note := machine_note(load_config(args.profile).results_dir):
            log.info("%s", note)
    for k, stage in enumerate(stages, 1):
        cmd = f"papermill notebooks/{stage}.ipynb {out_dir / (stage + '.ipynb')} -p profile {args.profile}" + (
            " -p bench True" if args.bench else ""
        )
        if args.dry_run:
            print(cmd)
            continue
        if not args.force:
            current, why = stage_status(args.profile, stage)
            if current and (executed := executed_notebook(args.profile, stage, out_dir)):
                log.info(
                    "[%d/%d] %s: up to date (%s); skipped (executed notebook: %s), --force reruns it",
                    k,
                    len(stages),
                    stage,
                    why,
                    executed,
                )
                continue
            if current:
                log.info(
                    "[%d/%d] %s: up to date (%s), but no executed notebook of these results is kept: run to make one",
                    k,
                    len(stages),
                    stage,
                    why,
                )
            elif (command := measured_elsewhere(args.profile, stage, args.bench)) and (
                executed := executed_notebook(args.profile, stage, out_dir, any_results=True)
            ):
                log.info(
                    "[%d/%d] %s: stale (%s), but its numbers are measured by `%s`, not by this run: skipped "
                    "(executed notebook that read them: %s; --force reads them again)",
                    k,
                    len(stages),
                    stage,
                    why,
                    command,
                    executed,
                )
                continue
            else:
                log.info("[%d/%d] %s (profile %s): rerun, %s", k, len(stages), stage, args.profile, why)
        else:
            log.info("[%d/%d] %s (profile %s): --force", k, len(stages), stage, args.profile)
        t0 = time.time()
        # a current stage runs only to leave an executed notebook: its committed result files stay as they are
        kept = result_bytes(args.profile, stage) if not args.force and current else {}
        try:
            with quiet_after_interrupt():
                executed = run_stage(stage, args.profile, out_dir, progress=not args.no_progress, bench=args.bench)
        except (KeyboardInterrupt, Exception) as e:
            if was_interrupted(e):
                log.warning(interrupted_message(stage, args.profile, _resume_argv(args, stages[k - 1 :])))
                return 130
            reason = f"{getattr(e, 'ename', type(e).__name__)}: {one_line(getattr(e, 'evalue', e))}"
            log.error("stage %s failed: %s (traceback: %s)", stage, reason, out_dir / f"{stage}.ipynb")
            return 1
        for path in put_back(kept):
            log.info(
                "%s: its results were current, so %s is kept as it was (this run rewrote it, e.g. a machine fact "
                "such as the read bandwidth; the executed notebook shows what this run computed)",
                stage,
                _shown(path),
            )
        if executed is not None:  # None: a test's stand-in for papermill
            keep_executed(args.profile, stage, executed)
        log.info("[%d/%d] %s done in %.0f s", k, len(stages), stage, time.time() - t0)
    if not args.dry_run:
        log.info("%s", summary(args.profile, out_dir))
    return 0


def summary(profile: str, runs_dir: Path) -> str:
    """The headline numbers found in the profile's result files, and where everything is."""
    from ..config.profiles import load_config
    from ..results.expected import lookup
    from ..results.seeds import HEADLINE

    cfg = load_config(profile)
    picked = (
        "dense teacher, test T->I R@1",
        "with_control, test T->I R@1",
        "without_control, test T->I R@1",
        "with_control, test FLOPs",
        "without_control, test FLOPs",
        "with_control, mean Kendall tau T->I",
        "without_control, mean Kendall tau T->I",
        "suggestion M2, test nDCG@10",
    )
    lines, loaded = [f"summary of profile {profile}:"], {}
    for label, file, path in HEADLINE:
        if label in picked:
            if file not in loaded:
                p = cfg.results_dir / file
                loaded[file] = read_result_json(p)
            value = None if loaded[file] is None else lookup(loaded[file], tuple(path.split(".")))
            if value is not None:
                lines.append(f"  {label:<42} {value:.4g}")
    rel = lambda p: p.relative_to(REPO_ROOT) if p.is_relative_to(REPO_ROOT) else p  # noqa: E731
    lines += [
        f"  results: {rel(cfg.results_dir)}/  figures: figures/  executed notebooks: {rel(runs_dir)}/",
        f"  expected-value check: python -m lsr_lib.results.expected --profile {cfg.base_profile.split('/')[0]} "
        "(make main runs it); README tables: python -m lsr_lib.results.report",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
