"""requirements.lock: complete, hash-checked, the CPU torch; the venv matches it; provenance records it."""

from __future__ import annotations

import re
import warnings

import pytest

from lsr_lib.results.provenance import (
    LOCK_FILE,
    LockMismatchWarning,
    check_lock,
    lock_pins,
    lock_sha256,
    packages,
    provenance,
)

tomllib = pytest.importorskip("tomllib")  # Python 3.11, the lock's Python

ROOT = LOCK_FILE.parent


@pytest.fixture(scope="module")
def lock_text() -> str:
    return LOCK_FILE.read_text()


def requirement_blocks(text: str) -> dict[str, str]:
    """``{name: 'name==version \\ --hash=... lines'}``, one block per pinned requirement."""
    blocks, name = {}, None
    for line in text.splitlines():
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==", line)
        if m:
            name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
            blocks[name] = line
        elif name and line.startswith("    --hash="):
            blocks[name] += "\n" + line
        elif not line.startswith(" "):
            name = None
    return blocks


def pyproject_dependencies() -> list[str]:
    """Canonical names of the dependencies and of the test and lab extras in pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["test"] + project["optional-dependencies"]["lab"]
    return [re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", r).group()).lower() for r in reqs]


def test_lock_parses_and_pins_the_cpu_torch(lock_text):
    pins = lock_pins(lock_text)
    assert len(pins) > 50
    assert pins["torch"] == "2.13.0"  # the local CPU wheel; `+cpu` dropped so a CUDA 2.13.0 also satisfies it
    assert not any(name.startswith("nvidia-") for name in pins)  # no CUDA runtime packages


def test_every_pyproject_dependency_is_pinned_with_a_hash(lock_text):
    blocks = requirement_blocks(lock_text)
    for name in pyproject_dependencies():
        assert name in blocks, f"{name} is in pyproject.toml but not in requirements.lock: run `make lock`"
        assert re.match(r"\S+==\S+ \\", blocks[name]), blocks[name]
        assert "--hash=sha256:" in blocks[name], f"{name} has no hash in requirements.lock"
    assert all("--hash=sha256:" in b for b in blocks.values())  # pip --require-hashes needs every one


def test_this_venv_matches_the_lock():
    assert check_lock(warn=False) == [], "the installed packages differ from requirements.lock: run `make setup`"


def test_a_changed_pin_is_reported_with_a_warning(lock_text):
    changed = re.sub(r"^numpy==\S+", "numpy==0.0.1", lock_text, flags=re.M) + "no-such-package==1.0 \\\n"
    with pytest.warns(LockMismatchWarning, match=r"numpy .*\(lock 0\.0\.1\).*make setup"):
        diff = check_lock(lock=changed)
    assert f"numpy {packages()['numpy']} (lock 0.0.1)" in diff
    assert "no-such-package missing (lock 1.0)" in diff


def test_a_local_build_label_satisfies_a_plain_pin():
    installed_torch = packages()["torch"]  # e.g. 2.13.0+cpu
    public = installed_torch.split("+")[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_lock(lock=f"torch=={public} \\\n") == []
    if "+" in installed_torch:
        assert check_lock(warn=False, lock=f"torch=={public}+cu999 \\\n") == [
            f"torch {installed_torch} (lock {public}+cu999)"
        ]


def test_provenance_records_the_lock_and_the_full_package_set(tmp_path):
    from lsr_lib.config.profiles import load_config

    prov = provenance(load_config("smoke"))
    assert prov["lock_sha256"] == lock_sha256() and re.fullmatch(r"[0-9a-f]{64}", prov["lock_sha256"])
    assert prov["lock_diff"] == check_lock(warn=False)
    assert len(prov["packages"]) > 50
    assert prov["packages"]["torch"] == packages()["torch"]
    assert lock_sha256(tmp_path / "absent.lock") is None
