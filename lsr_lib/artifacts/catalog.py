"""Every stage output, declared once: folder, producing stage, verified reader.

| artifact | folder (under ``cfg.cache_dir``) | producer |
|---|---|---|
| tower caches | ``tower_images/``, ``tower_texts/`` (:class:`ShardedCache`) | stage 01 |
| LiT projection | ``lit/`` | stage 01 |
| dense features | ``dense/``: ``img_embs.parquet``, ``text_embs.parquet``, ``dataset_meta.json`` | stage 01 |
| D2S run | ``d2s/<condition>/``: ``best.safetensors``, ``best.json`` (:class:`TrainingRun`) | stage 02 |
| D2S vectors | ``d2s/<condition>/vectors/<split>/``: ``{images,texts,texts_own_tokens}.npz`` | stage 02 |
| indexes | ``indexes/<condition>/<direction>/<kind>/`` | stage 04 |
| suggestion run | ``suggest/<M>/``: ``best.safetensors``, ``best.json`` | stage 05 |
| suggestion vectors | ``suggest/<M>/vectors/<split>/``: ``queries.npz``, ``docs.npz`` | stage 05 |
| stage results | ``results/<profile>/<stage>.json`` with the fingerprint of its inputs | every stage |

A reader raises :class:`ArtifactError` naming the file, the stage to rerun and the command that runs it
for the artifact's profile (:func:`make_command`: `make main` for the default profile).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

import numpy as np
import scipy.sparse as sp

from ..config.profiles import MAIN_PROFILE, PROFILES, Config, split_profile
from ..data import karpathy
from ..data.collection import ImageCaptionSet
from ..storage.feature_files import align, read_embeddings

# digest: used by tests and the pipeline
from ..storage.manifest import Artifact, ArtifactError, describe_change, digest  # noqa: F401
from ..storage.shard_cache import ShardedCache
from ..storage.sparse_files import load_sparse, save_sparse
from ..storage.code_fingerprint import code_fingerprint, stage_notebook

__all__ = [
    "STAGE01",
    "code_fingerprint",
    "STAGE02",
    "STAGE04",
    "STAGE05",
    "ArtifactError",
    "make_command",
    "producer",
    "lit_artifact",
    "suggest_dir",
    "suggest_run_artifact",
    "suggest_vectors_artifact",
    "dense_artifact",
    "dense_dir",
    "load_dense_dir",
    "dense_content_id",
    "d2s_run_dir",
    "d2s_run_artifact",
    "vectors_artifact",
    "load_condition_vectors",
    "save_sparse",
    "load_sparse",
    "result_path",
    "read_result",
    "result_is_current",
    "result_status",
    "UPSTREAM",
    "cache_artifact",
    "stage_inputs",
    "index_dir",
    "vectors_content_ids",
]

STAGE01 = "stage 01 (notebooks/01_cache_dense_features.ipynb)"
STAGE02 = "stage 02 (notebooks/02_train_sparse_heads.ipynb)"
STAGE04 = "stage 04 (notebooks/04_retrieve_with_inverted_index.ipynb)"
STAGE05 = "stage 05 (notebooks/05_image_suggestion.ipynb)"
VECTOR_FILES = ("images", "texts", "texts_own_tokens")


def make_command(profile: str) -> str:
    """The command that makes a profile's stage outputs: `make main` for the main job's profile, else the pipeline."""
    if profile == MAIN_PROFILE:
        return "make main"
    return f".venv/bin/python -m lsr_lib.run.pipeline --profile {profile}"


def producer(stage: str, profile: Optional[str]) -> str:
    """A stage (``STAGE01``...) with the command that runs it for ``profile``; the stage alone for None."""
    return stage if profile is None else f"{stage} with `{make_command(profile)}`"


def _profile_of(folder: Path) -> Optional[str]:
    """The profile whose cache holds ``folder`` (``.../cache/<profile>/dense``), or None when it is not one."""
    parts = folder.parts
    if "cache" not in parts:
        return None
    k = len(parts) - 1 - parts[::-1].index("cache")
    name = "/".join(parts[k + 1 : -1])
    return name if name and split_profile(name)[0] in PROFILES else None


# ---- stage 01: dense features ------------------------------------------------------------------


def dense_dir(cfg: Config) -> Path:
    """Where stage 01 writes the dense features later stages read."""
    return cfg.cache_dir / "dense"


def dense_artifact(cfg_or_dir) -> Artifact:
    """Stage 01's contract with later stages (a Config, or the folder itself)."""
    if isinstance(cfg_or_dir, (str, Path)):
        root = Path(cfg_or_dir)
        return Artifact(root, "dense features", producer(STAGE01, _profile_of(root)))
    return Artifact(dense_dir(cfg_or_dir), "dense features", producer(STAGE01, cfg_or_dir.profile))


def lit_artifact(cfg: Config) -> Artifact:
    """The trained LiT projections of the embedded default (stage 01)."""
    return Artifact(cfg.cache_dir / "lit", "LiT projection", producer(STAGE01, cfg.profile))


TOWER_CACHES = ("tower_images", "tower_texts")  # stage 01, embedded default: the frozen towers' features
# stage 05 (stage 01 fills the emoji images' patch states)
SUGGEST_CACHES = ("suggest/states_text", "suggest/states_image")


def cache_artifact(cfg: Config, name: str) -> Artifact:
    """A sharded feature cache under ``cfg.shared_cache_dir`` seen as an artifact (its manifest has the same form)."""
    stage = STAGE05 if name in SUGGEST_CACHES else STAGE01
    return Artifact(cfg.shared_cache_dir / name, f"feature cache {name}", producer(stage, cfg.profile))


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
    return Artifact(d2s_run_dir(cfg, condition), f"D2S run {condition}", producer(STAGE02, cfg.profile))


def vectors_artifact(cfg: Config, condition: str, split: str) -> Artifact:
    """CSR vectors of one split under one condition's best model."""
    return Artifact(
        d2s_run_dir(cfg, condition) / "vectors" / split,
        f"D2S vectors {condition}/{split}",
        producer(STAGE02, cfg.profile),
    )


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


# ---- stage 05: suggestion runs and their vectors ------------------------------------------------


def suggest_dir(cfg: Config) -> Path:
    """Stage 05's folder: one run per configuration (M1-M4)."""
    return cfg.cache_dir / "suggest"


def _checksum(ids, texts) -> str:
    h = hashlib.sha256()
    for i, t in zip(ids, texts):
        h.update(f"{i}\t{t}\n".encode())
    return h.hexdigest()[:16]


def _portable(path, root: Path) -> str:
    """``path`` relative to ``root`` when it lies below it (else as given)."""
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve())) if path else ""
    except ValueError:
        return str(path)


def suggest_patch_cache(cfg: Config, docs, tower_fingerprint: dict) -> ShardedCache:
    """Frozen image-tower patch states (49 x 1280) of the suggestion documents ``docs`` (``doc_id``, ``path``).

    In ``cfg.shared_cache_dir`` (read by every training seed). Stage 05 fills it; for the emoji
    suggestion set, whose documents are the collection's clean images, stage 01 fills it from the
    same forward passes that make its tower features, so stage 05 does not run the tower again.
    """
    # not the checkout's folder: a cache copied to another clone stays valid
    where = [_portable(p, cfg.data_dir) for p in docs["path"]]
    return ShardedCache(
        cfg.shared_cache_dir / "suggest" / "states_image",
        {**tower_fingerprint, "images": _checksum(docs["doc_id"], where), "n": len(docs)},
        cfg.extraction.shard_size,
        producer=producer(STAGE05, cfg.profile),
    )


def suggest_text_checksum(ids, texts) -> str:
    """Checksum of (id, text) pairs: the token-state cache's key."""
    return _checksum(ids, texts)


def suggest_run_artifact(cfg: Config, config: str) -> Artifact:
    """The finished training run of one suggestion configuration."""
    return Artifact(suggest_dir(cfg) / config, f"suggestion run {config}", producer(STAGE05, cfg.profile))


def suggest_vectors_artifact(cfg: Config, config: str, split: str) -> Artifact:
    """Query and document vectors of one configuration and split."""
    return Artifact(
        suggest_dir(cfg) / config / "vectors" / split,
        f"suggestion vectors {config}/{split}",
        producer(STAGE05, cfg.profile),
    )


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


# Every stage records, with its result files, the fingerprint of what they were computed from: the
# config sections it reads, its code (the notebook's code cells and every lsr_lib module they reach,
# lsr_lib.storage.code_fingerprint), the versions of the packages that code computes with, and the
# content ids of its input artifacts. The pipeline skips a stage while that fingerprint matches.
RESULT_FILES = {
    "01_cache_dense_features": ("01_dense_baseline",),
    "02_train_sparse_heads": ("02_d2s",),
    "03_analyze_sparse_vectors": ("03_analyses",),
    "04_retrieve_with_inverted_index": ("04_retrieval", "04_efficiency"),
    "05_image_suggestion": ("05_suggestion",),
    "06_explore_sparse_vectors": ("06_explorer",),
    "07_data_scale_study": ("07_data_scale",),
}
CONFIG_SECTIONS = {
    "01_cache_dense_features": ("data", "encoder", "lit", "evaluation"),
    "02_train_sparse_heads": ("data", "evaluation", "d2s"),
    "03_analyze_sparse_vectors": ("evaluation", "d2s"),
    "04_retrieve_with_inverted_index": ("evaluation", "index", "d2s"),
    "05_image_suggestion": ("data", "evaluation", "suggest"),
    "06_explore_sparse_vectors": ("evaluation", "d2s", "suggest"),
    "07_data_scale_study": ("data", "evaluation", "d2s", "data_scale"),
}


def _artifact_ids(cfg: Config, stage: str, missing_seeds: Optional[list] = None) -> dict:
    """Content ids of the artifacts a stage's numbers come from (verified: ArtifactError when one is unusable).

    ``missing_seeds`` (stage 07): a seed variant whose features are not built is appended there and
    left out, instead of raising.
    """
    n = stage[:2]
    out: dict = {}
    if n in ("01", "02", "03", "04", "06"):
        out["dense"] = dense_content_id(cfg)
    if n == "01" and cfg.encoder.kind == "lit_towers":
        out["lit"] = lit_artifact(cfg).content_id()
        out["tower_caches"] = {name: cache_artifact(cfg, name).content_id() for name in TOWER_CACHES}
    if n == "02":
        out["runs"] = {c: d2s_run_artifact(cfg, c).content_id() for c in cfg.d2s_conditions}
    if n in ("02", "03", "04", "06"):
        out["vectors"] = vectors_content_ids(cfg, "test")
    if n == "05" and not cfg.suggest.finetune_towers:  # fine-tuned towers read their inputs live: no state caches
        out["suggest_states"] = {name: cache_artifact(cfg, name).content_id() for name in SUGGEST_CACHES}
    if n == "05":
        out["suggest_runs"] = {c: suggest_run_artifact(cfg, c).content_id() for c in cfg.suggest.configurations}
    if n == "05":
        out["suggest_vectors"] = {
            c: suggest_vectors_artifact(cfg, c, "test").content_id() for c in cfg.suggest.configurations
        }
    # every study seed's features; the runs are keyed by them (and by the study's config) in their own fingerprints
    if n == "07":
        out["seeds_dense"] = {}
        for k in cfg.data_scale_seeds:
            try:
                out["seeds_dense"][str(k)] = dense_content_id(cfg.seed_variant(k))
            except ArtifactError:
                if missing_seeds is None:
                    raise
                missing_seeds.append(k)
    if n == "06":  # the explorer shows M1-M4 only when stage 05 has run: those present are its inputs
        out["suggest_vectors"] = {
            c: a.content_id()
            for c in cfg.suggest.configurations
            if (a := suggest_vectors_artifact(cfg, c, "test")).status().ok
        }
    return out


def stage_inputs(cfg: Config, stage: str, missing_seeds: Optional[list] = None) -> dict:
    """What a stage's results depend on: config sections, code and environment, content ids of its input artifacts.

    Raises :class:`ArtifactError` when an input is missing, stale or corrupt (``missing_seeds``: see
    :func:`_artifact_ids`).
    """
    return {
        "stage": stage,
        **code_fingerprint(notebook=stage_notebook(stage)),
        "config": cfg.section_hash(*CONFIG_SECTIONS[stage]),
        "conditions": list(cfg.d2s_conditions),
        "seed": cfg.seed,
        **_artifact_ids(cfg, stage, missing_seeds),
    }


# The stages whose outputs a stage reads (through the artifacts above): when one of them reruns, this one
# may have to rerun after it (``--explain`` says so).
UPSTREAM = {
    "01_cache_dense_features": (),
    "02_train_sparse_heads": ("01_cache_dense_features",),
    "03_analyze_sparse_vectors": ("02_train_sparse_heads",),
    "04_retrieve_with_inverted_index": ("02_train_sparse_heads",),
    "05_image_suggestion": ("01_cache_dense_features",),
    "06_explore_sparse_vectors": ("02_train_sparse_heads", "05_image_suggestion"),
    "07_data_scale_study": ("01_cache_dense_features", "02_train_sparse_heads"),
}


def _shown(path: Path) -> str:
    from ..config import profiles  # the checkout's root as set now (tests point it elsewhere)

    return str(path.relative_to(profiles.REPO_ROOT)) if path.is_relative_to(profiles.REPO_ROOT) else str(path)


def result_status(cfg: Config, stage: str) -> tuple[bool, str]:
    """(current, why): whether every result file of ``stage`` records the fingerprint of its current inputs.

    Verifies every input artifact it reuses (each file's size and SHA-256 against its manifest), so a
    damaged cache shard makes its stage stale, named. ``why`` is one line: the changed code files or
    packages, the input that is missing or damaged, or the result file that does not exist.
    """
    if stage not in RESULT_FILES:
        return False, "it declares no result file"
    try:
        inputs = stage_inputs(cfg, stage)
    except ArtifactError as err:
        return False, str(err).split(". Rerun ")[0]
    want = digest(inputs)
    for name in RESULT_FILES[stage]:
        path = result_path(cfg, name)
        if not path.exists():
            return False, f"{_shown(path)} does not exist"
        doc = read_result(cfg, name)
        if doc is None:
            return False, f"{_shown(path)} cannot be read (truncated or not JSON)"
        if doc.get("inputs_fingerprint") != want:
            return False, f"{describe_change(doc.get('inputs') or {}, inputs)} since {_shown(path)}"
    files = [_shown(result_path(cfg, n)) for n in RESULT_FILES[stage]]
    return True, f"{', '.join(files)} record{'s' if len(files) == 1 else ''} the current code, environment and inputs"


def result_is_current(cfg: Config, stage: str) -> bool:
    """True when every result file of ``stage`` records the fingerprint of its current inputs (False if any input is
    unusable)."""
    return result_status(cfg, stage)[0]
