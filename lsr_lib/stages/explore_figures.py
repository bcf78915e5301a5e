"""Static figures of the explorer's views (``lsr_lib.stages.explore_sparse_vectors``), for papermill / nbval runs and
papers.

Each function draws one view dict as a matplotlib figure: the same content the widgets show in
JupyterLab. Colours: a text's own tokens blue, expansion terms orange; an image's terms that occur
in its captions green, others grey.
"""

from __future__ import annotations

import textwrap
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.patches import Patch, Rectangle

from ..results.figures import plt
from .explore_sparse_vectors import symbol_note

KIND_COLORS = {
    "own": "tab:blue",
    "expansion": "tab:orange",
    "caption": "tab:green",
    "other": "tab:gray",
    None: "tab:gray",
}


@lru_cache(maxsize=512)
def load_rgb(path: str) -> np.ndarray:
    """An image as (H, W, 3) uint8, transparent parts on white."""
    from PIL import Image

    img = Image.open(path).convert("RGBA")
    bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
    bg.alpha_composite(img)
    return np.asarray(bg.convert("RGB"))


def plot_terms(terms: pd.DataFrame, ax, title: str = "") -> None:
    """Horizontal bars of a term table (``explorer.term_table``), coloured by kind, best at the top."""
    t = terms.iloc[::-1]
    ax.barh(range(len(t)), t["weight"], height=0.75, color=[KIND_COLORS.get(k, "tab:gray") for k in t["kind"]])
    ax.set_yticks(range(len(t)), t["term"], fontsize=8)
    ax.set_ylim(len(t) - 0.5 - max(len(t), 8), len(t) - 0.5)  # same bar height however few terms
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("weight", fontsize=8)
    kinds = [k for k in dict.fromkeys(terms["kind"]) if k is not None]
    if kinds:
        ax.legend(
            handles=[Patch(color=KIND_COLORS.get(k, "tab:gray"), label=k) for k in kinds],
            fontsize=7,
            loc="lower right",
            frameon=True,
        )
    ax.set_title(title, fontsize=9, loc="left")


def short_id(image_id, width: int = 16) -> str:
    """A long image id wrapped at its hyphens onto at most two lines."""
    lines = textwrap.wrap(str(image_id), width, break_on_hyphens=True)
    return "\n".join(lines[:2]) + ("…" if len(lines) > 2 else "")


def _note(ax, text: str) -> None:
    ax.axis("off")
    ax.text(0, 0.5, text, fontsize=8, color="0.4")


def _image(ax, path: str, title: str, fontsize: float = 7) -> None:
    """The image, or a grey "no image file" box where the collection has only features (released
    features without the images, the rehearsal) or the file is gone."""
    if path and Path(path).is_file():
        ax.imshow(load_rgb(path))
    else:
        ax.add_patch(Rectangle((0, 0), 1, 1, color="0.92"))
        ax.text(0.5, 0.5, "no image file\n(features only)", ha="center", va="center", fontsize=fontsize, color="0.4")
    ax.set_title(title, fontsize=fontsize)
    ax.axis("off")


def plot_query_view(view: dict, ncols: int = 4, n_contrib: int = 3):
    """A query's top terms (left) and its retrieved images, each with the terms behind its score."""
    images = view["images"]
    n = max(len(images), 1)
    nrows = (n + ncols - 1) // ncols
    fig = plt.figure(figsize=(3.2 + 1.9 * ncols, 2.9 * nrows + 0.6), layout="constrained")
    gs = fig.add_gridspec(2 * nrows, ncols + 1, width_ratios=[1.7] + [1] * ncols, height_ratios=[1, 0.5] * nrows)
    s = view["summary"]
    plot_terms(
        view["terms"],
        fig.add_subplot(gs[:, 0]),
        f"{s['nnz']} terms, {s['expansion_weight_share']:.0%} of weight on expansion",
    )
    for j, (_, r) in enumerate(images.iterrows()):
        row, col = divmod(j, ncols)
        mark = " ✓" if r["relevant"] else ""
        _image(
            fig.add_subplot(gs[2 * row, col + 1]),
            r["path"],
            f"#{r['rank']} {short_id(r['image_id'], 22)}{mark}\nscore {r['score']:.2f}",
        )
        c = view["contributions"][j].head(n_contrib)
        lines = [f"{t:<10.10s} {v:5.2f}" for t, v in zip(c["term"], c["contribution"])]
        txt = fig.add_subplot(gs[2 * row + 1, col + 1])
        txt.axis("off")
        txt.text(0.5, 1.0, "\n".join(lines), ha="center", va="top", fontsize=7, family="monospace")
    if images.empty:
        _note(fig.add_subplot(gs[0, 1:]), "no image shares a term with this query")
    fig.suptitle(f"{view['model']}: “{view['text']}”", fontsize=10, x=0.02, ha="left")
    return fig


def plot_image_view(view: dict, n_captions: int = 8):
    """An image, its top terms, and the captions its vector retrieves (✓: one of its own captions)."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), gridspec_kw={"width_ratios": [1, 1.3, 2.4]}, layout="constrained")
    own = view["own_captions"]
    _image(axes[0], view["path"], "\n".join(textwrap.wrap(f"{view['image_id']}: {own[0] if own else ''}", 28)[:3]), 8)
    plot_terms(view["terms"], axes[1], f"{view['summary']['nnz']} terms")
    ax = axes[2]
    ax.axis("off")
    caps = view["captions"]
    if caps is None:
        ax.text(0, 1, "this model has no caption vectors", va="top", fontsize=8)
    else:
        lines = [
            f"{r['rank']:>2}. {'✓' if r['relevant'] else ' '} {r['score']:5.2f}  {textwrap.shorten(r['caption'], 38)}"
            for _, r in caps.head(n_captions).iterrows()
        ]
        ax.text(
            0,
            1,
            "captions retrieved by the image vector\n\n" + "\n".join(lines),
            va="top",
            fontsize=8,
            family="monospace",
        )
    fig.suptitle(view["model"], fontsize=10, x=0.02, ha="left")
    return fig


def plot_compare(views: dict[str, dict], n_images: int = 5):
    """One row per model for the same query: its top terms and its first retrieved images; a second title line where
    the top terms include symbol tokens (latent dimensions, ``symbol_note``)."""
    names = list(views)
    fig = plt.figure(figsize=(3.4 + 1.6 * n_images, 2.6 * len(names) + 0.5), layout="constrained")
    gs = fig.add_gridspec(len(names), n_images + 1, width_ratios=[1.9] + [1] * n_images)
    for i, name in enumerate(names):
        v = views[name]
        s = v["summary"]
        note = symbol_note(v, short=True)
        plot_terms(
            v["terms"],
            fig.add_subplot(gs[i, 0]),
            f"{name}: {s['nnz']} terms, {s['expansion_weight_share']:.0%} expansion" + (f"\n{note}" if note else ""),
        )
        for j, (_, r) in enumerate(v["images"].head(n_images).iterrows()):
            _image(
                fig.add_subplot(gs[i, j + 1]),
                r["path"],
                f"#{r['rank']} {r['score']:.2f}{' ✓' if r['relevant'] else ''}\n{short_id(r['image_id'])}",
            )
        if v["images"].empty:
            _note(fig.add_subplot(gs[i, 1:]), "no image shares a term with this query")
    text = next(iter(views.values()))["text"] if views else ""
    fig.suptitle(f"“{text}” through each model", fontsize=10, x=0.02, ha="left")
    return fig
