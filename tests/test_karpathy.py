"""Karpathy-split loader, writer and image loading on committed fixtures (lsr_lib.data.karpathy)."""

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from lsr_lib.data.collection import CollectionError, ImageCaptionSet
from lsr_lib.data.karpathy import ImageLoadError, KarpathyFormatError, load_image, load_karpathy, write_karpathy

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "karpathy_tiny.json"
IMAGES = FIXTURES / "karpathy_images"


def edited(tmp_path: Path, edit) -> Path:
    """A copy of the tiny Karpathy file after ``edit(data)``."""
    data = json.loads(TINY.read_text())
    edit(data)
    out = tmp_path / "edited.json"
    out.write_text(json.dumps(data))
    return out


def test_load_tables_ids_and_paths():
    col = load_karpathy(TINY, image_root=IMAGES)
    assert col.name == "coco"
    assert list(col.images["image_id"]) == ["0", "1", "2", "3"]
    assert list(col.images["split"]) == ["train", "restval", "val", "test"]
    assert (col.images["group_id"] == col.images["image_id"]).all()
    assert col.images.loc[0, "path"] == str(IMAGES / "train2014" / "COCO_train2014_000000000009.png")
    assert all(Path(p).is_file() for p in col.images["path"])
    assert list(col.captions["text_id"]) == [str(i) for i in range(10)]
    assert col.captions.loc[0, "text"] == "A red ball on a table."  # raw caption, untouched
    assert col.counts()["test"] == {"images": 1, "captions": 3, "groups": 1}


def test_without_image_root_paths_are_empty_and_name_overrides():
    col = load_karpathy(TINY, name="mscoco")
    assert col.name == "mscoco"
    assert (col.images["path"] == "").all()


def test_split_selection_including_restval():
    col = load_karpathy(TINY)
    test = col.split("test")
    assert list(test.images["image_id"]) == ["3"] and len(test.captions) == 3
    train = col.splits(("train", "restval"))
    assert list(train.images["image_id"]) == ["0", "1"] and len(train.captions) == 5
    cap_rows, img_rows = train.qrels()
    assert list(img_rows) == [0, 0, 0, 1, 1]
    assert len(col.split("train").captions) == 3  # reference code: train only


def test_round_trip_coco_layout(tmp_path):
    col = load_karpathy(TINY, image_root=IMAGES)
    out = tmp_path / "again.json"
    write_karpathy(col, out, image_root=IMAGES)
    back = load_karpathy(out, image_root=IMAGES)
    pd.testing.assert_frame_equal(back.images, col.images)
    pd.testing.assert_frame_equal(back.captions, col.captions)
    first = json.loads(out.read_text())["images"][0]
    assert first["imgid"] == 0 and first["filepath"] == "train2014" and first["sentids"] == [0, 1, 2]
    assert first["sentences"][0]["tokens"] == ["a", "red", "ball", "on", "a", "table"]
    with pytest.raises(ValueError, match="image '0': path not under image_root"):
        write_karpathy(col, out, image_root=IMAGES / "val2014")


def test_round_trip_string_ids_groups_and_flat_folder(tmp_path):
    """The emoji set: non-numeric ids, variant groups, images directly under the root (no filepath)."""
    root = tmp_path / "png"
    images = pd.DataFrame(
        {
            "image_id": ["1f44b", "1f44b-1f3fb", "1f600"],
            "split": ["train", "train", "test"],
            "path": [str(root / f"{i}.png") for i in ("1f44b", "1f44b-1f3fb", "1f600")],
            "group_id": ["1f44b", "1f44b", "1f600"],
        }
    )
    captions = pd.DataFrame(
        {
            "text_id": ["1f44b#0", "1f44b-1f3fb#0", "1f600#0", "1f600#1"],
            "image_id": ["1f44b", "1f44b-1f3fb", "1f600", "1f600"],
            "split": ["train", "train", "test", "test"],
            "text": ["waving hand", "waving hand: light skin tone", "grinning face", "face, grin"],
        }
    )
    col = ImageCaptionSet("emoji", images, captions)
    out = tmp_path / "emoji.json"
    write_karpathy(col, out, image_root=root)
    assert "filepath" not in json.loads(out.read_text())["images"][0]  # Flickr30k-style entry
    back = load_karpathy(out, image_root=root)
    assert back.name == "emoji"
    pd.testing.assert_frame_equal(back.images, col.images)
    pd.testing.assert_frame_equal(back.captions, col.captions)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json.*karpathy_json"):
        load_karpathy(tmp_path / "nope.json")


def test_invalid_json_names_file_and_position(tmp_path):
    bad = tmp_path / "truncated.json"
    bad.write_text(TINY.read_text()[:300])
    with pytest.raises(KarpathyFormatError, match="truncated.json: not valid JSON.*line"):
        load_karpathy(bad)


def test_missing_key_names_image_and_key(tmp_path):
    path = edited(tmp_path, lambda d: d["images"][2].pop("filename"))
    with pytest.raises(KarpathyFormatError, match=r"images\[2\] \(imgid 2\): missing key 'filename'"):
        load_karpathy(path, image_root=IMAGES)
    assert load_karpathy(path).images.loc[2, "path"] == ""  # file names are only needed for images
    with pytest.raises(KarpathyFormatError, match=r"images\[1\] \(imgid 1\): missing key 'split'"):
        load_karpathy(edited(tmp_path, lambda d: d["images"][1].pop("split")))
    path = edited(tmp_path, lambda d: d["images"][1]["sentences"][0].pop("raw"))
    with pytest.raises(KarpathyFormatError, match=r"imgid 1\) sentences\[0\]: needs keys 'sentid' and 'raw'"):
        load_karpathy(path)


@pytest.mark.parametrize("raw", ["", "   ", None])
def test_empty_caption_names_sentence(tmp_path, raw):
    path = edited(tmp_path, lambda d: d["images"][3]["sentences"][1].update(raw=raw))
    with pytest.raises(KarpathyFormatError, match="imgid 3.*sentence 8.*empty caption"):
        load_karpathy(path)


def test_duplicate_ids_reach_the_user(tmp_path):
    def dup_image(d):
        d["images"][2]["imgid"] = 1
        for sent in d["images"][2]["sentences"]:
            sent["imgid"] = 1

    path = edited(tmp_path, dup_image)
    with pytest.raises(CollectionError, match=r"edited.json: .*duplicate image id '1'"):
        load_karpathy(path)

    def dup_sent(d):
        d["images"][2]["sentences"][0]["sentid"] = 4
        d["images"][2]["sentences"][0].pop("imgid")

    with pytest.raises(KarpathyFormatError, match=r"edited.json: .*duplicate caption id '4'"):
        load_karpathy(edited(tmp_path, dup_sent))


def test_bad_split_and_misplaced_sentence(tmp_path):
    with pytest.raises(KarpathyFormatError, match="imgid 0.*split 'dev'"):
        load_karpathy(edited(tmp_path, lambda d: d["images"][0].update(split="dev")))
    with pytest.raises(KarpathyFormatError, match="sentence 5.*imgid 7 but sits under image 2"):
        load_karpathy(edited(tmp_path, lambda d: d["images"][2]["sentences"][0].update(imgid=7)))


def test_load_image_rgb_and_transparency_over_white():
    col = load_karpathy(TINY, image_root=IMAGES)
    img = load_image(col.images.loc[0, "path"])
    assert img.mode == "RGB" and img.size == (24, 20)
    rgba = load_image(col.images.loc[3, "path"])  # transparent corners, opaque yellow disc
    assert rgba.mode == "RGB"
    assert rgba.getpixel((0, 0)) == (255, 255, 255) and rgba.getpixel((12, 10)) == (240, 200, 30)


def test_load_image_corrupt_missing_and_empty_path(tmp_path):
    corrupt = IMAGES / "val2014" / "corrupt.png"
    with pytest.raises(ImageLoadError, match="corrupt.png: cannot decode image.*remove it from the split file"):
        load_image(corrupt)
    with pytest.raises(ImageLoadError, match="gone.jpg: image file does not exist"):
        load_image(tmp_path / "gone.jpg")
    with pytest.raises(ImageLoadError, match="image_root"):
        load_image("")
    truncated = tmp_path / "half.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "full.png")
    truncated.write_bytes((tmp_path / "full.png").read_bytes()[:60])
    with pytest.raises(ImageLoadError, match="half.png"):
        load_image(truncated)
