"""Semantic deviation measures (lsr_lib.analysis.semantic_deviation) on hand-made vectors with the real tokenizer."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from lsr_lib.analysis import semantic_deviation as sd
from lsr_lib.data.collection import ImageCaptionSet

from sparse_helpers import V, vec


def test_term_categories_and_stop_words(tok):
    cat = sd.term_categories(tok)
    assert cat.shape == (V,)
    want = {
        "[CLS]": "special",
        "[unused5]": "special",
        "##s": "subword",
        ".": "punctuation",
        "$": "punctuation",
        "the": "stopword",
        "of": "stopword",
        "dog": "content",
        "fire": "content",
        "3": "content",
    }
    for t, c in want.items():
        assert sd.CATEGORIES[cat[tok.convert_tokens_to_ids(t)]] == c, t
    assert all(w == w.lower() and " " not in w for w in sd.STOP_WORDS)


def test_expansion_shares_on_hand_made_vector(tok):
    caption = "a small dog barking"  # own ids: a, small, dog, barking
    x = sp.vstack(
        [vec(tok, {"dog": 2.0, "puppy": 1.0, "a": 0.5, "cat": 0.5}), sp.csr_matrix((1, V), dtype=np.float32)]
    ).tocsr()
    out = sd.text_deviation(x, [caption, "a cat"], tok, k=3)
    r = out.iloc[0]
    assert r["n_terms"] == 4
    assert r["expansion_weight_share"] == pytest.approx((1.0 + 0.5) / 4.0)
    # top-3: dog, puppy, then the 0.5 tie goes to the lower id: "a" (1037) before "cat" (4937)
    assert r["n_topk_expansion"] == 1 and r["expansion_topk_share"] == pytest.approx(1 / 3)
    assert np.isnan(out.iloc[1]["expansion_weight_share"]) and np.isnan(out.iloc[1]["expansion_topk_share"])
    assert "unrelated_expansion_share" not in out  # no embedder given
    summary = sd.deviation_summary(out)
    assert summary.loc["expansion_weight_share", "n_defined"] == 1
    assert summary.loc["expansion_topk_share", "mean"] == pytest.approx(1 / 3)


def test_unrelated_share_threshold_with_fake_embedder(tok):
    caption = "a small dog barking"
    # cosines 0.6, ~0.141, 0
    table = {caption: [1.0, 0.0, 0.0], "puppy": [3.0, 4.0, 0.0], "cat": [1.0, 0.0, 7.0], "s": [0.0, 0.0, 1.0]}
    calls = []

    def fake(texts):
        calls.extend(texts)
        return np.array([table[t] for t in texts])  # KeyError on "##s": fragments are embedded without "##"

    x = vec(tok, {"dog": 5.0, "puppy": 4.0, "cat": 3.0, "##s": 2.0, "small": 1.0})
    emb = sd.CachedEmbedder(fake)
    for threshold, n_unrelated in ((0.1, 1), (0.59, 2), (0.61, 3)):
        out = sd.text_deviation(x, [caption], tok, k=4, embedder=emb, threshold=threshold).iloc[0]
        assert out["n_topk_expansion"] == 3  # puppy, cat, ##s
        assert out["n_unrelated"] == n_unrelated
        assert out["unrelated_expansion_share"] == pytest.approx(n_unrelated / 3)
    assert sorted(calls) == sorted(table)  # every distinct string embedded exactly once
    no_exp = sd.text_deviation(vec(tok, {"dog": 1.0}), [caption], tok, k=4, embedder=emb).iloc[0]
    assert no_exp["n_unrelated"] == 0 and np.isnan(no_exp["unrelated_expansion_share"])


def collection() -> ImageCaptionSet:
    images = pd.DataFrame({"image_id": ["i1", "i2", "i3"], "split": "test", "path": "", "group_id": ["i1", "i2", "i3"]})
    captions = pd.DataFrame(
        {
            "text_id": ["c1", "c2", "c3", "c4"],
            "image_id": ["i1", "i1", "i2", "i3"],
            "split": "test",
            "text": ["red apple on the table.", "a shiny fruit", "the flag of zanzibar", "dog"],
        }
    )
    return ImageCaptionSet("tiny", images, captions)


def test_image_caption_token_sets_drop_stop_words_punctuation_fragments(tok):
    sets = sd.image_caption_token_sets(collection(), tok)
    words = [set(tok.convert_ids_to_tokens(s.tolist())) for s in sets]
    assert words[0] == {"red", "apple", "table", "shiny", "fruit"}  # both captions; no "on", "the", "a", "."
    assert words[1] == {"flag", "za"}  # no "##nz", "##ibar", "the", "of"


def test_image_precision_and_weight_shares(tok):
    w1 = {"apple": 3.0, "the": 2.5, ".": 2.4, "##s": 2.3, "fruit": 2.0, "banana": 1.9, "[unused5]": 1.8, "red": 1.0}
    w2 = {"za": 1.0, "##nz": 0.9, "of": 0.8, "flag": 0.4}
    x = sp.vstack([vec(tok, w1), vec(tok, w2), sp.csr_matrix((1, V), dtype=np.float32)]).tocsr()
    k3 = sd.image_deviation(x, collection(), tok, k=3)
    assert k3.loc[0, "caption_precision_at_k"] == pytest.approx(2 / 3)  # apple, fruit | banana
    # + red
    assert sd.image_deviation(x, collection(), tok, k=4).loc[0, "caption_precision_at_k"] == pytest.approx(3 / 4)
    assert k3.loc[1, "n_topk_content"] == 2 and k3.loc[1, "caption_precision_at_k"] == 1.0
    total = sum(w1.values())
    for name, w in (("stopword", 2.5), ("punctuation", 2.4), ("subword", 2.3), ("special", 1.8), ("content", 7.9)):
        assert k3.loc[0, f"weight_share_{name}"] == pytest.approx(w / total)
    shares = k3[[f"weight_share_{c}" for c in sd.CATEGORIES]]
    assert shares.iloc[:2].sum(axis=1).to_numpy() == pytest.approx([1.0, 1.0])
    assert np.isnan(k3.loc[2, "caption_precision_at_k"]) and k3.loc[2, "n_terms"] == 0
    assert np.isnan(k3.loc[2, "weight_share_content"])
    direct = sd.category_weight_shares(x, tok)
    assert np.allclose(direct.to_numpy(), shares.to_numpy(), equal_nan=True)


def test_top_terms_and_example_table(tok):
    a = vec(tok, {"dog": 2.0, "puppy": 1.0, "cat": 0.5})
    b = vec(tok, {"dog": 1.0, "small": 0.7})
    t = sd.top_terms(a, tok, k=2)
    assert list(t["term"]) == ["dog", "puppy"] and list(t["weight"]) == pytest.approx([2.0, 1.0])
    own = sd.own_token_ids(["a small dog barking"], tok)
    table = sd.example_table(
        {"with_control": a, "without_control": b}, [0], tok, k=3, reference_ids=own, item_names=["a small dog barking"]
    )
    assert list(table.columns.get_level_values(0).unique()) == ["with_control", "without_control"]
    assert table.shape == (3, 6)
    assert list(table[("with_control", "kind")]) == ["own", "expansion", "expansion"]
    assert list(table[("without_control", "term")])[:2] == ["dog", "small"] and pd.isna(
        table[("without_control", "term")].iloc[2]
    )


def test_real_minilm_similarity_and_threshold(tok):
    emb = sd.CachedEmbedder(sd.minilm_embedder())
    v = emb(["a small dog barking", "dog", "carburetor", "banana"])  # (4, 384), unit rows
    assert np.linalg.norm(v, axis=1) == pytest.approx(np.ones(4), abs=1e-5)
    cos = v[1:] @ v[0]
    assert cos[0] > cos[1] and cos[0] > cos[2]
    out = sd.text_deviation(
        vec(tok, {"dog": 3.0, "puppy": 2.0, "banana": 1.0}), ["a small dog barking"], tok, k=3, embedder=emb
    ).iloc[0]
    assert out["n_topk_expansion"] == 2 and out["n_unrelated"] == 1  # banana, not puppy
