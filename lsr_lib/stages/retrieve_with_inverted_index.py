"""Stage 04 glue: retrieval through inverted indexes, checks against brute force, benchmarks.

Directions (DESIGN.md section 3): ``text_to_image`` indexes the image vectors and queries with
captions; ``image_to_text`` indexes the captions and queries with images. Indexes persist under
``data/cache/<profile>/indexes/<condition>/<direction>/<kind>`` and are rebuilt when the vectors
they were built from change (``lsr_lib.index.sparse.load_or_build`` compares fingerprints).

Metrics from an index's top-k lists: the rank of the first relevant item in the list (a miss
beyond k). Engines break ties by row order, not pessimistically as ``lsr_lib.metrics.retrieval`` does,
so exact-engine numbers can exceed the brute-force numbers of stage 02 by the tied cases only;
``same_topk_up_to_ties`` checks that the lists agree except for permutations among ties.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..data.collection import ImageCaptionSet
from ..artifacts.catalog import index_dir
from ..config.profiles import REPO_ROOT, Config
from ..metrics.retrieval import metrics_from_ranks
from ..index.sparse import INDEX_KINDS, index_class, load_or_build, make_index

DIRECTIONS = ("text_to_image", "image_to_text")


# approximate engines measured over a sweep of settings (:func:`search_sweep`)
SWEPT = ("seismic", "faiss_hnsw", "bmp", "kannolo")


# index settings that only the scale benchmark reads: changing them does not measure the test-split parts again
SCALE_ONLY = ("scale_collections", "scale_sizes", "scale_backends", "scale_pruning", "independent_terms_max_docs")


def measured(cfg: Config, inputs: dict, name: str, measure):
    """``measure()`` once per stage-04 input record (code, environment, config, vectors), kept beside the results
    in ``results/<profile>/04_measured/<name>.json`` (committed for the default profile): `make bench` reruns the
    stage for its scale benchmark and reads the test-split parts back instead of measuring them again, on a fresh
    clone too (:mod:`lsr_lib.storage.measured_parts`). The record's config leaves out :data:`SCALE_ONLY`, so a new
    benchmark size or engine list reuses them too."""
    from ..config.typed import to_dict
    from ..storage.measured_parts import measured_once

    index = {k: v for k, v in to_dict(cfg.index).items() if k not in SCALE_ONLY}
    config = config_digest(cfg, index)
    return measured_once(cfg.results_dir / "04_measured", name, {**inputs, "config": config}, measure)


def config_digest(cfg: Config, index: dict) -> str:
    """The digest of the config a stage-04 part depends on: ``evaluation``, ``d2s`` and the given ``index``
    settings (a subset, so that a setting the part does not read does not make it stale)."""
    from ..config.typed import to_dict
    from ..storage.manifest import digest

    return digest({"evaluation": to_dict(cfg.evaluation), "d2s": to_dict(cfg.d2s), "index": index})


def direction_data(direction: str, col: ImageCaptionSet, images, texts, part: tuple | None = None) -> tuple:
    """(queries, docs, query keys, doc keys) for a direction; keys decide relevance.

    ``part``: (image rows, caption rows) of one gallery (:func:`gallery_parts`): that gallery's vectors and keys.
    """
    img_keys = col.images["image_id"].to_numpy().astype(str)
    txt_keys = col.captions["image_id"].to_numpy().astype(str)
    if part is not None:
        ir, tr = part
        img_keys, txt_keys = img_keys[ir], txt_keys[tr]
        images = None if images is None else images[ir]
        texts = None if texts is None else texts[tr]
    if direction == "text_to_image":
        return texts, images, txt_keys, img_keys
    if direction == "image_to_text":
        return images, texts, img_keys, txt_keys
    raise ValueError(f"unknown direction {direction!r}; known: {DIRECTIONS}")


def gallery_parts(col: ImageCaptionSet) -> list[tuple[str, tuple[np.ndarray, np.ndarray]]]:
    """[(gallery, (image rows, caption rows))]: each gallery (emoji: art style) is its own retrieval problem, with
    its own indexes (metrics.retrieval.evaluate_scores ranks the same way); one part "" without galleries."""
    g = col.image_gallery
    if g is None:
        return [("", (np.arange(len(col.images)), np.arange(len(col.captions))))]
    row_of = dict(zip(col.images["image_id"], range(len(g))))
    cap_g = g[[row_of[i] for i in col.captions["image_id"]]]
    return [(name, (np.flatnonzero(g == name), np.flatnonzero(cap_g == name))) for name in sorted(set(g))]


def gallery_ranks(rows: np.ndarray, query_keys, doc_keys, query_gallery, doc_gallery) -> np.ndarray:
    """:func:`ranks_from_topk` counting only the documents of the query's gallery (top-k lists over all
    galleries, filtered: a hit ranked below the list's end counts as a miss)."""
    k = rows.shape[1]
    ok = rows >= 0
    same = ok & (np.where(ok, doc_gallery[np.clip(rows, 0, None)], "") == query_gallery[:, None])
    hit = same & (np.where(ok, doc_keys[np.clip(rows, 0, None)], "") == query_keys[:, None])
    position = np.cumsum(same, axis=1)  # the rank among the query's gallery
    return np.where(hit.any(1), position[np.arange(len(rows)), hit.argmax(1)], k + 1)


def index_path(cfg: Config, condition: str, direction: str, kind: str, tag: str = "") -> Path:
    """Where one persisted index lives (declared in the catalog)."""
    return index_dir(cfg, condition, direction, kind, tag)


def build_or_load(cfg: Config, condition: str, direction: str, kind: str, docs, tag: str = "", **params):
    """A persisted index for (condition, direction, kind), rebuilt only when its vectors changed."""
    return load_or_build(kind, index_path(cfg, condition, direction, kind, tag), docs, **params)


def ranks_from_topk(rows: np.ndarray, query_keys: np.ndarray, doc_keys: np.ndarray) -> np.ndarray:
    """1-based rank of the first relevant document in each top-k list, ``k + 1`` when none is there."""
    k = rows.shape[1]
    keys = np.where(rows >= 0, doc_keys[np.clip(rows, 0, None)], "")  # (Q, k)
    hit = keys == query_keys[:, None]
    first = np.where(hit.any(1), hit.argmax(1) + 1, k + 1)
    return first


def topk_metrics(rows: np.ndarray, query_keys: np.ndarray, doc_keys: np.ndarray, cfg: Config) -> dict:
    """R@k and MRR@10 from top-k lists (k must be at least the largest cutoff, or every document)."""
    if rows.shape[1] < min(max(max(cfg.evaluation.ks), cfg.evaluation.mrr_depth), len(doc_keys)):
        raise ValueError(
            f"top-{rows.shape[1]} lists are too short for cutoffs {cfg.evaluation.ks} / MRR@{cfg.evaluation.mrr_depth}"
        )
    return metrics_from_ranks(ranks_from_topk(rows, query_keys, doc_keys), cfg.evaluation.ks, cfg.evaluation.mrr_depth)


def text_to_image_metrics(found: np.ndarray, col: ImageCaptionSet, cfg: Config) -> dict:
    """T->I R@k / MRR@10 from top-k lists over the whole test collection; with galleries, each query counts only
    its own gallery's images in the list (:func:`gallery_ranks`)."""
    _, _, qkeys, dkeys = direction_data("text_to_image", col, None, None)
    g = col.image_gallery
    if g is None:
        return topk_metrics(found, qkeys, dkeys, cfg)
    qg = g.astype(str)[[dict(zip(dkeys, range(len(dkeys))))[i] for i in qkeys]]
    ranks = gallery_ranks(found, qkeys, dkeys, qg, g.astype(str))
    return metrics_from_ranks(ranks, cfg.evaluation.ks, cfg.evaluation.mrr_depth)


def brute_force_topk(queries, docs, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference: exact sparse (or dense) product, top-k by score then row."""
    return make_index("scipy" if sp.issparse(docs) else "faiss_flat").build(docs).search(queries, k)


def dense_like(real: np.ndarray, n: int, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    """Synthetic dense vectors from a Gaussian fitted to real ones (mean and covariance), L2-normalised."""
    rng = np.random.default_rng(seed)
    mean, cov = real.mean(0), np.cov(real, rowvar=False)
    chol = np.linalg.cholesky(cov + 1e-6 * np.eye(cov.shape[0]))
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x = mean + rng.standard_normal((m, real.shape[1])) @ chol.T
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def evaluate_through_indexes(
    cfg: Config, col: ImageCaptionSet, vectors: dict, dense: tuple[np.ndarray, np.ndarray], progress: bool = True
) -> tuple[list[dict], list[dict]]:
    """Every condition x direction x backend: metrics from the index, and its check against brute force.

    ``vectors``: {condition: {"images", "texts"}} CSR; ``dense``: (image vectors, text vectors).
    Returns (metric rows, check rows).
    """
    from ..storage.progress import progress_bar as tqdm

    from ..index.topk import recall_at_k, topk_disagreements

    k, rows, checks = cfg.index.topk, [], []
    jobs = [
        (c, d, kind)
        for c in vectors
        for d in DIRECTIONS
        for kind in cfg.index.exact_backends + cfg.index.approx_backends
    ]
    jobs += [("dense teacher", d, kind) for d in DIRECTIONS for kind in cfg.index.dense_backends]
    refs: dict = {}
    parts = gallery_parts(col)
    for cond, direction, kind in tqdm(jobs, desc="retrieve through indexes", disable=not progress):
        img, txt = dense if cond == "dense teacher" else (vectors[cond]["images"], vectors[cond]["texts"])
        ranks, recalls, n_bad, n_q, exact = [], [], 0, [], True
        for gallery, part in parts:
            queries, docs, qk, dk = direction_data(direction, col, img, txt, part)
            if (cond, direction, gallery) not in refs:
                refs[cond, direction, gallery] = brute_force_topk(queries, docs, k)
            ref_scores, ref_rows = refs[cond, direction, gallery]
            index = build_or_load(cfg, cond.replace(" ", "_"), direction, kind, docs, gallery)
            scores, found = index.search(queries, k)
            topk_metrics(found, qk, dk, cfg)  # checks the lists are long enough
            ranks.append(ranks_from_topk(found, qk, dk))
            n_bad += len(topk_disagreements(scores, found, ref_scores, ref_rows, 10))
            recalls.append(recall_at_k(found[:, :10], ref_rows[:, :10], 10))
            n_q.append(queries.shape[0])
            exact = index.exact
        rows.append(
            {
                "condition": cond,
                "direction": direction,
                "backend": kind,
                "exact": exact,
                **metrics_from_ranks(np.concatenate(ranks), cfg.evaluation.ks, cfg.evaluation.mrr_depth),
            }
        )
        checks.append(
            {
                "condition": cond,
                "direction": direction,
                "backend": kind,
                "exact": exact,
                "recall@10_vs_exact": recalls[0] if len(recalls) == 1 else float(np.average(recalls, weights=n_q)),
                "queries_differing_from_brute_force_top10": int(n_bad),
                "n_queries": int(sum(n_q)),
            }
        )
    return rows, checks


def pruning_sweep(cfg: Config, col: ImageCaptionSet, vectors: dict, kind: str = "numba") -> list[dict]:
    """Text->image with each index-side measure of ``index.pruning`` (:mod:`lsr_lib.index.pruning`):
    effectiveness, recall@10 against the unpruned exact top-10, FLOPs, postings, index bytes and latency.
    """
    from ..index.latency import postings_per_query, query_latency
    from ..index.pruning import apply, parse
    from ..index.topk import recall_at_k
    from ..metrics.sparse_stats import sparse_summary

    out = []
    for cond, v in vectors.items():
        exact_rows = brute_force_topk(v["texts"], v["images"], 10)[1]
        for spec in cfg.index.pruning:
            docs, queries = apply(spec, v["images"], v["texts"])
            index = make_index(kind).build(docs)
            _, found = index.search(queries, cfg.index.topk)
            s = sparse_summary(queries, docs)
            out.append(
                {
                    "condition": cond,
                    "pruning": spec,
                    "FLOPs": s["flops"],
                    "nnz caption": s["avg_nonzeros_query"],
                    "nnz image": s["avg_nonzeros_document"],
                    **text_to_image_metrics(found, col, cfg),
                    "recall@10": recall_at_k(found[:, :10], exact_rows, 10),
                    "postings_per_query": postings_per_query(docs, queries),
                    "index_mb": docs.nnz * parse(spec).bytes_per_posting / 1e6,
                    **query_latency(index, queries, 10, cfg.index.latency_queries),
                }
            )
    return out


def efficiency_table(
    cfg: Config,
    col: ImageCaptionSet,
    vectors: dict,
    dense: tuple[np.ndarray, np.ndarray],
    docs_override: dict | None = None,
    size_label: str = "test split",
    progress: bool = True,
    dense_rows: bool = True,
    part=None,
) -> list[dict]:
    """Build time, size, memory, latency and QPS (1 and 2 threads) per backend, text->image.

    ``docs_override``: {condition: docs} to benchmark on other (e.g. synthetic) collections; there,
    ``index.scale_pruning`` adds the exact numba engine on pruned vectors (kind ``numba-pruned <spec>``,
    recall against the unpruned exact top-10). On the test split every row (every sweep setting)
    also gets ``T->I R@10`` over all test captions, for the effectiveness-latency figure. ``dense_rows`` False: the
    sparse conditions only. ``part(job, measure)``: how each (condition, engine) job is measured, e.g. once per
    input record (:func:`scale_benchmark`); default: measured now.
    """
    from ..storage.progress import progress_bar as tqdm

    from ..index.latency import benchmark_index, postings_per_query
    from ..index.pruning import apply
    from ..metrics.sparse_stats import sparse_summary

    k, nq = 10, cfg.index.qps_queries
    out, exact, judged = [], {}, {}
    conds = list(vectors) + (["dense teacher"] if dense_rows else [])
    backends = {
        c: (cfg.index.dense_backends if c == "dense teacher" else cfg.index.exact_backends + cfg.index.approx_backends)
        for c in conds
    }
    if docs_override is not None:
        backends = {
            c: [b for b in cfg.index.scale_backends if (b.startswith("faiss")) == (c == "dense teacher")] for c in conds
        }
        backends.update({c: backends[c] + [f"numba-pruned {p}" for p in cfg.index.scale_pruning] for c in vectors})
    jobs = [(c, b) for c in conds for b in backends[c]]

    def measure_job(cond: str, kind: str) -> list[dict]:
        if cond == "dense teacher":
            docs, all_queries = (docs_override or {}).get(cond, dense[0]), dense[1]
        else:
            docs, all_queries = (docs_override or {}).get(cond, vectors[cond]["images"]), vectors[cond]["texts"]
        queries, n_docs = all_queries[:nq], docs.shape[0]
        n_latency = cfg.index.latency_queries
        if kind == "milvus" and docs_override is not None and cfg.index.milvus_queries:
            queries, n_latency = queries[: cfg.index.milvus_queries], min(n_latency, cfg.index.milvus_queries)
        if n_docs > {
            "faiss_hnsw": cfg.index.hnsw_max_docs,
            "kannolo": cfg.index.kannolo_max_docs,
            "milvus": cfg.index.milvus_max_docs,
        }.get(kind, n_docs):
            # graph builds, and Milvus's client-server round trips: too slow on this machine above the configured size
            return []
        engine, spec = ("numba", kind.split(" ", 1)[1]) if kind.startswith("numba-pruned ") else (kind, "")
        # approximate engines and pruned vectors: recall against exact
        if cond not in exact and (spec or not index_class(engine).exact):
            exact[cond] = brute_force_topk(all_queries[:nq], docs, k)[1]
        exact_rows = exact[cond][: queries.shape[0]] if (spec or not index_class(engine).exact) else None
        judge = None
        if docs_override is None:
            depth = k if col.image_gallery is None else cfg.index.topk  # galleries: filtered from longer lists

            def judge(index, cond=cond, shared=not spec and index_class(engine).exact):
                # the exact engines return the exact top-k (checked against brute force in evaluate_through_indexes):
                # one R@10 per condition, not one pass of every test caption through every exact engine (through
                # milvus-lite that is minutes)
                if shared and cond in judged:
                    return judged[cond]
                got = {"T->I R@10": text_to_image_metrics(index.search(all_queries, depth)[1], col, cfg)["R@10"]}
                if shared:
                    judged[cond] = got
                return got

        base = {"condition": cond, "collection": size_label, "n_docs": int(n_docs)}
        if spec:
            docs, queries = apply(spec, docs, queries)
        if cond != "dense teacher":
            base["FLOPs"] = sparse_summary(queries, docs)["flops"]
            base["postings_per_query"] = postings_per_query(docs, queries, n_latency)
        if engine in SWEPT:
            return search_sweep(cfg, engine, docs, queries, exact_rows, base, judge=judge)
        return [
            {
                **base,
                **benchmark_index(engine, docs, queries, k, exact_rows, n_latency=n_latency, judge=judge),
                "kind": kind,
                "queries_timed": int(min(n_latency, queries.shape[0])),
            }
        ]

    measure_jobs = part or (lambda job, measure: measure())
    if hasattr(part, "kept") and progress:  # hours at 1M: say up front what a resumed run reads back
        kept = sum(part.kept((size_label, c, b)) for c, b in jobs)
        print(
            f"benchmark ({size_label}): {kept} of {len(jobs)} jobs measured already (read back), "
            f"{len(jobs) - kept} to measure"
        )
    last = {c: i for i, (c, _) in enumerate(jobs)}
    for i, (cond, kind) in enumerate(tqdm(jobs, desc=f"benchmark ({size_label})", disable=not progress)):
        out += measure_jobs((size_label, cond, kind), lambda cond=cond, kind=kind: measure_job(cond, kind))
        if i == last[cond] and hasattr(docs_override, "release"):
            docs_override.release(cond)  # a model's encoded documents, once its last job is done
    # postings an exhaustive traversal would read, per second of single-query latency (in the engine's layout; others:
    # numba's 8 bytes)
    for r in out:
        if r.get("postings_per_query") is not None:
            r["postings_per_s"] = r["postings_per_query"] / (r["latency_mean_ms"] / 1e3)
            r["posting_gb_per_s"] = r["postings_per_s"] * _layout_bytes(r["kind"]) / 1e9
    return out


def _layout_bytes(kind: str) -> int:
    """Bytes per posting of an engine's (default) layout; numba's for engines that do not say, and for pruned numba
    rows."""
    numba_bytes = index_class("numba").BYTES_PER_POSTING
    engine = kind.split(" ")[0]
    return getattr(index_class(engine), "BYTES_PER_POSTING", numba_bytes) if engine in INDEX_KINDS else numba_bytes


# results/<profile>/04_scale.json: the synthetic-collection rows, with the stage's inputs fingerprint
SCALE_RESULT = "04_scale"


# the condition suffix of rows measured on the independent-term generator's documents (index.scale_collections)
INDEPENDENT_TERMS = " · independent terms"


def encode_documents(
    model, dense_docs: np.ndarray, batch_size: int, chunk: int = 50_000, desc: str = "", progress=True
):
    """(N, d) dense documents -> (N, V) CSR through a D2S model's image side, ``chunk`` rows at a time (memory: one
    (batch_size, V) block and the CSR so far)."""
    import torch

    from ..storage.progress import progress_bar as tqdm
    from ..train.d2s import encode_sparse

    starts = range(0, len(dense_docs), chunk)
    parts = [
        encode_sparse(model, torch.from_numpy(dense_docs[s : s + chunk]), "image", batch_size)
        for s in tqdm(starts, desc=desc or f"encode {len(dense_docs):,} documents", disable=not progress)
    ]
    return sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, model.vocab_size), dtype=np.float32)


class OnDemand(Mapping):
    """{key: value} for :func:`efficiency_table` whose values are made on first use (``make[key]()``) and kept until
    :meth:`release`; ``ready`` values are given. A resumed benchmark whose jobs of a model are all measured never
    encodes that model's million documents, nor loads a model it does not measure."""

    def __init__(self, make: dict, ready: dict | None = None):
        self._make, self._values = dict(make), dict(ready or {})

    def __getitem__(self, key):
        if key not in self._values:
            if key not in self._make:
                raise KeyError(key)
            self._values[key] = self._make[key]()
        return self._values[key]

    def __contains__(self, key) -> bool:  # without making it
        return key in self._values or key in self._make

    def __iter__(self):
        return iter(dict.fromkeys([*self._values, *self._make]))

    def __len__(self) -> int:
        return len(set(self._values) | set(self._make))

    def release(self, key) -> None:
        """Drop ``key``'s value if it can be made again."""
        if key in self._make:
            self._values.pop(key, None)


def test_vectors(model, dense: tuple[np.ndarray, np.ndarray], batch_size: int) -> dict:
    """{"images", "texts"}: the test split's dense vectors through a D2S model, as stage 02 writes its conditions'
    (texts with full expansion)."""
    import torch

    from ..train.d2s import encode_sparse

    img, txt = (torch.from_numpy(x) for x in dense)
    return {
        "images": encode_sparse(model, img, "image", batch_size),
        "texts": encode_sparse(model, txt, "text", batch_size),
    }


def scale_benchmark(
    cfg: Config,
    col: ImageCaptionSet,
    vectors: dict,
    dense: tuple[np.ndarray, np.ndarray],
    progress: bool = True,
    models: dict | None = None,
    part=None,
    extra: dict | None = None,
) -> list[dict]:
    """:func:`efficiency_table` on larger collections, for each size in ``index.scale_sizes``.

    Dense documents are drawn from a Gaussian fitted to the teacher's test image vectors (:func:`dense_like`).
    ``index.scale_collections`` says which sparse documents go beside them: ``model_encoded``, the same documents
    encoded by each condition's D2S image side (``models``: {condition: D2SModel}, default: stage 02's best
    checkpoints), so both representations index one collection; ``independent_terms``, documents drawn term by term
    from each condition's test image vectors (``index.latency.synthetic_collection``: document frequencies and
    weights follow the model, term-term correlations do not), rows labelled ``<condition> · independent terms``, up
    to ``index.independent_terms_max_docs`` documents. Queries are the real test captions. ``part``: as
    :func:`efficiency_table` (:func:`scale_rows` keeps each job's rows once measured). A model's documents are
    encoded only when one of its jobs is measured (a resumed benchmark does not encode what it reuses).

    ``extra``: {label: () -> D2SModel}, more models on the model-encoded collections only (:func:`stage07_choice`:
    the knob search's chosen model), loaded when one of their jobs is measured; their test vectors are the test
    split encoded by them (:func:`test_vectors`).
    """
    from ..index.latency import synthetic_collection

    kinds = cfg.index.scale_collections
    if "model_encoded" in kinds and models is None:
        from ..artifacts.catalog import d2s_run_dir
        from ..train.d2s import load_best

        models = {c: load_best(d2s_run_dir(cfg, c))[0] for c in vectors}
    loaders = extra or {}
    extra = {c: lambda load=load: test_vectors(load(), dense, cfg.d2s.eval_batch_size) for c, load in loaders.items()}
    rows: list[dict] = []
    for size in cfg.index.scale_sizes:
        dense_docs = dense_like(dense[0], size, seed=cfg.seed)
        if "model_encoded" in kinds:
            load = {**{c: lambda m=m: m for c, m in models.items()}, **loaders}
            docs = OnDemand(
                {
                    c: lambda get=get, c=c, d=dense_docs: encode_documents(
                        get(), d, cfg.d2s.eval_batch_size, desc=f"{c}: encode {size:,}", progress=progress
                    )
                    for c, get in load.items()
                },
                {"dense teacher": dense_docs},
            )
            label = f"{size:,} model-encoded"
            rows += efficiency_table(cfg, col, OnDemand(extra, vectors), dense, docs, label, progress, part=part)
            del docs
        cap = cfg.index.independent_terms_max_docs
        if "independent_terms" in kinds and (not cap or size <= cap):
            named = {c + INDEPENDENT_TERMS: v for c, v in vectors.items()}
            docs = {c: synthetic_collection(v["images"], size, seed=cfg.seed) for c, v in named.items()}
            docs["dense teacher"] = dense_docs
            label = f"{size:,} independent-term"
            rows += efficiency_table(
                cfg, col, named, dense, docs, label, progress, dense_rows="model_encoded" not in kinds, part=part
            )
            del docs
    return rows


SCALE_SETTINGS = (
    "scale_collections",
    "scale_sizes",
    "scale_backends",
    "scale_pruning",
    "latency_queries",
    "qps_queries",
    "hnsw_max_docs",
    "hnsw_ef_search",
    "hnsw_ef_construction",
    "seismic_postings_per_doc",
    "seismic_search",
    "bmp_bsize",
    "bmp_reorder",
    "bmp_search",
    "kannolo_m",
    "kannolo_ef_construction",
    "kannolo_ef_search",
    "kannolo_max_docs",
    "milvus_max_docs",
    "milvus_queries",
    "independent_terms_max_docs",
)


# settings that say which scale jobs run, not how one is measured: a new size or engine keeps the measured jobs
SCALE_JOB_LISTS = ("scale_collections", "scale_sizes", "scale_backends", "scale_pruning", "independent_terms_max_docs")
# settings every scale job is measured with; the others belong to one engine, by prefix (:func:`engine_settings`)
SCALE_SHARED_SETTINGS = ("latency_queries", "qps_queries")
# where each scale job's rows are kept once measured, under results/<profile>/ (committed for the default profile)
SCALE_PARTS_DIR = "04_measured/scale"


def engine_settings(kind: str) -> tuple[str, ...]:
    """The :data:`SCALE_SETTINGS` one scale job of engine ``kind`` is measured with: the shared ones and its
    engine's (``kannolo_*`` for kANNolo, ``hnsw_*`` for faiss HNSW, none for the exact engines and faiss flat;
    ``numba-pruned <spec>`` is numba's, the spec being in the job's name)."""
    engine = kind.split(" ")[0].replace("numba-pruned", "numba")
    prefix = engine.removeprefix("faiss_") + "_"
    own = tuple(k for k in SCALE_SETTINGS if k.startswith(prefix) and k not in SCALE_JOB_LISTS)
    return SCALE_SHARED_SETTINGS + own


def scale_part(cfg: Config, inputs: dict, models: dict | None = None):
    """``part(job, measure)`` for :func:`efficiency_table`: each (collection, condition, engine) job of the scale
    benchmark measured once per input record and kept in ``results/<profile>/04_measured/scale/``, so that `make
    bench` (hours on 2 cores) finishes over several sittings: an interrupted run resumes at the first job not yet
    measured. A job's record is what it reads: stage 04's code and environment, the dense test vectors, its own
    model's vectors (``inputs["vectors"][condition]``, or ``models[condition]`` for a model stage 02 did not train;
    none for the dense teacher), the settings of its engine (:func:`engine_settings`) and the job itself. So a
    retrained model, or a new kANNolo setting, measures only that model's, or kANNolo's, jobs again. Each row says
    the machine it was measured on (``machine``), as latencies are compared within one machine."""
    import json
    import re

    from ..config.typed import to_dict
    from ..results.provenance import machine
    from ..storage.manifest import digest
    from ..storage.measured_parts import measured_once

    info = machine()
    here = f"{info.get('cpu', 'unknown CPU')}, {info.get('cpu_count')} cores"
    shared = {k: v for k, v in inputs.items() if k not in ("vectors", "config")}
    vectors = inputs.get("vectors")

    def record(job: tuple[str, str, str]) -> dict:
        _, cond, kind = job
        model = cond.removesuffix(INDEPENDENT_TERMS)  # the independent-term rows: drawn from the model's test vectors
        if model == "dense teacher":
            own = None
        elif models and model in models:
            own = models[model]
        else:
            own = vectors.get(model) if isinstance(vectors, dict) else vectors
        settings = {k: to_dict(getattr(cfg.index, k)) for k in engine_settings(kind)}
        return {**shared, "model": own, "config": config_digest(cfg, settings), "job": list(job)}

    def path(job: tuple[str, str, str]) -> Path:
        return (
            cfg.results_dir / SCALE_PARTS_DIR / (re.sub(r"[^A-Za-z0-9.+=-]+", "_", "_".join(job)).strip("_") + ".json")
        )

    def part(job: tuple[str, str, str], measure):
        return measured_once(
            path(job).parent, path(job).stem, record(job), lambda: [{**r, "machine": here} for r in measure()]
        )

    def kept(job: tuple[str, str, str]) -> bool:
        """Whether ``job`` is measured on its current record already (read back, not measured)."""
        try:
            return json.loads(path(job).read_text())["inputs"] == digest(record(job))
        except (OSError, ValueError, KeyError, TypeError):
            return False

    part.kept = kept
    return part


# stage 07's knob search: its result names the chosen trial, whose seed-``cfg.seed`` run stays in its cache folder
KNOB_RESULT, STAGE07 = "07_knob_search", "07_data_scale_study"
CHOICE = "stage 07 choice "  # the condition label of the chosen model's rows, before the trial's name


def stage07_choice(cfg: Config) -> dict:
    """{condition label: (record, loader)} for the knob search's chosen model (stage 07, `make data-scale`), which the
    scale benchmark measures beside stage 02's models on the model-encoded collections; {} when there is none to
    add: no knob search yet (said), none within its FLOPs budget, or stage 02's recipe itself.

    The record is the chosen trial and the fingerprint of the inputs stage 07's result file records, both in that
    committed file: a fresh clone, which has stage 07's results but not its seeds' features or runs, reads the
    chosen model's rows back, and a new knob search measures them again. The loader loads the run from
    ``data/cache/<profile>/knob_search/<trial>/`` only when a job of it is measured, and says what to do when that
    run is not on this machine."""
    from ..artifacts.catalog import producer, read_result
    from ..storage.manifest import Artifact

    doc = read_result(cfg, KNOB_RESULT)
    if doc is None:
        print(
            f"no stage 07 knob search yet ({KNOB_RESULT}.json): its chosen model is not benchmarked (`make data-scale`)"
        )
        return {}
    chosen = doc.get("results", {}).get("chosen")
    if not chosen or chosen == "recipe":
        return {}  # none within the FLOPs budget, or stage 02's with-control model, benchmarked already
    run = Artifact(cfg.cache_dir / "knob_search" / chosen, f"D2S run {chosen}", producer(STAGE07, cfg.profile))

    def load():
        from ..train.d2s import load_best

        if not (status := run.status()).ok:
            raise FileNotFoundError(
                f"stage 07's chosen model {chosen}: its run {run.root} is {status.state} ({status.reason}), and a "
                "scale job of it is not measured yet. `make data-scale` trains it on this machine once its measured "
                f"parts (which it reuses instead of training) are deleted: {cfg.results_dir / '07_measured'}/knob_*"
            )
        return load_best(run.root)[0]

    return {CHOICE + chosen: ({"trial": chosen, "stage07_inputs": doc.get("inputs_fingerprint")}, load)}


def scale_inputs(cfg: Config, inputs: dict) -> dict:
    """The stage's inputs with its config hash narrowed to what the scale rows depend on (the ``index``
    settings in :data:`SCALE_SETTINGS`, ``evaluation``, ``d2s``): changing a test-split engine or
    pruning list does not make a 40-minute benchmark stale; vectors, code and seed still do."""
    from ..config.typed import to_dict

    return {**inputs, "config": config_digest(cfg, {k: to_dict(getattr(cfg.index, k)) for k in SCALE_SETTINGS})}


def scale_rows(
    cfg: Config,
    col: ImageCaptionSet,
    vectors: dict,
    dense: tuple[np.ndarray, np.ndarray],
    inputs: dict,
    run: bool | None = None,
    progress: bool = True,
    models: dict | None = None,
) -> list[dict]:
    """The scale benchmark's rows: measured now, or read from ``04_scale.json`` when it was measured on these inputs.

    ``run`` None follows ``cfg.scale_benchmark`` ("stage": measure; "bench": read). A measurement is
    written to ``04_scale.json`` with the fingerprint of ``inputs`` (``stage_inputs``). A file measured on
    other inputs (other vectors, settings or code) is not used: the rows are empty and the message says
    to rerun ``make bench``; stale latencies are never shown as current. ``models``: as :func:`scale_benchmark`.
    """
    from ..artifacts.catalog import read_result, result_path
    from ..results.provenance import machine, write_results
    from ..storage.manifest import digest

    # stage 07's chosen model joins where the scale benchmark is `make bench`, run after `make data-scale` (a profile
    # whose stage 04 measures it, as smoke, runs stage 04 before stage 07); not when the caller gives the models
    choice = stage07_choice(cfg) if cfg.scale_benchmark == "bench" and models is None else {}
    part_inputs = inputs
    inputs = {
        **scale_inputs(cfg, inputs),
        **({"stage07_choice": {c: r for c, (r, _) in choice.items()}} if choice else {}),
    }
    if run is None:
        run = cfg.scale_benchmark == "stage"
    if run:
        extra = {c: load for c, (_, load) in choice.items()}
        records = {c: r for c, (r, _) in choice.items()}
        part = scale_part(cfg, part_inputs, records)
        rows = scale_benchmark(cfg, col, vectors, dense, progress, models, part=part, extra=extra)
        from ..index.latency import read_bandwidth_gbs

        machines = sorted({r["machine"] for r in rows if r.get("machine")})
        write_results(
            cfg,
            SCALE_RESULT,
            inputs=inputs,
            results={
                "machine": {**machine(), "read_bandwidth_gbs_1thread": read_bandwidth_gbs()},
                "machines": machines,  # the machines the rows were measured on (more than one: over several sittings)
                "rows": rows,
            },
        )
        if len(machines) > 1:
            print(
                f"note: the scale rows were measured on {len(machines)} machines ({'; '.join(machines)}): compare "
                f"latencies within one machine's rows (column 'machine'), or delete {SCALE_PARTS_DIR}/ and rerun "
                "`make bench` in one sitting"
            )
        return rows
    path, doc = result_path(cfg, SCALE_RESULT), read_result(cfg, SCALE_RESULT)
    path = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    if doc is None:
        print(
            f"no scale benchmark yet ({path} is missing): `make bench` (or `python -m lsr_lib.run.pipeline --profile "
            f"{cfg.profile} --stages 04 --force --bench`) measures it"
        )
        return []
    if doc.get("inputs_fingerprint") != digest(inputs):
        print(
            f"{path} was measured on other inputs (vectors, index settings or code changed since): not shown; rerun "
            "`make bench` to measure it again"
        )
        return []
    print(
        f"scale benchmark read from {path} (measured at commit {doc['provenance'].get('commit', '?')}; inputs current)"
    )
    return doc["results"]["rows"]


def search_sweep(
    cfg: Config, kind: str, docs, queries, exact_rows: np.ndarray, base: dict, k: int = 10, judge=None
) -> list[dict]:
    """Recall against latency for an approximate engine: one build per build setting, searched
    with every search setting (Seismic: ``n_postings`` x (query_cut, heap_factor); HNSW: efSearch).
    ``judge(index)``: extra columns per setting (:func:`efficiency_table`).
    """
    from ..index.latency import batch_qps, measure_build, query_latency
    from ..index.topk import recall_at_k

    ix = cfg.index
    if kind == "seismic":
        builds = [({"n_postings_per_doc": f}, f"np={f:g}N") for f in ix.seismic_postings_per_doc]
        searches = [({"query_cut": c, "heap_factor": h}, f"qc={c} hf={h}") for c, h in ix.seismic_search]
    elif kind == "faiss_hnsw":  # labelled by efConstruction only when it is swept (one value: the labels as before)
        efc = ix.hnsw_ef_construction
        builds = [({"ef_construction": e}, f"efc={e}" if len(efc) > 1 else "") for e in efc]
        searches = [({"ef_search": ef}, f"ef={ef}") for ef in ix.hnsw_ef_search]
    elif kind == "bmp":
        builds = [
            ({"bsize": b, "reorder": r}, f"b={b}" + (f" {r}" if r != "none" else ""))
            for b in ix.bmp_bsize
            for r in ix.bmp_reorder
        ]
        searches = [({"alpha": a, "beta": b}, f"a={a:g} beta={b:g}") for a, b in ix.bmp_search]
    elif kind == "kannolo":
        efc = ix.kannolo_ef_construction  # in the label when it is not kANNolo's default (200)
        label = f"m={ix.kannolo_m}" + (f" efc={efc}" if efc != 200 else "")
        builds = [({"m": ix.kannolo_m, "ef_construction": efc}, label)]
        searches = [({"ef_search": ef}, f"ef={ef}") for ef in ix.kannolo_ef_search]
    else:
        raise ValueError(f"no search sweep for engine {kind!r}; sweeps exist for {', '.join(SWEPT)}")
    rows = []
    for build_params, build_label in builds:
        index, built = measure_build(kind, docs, **build_params)
        for search_params, search_label in searches:
            index.set_search_params(**search_params)
            label = " ".join(x for x in (kind, build_label, search_label) if x)
            row = {**base, **built, "kind": label, **query_latency(index, queries, k, cfg.index.latency_queries)}
            row.update({f"qps_{t}t": batch_qps(index, queries, k, threads=t) for t in (1, 2)})
            row[f"recall@{k}"] = recall_at_k(index.search(queries, k)[1], exact_rows, k)
            row.update(judge(index) if judge is not None else {})
            rows.append(row)
        del index
    return rows


def recall_matched(rows: list[dict], targets: tuple[float, ...] = (0.9, 0.95, 0.99), k: int = 10) -> list[dict]:
    """For each collection size, condition, engine and recall target: the fastest setting (p50)
    whose recall@k reaches the target. Exact engines count as recall 1. An engine that never
    reaches a target gets no row for it (its best recall is reported instead).
    """
    import pandas as pd

    df = pd.DataFrame(rows)
    if df.empty:
        return []
    df["engine"] = df["kind"].str.split(" ").str[0]
    df["recall"] = df.get(f"recall@{k}", pd.Series(np.nan, index=df.index)).fillna(1.0)
    out = []
    for (n, cond, engine), g in df.groupby(["n_docs", "condition", "engine"], sort=False):
        for t in targets:
            ok = g[g["recall"] >= t]
            if ok.empty:
                out.append(
                    {
                        "n_docs": int(n),
                        "condition": cond,
                        "engine": engine,
                        "target_recall": t,
                        "setting": None,
                        "latency_p50_ms": None,
                        "recall": None,
                        "best_recall": float(g["recall"].max()),
                    }
                )
                continue
            best = ok.loc[ok["latency_p50_ms"].idxmin()]
            out.append(
                {
                    "n_docs": int(n),
                    "condition": cond,
                    "engine": engine,
                    "target_recall": t,
                    "setting": best["kind"],
                    "latency_p50_ms": float(best["latency_p50_ms"]),
                    "recall": float(best["recall"]),
                    "best_recall": float(g["recall"].max()),
                }
            )
    return out


def efficiency_figure(allrows, metrics, target: float = 0.95):
    """Stage 04's four panels from the benchmark rows (test collection + scale) and the metrics.

    Engines with a search sweep (Seismic, HNSW) appear once per size: their fastest setting
    reaching recall@10 >= ``target`` (:func:`recall_matched`); panel 4 shows the whole sweep.
    """
    import pandas as pd
    from matplotlib.ticker import NullFormatter

    from ..results import figures

    m = pd.DataFrame(recall_matched(allrows.to_dict(orient="records"), (target,))).dropna(subset=["latency_p50_ms"])
    flops = allrows.groupby(["n_docs", "condition"])["FLOPs"].first()
    m["FLOPs"] = [flops.get((n, c), float("nan")) for n, c in zip(m["n_docs"], m["condition"])]
    fig, axes = figures.plt.subplots(1, 4, figsize=(18, 3.8))
    for (cond, engine), g in m.groupby(["condition", "engine"]):
        g = g.sort_values("n_docs")
        axes[0].plot(g["n_docs"], g["latency_p50_ms"], marker="o", label=f"{engine}, {cond.replace('_', ' ')}")
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="documents",
        ylabel="p50 latency (ms)",
        title=f"latency against size (recall@10 >= {target:g})",
    )
    axes[0].legend(fontsize=6)
    sparse = m[m["condition"] != "dense teacher"]
    sizes = sorted(sparse["n_docs"].unique())
    markers = dict(zip(sizes, "osD^v"))
    for k, (engine, g) in enumerate(sparse.groupby("engine")):
        for n, h in g.groupby("n_docs"):
            axes[1].scatter(
                h["FLOPs"], h["latency_p50_ms"], color=f"C{k}", marker=markers[n], label=f"{engine}, {n:,} docs"
            )
            if len(h) == 2:
                axes[1].plot(h["FLOPs"], h["latency_p50_ms"], color=f"C{k}", lw=0.8)
    axes[1].set(
        yscale="log",
        xlabel="FLOPs (with control: left, without: right)",
        ylabel="p50 latency (ms)",
        title="latency against FLOPs",
    )
    axes[1].legend(fontsize=6)
    test = allrows[allrows["n_docs"] == allrows["n_docs"].min()].assign(
        engine=lambda d: d["kind"].str.split(" ").str[0], r=lambda d: d["recall@10"].fillna(1.0)
    )
    best = test.sort_values(["r", "latency_p50_ms"], ascending=[False, True]).drop_duplicates(["condition", "engine"])
    t2i = (
        metrics.xs("text_to_image", level="direction")
        .reset_index()
        .merge(best, left_on=["condition", "backend"], right_on=["condition", "engine"])
    )
    for cond, g in t2i.groupby("condition"):
        axes[2].scatter(g["latency_p50_ms"], g["R@10"], label=cond.replace("_", " "))
        for _, r in g.iterrows():
            axes[2].annotate(r["backend"], (r["latency_p50_ms"], r["R@10"]), fontsize=6)
    axes[2].set(
        xscale="log",
        xlabel="p50 latency (ms), test collection",
        ylabel="text->image R@10 (%)",
        title="effectiveness against latency",
    )
    axes[2].xaxis.set_minor_formatter(NullFormatter())
    axes[2].legend(fontsize=6)
    top = allrows[allrows["n_docs"] == allrows["n_docs"].max()].assign(
        engine=lambda d: d["kind"].str.split(" ").str[0], r=lambda d: d["recall@10"].fillna(1.0)
    )
    for (cond, engine), g in top.groupby(["condition", "engine"]):
        if engine in ("seismic", "bmp"):  # one curve per build (n_postings; block size)
            for build, h in g.groupby(g["kind"].str.split(" ").str[1]):
                h = h.sort_values("latency_p50_ms")
                axes[3].plot(
                    h["latency_p50_ms"], h["r"], marker="o", label=f"{engine} {build}, {cond.replace('_', ' ')}"
                )
            continue
        g = g.sort_values("latency_p50_ms")
        axes[3].plot(
            g["latency_p50_ms"],
            g["r"],
            marker="o",
            ls="-" if len(g) > 1 else "",
            label=f"{engine}, {cond.replace('_', ' ')}",
        )
    axes[3].set(
        xscale="log",
        xlabel="p50 latency (ms)",
        ylabel="recall@10 against exact",
        title=f"recall against latency, {int(top['n_docs'].max()):,} docs",
    )
    axes[3].legend(fontsize=5)
    fig.tight_layout()
    return fig


def effectiveness_latency_figure(eff_test, pruning):
    """Text->image R@10 against p50 latency on the test split: every engine and every setting of
    its sweep (:func:`efficiency_table`), and every index-side pruning setting (:func:`pruning_sweep`,
    exact numba engine), one colour per engine, one marker per condition.
    """
    import pandas as pd

    from ..results import figures

    rows = pd.concat(
        [
            eff_test.assign(engine=eff_test["kind"].str.split(" ").str[0]),
            pruning.assign(engine="numba-pruned", kind="numba " + pruning["pruning"], **{"T->I R@10": pruning["R@10"]}),
        ],
        ignore_index=True,
    )
    rows = rows.dropna(subset=["T->I R@10", "latency_p50_ms"])
    markers = dict(zip(rows["condition"].unique(), "os^Dv"))
    fig, ax = figures.plt.subplots(figsize=(9.5, 4.8))
    for k, (engine, g) in enumerate(rows.groupby("engine", sort=False)):
        for cond, h in g.groupby("condition", sort=False):
            h = h.sort_values("latency_p50_ms")
            swept = engine in SWEPT  # a search-parameter sweep is a curve; pruning settings are separate points
            ax.plot(
                h["latency_p50_ms"],
                h["T->I R@10"],
                marker=markers[cond],
                color=f"C{k % 10}",
                ls=":" if swept and len(h) > 1 else "",
                lw=0.8,
                label=f"{engine}, {cond.replace('_', ' ')}",
            )
    ax.set(
        xscale="log",
        xlabel="p50 latency per query (ms, 1 thread), test split",
        ylabel="text->image R@10 (%)",
        title="effectiveness against latency: every engine and setting",
    )
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def retrieval_results(metrics, checks, exact_ok: bool, pruning) -> dict:
    """The content of ``results/<profile>/04_retrieval.json``: metrics per engine, the brute-force checks, the pruning
    sweep."""
    return {
        "metrics": metrics.reset_index().to_dict(orient="records"),
        "checks": checks.reset_index().to_dict(orient="records"),
        "exact_engines_match_brute_force": exact_ok,
        "pruning": pruning.reset_index().to_dict(orient="records"),
    }


def measuring_machine() -> dict:
    """The machine a stage-04 measurement ran on, with its single-thread read bandwidth (the roofline of the exact
    engines); stage 04 keeps it as a measured part beside the test-split latencies (``measured(cfg, inputs,
    "machine", measuring_machine)``), so a rerun that reads those back reports the machine that measured them."""
    from ..index.latency import read_bandwidth_gbs
    from ..results.provenance import machine

    return {**machine(), "read_bandwidth_gbs_1thread": read_bandwidth_gbs()}


def efficiency_results(eff_test, scale, matched, machine: dict) -> dict:
    """The content of ``results/<profile>/04_efficiency.json``: the machine that measured the test-split rows
    (:func:`measuring_machine`), the test-collection and scale rows, recall-matched latencies."""
    return {
        "machine": machine,
        "test_collection": eff_test.to_dict(orient="records"),
        "scale": scale.to_dict(orient="records"),
        "recall_matched": matched.to_dict(orient="records"),
    }
