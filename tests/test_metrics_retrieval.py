"""R@k / MRR@10 with the pessimistic tie rule, against hand counts and ir_measures."""

import ir_measures
import numpy as np
import pytest
import torch
from ir_measures import RR, Qrel, ScoredDoc, Success

from lsr_lib.metrics.retrieval import evaluate_both_directions, first_relevant_rank, metrics_from_ranks


def test_hand_computed_ranks():
    scores = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.3, 0.8], [0.5, 0.5, 0.5]])
    relevant = torch.tensor([[True, False, False], [True, False, False], [False, True, False]])
    # query 2: all tied; the relevant doc is ranked after both tied non-relevant docs
    assert first_relevant_rank(scores, relevant).tolist() == [1, 3, 3]
    m = metrics_from_ranks(np.array([1, 3, 3]), ks=(1, 5))
    assert m["R@1"] == pytest.approx(100 / 3) and m["R@5"] == 100
    assert m["MRR@10"] == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)


def test_tie_is_not_a_hit():
    # two identical images: a caption of the second must not get R@1 from the tie
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    res = evaluate_both_directions(img, txt, np.array(["b", "a", "c"]), np.array(["a", "b", "c"]), ks=(1, 2))
    # captions of a and b tie between the two identical images: neither is a hit at 1
    assert res["text_to_image"]["R@1"] == pytest.approx(100 / 3) and res["text_to_image"]["R@2"] == 100.0


def test_matches_ir_measures_without_ties():
    gen = torch.Generator().manual_seed(0)
    img = torch.randn(30, 8, generator=gen)
    txt = torch.randn(70, 8, generator=gen)
    owner = np.array([f"i{k % 30}" for k in range(70)])
    image_ids = np.array([f"i{k}" for k in range(30)])
    ours = evaluate_both_directions(img, txt, owner, image_ids)
    scores = (txt @ img.T).numpy()
    qrels = [Qrel(f"t{q}", owner[q], 1) for q in range(70)]
    run = [ScoredDoc(f"t{q}", image_ids[d], float(scores[q, d])) for q in range(70) for d in range(30)]
    ref = ir_measures.calc_aggregate([Success @ 1, Success @ 5, Success @ 10, RR @ 10], qrels, run)
    t2i = ours["text_to_image"]
    assert t2i["R@1"] == pytest.approx(100 * ref[Success @ 1])
    assert t2i["R@5"] == pytest.approx(100 * ref[Success @ 5])
    assert t2i["R@10"] == pytest.approx(100 * ref[Success @ 10])
    assert t2i["MRR@10"] == pytest.approx(ref[RR @ 10])
    # image -> text: any of the image's captions counts
    qrels = [Qrel(image_ids[d], f"t{q}", 1) for q in range(70) for d in range(30) if owner[q] == image_ids[d]]
    run = [ScoredDoc(image_ids[d], f"t{q}", float(scores[q, d])) for q in range(70) for d in range(30)]
    ref = ir_measures.calc_aggregate([Success @ 5, RR @ 10], qrels, run)
    assert ours["image_to_text"]["R@5"] == pytest.approx(100 * ref[Success @ 5])
    assert ours["image_to_text"]["MRR@10"] == pytest.approx(ref[RR @ 10])


def test_nan_scores_and_missing_relevant_are_errors():
    with pytest.raises(ValueError, match="NaN"):
        first_relevant_rank(torch.tensor([[float("nan"), 1.0]]), torch.tensor([[True, False]]))
    with pytest.raises(ValueError, match="no relevant item"):
        first_relevant_rank(torch.tensor([[0.0, 1.0]]), torch.tensor([[False, False]]))


def test_evaluate_collection_keeps_galleries_apart():
    from types import SimpleNamespace

    import pandas as pd

    from lsr_lib.metrics.retrieval import evaluate_collection

    # image b (gallery g2) outscores a for a's caption; it must not compete when the galleries are kept apart
    img = np.array([[1.0, 0.0], [2.0, 0.0]], dtype=np.float32)
    txt = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    col = SimpleNamespace(
        images=pd.DataFrame({"image_id": ["a", "b"]}),
        captions=pd.DataFrame({"image_id": ["a", "b"]}),
        image_gallery=np.array(["g1", "g2"]),
    )
    assert evaluate_collection(col, img, txt, ks=(1,))["text_to_image"]["R@1"] == 100
    col.image_gallery = None  # one gallery: b wins a's caption, and b's caption ties 0 == 0 (not a hit)
    assert evaluate_collection(col, img, txt, ks=(1,))["text_to_image"]["R@1"] == 0
