"""The sharded cache resumes after an interruption, verifies every shard, sets a foreign cache aside, loses nothing."""

import numpy as np
import pytest

from lsr_lib.storage.manifest import ArtifactError
from lsr_lib.storage.shard_cache import ShardedCache


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


def test_foreign_cache_is_moved_aside_and_restored(tmp_path, capsys):
    calls = []
    c = ShardedCache(tmp_path / "c", {"enc": "a", "cfg": {"lr": 1}}, shard_size=4)
    c.fill(["i1"], _compute(calls), 1, progress=False)
    c2 = ShardedCache(tmp_path / "c", {"enc": "a", "cfg": {"lr": 2}}, shard_size=4)
    assert "cfg.lr: was 1, now 2" in capsys.readouterr().err
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("c@")]
    assert len(aside) == 1 and (aside[0] / "shard-00000.safetensors").exists()  # nothing computed is lost
    c2.fill(["i1"], _compute(calls), 1, progress=False)
    assert calls == ["i1", "i1"]
    calls.clear()
    back = ShardedCache(tmp_path / "c", {"enc": "a", "cfg": {"lr": 1}}, shard_size=4)  # switching back reuses the first
    back.fill(["i1"], _compute(calls), 1, progress=False)
    assert calls == [] and back.read()[0] == ["i1"]


def test_corrupt_shard_is_named_on_read_and_recomputed_alone(tmp_path):
    ids = [f"i{k}" for k in range(10)]
    calls = []
    c = ShardedCache(tmp_path / "c", {"enc": "a"}, shard_size=4)
    c.fill(ids, _compute(calls), 3, progress=False)
    shard = tmp_path / "c" / "shard-00001.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[-3] ^= 0x55
    shard.write_bytes(bytes(raw))  # bytes flipped in place
    with pytest.raises(ArtifactError, match="shard-00001.safetensors does not match its checksum"):
        ShardedCache(tmp_path / "c", {"enc": "a"}, shard_size=4).read()
    calls.clear()
    c2 = ShardedCache(tmp_path / "c", {"enc": "a"}, shard_size=4)
    c2.fill(ids, _compute(calls), 3, progress=False)
    assert calls == ["i4", "i5", "i6", "i7"]  # only the damaged shard
    assert c2.read()[1]["x"][:, 0].tolist() == list(range(10))


def test_truncated_shard_is_recomputed(tmp_path):
    ids = [f"i{k}" for k in range(8)]
    c = ShardedCache(tmp_path / "c", {"enc": "a"}, shard_size=4)
    c.fill(ids, _compute([]), 4, progress=False)
    shard = tmp_path / "c" / "shard-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:50])
    with pytest.raises(ArtifactError, match="shard-00000.safetensors has 50 bytes.*Rerun stage 01"):
        c.read()
    calls = []
    ShardedCache(tmp_path / "c", {"enc": "a"}, shard_size=4).fill(ids, _compute(calls), 4, progress=False)
    assert calls == ["i0", "i1", "i2", "i3"]


def test_zero_shard_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="shard_size"):
        ShardedCache(tmp_path / "c", {"enc": "a"}, shard_size=0)


def test_nan_features_name_the_item_and_keep_earlier_shards(tmp_path):
    def f(batch):
        return {"x": np.array([[np.nan if b == "i5" else 0.0] for b in batch], dtype=np.float32)}

    c = ShardedCache(tmp_path / "c", {"enc": "a"}, shard_size=4)
    with pytest.raises(ValueError, match="non-finite 'x' features for item 'i5'"):
        c.fill([f"i{k}" for k in range(8)], f, 2, progress=False)
    assert (tmp_path / "c" / "shard-00000.safetensors").exists()
