"""Shared test setup: everything runs offline (no model hub, no dataset host)."""

import os

# Set before any test module imports transformers / huggingface_hub, which read these at import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    """The BERT-uncased WordPiece tokenizer, installed offline with MiniLM."""
    from lsr_lib.sparse.expansion_control import bert_uncased_tokenizer

    return bert_uncased_tokenizer()


def run_twice_at_once(fn, stagger_s: float = 0.1, timeout_s: float = 300) -> list:
    """Call ``fn()`` in two threads started ``stagger_s`` apart; both results (or the exception each raised)."""
    import threading
    import time

    out = [None, None]

    def run(k):
        try:
            out[k] = fn()
        except BaseException as e:  # noqa: BLE001 (returned to the test, which checks it)
            out[k] = e

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
        time.sleep(stagger_s)
    for t in threads:
        t.join(timeout_s)
    return out


def pytest_collection_modifyitems(session, config, items):
    """tests/test_lab_browser.py last: in `make test` (pytest tests notebooks) it then runs after nbval has run
    notebooks 01 and 02 on smoke, whose outputs notebook 03 needs (else it skips)."""
    items.sort(key=lambda item: item.path.name == "test_lab_browser.py")  # stable: the rest keep their order
