"""Karpathy-split JSON files for MSCOCO and Flickr30k (DESIGN.md sections 1A and 5).

The D2S paper evaluates on the Karpathy splits (MSCOCO: 5k test images / 25k captions,
Flickr30k: 1k / 5k). Their JSON (``dataset_coco.json``, ``dataset_flickr30k.json``, and the
``dataset_meta.json`` shipped with the authors' released dense features) reads::

    {"dataset": "coco",
     "images": [{"imgid": 0, "split": "train" | "restval" | "val" | "test",
                 "filepath": "val2014",            # MSCOCO only
                 "filename": "COCO_val2014_000000391895.jpg",
                 "sentences": [{"sentid": 0, "raw": "A man ...", "tokens": [...]}]}]}

:func:`load_karpathy` turns such a file into an :class:`ImageCaptionSet` (image id = ``imgid``,
text id = ``sentid``, both as strings), :func:`write_karpathy` writes one back (the embedded
emoji set uses it, so one loader serves every collection), and :func:`load_image` opens an
image with an error that names the file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd
from PIL import Image

from ..storage.atomic import atomic_write_text
from .collection import CAPTION_COLUMNS, IMAGE_COLUMNS, CollectionError, ImageCaptionSet

KARPATHY_SPLITS = ("train", "restval", "val", "test", "heldout")  # heldout: a style kept out of training (emoji)


class KarpathyFormatError(CollectionError):
    """The Karpathy JSON is unreadable or an entry lacks a key / has a bad value."""


class ImageLoadError(OSError):
    """An image file is missing or cannot be decoded."""


def _entry_error(json_path: Path, where: str, problem: str) -> KarpathyFormatError:
    return KarpathyFormatError(f"{json_path}: {where}: {problem}; fix or remove that entry in the split file")


def load_karpathy(
    json_path: str | Path, image_root: str | Path | None = None, name: str | None = None
) -> ImageCaptionSet:
    """Read a Karpathy-split JSON into an :class:`ImageCaptionSet` (all splits; select with ``.splits``)."""
    json_path = Path(json_path)
    if not json_path.is_file():
        raise FileNotFoundError(
            f"Karpathy split file {json_path} does not exist; download dataset_coco.json / dataset_flickr30k.json "
            "(Karpathy splits) or the released features' dataset_meta.json and set data.karpathy_json to its path"
        )
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise KarpathyFormatError(
            f"{json_path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
            "the download may be truncated - fetch it again"
        ) from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise KarpathyFormatError(f"{json_path}: expected an object with an 'images' list (Karpathy split format)")
    name = name or str(data.get("dataset") or json_path.stem)
    root = None if image_root is None else Path(image_root)

    img_rows: list[tuple[str, str, str, str]] = []
    cap_rows: list[tuple[str, str, str, str]] = []
    galleries: dict[str, str] = {}
    for k, item in enumerate(data["images"]):
        where = f"images[{k}]"
        if not isinstance(item, dict):
            raise _entry_error(json_path, where, "is not an object")
        for key in ("imgid", "split", "sentences") + (() if root is None else ("filename",)):
            if key not in item:
                label = f"{where} (imgid {item['imgid']!r})" if "imgid" in item else where
                raise _entry_error(json_path, label, f"missing key {key!r}")
        image_id = str(item["imgid"])
        where = f"{where} (imgid {image_id})"
        split = item["split"]
        if split not in KARPATHY_SPLITS:
            raise _entry_error(json_path, where, f"split {split!r} is not one of {KARPATHY_SPLITS}")
        if not isinstance(item["sentences"], list):
            raise _entry_error(json_path, where, "'sentences' is not a list")
        if root is None or not item["filename"]:  # the released dataset_meta.json may have no file names
            path = ""
        else:
            path = os.path.join(root, item.get("filepath") or "", item["filename"])
        img_rows.append((image_id, split, path, str(item.get("group_id", image_id))))
        if "gallery" in item:
            galleries[image_id] = str(item["gallery"])
        for j, sent in enumerate(item["sentences"]):
            s_where = f"{where} sentences[{j}]"
            if not isinstance(sent, dict) or "sentid" not in sent or "raw" not in sent:
                raise _entry_error(json_path, s_where, "needs keys 'sentid' and 'raw'")
            s_where = f"{where} sentence {sent['sentid']!r}"
            if "imgid" in sent and str(sent["imgid"]) != image_id:
                raise _entry_error(json_path, s_where, f"has imgid {sent['imgid']!r} but sits under image {image_id}")
            raw = sent["raw"]
            if not isinstance(raw, str) or not raw.strip():
                raise _entry_error(json_path, s_where, "has an empty caption ('raw')")
            cap_rows.append((str(sent["sentid"]), image_id, split, raw))

    images = pd.DataFrame(img_rows, columns=IMAGE_COLUMNS)
    if galleries:
        if len(galleries) != len(images):
            raise KarpathyFormatError(
                f"{json_path}: some images name a 'gallery' and some do not; give every image one"
            )
        images["gallery"] = images["image_id"].map(galleries)
    captions = pd.DataFrame(cap_rows, columns=CAPTION_COLUMNS)
    try:
        return ImageCaptionSet(name, images, captions)
    except CollectionError as e:  # duplicate imgid / sentid and the like: say which file
        raise KarpathyFormatError(f"{json_path}: {e}") from e


def _tokens(text: str) -> list[str]:
    """Lower-case word tokens without punctuation, as in the Karpathy files."""
    return re.findall(r"[a-z0-9]+", text.lower())


def _int_if_numeric(x: str) -> int | str:
    """``"42"`` -> 42 as the Karpathy files have it; ``"007"`` or ``"1f600"`` stay strings."""
    return int(x) if x.isascii() and x.isdigit() and str(int(x)) == x else x


def write_karpathy(collection: ImageCaptionSet, json_path: str | Path, image_root: str | Path | None = None) -> None:
    """Write ``collection`` as a Karpathy-split JSON; paths relative to ``image_root`` when given."""
    json_path = Path(json_path)
    sentences: dict[str, list[tuple[str, str]]] = {}
    cap = collection.captions
    for text_id, image_id, text in zip(cap["text_id"].tolist(), cap["image_id"].tolist(), cap["text"].tolist()):
        sentences.setdefault(image_id, []).append((text_id, text))
    entries = []
    img = collection.images
    galleries = dict(zip(img["image_id"], img["gallery"])) if "gallery" in img.columns else None
    for image_id, split, path, group_id in zip(*(img[c].tolist() for c in ("image_id", "split", "path", "group_id"))):
        if path and image_root is not None:
            path = os.path.relpath(path, image_root)
            if path.startswith(".."):
                raise ValueError(
                    f"image {image_id!r}: path not under image_root {image_root}; pass their common folder"
                )
        imgid = _int_if_numeric(image_id)
        folder, filename = os.path.split(path) if path else ("", "")
        entry: dict = {"imgid": imgid, "split": split, "filename": filename}
        if folder:
            entry["filepath"] = folder  # MSCOCO style; Flickr30k files have none
        if group_id != image_id:
            entry["group_id"] = group_id  # extension: variant groups (emoji); other readers ignore it
        if galleries is not None:
            entry["gallery"] = galleries[image_id]  # extension: the image's gallery (emoji: its art style)
        sents = [(_int_if_numeric(t), raw) for t, raw in sentences.get(image_id, [])]
        entry["sentids"] = [t for t, _ in sents]
        entry["sentences"] = [{"sentid": t, "imgid": imgid, "raw": raw, "tokens": _tokens(raw)} for t, raw in sents]
        entries.append(entry)
    # json.dumps uses the C encoder; json.dump to a file does not (10x slower on MSCOCO)
    atomic_write_text(json_path, json.dumps({"dataset": collection.name, "images": entries}, ensure_ascii=False))


def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB (transparent pixels over white); :class:`ImageLoadError` names the file."""
    if not str(path):
        raise ImageLoadError("image path is empty: the collection was loaded without image_root; set data.image_root")
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(
            f"{path}: image file does not exist; check data.image_root, re-download it or remove it from the split file"
        )
    try:
        with Image.open(path) as img:
            img.load()  # decode now so that truncated files fail here, not in a worker
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                out = Image.new("RGB", rgba.size, (255, 255, 255))
                out.paste(rgba, mask=rgba.getchannel("A"))
                return out
            return img.convert("RGB")
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        raise ImageLoadError(
            f"{path}: cannot decode image ({type(e).__name__}: {e}); re-download it or remove it from the split file"
        ) from e
