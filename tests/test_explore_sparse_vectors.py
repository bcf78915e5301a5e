"""The explorer's data functions (lsr_lib.stages.explore_sparse_vectors) on hand-made vectors, the real tokenizer and a
fake encoder."""

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
from PIL import Image

from lsr_lib.stages import explore_sparse_vectors as ex
from lsr_lib.index.sparse import load_or_build, read_meta

from sparse_helpers import vec

WORDS = ["red", "dog", "cat", "heart", "blue", "car", "happy", "face", "animal", "tree"]


def fake_encoder(tok):
    """Each of the text's own tokens at weight 1, plus the expansion term 'animal' at 0.5."""

    def encode(texts):
        rows = []
        for t in texts:
            ids = tok(t, add_special_tokens=False)["input_ids"]
            rows.append(vec(tok, {**{tok.convert_ids_to_tokens(i): 1.0 for i in ids}, "animal": 0.5}))
        return sp.vstack(rows).tocsr()

    return encode


@pytest.fixture(scope="module")
def model(tok, tmp_path_factory):
    rng = np.random.default_rng(3)
    folder = tmp_path_factory.mktemp("images")
    images = []
    for i in range(9):  # random weights on a few real words: no ties
        words = rng.choice(WORDS, size=4, replace=False)
        images.append(vec(tok, {w: float(rng.uniform(0.1, 2.0)) for w in words}))
    images.append(vec(tok, {"tree": 1.0}))  # shares no term with "red dog" queries
    paths = []
    for i in range(len(images)):
        p = folder / f"img{i}.png"
        Image.new("RGBA", (32, 32), (20 * i, 100, 200, 255)).save(p)
        paths.append(str(p))
    captions = ["red dog", "a happy dog", "blue car", "red heart", "cat face", "dog and cat"]
    cap_img = np.array(["i0", "i0", "i1", "i2", "i3", "i3"])
    cap_vecs = fake_encoder(tok)(captions)
    return ex.ExplorerModel(
        name="fake",
        encode_queries=fake_encoder(tok),
        image_vectors=sp.vstack(images).tocsr(),
        image_ids=np.array([f"i{i}" for i in range(len(images))]),
        image_paths=paths,
        caption_vectors=cap_vecs,
        captions=captions,
        caption_image_ids=cap_img,
        tokenizer=tok,
    )


def brute_force(q: sp.csr_matrix, docs: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Rows with a shared term, by score then row, and their scores."""
    s = (docs @ q.T).toarray().ravel()
    shares = np.asarray((docs.multiply(q) != 0).sum(1)).ravel() > 0
    rows = np.flatnonzero(shares)
    rows = rows[np.lexsort((rows, -s[rows]))]
    return rows, s[rows]


def test_query_terms_are_labelled_own_or_expansion(model):
    v = ex.query_view(model, "red dog", k=5)
    kinds = dict(zip(v["terms"]["term"], v["terms"]["kind"]))
    assert kinds == {"red": "own", "dog": "own", "animal": "expansion"}
    assert v["terms"]["term"].iloc[-1] == "animal"  # weight 0.5 below the own tokens' 1.0
    assert v["summary"]["expansion_weight_share"] == pytest.approx(0.5 / 2.5)
    assert (v["summary"]["own_terms_active"], v["summary"]["expansion_terms"], v["summary"]["nnz"]) == (2, 1, 3)
    assert v["terms"]["share"].sum() == pytest.approx(1.0)


@pytest.mark.parametrize("kind", [None, "scipy"])
def test_ranking_equals_brute_force(model, tok, kind):
    m = ex.ExplorerModel(
        **{**model.__dict__, "index": None if kind is None else ex.make_index(kind).build(model.image_vectors)}
    )
    q = fake_encoder(tok)(["red dog"])
    rows, scores = brute_force(q, m.image_vectors)
    v = ex.query_view(m, "red dog", k=20)
    assert v["images"]["row"].tolist() == rows.tolist()
    assert np.allclose(v["images"]["score"], scores, rtol=1e-5)
    assert v["images"]["image_id"].tolist() == [f"i{r}" for r in rows]
    assert v["images"]["path"].tolist() == [m.image_paths[r] for r in rows]
    assert "i9" not in v["images"]["image_id"].tolist()  # no shared term: not a candidate
    assert ex.query_view(m, "red dog", k=3)["images"]["row"].tolist() == rows[:3].tolist()


def test_contributions_sum_to_the_score(model, tok):
    v = ex.query_view(model, "red dog happy", k=6)
    q = fake_encoder(tok)(["red dog happy"])
    for (_, img), c in zip(v["images"].iterrows(), v["contributions"]):
        d = model.image_vectors[img["row"]]
        assert c["contribution"].sum() == pytest.approx(img["score"], rel=1e-5)
        assert c["contribution"].sum() == pytest.approx(float((q @ d.T).toarray()[0, 0]), rel=1e-5)
        assert np.allclose(c["contribution"], c["query_weight"] * c["doc_weight"])
        assert c["contribution"].is_monotonic_decreasing
        shared = set(q.indices) & set(d.indices)
        assert set(c["term_id"]) == shared
        assert img["top_terms"].split(" ")[0] == c["term"].iloc[0]


def test_a_caption_query_marks_its_own_image(model):
    v = ex.query_view(model, "Red Dog ", k=10)
    assert v["images"].loc[v["images"]["relevant"], "image_id"].tolist() == ["i0"]
    assert not ex.query_view(model, "red dogs", k=10)["images"]["relevant"].any()


def test_image_view(model, tok):
    img = vec(tok, {"dog": 2.0, "tree": 1.0, "happy": 0.5})  # i0's captions: "red dog", "a happy dog"
    m = ex.ExplorerModel(
        **{
            **model.__dict__,
            "image_vectors": sp.vstack([img, model.image_vectors[1:]]).tocsr(),
            "index": None,
            "caption_index": None,
        }
    )
    v = ex.image_view(m, 0, k=10)
    assert dict(zip(v["terms"]["term"], v["terms"]["kind"])) == {"dog": "caption", "tree": "other", "happy": "caption"}
    assert v["own_captions"] == ["red dog", "a happy dog"]
    rows, scores = brute_force(img, m.caption_vectors)
    assert v["captions"]["row"].tolist() == rows.tolist()
    assert np.allclose(v["captions"]["score"], scores, rtol=1e-5)
    assert v["captions"]["relevant"].tolist() == [m.caption_image_ids[r] == "i0" for r in rows]
    none = ex.ExplorerModel(**{**m.__dict__, "caption_vectors": None, "caption_index": None})
    assert ex.image_view(none, 0)["captions"] is None


def test_compare_models_side_by_side(model, tok):
    half = ex.ExplorerModel(
        **{**model.__dict__, "name": "half", "image_vectors": model.image_vectors * 0.5, "index": None}
    )
    frame = ex.compare_models([model, half], "red dog", k=4, n_terms=3)
    assert list(frame.columns.get_level_values(0).unique()) == ["fake", "half"]
    assert list(frame.index) == [1, 2, 3, 4]
    assert frame[("fake", "image_id")].tolist() == ex.query_view(model, "red dog", k=4)["images"]["image_id"].tolist()
    assert np.allclose(frame[("half", "score")], frame[("fake", "score")] * 0.5)
    # tie at 1.0: lower term id first (red 2417 < dog 3899)
    assert frame[("fake", "term")].iloc[:3].tolist() == ["red", "dog", "animal"]
    assert frame[("fake", "term")].isna().iloc[3]


def test_model_checks_its_shapes(model):
    with pytest.raises(ValueError, match="image vectors"):
        ex.ExplorerModel(**{**model.__dict__, "image_paths": model.image_paths[:-1]})
    with pytest.raises(ValueError, match="caption vectors"):
        ex.ExplorerModel(**{**model.__dict__, "captions": model.captions[:-1]})


def test_saved_index_is_used_only_when_it_matches(model, tmp_path):
    path = tmp_path / "numba"
    saved = load_or_build("numba", path, model.image_vectors)
    idx = ex.saved_or_built_index(path, model.image_vectors)
    assert idx.fingerprint == saved.fingerprint and idx.n_docs == model.image_vectors.shape[0]
    other = model.image_vectors[:5]
    before = read_meta(path)
    fresh = ex.saved_or_built_index(path, other)
    assert fresh.n_docs == 5 and read_meta(path) == before  # built in memory; stage 04's files untouched
    assert ex.saved_or_built_index(tmp_path / "absent", other).n_docs == 5


def test_missing_stage_05_says_which_stage_to_run(model, monkeypatch):
    cfg = SimpleNamespace(profile="smoke")

    def unbuilt(cfg, split="test"):
        raise FileNotFoundError("data/cache/smoke/suggest/m1 is missing")

    models, why = ex.suggestion_models(cfg, loader=unbuilt)
    assert models == [] and "m1 is missing" in why and "--stages 05" in why

    models, why = ex.suggestion_models(cfg, loader=lambda cfg, split="test": [])  # nothing built yet
    assert models == [] and "--profile smoke --stages 05" in why
    assert ex.suggestion_models(cfg, loader=lambda cfg, split="test": [model]) == ([model], None)

    monkeypatch.setattr(ex, "d2s_models", lambda cfg, split="test": [model])
    with pytest.warns(UserWarning, match="stage 05"):
        assert ex.available_models(cfg, loader=unbuilt) == [model]
    assert len(ex.available_models(cfg, loader=lambda cfg, split="test": [model, model])) == 3


def test_d2s_models_say_which_stage_to_run(tmp_path):
    from lsr_lib.config.profiles import load_config

    cfg = load_config("smoke", overrides={"data": {"root": str(tmp_path)}})
    with pytest.raises(FileNotFoundError, match="01_cache_dense_features"):
        ex.d2s_models(cfg)


def test_image_choices(model):
    choices = ex.image_choices(model)
    assert choices[0] == ("i0 · red dog", 0) and choices[9] == ("i9", 9)


def test_widget_shows_the_views(model):
    pytest.importorskip("ipywidgets")
    from lsr_lib.stages.explore_widgets import explorer_widget

    other = ex.ExplorerModel(
        **{**model.__dict__, "name": "other model", "image_vectors": model.image_vectors * 0.5, "index": None}
    )
    tabs = explorer_widget([model, other], text="red dog", k=3)
    query_html = tabs.children[0].children[1].value
    top = ex.query_view(model, "red dog", k=3)["images"]
    assert all(
        f"#{r}  {s:.2f}" in query_html and f">{i}<" in query_html
        for r, s, i in zip(top["rank"], top["score"], top["image_id"])
    )
    assert "expansion" in query_html and "data:image/png;base64," in query_html
    box = tabs.children[0].children[0]
    box.children[0].value = "blue car"  # typing a new query redraws the view and the compare tab
    assert tabs.children[0].children[1].value != query_html
    assert "blue car" not in tabs.children[2].children[1].value and "other model" in tabs.children[2].children[1].value
    assert tabs.children[2].children[0].children[0].value == "blue car"
    assert "red dog" in tabs.children[1].children[1].value  # image tab: i0 and its captions
    tabs.children[1].children[0].children[1].value = 3
    assert "cat face" in tabs.children[1].children[1].value
    before = tabs.children[1].children[1].value
    tabs.children[1].children[0].children[0].value = 1  # the other model, same image: its (halved) weights
    assert tabs.children[1].children[0].children[1].value == 3 and tabs.children[1].children[1].value != before


def test_views_of_a_collection_without_image_files_draw_a_placeholder(tmp_path):
    from lsr_lib.results.figures import plt
    from lsr_lib.stages.explore_figures import _image

    fig, axes = plt.subplots(1, 2)
    _image(axes[0], "", "released features: no path")
    _image(axes[1], str(tmp_path / "gone.png"), "deleted file")
    assert all(any("no image file" in t.get_text() for t in ax.texts) for ax in axes)
    plt.close(fig)


# ---- symbol tokens (latent dimensions) in the views ----------------------------------------------


def symbol_model(model, tok):
    """``model`` whose queries also carry "©" (2.0) and "•" (0.1), and whose first image carries "©" (5.0)."""
    encode = fake_encoder(tok)

    def encode_with_symbols(texts):
        return (encode(texts) + sp.vstack([vec(tok, {"©": 2.0, "•": 0.1})] * len(texts))).tocsr()

    images = model.image_vectors.tolil()
    images[0, tok.convert_tokens_to_ids("©")] = 5.0
    return ex.ExplorerModel(
        **{
            **model.__dict__,
            "name": "with symbols",
            "encode_queries": encode_with_symbols,
            "caption_vectors": encode_with_symbols(model.captions),
            "image_vectors": images.tocsr(),
            "index": None,
            "caption_index": None,
        }
    )


def test_symbol_tokens_are_stage_03s_punctuation_category(tok):
    from lsr_lib.analysis.semantic_deviation import CATEGORIES, term_categories

    mask = ex.symbol_mask(tok)
    assert np.array_equal(mask, term_categories(tok) == CATEGORIES.index("punctuation"))
    assert all(ex.is_symbol_term(t) for t in ["©", "•", "—", "|", ",", "..."])
    assert not any(ex.is_symbol_term(t) for t in ["cat", "##s", "##•", "[CLS]", "[unused0]", "2", "x2"])


def test_topk_symbol_share_follows_its_definition(tok):
    rows = sp.vstack(
        [
            vec(tok, {"©": 3.0, "red": 1.0, "dog": 0.5, "•": 0.25}),
            vec(tok, {"red": 1.0}),
            sp.csr_matrix((1, 30522), dtype=np.float32),  # empty: NaN
            vec(tok, {"•": 1.0, "red": 1.0}),  # tie: the lower term id first ("•" 1528 < "red" 2417)
        ]
    ).tocsr()
    mask = ex.symbol_mask(tok)
    assert tok.convert_tokens_to_ids("•") < tok.convert_tokens_to_ids("red")
    assert np.allclose(ex.topk_symbol_share(rows, mask, 2)[:2], [3.0 / 4.0, 0.0])
    assert ex.topk_symbol_share(rows, mask, 10)[0] == pytest.approx(3.25 / 4.75)
    assert np.isnan(ex.topk_symbol_share(rows, mask, 2)[2])
    assert ex.topk_symbol_share(rows, mask, 1)[3] == 1.0 and ex.topk_symbol_share(rows, mask, 2)[3] == 0.5
    with pytest.raises(ValueError, match="wrong tokenizer"):
        ex.topk_symbol_share(rows, mask[:100], 2)


def test_symbol_shares_per_model_queries_and_documents(model, tok):
    sym = symbol_model(model, tok)
    no_captions = ex.ExplorerModel(**{**sym.__dict__, "name": "no captions", "caption_vectors": None})
    shares = ex.symbol_shares([model, sym, no_captions], k=3)
    assert shares.loc["fake", ["queries", "documents"]].tolist() == [0.0, 0.0]
    mask = ex.symbol_mask(tok)
    expected_q = np.mean(ex.topk_symbol_share(sym.caption_vectors, mask, 3))
    expected_d = np.mean(ex.topk_symbol_share(sym.image_vectors, mask, 3))
    assert shares.loc["with symbols", "queries"] == pytest.approx(expected_q) and expected_q > 0.3
    assert shares.loc["with symbols", "documents"] == pytest.approx(expected_d) and 0 < expected_d < 0.5
    assert np.isnan(shares.loc["no captions", "queries"]) and (shares["k"] == 3).all()


def test_a_view_with_symbol_tokens_says_so_in_one_line(model, tok):
    assert ex.symbol_note(ex.query_view(model, "red dog", k=3)) is None
    sym = symbol_model(model, tok)
    view = ex.query_view(sym, "red dog", k=3, n_terms=10)  # ©, red, dog, animal, •
    weights = dict(zip(view["terms"]["term"], view["terms"]["weight"]))
    share = (weights["©"] + weights["•"]) / sum(weights.values())
    note = ex.symbol_note(view)
    assert "\n" not in note and note.startswith("© •: symbol tokens") and f"{share:.0%} of this query's top-5" in note
    shares = ex.symbol_shares([sym], k=10)
    with_split = ex.symbol_note(view, shares)
    q, d = shares.loc["with symbols", ["queries", "documents"]]
    assert with_split.startswith(note) and f"{q:.0%} of queries' and {d:.0%} of documents' top-10" in with_split
    assert ex.lexical_terms(view["terms"])["term"].tolist() == ["red", "dog", "animal"]
    assert view["summary"] == ex.query_view(sym, "red dog", k=3, n_terms=3)["summary"]  # what stage 06 writes


def test_compare_tab_explains_symbol_tokens_and_hides_them_on_request(model, tok):
    pytest.importorskip("ipywidgets")
    from lsr_lib.stages.explore_widgets import explorer_widget

    tabs = explorer_widget([model, symbol_model(model, tok)], text="red dog", k=3)
    compare = tabs.children[2]
    page = compare.children[1].value
    assert page.count("symbol tokens, latent dimensions") == 1  # only under "with symbols"
    assert ">©</td>" in page and ">red</td>" in page
    lexical = compare.children[0].children[2]
    assert lexical.description == "lexical terms only"
    lexical.value = True
    hidden = compare.children[1].value
    assert ">©</td>" not in hidden and ">•</td>" not in hidden and ">red</td>" in hidden and ">animal</td>" in hidden
    assert "latent dimensions" in hidden  # the note still says what was hidden


def test_compare_figure_names_the_symbol_tokens(model, tok):
    from lsr_lib.results.figures import plt
    from lsr_lib.stages.explore_figures import plot_compare

    sym = symbol_model(model, tok)
    fig = plot_compare({m.name: ex.query_view(m, "red dog", k=3) for m in (model, sym)}, n_images=2)
    titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")]
    assert len(titles) == 2 and "symbol" not in titles[0] and "© •: symbol tokens" in titles[1]
    plt.close(fig)
