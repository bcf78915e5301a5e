"""The embedded OpenMoji collection: real captions, variant groups, a leak-free seeded split."""

import numpy as np
import pytest

from lsr_lib.data.emoji import (
    build_emoji_collection,
    captions_for,
    hex_to_emoji,
    render_svg,
    openmoji_svg_dir,
    split_checksum,
    variant_group,
)


def test_captions_come_from_real_annotations():
    caps = captions_for(hex_to_emoji("1F602"))
    assert caps[0] == "face with tears of joy" and "joy" in caps
    assert "man, rocket" in captions_for(hex_to_emoji("1F468-200D-1F680"))
    assert captions_for(hex_to_emoji("E000")) == []  # OpenMoji extras have no CLDR name


def test_variants_share_a_group():
    assert variant_group("1F44D-1F3FD") == variant_group("1F44D") == "1F44D"
    assert (
        variant_group("1F468-1F3FB-200D-1F680")
        == variant_group("1F469-200D-1F680")
        == variant_group("1F9D1-200D-1F680")
    )
    assert variant_group("1F3C3-200D-2640-FE0F") == variant_group("1F3C3")
    assert variant_group("1F602") != variant_group("1F603")


@pytest.fixture(scope="module")
def collection():
    return build_emoji_collection(seed=13)


def test_full_collection_counts_and_no_leak(collection):
    counts = collection.counts()
    assert sum(c["images"] for c in counts.values()) > 3800
    assert counts["train"]["groups"] > counts["test"]["groups"] > counts["val"]["groups"] > 100
    groups = collection.images.groupby("group_id")["split"].nunique()
    assert (groups == 1).all()
    # no caption text names two groups
    owners = (
        collection.captions.merge(collection.images, on="image_id")
        .groupby(collection.captions["text"].str.lower())["group_id"]
        .nunique()
    )
    assert (owners == 1).all()


def test_split_is_seeded_and_pinned(collection):
    again = build_emoji_collection(seed=13)
    assert split_checksum(again) == split_checksum(collection)
    assert split_checksum(build_emoji_collection(seed=14)) != split_checksum(collection)


def test_smoke_slice_is_small_and_valid():
    small = build_emoji_collection(seed=13, fractions=(0.6, 0.2, 0.2), max_groups=20)
    assert small.images["group_id"].nunique() == 20
    assert set(small.images["split"]) == {"train", "val", "test"}


def test_render_and_corrupt_svg(tmp_path):
    img = render_svg(openmoji_svg_dir() / "1F34C.svg", 64)
    assert img.size == (64, 64) and img.mode == "RGBA"
    assert np.asarray(img)[..., 3].max() == 255
    bad = tmp_path / "bad.svg"
    bad.write_text("<svg><not closed")
    with pytest.raises(ValueError, match="could not render .*bad.svg"):
        render_svg(bad)
