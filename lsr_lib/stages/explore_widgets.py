"""Interactive explorer, widget side: a thin ipywidgets layer over ``lsr_lib.analysis.explorer_views`` (issue 8).

:func:`explorer_widget` gives three tabs: *Query* (type a text, pick a model: its top terms, own
tokens blue and expansion orange, and the top-k images with the terms behind each score),
*Image* (pick an image: its top terms, green where they occur in its captions, and the captions
it retrieves, ✓ for its own) and *Compare* (the same text through several models side by side; a
line under a model whose top terms include symbol tokens says they are latent dimensions, with their
measured share, and *lexical terms only* hides them from the term tables).
All numbers come from the view functions; this module only turns their frames into HTML.
"""

from __future__ import annotations

import base64
import html
import io
from functools import lru_cache
from typing import Optional, Sequence

import pandas as pd

from ..analysis.explorer_views import ExplorerModel, image_choices, image_view, query_view
from .explore_sparse_vectors import lexical_terms, symbol_note, symbol_shares

COMPARE_TERMS = 10  # terms per model in the Compare tab
KIND_CSS = {"own": "#1f77b4", "expansion": "#ff7f0e", "caption": "#2ca02c", "other": "#7f7f7f"}


@lru_cache(maxsize=2048)
def thumbnail(path: str, size: int = 88) -> str:
    """A ``data:`` URI of the image scaled to ``size`` pixels, transparent parts on white."""
    from PIL import Image

    img = Image.open(path).convert("RGBA")
    bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
    bg.alpha_composite(img)
    bg = bg.convert("RGB")
    bg.thumbnail((size, size))
    buf = io.BytesIO()
    bg.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def terms_html(terms: pd.DataFrame) -> str:
    """A term table as rows of: coloured term, a weight bar, the weight."""
    top = float(terms["weight"].max()) if len(terms) else 1.0
    rows = []
    for _, r in terms.iterrows():
        color = KIND_CSS.get(r["kind"], "#7f7f7f")
        bar = f"<div style='background:{color};height:9px;width:{100 * r['weight'] / top:.0f}px'></div>"
        rows.append(
            f"<tr><td style='color:{color};font-weight:600;padding-right:6px'>{html.escape(str(r['term']))}</td>"
            f"<td>{bar}</td>"
            f"<td style='padding-left:4px'>{r['weight']:.2f}</td><td style='color:#888'>{r['kind'] or ''}</td></tr>"
        )
    return "<table style='font-size:12px;border-collapse:collapse;line-height:1.35'>" + "".join(rows) + "</table>"


def _card(path: str, head: str, sub: str, foot: str = "", size: int = 88) -> str:
    """One retrieved image: thumbnail, ``head`` (rank, score) in bold, ``sub`` (its id), ``foot`` (terms)."""
    return (
        f"<div style='width:{size + 44}px;margin:4px;text-align:center;font-size:11px;line-height:1.25'><img "
        f"src='{thumbnail(path, size)}' width='{size}'/>"
        f"<div style='font-weight:600'>{html.escape(head)}</div><div style='color:#777;font-size:10px;"
        f"word-break:break-all'>{html.escape(sub)}</div>"
        f"<div style='color:#333'>{html.escape(foot)}</div></div>"
    )


def query_html(view: dict) -> str:
    """The query view: a summary line, the term table, and the image cards."""
    s = view["summary"]
    head = (
        f"<b>{html.escape(view['model'])}</b>: {s['nnz']} active terms, {s['own_terms_active']} own tokens, "
        f"{s['expansion_terms']} expansion ({s['expansion_weight_share']:.0%} of the weight)"
    )
    cards = [
        _card(
            r["path"],
            f"#{r['rank']}  {r['score']:.2f}{' ✓' if r['relevant'] else ''}",
            str(r["image_id"]),
            r["top_terms"],
        )
        for _, r in view["images"].iterrows()
    ]
    return (
        f"<div style='line-height:1.4'>{head}<br/><span style='font-size:11px;color:#555'>under each image: the "
        "terms behind its score (q_v x d_v)</span></div>"
        f"<div style='display:flex;gap:18px;align-items:flex-start;line-height:1.25'><div>{terms_html(view['terms'])}"
        "</div>"
        "<div style='display:flex;flex-wrap:wrap;"
        f"max-width:720px'>{''.join(cards) or 'no image shares a term with this query'}</div></div>"
    )


def image_html(view: dict) -> str:
    """The image view: the image and its captions, its term table, the captions it retrieves."""
    own = "".join(f"<li>{html.escape(c)}</li>" for c in view["own_captions"])
    left = (
        f"<div style='font-size:12px'><img src='{thumbnail(view['path'], 160)}' "
        f"width='160'/><div><b>{html.escape(str(view['image_id']))}</b></div><ul "
        f"style='padding-left:16px'>{own}</ul></div>"
    )
    caps = view["captions"]
    if caps is None:
        right = "<i>this model has no caption vectors</i>"
    else:
        items = "".join(
            f"<li>{'✓ ' if r['relevant'] else ''}{html.escape(r['caption'])} <span "
            f"style='color:#555'>({r['score']:.2f}: {html.escape(r['top_terms'])})</span></li>"
            for _, r in caps.iterrows()
        )
        right = f"<div style='font-size:12px'><b>captions retrieved by the image vector</b><ol>{items}</ol></div>"
    return (
        f"<div style='display:flex;gap:18px;align-items:flex-start;line-height:1.3'>{left}"
        f"<div>{terms_html(view['terms'])}</div>{right}</div>"
    )


def compare_html(
    views: dict[str, dict],
    n_images: int = 6,
    n_terms: int = 10,
    shares: Optional[pd.DataFrame] = None,
    lexical_only: bool = False,
) -> str:
    """One column per model (wrapping onto new lines): summary, its top ``n_terms`` terms (without symbol tokens when
    ``lexical_only``), a line on the symbol tokens among them (``symbol_note``; ``shares``: ``symbol_shares``), and its
    first images."""
    cols = []
    for name, v in views.items():
        s = v["summary"]
        top = v["terms"].head(n_terms)
        shown = lexical_terms(v["terms"]).head(n_terms) if lexical_only else top
        note = symbol_note({**v, "terms": top}, shares)
        note_html = f"<div style='font-size:10px;color:#666;margin:2px 0 4px'>{html.escape(note)}</div>" if note else ""
        cards = "".join(
            _card(
                r["path"],
                f"#{r['rank']}  {r['score']:.2f}{' ✓' if r['relevant'] else ''}",
                str(r["image_id"]),
                size=64,
            )
            for _, r in v["images"].head(n_images).iterrows()
        )
        cols.append(
            "<div style='border-left:1px solid #ddd;padding-left:8px;width:300px;margin-bottom:10px'>"
            f"<b>{html.escape(name)}</b><div style='font-size:11px'>{s['nnz']} terms, "
            f"{s['expansion_weight_share']:.0%} expansion</div>"
            f"{terms_html(shown)}{note_html}<div style='display:flex;flex-wrap:wrap;"
            f"max-width:320px'>{cards or '<i>no image shares a term with this query</i>'}</div></div>"
        )
    return (
        f"<div style='display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start;line-height:1.25'>{''.join(cols)}"
        "</div>"
    )


def _error(err: Exception) -> str:
    return f"<span style='color:#b00'>{html.escape(type(err).__name__)}: {html.escape(str(err))}</span>"


def explorer_widget(models: Sequence[ExplorerModel], text: str = "", k: int = 8, n_terms: int = 15):
    """The explorer as an ipywidgets Tab (Query / Image / Compare) over ``models``."""
    import ipywidgets as w

    models = list(models)
    if not models:
        raise ValueError("no models to explore: run stage 02 (and stage 05 for M1-M4) first")
    names = [(m.name, i) for i, m in enumerate(models)]
    query = w.Text(
        value=text,
        placeholder="type a query and press Enter",
        description="query",
        continuous_update=False,
        layout=w.Layout(width="520px"),
    )
    model = w.Dropdown(options=names, description="model")
    top_k = w.IntSlider(value=k, min=1, max=24, description="k")
    q_out = w.HTML()

    def show_query(_=None):
        try:
            q_out.value = (
                query_html(query_view(models[model.value], query.value, top_k.value, n_terms))
                if query.value.strip()
                else ""
            )
        except Exception as err:  # shown in the widget, the kernel stays usable
            q_out.value = _error(err)

    img_model = w.Dropdown(options=names, description="model")
    picker = w.Dropdown(options=image_choices(models[0]), description="image", layout=w.Layout(width="520px"))
    i_out = w.HTML()

    def show_image(_=None):
        try:
            i_out.value = image_html(image_view(models[img_model.value], picker.value, top_k.value, n_terms))
        except Exception as err:
            i_out.value = _error(err)

    def new_image_model(_=None):
        picker.options = image_choices(models[img_model.value])  # may keep picker.value: redraw here
        show_image()

    cmp_query = w.Text(value=text, description="query", continuous_update=False, layout=w.Layout(width="520px"))
    w.link((query, "value"), (cmp_query, "value"))
    chosen = w.SelectMultiple(
        options=names, value=tuple(i for _, i in names), description="models", rows=min(6, len(names))
    )
    lexical = w.Checkbox(value=False, description="lexical terms only", indent=False)
    c_out = w.HTML()
    shares = symbol_shares(models, COMPARE_TERMS)  # once: every model's stored queries and documents

    def show_compare(_=None):
        try:
            views = (
                {  # extra terms, so that the lexical-only table still shows COMPARE_TERMS
                    models[i].name: query_view(models[i], cmp_query.value, top_k.value, 3 * COMPARE_TERMS)
                    for i in chosen.value
                }
                if cmp_query.value.strip()
                else {}
            )
            c_out.value = (
                compare_html(views, n_terms=COMPARE_TERMS, shares=shares, lexical_only=lexical.value) if views else ""
            )
        except Exception as err:
            c_out.value = _error(err)

    for widget, fn in (
        (query, show_query),
        (model, show_query),
        (top_k, show_query),
        (picker, show_image),
        (img_model, new_image_model),
        (top_k, show_image),
        (cmp_query, show_compare),
        (chosen, show_compare),
        (lexical, show_compare),
        (top_k, show_compare),
    ):
        widget.observe(fn, names="value")
    show_query(), show_image(), show_compare()
    tabs = w.Tab(
        children=[
            w.VBox([w.HBox([query, model, top_k]), q_out]),
            w.VBox([w.HBox([img_model, picker]), i_out]),
            w.VBox([w.HBox([cmp_query, chosen, lexical]), c_out]),
        ]
    )
    for i, title in enumerate(("Query", "Image", "Compare")):
        tabs.set_title(i, title)
    return tabs
