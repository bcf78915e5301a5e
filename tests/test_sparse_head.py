"""D2S head (DESIGN.md section 2): architecture, vocabulary-layer init, and the text-branch pin."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from lsr_lib.sparse.head import D2SModel, SparseHead, mlm_head_init, vocab_layer_init

D, H, V = 12, 8, 40


def _parts(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "weight": torch.randn(V, H, generator=g),
        "bias": torch.randn(V, generator=g),
        "norm_weight": None,
        "norm_bias": None,
    }


def _model(shared: bool) -> D2SModel:
    return D2SModel.build(D, _parts(), torch.Generator().manual_seed(1), shared_head=shared)


def test_head_is_linear_layernorm_vocab_log1p_relu():
    head = SparseHead(D, H, V)
    head.reset_parameters(torch.Generator().manual_seed(0))
    e = torch.randn(5, D, generator=torch.Generator().manual_seed(2))
    ref = torch.log1p(
        torch.relu(head.vocab(torch.nn.functional.layer_norm(head.proj(e), (H,), head.norm.weight, head.norm.bias)))
    )
    out = head(e)
    assert out.shape == (5, V)
    assert torch.allclose(out, ref)
    assert (out >= 0).all()


def test_same_seed_same_model():
    a, b = _model(True), _model(True)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_vocab_layer_takes_the_init():
    model = _model(True)
    assert torch.equal(model.image_head.vocab.weight, _parts()["weight"])
    assert torch.equal(model.image_head.vocab.bias, _parts()["bias"])


def test_text_vector_comes_from_text_embedding_only():
    """The reference code computed the unmasked text branch from the image embedding: pin the fix."""
    g = torch.Generator().manual_seed(3)
    txt = torch.randn(4, D, generator=g)
    img_a, img_b = torch.randn(4, D, generator=g), torch.randn(4, D, generator=g)
    for shared in (True, False):
        model = _model(shared)
        _, t_a = model(img_a, txt)
        _, t_b = model(img_b, txt)
        assert torch.equal(t_a, t_b), "text output changed with the image input"
        assert torch.equal(t_a, model.text_head(txt))
        assert torch.equal(model.encode_text(txt), model.text_head(txt))
        img = img_a.clone().requires_grad_(True)
        _, t = model(img, txt)
        (grad,) = torch.autograd.grad(t.sum(), img, allow_unused=True)
        assert grad is None or torch.count_nonzero(grad) == 0
    separate = _model(False)
    assert separate.text_head is not separate.image_head
    assert not torch.equal(separate.encode_text(txt), separate.encode_image(txt))  # different heads


def test_text_mask_multiplies():
    model = _model(True)
    txt = torch.randn(3, D, generator=torch.Generator().manual_seed(4))
    mask = torch.zeros(3, V)
    mask[0, [1, 5]] = 1
    mask[2] = 1
    out = model.encode_text(txt, mask)
    full = model.encode_text(txt)
    assert torch.equal(out, full * mask)
    assert torch.count_nonzero(out[1]) == 0
    assert torch.equal(out[2], full[2])


def test_vocab_init_from_safetensors_file(tmp_path):
    p = _parts()
    save_file({"weight": p["weight"], "bias": p["bias"]}, str(tmp_path / "v.safetensors"))
    w, b = vocab_layer_init(str(tmp_path / "v.safetensors"))
    assert torch.equal(w, p["weight"]) and torch.equal(b, p["bias"])


def test_vocab_init_from_tiny_distilbert_mlm(tmp_path):
    """A randomly initialised DistilBertForMaskedLM saved locally stands in for distilbert-base-uncased."""
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    torch.manual_seed(0)  # transformers initialises from the global RNG; only the saved values matter here
    cfg = DistilBertConfig(vocab_size=60, dim=16, n_layers=1, n_heads=2, hidden_dim=32, max_position_embeddings=32)
    mlm = DistilBertForMaskedLM(cfg)
    with torch.no_grad():
        mlm.vocab_projector.bias.normal_()
        mlm.vocab_layer_norm.weight.normal_()
    mlm.save_pretrained(tmp_path / "mlm")
    w, b = vocab_layer_init(str(tmp_path / "mlm"))
    assert w.shape == (60, 16) and b.shape == (60,)
    assert torch.allclose(w, mlm.vocab_projector.weight) and torch.allclose(
        w, mlm.distilbert.embeddings.word_embeddings.weight
    )
    assert torch.allclose(b, mlm.vocab_projector.bias)
    parts = mlm_head_init(str(tmp_path / "mlm"))
    assert torch.allclose(parts["norm_weight"], mlm.vocab_layer_norm.weight)
    model = D2SModel.build(D, parts, torch.Generator().manual_seed(0))
    assert torch.allclose(model.image_head.norm.weight, mlm.vocab_layer_norm.weight)


def test_vocab_init_from_installed_minilm():
    w, b = vocab_layer_init("minilm")
    assert w.shape == (30522, 384) and torch.count_nonzero(b) == 0


def _tiny_distilbert_mlm(folder):
    """A randomly initialised DistilBertForMaskedLM saved with save_pretrained (no download)."""
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    torch.manual_seed(1)  # transformers initialises from the global RNG; only the saved values matter here
    cfg = DistilBertConfig(vocab_size=50, dim=24, n_layers=1, n_heads=2, hidden_dim=48, max_position_embeddings=16)
    mlm = DistilBertForMaskedLM(cfg)
    with torch.no_grad():
        mlm.vocab_projector.bias.uniform_(-1, 1)  # non-zero, so copying the bias is checked
        mlm.vocab_layer_norm.bias.uniform_(-1, 1)
    mlm.save_pretrained(folder)
    return mlm


def test_d2s_build_model_takes_the_distilbert_mlm_head(tmp_path):
    """The paper's vocab_init path (distilbert-base-uncased) on a tiny local stand-in: H x V + bias from
    vocab_projector."""
    from lsr_lib.config.d2s import D2SConfig
    from lsr_lib.train.d2s import build_model

    mlm = _tiny_distilbert_mlm(tmp_path / "distilbert-tiny")
    for shared in (True, False):
        model = build_model(
            D2SConfig(vocab_init=str(tmp_path / "distilbert-tiny"), hidden_dim=24, shared_head=shared), dense_dim=D
        )
        assert (model.vocab_size, model.hidden_dim) == (50, 24)
        for head in model.heads.values():
            assert torch.equal(head.vocab.weight, mlm.vocab_projector.weight)  # (V, H), tied to the word embeddings
            assert torch.equal(head.vocab.weight, mlm.distilbert.embeddings.word_embeddings.weight)
            assert torch.equal(head.vocab.bias, mlm.vocab_projector.bias)
            assert torch.equal(head.norm.weight, mlm.vocab_layer_norm.weight)
            assert torch.equal(head.norm.bias, mlm.vocab_layer_norm.bias)
            assert head.proj.weight.shape == (24, D)


def test_d2s_build_model_rejects_a_wrong_hidden_dim(tmp_path):
    import pytest

    from lsr_lib.config.d2s import D2SConfig
    from lsr_lib.train.d2s import build_model
    from lsr_lib.config.typed import ConfigError

    _tiny_distilbert_mlm(tmp_path / "m")
    with pytest.raises(ConfigError, match="hidden_dim: 768 .* H = 24"):
        build_model(D2SConfig(vocab_init=str(tmp_path / "m"), hidden_dim=768), dense_dim=D)


def test_missing_masked_lm_says_to_download_it_first(tmp_path):
    import pytest
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache("distilbert-base-uncased", "config.json"), str):
        pytest.skip("distilbert-base-uncased is in the local Hugging Face cache")
    with pytest.raises(
        OSError,
        match=(
            r"(?s)d2s\.vocab_init: .*`hf download distilbert-base-uncased`.*huggingface-cli download "
            r"distilbert-base-uncased"
        ),
    ):
        mlm_head_init("distilbert-base-uncased")
    with pytest.raises(FileNotFoundError, match=r"d2s\.vocab_init: .* is not a folder"):
        mlm_head_init(str(tmp_path / "no_such_model"))
