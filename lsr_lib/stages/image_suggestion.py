"""Stage 05 glue: cache frozen tower states, train M1-M4, export vectors, evaluate through an index.

Writes under ``cfg.cache_dir / "suggest"``: ``states_text/`` and ``states_image/`` (sharded,
resumable caches of MiniLM token states and EfficientNet-Lite0 patch states; in
``cfg.shared_cache_dir``, read by every training seed), and per
configuration ``<M>/best.safetensors``, ``best.json`` and ``vectors/<split>_{queries,docs}.npz``
(scipy CSR; a retrained model invalidates them).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..config.profiles import Config

# declared in the catalog, re-exported
from ..artifacts.catalog import (
    suggest_dir,
    suggest_patch_cache,
    suggest_run_artifact,
    suggest_text_checksum,
    suggest_vectors_artifact,
)
from ..storage.code_fingerprint import code_fingerprint
from ..storage.manifest import build_or_reuse
from ..storage.sparse_files import load_sparse, save_sparse
from ..storage.shard_cache import ShardedCache
from ..metrics.sparse_stats import sparse_summary

# the profile's suggestion set, re-exported for the notebook and the AToMiC job
from ..data.profile_sets import load_suggestion_set  # noqa: F401
from ..data.suggest import SuggestionSet, load_document_image
from ..sparse.suggest_encoders import describe
from ..train.suggest import encode, load_suggest_model, train_suggest

MEASURES = ("nDCG@10", "AP@10", "RR@10", "R@10", "R@100")  # ir_measures names: MAP@10 = AP@10, MRR@10 = RR@10


def cache_states(
    cfg: Config, data: SuggestionSet, device: torch.device | str = "cpu", progress: bool = True
) -> tuple[ShardedCache, ShardedCache]:
    """Fill (or reuse) the token-state cache of every query and caption and the patch-state cache of every image."""
    from ..dense.towers import ImageTower, TokenTower, patch_states

    from ..dense.ray_extract import extraction_engine

    engine = extraction_engine(cfg.extraction)  # None: in this process; Ray: actors build their own towers
    text_ids = [f"q:{i}" for i in data.queries["query_id"]] + [f"d:{i}" for i in data.docs["doc_id"]]
    texts = list(data.queries["text"]) + [str(c) for c in data.docs["caption"]]
    tok = TokenTower(device, cfg.suggest.max_text_tokens)
    shared = cfg.shared_cache_dir / "suggest"  # frozen towers: the same for every training seed
    tcache = ShardedCache(
        shared / "states_text",
        {**tok.fingerprint(), "texts": suggest_text_checksum(text_ids, texts), "n": len(text_ids)},
        cfg.extraction.shard_size,
    )
    text_of = dict(zip(text_ids, texts))
    tcache.fill(
        text_ids,
        lambda b: tok([text_of[i] for i in b]),
        cfg.extraction.text_batch_size,
        "token states",
        progress,
        engine,
        partial(_token_states_compute, cfg.suggest.max_text_tokens, text_of),
    )
    img = ImageTower(device, cfg.data.image_size, cfg.extraction.image_backend)
    icache = suggest_patch_cache(cfg, data.docs, img.fingerprint())  # the emoji set's: filled by stage 01 already
    row_of = {d: k for k, d in enumerate(data.docs["doc_id"])}
    icache.fill(
        list(data.docs["doc_id"]),
        lambda b: patch_states(img, [load_document_image(data.docs.iloc[row_of[i]]) for i in b]),
        cfg.extraction.image_batch_size,
        "patch states",
        progress,
        engine,
        partial(_patch_states_compute, cfg.data.image_size, data.docs, cfg.extraction.image_backend),
    )
    return tcache, icache


def _token_states_compute(max_tokens: int, text_of: dict):
    """In a Ray actor: MiniLM token states by text id."""
    from ..dense.towers import TokenTower

    tok = TokenTower("cuda" if torch.cuda.is_available() else "cpu", max_tokens)
    return lambda batch: tok([text_of[i] for i in batch])


def _patch_states_compute(image_size: int, docs: pd.DataFrame, backend: str = "torch"):
    """In a Ray actor: EfficientNet-Lite0 patch states by document id (image files or AToMiC image bytes)."""
    from ..dense.towers import ImageTower, patch_states

    img = ImageTower("cuda" if torch.cuda.is_available() else "cpu", image_size, backend)
    row_of = {d: k for k, d in enumerate(docs["doc_id"])}
    return lambda batch: patch_states(img, [load_document_image(docs.iloc[row_of[i]]) for i in batch])


def token_states(tcache: ShardedCache, ids: list[str]) -> dict:
    """Cached token states of some texts (``q:<query id>`` / ``d:<doc id>``) as the encoders' input tensors."""
    _, a = tcache.read(ids)
    return {
        "states": torch.from_numpy(a["states"]),
        "token_ids": torch.from_numpy(a["token_ids"]).long(),
        "mask": torch.from_numpy(a["mask"]),
    }


def split_tensors(data: SuggestionSet, tcache: ShardedCache, icache: ShardedCache, need_patches: bool = True) -> dict:
    """Tensors of one split: query / caption token states, image patches, positive document rows."""
    out = {
        "queries": token_states(tcache, [f"q:{i}" for i in data.queries["query_id"]]),
        "captions": token_states(tcache, [f"d:{i}" for i in data.docs["doc_id"]]),
        "patches": None,
    }
    if need_patches:
        out["patches"] = torch.from_numpy(icache.read(list(data.docs["doc_id"]))[1]["patches"])
    out["pos"] = data.positive_doc_rows()
    out["relevant"] = relevant_pairs(data)
    return out


def relevant_pairs(data: SuggestionSet) -> np.ndarray:
    """(n, 2) rows of (query row, document row) for every qrel of the split: with several art styles a query has a
    relevant document in each style, and validation must count all of them, not only the training positive."""
    q_row = pd.Series(np.arange(len(data.queries)), index=data.queries["query_id"].to_numpy())
    d_row = pd.Series(np.arange(len(data.docs)), index=data.docs["doc_id"].to_numpy())
    return np.stack([q_row.loc[data.qrels["query_id"]].to_numpy(), d_row.loc[data.qrels["doc_id"]].to_numpy()], 1)


class SuggestTowers(torch.nn.Module):
    """The two towers as trainable modules, for ``suggest.finetune_towers`` (GPU)."""

    def __init__(self, cfg: Config, device: torch.device | str = "cpu") -> None:
        super().__init__()
        from ..dense.towers import ImageTower, TokenTower

        self.device = torch.device(device)
        self._tok, self._img = (
            TokenTower(self.device, cfg.suggest.max_text_tokens),
            ImageTower(self.device, cfg.data.image_size),
        )
        self.text, self.image = self._tok.model, self._img.model  # registered: trained, saved, loaded
        self.to(self.device)

    def text_states(self, texts: list[str]) -> dict:
        return self._tok.encode(texts, pad_to_max=False)

    def patch_states(self, images: list) -> torch.Tensor:
        from ..dense.towers import patch_map

        return patch_map(self._img, images)


class LiveText:
    """Texts encoded by the (trainable) towers when a batch is taken, instead of cached states."""

    def __init__(self, texts: list[str], towers: SuggestTowers) -> None:
        self.texts, self.towers = list(texts), towers

    def __len__(self) -> int:
        return len(self.texts)

    def take_rows(self, rows) -> dict:
        return self.towers.text_states([self.texts[int(i)] for i in rows])


class LivePatches:
    """Document images run through the (trainable) image tower when a batch is taken."""

    def __init__(self, docs: pd.DataFrame, towers: SuggestTowers) -> None:
        self.docs, self.towers = docs.reset_index(drop=True), towers

    def __len__(self) -> int:
        return len(self.docs)

    def take_rows(self, rows) -> torch.Tensor:
        return self.towers.patch_states([load_document_image(self.docs.iloc[int(i)]) for i in rows])


def live_tensors(data: SuggestionSet, towers: SuggestTowers) -> dict:
    """The inputs of one split for fine-tuning: like :func:`split_tensors`, read live through ``towers``."""
    return {
        "queries": LiveText(data.queries["text"], towers),
        "captions": LiveText([str(c) for c in data.docs["caption"]], towers),
        "patches": LivePatches(data.docs, towers),
        "pos": data.positive_doc_rows(),
        "relevant": relevant_pairs(data),
    }


def train_configuration(
    cfg: Config,
    config: str,
    train: dict,
    val: dict,
    states_fp: dict,
    progress: bool = True,
    towers: SuggestTowers | None = None,
) -> dict:
    """Train (or reuse) one configuration's encoders; returns the run record (history, best epoch).

    With ``suggest.finetune_towers`` pass ``towers`` and :func:`live_tensors` inputs: the towers
    then train with the heads (meant for a GPU; on CPU only for tests on a few items).
    """
    device = towers.device if towers is not None else "cpu"
    fingerprint = {**states_fp, **code_fingerprint(__name__, "lsr_lib.train.suggest")}  # the inputs are prepared here
    return train_suggest(
        config, cfg.suggest, train, val, suggest_dir(cfg) / config, fingerprint, progress, towers, device
    )


def fit_and_export(
    cfg: Config,
    config: str,
    data: SuggestionSet,
    tensors: dict | None,
    states_fp: dict,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> tuple[dict, sp.csr_matrix, sp.csr_matrix]:
    """Train (or reuse) one configuration and export its test vectors.

    Frozen towers (default): ``tensors`` are the cached states of :func:`split_tensors`. With
    ``suggest.finetune_towers`` each configuration fine-tunes its own copy of the towers on live
    inputs (``tensors`` is ignored) and exports with the tuned towers.
    """
    if not cfg.suggest.finetune_towers:
        run = train_configuration(cfg, config, tensors["train"], tensors["val"], states_fp, progress)
        return (run, *export_vectors(cfg, config, "test", tensors["test"]))
    from ..train.suggest import load_tuned_towers

    towers = SuggestTowers(cfg, device)
    live = {s: live_tensors(data.split(s), towers) for s in ("train", "val", "test")}
    run = train_configuration(cfg, config, live["train"], live["val"], states_fp, progress, towers)
    load_tuned_towers(suggest_dir(cfg) / config, towers)
    return (run, *export_vectors(cfg, config, "test", live["test"], towers.device))


def export_vectors(
    cfg: Config, config: str, split: str, tensors: dict, device: torch.device | str = "cpu"
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """CSR query and document vectors of a split (an artifact beside the model, keyed by the run's content id)."""
    art = suggest_vectors_artifact(cfg, config, split)
    run = suggest_run_artifact(cfg, config)

    def build(out: Path):
        model = load_suggest_model(suggest_dir(cfg) / config).to(device)
        q = sp.csr_matrix(encode(model, "query", tensors["queries"], None, cfg.suggest.eval_batch_size, device).numpy())
        d = sp.csr_matrix(
            encode(
                model, "doc", tensors["captions"], tensors["patches"], max(1, cfg.suggest.eval_batch_size // 8), device
            ).numpy()
        )
        q.eliminate_zeros()
        d.eliminate_zeros()
        save_sparse(out / "queries.npz", q)
        save_sparse(out / "docs.npz", d)
        return ["queries.npz", "docs.npz"], {}

    build_or_reuse(
        art,
        {
            "run": run.content_id(),
            "split": split,
            "n_queries": len(tensors["pos"]) if "pos" in tensors else None,
            **code_fingerprint(__name__),
        },
        build,
    )
    art.verify()
    return load_sparse(art.root / "queries.npz"), load_sparse(art.root / "docs.npz")


def suggestion_index(cfg: Config, kind: str | None = None):
    """An empty index of ``suggest.index`` (or ``kind``); Milvus gets ``suggest.index_uri`` when set."""
    from ..index.sparse import make_index

    kind = kind or cfg.suggest.index
    return make_index(kind, **({"uri": cfg.suggest.index_uri} if kind == "milvus" and cfg.suggest.index_uri else {}))


def evaluate_through_index(
    cfg: Config,
    data: SuggestionSet,
    q: sp.csr_matrix,
    d: sp.csr_matrix,
    kind: str | None = None,
    depth: int = 100,
    index=None,
) -> dict:
    """Retrieve every query's top ``depth`` through a stage-04 index (``suggest.index`` unless ``kind``, or a built
    ``index``); ir_measures on the run."""
    import ir_measures

    if index is None:
        index = suggestion_index(cfg, kind).build(d)
    kind = index.kind
    scores, rows = index.search(q, depth)
    doc_ids = data.docs["doc_id"].to_numpy()
    run = [
        ir_measures.ScoredDoc(qid, doc_ids[r], float(s))
        for qid, rr, ss in zip(data.queries["query_id"], rows, scores)
        for r, s in zip(rr, ss)
        if r >= 0
    ]
    qrels = [ir_measures.Qrel(r.query_id, r.doc_id, int(r.relevance)) for r in data.qrels.itertuples()]
    agg = ir_measures.calc_aggregate([ir_measures.parse_measure(m) for m in MEASURES], qrels, run)
    out = {m: float(agg[ir_measures.parse_measure(m)]) for m in MEASURES}
    out.update({"index": kind, "depth": depth})
    if d.shape[0]:  # a streamed index (the AToMiC job) passes no document matrix
        stats = sparse_summary(q, d)
        out.update(
            {
                "FLOPs": stats["flops"],
                "nnz query": stats["avg_nonzeros_query"],
                "nnz doc": stats["avg_nonzeros_document"],
                "max df share (queries)": stats["max_df_share_query"],
            }
        )
    return out


def results_table(results: dict) -> pd.DataFrame:
    """Configurations x (query / document encoders, metrics in percent, FLOPs, vector lengths)."""
    rows = {}
    for config, r in results.items():
        qk, dk, di = describe(config)
        rows[config] = {
            "query": qk,
            "document": f"{dk} ({di})",
            **{("MAP@10" if m == "AP@10" else "MRR@10" if m == "RR@10" else m): 100 * r[m] for m in MEASURES},
            "FLOPs": r["FLOPs"],
            "nnz query": r["nnz query"],
            "nnz doc": r["nnz doc"],
        }
    return pd.DataFrame(rows).T


def example_vectors(data: SuggestionSet, q: sp.csr_matrix, d: sp.csr_matrix, query_rows, k: int = 8) -> pd.DataFrame:
    """Top terms of a few queries and of their relevant documents."""
    from ..sparse.expansion_control import bert_uncased_tokenizer
    from ..analysis.semantic_deviation import top_terms

    tok = bert_uncased_tokenizer("minilm")
    pos = data.positive_doc_rows()
    fmt = lambda row: ", ".join(
        f"{t} {w:.2f}" for t, w in zip(*top_terms(row, tok, k)[["term", "weight"]].to_numpy().T)
    )
    rows = []
    for i in query_rows:
        doc = data.docs.iloc[pos[i]]
        rows.append(
            {
                "query": data.queries["text"].iloc[i],
                "query vector": fmt(q[i]),
                "document caption": doc["caption"],
                "document vector": fmt(d[pos[i]]),
            }
        )
    return pd.DataFrame(rows)


def findings(results: dict) -> list[dict]:
    """The paper's three findings, checked on these results (metric values as fractions).

    1. caption-enriched documents beat image-only: best of M2 / M3 against M1 (nDCG@10);
    2. image + caption adds little over caption only: M4 against M3 (nDCG@10);
    3. MLP queries are sparser and less co-activated than MLM queries: M2-M4 against M1 (query
       non-zeros, and the largest share of queries any one term is active in).
    """
    out = []
    have = lambda *cs: all(c in results for c in cs)  # noqa: E731
    if have("M1", "M2", "M3"):
        cap = max(("M2", "M3"), key=lambda c: results[c]["nDCG@10"])
        a, b = results[cap]["nDCG@10"], results["M1"]["nDCG@10"]
        out.append(
            {
                "finding": "caption-enriched documents beat image-only",
                "holds": a > b,
                "evidence": f"nDCG@10 {cap} {100 * a:.1f} vs M1 {100 * b:.1f}",
            }
        )
    if have("M3", "M4"):
        a, b = results["M4"]["nDCG@10"], results["M3"]["nDCG@10"]
        out.append(
            {
                "finding": "image + caption adds little over caption only (within 2 points nDCG@10)",
                "holds": abs(a - b) < 0.02,
                "evidence": f"nDCG@10 M4 {100 * a:.1f} vs M3 {100 * b:.1f} ({100 * (a - b):+.1f})",
            }
        )
    if have("M1") and any(c in results for c in ("M2", "M3", "M4")):
        mlp = [c for c in ("M2", "M3", "M4") if c in results]
        nnz = max(results[c]["nnz query"] for c in mlp)
        df = max(results[c]["max df share (queries)"] for c in mlp)
        out.append(
            {
                "finding": "MLP query vectors are sparser and less co-activated than MLM query vectors",
                "holds": nnz < results["M1"]["nnz query"] and df < results["M1"]["max df share (queries)"],
                "evidence": f"non-zeros per query: MLP at most {nnz:.1f} vs MLM {results['M1']['nnz query']:.1f}; "
                f"largest share of queries one term is active in: MLP at most {df:.2f} vs MLM "
                f"{results['M1']['max df share (queries)']:.2f}",
            }
        )
    return out


def stage_results(data: SuggestionSet, results: dict, checks: list[dict], runs: dict, examples: pd.DataFrame) -> dict:
    """The content of ``results/<profile>/05_suggestion.json``: counts, test metrics per configuration, findings,
    training history, examples."""
    return {
        "counts": data.counts(),
        "results": results,
        "findings": checks,
        "history": {c: r["history"] for c, r in runs.items()},
        "best_epoch": {c: r["best"]["epoch"] for c, r in runs.items()},
        "examples": examples.reset_index().to_dict(orient="records"),
    }
