"""One resume / best-checkpoint helper for every trainer (LiT projection, D2S heads, M1-M4).

A training folder holds

- ``last_state.pt`` + ``last_state.json`` (its checksum and the run's fingerprint): written
  atomically after every epoch, read to resume; a damaged or foreign state is reported and set
  aside (training restarts) instead of failing the same way on every rerun;
- ``best.safetensors`` (+ optional extra weight files) and ``best.json``: the selected epoch;
- ``manifest.json`` (see :mod:`.manifest`), written when training finishes: a finished, sound
  run is reused without reading its training state at all.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .atomic import atomic_write, atomic_write_json
from .manifest import Artifact, digest, sha256_file
from .progress import notice

LAST_STATE, LAST_STATE_META = "last_state.pt", "last_state.json"
BEST_WEIGHTS, BEST_META = "best.safetensors", "best.json"


class TrainingRun:
    """The files of one training run under ``root``, keyed by the run's ``fingerprint``."""

    def __init__(self, root: str | Path, fingerprint: dict, name: str, producer: str) -> None:
        self.root, self.fingerprint = Path(root), json.loads(json.dumps(fingerprint, default=str))
        self.artifact = Artifact(self.root, name, producer)

    def finished(self) -> Optional[dict]:
        """The manifest's meta of a finished run with this fingerprint whose files are sound, else None."""
        st = self.artifact.status(self.fingerprint)
        if st.ok:
            return self.artifact.manifest()["meta"]
        if st.state != "missing":
            notice(f"{self.artifact.name}: {st.state} ({st.reason}); training again")
        # the best weights cannot be recovered from the last state
        if st.state == "corrupt" and (self.root / LAST_STATE).exists():
            os.replace(self.root / LAST_STATE, self.root / (LAST_STATE + ".rejected"))
        self.artifact.invalidate()
        return None

    def load_state(self) -> Optional[dict]:
        """The last saved training state of this run, or None (none, damaged, or another run's)."""
        path, meta_path = self.root / LAST_STATE, self.root / LAST_STATE_META
        if not path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            problem = (
                None
                if meta["fingerprint"] == digest(self.fingerprint)
                else "it belongs to another configuration or input"
            )
            problem = problem or (
                None
                if sha256_file(path) == meta["sha256"]
                else "it does not match its checksum (truncated or corrupted)"
            )
        except (OSError, ValueError, KeyError):
            problem = f"{meta_path} is missing or unreadable"
        if problem is None:
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except (pickle.UnpicklingError, RuntimeError, EOFError) as err:  # e.g. a state with numpy objects
                problem = f"it cannot be read back with torch.load(weights_only=True) ({type(err).__name__})"
        notice(f"{path}: {problem}; it is set aside as {LAST_STATE}.rejected, training starts from epoch 0", warn=True)
        os.replace(path, self.root / (LAST_STATE + ".rejected"))
        return None

    def save_state(self, snapshot: dict) -> None:
        """Write the resumable state atomically, then its checksum record. Numpy scalars (keys too) are stored as
        Python numbers and strings: ``torch.load(weights_only=True)`` refuses them, and the run would not resume."""
        snapshot = plain_python(snapshot)
        atomic_write(self.root / LAST_STATE, lambda tmp: torch.save(snapshot, tmp))
        atomic_write_json(
            self.root / LAST_STATE_META,
            {"fingerprint": digest(self.fingerprint), "sha256": sha256_file(self.root / LAST_STATE)},
        )

    def save_best(
        self, weights: dict[str, torch.Tensor], meta: dict, extra: Optional[dict[str, dict[str, torch.Tensor]]] = None
    ) -> None:
        """``best.safetensors`` (+ ``extra`` weight files by name) and ``best.json``, each atomic."""
        for fname, w in {BEST_WEIGHTS: weights, **(extra or {})}.items():
            w = {k: v.detach().float().cpu().contiguous() for k, v in w.items()}
            atomic_write(self.root / fname, lambda tmp, w=w: save_file(w, tmp))
        atomic_write_json(self.root / BEST_META, meta, indent=1)

    def finish(self, meta: dict, extra_files: tuple[str, ...] = ()) -> dict:
        """Commit the finished run (best weights and metadata) under this fingerprint."""
        return self.artifact.commit(self.fingerprint, (BEST_WEIGHTS, BEST_META, *extra_files), meta)["meta"]

    def load_best(self, extra: Optional[str] = None) -> tuple[dict[str, torch.Tensor], dict]:
        """Verified best weights (or the named extra weight file) and ``best.json``."""
        self.artifact.verify()
        return load_file(str(self.root / (extra or BEST_WEIGHTS))), json.loads((self.root / BEST_META).read_text())


def load_verified_best(
    root: str | Path, name: str, producer: str, extra: Optional[str] = None
) -> tuple[dict[str, torch.Tensor], dict]:
    """Best weights and metadata of a finished run, verified against its manifest (for readers)."""
    art = Artifact(root, name, producer)
    art.verify()
    return load_file(str(Path(root) / (extra or BEST_WEIGHTS))), json.loads((Path(root) / BEST_META).read_text())


def plain_python(obj):
    """``obj`` with every numpy scalar, in dict keys, values, lists and tuples, as its Python value; tensors as they
    are."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return type(obj)((plain_python(k), plain_python(v)) for k, v in obj.items())
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a named tuple
        return type(obj)(*(plain_python(v) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain_python(v) for v in obj)
    return obj
