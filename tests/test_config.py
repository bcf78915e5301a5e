"""Profiles load into typed frozen dataclasses; unknown keys and wrong types fail by name."""
import dataclasses

import pytest
import yaml

from lsr_lib.config.profiles import PROFILES, ConfigError, load_config


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


def test_missing_profile_lists_available():
    with pytest.raises(ConfigError, match="available: .*default"):
        load_config("no_such_profile")


def test_lists_become_tuples_and_overrides_merge():
    cfg = load_config("smoke", overrides={"lit": {"epochs": 2}})
    assert cfg.lit.epochs == 2 and isinstance(cfg.evaluation.ks, tuple)
    assert cfg.lit.hidden_dim == load_config("smoke").lit.hidden_dim
