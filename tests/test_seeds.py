"""Training seeds: the seed variants of a profile, the runner's commands and the aggregate (issue 13)."""

import json

import numpy as np
import pandas as pd
import pytest

from lsr_lib.analysis.control_effect import EFFECT_METRICS, control_effect, paired_values, write_per_query
from lsr_lib.config.profiles import SEED_OFFSET, ConfigError, load_config, split_seed_variant
from lsr_lib.results import seeds as agg
from lsr_lib.results.expected import judge, load_expected
from lsr_lib.run.seeds import SEED_STAGES, seed_commands


def test_a_seed_variant_moves_every_training_seed_and_nothing_else():
    base, var = load_config("default"), load_config("default/seed2")
    shift = SEED_OFFSET * 2
    assert (
        var.seed,
        var.lit.seed,
        var.d2s.seed,
        var.d2s.data_seed,
        var.d2s.gate_seed,
        var.suggest.seed,
        var.suggest.data_seed,
    ) == (
        2,
        base.lit.seed + shift,
        base.d2s.seed + shift,
        base.d2s.data_seed + shift,
        base.d2s.gate_seed + shift,
        base.suggest.seed + shift,
        base.suggest.data_seed + shift,
    )
    # the data stay
    assert var.lit.view_seed == base.lit.view_seed and var.data == base.data and var.index == base.index
    assert var.results_dir == base.results_dir / "seed2" and var.cache_dir == base.cache_dir / "seed2"
    assert var.shared_cache_dir == base.cache_dir == base.shared_cache_dir and var.base_profile == "default"
    assert split_seed_variant("paper/mscoco_blip/seed1") == ("paper/mscoco_blip", 1) and split_seed_variant(
        "paper/mscoco_blip"
    ) == ("paper/mscoco_blip", None)


@pytest.mark.parametrize(
    "name, message",
    [("default/seed7", "not one of the profile's extra seeds"), ("default/seed0", "is the profile itself")],
)
def test_unknown_seed_variants_are_named(name, message):
    with pytest.raises(ConfigError, match=message):
        load_config(name)


def test_seeds_list_is_checked(tmp_path):
    (tmp_path / "default.yaml").write_text("seed: 0\nseeds: [1, 2]\n")
    with pytest.raises(ConfigError, match="seed"):
        load_config("default", params_dir=tmp_path)
    (tmp_path / "default.yaml").write_text("seed: 0\nseeds: [0, 1, 1]\n")
    with pytest.raises(ConfigError, match="distinct"):
        load_config("default", params_dir=tmp_path)


def test_runner_commands_cover_the_trained_stages():
    cmds = seed_commands("default", [1, 2], progress=False)
    assert cmds == [["--profile", f"default/seed{k}", "--stages", *SEED_STAGES, "--no-progress"] for k in (1, 2)]
    assert {"01", "02", "03", "05"} <= set(SEED_STAGES)


def _per_query(rng, shift: float, n_t: int = 60, n_i: int = 30) -> pd.DataFrame:
    """A fake per-query table: with control scores ``shift`` higher on R@1 and lower on FLOPs."""
    rows = []
    for cond, s in (("with_control", shift), ("without_control", 0.0)):
        t = pd.DataFrame(
            {
                "R@1": (rng.random(n_t) < 0.3 + s).astype(float),
                "RR@10": rng.random(n_t),
                "tau": rng.normal(0.3 + s, 0.1, n_t),
                "flops": rng.normal(10 - 20 * s, 1, n_t),
            }
        )
        i = pd.DataFrame(
            {
                "R@1": (rng.random(n_i) < 0.3 + s).astype(float),
                "RR@10": rng.random(n_i),
                "tau": rng.normal(0.3, 0.1, n_i),
                "caption_precision": rng.random(n_i),
            }
        )
        rows += [
            t.assign(condition=cond, direction="text_to_image", query=np.arange(n_t)),
            i.assign(condition=cond, direction="image_to_text", query=np.arange(n_i)),
        ]
    return pd.concat(rows, ignore_index=True)


def test_control_effect_pairs_queries_and_drops_undefined_ones():
    rng = np.random.default_rng(0)
    table = _per_query(rng, 0.2)
    table.loc[
        (table["condition"] == "with_control") & (table["direction"] == "text_to_image") & (table["query"] < 5), "tau"
    ] = np.nan
    pairs = paired_values(table)
    assert (
        set(pairs) == set(EFFECT_METRICS)
        and len(pairs["Kendall tau (T->I)"][0]) == 55
        and len(pairs["FLOPs (T->I)"][0]) == 60
    )
    effect = control_effect(table)
    assert effect["FLOPs (T->I)"]["significant"] and effect["FLOPs (T->I)"]["mean_diff"] < 0
    assert effect["Kendall tau (T->I)"]["significant"] and not effect["caption precision@k (images)"]["significant"]
    with pytest.raises(ValueError, match="different"):
        paired_values(table[~((table["condition"] == "with_control") & (table["query"] == 0))])


def _fake_results(folder, value: float, shift: float, seed: int):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "01_dense_baseline.json").write_text(
        json.dumps({"results": {"baseline": {"test": {"text_to_image": {"R@1": value}}}}})
    )
    (folder / "02_d2s.json").write_text(
        json.dumps({"results": {"test": {"with_control": {"sparsity_text_to_image": {"flops": 5.0 + value / 10}}}}})
    )
    write_per_query(_per_query(np.random.default_rng(seed), shift), folder)


def test_aggregate_mean_std_and_expected_tolerances(tmp_path, monkeypatch):
    cfg = load_config("smoke")
    monkeypatch.setattr(type(cfg), "results_dir", property(lambda self: tmp_path / "results"))
    values = {0: 20.0, 1: 22.0, 2: 24.0}
    for i, (k, v) in enumerate(values.items()):
        _fake_results(tmp_path / "results" / ("" if i == 0 else f"seed{k}"), v, 0.2, k)
    summary = agg.aggregate(cfg)
    m = summary["metrics"]["dense teacher, test T->I R@1"]
    assert m["mean"] == pytest.approx(22.0) and m["std"] == pytest.approx(2.0) and m["n"] == 3
    assert summary["control_effect"]["verdict"]["FLOPs (T->I)"]["verdict"] == "significant"
    assert summary["control_effect"]["verdict"]["caption precision@k (images)"]["verdict"] == "not significant"
    text = agg.markdown(summary)
    assert "22.00 ± 2.00" in text and "not significant" in text
    import yaml

    exp = yaml.safe_load(agg.expected_yaml(summary, cfg))
    entry = exp["conditions"]["01_dense_baseline"]["metrics"]["baseline.test.text_to_image.R@1"]
    assert entry["expected"] == 20.0 and entry["tolerance"] == pytest.approx(4.0)  # seed 0's value, 2 x std
    flops = exp["conditions"]["02_d2s"]["metrics"]["test.with_control.sparsity_text_to_image.flops"]
    assert flops["tolerance"] == pytest.approx(max(2 * 0.2, 0.02 * 7.0))
    assert summary["missing"]  # the fake folders lack stages 03 and 05: named, not hidden


def test_a_seed_measured_on_another_collection_is_left_out_and_named(tmp_path, monkeypatch):
    """After the data set changes, a seed's old result files (another split_sha256) must not enter the mean."""
    cfg = load_config("smoke")
    monkeypatch.setattr(type(cfg), "results_dir", property(lambda self: tmp_path / "results"))
    for i, (k, v) in enumerate({0: 20.0, 1: 22.0, 2: 90.0}.items()):
        folder = tmp_path / "results" / ("" if i == 0 else f"seed{k}")
        _fake_results(folder, v, 0.2, k)
        doc = json.loads((folder / "01_dense_baseline.json").read_text())
        doc["results"]["split_sha256"] = "old" if k == 2 else "new"
        (folder / "01_dense_baseline.json").write_text(json.dumps(doc))
    summary = agg.aggregate(cfg)
    m = summary["metrics"]["dense teacher, test T->I R@1"]
    assert m["mean"] == pytest.approx(21.0) and m["n"] == 2 and set(m["values"]) == {"0", "1"}
    assert summary["other_collection"] == ["2"]
    assert "Left out, measured on another collection than seed 0's" in agg.markdown(summary)


def test_expected_values_rewritten_on_another_cpu_keep_the_first_cpus_main_job_inside_the_tolerance(
    tmp_path, monkeypatch
):
    """CI failed when the smoke main job ran on an AVX512 CPU and the expected values had been measured on AVX2 only:
    rewriting them on the new CPU must keep the old CPU's main-job value and cover it, without widening the rest."""
    cfg = load_config("smoke")
    monkeypatch.setattr(type(cfg), "results_dir", property(lambda self: tmp_path / "results"))
    for i, (k, v) in enumerate({0: 20.0, 1: 20.5, 2: 21.0}.items()):
        folder = tmp_path / "results" / ("" if i == 0 else f"seed{k}")
        _fake_results(folder, v, 0.2, k)
        doc = json.loads((folder / "01_dense_baseline.json").read_text())
        doc["inputs"] = {"env": {"torch-cpu": "AVX512"}}
        doc["provenance"] = {"machine": {"cpu": "AMD EPYC" if k else "Intel(R) Xeon(R) Processor"}}
        (folder / "01_dense_baseline.json").write_text(json.dumps(doc))
    summary = agg.aggregate(cfg)
    old = tmp_path / "old.yaml"  # the format before CPUs were recorded per metric: one `cpu` at the top
    old.write_text(
        "profile: smoke\ncpu: AVX2\nsources: {seeds: s}\nconditions:\n  01_dense_baseline:\n"
        "    file: 01_dense_baseline.json\n    prefix: results\n    source: seeds\n    metrics:\n"
        "      baseline.test.text_to_image.R@1: {expected: 26.0, tolerance: 1.0}\n"
    )
    import yaml

    exp = yaml.safe_load(agg.expected_yaml(summary, cfg, agg.earlier_main_job_values(old, None)))
    entry = exp["conditions"]["01_dense_baseline"]["metrics"]["baseline.test.text_to_image.R@1"]
    assert entry["main_job_by_cpu"] == {"AVX2": 26.0, "AVX512": 20.0} and entry["expected"] == 20.0
    assert entry["tolerance"] == pytest.approx(6.0)  # |26 - 20| > 2 x std (1.0) over this CPU's seeds
    assert exp["cpu"] == "AVX512" and exp["cpus"] == ["AVX2", "AVX512"]
    assert exp["cpu_model"] == "Intel(R) Xeon(R) Processor"  # the main job's (seed 0's) model, for the check's note
    flops = exp["conditions"]["02_d2s"]["metrics"]["test.with_control.sparsity_text_to_image.flops"]
    assert flops["main_job_by_cpu"] == {"AVX512": 7.0} and flops["tolerance"] == pytest.approx(max(2 * 0.05, 0.14))
    # the rewritten file checks the old CPU's main job OK and a number beyond both CPUs' values as FAIL
    new = tmp_path / "new.yaml"
    new.write_text(agg.expected_yaml(summary, cfg, agg.earlier_main_job_values(old, None)))
    checks, _ = load_expected(new)
    check = next(c for c in checks if c.metric == "baseline.test.text_to_image.R@1")
    assert [judge(v, check.expected, check.tolerance) for v in (26.0, 20.0, 33.0)] == ["OK", "OK", "FAIL"]
    # another data set's file (another split_sha256) contributes nothing
    assert agg.earlier_main_job_values(old.with_name("missing.yaml"), None) == {}
    old.write_text(old.read_text().replace("cpu: AVX2", "cpu: AVX2\nsplit_sha256: other"))
    assert agg.earlier_main_job_values(old, "this") == {}


def test_rewriting_the_expected_values_rewrites_the_committed_check_table_too(tmp_path, monkeypatch):
    """`make main` writes results/<profile>/expected_check.md from the expected values; rewriting those values must
    write it again, or a fresh clone's `make main` changes a committed file (issue 28)."""
    cfg = load_config("smoke")
    monkeypatch.setattr(type(cfg), "results_dir", property(lambda self: tmp_path / "results"))
    monkeypatch.setattr(agg, "REPO_ROOT", tmp_path)
    for i, (k, v) in enumerate({0: 20.0, 1: 20.5, 2: 21.0}.items()):
        _fake_results(tmp_path / "results" / ("" if i == 0 else f"seed{k}"), v, 0.2, k)
    (tmp_path / "results" / "expected").mkdir(parents=True, exist_ok=True)
    check = tmp_path / "results" / "expected_check.md"
    check.write_text("| made from the old expected values |\n")
    assert agg.main(["--profile", "smoke", "--write-expected"]) == 0
    checks, sources = load_expected(tmp_path / "results" / "expected" / "smoke.yaml")
    from lsr_lib.results.expected import evaluate, markdown_table

    assert check.read_text() == markdown_table(evaluate(checks, tmp_path / "results"), sources)
    assert "| 01_dense_baseline | baseline.test.text_to_image.R@1 | = 20 | 20 | ±1 | OK | seeds |" in check.read_text()


def test_the_committed_seed_summary_is_the_aggregate_of_the_committed_seed_results():
    """results/default/seeds.json and seeds.md (the README's error bars, the paired control effect) are what
    ``aggregate`` computes from the seeds' committed result files, so a number edited by hand in either, or in one
    seed's results, fails. After `make main` in another environment (seed 0 measured again, e.g. on an AVX2 CPU) the
    seeds no longer share one environment: `python -m lsr_lib.results.seeds` aggregates them again then."""
    cfg = load_config("default")
    dirs = agg.seed_results_dirs(cfg)
    if not (cfg.results_dir / "seeds.json").exists():
        pytest.skip("no committed seed summary")
    envs = {
        json.dumps(json.loads((d / "02_d2s.json").read_text())["inputs"]["env"], sort_keys=True) for d in dirs.values()
    }
    if len(envs) > 1:
        pytest.skip("the seeds' results were measured in different environments: not one committed run to compare")
    summary = json.loads(json.dumps(agg.aggregate(cfg)))
    assert summary == json.loads((cfg.results_dir / "seeds.json").read_text())
    assert agg.markdown(summary) == (cfg.results_dir / "seeds.md").read_text()
