"""Stage 07, part 2: the knob search (issue 18): trials, their checks, the choice on validation, reading results."""

import re

import pytest

from lsr_lib.config.profiles import KnobTrial, load_config
from lsr_lib.config.typed import ConfigError
from lsr_lib.stages import knob_search as ks


def test_a_trial_changes_only_its_knobs_and_keeps_expansion_control():
    cfg = load_config("default")
    base = ks.trial_config(cfg.d2s, KnobTrial("recipe"))
    t = ks.trial_config(cfg.d2s, KnobTrial("x", regularizer="flops", reg_weight=0.3, teacher_tau=0.01, epochs=80))
    assert (t.regularizer, t.reg_weight_image, t.reg_weight_text, t.teacher_tau, t.epochs) == (
        "flops",
        0.3,
        0.3,
        0.01,
        80,
    )
    assert (
        t.expansion_schedule == base.expansion_schedule == "linear"
        and t.lr_vocab == base.lr_vocab
        and t.batch_size == base.batch_size
    )
    assert (
        KnobTrial("recipe").is_recipe
        and not KnobTrial("v", views=1).is_recipe
        and not KnobTrial("e", epochs=80).is_recipe
    )
    assert ks.trial_dir(cfg, KnobTrial("recipe")).parts[-2:] == ("d2s", "with_control")  # stage 02's own run
    assert ks.trial_dir(cfg, KnobTrial("tau", teacher_tau=0.01)).parts[-2:] == ("knob_search", "tau")


@pytest.mark.parametrize(
    "section, says",
    [
        (
            {"trials": [{"name": "a"}, {"name": "a", "epochs": 2}]},
            "knob_search.trials: must be trials with distinct names",
        ),
        ({"trials": [{"name": "a b"}]}, "name: must be a short name"),
        ({"trials": [{"name": "a", "dropout": 0.1}]}, "unknown config key(s) knob_search.trials[0].dropout"),
        ({"trials": [{"name": "a", "views": -1}]}, "views: must be >= 0"),
        ({"flops_budget": 0}, "knob_search.flops_budget: must be in (0, 1]"),
        ({"run": "later"}, "knob_search.run: must be one of stage, bench"),
        ({"frontier_engine": "seismic"}, "knob_search.frontier_engine: must be an exact sparse engine"),
    ],
)
def test_search_settings_are_checked(section, says):
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_config("smoke", {"knob_search": section})


def test_a_bad_knob_value_is_named_when_applied():
    with pytest.raises(ConfigError, match="regularizer"):
        ks.trial_config(load_config("smoke").d2s, KnobTrial("x", regularizer="l2"))


def _row(name, r1, flops):
    return {"trial": name, "val T->I R@1": r1, "val FLOPs": flops}


def test_the_choice_is_the_best_val_r1_within_the_flops_budget():
    rows = [_row("dense", 30.0, 9.0), _row("a", 18.0, 4.0), _row("b", 19.0, 5.0), _row("c", 19.0, 3.0)]
    assert ks.choose(rows, budget=5.0)["trial"] == "c"  # b and c tie on R@1: fewer FLOPs wins; dense is over budget
    assert ks.choose(rows, budget=4.5)["trial"] == "c" and ks.choose(rows, budget=3.5)["trial"] == "c"
    assert ks.choose(rows, budget=2.0) is None
    rows[3]["val T->I R@1"] = 17.9  # a perturbed number changes the choice
    assert ks.choose(rows, budget=5.0)["trial"] == "b"


def _summary(ret, flops, unc):
    ms = lambda v: {"mean": v, "std": 0.0, "n": 3, "values": [v] * 3}  # noqa: E731
    return {
        "chosen": "t",
        "summary": [
            {"model": "recipe, without control", "retention R@1": ms(0.79), "FLOPs": ms(unc)},
            {"model": "recipe, with control", "retention R@1": ms(0.74), "FLOPs": ms(7.0)},
            {"model": "t, with control", "retention R@1": ms(ret), "FLOPs": ms(flops)},
        ],
    }


def test_the_goal_check_reads_the_seed_means():
    g = ks.goal_check(_summary(0.96, 5.0, 11.0))
    assert (
        g["retention >= 95%"]
        and g["FLOPs <= half"]
        and g["FLOPs share"] == pytest.approx(5 / 11)
        and g["recipe retention R@1"] == 0.74
    )
    assert not ks.goal_check(_summary(0.94, 5.0, 11.0))["retention >= 95%"]
    assert not ks.goal_check(_summary(0.96, 5.6, 11.0))["FLOPs <= half"]


def test_results_are_read_only_while_the_search_settings_and_inputs_are_current(tmp_path, monkeypatch, capsys):
    from lsr_lib.results.provenance import write_results

    cfg = load_config("smoke", {"knob_search": {"run": "bench"}})
    monkeypatch.setattr(type(cfg), "results_dir", property(lambda self: tmp_path / "results"))
    inputs = {"stage": "07", "x": 1}
    assert ks.knob_results(cfg, inputs) is None and "make data-scale" in capsys.readouterr().out
    write_results(cfg, ks.RESULT, {"chosen": "recipe"}, ks.knob_inputs(cfg, inputs))
    assert ks.knob_results(cfg, inputs) == {"chosen": "recipe"}
    assert ks.knob_results(cfg, {**inputs, "x": 2}) is None and "other inputs" in capsys.readouterr().out
    other = load_config("smoke", {"knob_search": {"run": "bench", "flops_budget": 0.4}})  # another search: stale
    monkeypatch.setattr(type(other), "results_dir", property(lambda self: tmp_path / "results"))
    assert ks.knob_results(other, inputs) is None


def test_a_clone_without_the_seed_variants_reads_the_search_checking_what_is_there(tmp_path, monkeypatch, capsys):
    """make main on a fresh clone builds seed 0 only: the committed search is shown, compared on everything but the
    missing seeds."""
    from lsr_lib.results.provenance import write_results

    cfg = load_config("smoke", {"knob_search": {"run": "bench"}})
    monkeypatch.setattr(type(cfg), "results_dir", property(lambda self: tmp_path / "results"))
    full = {"stage": "07", "seeds_dense": {"0": "a0", "1": "a1"}}
    write_results(cfg, ks.RESULT, {"chosen": "views3"}, ks.knob_inputs(cfg, full))
    assert ks.knob_results(cfg, {"stage": "07", "seeds_dense": {"0": "a0"}}, unchecked=[1]) == {"chosen": "views3"}
    assert "seeds [1] are not built here" in capsys.readouterr().out
    # seed 0 changed: stale
    assert ks.knob_results(cfg, {"stage": "07", "seeds_dense": {"0": "changed"}}, unchecked=[1]) is None
