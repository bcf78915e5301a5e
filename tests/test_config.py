"""Profiles load into typed frozen dataclasses; unknown keys, wrong types and bad values fail by name."""

import dataclasses
import typing

import pytest
import yaml

from lsr_lib.config.profiles import (
    D2S_CONDITIONS,
    DENSE_INDEX_KINDS,
    EVAL_TRANSFORMS,
    IMAGE_PARTS,
    PROFILES,
    REPO_ROOT,
    SPARSE_INDEX_KINDS,
    Config,
    ConfigError,
    load_config,
)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_loads(profile):
    cfg = load_config(profile)
    assert cfg.profile == profile
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1


def _write(tmp_path, data):
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(data))
    return tmp_path


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"lit\.epochz"):
        load_config("x", params_dir=_write(tmp_path, {"lit": {"epochz": 3}}))


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"lit\.epochs: expected an integer"):
        load_config("x", params_dir=_write(tmp_path, {"lit": {"epochs": "many"}}))
    with pytest.raises(ConfigError, match=r"data\.split_fractions: expected 3 values"):
        load_config("x", params_dir=_write(tmp_path, {"data": {"split_fractions": [0.5, 0.5]}}))


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    (tmp_path / "x.yaml").write_text("seed: 0\nlit:\n  epochs: [3\n  lr: 1e-3\n")  # an unclosed bracket
    with pytest.raises(ConfigError, match=r"x\.yaml, line 4, column \d+: not valid YAML .*fix that line") as err:
        load_config("x", params_dir=tmp_path)
    assert str(tmp_path / "x.yaml") in str(err.value) and "<unicode string>" not in str(err.value)


def test_missing_profile_lists_available():
    with pytest.raises(ConfigError, match="available: .*default"):
        load_config("no_such_profile")


def test_lists_become_tuples_and_overrides_merge():
    cfg = load_config("smoke", overrides={"lit": {"epochs": 2}})
    assert cfg.lit.epochs == 2 and isinstance(cfg.evaluation.ks, tuple)
    assert cfg.lit.hidden_dim == load_config("smoke").lit.hidden_dim


BAD_VALUES = [  # (overrides, the message's start: full key path and rule)
    ({"lit": {"epochs": -1}}, "lit.epochs: must be > 0, got -1"),
    ({"lit": {"lr": 0.0}}, "lit.lr: must be > 0"),
    ({"lit": {"dropout": 1.0}}, "lit.dropout: must be in [0, 1)"),
    ({"lit": {"train_views": -1}}, "lit.train_views: must be >= 0"),
    ({"lit": {"image_features": ["avg", "mean"]}}, "lit.image_features: must be a list of distinct names"),
    ({"lit": {"eval_transforms": ["clean"]}}, "lit.eval_transforms: must be a list of distinct names"),
    ({"extraction": {"shard_size": 0}}, "extraction.shard_size: must be > 0, got 0"),
    ({"extraction": {"image_batch_size": -8}}, "extraction.image_batch_size: must be > 0"),
    ({"extraction": {"device": "gpu"}}, "extraction.device: must be auto, cpu, cuda"),
    ({"index": {"topk": -5}}, "index.topk: must be > 0, got -5"),
    ({"index": {"topk": 5}}, "index.topk: must be at least the largest evaluation cutoff"),
    ({"index": {"latency_queries": 0}}, "index.latency_queries: must be > 0"),
    ({"index": {"scale_sizes": [1000, 0]}}, "index.scale_sizes: must be a list of integers > 0"),
    (
        {"index": {"pruning": ["none", "d64+k3"]}},
        "index.pruning: must be a list of pruning specs (pruning spec 'd64+k3': unknown part 'k3'",
    ),
    ({"index": {"pruning": ["d64", "d64"]}}, "index.pruning: must be a list of distinct pruning specs"),
    ({"index": {"seismic_search": [[20, 1.5]]}}, "index.seismic_search: must be [query_cut > 0"),
    ({"index": {"exact_backends": ["numbaa"]}}, "index.exact_backends: must be a list of distinct names"),
    ({"encoder": {"embed_dim": 0}}, "encoder.embed_dim: must be > 0, got 0"),
    ({"encoder": {"kind": "clip"}}, "encoder.kind: must be one of lit_towers"),
    ({"encoder": {"kind": "blip_hf"}}, "encoder.checkpoint: must be a model name or folder"),
    ({"data": {"split_fractions": [0.8, -0.1, 0.3]}}, "data.split_fractions: must be [train, val, test] fractions"),
    ({"data": {"split_fractions": [0.5, 0.1, 0.1]}}, "data.split_fractions: must be [train, val, test] fractions"),
    ({"data": {"max_groups": 0}}, "data.max_groups: must be > 0 or null"),
    ({"data": {"image_size": 0}}, "data.image_size: must be >= 32"),
    ({"data": {"split_seed": -1}}, "data.split_seed: must be >= 0"),
    ({"evaluation": {"ks": [1, 0]}}, "evaluation.ks: must be a list of cutoffs > 0"),
    ({"evaluation": {"ks": []}}, "evaluation.ks: must be a list of cutoffs > 0"),
    ({"evaluation": {"mrr_depth": 0}}, "evaluation.mrr_depth: must be > 0"),
    ({"evaluation": {"splits": ["validation"]}}, "evaluation.splits: must be a list of distinct names"),
    ({"d2s": {"epochs": 0}}, "d2s.epochs: must be > 0, got 0"),
    ({"d2s": {"gate_seed": -2}}, "d2s.gate_seed: must be >= 0"),
    ({"d2s": {"teacher_tau": float("nan")}}, "d2s.teacher_tau: must be > 0"),
    ({"suggest": {"batch_size": 0}}, "suggest.batch_size: must be > 0"),
    ({"suggest": {"max_text_tokens": 1000}}, "suggest.max_text_tokens: must be in [3, 512]"),
    (
        {"suggest": {"source": "atomic", "atomic_texts": "t", "atomic_images": "i"}},
        "suggest.atomic_qrels: must be the downloaded",
    ),
    ({"seed": -1}, "seed: must be >= 0, got -1"),
    ({"d2s_conditions": ["with_control", "with_control"]}, "d2s_conditions: must be a list of distinct names"),
    (
        {"sweep": [{"dataset": "mscoco", "backbone": "blip"}, {"dataset": "mscoco", "backbone": "blip"}]},
        "sweep: must be settings with distinct",
    ),
]


@pytest.mark.parametrize("overrides, message", BAD_VALUES, ids=[m.split(":")[0] + f"={o}" for o, m in BAD_VALUES])
def test_bad_value_fails_at_load_naming_key_and_profile(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config("smoke", overrides=overrides)
    assert str(e.value).startswith(f"{REPO_ROOT / 'params' / 'smoke.yaml'}: {message}"), str(e.value)


def test_bad_value_in_a_sweep_setting_names_the_setting(tmp_path):
    setting = {"dataset": "mscoco", "backbone": "blip", "overrides": {"lit": {"epochs": -1}}}
    params = _write(tmp_path, {"sweep": [setting]})
    with pytest.raises(ConfigError, match=r"x\.yaml \(sweep setting 'mscoco_blip'\): lit\.epochs: must be > 0, got -1"):
        load_config("x/mscoco_blip", params_dir=params)


def test_every_shipped_profile_and_sweep_setting_loads():
    for profile in PROFILES:
        for setting in load_config(profile).sweep:
            assert load_config(f"{profile}/{setting.name}").profile == f"{profile}/{setting.name}"
    assert load_config("paper").sweep, "the paper profile has its sweep settings"


def test_every_section_validates_itself():
    for f in dataclasses.fields(Config):
        tp = typing.get_type_hints(Config)[f.name]
        for section in (tp, *typing.get_args(tp)):
            if dataclasses.is_dataclass(section):
                assert callable(getattr(section, "validate", None)), f"{f.name}: {section.__name__} has no validate()"
    assert callable(Config.validate)


def test_name_lists_match_the_registries_they_stand_for():
    from lsr_lib.data.image_augment import EVAL_TRANSFORMS as TRANSFORMS
    from lsr_lib.dense.towers import IMAGE_PARTS as PARTS
    from lsr_lib.index.sparse import INDEX_KINDS
    from lsr_lib.stages.train_sparse_heads import CONDITIONS

    assert set(EVAL_TRANSFORMS) == set(TRANSFORMS) - {"clean"}
    assert set(IMAGE_PARTS) == set(PARTS)
    assert set(SPARSE_INDEX_KINDS + DENSE_INDEX_KINDS) == set(INDEX_KINDS) and all(
        k.startswith("faiss") for k in DENSE_INDEX_KINDS
    )
    assert set(D2S_CONDITIONS) == set(CONDITIONS)
