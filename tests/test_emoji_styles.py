"""The multi-style emoji collection (issue 27): art styles, captions, the split over variant groups across
styles, the held-out style, per-style galleries in every metric, and the ONNX Runtime image tower."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lsr_lib.config.profiles import EMOJI_STYLES, RESERVED_STYLES, ConfigError, load_config
from lsr_lib.data import emoji_styles
from lsr_lib.data.emoji import annotations, build_emoji_collection, style_counts
from lsr_lib.data.karpathy import load_karpathy, write_karpathy
from lsr_lib.data.suggest import emoji_suggestion_set
from lsr_lib.metrics.retrieval import evaluate_scores
from lsr_lib.stages.retrieve_with_inverted_index import gallery_parts, gallery_ranks

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def col():
    return build_emoji_collection(
        13, (0.6, 0.2, 0.2), 80, "/tmp/x", ("openmoji", "twemoji"), heldout_style="fluent-emoji-high-contrast"
    )


def test_reserved_art_is_refused_everywhere():
    with pytest.raises(emoji_styles.StyleError, match="reserved"):
        emoji_styles.style("noto")
    with pytest.raises(ConfigError, match="Noto"):
        load_config("smoke", overrides={"data": {"styles": ["openmoji", "noto"]}})
    with pytest.raises(ConfigError, match="heldout_style"):
        load_config("smoke", overrides={"data": {"heldout_style": "noto-v1"}})
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert not [p for p in lock["packages"] if any(r in p.lower() for r in RESERVED_STYLES)]
    assert set(EMOJI_STYLES) == set(emoji_styles.STYLES)  # the config's names are the installed styles


def test_unknown_style_and_heldout_in_training_are_config_errors():
    with pytest.raises(ConfigError, match="styles"):
        load_config("smoke", overrides={"data": {"styles": ["openmoji", "wingdings"]}})
    with pytest.raises(ConfigError, match="heldout_style"):
        load_config("smoke", overrides={"data": {"heldout_style": "twemoji"}})


def test_emoji_key_normalises_code_points():
    assert emoji_styles.emoji_key("1f44d-fe0f") == "1F44D"
    assert emoji_styles.emoji_key("a9") == "00A9"
    assert emoji_styles.emoji_key("1F469-200D-1F680") == "1F469-200D-1F680"


def test_captions_name_the_emoji_from_each_source():
    caps = annotations()
    thumbs = caps["1F44D"]
    assert thumbs[0] == "thumbs up"  # the CLDR name first (stage 05's document caption)
    assert "+1, good, hand, like, thumb, up, yes" in thumbs  # the CLDR keywords, one text
    assert "thumbsup" in thumbs  # a shortcode in words
    dark = caps["1F44D-1F3FF"]
    assert dark[0].startswith("thumbs up") and "dark skin tone" in dark[0]
    assert (
        "+1, good, hand, like, thumb, up, yes: dark skin tone" in dark
    )  # a variant's keyword text names its tone  # a variant's keyword text names its tone
    assert all(len(set(c.lower() for c in v)) == len(v) for v in caps.values())


def test_split_is_over_groups_across_styles_and_heldout_is_test_only(col):
    img = col.images
    assert set(img["gallery"]) == {"openmoji", "twemoji", "fluent-emoji-high-contrast"}
    # every style of a group in one split (the held-out style's are test groups)
    split_of_group = img.assign(split=img["split"].replace({"heldout": "test"})).groupby("group_id")["split"].nunique()
    assert (split_of_group == 1).all()
    held = img[img["gallery"] == "fluent-emoji-high-contrast"]
    assert len(held) and set(held["split"]) == {"heldout"}
    test_groups = set(img.loc[img["split"] == "test", "group_id"])
    assert set(held["group_id"]) <= test_groups
    assert not ((img["split"] == "heldout") & (img["gallery"] != "fluent-emoji-high-contrast")).any()
    assert all(i.startswith(f"{g}/") for i, g in zip(img["image_id"], img["gallery"]))
    # the styles of an emoji share its captions; no caption text names two groups
    cap = col.captions.assign(key=col.captions["image_id"].str.split("/", n=1).str[1])
    texts = cap.groupby(["key", "image_id"])["text"].apply(tuple).reset_index()
    assert (texts.groupby("key")["text"].nunique() == 1).all()
    assert (texts.groupby("key")["image_id"].nunique() > 1).any()
    owners = cap.merge(img[["image_id", "group_id"]], on="image_id").groupby(cap["text"].str.lower())["group_id"]
    assert (owners.nunique() == 1).all()
    counts = style_counts(col)
    assert counts["openmoji"]["train"]["images"] > 0 and counts["captions_per_image"]["mean"] > 1


def test_karpathy_round_trip_keeps_galleries(col, tmp_path):
    write_karpathy(col, tmp_path / "meta.json")
    back = load_karpathy(tmp_path / "meta.json")
    assert list(back.image_gallery) == list(col.image_gallery)
    assert set(back.images["split"]) == {"train", "val", "test", "heldout"}


def _two_style_scores():
    """Two galleries drawing the same 3 emoji: a caption scores its emoji equally in both styles."""
    image_ids = np.array(["a/1", "a/2", "a/3", "b/1", "b/2", "b/3"])
    gallery = np.array(["a", "a", "a", "b", "b", "b"])
    text_image_ids = np.array(["a/1", "a/2", "a/3", "b/1", "b/2", "b/3"])
    base = torch.tensor([[1.0, 0.2, 0.1], [0.1, 0.9, 0.3], [0.5, 0.2, 0.4]])  # emoji 3 is ranked second
    scores = torch.cat([torch.cat([base, base], 1)] * 2, 0)  # (6 captions, 6 images)
    scores[:3, 3:] += 0.05  # the other style scores a little higher: a distractor across galleries
    return scores, text_image_ids, image_ids, gallery


def test_each_gallery_is_its_own_retrieval_problem():
    scores, tids, iids, gallery = _two_style_scores()
    pooled = evaluate_scores(scores, tids, iids, (1,), 10, image_gallery=gallery)
    # within a gallery: captions 1 and 2 hit at rank 1, caption 3 at rank 2, in both galleries
    assert pooled["text_to_image"]["R@1"] == pytest.approx(100 * 4 / 6)
    assert pooled["by_gallery"]["a"]["text_to_image"]["R@1"] == pytest.approx(100 * 2 / 3)
    assert pooled["by_gallery"]["b"]["text_to_image"]["n_queries"] == 3
    for g in ("a", "b"):  # the same as evaluating the gallery alone
        m = gallery == g
        alone = evaluate_scores(scores[np.ix_(m, m)], tids[m], iids[m], (1,), 10)
        assert alone["text_to_image"] == pooled["by_gallery"][g]["text_to_image"]
        assert alone["image_to_text"] == pooled["by_gallery"][g]["image_to_text"]
    # without galleries the other style's copy outranks gallery a's captions: the check would catch a lost mask
    mixed = evaluate_scores(scores, tids, iids, (1,), 10)
    assert mixed["text_to_image"]["R@1"] < pooled["text_to_image"]["R@1"]


def test_gallery_ranks_from_top_k_lists_equal_brute_force():
    scores, tids, iids, gallery = _two_style_scores()
    exact = evaluate_scores(scores, tids, iids, (1, 5), 10, return_ranks=True, image_gallery=gallery)
    rows = torch.argsort(scores, dim=1, descending=True).numpy()  # top-6 over both galleries
    row_of = {i: k for k, i in enumerate(iids)}
    qg = gallery[[row_of[i] for i in tids]]
    ranks = gallery_ranks(rows, tids, iids, qg, gallery)
    assert list(ranks) == list(exact["ranks"]["text_to_image"])


def test_gallery_parts_split_rows_by_style(col):
    test = col.split("test")
    parts = dict(gallery_parts(test))
    assert set(parts) == {"openmoji", "twemoji"}
    for g, (ir, tr) in parts.items():
        assert (test.images["gallery"].to_numpy()[ir] == g).all()
        assert test.captions["image_id"].iloc[tr].str.startswith(f"{g}/").all()
    assert sum(len(ir) for ir, _ in parts.values()) == len(test.images)


def test_suggestion_queries_are_relevant_to_every_style_of_their_emoji(col):
    s = emoji_suggestion_set(col)
    assert "heldout" not in set(s.docs["split"]) and "heldout" not in set(s.queries["split"])
    assert s.queries["query_id"].is_unique
    per_query = s.qrels.groupby("query_id")["doc_id"].apply(list)
    two = per_query[per_query.str.len() == 2]
    assert len(two) > 0
    for q, docs in two.items():
        assert {d.split("/")[0] for d in docs} == {"openmoji", "twemoji"}
        assert {d.split("/", 1)[1] for d in docs} == {q.split("#")[0]}


def test_onnx_runtime_tower_matches_torch():
    from PIL import Image

    from lsr_lib.dense.towers import ImageTower

    rng = np.random.default_rng(0)
    pics = [Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)) for _ in range(3)]
    ref = ImageTower("cpu")(pics, with_patches=True)
    onnx = ImageTower("cpu", backend="onnxruntime")
    out = onnx(pics, with_patches=True)
    for part in ("avg", "max", "logits", "patches"):
        assert np.abs(out[part] - ref[part]).max() < 1e-3, part
    assert onnx.fingerprint()["backend"] == "onnxruntime" and "backend" not in ImageTower("cpu").fingerprint()


def test_matched_rows_keep_the_held_out_styles_emoji_in_every_in_style_gallery(col):
    from lsr_lib.data.heldout import matched_rows, subset

    test, held = col.split("test"), col.split("heldout")
    img, cap = matched_rows(test, held)
    sub = subset(test, (img, cap), "matched")
    keys = set(held.images["image_id"].str.split("/", n=1).str[1])
    assert set(sub.images["image_id"].str.split("/", n=1).str[1]) == keys & set(
        test.images["image_id"].str.split("/", n=1).str[1]
    )
    assert set(sub.image_gallery) == {"openmoji", "twemoji"} and len(sub.images) < len(test.images)
    assert set(sub.captions["image_id"]) <= set(sub.images["image_id"])  # every caption's image is kept
