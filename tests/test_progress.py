"""Progress reaches the terminal: bars write the status file, the pipeline prints new lines while a stage runs."""

import time

import pytest

from lsr_lib.run.pipeline import show_status
from lsr_lib.storage import progress
from lsr_lib.storage.manifest import Artifact, build_or_reuse


def test_bar_writes_what_how_far_and_eta(tmp_path, monkeypatch):
    path = tmp_path / "status"
    monkeypatch.setenv(progress.STATUS_ENV, str(path))
    monkeypatch.setattr(progress, "MIN_INTERVAL_S", 0.0)
    with progress.progress_bar(total=10, desc="D2S", unit="step", mininterval=0) as bar:
        for _ in range(4):
            bar.update(1)
        mid = path.read_text()
        bar.update(6)
    assert mid.startswith("D2S: 4/10 step (40%)") and "ETA" in mid
    assert path.read_text().startswith("D2S: 10/10 step (100%)")


def test_without_the_variable_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv(progress.STATUS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    for _ in progress.progress_bar(range(3), desc="x", mininterval=0):
        pass
    progress.report("hello")
    assert list(tmp_path.iterdir()) == []


def test_reuse_and_build_are_reported(tmp_path, monkeypatch):
    path = tmp_path / "status"
    monkeypatch.setenv(progress.STATUS_ENV, str(path))
    art = Artifact(tmp_path / "thing", "toy artifact", "stage 00")

    def build(root):
        root.mkdir(parents=True, exist_ok=True)
        assert path.read_text().strip() == "toy artifact: building"
        (root / "a.txt").write_text("a")
        return ["a.txt"], {}

    build_or_reuse(art, {"v": 1}, build, log=lambda s: None)
    build_or_reuse(art, {"v": 1}, build, log=lambda s: None)
    assert path.read_text().strip() == "toy artifact: up to date, reused"


def test_show_status_prints_new_steps_and_repeats_rarely(tmp_path, capsys):
    path = tmp_path / ".02_train_sparse_heads.status"
    path.write_text("left over from an earlier run\n")
    with show_status("02_train_sparse_heads", path, poll_s=0.02, repeat_s=3600):
        assert not path.exists()  # a stale line is not shown
        for text in ("D2S: 1/10 step (10%)", "D2S: 2/10 step (20%)", "vectors: up to date, reused"):
            path.write_text(text + "\n")
            time.sleep(0.15)
    err = capsys.readouterr().err
    assert "02 [" in err and "D2S: 1/10 step (10%)" in err and "vectors: up to date, reused" in err
    assert "D2S: 2/10" not in err  # the same step again within repeat_s is not repeated
    with show_status("02_train_sparse_heads", path, enabled=False, poll_s=0.02):
        path.write_text("quiet\n")
        time.sleep(0.1)
    assert "quiet" not in capsys.readouterr().err


def test_notice_prints_and_appends_one_line_to_the_notices_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "notices"
    monkeypatch.setenv(progress.NOTICES_ENV, str(path))
    progress.notice("cache shard x.safetensors does not match its checksum;\nrecomputing it")
    with pytest.warns(UserWarning, match="set aside"):
        progress.notice("last_state.pt: truncated; it is set aside", warn=True)
    assert "recomputing it" in capsys.readouterr().err
    assert path.read_text().splitlines() == [
        "cache shard x.safetensors does not match its checksum; recomputing it",
        "last_state.pt: truncated; it is set aside",
    ]
    monkeypatch.delenv(progress.NOTICES_ENV)
    progress.notice("outside the pipeline: printed only")
    assert len(path.read_text().splitlines()) == 2


def test_notices_written_during_a_stage_reach_the_terminal(tmp_path, monkeypatch, capsys):
    status, notices = tmp_path / ".03_x.status", tmp_path / ".03_x.notices"
    notices.write_text("left over from an earlier run\n")
    monkeypatch.setenv(progress.NOTICES_ENV, str(notices))
    for enabled in (True, False):  # notices reach the terminal with or without --no-progress
        with show_status("03_x", status, enabled=enabled, poll_s=0.02, notices=notices):
            assert not notices.exists()
            progress.notice("D2S run with_control: corrupt (best.json is missing); training again")
            time.sleep(0.2)
            shown = capsys.readouterr().err
            assert "03 warning: D2S run with_control: corrupt (best.json is missing); training again" in shown
            with open(notices, "a") as f:
                f.write("cache shard-00001.safetensors does not match its checksum; recomputing it")  # no newline yet
            time.sleep(0.1)
            assert "shard-00001" not in capsys.readouterr().err  # a line is shown once it is whole ...
        assert "03 warning: cache shard-00001.safetensors" in capsys.readouterr().err  # ... or when the stage ends
    assert "left over" not in capsys.readouterr().err


def test_library_messages_about_set_aside_files_go_through_the_notice_channel(tmp_path, monkeypatch):
    path = tmp_path / "notices"
    monkeypatch.setenv(progress.NOTICES_ENV, str(path))
    art = Artifact(tmp_path / "thing", "toy artifact", "stage 00")

    def build(root):
        root.mkdir(parents=True, exist_ok=True)
        (root / "a.txt").write_text("a")
        return ["a.txt"], {}

    build_or_reuse(art, {"v": 1}, build)
    (tmp_path / "thing" / "a.txt").write_text("b")
    build_or_reuse(art, {"v": 1}, build)
    text = path.read_text()
    assert text.startswith("toy artifact: corrupt (") and "a.txt does not match its checksum" in text
    assert text.rstrip().endswith("rebuilding")
