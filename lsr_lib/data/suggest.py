"""Stage 05 data: text queries, image documents (image + caption) and qrels, from any source.

Two sources load into one :class:`SuggestionSet`:

- **Emoji suggestion** (embedded default), built from the stage-01 collection. Each emoji's first
  caption (its CLDR short name) is the document's caption; its *other* captions (aliases, Unicode
  character name, ZWJ component names) are the queries. So a query is never its document's own
  caption text: ``laptop`` (CLDR) is the document, ``personal computer`` (Unicode name) a query.
  Relevance is binary: a query is relevant to its own emoji only (skin-tone siblings are not).
  Queries and documents keep their emoji's split, so no variant group straddles train and test.
- **TREC AToMiC** (paper profile; arXiv 2304.01961 for the collection): ``AToMiC-Texts`` parquet
  (one row per Wikipedia section: ``text_id``, ``page_title``, ``section_title``,
  ``context_section_description``...), ``AToMiC-Images`` parquet (``image_id``, ``image`` as
  bytes, ``caption_reference_description``, ``caption_alt_text_description``,
  ``caption_attribution_description``...) and qrels ``text_id Q0 image_id relevance`` (TREC text
  or parquet with those columns), one file per split.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .collection import ImageCaptionSet

QUERY_COLUMNS = ["query_id", "split", "text"]
DOC_COLUMNS = ["doc_id", "split", "caption", "path"]  # path: an image file; AToMiC documents carry image bytes instead
QREL_COLUMNS = ["query_id", "doc_id", "relevance"]
ATOMIC_CAPTION_FIELDS = (
    "caption_reference_description",
    "caption_alt_text_description",
    "caption_attribution_description",
)


class SuggestionDataError(ValueError):
    """The suggestion data breaks an invariant (missing column, dangling qrel, empty text)."""


@dataclass(frozen=True)
class SuggestionSet:
    """Queries, documents and qrels; ids are strings."""

    name: str
    queries: pd.DataFrame  # QUERY_COLUMNS
    docs: pd.DataFrame  # DOC_COLUMNS (+ optional image_bytes)
    qrels: pd.DataFrame  # QREL_COLUMNS, relevance > 0 only

    def __post_init__(self) -> None:
        for cols, df, what in (
            (QUERY_COLUMNS, self.queries, "queries"),
            (DOC_COLUMNS, self.docs, "documents"),
            (QREL_COLUMNS, self.qrels, "qrels"),
        ):
            missing = [c for c in cols if c not in df.columns]
            if missing:
                raise SuggestionDataError(f"{self.name}: {what} table lacks column(s) {missing}")
        for df, col, what in ((self.queries, "query_id", "query"), (self.docs, "doc_id", "document")):
            dup = df[col][df[col].duplicated()]
            if len(dup):
                raise SuggestionDataError(f"{self.name}: duplicate {what} id {dup.iloc[0]!r}; ids must be unique")
        empty = self.queries["text"].fillna("").astype(str).str.strip() == ""
        if empty.any():
            raise SuggestionDataError(
                f"{self.name}: query {self.queries.loc[empty, 'query_id'].iloc[0]!r} has no text; drop it or give it "
                "text"
            )
        for col, known, what in (
            ("query_id", self.queries["query_id"], "query"),
            ("doc_id", self.docs["doc_id"], "document"),
        ):
            dangling = ~self.qrels[col].isin(set(known))
            if dangling.any():
                raise SuggestionDataError(
                    f"{self.name}: qrel names {what} {self.qrels.loc[dangling, col].iloc[0]!r}, which is not in the "
                    f"{what} table; the qrels and the collection files do not match"
                )

    def split(self, name: str) -> "SuggestionSet":
        """Queries of one split, documents of that split, and their qrels."""
        q = self.queries[self.queries["split"] == name].reset_index(drop=True)
        d = self.docs[self.docs["split"] == name].reset_index(drop=True)
        r = self.qrels[
            self.qrels["query_id"].isin(set(q["query_id"])) & self.qrels["doc_id"].isin(set(d["doc_id"]))
        ].reset_index(drop=True)
        return SuggestionSet(f"{self.name}[{name}]", q, d, r)

    def counts(self) -> dict:
        return {
            s: {
                "queries": int((self.queries["split"] == s).sum()),
                "documents": int((self.docs["split"] == s).sum()),
                "qrels": int(
                    self.qrels["query_id"].isin(set(self.queries.loc[self.queries["split"] == s, "query_id"])).sum()
                ),
            }
            for s in sorted(self.queries["split"].unique())
        }

    def positive_doc_rows(self) -> np.ndarray:
        """For each query row, the row of one relevant document (the first), for training pairs."""
        row_of = pd.Series(np.arange(len(self.docs)), index=self.docs["doc_id"].to_numpy())
        first = self.qrels.drop_duplicates("query_id").set_index("query_id")["doc_id"]
        missing = ~self.queries["query_id"].isin(first.index)
        if missing.any():
            raise SuggestionDataError(
                f"{self.name}: query {self.queries.loc[missing, 'query_id'].iloc[0]!r} has no relevant document in "
                "this split"
            )
        # writable: torch.as_tensor warns on read-only arrays
        return row_of.loc[first.loc[self.queries["query_id"]].to_numpy()].to_numpy().copy()


def emoji_suggestion_set(col: ImageCaptionSet) -> SuggestionSet:
    """Emoji suggestion from the stage-01 collection (see the module docstring)."""
    cap = col.captions.copy()
    cap["k"] = cap["text_id"].str.rsplit("#", n=1).str[1].astype(int)
    first = cap.sort_values("k").drop_duplicates("image_id").set_index("image_id")["text"]
    docs = col.images[["image_id", "split", "path"]].rename(columns={"image_id": "doc_id"})
    docs["caption"] = first.reindex(docs["doc_id"]).to_numpy()
    docs = docs[DOC_COLUMNS].reset_index(drop=True)
    queries = cap[cap["k"] > 0].rename(columns={"text_id": "query_id"})
    if col.image_gallery is not None:
        return _multi_style_suggestion(docs, queries)
    qrels = pd.DataFrame(
        {"query_id": queries["query_id"].to_numpy(), "doc_id": queries["image_id"].to_numpy(), "relevance": 1}
    )
    return SuggestionSet("emoji-suggestion", queries[QUERY_COLUMNS].reset_index(drop=True), docs, qrels)


def _multi_style_suggestion(docs: pd.DataFrame, queries: pd.DataFrame) -> SuggestionSet:
    """Several art styles: a query is one caption of one emoji (``<emoji key>#<k>``), relevant to the emoji in
    every style of its split; the held-out style's images (split ``heldout``) are left out."""
    docs = docs[docs["split"] != "heldout"].reset_index(drop=True)
    queries = queries[queries["split"] != "heldout"].copy()
    queries["key"] = queries["image_id"].str.split("/", n=1).str[1]
    queries["query_id"] = queries["key"] + "#" + queries["k"].astype(str)
    queries = queries.drop_duplicates("query_id").reset_index(drop=True)
    key = docs["doc_id"].str.split("/", n=1).str[1]
    qrels = queries[["query_id", "key"]].merge(pd.DataFrame({"key": key, "doc_id": docs["doc_id"]}), on="key")
    qrels = qrels[["query_id", "doc_id"]].assign(relevance=1)
    return SuggestionSet("emoji-suggestion", queries[QUERY_COLUMNS].reset_index(drop=True), docs, qrels)


def _read_parquet(path: str | Path, what: str) -> pd.DataFrame:
    p = Path(path)
    files = sorted(p.glob("*.parquet")) if p.is_dir() else [p]
    if not files or not all(f.exists() for f in files):
        raise FileNotFoundError(
            f"AToMiC {what}: {p} has no parquet file; download it (huggingface-cli download --repo-type dataset "
            f"TREC-AToMiC/AToMiC-{what.capitalize()}-v0.2) and set suggest.atomic_{what}"
        )
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def read_qrels(path: str | Path) -> pd.DataFrame:
    """TREC qrels (``text_id Q0 image_id relevance``, whitespace separated) or parquet with those columns."""
    p = Path(path)
    if p.suffix == ".parquet":
        df = pd.read_parquet(p)
        rename = {c: "relevance" for c in df.columns if c in ("rel", "relevance", "label")}
        df = df.rename(columns=rename)
    else:
        df = pd.read_csv(p, sep=r"\s+", header=None, names=["text_id", "Q0", "image_id", "relevance"], dtype=str)
    need = ["text_id", "image_id", "relevance"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise SuggestionDataError(
            f"qrels {p}: lacks column(s) {missing}; expected TREC format 'text_id Q0 image_id relevance'"
        )
    df = df.astype({"text_id": str, "image_id": str})
    df["relevance"] = pd.to_numeric(df["relevance"], errors="raise").astype(int)
    return df[df["relevance"] > 0].rename(columns={"text_id": "query_id", "image_id": "doc_id"})[QREL_COLUMNS]


def atomic_query_text(row: pd.Series) -> str:
    """A section as a query: page title, section title and the section's text."""
    parts = [row.get("page_title"), row.get("section_title"), row.get("context_section_description")]
    return " ".join(str(p) for p in parts if isinstance(p, str) and p.strip())


def atomic_caption(row: pd.Series) -> str:
    """An image's caption: the first non-empty of reference, alt-text and attribution captions."""
    for f in ATOMIC_CAPTION_FIELDS:
        v = row.get(f)
        if isinstance(v, str) and v.strip():
            return v.strip()
    return ""


# AToMiC images named in no qrels file: documents to retrieve from, never trained or evaluated on
COLLECTION_SPLIT = "collection"


def load_atomic(
    texts: str | Path, images: str | Path, qrels: dict[str, str | Path], all_images: bool = False
) -> SuggestionSet:
    """AToMiC in its published format; ``qrels`` maps split name -> qrels file.

    Only queries and images that appear in some qrels file are kept, unless ``all_images``: then
    every image of the files is a document, those named in no qrels file in split ``"collection"``
    (the AToMiC job, ``lsr_lib.run.atomic_job``, retrieves from all of them).
    """
    q = _read_parquet(texts, "texts")
    d = _read_parquet(images, "images")
    for df, col, what in ((q, "text_id", "texts"), (d, "image_id", "images")):
        if col not in df.columns:
            raise SuggestionDataError(
                f"AToMiC {what}: no column {col!r} (columns: {list(df.columns)[:8]}); is this the "
                f"AToMiC-{what.capitalize()} parquet?"
            )
    rels = []
    for split, path in qrels.items():
        r = read_qrels(path)
        r["split"] = split
        rels.append(r)
    rel = pd.concat(rels, ignore_index=True)
    split_of_q = rel.drop_duplicates("query_id").set_index("query_id")["split"]
    split_of_d = rel.drop_duplicates("doc_id").set_index("doc_id")["split"]
    q = q.astype({"text_id": str})
    q = q[q["text_id"].isin(split_of_q.index)]
    queries = pd.DataFrame(
        {
            "query_id": q["text_id"].to_numpy(),
            "split": split_of_q.loc[q["text_id"]].to_numpy(),
            "text": [atomic_query_text(r) for _, r in q.iterrows()],
        }
    )
    d = d.astype({"image_id": str})
    if not all_images:
        d = d[d["image_id"].isin(split_of_d.index)]
    img = d["image"] if "image" in d.columns else pd.Series([None] * len(d))
    docs = pd.DataFrame(
        {
            "doc_id": d["image_id"].to_numpy(),
            "split": split_of_d.reindex(d["image_id"]).fillna(COLLECTION_SPLIT).to_numpy(),
            "caption": [atomic_caption(r) for _, r in d.iterrows()],
            "path": "",
            "image_bytes": [x.get("bytes") if isinstance(x, dict) else x for x in img],
        }
    )
    missing_q = set(rel["query_id"]) - set(queries["query_id"])
    missing_d = set(rel["doc_id"]) - set(docs["doc_id"])
    if missing_q or missing_d:
        what = f"text {sorted(missing_q)[0]!r}" if missing_q else f"image {sorted(missing_d)[0]!r}"
        raise SuggestionDataError(
            f"AToMiC: the qrels name {what}, which is not in the texts/images files ({len(missing_q)} texts, "
            f"{len(missing_d)} images missing); download the matching collection version (v0.2)"
        )
    return SuggestionSet(
        "atomic", queries, docs, rel[QREL_COLUMNS].drop_duplicates(["query_id", "doc_id"]).reset_index(drop=True)
    )


def load_document_image(doc: pd.Series):
    """The RGB PIL image of one document row (a rendered emoji file or AToMiC image bytes)."""
    from PIL import Image

    from .emoji import on_white

    try:
        if isinstance(doc.get("image_bytes"), (bytes, bytearray)):
            img = Image.open(io.BytesIO(doc["image_bytes"]))
        else:
            img = Image.open(doc["path"])
        img.load()
    except Exception as e:
        raise ValueError(
            f"document {doc['doc_id']!r}: image missing or unreadable ({e}); re-run stage 01 (emoji) or re-download "
            "the AToMiC image shard"
        ) from e
    return on_white(img) if img.mode in ("RGBA", "LA", "P") else img.convert("RGB")
