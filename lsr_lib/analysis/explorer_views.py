"""Interactive explorer, data side: what a sparse vector says and why an image came back (issue 8).

Plain functions that return data frames; the static figures (``lsr_lib.stages.explore_figures``, used
under papermill / nbval) and the ipywidgets layer (``lsr_lib.stages.explore_widgets``, in JupyterLab)
only draw them.

- :func:`query_view`: a text's sparse vector, its top terms marked ``own`` (one of the text's own
  WordPiece ids: the expansion-control mask of DESIGN.md section 2) or ``expansion``; the top-k
  images retrieved through an exact inverted index (stage 04's numba backend); and for each image
  the terms behind its score. The score is ``sum_v q_v d_v`` over the terms both vectors share,
  so the contributions ``q_v d_v`` of one image add up to its score.
- :func:`image_view`: an image's top terms (``caption`` when the term is a token of one of its
  captions, else ``other``) and the captions its vector retrieves.
- :func:`compare_models`: the same query through several models, side by side.

The models themselves are loaded from the stage outputs by ``lsr_lib.stages.explore_sparse_vectors``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .semantic_deviation import _row, own_token_ids, top_terms
from ..index.sparse import RetrievalIndex, as_csr, fingerprint, load_index, make_index, read_meta


@dataclass
class ExplorerModel:
    """One retrieval model as the explorer sees it; every vector is a CSR row over one vocabulary."""

    name: str
    encode_queries: Callable[[list[str]], sp.csr_matrix]  # n texts -> (n, V)
    image_vectors: sp.csr_matrix  # (N_img, V)
    image_ids: np.ndarray  # (N_img,)
    image_paths: list[str]  # (N_img,)
    caption_vectors: Optional[sp.csr_matrix] = None  # (N_txt, V); None: no image -> caption retrieval
    captions: Optional[list[str]] = None  # (N_txt,)
    caption_image_ids: Optional[np.ndarray] = None  # (N_txt,) the image each caption describes
    index: Optional[RetrievalIndex] = None  # over image_vectors; an exact numba index is built when None
    caption_index: Optional[RetrievalIndex] = None  # over caption_vectors, likewise
    tokenizer: object = None  # BERT-uncased WordPiece when None
    description: str = ""

    def __post_init__(self) -> None:
        self.image_vectors = as_csr(self.image_vectors)
        self.image_ids = np.asarray(self.image_ids)
        n = self.image_vectors.shape[0]
        if len(self.image_ids) != n or len(self.image_paths) != n:
            raise ValueError(
                f"{self.name}: {n} image vectors, {len(self.image_ids)} ids, {len(self.image_paths)} paths"
            )
        if self.caption_vectors is not None:
            self.caption_vectors = as_csr(self.caption_vectors)
            m = self.caption_vectors.shape[0]
            if (
                self.captions is None
                or len(self.captions) != m
                or (self.caption_image_ids is not None and len(self.caption_image_ids) != m)
            ):
                raise ValueError(f"{self.name}: {m} caption vectors need as many captions (and caption_image_ids)")


@lru_cache(maxsize=1)
def default_tokenizer():
    """The BERT-uncased WordPiece tokenizer of the installed MiniLM (30,522 terms)."""
    from ..sparse.expansion_control import bert_uncased_tokenizer

    return bert_uncased_tokenizer("minilm")


def tokenizer_of(model: ExplorerModel):
    """The model's tokenizer, or the default BERT-uncased one."""
    return model.tokenizer if model.tokenizer is not None else default_tokenizer()


def image_index(model: ExplorerModel) -> RetrievalIndex:
    """The model's index over its images (an exact numba index, built on first use when absent)."""
    if model.index is None:
        model.index = make_index("numba").build(model.image_vectors)
    return model.index


def caption_index(model: ExplorerModel) -> RetrievalIndex:
    """The model's index over its captions (built on first use when absent)."""
    if model.caption_vectors is None:
        raise ValueError(f"{model.name} has no caption vectors: it cannot retrieve captions")
    if model.caption_index is None:
        model.caption_index = make_index("numba").build(model.caption_vectors)
    return model.caption_index


def search_one(index: RetrievalIndex, q: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (rows, scores) for one (1, V) query; documents sharing no term are left out."""
    scores, rows = index.search(as_csr(q), k)  # (1, k), (1, k); row -1 where fewer than k candidates
    return rows[0][rows[0] >= 0], scores[0][rows[0] >= 0]


def term_table(
    row: sp.csr_matrix,
    tokenizer,
    k: int,
    reference_ids: Optional[Sequence[int]] = None,
    labels: tuple[str, str] = ("own", "expansion"),
) -> pd.DataFrame:
    """Top-``k`` terms of a (1, V) vector: term_id, term, weight, share of the total weight, kind."""
    t, total = top_terms(row, tokenizer, k), float(row.sum())
    t["share"] = t["weight"] / total if total > 0 else np.nan
    ref = None if reference_ids is None else {int(i) for i in reference_ids}
    t["kind"] = [None if ref is None else labels[0] if int(i) in ref else labels[1] for i in t["term_id"]]
    return t


def contributions(q: sp.csr_matrix, d: sp.csr_matrix, tokenizer) -> pd.DataFrame:
    """Every shared term of two (1, V) vectors with ``q_v * d_v``, largest first; the column sums to q . d."""
    (qi, qw), (di, dw) = _row(as_csr(q), 0), _row(as_csr(d), 0)
    ids, a, b = np.intersect1d(qi, di, assume_unique=True, return_indices=True)
    c = qw[a] * dw[b]
    order = np.lexsort((ids, -c))  # largest contribution first, ties by term id
    return pd.DataFrame(
        {
            "term_id": ids[order],
            "term": tokenizer.convert_ids_to_tokens(ids[order].tolist()),
            "query_weight": qw[a][order],
            "doc_weight": dw[b][order],
            "contribution": c[order],
        }
    )


def _top_contrib(frame: pd.DataFrame, n: int) -> str:
    return ", ".join(f"{t} {c:.2f}" for t, c in zip(frame["term"][:n], frame["contribution"][:n]))


def query_view(model: ExplorerModel, text: str, k: int = 8, n_terms: int = 15, n_contrib: int = 4) -> dict:
    """A text's sparse vector, its top-``k`` images through the index, and the terms behind each score."""
    tok = tokenizer_of(model)
    q = as_csr(model.encode_queries([text]))  # (1, V)
    own = own_token_ids([text], tok)[0]
    terms = term_table(q, tok, n_terms, own)
    rows, scores = search_one(image_index(model), q, k)
    contrib = [contributions(q, model.image_vectors[r], tok) for r in rows]
    gold = set()
    if model.captions is not None and model.caption_image_ids is not None:
        gold = {i for c, i in zip(model.captions, model.caption_image_ids) if c.strip().lower() == text.strip().lower()}
    images = pd.DataFrame(
        {
            "rank": np.arange(1, len(rows) + 1),
            "row": rows,
            "image_id": model.image_ids[rows],
            "path": [model.image_paths[r] for r in rows],
            "score": scores,
            "relevant": [model.image_ids[r] in gold for r in rows],
            "top_terms": [_top_contrib(c, n_contrib) for c in contrib],
        }
    )
    q_ids, q_w = _row(q, 0)
    own_mask = np.isin(q_ids, own)
    summary = {
        "model": model.name,
        "text": text,
        "nnz": int(q.nnz),
        "own_terms_active": int(own_mask.sum()),
        "expansion_terms": int((~own_mask).sum()),
        "expansion_weight_share": float(q_w[~own_mask].sum() / q_w.sum()) if q_w.sum() > 0 else float("nan"),
    }
    return {
        "model": model.name,
        "text": text,
        "vector": q,
        "terms": terms,
        "images": images,
        "contributions": contrib,
        "summary": summary,
    }


def image_view(model: ExplorerModel, image_row: int, k: int = 8, n_terms: int = 15, n_contrib: int = 4) -> dict:
    """An image's top terms (``caption`` / ``other``) and the top-``k`` captions its vector retrieves."""
    tok = tokenizer_of(model)
    d = model.image_vectors[image_row]  # (1, V)
    image_id = model.image_ids[image_row]
    own_caps: list[str] = []
    if model.captions is not None and model.caption_image_ids is not None:
        own_caps = [c for c, i in zip(model.captions, model.caption_image_ids) if i == image_id]
    ref = np.unique(np.concatenate(own_token_ids(own_caps, tok))) if own_caps else None
    terms = term_table(d, tok, n_terms, ref, labels=("caption", "other"))
    captions = None
    if model.caption_vectors is not None:
        rows, scores = search_one(caption_index(model), d, k)
        contrib = [contributions(d, model.caption_vectors[r], tok) for r in rows]
        captions = pd.DataFrame(
            {
                "rank": np.arange(1, len(rows) + 1),
                "row": rows,
                "caption": [model.captions[r] for r in rows],
                "score": scores,
                "relevant": [
                    model.caption_image_ids is not None and model.caption_image_ids[r] == image_id for r in rows
                ],
                "top_terms": [_top_contrib(c, n_contrib) for c in contrib],
            }
        )
    summary = {"model": model.name, "image_id": image_id, "nnz": int(d.nnz), "captions": len(own_caps)}
    return {
        "model": model.name,
        "row": int(image_row),
        "image_id": image_id,
        "path": model.image_paths[image_row],
        "terms": terms,
        "captions": captions,
        "own_captions": own_caps,
        "summary": summary,
    }


def compare_models(models: Sequence[ExplorerModel], text: str, k: int = 8, n_terms: int = 10) -> pd.DataFrame:
    """One query through several models: per model its top terms (kind, weight) and top-k images (score), by rank."""
    parts = {}
    for m in models:
        v = query_view(m, text, k, n_terms)
        t = v["terms"].set_index(pd.RangeIndex(1, len(v["terms"]) + 1))[["term", "kind", "weight"]]
        i = v["images"].set_index("rank")[["image_id", "score"]]
        parts[m.name] = t.join(i, how="outer").reindex(range(1, max(k, n_terms) + 1))
    return pd.concat(parts, axis=1).rename_axis("rank")


def image_choices(model: ExplorerModel, max_caption: int = 40) -> list[tuple[str, int]]:
    """(label, row) for an image picker: the image id and its first caption."""
    first: dict = {}
    for c, i in zip(model.captions or [], model.caption_image_ids if model.caption_image_ids is not None else []):
        first.setdefault(i, c)
    return [(f"{i} · {first[i][:max_caption]}" if i in first else str(i), r) for r, i in enumerate(model.image_ids)]


# ---- models read from the stages' files -----------------------------------------------------------


def saved_or_built_index(path, docs: sp.csr_matrix) -> RetrievalIndex:
    """Stage 04's saved numba index at ``path`` when it indexes exactly ``docs``; else one built in memory."""
    meta = read_meta(path)
    if meta is not None and meta.get("kind") == "numba" and meta.get("fingerprint") == fingerprint(docs):
        try:
            return load_index(path)
        except Exception as err:  # a damaged directory: build in memory, leave stage 04's files alone
            warnings.warn(f"could not load {path} ({err!r}); building the index in memory", stacklevel=2)
    return make_index("numba").build(docs)
