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
