"""Stage 06, explore the sparse vectors: load every trained model as an explorer model (issue 8).

The views themselves (:func:`query_view`, :func:`image_view`, :func:`compare_models`) are plain
functions in :mod:`lsr_lib.analysis.explorer_views`, re-exported here for the notebook. Models
are read from files: stage 02's D2S vectors (:func:`d2s_models`; a typed query goes MiniLM ->
LiT text projection -> D2S text head with full expansion, as at evaluation) and, when built,
stage 05's M1-M4 (:func:`suggestion_models`, read by :func:`load_suggestion_models`).

Symbol tokens (:func:`is_symbol_term`: no letter or digit, such as ``©``, ``•``, ``—``; stage 03's
``punctuation`` category) often rank among a D2S vector's top terms: the model uses these vocabulary
slots as latent dimensions with no lexical meaning (notebook 06, section 4). :func:`symbol_shares`
measures how much of the top-k weight they carry over a split's queries and documents, and
:func:`symbol_note` says so in one line wherever a view shows them; the vectors are not changed.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..analysis.explorer_views import *  # noqa: F401,F403 (the views the notebook calls through this stage)
from ..analysis.explorer_views import ExplorerModel, saved_or_built_index, tokenizer_of


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
            raise FileNotFoundError(
                f"{path} is missing: run notebooks/01_cache_dense_features.ipynb for profile {cfg.profile!r} first"
            )
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
            raise KeyError(
                f"encoder.kind {kind!r} has no text encoder; type a caption of the collection (not found: "
                f"{missing[0]!r})"
            )
        return np.stack([known[t] for t in texts])

    return lookup


def d2s_models(
    cfg, split: str = "test", dense_encoder: Optional[Callable[[list[str]], np.ndarray]] = None
) -> list[ExplorerModel]:
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
        out.append(
            ExplorerModel(
                name=f"D2S {name.replace('_', ' ')}",
                encode_queries=encode,
                image_vectors=v["images"],
                image_ids=col.images["image_id"].to_numpy(),
                image_paths=col.images["path"].tolist(),
                caption_vectors=v["texts"],
                captions=col.captions["text"].tolist(),
                caption_image_ids=col.captions["image_id"].to_numpy(),
                index=saved_or_built_index(index_path(cfg, name, "text_to_image", "numba"), v["images"]),
                caption_index=saved_or_built_index(index_path(cfg, name, "image_to_text", "numba"), v["texts"]),
                tokenizer=tok,
                description=f"Dense2Sparse, stage 02 condition {name!r}, {split} split",
            )
        )
    return out


def load_suggestion_models(cfg, split: str = "test") -> list[ExplorerModel]:
    """Stage 05's M1-M4 as explorer models: typed queries encoded live, test documents from stage 05's vectors."""
    import torch

    from ..artifacts.catalog import suggest_dir, suggest_vectors_artifact
    from ..data.profile_sets import load_suggestion_set
    from ..dense.towers import TokenTower
    from ..sparse.suggest_encoders import describe
    from ..storage.manifest import ArtifactError
    from ..storage.sparse_files import load_sparse
    from ..train.suggest import encode, load_suggest_model

    data = load_suggestion_set(cfg).split(split)
    out = []
    tower = None
    for config in cfg.suggest.configurations:
        folder = suggest_dir(cfg) / config
        art = suggest_vectors_artifact(cfg, config, split)
        if not art.status().ok:
            continue
        docs = load_sparse(art.root / "docs.npz")  # (N_docs, V)
        if docs.shape[0] != len(data.docs):  # written for an earlier suggestion set
            raise ArtifactError(f"{art.root} holds {docs.shape[0]} documents, the {split} split {len(data.docs)}")
        tower = tower or TokenTower("cpu", cfg.suggest.max_text_tokens)
        model = load_suggest_model(folder)

        def encode_queries(texts, model=model):
            with torch.inference_mode():
                t = tower.encode(list(texts))
            m = sp.csr_matrix(encode(model, "query", t, None, cfg.suggest.eval_batch_size).numpy())
            m.eliminate_zeros()
            return m

        qk, dk, di = describe(config)
        out.append(
            ExplorerModel(
                name=f"{config} ({qk} query / {dk} {di} docs)",
                encode_queries=encode_queries,
                image_vectors=docs,
                image_ids=data.docs["doc_id"].to_numpy(),
                image_paths=list(data.docs["path"]),
                description=(
                    f"stage 05 {config}: documents are emoji represented by {di}; scores are sparse dot products"
                ),
            )
        )
    return out


def suggestion_models(
    cfg, split: str = "test", loader: Optional[Callable] = None
) -> tuple[list[ExplorerModel], Optional[str]]:
    """Stage 05's M1-M4 (:func:`load_suggestion_models`, or ``loader``); ([], why) when not built."""
    if loader is None:
        loader = load_suggestion_models
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


def cosine_rows(a: sp.csr_matrix, b: sp.csr_matrix) -> np.ndarray:
    """Cosine of each row of ``a`` (n, V) with the same row of ``b`` (n, V): (n,)."""
    num = np.asarray(a.multiply(b).sum(1)).ravel()
    return num / np.sqrt(np.asarray(a.multiply(a).sum(1)).ravel() * np.asarray(b.multiply(b).sum(1)).ravel())


def view_summary(query_views: dict, base: ExplorerModel, top_k: int):
    """One row per (model, query) view: its summary, whether a caption's own image is in the top-k, its top terms and
    images."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                **v["summary"],
                f"own image in top-{top_k}": bool(v["images"]["relevant"].any()) if q in base.captions else None,
                "top terms": ", ".join(v["terms"]["term"].head(5)),
                "top images": ", ".join(map(str, v["images"]["image_id"].head(5))),
            }
            for (name, q), v in query_views.items()
        ]
    )


def stage_results(queries: list[str], fresh_vs_stored: dict, summary) -> dict:
    """The content of ``results/<profile>/06_explorer.json``: the queries shown, fresh against stored vectors, one row
    per view."""
    return {
        "queries": queries,
        "fresh_vs_stored_min_cosine": fresh_vs_stored,
        "views": summary.to_dict(orient="records"),
    }


# ---- symbol tokens: vocabulary slots used as latent dimensions ------------------------------------


def is_symbol_term(term: str) -> bool:
    """True for a symbol token: no letter or digit, not a ``##`` fragment, not ``[special]`` (stage 03's
    ``punctuation`` category of ``lsr_lib.analysis.semantic_deviation``: ©, •, —, |, ...)."""
    special = term.startswith("[") and term.endswith("]") and len(term) > 2
    return not (special or term.startswith("##") or any(ch.isalnum() for ch in term))


@lru_cache(maxsize=4)
def symbol_mask(tokenizer) -> np.ndarray:
    """(V,) True where the vocabulary term is a symbol token (184 of BERT-uncased's 30,522)."""
    return np.array([is_symbol_term(t) for t in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))])


def topk_symbol_share(x: sp.csr_matrix, mask: np.ndarray, k: int) -> np.ndarray:
    """(N,) for each row of ``x`` (N, V): the share of its ``k`` largest weights on ``mask``'s terms (NaN: empty)."""
    x = sp.csr_matrix(x)
    if x.shape[1] > len(mask):
        raise ValueError(f"vectors have {x.shape[1]} terms but the vocabulary only {len(mask)}: wrong tokenizer")
    out = np.full(x.shape[0], np.nan)
    for i in range(x.shape[0]):
        ids, w = x.indices[x.indptr[i] : x.indptr[i + 1]], x.data[x.indptr[i] : x.indptr[i + 1]].astype(np.float64)
        top = np.lexsort((ids, -w))[:k]  # largest first, ties by lower term id (as the term tables)
        total = w[top].sum()
        if total > 0:
            out[i] = w[top][mask[ids[top]]].sum() / total
    return out


def symbol_shares(models: Sequence[ExplorerModel], k: int = 10) -> pd.DataFrame:
    """Per model, the mean share of the top-``k`` weight on symbol tokens over its split's queries (the stored
    caption vectors; NaN when it has none) and its documents (the image vectors)."""
    mean = lambda a: float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")
    rows = []
    for m in models:
        mask = symbol_mask(tokenizer_of(m))
        queries = topk_symbol_share(m.caption_vectors, mask, k) if m.caption_vectors is not None else np.full(1, np.nan)
        docs = topk_symbol_share(m.image_vectors, mask, k)
        rows.append({"model": m.name, "queries": mean(queries), "documents": mean(docs), "k": k})
    return pd.DataFrame(rows).set_index("model")


def symbol_note(view: dict, shares: Optional[pd.DataFrame] = None, short: bool = False) -> Optional[str]:
    """One line for a query view whose term table shows symbol tokens: which, their share of the weight shown and,
    with ``shares`` (:func:`symbol_shares`), the model's share over the split; None when it shows none."""
    terms = view["terms"]
    symbol = terms["term"].map(is_symbol_term).to_numpy(dtype=bool)
    total = float(terms["weight"].sum())
    if not symbol.any() or total <= 0:
        return None
    names = " ".join(dict.fromkeys(terms["term"][symbol]))
    share = float(terms["weight"][symbol].sum()) / total
    if short:
        return f"{names}: symbol tokens, {share:.0%} of the top-{len(terms)} weight (latent dimensions)"
    line = (
        f"{names}: symbol tokens, latent dimensions with no lexical meaning; "
        f"{share:.0%} of this query's top-{len(terms)} weight"
    )
    if shares is not None and view["model"] in shares.index:
        row = shares.loc[view["model"]]
        sides = [f"{row[side]:.0%} of {side}'" for side in ("queries", "documents") if np.isfinite(row[side])]
        line += f", {' and '.join(sides)} top-{int(row['k'])} weight over the split" if sides else ""
    return line


def lexical_terms(terms: pd.DataFrame) -> pd.DataFrame:
    """A term table without its symbol tokens (a lexical-only view; the weights are unchanged)."""
    return terms[~terms["term"].map(is_symbol_term).to_numpy(dtype=bool)]
