"""Parquet id+emb files: round trip, the released-features layout, and bad input."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lsr_lib.storage.feature_files import FeatureFileError, align, read_embeddings, write_embeddings


def test_round_trip(tmp_path):
    emb = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    write_embeddings(tmp_path / "e.parquet", [1, 2, 3, 4, 5], emb)
    ids, got = read_embeddings(tmp_path / "e.parquet")
    assert ids == ["1", "2", "3", "4", "5"] and np.array_equal(got, emb)


def test_reads_list_column_as_released(tmp_path):
    # the released lsr42/* files store emb as a variable-length list column with integer ids
    emb = np.eye(3, dtype=np.float32)
    pq.write_table(pa.table({"id": [10, 11, 12], "emb": [list(r) for r in emb]}), tmp_path / "img_embs.parquet")
    ids, got = read_embeddings(tmp_path / "img_embs.parquet", normalize_check=True)
    assert ids == ["10", "11", "12"] and np.array_equal(got, emb)
    assert np.array_equal(align(ids, got, ["12", "10"], "x"), emb[[2, 0]])


def test_bad_files_name_the_problem(tmp_path):
    with pytest.raises(FeatureFileError, match="duplicate id '1'"):
        write_embeddings(tmp_path / "d.parquet", ["1", "1"], np.zeros((2, 3)))
    with pytest.raises(FeatureFileError, match="NaN or inf, first id 'b'"):
        write_embeddings(tmp_path / "n.parquet", ["a", "b"], np.array([[0.0], [np.nan]]))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(FeatureFileError, match="not a readable parquet"):
        read_embeddings(tmp_path / "junk.parquet")
    pq.write_table(pa.table({"id": ["a"], "vec": [[1.0]]}), tmp_path / "col.parquet")
    with pytest.raises(FeatureFileError, match="missing column 'emb'"):
        read_embeddings(tmp_path / "col.parquet")
    write_embeddings(tmp_path / "u.parquet", ["a"], np.array([[3.0, 4.0]]))
    with pytest.raises(FeatureFileError, match="norm 5.0000"):
        read_embeddings(tmp_path / "u.parquet", normalize_check=True)
    with pytest.raises(FeatureFileError, match="first 'z'"):
        align(["a"], np.zeros((1, 2)), ["a", "z"], "x")
