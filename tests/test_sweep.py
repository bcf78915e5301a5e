"""The paper sweep: settings load and are checked, the dry run lists every command in order,
current stages are skipped, and the summary is generated from result files."""

import json
from pathlib import Path

import pytest
import yaml

from lsr_lib.run import sweep

from lsr_lib.results import sweep_summary
from lsr_lib.config.profiles import ConfigError, load_config, to_dict

SETTINGS = ["mscoco_blip", "mscoco_albef", "flickr30k_blip", "flickr30k_albef"]
STAGES = [
    "01_cache_dense_features",
    "02_train_sparse_heads",
    "03_analyze_sparse_vectors",
    "04_retrieve_with_inverted_index",
]


def test_dry_run_prints_every_command_for_all_settings_in_order(capsys):
    assert sweep.main(["--profile", "paper", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    commands = [line for line in lines if line.startswith("papermill ")]
    expected = [
        f"papermill notebooks/{st}.ipynb runs/paper/{s}/{st}.ipynb -p profile paper/{s}"
        for s in SETTINGS
        for st in STAGES
    ]
    assert commands == expected
    assert lines.index(commands[-1]) < lines.index(
        "python -m lsr_lib.results.expected --profile paper --markdown results/paper/expected_check.md"
    )
    assert any(line.startswith("python -m lsr_lib.run.sweep --profile paper --summary-only") for line in lines)


def test_only_keeps_file_order_and_unknown_settings_are_named(capsys):
    assert (
        sweep.main(
            ["--profile", "paper", "--dry-run", "--only", "flickr30k/albef", "--only", "mscoco_blip", "--stages", "02"]
        )
        == 0
    )
    commands = [line for line in capsys.readouterr().out.splitlines() if line.startswith("papermill ")]
    assert commands == [
        f"papermill notebooks/02_train_sparse_heads.ipynb runs/paper/{s}/02_train_sparse_heads.ipynb -p profile "
        f"paper/{s}"
        for s in ("mscoco_blip", "flickr30k_albef")
    ]
    assert sweep.main(["--profile", "paper", "--dry-run", "--only", "coco/clip"]) == 2
    assert "no sweep setting 'coco_clip'; known: mscoco_blip" in capsys.readouterr().err
    assert sweep.main(["--profile", "default", "--dry-run"]) == 2


def test_every_setting_loads_with_its_overrides():
    base = load_config("paper")
    assert [s.name for s in base.sweep] == SETTINGS
    assert (
        base.d2s.vocab_init == "distilbert-base-uncased"
        and base.d2s.hidden_dim == 768
        and base.d2s_conditions == ("with_control", "without_control")
    )
    cfgs = {s: load_config(f"paper/{s}") for s in SETTINGS}
    for name, cfg in cfgs.items():
        dataset, backbone = name.split("_")
        assert cfg.profile == f"paper/{name}" and cfg.data.name == dataset
        assert cfg.results_dir.parts[-3:] == ("results", "paper", name) and cfg.cache_dir.parts[-3:] == (
            "cache",
            "paper",
            name,
        )
        assert cfg.d2s == base.d2s  # the D2S hyperparameters are the same in every setting
        if backbone == "blip":
            assert (
                cfg.encoder.kind == "blip_hf"
                and cfg.encoder.checkpoint == f"Salesforce/blip-itm-base-{'coco' if dataset == 'mscoco' else 'flickr'}"
            )
        else:  # ALBEF exists only in LAVIS: released features by default
            assert (
                cfg.encoder.kind == "feature_files"
                and cfg.encoder.features_dir == f"data/released/{dataset}-albef-dense"
            )
    assert load_config("paper/mscoco/blip").profile == "paper/mscoco_blip"


def _profile_with_sweep(tmp_path, entry):
    (tmp_path / "x.yaml").write_text(yaml.safe_dump({"profile": "x", "sweep": [entry]}))
    return tmp_path


def test_setting_overrides_are_checked_key_by_key(tmp_path):
    params = _profile_with_sweep(
        tmp_path, {"dataset": "mscoco", "backbone": "blip", "overrides": {"encoder": {"kindd": "lavis"}}}
    )
    load_config("x", params_dir=params)  # the base profile does not apply any setting
    with pytest.raises(ConfigError, match=r"sweep setting 'mscoco_blip'.*unknown config key\(s\) encoder\.kindd"):
        load_config("x/mscoco_blip", params_dir=params)
    params = _profile_with_sweep(tmp_path, {"dataset": "mscoco", "backbone": "blip", "kernel": "lsr-lavis"})
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) sweep\[0\]\.kernel"):
        load_config("x", params_dir=params)
    params = _profile_with_sweep(tmp_path, {"dataset": "MS-COCO", "backbone": "blip"})
    with pytest.raises(ConfigError, match=r"sweep\[0\]\.dataset: must be lower-case"):
        load_config("x", params_dir=params)
    params = _profile_with_sweep(tmp_path, {"dataset": "mscoco", "backbone": "blip", "overrides": {"profile": "other"}})
    with pytest.raises(ConfigError, match="profile cannot be overridden"):
        load_config("x", params_dir=params)
    params = _profile_with_sweep(
        tmp_path, {"dataset": "mscoco", "backbone": "blip", "overrides": {"d2s": {"epochs": "many"}}}
    )
    with pytest.raises(ConfigError, match=r"d2s\.epochs: expected an integer"):
        load_config("x/mscoco_blip", params_dir=params)


@pytest.fixture
def tmp_repo(tmp_path, monkeypatch):
    """results/ and runs/ under a temporary root (params/ linked to the repository's); no input artifacts."""
    (tmp_path / "params").symlink_to(sweep.REPO_ROOT / "params")
    monkeypatch.setattr("lsr_lib.artifacts.catalog._artifact_ids", lambda cfg, stage, missing_seeds=None: {})
    monkeypatch.setattr("lsr_lib.config.profiles.REPO_ROOT", tmp_path)
    monkeypatch.setattr("lsr_lib.run.sweep.REPO_ROOT", tmp_path)
    return tmp_path


def _write_result(cfg, name, config=None):
    from lsr_lib.artifacts.catalog import stage_inputs
    from lsr_lib.storage.manifest import digest

    cfg.results_dir.mkdir(parents=True, exist_ok=True)
    stage = {"01": "01_cache_dense_features", "02": "02_train_sparse_heads"}[name[:2]]
    inputs = stage_inputs(cfg, stage)
    doc = {
        "results": {},
        "provenance": {"config": config if config is not None else to_dict(cfg)},
        "inputs": inputs,
        "inputs_fingerprint": digest(inputs),
    }
    (cfg.results_dir / name).write_text(json.dumps(doc))


def test_stage_is_current_only_with_the_same_config_code_and_inputs(tmp_repo, monkeypatch):
    from lsr_lib.artifacts import catalog

    cfg = load_config("paper/mscoco_albef")
    assert not sweep.stage_is_current(cfg, "01_cache_dense_features")
    _write_result(cfg, "01_dense_baseline.json")
    assert sweep.stage_is_current(cfg, "01_cache_dense_features") and not sweep.stage_is_current(
        cfg, "02_train_sparse_heads"
    )
    _write_result(cfg, "02_d2s.json", to_dict(load_config("paper/mscoco_albef", overrides={"d2s": {"epochs": 3}})))
    assert not sweep.stage_is_current(cfg, "02_train_sparse_heads")
    real = catalog.code_fingerprint
    monkeypatch.setattr(
        catalog,
        "code_fingerprint",
        lambda *a, **k: {**real(*a, **k), "code": {"lsr_lib/metrics/retrieval.py": "edited"}},
    )
    assert not sweep.stage_is_current(cfg, "01_cache_dense_features")  # same config, other code: rerun


def test_run_setting_skips_current_stages_and_stops_at_a_failure(tmp_repo, monkeypatch):
    calls = []

    def fake_run_stage(stage, profile, out_dir, progress=True, kernel_name="python3", bench=False):
        calls.append((stage, profile, kernel_name))
        if stage.startswith("03_"):
            raise RuntimeError("boom")

    monkeypatch.setattr(sweep, "run_stage", fake_run_stage)
    setting = load_config("paper").setting("mscoco/albef")
    setting = type(setting)(setting.dataset, setting.backbone, setting.overrides, extract_kernel="lsr-lavis")
    cfg = load_config("paper/mscoco_albef")
    assert sweep.run_setting(cfg, setting, STAGES, tmp_repo / "runs", progress=False) is False
    assert calls == [
        (STAGES[0], "paper/mscoco_albef", "lsr-lavis"),
        (STAGES[1], "paper/mscoco_albef", "python3"),
        (STAGES[2], "paper/mscoco_albef", "python3"),
    ]
    calls.clear()
    _write_result(cfg, "01_dense_baseline.json")
    _write_result(cfg, "02_d2s.json")
    assert sweep.run_setting(cfg, setting, STAGES[:2], tmp_repo / "runs", progress=False) is True and calls == []
    assert (
        sweep.run_setting(cfg, setting, STAGES[:2], tmp_repo / "runs", force=True, progress=False) is True
        and len(calls) == 2
    )
    assert sweep.stage_commands(cfg, setting, STAGES[:1], tmp_repo / "runs")[0].endswith(
        "-p profile paper/mscoco_albef -k lsr-lavis"
    )


def _metrics(r1):
    return {"R@1": r1, "R@5": r1 + 10, "R@10": r1 + 20, "MRR@10": r1 / 100, "n_queries": 5}


def test_summary_is_generated_from_result_files(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(
        "lsr_lib.results.figures.save_figure",
        lambda fig, name, profile="default": (
            saved.append(name) or Path(sweep_summary.REPO_ROOT) / "figures" / profile / f"{name}.png"
        ),
    )
    settings = list(load_config("paper").sweep)
    root = tmp_path / "results"
    (root / "mscoco_blip").mkdir(parents=True)
    sparsity = lambda f, q, d: {"flops": f, "avg_nonzeros_query": q, "avg_nonzeros_document": d}  # noqa: E731
    (root / "mscoco_blip" / "01_dense_baseline.json").write_text(
        json.dumps(
            {"results": {"baseline": {"test": {"text_to_image": _metrics(57.0), "image_to_text": _metrics(75.0)}}}}
        )
    )
    (root / "mscoco_blip" / "02_d2s.json").write_text(
        json.dumps(
            {
                "results": {
                    "test": {
                        "with_control": {
                            "text_to_image": _metrics(51.0),
                            "image_to_text": _metrics(66.0),
                            "sparsity_text_to_image": sparsity(1.5, 20, 60),
                        },
                        "without_control": {
                            "text_to_image": _metrics(52.0),
                            "image_to_text": _metrics(67.0),
                            "sparsity_text_to_image": sparsity(9.25, 70, 80),
                        },
                    }
                }
            }
        )
    )
    (tmp_path / "check.md").write_text("| condition | metric |\n")
    text = sweep_summary.write_summary("paper", settings, tmp_path / "check.md", results_root=root).read_text()
    assert "| mscoco / blip | dense teacher (ITC) | 57.0 | 67.0 | 77.0 | 57.0 | 75.0 | dense | 256 | 256 |" in text
    assert "| mscoco / blip | D2S, with expansion control | 51.0 | 61.0 | 71.0 | 51.0 | 66.0 | 1.50 | 20 | 60 |" in text
    assert "| mscoco / blip | D2S, without expansion control | 52.0 |" in text and "9.25" in text
    assert text.count("not run yet") == 9  # three models in each of the three settings without results
    assert "## Expected values" in text and "| condition | metric |" in text and saved == ["sweep_r1_vs_flops"]


def test_makefile_paper_dry_run_calls_the_sweep():
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    target = makefile.split("paper-dry-run: setup\n", 1)[1].splitlines()[0]
    assert target.strip() == "$(PY) -m lsr_lib.run.sweep --profile paper --dry-run"


def test_editing_another_setting_keeps_results_current(tmp_repo):
    cfg = load_config("paper/mscoco_blip")
    stored = to_dict(cfg)
    stored["sweep"] = stored["sweep"][:1]  # the sweep list changed since the run
    _write_result(cfg, "01_dense_baseline.json", stored)
    assert sweep.stage_is_current(cfg, "01_cache_dense_features")


def test_ctrl_c_stops_the_sweep_with_exit_130_and_says_how_to_resume(tmp_repo, monkeypatch, caplog):
    import logging

    calls = []

    def fake_run_stage(stage, profile, out_dir, progress=True, kernel_name="python3", bench=False):
        calls.append((stage, profile))
        if stage.startswith("02_"):
            raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "run_stage", fake_run_stage)
    monkeypatch.setattr(sweep, "finish", lambda profile: pytest.fail("the check must not run after an interrupt"))
    with caplog.at_level(logging.INFO, logger="lsr_lib.run.sweep"):
        code = sweep.main(
            ["--profile", "paper", "--stages", "01", "02", "--runs", str(tmp_repo / "runs"), "--no-progress"]
        )
    # no later setting started
    assert code == 130 and calls == [(STAGES[0], "paper/mscoco_blip"), (STAGES[1], "paper/mscoco_blip")]
    assert (
        "interrupted during mscoco_blip / 02_train_sparse_heads" in caplog.text
        and "Rerun the same command" in caplog.text
    )
