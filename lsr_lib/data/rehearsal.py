"""Synthetic dense features at the exact MSCOCO Karpathy sizes, for the paper-size rehearsal (issue 14).

Not data about anything: a stand-in with the paper path's shapes and files, so every stage can be
run and timed at full size on a machine without MSCOCO, BLIP or a GPU. It writes the layout of
the authors' released features (``lsr42/mscoco-*-dense``): ``img_embs.parquet`` and
``text_embs.parquet`` (ids and 256-d L2-normalised vectors) and ``dataset_meta.json`` (Karpathy
format, no image files), which ``encoder.kind: feature_files`` reads like the real download.

How the vectors are made, so that retrieval is not trivial and expansion masks behave like real ones:

- a vocabulary of real words (the caller passes them: whole words of the BERT-uncased vocabulary),
  each with a random 256-d direction, drawn with Zipf-like popularity (a few words are in many
  images, as "man" or "table" are in MSCOCO);
- an image is ``topic_words`` words; its vector is the normalised sum of their directions plus noise;
- a caption names ``caption_topic_words`` of its image's words plus one distractor word, in a short
  template ("a dog and a ball near grass"); its vector is the normalised sum of the named words'
  directions (the distractor at half weight) plus noise. Captions are near their own image, and
  near other images sharing words; their WordPiece tokens are real vocabulary entries.

Sizes (Karpathy MSCOCO, restval left out as the paper's training does): train 82,783 images /
414,113 captions, val and test 5,000 / 25,010 each; ``fraction`` scales every split.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..storage.feature_files import write_embeddings
from .collection import CAPTION_COLUMNS, IMAGE_COLUMNS, ImageCaptionSet
from .karpathy import write_karpathy

MSCOCO_KARPATHY = {"train": (82_783, 414_113), "val": (5_000, 25_010), "test": (5_000, 25_010)}  # (images, captions)
TEMPLATES = (
    "a {0} and a {1} near {2}",
    "{0} with {1} by the {2}",
    "the {0} next to a {1} and {2}",
    "a {0} {1} in a {2}",
)
FILES = ("img_embs.parquet", "text_embs.parquet", "dataset_meta.json")


def split_sizes(fraction: float) -> dict[str, tuple[int, int]]:
    """(images, captions) per split at ``fraction`` of the Karpathy MSCOCO sizes (at least one caption per image)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    out = {}
    for split, (n_img, n_cap) in MSCOCO_KARPATHY.items():
        i = max(1, round(n_img * fraction))
        out[split] = (i, max(i, round(n_cap * fraction)))
    return out


def synthetic_mscoco(
    words: list[str],
    fraction: float = 1.0,
    seed: int = 0,
    dim: int = 256,
    topic_words: int = 4,
    caption_topic_words: int = 3,
    image_noise: float = 2.5,
    text_noise: float = 4.0,
) -> tuple[ImageCaptionSet, np.ndarray, np.ndarray]:
    """The collection and its (N_img, dim) / (N_txt, dim) float32 L2-normalised vectors (rows in collection order)."""
    if caption_topic_words > topic_words or len(TEMPLATES[0].split("{")) - 1 != caption_topic_words:
        raise ValueError(
            "caption_topic_words must be "
            f"{len(TEMPLATES[0].split('{')) - 1} (the templates' slots) and at most topic_words"
        )
    words = np.asarray(words)
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal((len(words), dim)).astype(np.float32) / np.sqrt(dim)  # (W, dim)
    popularity = 1.0 / (np.arange(len(words)) + 20.0)
    popularity /= popularity.sum()
    img_rows, cap_rows, img_vecs, txt_vecs = [], [], [], []
    next_img = next_cap = 0
    for split, (n_img, n_cap) in split_sizes(fraction).items():
        topics = rng.choice(len(words), size=(n_img, topic_words), p=popularity)  # (n_img, K) word indices
        img = direction[topics].sum(1) + image_noise * rng.standard_normal((n_img, dim)).astype(np.float32) / np.sqrt(
            dim
        )
        counts = np.full(n_img, n_cap // n_img)
        counts[: n_cap - counts.sum()] += 1  # MSCOCO: a few images have a sixth or seventh caption
        owner = np.repeat(np.arange(n_img), counts)  # (n_cap,) image row of each caption
        # which of its image's words
        pick = np.argsort(rng.random((n_cap, topic_words)), axis=1)[:, :caption_topic_words]
        named = np.take_along_axis(topics[owner], pick, axis=1)  # (n_cap, k)
        distractor = rng.choice(len(words), size=n_cap, p=popularity)
        txt = (
            direction[named].sum(1)
            + 0.5 * direction[distractor]
            + text_noise * rng.standard_normal((n_cap, dim)).astype(np.float32) / np.sqrt(dim)
        )
        img_vecs.append(img)
        txt_vecs.append(txt)
        image_ids = np.arange(next_img, next_img + n_img).astype(str)
        img_rows += [(i, split, "", i) for i in image_ids]
        template = rng.integers(0, len(TEMPLATES), n_cap)
        texts = [TEMPLATES[t].format(*words[n]) + f" {words[d]}" for t, n, d in zip(template, named, distractor)]
        cap_rows += list(
            zip(np.arange(next_cap, next_cap + n_cap).astype(str), image_ids[owner], [split] * n_cap, texts)
        )
        next_img, next_cap = next_img + n_img, next_cap + n_cap
    unit = lambda m: (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    col = ImageCaptionSet(
        "mscoco", pd.DataFrame(img_rows, columns=IMAGE_COLUMNS), pd.DataFrame(cap_rows, columns=CAPTION_COLUMNS)
    )
    return col, unit(np.concatenate(img_vecs)), unit(np.concatenate(txt_vecs))


def write_synthetic_mscoco(out_dir: str | Path, words: list[str], fraction: float = 1.0, seed: int = 0, **kw) -> dict:
    """Write the three files of the released-features layout into ``out_dir`` (reused when already
    written with the same settings); returns the settings and split sizes."""
    out_dir = Path(out_dir)
    settings = {
        "fraction": fraction,
        "seed": seed,
        "n_words": len(words),
        "words_head": list(words[:5]),
        **kw,
        "sizes": split_sizes(fraction),
    }
    stamp = out_dir / "rehearsal.json"
    if (
        stamp.exists()
        and all((out_dir / f).exists() for f in FILES)
        and json.loads(stamp.read_text()) == json.loads(json.dumps(settings))
    ):
        return settings
    col, img, txt = synthetic_mscoco(words, fraction, seed, **kw)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    write_embeddings(out_dir / "img_embs.parquet", col.images["image_id"].tolist(), img)
    write_embeddings(out_dir / "text_embs.parquet", col.captions["text_id"].tolist(), txt)
    write_karpathy(col, out_dir / "dataset_meta.json")
    stamp.write_text(json.dumps(settings, indent=1) + "\n")  # last: a stamp means every file is complete
    return settings
