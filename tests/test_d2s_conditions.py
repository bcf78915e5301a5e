"""Stage 02 glue: conditions, training pairs, and the sparse evaluation against brute force."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from lsr_lib.data.collection import ImageCaptionSet
from lsr_lib.config.profiles import D2SConfig, load_config
from lsr_lib.train.d2s_conditions import condition_config, evaluate_sparse, training_pairs
from lsr_lib.sparse.expansion_control import bert_uncased_tokenizer
from lsr_lib.metrics.retrieval import evaluate_both_directions


def test_conditions_differ_only_in_the_schedule():
    base = D2SConfig(epochs=10)
    w, wo = condition_config(base, "with_control"), condition_config(base, "without_control")
    assert w == base and all(wo.p(e) == 0.0 for e in range(10)) and w.p(0) == 1.0
    assert dataclasses.replace(wo, expansion_schedule=w.expansion_schedule, expansion_p0=w.expansion_p0) == w
    with pytest.raises(ValueError, match="unknown D2S condition 'sometimes'"):
        condition_config(base, "sometimes")


def _col():
    images = pd.DataFrame(
        [("a", "test", "", "a"), ("b", "test", "", "b"), ("c", "test", "", "c")],
        columns=["image_id", "split", "path", "group_id"],
    )
    caps = pd.DataFrame(
        [
            ("1", "a", "test", "red apple"),
            ("2", "b", "test", "blue car"),
            ("3", "a", "test", "apple"),
            ("4", "c", "test", "dog"),
        ],
        columns=["text_id", "image_id", "split", "text"],
    )
    return ImageCaptionSet("t", images, caps)


def test_training_pairs_align_images_and_tokens():
    col = _col()
    img = np.eye(3, 4, dtype=np.float32)
    txt = np.arange(16, dtype=np.float32).reshape(4, 4)
    tok = bert_uncased_tokenizer()
    pairs = training_pairs(col, img, txt, tok)
    assert torch.equal(pairs["img_emb"], torch.from_numpy(img[[0, 1, 0, 2]]))
    first = [i for i in pairs["txt_mask_ids"][0].tolist() if i >= 0]
    assert sorted(tok.convert_ids_to_tokens(first)) == ["apple", "red"]


def test_sparse_evaluation_matches_dense_computation():
    col = _col()
    img = sp.random(3, 50, density=0.2, random_state=1, format="csr", dtype=np.float32)
    txt = sp.random(4, 50, density=0.2, random_state=2, format="csr", dtype=np.float32)
    cfg = load_config("smoke")
    got = evaluate_sparse(cfg, col, img, txt)
    ref = evaluate_both_directions(
        torch.from_numpy(img.toarray()),
        torch.from_numpy(txt.toarray()),
        col.captions["image_id"].to_numpy(),
        col.images["image_id"].to_numpy(),
    )
    assert got["text_to_image"] == ref["text_to_image"] and got["image_to_text"] == ref["image_to_text"]
    shared = np.mean([[len(set(txt[q].indices) & set(img[d].indices)) for d in range(3)] for q in range(4)])
    assert got["sparsity_text_to_image"]["flops"] == pytest.approx(shared)


def test_compare_words():
    from lsr_lib.stages.analyze_sparse_vectors import compare

    assert compare(1.0, 2.0).startswith("lower") and "-50.0%" in compare(1.0, 2.0)
    assert compare(0.2, 0.0) == "higher (0.2 vs 0)"
    assert compare(float("nan"), 1.0).startswith("not comparable")
