"""Stage 06, explore the sparse vectors: load every trained model as an explorer model (issue 8).

The views themselves (:func:`query_view`, :func:`image_view`, :func:`compare_models`) are plain
functions in :mod:`lsr_lib.analysis.explorer_views`, re-exported here for the notebook. Models
are read from files: stage 02's D2S vectors (:func:`d2s_models`; a typed query goes MiniLM ->
LiT text projection -> D2S text head with full expansion, as at evaluation) and, when built,
stage 05's M1-M4 (:func:`suggestion_models`, through ``image_suggestion.explorer_models``).
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional

import numpy as np
import scipy.sparse as sp

from ..analysis.explorer_views import *  # noqa: F401,F403 (the views the notebook calls through this stage)
from ..analysis.explorer_views import ExplorerModel, saved_or_built_index


def dense_text_encoder(cfg) -> Callable[[list[str]], np.ndarray]:
    """texts -> (n, D) dense text embeddings, the same encoder stage 01 used for the captions."""
    import torch

    from ..artifacts.catalog import dense_dir, load_dense_dir

    kind = cfg.encoder.kind
    if kind == "lit_towers":
        from ..dense.lit_projection import load_projection
        from ..dense.towers import TextTower

        path = cfg.cache_dir / "lit" / "projection.safetensors"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run notebooks/01_cache_dense_features.ipynb for profile {cfg.profile!r} first")
        projection, _ = load_projection(path)
        tower = TextTower("cpu")

        def encode(texts: list[str]) -> np.ndarray:
            with torch.no_grad():
                return projection.text(torch.from_numpy(tower(list(texts))["text"])).numpy()  # (n, 256)
        return encode
    if kind in ("blip_hf", "lavis"):
        from ..dense.extract import make_encoder

        encoder = make_encoder(cfg)
        return lambda texts: encoder.encode_texts(list(texts)).float().cpu().numpy()
    col, _, txt = load_dense_dir(dense_dir(cfg))  # released features: only the collection's captions have vectors
    known = dict(zip(col.captions["text"], txt))

    def lookup(texts: list[str]) -> np.ndarray:
        missing = [t for t in texts if t not in known]
        if missing:
            raise KeyError(f"encoder.kind {kind!r} has no text encoder; type a caption of the collection (not found: {missing[0]!r})")
        return np.stack([known[t] for t in texts])
    return lookup


def d2s_models(cfg, split: str = "test", dense_encoder: Optional[Callable[[list[str]], np.ndarray]] = None) -> list[ExplorerModel]:
    """One :class:`ExplorerModel` per trained condition of ``cfg.d2s_conditions`` (stage 02's files)."""
    import torch

    from ..artifacts.catalog import d2s_run_dir as run_dir
    from ..artifacts.catalog import dense_dir, index_dir as index_path, load_condition_vectors, load_dense_dir
    from ..sparse.expansion_control import bert_uncased_tokenizer
    from ..train.d2s import encode_sparse, load_best

    col, _, _ = load_dense_dir(dense_dir(cfg), split)
    vectors = load_condition_vectors(cfg, split)  # says which stage to run when missing
    encode_dense = dense_encoder or dense_text_encoder(cfg)
    tok = bert_uncased_tokenizer("minilm")  # the BERT-uncased vocabulary of every model here
    out = []
    for name in cfg.d2s_conditions:
        head, _ = load_best(run_dir(cfg, name))

        def encode(texts: list[str], head=head) -> sp.csr_matrix:
            emb = torch.from_numpy(np.asarray(encode_dense(list(texts)), dtype=np.float32))  # (n, D)
            return encode_sparse(head, emb, "text")  # (n, V), full expansion as at evaluation
        v = vectors[name]
        out.append(ExplorerModel(
            name=f"D2S {name.replace('_', ' ')}", encode_queries=encode, image_vectors=v["images"],
            image_ids=col.images["image_id"].to_numpy(), image_paths=col.images["path"].tolist(),
            caption_vectors=v["texts"], captions=col.captions["text"].tolist(), caption_image_ids=col.captions["image_id"].to_numpy(),
            index=saved_or_built_index(index_path(cfg, name, "text_to_image", "numba"), v["images"]),
            caption_index=saved_or_built_index(index_path(cfg, name, "image_to_text", "numba"), v["texts"]),
            tokenizer=tok, description=f"Dense2Sparse, stage 02 condition {name!r}, {split} split"))
    return out


def suggestion_models(cfg, split: str = "test", loader: Optional[Callable] = None) -> tuple[list[ExplorerModel], Optional[str]]:
    """Stage 05's M1-M4 (``suggest_stage.explorer_models``, or ``loader``); ([], why) when not built."""
    if loader is None:
        from .image_suggestion import explorer_models as loader
    run = f"run stage 05 (image suggestion, M1-M4): python -m lsr_lib.run.pipeline --profile {cfg.profile} --stages 05"
    try:
        models = list(loader(cfg, split=split))
    except FileNotFoundError as err:
        return [], f"M1-M4 not shown: stage 05 outputs are missing for profile {cfg.profile!r} ({err}); {run}"
    if not models:
        return [], f"M1-M4 not shown: no stage 05 vectors for profile {cfg.profile!r}; {run}"
    return models, None


def available_models(cfg, split: str = "test", loader: Optional[Callable] = None) -> list[ExplorerModel]:
    """The D2S models of stage 02 plus stage 05's M1-M4 when built (a warning says why they are not)."""
    models = d2s_models(cfg, split)
    extra, why = suggestion_models(cfg, split, loader)
    if why:
        warnings.warn(why, stacklevel=2)
    return models + extra
