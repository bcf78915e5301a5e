"""Every stage output, declared once: folder, producing stage, verified reader.

| artifact | folder (under ``cfg.cache_dir``) | producer |
|---|---|---|
| tower caches | ``tower_images/``, ``tower_texts/`` (:class:`ShardedCache`) | stage 01 |
| LiT projection | ``lit/`` | stage 01 |
| dense features | ``dense/``: ``img_embs.parquet``, ``text_embs.parquet``, ``dataset_meta.json`` | stage 01 |
| D2S run | ``d2s/<condition>/``: ``best.safetensors``, ``best.json`` (:class:`TrainingRun`) | stage 02 |
| D2S vectors | ``d2s/<condition>/vectors/<split>/``: ``images.npz``, ``texts.npz``, ``texts_own_tokens.npz`` | stage 02 |
| indexes | ``indexes/<condition>/<direction>/<kind>/`` | stage 04 |
| stage results | ``results/<profile>/<stage>.json`` with the fingerprint of its inputs | every stage |

A reader raises :class:`ArtifactError` naming the file and the stage to rerun.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import scipy.sparse as sp

from ..config.profiles import Config
from ..data import karpathy
from ..data.collection import ImageCaptionSet
from ..storage.feature_files import align, read_embeddings
from ..storage.manifest import Artifact, ArtifactError, digest  # noqa: F401 (digest: used by tests and the pipeline)
from ..storage.sparse_files import load_sparse, save_sparse

__all__ = ["STAGE01", "STAGE02", "STAGE04", "ArtifactError", "dense_artifact", "dense_dir", "load_dense_dir", "dense_content_id",
           "d2s_run_dir", "d2s_run_artifact", "vectors_artifact", "load_condition_vectors", "save_sparse", "load_sparse",
           "result_path", "read_result", "result_is_current", "stage_inputs", "index_dir", "vectors_content_ids"]

STAGE01 = "stage 01 (notebooks/01_cache_dense_features.ipynb)"
STAGE02 = "stage 02 (notebooks/02_train_sparse_heads.ipynb)"
STAGE04 = "stage 04 (notebooks/04_retrieve_with_inverted_index.ipynb)"
VECTOR_FILES = ("images", "texts", "texts_own_tokens")


# ---- stage 01: dense features ------------------------------------------------------------------

def dense_dir(cfg: Config) -> Path:
    """Where stage 01 writes the dense features later stages read."""
    return cfg.cache_dir / "dense"


def dense_artifact(cfg_or_dir) -> Artifact:
    """Stage 01's contract with later stages (a Config, or the folder itself)."""
    root = Path(cfg_or_dir) if isinstance(cfg_or_dir, (str, Path)) else dense_dir(cfg_or_dir)
    return Artifact(root, "dense features", STAGE01)


def dense_content_id(cfg: Config) -> str:
    """The verified content id of stage 01's features (what downstream fingerprints include)."""
    return dense_artifact(cfg).content_id()


def load_dense_dir(folder: Path, split: Optional[str] = None) -> tuple[ImageCaptionSet, np.ndarray, np.ndarray]:
    """Stage 01's output, verified: (collection, image vectors (N_img, D), text vectors (N_txt, D))."""
    folder = Path(folder)
    manifest = dense_artifact(folder).verify()
    col = karpathy.load_karpathy(folder / "dataset_meta.json", manifest["meta"].get("image_root"))
    if split is not None:
        col = col.split(split)
    iid, iemb = read_embeddings(folder / "img_embs.parquet")
    tid, temb = read_embeddings(folder / "text_embs.parquet")
    img = align(iid, iemb, col.images["image_id"].tolist(), str(folder / "img_embs.parquet"))
    txt = align(tid, temb, col.captions["text_id"].tolist(), str(folder / "text_embs.parquet"))
    return col, img, txt


# ---- stage 02: D2S runs and their vectors ---------------------------------------------------------

def d2s_run_dir(cfg: Config, condition: str) -> Path:
    """Folder of one condition's training run."""
    return cfg.cache_dir / "d2s" / condition


def d2s_run_artifact(cfg: Config, condition: str) -> Artifact:
    """The finished training run of one condition (best weights + metadata)."""
    return Artifact(d2s_run_dir(cfg, condition), f"D2S run {condition}", STAGE02)


def vectors_artifact(cfg: Config, condition: str, split: str) -> Artifact:
    """CSR vectors of one split under one condition's best model."""
    return Artifact(d2s_run_dir(cfg, condition) / "vectors" / split, f"D2S vectors {condition}/{split}", STAGE02)


def load_condition_vectors(cfg: Config, split: str = "test") -> dict[str, dict[str, sp.csr_matrix]]:
    """{condition: {"images", "texts", "texts_own_tokens"}} CSR vectors written by stage 02, verified."""
    out = {}
    for name in cfg.d2s_conditions:
        art = vectors_artifact(cfg, name, split)
        art.verify()
        out[name] = {k: load_sparse(art.root / f"{k}.npz") for k in VECTOR_FILES}
    return out


def vectors_content_ids(cfg: Config, split: str = "test") -> dict[str, str]:
    """Content id of every condition's vectors of a split (the inputs of stages 03 and 04)."""
    return {name: vectors_artifact(cfg, name, split).content_id() for name in cfg.d2s_conditions}


# ---- stage 04: indexes ---------------------------------------------------------------------------

def index_dir(cfg: Config, condition: str, direction: str, kind: str, tag: str = "") -> Path:
    """Where one persisted index lives."""
    return cfg.cache_dir / "indexes" / condition / direction / (kind + (f"_{tag}" if tag else ""))


# ---- every stage: results/<profile>/<stage>.json -------------------------------------------------

def result_path(cfg: Config, stage: str) -> Path:
    """``results/<profile>/<stage>.json``."""
    return cfg.results_dir / f"{stage}.json"


def read_result(cfg: Config, stage: str) -> Optional[dict]:
    """A stage's result file, or None when it does not exist or cannot be read."""
    try:
        return json.loads(result_path(cfg, stage).read_text())
    except (OSError, ValueError):
        return None


# Stages whose whole output is a function of artifacts upstream: the pipeline skips them when
# every result file they write records the fingerprint of the current inputs.
CODE_VERSIONS = {"03_analyze_sparse_vectors": 2, "04_retrieve_with_inverted_index": 1}
RESULT_FILES = {"03_analyze_sparse_vectors": ("03_analyses",), "04_retrieve_with_inverted_index": ("04_retrieval", "04_efficiency")}
CONFIG_SECTIONS = {"03_analyze_sparse_vectors": ("evaluation", "d2s"), "04_retrieve_with_inverted_index": ("evaluation", "index", "d2s")}


def stage_inputs(cfg: Config, stage: str) -> dict:
    """What a derived stage's results depend on: config sections, code version, content ids of its input artifacts.

    Raises :class:`ArtifactError` when an input is missing, stale or corrupt.
    """
    return {"stage": stage, "code": CODE_VERSIONS[stage], "config": cfg.section_hash(*CONFIG_SECTIONS[stage]),
            "conditions": list(cfg.d2s_conditions), "seed": cfg.seed,
            "dense": dense_content_id(cfg), "vectors": vectors_content_ids(cfg, "test")}


def result_is_current(cfg: Config, stage: str) -> bool:
    """True when every result file of ``stage`` records the fingerprint of its current inputs (False if any input is unusable)."""
    if stage not in RESULT_FILES:
        return False
    try:
        want = digest(stage_inputs(cfg, stage))
    except ArtifactError:
        return False
    return all((read_result(cfg, f) or {}).get("inputs_fingerprint") == want for f in RESULT_FILES[stage])
