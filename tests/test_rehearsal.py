"""Paper-size rehearsal: synthetic MSCOCO-size features in the released layout, the rehearsal profile, bounded D2S
training."""

import numpy as np
import pytest
import torch
import yaml

from lsr_lib.config.profiles import ConfigError, load_config
from lsr_lib.data.rehearsal import split_sizes, synthetic_mscoco, write_synthetic_mscoco
from lsr_lib.run.rehearsal import fraction_of, vocabulary_words

WORDS = [f"word{k}" for k in range(300)]


def test_full_size_is_the_karpathy_mscoco_split_without_restval():
    assert split_sizes(1.0) == {"train": (82_783, 414_113), "val": (5_000, 25_010), "test": (5_000, 25_010)}
    small = split_sizes(0.1)
    assert small["train"] == (8_278, 41_411) and small["test"] == (500, 2_501)
    with pytest.raises(ValueError, match="fraction"):
        split_sizes(0.0)
    assert fraction_of("mscoco30_synthetic") == 0.3 and fraction_of("mscoco100_synthetic") == 1.0


def test_synthetic_collection_has_the_sizes_and_captions_are_near_their_own_image():
    col, img, txt = synthetic_mscoco(WORDS, 0.01, seed=0)
    counts = col.counts()
    for split, (n_img, n_cap) in split_sizes(0.01).items():
        assert (counts[split]["images"], counts[split]["captions"]) == (n_img, n_cap)
    assert img.shape == (len(col.images), 256) and txt.shape == (len(col.captions), 256)
    assert np.allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5) and np.allclose(
        np.linalg.norm(txt, axis=1), 1, atol=1e-5
    )
    assert set(" ".join(col.captions["text"]).split()) - set(WORDS) <= {
        "a",
        "and",
        "near",
        "with",
        "by",
        "the",
        "next",
        "to",
        "in",
    }
    row = {i: k for k, i in enumerate(col.images["image_id"])}
    own = np.einsum("nd,nd->n", txt, img[[row[i] for i in col.captions["image_id"]]])
    other = np.einsum("nd,nd->n", txt, img[np.random.default_rng(0).integers(0, len(img), len(txt))])
    assert own.mean() > other.mean() + 0.1  # structured: captions point at their image
    assert not np.array_equal(synthetic_mscoco(WORDS, 0.01, seed=1)[1], img)


def test_written_features_load_through_the_released_features_path(tmp_path):
    from lsr_lib.dense.extract import load_released_features
    from lsr_lib.stages.cache_dense_features import load_collection

    out = tmp_path / "mscoco1"
    write_synthetic_mscoco(out, WORDS, 0.01, seed=0)
    stamp = (out / "img_embs.parquet").stat().st_mtime_ns
    write_synthetic_mscoco(out, WORDS, 0.01, seed=0)  # same settings: reused, not rewritten
    assert (out / "img_embs.parquet").stat().st_mtime_ns == stamp
    cfg = load_config("rehearsal", {"encoder": {"features_dir": str(out)}})
    col = load_collection(cfg)
    assert col.counts()["train"]["captions"] == split_sizes(0.01)["train"][1]
    img, txt = load_released_features(cfg, col)
    ref_col, ref_img, ref_txt = synthetic_mscoco(WORDS, 0.01, seed=0)
    assert np.array_equal(img, ref_img) and np.array_equal(txt, ref_txt)


def test_rehearsal_profile_extends_the_paper_recipe():
    paper, reh = load_config("paper"), load_config("rehearsal")
    assert (
        reh.d2s.batch_size == paper.d2s.batch_size == 512
        and reh.d2s.lr_vocab == paper.d2s.lr_vocab
        and reh.d2s.teacher_tau == paper.d2s.teacher_tau
    )
    assert reh.d2s.max_steps_per_epoch == 30 and reh.encoder.kind == "feature_files"
    # not the paper's sweep
    assert [s.name for s in reh.sweep] == ["mscoco10_synthetic", "mscoco30_synthetic", "mscoco100_synthetic"]
    assert load_config("rehearsal/mscoco10_synthetic").encoder.features_dir == "data/rehearsal/mscoco10"


def test_extends_merges_over_the_parent_and_names_loops(tmp_path):
    (tmp_path / "base.yaml").write_text(
        yaml.safe_dump({"seed": 3, "lit": {"epochs": 7, "lr": 0.5}, "sweep": [{"dataset": "a", "backbone": "b"}]})
    )
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({"extends": "base", "lit": {"epochs": 2}}))
    cfg = load_config("child", params_dir=tmp_path)
    assert (cfg.profile, cfg.seed, cfg.lit.epochs, cfg.lit.lr, cfg.sweep) == ("child", 3, 2, 0.5, ())
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump({"extends": "loop"}))
    with pytest.raises(ConfigError, match="loops"):
        load_config("loop", params_dir=tmp_path)
    (tmp_path / "orphan.yaml").write_text(yaml.safe_dump({"extends": "nowhere"}))
    with pytest.raises(ConfigError, match="nowhere"):
        load_config("orphan", params_dir=tmp_path)


def test_max_steps_per_epoch_bounds_training_and_stays_out_of_old_fingerprints(tmp_path):
    from lsr_lib.config.typed import to_dict
    from lsr_lib.train.d2s import D2SConfig, train_d2s

    assert "max_steps_per_epoch" not in to_dict(D2SConfig())  # unset: caches made before the key existed stay valid
    assert to_dict(D2SConfig(max_steps_per_epoch=2))["max_steps_per_epoch"] == 2
    g = torch.Generator().manual_seed(0)
    n, d = 64, 8
    train = {
        "img_emb": torch.randn(n, d, generator=g),
        "txt_emb": torch.randn(n, d, generator=g),
        "txt_mask_ids": torch.randint(1, 50, (n, 3), generator=g),
    }
    from safetensors.torch import save_file

    save_file({"weight": torch.randn(50, 8, generator=g), "bias": torch.zeros(50)}, str(tmp_path / "v.safetensors"))
    cfg = D2SConfig(vocab_init=str(tmp_path / "v.safetensors"), epochs=3, batch_size=8, max_steps_per_epoch=2)
    out = train_d2s(cfg, train, None, tmp_path / "run", progress=False)
    assert out["steps"] == 6 and len(out["history"]) == 3  # 3 epochs of 2 steps, not of 8


def test_vocabulary_words_are_whole_content_words():
    words = vocabulary_words(200)
    assert len(words) == 200 and all(w.isalpha() and w.islower() for w in words) and "the" not in words


def test_a_vocab_init_file_is_fingerprinted_by_content(tmp_path):
    from safetensors.torch import save_file

    from lsr_lib.train.d2s import D2SConfig, train_d2s

    g = torch.Generator().manual_seed(0)
    n, d = 32, 8
    train = {
        "img_emb": torch.randn(n, d, generator=g),
        "txt_emb": torch.randn(n, d, generator=g),
        "txt_mask_ids": torch.randint(1, 50, (n, 3), generator=g),
    }
    vocab = tmp_path / "v.safetensors"
    save_file({"weight": torch.randn(50, 8, generator=g), "bias": torch.zeros(50)}, str(vocab))
    cfg = D2SConfig(vocab_init=str(vocab), epochs=1, batch_size=8)
    first = train_d2s(cfg, train, None, tmp_path / "run", progress=False)
    assert train_d2s(cfg, train, None, tmp_path / "run", progress=False)["history"] == first["history"]  # reused
    # same name, other weights
    save_file({"weight": torch.randn(50, 8, generator=g), "bias": torch.full((50,), -1.0)}, str(vocab))
    again = train_d2s(cfg, train, None, tmp_path / "run", progress=False)
    assert again["history"][0]["loss"] != first["history"][0]["loss"]  # retrained, not the old run
