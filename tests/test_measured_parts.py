"""Stage parts measured once per input (lsr_lib/storage/measured_parts.py): reused on the same inputs, measured
again when anything in the input record changes or the stored file is damaged."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lsr_lib.storage.measured_parts import measured_once


def test_a_part_is_reused_on_the_same_inputs_and_measured_again_on_others(tmp_path):
    calls = []

    def measure():
        calls.append(1)
        return [{"kind": "numba", "p50": np.float64(1.5), "n": np.int64(7), "recall": float("nan")}], {"a": (1, 2)}

    inputs = {"code": {"lsr_lib/index/bmp.py": "abc"}, "config": {"topk": 100}}
    first = measured_once(tmp_path, "eff", inputs, measure)
    again = measured_once(tmp_path, "eff", inputs, measure)
    assert len(calls) == 1
    assert first[0][0]["n"] == again[0][0]["n"] == 7 and isinstance(again[0][0]["n"], int)
    assert math.isnan(again[0][0]["recall"]) and again[1] == {"a": [1, 2]}
    measured_once(tmp_path, "eff", {**inputs, "config": {"topk": 10}}, measure)  # a config value
    measured_once(tmp_path, "eff", {**inputs, "code": {"lsr_lib/index/bmp.py": "abd"}}, measure)  # one file's code
    assert len(calls) == 3


def test_a_damaged_part_is_measured_again_with_a_notice(tmp_path, capsys):
    measured_once(tmp_path, "p", {"x": 1}, lambda: [1, 2])
    (tmp_path / "p.json").write_text('{"inputs": "')  # truncated
    assert measured_once(tmp_path, "p", {"x": 1}, lambda: [3]) == [3]
    assert "unreadable" in capsys.readouterr().err


def test_a_value_json_cannot_hold_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(TypeError, match="set"):
        measured_once(tmp_path, "bad", {}, lambda: {"x": {1, 2}})
    assert not (tmp_path / "bad.json").exists()


def test_a_part_holds_no_run_facts_so_measuring_the_same_values_again_rewrites_the_same_bytes(tmp_path):
    """The default profile's parts are committed (results/default/04_measured/): a rerun must not dirty them."""
    measured_once(tmp_path, "p", {"x": 1}, lambda: {"p50": 1.25, "rows": [1, 2]})
    first = (tmp_path / "p.json").read_bytes()
    (tmp_path / "p.json").unlink()
    measured_once(tmp_path, "p", {"x": 1}, lambda: {"p50": 1.25, "rows": [1, 2]})
    assert (tmp_path / "p.json").read_bytes() == first
    measured_once(tmp_path, "p", {"x": 2}, lambda: {"p50": 1.5, "rows": [1, 2]})
    assert (tmp_path / "p.json").read_bytes() != first


def test_stage_04_keeps_its_parts_beside_its_results(monkeypatch):
    from lsr_lib.config.profiles import load_config
    from lsr_lib.stages import retrieve_with_inverted_index as stage

    seen = []
    monkeypatch.setattr(
        "lsr_lib.storage.measured_parts.measured_once", lambda folder, name, inputs, m: seen.append(folder)
    )
    cfg = load_config("smoke")
    stage.measured(cfg, {}, "pruning", None)
    assert seen == [cfg.results_dir / "04_measured"]
