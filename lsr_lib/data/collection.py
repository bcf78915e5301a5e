"""The image-caption collection every stage works on, whatever its source.

MSCOCO / Flickr30k (Karpathy splits, DESIGN.md section 1A) and the embedded emoji set all load
into one :class:`ImageCaptionSet`: a table of images and a table of captions, each caption
pointing at exactly one image. ``group_id`` ties near-duplicate images (emoji skin-tone
variants) so that they never straddle a split; for MSCOCO / Flickr30k it is the image id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

IMAGE_COLUMNS = ["image_id", "split", "path", "group_id"]
CAPTION_COLUMNS = ["text_id", "image_id", "split", "text"]


class CollectionError(ValueError):
    """The collection breaks an invariant (duplicate id, empty caption, dangling reference)."""


@dataclass(frozen=True)
class ImageCaptionSet:
    """Images and their captions; ids are strings, unique within their table."""

    name: str
    images: pd.DataFrame  # columns IMAGE_COLUMNS (+ optional "gallery"); path may be empty for feature-file collections
    captions: pd.DataFrame  # columns CAPTION_COLUMNS

    def __post_init__(self) -> None:
        validate_collection(self.images, self.captions, self.name)

    def split(self, name: str) -> "ImageCaptionSet":
        """The sub-collection of one split (``train``, ``val``, ``test`` ...)."""
        return self.splits((name,))

    def splits(self, names: tuple[str, ...] | list[str]) -> "ImageCaptionSet":
        """The sub-collection of several splits together (e.g. Karpathy ``train`` + ``restval``)."""
        img = self.images[self.images["split"].isin(names)].reset_index(drop=True)
        cap = self.captions[self.captions["split"].isin(names)].reset_index(drop=True)
        return ImageCaptionSet(f"{self.name}[{'+'.join(names)}]", img, cap)

    @property
    def image_gallery(self) -> np.ndarray | None:
        """Each image's gallery (the emoji default: its art style), or None when all images form one."""
        return self.images["gallery"].to_numpy() if "gallery" in self.images.columns else None

    def counts(self) -> dict:
        """Images, captions and groups per split."""
        out = {}
        for s in sorted(self.images["split"].unique()):
            img = self.images[self.images["split"] == s]
            out[s] = {
                "images": int(len(img)),
                "captions": int((self.captions["split"] == s).sum()),
                "groups": int(img["group_id"].nunique()),
            }
        return out

    def qrels(self) -> tuple[np.ndarray, np.ndarray]:
        """Index pairs ``(caption_row, image_row)`` of every relevant caption-image pair."""
        pos = pd.Series(np.arange(len(self.images)), index=self.images["image_id"].to_numpy())
        return np.arange(len(self.captions)), pos.loc[self.captions["image_id"].to_numpy()].to_numpy()


def validate_collection(images: pd.DataFrame, captions: pd.DataFrame, name: str = "collection") -> None:
    """Raise :class:`CollectionError` naming the first bad item and the fix."""
    for cols, df, what in ((IMAGE_COLUMNS, images, "images"), (CAPTION_COLUMNS, captions, "captions")):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise CollectionError(f"{name}: {what} table lacks column(s) {missing}")
    dup = images["image_id"][images["image_id"].duplicated()]
    if len(dup):
        raise CollectionError(
            f"{name}: duplicate image id {dup.iloc[0]!r} ({len(dup)} duplicates); ids must be unique - fix the "
            "source file or drop the repeated entry"
        )
    dup = captions["text_id"][captions["text_id"].duplicated()]
    if len(dup):
        raise CollectionError(
            f"{name}: duplicate caption id {dup.iloc[0]!r} ({len(dup)} duplicates); ids must be unique - fix the "
            "source file or drop the repeated entry"
        )
    text = captions["text"].fillna("").astype(str).str.strip()
    if (text == "").any():
        bad = captions.loc[text == "", "text_id"].iloc[0]
        raise CollectionError(
            f"{name}: caption {bad!r} is empty or missing; remove it from the source file or give it text"
        )
    known = set(images["image_id"])
    dangling = ~captions["image_id"].isin(known)
    if dangling.any():
        row = captions[dangling].iloc[0]
        raise CollectionError(
            f"{name}: caption {row['text_id']!r} points at image {row['image_id']!r}, which is not in the image "
            "table; ids of the two files do not match"
        )
    cap_split = captions.merge(images[["image_id", "split"]], on="image_id", suffixes=("", "_img"))
    wrong = cap_split["split"] != cap_split["split_img"]
    if wrong.any():
        row = cap_split[wrong].iloc[0]
        raise CollectionError(
            f"{name}: caption {row['text_id']!r} is in split {row['split']!r} but its image {row['image_id']!r} is "
            f"in {row['split_img']!r}"
        )
    # a held-out style's images are test images of another gallery: their groups are test groups
    leak = images.assign(split=images["split"].replace({"heldout": "test"})).groupby("group_id")["split"].nunique()
    if (leak > 1).any():
        raise CollectionError(
            f"{name}: variant group {leak[leak > 1].index[0]!r} spans several splits; split by group_id"
        )
