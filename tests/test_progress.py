"""Progress reaches the terminal: bars write the status file, the pipeline prints new lines while a stage runs."""
import time

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
