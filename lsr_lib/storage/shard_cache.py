"""A resumable, sharded, checksummed feature cache (stage 01 towers and extractors, stage 05 states).

A cache folder holds shards ``shard-00000.safetensors`` (arrays + the shard's ids in the
metadata) and ``manifest.json`` (see :mod:`.manifest`): the fingerprint of what made it
(encoder, checkpoint, config, input checksums) and the checksum of every shard, recorded as
each shard is written. Filling runs under the folder's lock; an interrupted fill leaves only
whole shards and the next one computes only the missing or corrupt ones. Reading verifies
every shard against its checksum. A cache made with another fingerprint is *stale*: it is moved
aside to ``<folder>@<its fingerprint>`` (nothing computed is lost, and switching back to that
configuration moves it back) and a fresh cache is filled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from .progress import notice, progress_bar as tqdm

from .atomic import atomic_write, atomic_write_json, folder_lock
from .manifest import (
    MANIFEST,
    ArtifactError,
    check_file,
    content_of,
    describe_change,
    digest,
    file_record,
    manifest_problem,
)


class ShardedCache:
    """Rows (id + named float arrays) stored in fixed-size, checksummed shards under ``root``."""

    def __init__(
        self,
        root: str | Path,
        manifest: dict,
        shard_size: int = 1024,
        producer: str = "stage 01 (notebooks/01_cache_dense_features.ipynb)",
    ):
        if shard_size <= 0:
            raise ValueError(f"shard_size must be > 0, got {shard_size} (extraction.shard_size in the profile)")
        self.root, self.shard_size, self.producer = Path(root), shard_size, producer
        self.manifest = json.loads(json.dumps(manifest, default=str))  # JSON round trip: tuples -> lists
        self.fingerprint = digest(self.manifest)
        with folder_lock(self.root.parent / f".{self.root.name}.lock", str(self.root)):
            old = self._record()
            if old is not None and old.get("fingerprint") != self.fingerprint:
                aside = self.root.parent / f"{self.root.name}@{old.get('fingerprint', 'unknown')}"
                changes = describe_change(old.get("about") or {}, self.manifest)
                notice(
                    f"cache {self.root} was made with another configuration ({changes}); "
                    f"moved aside to {aside.name}, filling a new one"
                )
                os.replace(self.root, aside)
            back = self.root.parent / f"{self.root.name}@{self.fingerprint}"
            if not self.root.exists() and back.exists():
                os.replace(back, self.root)  # this configuration was computed before: reuse it
            if self._record() is None:
                self._write_record({}, complete=False)

    def _record(self) -> dict | None:
        try:
            return json.loads((self.root / MANIFEST).read_text())
        except (OSError, ValueError):
            return None

    def _write_record(self, shards: dict, complete: bool, n_items: int | None = None) -> None:
        rec = {
            "about": self.manifest,
            "fingerprint": self.fingerprint,
            "files": shards,
            "complete": complete,
            "content": content_of(shards),
            "n_items": n_items,
        }
        atomic_write_json(self.root / MANIFEST, rec)

    def _shard_name(self, k: int) -> str:
        return f"shard-{k:05d}.safetensors"

    @property
    def complete(self) -> bool:
        """True when every shard of the last fill is on disk and recorded."""
        rec = self._record()
        return bool(rec and rec.get("complete"))

    def content_id(self) -> str:
        """Digest of every shard's checksum: what downstream fingerprints include."""
        rec = self._record()
        if not rec or not rec.get("complete"):
            raise ArtifactError(f"cache {self.root} is not complete; rerun {self.producer}")
        if problem := manifest_problem(rec):
            raise ArtifactError(
                f"cache {self.root}: {problem}. Rerun {self.producer}: it checks every shard and recomputes the bad "
                "ones."
            )
        return rec["content"]

    def fill(
        self,
        ids: Sequence[str],
        compute: Callable[[list[str]], dict[str, np.ndarray]] | None,
        batch_size: int,
        desc: str = "extract",
        progress: bool = True,
        engine=None,
        make_compute: Callable[[], Callable[[list[str]], dict[str, np.ndarray]]] | None = None,
    ) -> None:
        """Compute ``compute(batch_ids) -> {name: (B, ...) array}`` for every shard missing or failing its checksum.

        ``engine`` (e.g. :class:`lsr_lib.dense.ray_extract.RayEngine`): computes the missing shards
        elsewhere, each worker running ``make_compute()`` once and then :meth:`compute_shard`; its
        ``run(shards, make_compute, batch_size, desc)`` yields ``(k, tensors)`` as shards finish, in any
        order, and each is checked and written here exactly as an in-process shard.
        """
        ids = [str(i) for i in ids]
        n_shards = (len(ids) + self.shard_size - 1) // self.shard_size
        with folder_lock(self.root, str(self.root)):
            files = (self._record() or {}).get("files")
            shards = (
                {k: v for k, v in files.items() if isinstance(v, dict) and {"sha256", "bytes"} <= set(v)}
                if isinstance(files, dict)
                else {}
            )
            todo = []
            for k in range(n_shards):
                name = self._shard_name(k)
                problem = check_file(self.root, name, shards[name]) if name in shards else "not computed yet"
                if problem:
                    if name in shards:
                        notice(f"cache shard {problem}; recomputing it")
                    shards.pop(name, None)
                    todo.append(k)
            bar = tqdm(
                total=sum(min(self.shard_size, len(ids) - k * self.shard_size) for k in todo),
                desc=desc,
                unit="item",
                disable=not progress or not todo,
            )
            shard_ids = {k: ids[k * self.shard_size : (k + 1) * self.shard_size] for k in todo}
            if engine is None:
                done = ((k, self.compute_shard(shard_ids[k], compute, batch_size, desc, bar.update)) for k in todo)
            else:
                done = engine.run([(k, shard_ids[k]) for k in todo], make_compute, batch_size, desc)
            for k, tensors in done:
                if engine is not None:
                    self.check_shard(tensors, shard_ids[k], desc)
                    bar.update(len(shard_ids[k]))
                atomic_write(
                    self.root / self._shard_name(k),
                    lambda tmp: save_file(tensors, tmp, metadata={"ids": json.dumps(shard_ids[k])}),
                )
                shards[self._shard_name(k)] = file_record(self.root / self._shard_name(k))
                self._write_record(shards, complete=False)
            bar.close()
            expected = {self._shard_name(k) for k in range(n_shards)}
            self._write_record({k: v for k, v in shards.items() if k in expected}, complete=True, n_items=len(ids))

    @staticmethod
    def compute_shard(
        shard_ids: list[str], compute, batch_size: int, desc: str, advance: Callable[[int], object] = lambda n: None
    ) -> dict[str, np.ndarray]:
        """One shard's arrays, ``compute`` called on batches of ``batch_size`` ids; each batch checked (rows,
        finite)."""
        parts: dict[str, list[np.ndarray]] = {}
        for s in range(0, len(shard_ids), batch_size):
            batch = shard_ids[s : s + batch_size]
            for name, arr in compute(batch).items():
                arr = np.ascontiguousarray(arr, dtype=np.float32)
                ShardedCache.check_rows(arr, batch, name, desc)
                parts.setdefault(name, []).append(arr)
            advance(len(batch))
        return {name: np.concatenate(v) for name, v in parts.items()}

    @staticmethod
    def check_rows(arr: np.ndarray, batch: list[str], name: str, desc: str) -> None:
        """One row per id, all finite; the error names the first bad item."""
        if arr.shape[0] != len(batch):
            raise ValueError(f"{desc}: compute returned {arr.shape[0]} rows of {name!r} for {len(batch)} ids")
        if not np.isfinite(arr).all():
            bad = batch[int(np.flatnonzero(~np.isfinite(arr.reshape(len(batch), -1)).all(1))[0])]
            raise ValueError(f"{desc}: non-finite {name!r} features for item {bad!r}; shards written so far are kept")

    @staticmethod
    def check_shard(tensors: dict[str, np.ndarray], shard_ids: list[str], desc: str) -> None:
        """A shard computed elsewhere: the same checks as a batch computed here."""
        for name, arr in tensors.items():
            if arr.dtype != np.float32 or not arr.flags.c_contiguous:
                raise ValueError(f"{desc}: shard array {name!r} must be contiguous float32, got {arr.dtype}")
            ShardedCache.check_rows(arr, shard_ids, name, desc)

    def _verified_shards(self) -> list[str]:
        rec = self._record()
        if not rec or not rec.get("complete"):
            raise ArtifactError(f"cache {self.root} is not complete; rerun {self.producer} to fill it")
        if problem := manifest_problem(rec):
            raise ArtifactError(
                f"cache {self.root}: {problem}. Rerun {self.producer}: it checks every shard and recomputes the bad "
                "ones."
            )
        for name, r in sorted(rec["files"].items()):  # check_file hashes each file once per process
            if problem := check_file(self.root, name, r):
                raise ArtifactError(
                    f"cache shard {problem}. Rerun {self.producer}: it recomputes that shard and reuses the others."
                )
        return sorted(rec["files"])

    def read(self, ids: Sequence[str] | None = None) -> tuple[list[str], dict[str, np.ndarray]]:
        """All cached rows (in shard order), or the rows of ``ids`` in that order; every shard verified."""
        all_ids: list[str] = []
        parts: dict[str, list[np.ndarray]] = {}
        for name in self._verified_shards():
            p = self.root / name
            with safe_open(str(p), "np") as f:
                all_ids += json.loads(f.metadata()["ids"])
            for key, arr in load_file(str(p)).items():
                parts.setdefault(key, []).append(arr)
        arrays = {name: np.concatenate(v) for name, v in parts.items()}
        if ids is None:
            return all_ids, arrays
        pos = {i: k for k, i in enumerate(all_ids)}
        missing = [i for i in ids if i not in pos]
        if missing:
            raise KeyError(
                f"cache {self.root} has no row for {missing[0]!r} ({len(missing)} missing); run fill() first"
            )
        rows = np.array([pos[i] for i in ids], dtype=np.int64)
        return list(ids), {name: arr[rows] for name, arr in arrays.items()}
