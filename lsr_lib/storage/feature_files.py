"""Dense features as files: parquet with columns ``id`` and ``emb`` (DESIGN.md section 5).

This is the format of the authors' released features (``img_embs.parquet``,
``text_embs.parquet``: 256-d L2-normalised ITC vectors) and of this suite's own caches, so the
paper path can skip extraction by pointing ``encoder.features_dir`` at downloaded files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_write


class FeatureFileError(ValueError):
    """A feature file is malformed: duplicate ids, NaN vectors, ragged dimensions."""


def write_embeddings(path: str | Path, ids: list[str] | np.ndarray, emb: np.ndarray) -> None:
    """Write ``ids`` (N,) and ``emb`` (N, D) atomically (temp file + rename)."""
    path = Path(path)
    emb = np.asarray(emb, dtype=np.float32)
    ids = [str(i) for i in ids]
    if emb.ndim != 2 or emb.shape[0] != len(ids):
        raise FeatureFileError(f"{path}: {len(ids)} ids but embeddings of shape {emb.shape}")
    check_embeddings(ids, emb, str(path))
    flat = pa.array(emb.reshape(-1), type=pa.float32())
    col = pa.FixedSizeListArray.from_arrays(flat, emb.shape[1])
    table = pa.table({"id": pa.array(ids, type=pa.string()), "emb": col})
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def read_embeddings(path: str | Path, normalize_check: bool = False) -> tuple[list[str], np.ndarray]:
    """Read a parquet feature file -> (ids as strings (N,), float32 matrix (N, D))."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"feature file {path} does not exist")
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a truncated or foreign file
        raise FeatureFileError(
            f"{path}: not a readable parquet file ({e}); delete it and re-run the stage that writes it"
        ) from e
    for col in ("id", "emb"):
        if col not in table.column_names:
            raise FeatureFileError(
                f"{path}: missing column {col!r} (has {table.column_names}); expected columns id, emb"
            )
    ids = [str(i) for i in table.column("id").to_pylist()]
    emb_col = table.column("emb").combine_chunks()
    if pa.types.is_fixed_size_list(emb_col.type):
        emb = emb_col.flatten().to_numpy(zero_copy_only=False).reshape(len(ids), emb_col.type.list_size)
    else:  # variable-length list column (the released files): check lengths, then flatten in Arrow
        import pyarrow.compute as pc

        lengths = pc.list_value_length(emb_col).to_numpy(zero_copy_only=False)
        uniq = np.unique(lengths[~np.isnan(lengths.astype(float))]) if len(lengths) else np.array([0])
        if emb_col.null_count or len(uniq) != 1:
            raise FeatureFileError(
                f"{path}: vectors of different lengths or missing vectors (lengths {uniq[:5].tolist()}, "
                f"{emb_col.null_count} missing)"
            )
        emb = emb_col.flatten().to_numpy(zero_copy_only=False).reshape(len(ids), int(uniq[0]))
    emb = emb.astype(np.float32, copy=False)
    check_embeddings(ids, emb, str(path))
    if normalize_check:
        norms = np.linalg.norm(emb, axis=1)
        if not np.allclose(norms, 1.0, atol=1e-3):
            i = int(np.argmax(np.abs(norms - 1)))
            raise FeatureFileError(
                f"{path}: vector {ids[i]!r} has norm {norms[i]:.4f}; expected L2-normalised embeddings"
            )
    return ids, emb


def check_embeddings(ids: list[str], emb: np.ndarray, where: str) -> None:
    """Reject duplicate ids and non-finite vectors, naming the first offender."""
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise FeatureFileError(f"{where}: duplicate id {i!r}; each item must appear once")
        seen.add(i)
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        first = ids[int(np.flatnonzero(bad)[0])]
        raise FeatureFileError(
            f"{where}: {int(bad.sum())} vector(s) contain NaN or inf, first id {first!r}; "
            "re-extract them (the encoder may have overflowed in half precision: try mixed_precision: false)"
        )


def align(ids: list[str], emb: np.ndarray, wanted: list[str], where: str) -> np.ndarray:
    """Rows of ``emb`` in the order of ``wanted``; error naming the first missing id."""
    pos = {i: k for k, i in enumerate(ids)}
    missing = [w for w in wanted if w not in pos]
    if missing:
        raise FeatureFileError(
            f"{where}: {len(missing)} id(s) of the collection have no vector, first {missing[0]!r}; the feature file "
            "and the dataset file do not match"
        )
    return emb[[pos[w] for w in wanted]]
