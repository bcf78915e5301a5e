"""Stage 07, the data-scale study (issue 18): nested subsets, extra view pairs, the seeds' inputs, and reading
results."""

import re

import numpy as np
import pandas as pd
import pytest
import torch

from lsr_lib.artifacts.catalog import ArtifactError
from lsr_lib.config.profiles import load_config
from lsr_lib.config.typed import ConfigError
from lsr_lib.data.collection import ImageCaptionSet
from lsr_lib.sparse.expansion_control import bert_uncased_tokenizer
from lsr_lib.stages import data_scale_study as study
from lsr_lib.train.d2s_conditions import training_pairs


def _col(n_images=8):
    ids = [f"i{k}" for k in range(n_images)]
    images = pd.DataFrame({"image_id": ids, "split": "train", "path": "", "group_id": ids})
    caps = pd.DataFrame(
        [(f"t{k}-{j}", i, "train", f"caption {k} number {j}") for k, i in enumerate(ids) for j in range(1 + k % 2)],
        columns=["text_id", "image_id", "split", "text"],
    )
    return ImageCaptionSet("t", images, caps)


def test_subsets_nest_and_the_full_set_is_every_image():
    sets = [set(study.nested_subset(100, f, seed=3)) for f in (0.125, 0.25, 0.5, 1.0)]
    assert [len(s) for s in sets] == [13, 25, 50, 100]
    assert all(a < b for a, b in zip(sets, sets[1:]))
    assert set(study.nested_subset(100, 0.25, seed=4)) != sets[1]  # the permutation is the seed's


def test_point_pairs_keep_every_caption_of_kept_images_and_pair_views_with_them():
    col, tok = _col(), bert_uncased_tokenizer()
    rng = np.random.default_rng(0)
    img, txt = rng.random((8, 4), dtype=np.float32), rng.random((len(col.captions), 4), dtype=np.float32)
    views = rng.random((2, 8, 4), dtype=np.float32)
    full, n = study.point_pairs(col, img, txt, tok, study.Point(1.0), 0)
    stage02 = training_pairs(col, img, txt, tok)
    # 100% is stage 02's training set, same order
    assert n == 8 and all(torch.equal(full[k], stage02[k]) for k in stage02)
    half, n = study.point_pairs(col, img, txt, tok, study.Point(0.5), 0)
    kept = col.images["image_id"].iloc[study.nested_subset(8, 0.5, 0)]
    assert n == 4 and half["img_emb"].shape[0] == col.captions["image_id"].isin(kept).sum()
    more, n = study.point_pairs(col, img, txt, tok, study.Point(1.0, 2), 0, views)
    m = len(col.captions)
    assert n == 8 and more["img_emb"].shape[0] == 3 * m
    rows = [int(i[1:]) for i in col.captions["image_id"]]
    assert torch.equal(more["img_emb"][m : 2 * m], torch.from_numpy(views[0][rows])) and torch.equal(
        more["img_emb"][2 * m :], torch.from_numpy(views[1][rows])
    )
    assert torch.equal(more["txt_emb"][2 * m :], full["txt_emb"]) and torch.equal(
        more["txt_mask_ids"][m : 2 * m], full["txt_mask_ids"]
    )
    with pytest.raises(ValueError, match="needs 2 augmented views"):
        study.point_pairs(col, img, txt, tok, study.Point(1.0, 2), 0, views[:1])


@pytest.mark.parametrize(
    "section, says",
    [
        ({"fractions": [0.5, 0.25]}, "data_scale.fractions: must be increasing fractions in (0, 1]"),
        ({"fractions": [0.5, 1.5]}, "data_scale.fractions: must be increasing fractions in (0, 1]"),
        ({"fractions": [0.5], "extra_views": [1]}, "data_scale.extra_views: must be used with fraction 1.0"),
        ({"run": "sometimes"}, "data_scale.run: must be one of stage, bench"),
        ({"extra_view_seeds": [5]}, "data_scale.extra_view_seeds: must be a subset of the study's seeds [0]"),
    ],
)
def test_study_settings_are_checked(section, says):
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_config("smoke", {"data_scale": section})


def test_points_and_seeds_follow_the_profile():
    cfg = load_config("default")  # the multi-style default: 1% (about 520 pairs) to 100%, no augmented-view point
    assert [p.label for p in study.points(cfg)] == ["0.01", "0.03", "0.125", "0.25", "0.5", "1"]
    assert cfg.data_scale_seeds == (0, 1, 2) and load_config("smoke").data_scale_seeds == (0,)
    assert cfg.seed_variant(0) is cfg and cfg.seed_variant(2).d2s.seed != cfg.d2s.seed
    views = load_config("default", {"data_scale": {"extra_views": [1], "extra_view_seeds": [0, 1]}})
    assert [p.label for p in study.points(views)][-1] == "1+1v" and study.points(views)[-1].relative_size == 2
    assert views.data_scale.extra_view_seeds == (0, 1)  # a view point on two of the three seeds


def test_a_missing_seed_variant_is_named_with_the_command_that_makes_it(monkeypatch):
    cfg = load_config("smoke", {"data_scale": {"seeds": [0, 1]}})

    def content_id(c):
        if c.profile.endswith("seed1"):
            raise ArtifactError(f"dense features of {c.profile} are missing")
        return "ok"

    monkeypatch.setattr("lsr_lib.artifacts.catalog.dense_content_id", content_id)
    with pytest.raises(
        ArtifactError, match=r"(?s)smoke/seed1 are missing.*python -m lsr_lib.run.seeds --profile smoke --seeds 1"
    ):
        study.seed_inputs(cfg)


def test_results_are_read_only_while_their_inputs_are_current(tmp_path, monkeypatch, capsys):
    from lsr_lib.results.provenance import write_results

    cfg = load_config("smoke")
    monkeypatch.setattr(type(cfg), "results_dir", property(lambda self: tmp_path / "results"))
    inputs = {"stage": "07", "x": 1}
    assert study.study_rows(cfg, inputs, run=False) == [] and "make data-scale" in capsys.readouterr().out
    write_results(cfg, study.RESULT, {"rows": [{"point": "1"}]}, inputs)
    assert study.study_rows(cfg, inputs, run=False) == [{"point": "1"}]
    assert study.study_rows(cfg, {**inputs, "x": 2}, run=False) == [] and "other inputs" in capsys.readouterr().out


def test_summary_gives_mean_and_std_over_seeds():
    rows = [
        {
            "seed": s,
            "condition": "with_control",
            "point": p,
            "relative_size": r,
            "pairs": 10 * r,
            "T->I R@1": v,
            "T->I R@10": v,
            "retention R@1": v / 20,
            "retention R@10": v / 40,
            "FLOPs": 1.0,
            "nnz caption": 1.0,
            "nnz image": 1.0,
        }
        for s, (p, r, v) in enumerate([("1", 1, 10.0), ("1", 1, 12.0), ("0.5", 0.5, 6.0)])
    ]
    s = study.summary(rows)
    assert s.loc[("with_control", "1"), "T->I R@1"] == 11.0 and s.loc[
        ("with_control", "1"), "T->I R@1 std"
    ] == pytest.approx(np.sqrt(2))
    assert s.loc[("with_control", "1"), "n"] == 2 and list(s.index.get_level_values("point")) == ["0.5", "1"]
    g = study.growth(rows)["with_control"]
    assert g["smallest"] == "0.5" and g["points_per_doubling_R@1"] == pytest.approx(100 * (11 / 20 - 6 / 20))


def test_a_clone_without_the_seed_variants_reads_the_study_checking_what_is_there(tmp_path, monkeypatch, capsys):
    """make main on a fresh clone builds seed 0 only: the committed study is shown, compared on everything but the
    missing seeds."""
    from lsr_lib.results.provenance import write_results

    cfg = load_config("smoke", {"data_scale": {"seeds": [0, 1]}})
    monkeypatch.setattr(type(cfg), "results_dir", property(lambda self: tmp_path / "results"))
    ids = {"smoke": "a0", "smoke/seed1": "a1"}
    monkeypatch.setattr(study, "dense_content_id", lambda c: ids[c.profile])
    monkeypatch.setattr("lsr_lib.artifacts.catalog.dense_content_id", lambda c: ids[c.profile])
    full, missing = study.current_inputs(cfg)
    assert missing == [] and full["seeds_dense"] == {"0": "a0", "1": "a1"}
    write_results(cfg, study.RESULT, {"rows": [{"point": "1"}]}, full)

    def no_seed1(c):
        if c.profile == "smoke/seed1":
            raise ArtifactError("seed1 features missing")
        return ids[c.profile]

    monkeypatch.setattr(study, "dense_content_id", no_seed1)
    monkeypatch.setattr("lsr_lib.artifacts.catalog.dense_content_id", no_seed1)
    partial, missing = study.current_inputs(cfg)
    assert missing == [1] and partial["seeds_dense"] == {"0": "a0"}
    assert study.study_rows(cfg, partial, run=False, unchecked=missing) == [{"point": "1"}]
    assert "seeds [1] are not built here" in capsys.readouterr().out
    ids["smoke"] = "changed"  # seed 0's features changed: stale, even with seed 1 unchecked
    partial, missing = study.current_inputs(cfg)
    assert (
        study.study_rows(cfg, partial, run=False, unchecked=missing) == [] and "other inputs" in capsys.readouterr().out
    )


def test_a_study_part_is_measured_once_per_input_record_of_its_own_seed(tmp_path, monkeypatch):
    """Parts in results/<profile>/07_measured/ let `make data-scale` finish over several sittings: reused while
    the code, environment, d2s config and that seed's features are unchanged; another seed's features or
    another size added to the profile (the data_scale section) leave it alone."""
    cfg = load_config("smoke")
    monkeypatch.setattr(type(cfg), "results_dir", property(lambda self: tmp_path / "results"))
    inputs = {
        "stage": study.STAGE,
        "code": {"a.py": "1"},
        "env": {},
        "config": "s",
        "seeds_dense": {"0": "d0", "1": "d1"},
    }
    calls = []

    def part(inp, k=0, point="0.5"):
        def measure():
            calls.append((k, point))
            return {"T->I R@1": 0.25 * len(calls), "ranks": np.array([1, 11])}  # numpy values come back as JSON ones

        return study.measured_part(cfg, inp, k, f"seed{k}_with_control_{point}", measure, point=point)

    first = part(inputs)
    assert first == {"T->I R@1": 0.25, "ranks": [1, 11]} and (tmp_path / "results/07_measured").is_dir()
    assert part(inputs) == first and part({**inputs, "config": "fractions added"}) == first and len(calls) == 1
    assert part({**inputs, "seeds_dense": {"0": "d0", "1": "rebuilt"}}) == first and len(calls) == 1
    assert part({**inputs, "seeds_dense": {"0": "rebuilt", "1": "d1"}}) == {"T->I R@1": 0.5, "ranks": [1, 11]}
    assert part({**inputs, "code": {"a.py": "2"}})["T->I R@1"] == 0.75 and len(calls) == 3
    part(inputs, k=1)
    part(inputs, point="0.25")
    assert calls[-2:] == [(1, "0.5"), (0, "0.25")]
    monkeypatch.setattr(type(cfg), "section_hash", lambda self, *names: "another d2s recipe")
    part(inputs)
    assert len(calls) == 6
