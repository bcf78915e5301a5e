"""A resumable, sharded, manifest-checked feature cache (stage 01).

A cache folder holds ``manifest.json`` (what made it: encoder, checkpoint, config, input
checksums) and shards ``shard-00000.safetensors`` (arrays + the shard's ids in the metadata).
Every file is written to a temporary name and renamed, so an interrupted run leaves only whole
shards; the next run computes only the missing ones. A folder made by another encoder or config
is never overwritten: :class:`CacheMismatchError` names the differing keys and the fix.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm


class CacheMismatchError(RuntimeError):
    """The cache on disk was made with another encoder, config or input."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file via a temporary file and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: cached {va!r} vs now {vb!r}")
    return out


class ShardedCache:
    """Rows (id + named float arrays) stored in fixed-size shards under ``root``."""

    def __init__(self, root: str | Path, manifest: dict, shard_size: int = 1024):
        self.root = Path(root)
        self.manifest = json.loads(json.dumps(manifest))  # JSON round trip: tuples -> lists
        self.shard_size = shard_size
        path = self.root / "manifest.json"
        if path.exists():
            old = json.loads(path.read_text())
            old_core = {k: v for k, v in old.items() if k not in ("complete", "n_items")}
            diff = _diff(old_core, self.manifest)
            if diff:
                raise CacheMismatchError(
                    f"cache {self.root} was made with another configuration ({'; '.join(diff[:4])}). "
                    "Nothing was deleted: remove that folder to recompute, or point the profile's data.root elsewhere."
                )
        else:
            atomic_write_text(path, json.dumps({**self.manifest, "complete": False}, indent=2, sort_keys=True))

    def _shard_path(self, k: int) -> Path:
        return self.root / f"shard-{k:05d}.safetensors"

    @property
    def complete(self) -> bool:
        path = self.root / "manifest.json"
        return path.exists() and bool(json.loads(path.read_text()).get("complete"))

    def fill(self, ids: Sequence[str], compute: Callable[[list[str]], dict[str, np.ndarray]], batch_size: int, desc: str = "extract", progress: bool = True) -> None:
        """Compute ``compute(batch_ids) -> {name: (B, ...) array}`` for every shard not yet on disk."""
        ids = [str(i) for i in ids]
        n_shards = (len(ids) + self.shard_size - 1) // self.shard_size
        todo = [k for k in range(n_shards) if not self._shard_path(k).exists()]
        bar = tqdm(total=sum(min(self.shard_size, len(ids) - k * self.shard_size) for k in todo), desc=desc, unit="item", disable=not progress or not todo)
        for k in todo:
            shard_ids = ids[k * self.shard_size : (k + 1) * self.shard_size]
            parts: dict[str, list[np.ndarray]] = {}
            for s in range(0, len(shard_ids), batch_size):
                batch = shard_ids[s : s + batch_size]
                out = compute(batch)
                for name, arr in out.items():
                    arr = np.ascontiguousarray(arr, dtype=np.float32)
                    if arr.shape[0] != len(batch):
                        raise ValueError(f"{desc}: compute returned {arr.shape[0]} rows of {name!r} for {len(batch)} ids")
                    if not np.isfinite(arr).all():
                        bad = batch[int(np.flatnonzero(~np.isfinite(arr.reshape(len(batch), -1)).all(1))[0])]
                        raise ValueError(f"{desc}: non-finite {name!r} features for item {bad!r}; shards written so far are kept")
                    parts.setdefault(name, []).append(arr)
                bar.update(len(batch))
            tensors = {name: np.concatenate(v) for name, v in parts.items()}
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".shard.", suffix=".tmp")
            os.close(fd)
            save_file(tensors, tmp, metadata={"ids": json.dumps(shard_ids)})
            os.replace(tmp, self._shard_path(k))
        bar.close()
        expected = [self._shard_path(k) for k in range(n_shards)]
        if all(p.exists() for p in expected):
            atomic_write_text(self.root / "manifest.json", json.dumps({**self.manifest, "complete": True, "n_items": len(ids)}, indent=2, sort_keys=True))

    def read(self, ids: Sequence[str] | None = None) -> tuple[list[str], dict[str, np.ndarray]]:
        """All cached rows (in shard order), or the rows of ``ids`` in that order."""
        from safetensors import safe_open

        all_ids: list[str] = []
        parts: dict[str, list[np.ndarray]] = {}
        for p in sorted(self.root.glob("shard-*.safetensors")):
            with safe_open(str(p), "np") as f:
                all_ids += json.loads(f.metadata()["ids"])
            for name, arr in load_file(str(p)).items():
                parts.setdefault(name, []).append(arr)
        arrays = {name: np.concatenate(v) for name, v in parts.items()}
        if ids is None:
            return all_ids, arrays
        pos = {i: k for k, i in enumerate(all_ids)}
        missing = [i for i in ids if i not in pos]
        if missing:
            raise KeyError(f"cache {self.root} has no row for {missing[0]!r} ({len(missing)} missing); run fill() first")
        rows = np.array([pos[i] for i in ids], dtype=np.int64)
        return list(ids), {name: arr[rows] for name, arr in arrays.items()}
