"""Stage 01 on Ray Data (extraction.engine: ray): the same features as in process, the same cache, failures named (issue
17)."""

import sys

import numpy as np
import pytest

from lsr_lib.config.profiles import Config, load_config
from lsr_lib.storage.shard_cache import ShardedCache

ray = pytest.importorskip("ray")
# the extractors defined here travel to the workers by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def local_ray():
    from lsr_lib.dense.ray_extract import ray_init

    yield ray_init(num_cpus=2)
    ray.shutdown()


def _slice(col, n_per_split=3):
    """A few images of each split of the smoke collection, with all their captions."""
    from lsr_lib.data.collection import ImageCaptionSet

    images = col.images.groupby("split", sort=False).head(n_per_split).reset_index(drop=True)
    captions = col.captions[col.captions["image_id"].isin(images["image_id"])].reset_index(drop=True)
    return ImageCaptionSet("smoke slice", images, captions)


def test_ray_engine_gives_the_in_process_tower_features(local_ray, tmp_path, monkeypatch):
    import torch

    from lsr_lib.stages.cache_dense_features import cache_tower_features, load_collection

    base = {
        "lit": {"train_views": 1, "eval_transforms": ["grayscale"]},
        "extraction": {"shard_size": 4, "image_batch_size": 3},
    }
    cfg_local, cfg_ray = (
        load_config("smoke", base),
        load_config(
            "smoke", {**base, "extraction": {**base["extraction"], "engine": "ray", "ray_actors": 1, "ray_threads": 2}}
        ),
    )
    sub = _slice(load_collection(cfg_local))
    out = {}
    for name, cfg in (("local", cfg_local), ("ray", cfg_ray)):
        monkeypatch.setattr(Config, "shared_cache_dir", property(lambda self, n=name: tmp_path / n))
        monkeypatch.setattr(Config, "cache_dir", property(lambda self, n=name: tmp_path / n / "profile"))
        img_cache, txt_cache = cache_tower_features(cfg, sub, torch.device("cpu"), progress=False)
        out[name] = (img_cache.read(), txt_cache.read(), img_cache.fingerprint)
    (ids_l, img_l), (tids_l, txt_l), fp_l = out["local"]
    (ids_r, img_r), (tids_r, txt_r), fp_r = out["ray"]
    assert ids_l == ids_r and tids_l == tids_r and fp_l == fp_r  # same items, same cache identity: interchangeable
    # every clean image (3 per split: train, val, test, heldout), 1 view of each train image, grayscale of each test one
    n = sub.images["split"].value_counts()
    assert set(n.index) == {"train", "val", "test", "heldout"}
    assert len(ids_l) == len(sub.images) + n["train"] + n["test"] and sorted(img_l) == sorted(img_r) == [
        "avg",
        "logits",
        "max",
    ]
    for name in img_l:  # one actor with this process's 2 torch threads: the same floating-point sums
        print(name, "max abs difference", float(np.abs(img_r[name] - img_l[name]).max()))
        np.testing.assert_array_equal(img_r[name], img_l[name])
    np.testing.assert_array_equal(txt_r["text"], txt_l["text"])


def _failing_compute():
    def compute(batch):
        if "x5" in batch:
            raise ValueError("cannot decode image 'x5'")
        return {"f": np.ones((len(batch), 2), np.float32) * np.array([int(i[1:]) for i in batch], np.float32)[:, None]}

    return compute


def test_a_failing_item_is_named_and_finished_shards_are_kept(local_ray, tmp_path):
    from lsr_lib.dense.ray_extract import RayEngine

    ids = [f"x{k}" for k in range(8)]
    cache = ShardedCache(tmp_path / "c", {"what": "test"}, shard_size=4)
    with pytest.raises(Exception, match="cannot decode image 'x5'"):
        cache.fill(ids, None, 2, "test", False, RayEngine(actors=1), _failing_compute)
    assert not cache.complete
    fixed = lambda: (
        lambda b: {"f": np.ones((len(b), 2), np.float32) * np.array([int(i[1:]) for i in b], np.float32)[:, None]}
    )
    cache.fill(ids, None, 2, "test", False, RayEngine(actors=1), fixed)
    got_ids, got = cache.read()
    assert got_ids == ids and got["f"][:, 0].tolist() == list(range(8))


def test_shards_from_elsewhere_are_checked_like_local_batches():
    with pytest.raises(ValueError, match="3 rows of 'f' for 4 ids"):
        ShardedCache.check_shard({"f": np.zeros((3, 2), np.float32)}, ["a", "b", "c", "d"], "test")
    with pytest.raises(ValueError, match="non-finite 'f' features for item 'b'"):
        ShardedCache.check_shard({"f": np.array([[0.0], [np.nan]], np.float32)}, ["a", "b"], "test")


def test_engine_setting_is_checked():
    from lsr_lib.config.typed import ConfigError
    from lsr_lib.dense.ray_extract import RayEngine, extraction_engine

    assert extraction_engine(load_config("smoke").extraction) is None
    assert isinstance(extraction_engine(load_config("smoke", {"extraction": {"engine": "ray"}}).extraction), RayEngine)
    with pytest.raises(ConfigError, match="extraction.engine: must be one of local, ray"):
        load_config("smoke", {"extraction": {"engine": "spark"}})
