"""Collection invariants fail with errors that name the offending item."""

import pandas as pd
import pytest

from lsr_lib.data.collection import CollectionError, ImageCaptionSet


def _make(images, captions):
    return ImageCaptionSet(
        "t",
        pd.DataFrame(images, columns=["image_id", "split", "path", "group_id"]),
        pd.DataFrame(captions, columns=["text_id", "image_id", "split", "text"]),
    )


def test_valid_and_qrels():
    c = _make([("a", "test", "", "a"), ("b", "test", "", "b")], [("1", "b", "test", "x"), ("2", "a", "test", "y")])
    assert c.qrels()[1].tolist() == [1, 0]


@pytest.mark.parametrize(
    "images,captions,msg",
    [
        ([("a", "test", "", "a"), ("a", "test", "", "a")], [("1", "a", "test", "x")], "duplicate image id 'a'"),
        ([("a", "test", "", "a")], [("1", "a", "test", "x"), ("1", "a", "test", "y")], "duplicate caption id '1'"),
        ([("a", "test", "", "a")], [("1", "a", "test", "  ")], "caption '1' is empty"),
        ([("a", "test", "", "a")], [("1", "a", "test", None)], "caption '1' is empty"),
        ([("a", "test", "", "a")], [("1", "zz", "test", "x")], "points at image 'zz'"),
        (
            [("a", "test", "", "g"), ("b", "train", "", "g")],
            [("1", "a", "test", "x")],
            "group 'g' spans several splits",
        ),
    ],
)
def test_bad_input_is_named(images, captions, msg):
    with pytest.raises(CollectionError, match=msg):
        _make(images, captions)
