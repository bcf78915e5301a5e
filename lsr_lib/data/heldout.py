"""The in-style test set matched to a held-out art style (data/README.md, "Variant groups, the split ...").

The held-out style draws fewer emoji than a full in-style gallery holds, and R@k is easier in a smaller gallery,
so its numbers are set beside the in-style test restricted to the same emoji: ``test_matched_to_heldout``.
"""

from __future__ import annotations

import numpy as np

from .collection import ImageCaptionSet

MATCHED = "test_matched_to_heldout"  # the in-style test images of the emoji the held-out style draws


def matched_rows(test: ImageCaptionSet, heldout: ImageCaptionSet) -> tuple[np.ndarray, np.ndarray]:
    """(image rows, caption rows) of ``test`` whose emoji the held-out style also draws: the in-style numbers to
    set beside the held-out style's, on the same emoji (the held-out gallery is smaller, so its raw R@k is not
    comparable with a full in-style gallery's)."""
    key = lambda ids: ids.str.split("/", n=1).str[1]  # noqa: E731
    drawn = set(key(heldout.images["image_id"]))
    img = np.flatnonzero(key(test.images["image_id"]).isin(drawn).to_numpy())
    cap = np.flatnonzero(key(test.captions["image_id"]).isin(drawn).to_numpy())
    return img, cap


def subset(col: ImageCaptionSet, rows: tuple[np.ndarray, np.ndarray], name: str) -> ImageCaptionSet:
    """The images and captions of ``col`` at ``rows`` (see :func:`matched_rows`)."""
    return ImageCaptionSet(
        name, col.images.iloc[rows[0]].reset_index(drop=True), col.captions.iloc[rows[1]].reset_index(drop=True)
    )
