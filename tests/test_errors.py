"""Errors that stop a run name the file and the fix in one line (issue 25): full disks, damaged result files."""

from __future__ import annotations

import errno
import json

import pytest
import torch
from safetensors import SafetensorError

from lsr_lib.storage import checkpoint
from lsr_lib.storage.atomic import WriteError, atomic_write, atomic_write_text
from lsr_lib.storage.errors import ResultFileError, one_line_errors, read_result_json


def _full_disk(tmp: str) -> None:
    with open(tmp, "wb") as f:
        f.write(b"half a file")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_names_the_file_and_what_to_free(tmp_path):
    target = tmp_path / "cache" / "shard-00003.safetensors"
    with pytest.raises(WriteError) as err:
        atomic_write(target, _full_disk)
    text = str(err.value)
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)
    assert text.startswith(f"cannot write {target}: no space left on the disk holding {target.parent} (")
    assert "GiB free" in text and "Free space there" in text and "data/cache/" in text
    assert list(target.parent.iterdir()) == []  # the half-written temporary file is gone
    with pytest.raises(ValueError, match="not a disk problem"):  # other errors pass unchanged
        atomic_write(target, lambda tmp: (_ for _ in ()).throw(ValueError("not a disk problem")))


def test_a_full_disk_inside_safetensors_names_the_weights_file(tmp_path, monkeypatch):
    def no_space(tensors, path, metadata=None):
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        )

    monkeypatch.setattr(checkpoint, "save_file", no_space)
    run = checkpoint.TrainingRun(tmp_path / "run", {"k": 1}, "toy run", "stage 99")
    weights = tmp_path / "run" / "best.safetensors"
    with pytest.raises(WriteError, match=rf"cannot write {weights}: no space left .*SafetensorError"):
        run.save_best({"w": torch.zeros(2)}, {"epoch": 1})


def test_a_known_error_is_one_line_on_stderr_and_debug_raises_it(tmp_path, capsys):
    @one_line_errors()
    def main(argv=None) -> int:
        atomic_write_text(tmp_path / "x" / "results.json", "{}")
        raise WriteError(errno.ENOSPC, "cannot write x: no space left on the disk holding y.\nFree space there")

    assert main([]) == 1
    assert capsys.readouterr().err == "error: cannot write x: no space left on the disk holding y. Free space there\n"
    with pytest.raises(WriteError):
        main(["--debug"])


def test_a_result_file_is_read_missing_or_named_when_damaged(tmp_path):
    path = tmp_path / "results" / "paper" / "mscoco_blip" / "04_retrieval.json"
    assert read_result_json(path) is None
    path.parent.mkdir(parents=True)
    path.write_text('{"a": 1}')
    assert read_result_json(path) == {"a": 1}
    path.write_text('{"a": ')
    fix = "python -m lsr_lib.run.pipeline --profile paper/mscoco_blip --stages 04 --force"
    with pytest.raises(ResultFileError, match=rf"{path} is not valid JSON .*{fix}"):
        read_result_json(path)
    path.write_text("[1, 2]")
    with pytest.raises(ResultFileError, match="holds a JSON list"):
        read_result_json(path)


def test_a_training_state_with_numpy_scalars_resumes_and_an_unreadable_one_is_set_aside_with_its_reason(tmp_path):
    """The multi-style default's validation metrics are keyed by gallery; numpy string keys made every saved D2S
    state one that ``torch.load(weights_only=True)`` refuses, so an interrupted run crashed instead of resuming."""
    import numpy as np

    run = checkpoint.TrainingRun(tmp_path / "run", {"k": 1}, "toy run", "stage 99")
    state = {
        "progress": {"history": [{"by_gallery": {np.str_("twemoji"): {"R@1": np.float64(12.5)}}, "n": np.int64(3)}]}
    }
    run.save_state({**state, "model": {"w": torch.ones(2)}})
    back = run.load_state()
    gallery = back["progress"]["history"][0]["by_gallery"]
    assert gallery == {"twemoji": {"R@1": 12.5}} and type(next(iter(gallery))) is str
    assert type(back["progress"]["history"][0]["n"]) is int and torch.equal(back["model"]["w"], torch.ones(2))

    # a state written before the fix: numpy objects pickled as they were
    torch.save(state, tmp_path / "run" / checkpoint.LAST_STATE)
    meta = json.loads((tmp_path / "run" / checkpoint.LAST_STATE_META).read_text())
    meta["sha256"] = checkpoint.sha256_file(tmp_path / "run" / checkpoint.LAST_STATE)
    (tmp_path / "run" / checkpoint.LAST_STATE_META).write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match=r"cannot be read back .*\(UnpicklingError\).*training starts from epoch 0"):
        assert run.load_state() is None
    assert (tmp_path / "run" / (checkpoint.LAST_STATE + ".rejected")).exists()
