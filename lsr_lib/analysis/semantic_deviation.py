"""Semantic deviation of sparse vectors: what their weight is spent on (DESIGN.md section 3).

The reference code has no such metric; these are this repository's definitions. Notation: a
vector's *terms* are its non-zero entries; its *top-k* are its k largest-weight terms (ties by
lower term id; all of them when it has fewer than k); shares over an empty set are NaN.

Text vector of caption c, with own ids O(c) = the caption's distinct WordPiece ids without
[CLS]/[SEP]/[PAD] (the exact mask of expansion control, :func:`caption_token_masks`):

- ``expansion_weight_share`` = sum of weights on terms not in O(c) / sum of all weights;
- ``expansion_topk_share`` = |top-k \\ O(c)| / |top-k|;
- ``unrelated_expansion_share`` = among E = top-k \\ O(c), the share of terms t with
  ``cos(emb(t), emb(c)) < threshold`` (default 0.2), emb = the frozen MiniLM sentence embedding
  (all-MiniLM-L6-v2, L2-normalised) of the term's string with any leading ``##`` removed and of
  the caption. Each distinct string is embedded once per :class:`CachedEmbedder`.

Image vector of image i, with paired captions C(i) (every caption of the collection pointing at
it). Vocabulary terms fall in exactly one category, first match wins: ``special`` ([CLS],
[unused0], ...), ``subword`` (``##`` fragments), ``punctuation`` (no alphanumeric character:
punctuation and symbols), ``stopword`` (in :data:`STOP_WORDS`), ``content`` (the rest).

- ``caption_precision_at_k`` = |top-k content terms ∩ T(i)| / |top-k content terms|, where the
  ranking keeps only the image vector's ``content`` terms and T(i) is the set of ``content``
  WordPiece ids of the captions in C(i) (stop-words, punctuation, fragments, special removed);
  NaN for an image without content terms or without a caption;
- ``weight_share_<category>`` = weight on that category / total weight (shares sum to 1);
  :func:`category_weight_shares` gives the same for any vectors (texts too).
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..sparse.expansion_control import caption_token_masks

CATEGORIES = ("special", "subword", "punctuation", "stopword", "content")
# Function words only (NLTK-like); sklearn's list also drops content words such as "fire" or "computer".
STOP_WORDS = frozenset(
    """
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing don down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just ll m me might more most must my myself no nor not now
o of off on once only or other our ours ourselves out over own re s same shall she should so some such t than that
the their theirs them themselves then there these they this those through to too under until up upon us ve very was
we were what when where which while who whom why will with would y you your yours yourself yourselves
""".split()
)
Embedder = Callable[[list[str]], np.ndarray]  # list of n strings -> (n, D) vectors


def term_categories(tokenizer) -> np.ndarray:
    """(V,) index into :data:`CATEGORIES` of every vocabulary term."""
    special = set(tokenizer.all_special_tokens)
    out = np.empty(len(tokenizer), dtype=np.int8)
    for i, tok in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if tok in special or (tok.startswith("[") and tok.endswith("]") and len(tok) > 2):
            out[i] = 0
        elif tok.startswith("##"):
            out[i] = 1
        elif not any(ch.isalnum() for ch in tok):
            out[i] = 2
        else:
            out[i] = 3 if tok.lower() in STOP_WORDS else 4
    return out


def _row(x, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(term ids, weights) of the non-zero entries of row ``i`` of a CSR matrix."""
    s, e = x.indptr[i], x.indptr[i + 1]
    ids, w = x.indices[s:e], x.data[s:e]
    keep = w != 0
    return ids[keep].astype(np.int64), w[keep].astype(np.float64)


def _topk(ids: np.ndarray, w: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest weights (ties: lower term id first)."""
    order = np.lexsort((ids, -w))[:k]
    return ids[order], w[order]


def top_terms(csr_row, tokenizer, k: int = 10) -> pd.DataFrame:
    """Top-``k`` terms of a one-row CSR matrix: term_id, term, weight."""
    ids, w = _topk(*_row(csr_row.tocsr(), 0), k)
    return pd.DataFrame({"term_id": ids, "term": tokenizer.convert_ids_to_tokens(ids.tolist()), "weight": w})


class CachedEmbedder:
    """Wraps an embedder; embeds each distinct string once and returns L2-normalised rows."""

    def __init__(self, embed: Embedder, batch_size: int = 256) -> None:
        self.embed, self.batch_size, self.cache = embed, batch_size, {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        new = list(dict.fromkeys(t for t in texts if t not in self.cache))
        for s in range(0, len(new), self.batch_size):
            chunk = new[s : s + self.batch_size]
            v = np.asarray(self.embed(chunk), dtype=np.float32)  # (b, D)
            v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
            self.cache.update(zip(chunk, v))
        return np.stack([self.cache[t] for t in texts]) if len(texts) else np.zeros((0, 0), np.float32)


def minilm_embedder(device: str = "cpu") -> Embedder:
    """The frozen all-MiniLM-L6-v2 text tower as an embedder (loaded once, on first use)."""
    tower = {}

    def embed(texts: list[str]) -> np.ndarray:
        if "t" not in tower:
            from ..dense.towers import TextTower

            tower["t"] = TextTower(device)
        return tower["t"](texts)["text"]

    return embed


def text_deviation(
    txt_csr, texts: Sequence[str], tokenizer, k: int = 10, embedder: Optional[Embedder] = None, threshold: float = 0.2
) -> pd.DataFrame:
    """Per text vector (N_txt, V): expansion weight / top-k shares and, with an embedder, the unrelated share."""
    x = txt_csr.tocsr()
    own = caption_token_masks(list(texts), tokenizer).numpy()  # (N_txt, L) ids, -1 padded
    emb = embedder if embedder is None or isinstance(embedder, CachedEmbedder) else CachedEmbedder(embedder)
    rows, expansions = [], []
    for i in range(x.shape[0]):
        ids, w = _row(x, i)
        is_exp = ~np.isin(ids, own[i][own[i] >= 0])
        top_ids, _ = _topk(ids, w, k)
        top_exp = top_ids[~np.isin(top_ids, own[i][own[i] >= 0])]
        expansions.append(top_exp)
        rows.append(
            {
                "n_terms": len(ids),
                "expansion_weight_share": w[is_exp].sum() / w.sum() if len(w) else np.nan,
                "expansion_topk_share": len(top_exp) / len(top_ids) if len(top_ids) else np.nan,
                "n_topk_expansion": len(top_exp),
            }
        )
    out = pd.DataFrame(rows)
    if emb is not None:
        out["n_unrelated"], out["unrelated_expansion_share"] = _unrelated(
            expansions, list(texts), tokenizer, emb, threshold
        )
    return out


def _unrelated(expansions: list[np.ndarray], texts: list[str], tokenizer, emb: CachedEmbedder, threshold: float):
    """Per text: count and share of expansion terms with cosine to the caption below ``threshold``."""

    def term(ids: np.ndarray) -> list[str]:
        return [t.removeprefix("##") for t in tokenizer.convert_ids_to_tokens(ids.tolist())]

    cap = emb(texts)  # (N_txt, D)
    emb([t for e in expansions for t in term(e)])  # one batched pass over all distinct terms
    n, share = np.zeros(len(texts), np.int64), np.full(len(texts), np.nan)
    for i, e in enumerate(expansions):
        if len(e):
            cos = emb(term(e)) @ cap[i]  # (|E|,)
            n[i] = int((cos < threshold).sum())
            share[i] = n[i] / len(e)
    return n, share


def image_caption_token_sets(
    collection, tokenizer, categories: Optional[np.ndarray] = None
) -> list[Optional[np.ndarray]]:
    """Per image row: sorted content WordPiece ids of all its paired captions (None: no caption)."""
    cat = term_categories(tokenizer) if categories is None else categories
    ids = caption_token_masks(collection.captions["text"].tolist(), tokenizer).numpy()  # (N_txt, L)
    by_image: dict = {}
    for image_id, row in zip(collection.captions["image_id"], ids):
        row = row[row >= 0]
        by_image.setdefault(image_id, []).append(row[cat[row] == CATEGORIES.index("content")])
    return [np.unique(np.concatenate(by_image[i])) if i in by_image else None for i in collection.images["image_id"]]


def category_weight_shares(x, tokenizer, categories: Optional[np.ndarray] = None) -> pd.DataFrame:
    """(N, 5) share of each row's weight per term category, ``weight_share_<category>`` (NaN: empty row)."""
    x = sp.csr_matrix(x)
    cat = term_categories(tokenizer) if categories is None else categories  # (V',)
    if x.shape[1] > len(cat):
        raise ValueError(f"vectors have {x.shape[1]} terms but the tokenizer only {len(cat)}: wrong tokenizer")
    onehot = sp.csr_matrix(
        (np.ones(x.shape[1]), (np.arange(x.shape[1]), cat[: x.shape[1]])), shape=(x.shape[1], len(CATEGORIES))
    )  # (V, 5)
    per_cat = np.asarray((x.astype(np.float64) @ onehot).todense())  # (N, 5)
    total = per_cat.sum(axis=1, keepdims=True)  # (N, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(total > 0, per_cat / total, np.nan)
    return pd.DataFrame(shares, columns=[f"weight_share_{c}" for c in CATEGORIES])


def image_deviation(img_csr, collection, tokenizer, k: int = 10) -> pd.DataFrame:
    """Per image vector (N_img, V): caption-term precision@k and weight share per term category."""
    x = sp.csr_matrix(img_csr)
    x.eliminate_zeros()
    cat = term_categories(tokenizer)  # (V,)
    if x.shape[1] > len(cat):
        raise ValueError(f"vectors have {x.shape[1]} terms but the tokenizer only {len(cat)}: wrong tokenizer")
    caption_ids = image_caption_token_sets(collection, tokenizer, cat)
    content = CATEGORIES.index("content")
    rows = []
    for i in range(x.shape[0]):
        ids, w = _row(x, i)
        top_ids, _ = _topk(ids[cat[ids] == content], w[cat[ids] == content], k)
        defined = len(top_ids) > 0 and caption_ids[i] is not None
        prec = np.isin(top_ids, caption_ids[i]).mean() if defined else np.nan
        rows.append({"n_terms": len(ids), "n_topk_content": len(top_ids), "caption_precision_at_k": prec})
    return pd.concat([pd.DataFrame(rows), category_weight_shares(x, tokenizer, cat)], axis=1)


def deviation_summary(per_vector: pd.DataFrame) -> pd.DataFrame:
    """Mean, median and number of defined (non-NaN) values of each column."""
    num = per_vector.select_dtypes("number")
    return pd.DataFrame({"mean": num.mean(), "median": num.median(), "n_defined": num.notna().sum()})


def example_table(
    vectors: Mapping[str, object],
    items: Sequence[int],
    tokenizer,
    k: int = 10,
    reference_ids: Optional[Sequence[np.ndarray]] = None,
    labels: tuple[str, str] = ("own", "expansion"),
    item_names: Optional[Sequence[str]] = None,
) -> pd.DataFrame:
    """Top-``k`` (term, weight, kind) of the given rows, one column group per condition, side by side.

    ``reference_ids[i]``: ids counted as ``labels[0]`` for row ``i`` (a caption's own ids, or an image's
    caption terms); others get ``labels[1]``. Rows: (item, rank).
    """
    frames = {}
    for cond, x in vectors.items():
        x = x.tocsr()
        parts = []
        for n, i in enumerate(items):
            t = top_terms(x[i], tokenizer, k).reindex(range(k))
            if reference_ids is not None:
                ref = set(np.asarray(reference_ids[i]).tolist())
                t["kind"] = [None if pd.isna(v) else labels[0] if int(v) in ref else labels[1] for v in t["term_id"]]
            else:
                t["kind"] = None
            t.index = pd.MultiIndex.from_product(
                [[item_names[n] if item_names is not None else i], range(1, k + 1)], names=["item", "rank"]
            )
            parts.append(t[["term", "weight", "kind"]])
        frames[cond] = pd.concat(parts)
    return pd.concat(frames, axis=1)


def own_token_ids(texts: Sequence[str], tokenizer) -> list[np.ndarray]:
    """Each caption's own WordPiece ids (the expansion-control mask) as arrays, for :func:`example_table`."""
    ids = caption_token_masks(list(texts), tokenizer).numpy()
    return [r[r >= 0] for r in ids]
