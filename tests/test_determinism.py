"""Same seed, same thread count: bit-identical weights from the trained parts; ``seed_everything``'s settings.

Thread counts are not compared here: D2S weights depend on them on CPU (LayerNorm backward),
which ``benchmarks/determinism.py`` measures (``results/benchmarks/determinism.json``).
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from lsr_lib.config.d2s import D2SConfig
from lsr_lib.config.profiles import LitConfig
from lsr_lib.dense.lit_projection import train_lit
from lsr_lib.results.provenance import determinism_settings, seed_everything
from lsr_lib.train.d2s import train_d2s

D, V, H, N_IMG, CAPS = 16, 256, 16, 48, 2


@pytest.fixture(autouse=True)
def restore_torch_settings():
    """seed_everything changes process-wide settings: put them back for the other test modules."""
    threads, det, warn_only = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det, warn_only=warn_only)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
    if cublas is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


@pytest.fixture(scope="module")
def toy():
    """Images from 8 concepts, two noisy captions each, caption tokens = the concepts' terms."""
    g = torch.Generator().manual_seed(0)
    concepts = F.normalize(torch.randn(8, D, generator=g), dim=1)
    pick = torch.randint(0, 8, (N_IMG,), generator=g)  # (N,)
    img = F.normalize(concepts[pick] + 0.3 * torch.randn(N_IMG, D, generator=g), dim=1)  # (N, d)
    txt = F.normalize(
        concepts[pick].repeat_interleave(CAPS, 0) + 0.3 * torch.randn(N_IMG * CAPS, D, generator=g), dim=1
    )  # (N * CAPS, d)
    terms = torch.randperm(V, generator=g)[:16].reshape(8, 2)
    views = torch.stack([img, img + 0.1 * torch.randn(N_IMG, D, generator=g)], 1)  # (N, 2, d)
    return {
        "views": views.numpy(),
        "text_384": (txt @ torch.randn(D, 384, generator=g)).numpy(),
        "rows": np.repeat(np.arange(N_IMG), CAPS),
        "d2s_train": {
            "img_emb": img.repeat_interleave(CAPS, 0),
            "txt_emb": txt,
            "txt_mask_ids": terms[pick].repeat_interleave(CAPS, 0),
        },
        "vocab": {"weight": torch.randn(V, H, generator=g), "bias": torch.zeros(V)},
    }


def _lit_weights(toy, seed: int) -> dict:
    seed_everything(seed, threads=1)
    cfg = LitConfig(hidden_dim=32, epochs=3, batch_size=32, dropout=0.1, seed=seed)  # dropout: the global stream
    model, _ = train_lit(toy["views"], toy["text_384"], toy["rows"], cfg, progress=False)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _d2s_weights(toy, tmp_path, run: str, seed: int, cpu_bf16: bool) -> dict:
    seed_everything(seed, threads=1)
    vocab = tmp_path / "vocab.safetensors"
    save_file(toy["vocab"], str(vocab))
    cfg = D2SConfig(
        vocab_init=str(vocab),
        epochs=2,
        batch_size=32,
        lr_projection=3e-2,
        lr_vocab=3e-2,
        gate="example",
        cpu_bf16=cpu_bf16,
        seed=seed,
        data_seed=seed + 1,
        gate_seed=seed + 2,
    )
    train_d2s(cfg, toy["d2s_train"], None, tmp_path / run, progress=False, resume=False)  # its own folder: never reused
    return load_file(str(tmp_path / run / "best.safetensors"))


def _identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lit_same_seed_same_threads_is_bitwise_identical(toy):
    assert _identical(_lit_weights(toy, 0), _lit_weights(toy, 0))


@pytest.mark.parametrize("cpu_bf16", [False, True], ids=["fp32", "cpu_bf16"])
def test_d2s_same_seed_same_threads_is_bitwise_identical(toy, tmp_path, cpu_bf16):
    assert _identical(_d2s_weights(toy, tmp_path, "a", 0, cpu_bf16), _d2s_weights(toy, tmp_path, "b", 0, cpu_bf16))


def test_another_seed_gives_other_weights(toy, tmp_path):
    """The two tests above can fail: the seed reaches the weights."""
    assert not _identical(_lit_weights(toy, 0), _lit_weights(toy, 1))
    assert not _identical(_d2s_weights(toy, tmp_path, "a", 0, False), _d2s_weights(toy, tmp_path, "b", 1, False))


def test_seed_everything_sets_threads_and_deterministic_kernels(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    interop = torch.get_num_interop_threads()
    got = seed_everything(3, threads=1)
    assert torch.get_num_threads() == 1
    assert got["seed"] == 3 and got["torch_threads"] == 1 and got["deterministic_algorithms"] is True
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.get_num_interop_threads() == interop
    draws = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(3)  # threads=None: the thread count stays as it is
    assert torch.get_num_threads() == 1
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == draws
    assert determinism_settings() == {k: v for k, v in got.items() if k != "seed"}


def test_seed_everything_keeps_a_chosen_cublas_config_and_rejects_bad_threads(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    assert seed_everything(0)["cublas_workspace_config"] == ":16:8"
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            seed_everything(0, threads=bad)
