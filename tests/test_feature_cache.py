"""The sharded cache resumes after an interruption, refuses a foreign cache, loses nothing."""
import json

import numpy as np
import pytest

from lsr_lib.storage.shard_cache import CacheMismatchError, ShardedCache


def _compute(calls):
    def f(batch):
        calls.extend(batch)
        return {"x": np.array([[float(b[1:]), 1.0] for b in batch], dtype=np.float32)}
    return f


def test_fill_read_and_reuse(tmp_path):
    ids = [f"i{k}" for k in range(10)]
    calls = []
    c = ShardedCache(tmp_path / "c", {"enc": "a"}, shard_size=4)
    c.fill(ids, _compute(calls), batch_size=3, progress=False)
    assert c.complete and len(list((tmp_path / "c").glob("shard-*"))) == 3
    got_ids, arr = c.read(["i7", "i2"])
    assert got_ids == ["i7", "i2"] and arr["x"][:, 0].tolist() == [7.0, 2.0]
    calls.clear()
    ShardedCache(tmp_path / "c", {"enc": "a"}, shard_size=4).fill(ids, _compute(calls), 3, progress=False)
    assert calls == []  # a finished cache is reused


def test_interrupted_run_resumes_without_recomputing(tmp_path):
    ids = [f"i{k}" for k in range(10)]
    calls = []

    def failing(batch):
        if "i9" in batch:
            raise KeyboardInterrupt
        return _compute(calls)(batch)

    c = ShardedCache(tmp_path / "c", {"enc": "a"}, shard_size=4)
    with pytest.raises(KeyboardInterrupt):
        c.fill(ids, failing, batch_size=2, progress=False)
    assert not c.complete and len(list((tmp_path / "c").glob("shard-*"))) == 2
    assert not list((tmp_path / "c").glob(".*tmp"))  # no half-written file left behind
    calls.clear()
    c2 = ShardedCache(tmp_path / "c", {"enc": "a"}, shard_size=4)
    c2.fill(ids, _compute(calls), batch_size=2, progress=False)
    assert calls == ["i8", "i9"] and c2.complete
    assert c2.read()[1]["x"][:, 0].tolist() == list(range(10))


def test_foreign_cache_is_an_error_and_kept(tmp_path):
    c = ShardedCache(tmp_path / "c", {"enc": "a", "cfg": {"lr": 1}}, shard_size=4)
    c.fill(["i1"], _compute([]), 1, progress=False)
    with pytest.raises(CacheMismatchError, match=r"cfg\.lr: cached 1 vs now 2.*Nothing was deleted"):
        ShardedCache(tmp_path / "c", {"enc": "a", "cfg": {"lr": 2}}, shard_size=4)
    assert (tmp_path / "c" / "shard-00000.safetensors").exists()
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["cfg"] == {"lr": 1}


def test_nan_features_name_the_item_and_keep_earlier_shards(tmp_path):
    def f(batch):
        return {"x": np.array([[np.nan if b == "i5" else 0.0] for b in batch], dtype=np.float32)}

    c = ShardedCache(tmp_path / "c", {"enc": "a"}, shard_size=4)
    with pytest.raises(ValueError, match="non-finite 'x' features for item 'i5'"):
        c.fill([f"i{k}" for k in range(8)], f, 2, progress=False)
    assert (tmp_path / "c" / "shard-00000.safetensors").exists()
