"""Stage 01's extraction on Ray Data (``extraction.engine: ray``): the same towers and encoders, on a
local Ray runtime or a cluster, writing the same checksummed sharded cache.

The work is a Ray dataset with one row per missing cache shard (its index and item ids).
``map_batches`` runs it through an actor pool: each actor builds the extractor once (the towers,
BLIP or LAVIS encoder, on its GPU when the cluster has GPUs) and computes whole shards with
:meth:`ShardedCache.compute_shard`, the in-process code path. Shards come back to the driver as
safetensors bytes, are checked (one finite row per id) and written by :meth:`ShardedCache.fill`
with their checksums, so an interrupted Ray run resumes at shard granularity like a local one and
the cache is interchangeable between engines.

Failures: Ray Data restarts a lost actor and retries its shard (its actor pools default to
unlimited ``max_restarts`` / ``max_task_retries`` for system failures: a killed worker, a lost
node); an exception raised by the extractor itself (a corrupt image, a non-finite feature) is not
retried and reaches the notebook naming the item, with every shard written so far kept.

Addresses: ``extraction.ray_address`` None starts (or joins) a Ray runtime on this machine; a
cluster's ``ray://host:10001`` or ``auto`` is the only change needed to run on a cluster.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Iterator, Optional

import numpy as np


def ray_init(address: Optional[str] = None, num_cpus: Optional[int] = None):
    """Start or join Ray (quietly, no dashboard); returns the module."""
    import ray

    if not ray.is_initialized():
        kwargs = (
            {"address": address} if address else {"num_cpus": num_cpus or os.cpu_count(), "include_dashboard": False}
        )
        ray.init(ignore_reinit_error=True, log_to_driver=False, configure_logging=False, **kwargs)
    return ray


class _ShardWorker:
    """A Ray Data actor: builds the extractor once, then computes whole shards."""

    def __init__(self, make_compute: Callable, batch_size: int, desc: str, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.compute, self.batch_size, self.desc = make_compute(), batch_size, desc

    def __call__(self, batch: dict) -> dict:
        from safetensors.numpy import save

        from ..storage.shard_cache import ShardedCache

        out = []
        for ids in batch["ids"]:
            tensors = ShardedCache.compute_shard(json.loads(ids), self.compute, self.batch_size, self.desc)
            out.append(save(tensors))
        return {"shard": batch["shard"], "payload": np.array(out, dtype=object)}


class RayEngine:
    """Computes cache shards with an actor pool on Ray Data (see the module docstring)."""

    def __init__(self, address: Optional[str] = None, actors: int = 0, threads_per_actor: int = 1) -> None:
        self.address, self.actors, self.threads = address, actors, threads_per_actor

    def pool(self, ray) -> tuple[int, float]:
        """(actors, GPUs per actor): one actor per GPU when the runtime has GPUs, else one per ``threads_per_actor``
        CPUs; ``actors`` > 0 overrides the count."""
        res = ray.cluster_resources()
        gpus = 1.0 if res.get("GPU", 0) >= 1 else 0.0
        n = int(res["GPU"]) if gpus else int(res.get("CPU", 1)) // max(1, self.threads)
        return max(1, self.actors or n), gpus

    def run(
        self, shards: list[tuple[int, list[str]]], make_compute: Callable, batch_size: int, desc: str
    ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """``(k, tensors)`` for every ``(k, ids)`` shard, as each finishes."""
        from safetensors.numpy import load

        if not shards:
            return
        if make_compute is None:
            raise ValueError(
                f"{desc}: the Ray engine needs make_compute (a function building the extractor inside each worker)"
            )
        ray = ray_init(self.address)
        n, gpus = self.pool(ray)
        n = min(n, len(shards))
        ds = ray.data.from_items(
            [{"shard": k, "ids": json.dumps(ids)} for k, ids in shards], override_num_blocks=len(shards)
        )
        ds = ds.map_batches(
            _ShardWorker,
            fn_constructor_args=(make_compute, batch_size, desc, self.threads),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=n),
            num_cpus=self.threads,
            num_gpus=gpus,
        )
        for row in ds.iter_rows():
            yield int(row["shard"]), {name: np.ascontiguousarray(a) for name, a in load(row["payload"]).items()}


def extraction_engine(extraction) -> Optional[RayEngine]:
    """The engine of a profile's ``extraction`` section: None (in-process) for ``local``, else a :class:`RayEngine`."""
    return (
        RayEngine(extraction.ray_address, extraction.ray_actors, extraction.ray_threads)
        if extraction.engine == "ray"
        else None
    )
