"""LavisEncoder with LAVIS mocked only at the weight-loading boundary (the injected ``loader``).

Two tiny stand-ins mirror what ``load_model_and_preprocess`` returns: a retrieval-style model
(``visual_encoder.forward_features``, ``text_encoder.forward_text``, ``tokenizer``, projections,
momentum copies), as ``blip_retrieval`` / ``albef_retrieval`` really are, and a feature-extractor
style model with ``extract_features``. Processors are plain callables, like LAVIS' ``eval`` ones.
"""

import copy
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from transformers import BertTokenizer

from lsr_lib.dense.blip import blip_pre_caption
from lsr_lib.data.karpathy import load_image, load_karpathy
from lsr_lib.dense.lavis import MOMENTUM_MODULES, LavisEncoder

FIXTURES = Path(__file__).parent / "fixtures"
WIDTH, DIM, SIZE = 24, 8, 16
TEXTS = ["A red ball on a table.", "a blue sky", "An orange sun in a blue sky!", "a cat", "the dog sits on a mat"]


def eval_image_processor(img):
    """PIL -> (3, SIZE, SIZE) float tensor, standing in for LAVIS' ``blip_image_eval``."""
    arr = np.asarray(img.convert("RGB").resize((SIZE, SIZE)), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)


class FakeVisualEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, WIDTH, kernel_size=8, stride=8)
        self.cls = nn.Parameter(torch.randn(1, 1, WIDTH))

    def forward_features(self, x):  # (B, 3, 16, 16) -> (B, 1 + 4, WIDTH)
        patches = self.patch(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(len(x), -1, -1) + patches.mean(1, keepdim=True), patches], dim=1)


class FakeTextEncoder(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, WIDTH)

    def forward_text(self, tok):  # CLS state = masked mean of token embeddings, so padding must be masked
        h = self.emb(tok.input_ids)  # (B, L, WIDTH)
        m = tok.attention_mask.unsqueeze(-1).float()
        cls = (h * m).sum(1, keepdim=True) / m.sum(1, keepdim=True)
        return SimpleNamespace(last_hidden_state=torch.cat([cls, h[:, 1:]], dim=1))


class FakeRetrievalModel(nn.Module):
    """Shaped like LAVIS' BlipRetrieval / AlbefRetrieval for the parts the encoder touches."""

    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer = tokenizer
        self.visual_encoder = FakeVisualEncoder()
        self.text_encoder = FakeTextEncoder(len(tokenizer))
        self.vision_proj, self.text_proj = nn.Linear(WIDTH, DIM), nn.Linear(WIDTH, DIM)
        for name in MOMENTUM_MODULES:
            setattr(self, name, copy.deepcopy(getattr(self, name[:-2])))
        self.model_pairs = [[self.visual_encoder, self.visual_encoder_m], [self.text_proj, self.text_proj_m]]


class FakeExtractorModel(nn.Module):
    """Shaped like LAVIS' feature extractors: ``extract_features`` with unnormalised ``*_proj``."""

    def __init__(self):
        super().__init__()
        self.image_head = nn.Linear(3, DIM)
        self.text_head = nn.Embedding(1000, DIM)
        self.calls = []

    def extract_features(self, samples, mode):
        self.calls.append((mode, len(samples["image" if mode == "image" else "text_input"])))
        if mode == "image":
            tokens = samples["image"].flatten(2).transpose(1, 2)  # (B, P, 3)
            return SimpleNamespace(image_embeds_proj=3.0 * self.image_head(tokens))  # (B, P, DIM)
        ids = torch.tensor([[sum(map(ord, t)) % 1000, len(t)] for t in samples["text_input"]])
        return SimpleNamespace(text_embeds_proj=5.0 * self.text_head(ids))  # (B, 2, DIM)


class Loader:
    """Records how it was called and returns (model, vis_processors, txt_processors)."""

    def __init__(self, make_model):
        self.make_model, self.calls = make_model, []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        torch.manual_seed(0)
        eval_text = lambda t: blip_pre_caption(t, 50)  # noqa: E731 - as LAVIS' blip_caption
        return self.make_model(), {"eval": eval_image_processor}, {"eval": eval_text}


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer.from_pretrained(str(FIXTURES / "tiny_bert_vocab"))


@pytest.fixture(scope="module")
def images():
    col = load_karpathy(FIXTURES / "karpathy_tiny.json", image_root=FIXTURES / "karpathy_images")
    return [load_image(p) for p in col.images["path"]] * 2  # 8 images


def retrieval_encoder(tokenizer, **kw):
    kw.setdefault("device", "cpu")
    return LavisEncoder("blip_retrieval", "coco", loader=Loader(lambda: FakeRetrievalModel(tokenizer)), **kw)


def test_loader_call_momentum_removed_and_frozen(tokenizer):
    loader = Loader(lambda: FakeRetrievalModel(tokenizer))
    enc = LavisEncoder("albef_retrieval", "flickr", device="cpu", loader=loader)
    assert loader.calls == [{"name": "albef_retrieval", "model_type": "flickr", "is_eval": True, "device": "cpu"}]
    assert not any(hasattr(enc.model, m) for m in MOMENTUM_MODULES) and enc.model.model_pairs == []
    assert not enc.model.training and not any(p.requires_grad for p in enc.model.parameters())
    assert all(p.device.type == "cpu" for p in enc.model.parameters())
    assert enc.dim == DIM and enc.name == "lavis_albef_retrieval_flickr"


def test_retrieval_path_shapes_norm_and_batching(tokenizer, images):
    enc, small = retrieval_encoder(tokenizer), retrieval_encoder(tokenizer, batch_size=3)
    img, txt = enc.encode_images(images), enc.encode_texts(TEXTS)
    assert img.shape == (8, DIM) and txt.shape == (5, DIM)
    for emb in (img, txt):
        assert emb.dtype == torch.float32 and emb.device.type == "cpu"
        torch.testing.assert_close(emb.norm(dim=1), torch.ones(len(emb)))
    torch.testing.assert_close(small.encode_images(images), img, atol=1e-6, rtol=0)
    torch.testing.assert_close(small.encode_texts(TEXTS), txt, atol=1e-6, rtol=0)
    torch.testing.assert_close(img[:4], img[4:], atol=1e-6, rtol=0)  # same image, same vector
    assert enc.encode_images([]).shape == (0, DIM)


def test_retrieval_path_matches_lavis_itc_recipe(tokenizer, images):
    """vision_proj(CLS of forward_features) and text_proj(CLS of forward_text), normalised."""
    enc = retrieval_encoder(tokenizer)
    m = enc.model
    pixels = torch.stack([eval_image_processor(im) for im in images])
    tok = tokenizer(
        [blip_pre_caption(t) for t in TEXTS], padding="max_length", truncation=True, max_length=35, return_tensors="pt"
    )
    with torch.no_grad():
        ref_img = torch.nn.functional.normalize(m.vision_proj(m.visual_encoder.forward_features(pixels)[:, 0]), dim=-1)
        ref_txt = torch.nn.functional.normalize(
            m.text_proj(m.text_encoder.forward_text(tok).last_hidden_state[:, 0]), dim=-1
        )
    torch.testing.assert_close(enc.encode_images(images), ref_img, atol=1e-6, rtol=0)
    torch.testing.assert_close(enc.encode_texts(TEXTS), ref_txt, atol=1e-6, rtol=0)  # "longest" == "max_length"


def test_extract_features_path(images):
    loader = Loader(FakeExtractorModel)
    enc = LavisEncoder("blip_feature_extractor", "base", device="cpu", batch_size=3, loader=loader)
    img, txt = enc.encode_images(images), enc.encode_texts(TEXTS)
    assert img.shape == (8, DIM) and txt.shape == (5, DIM)
    torch.testing.assert_close(img.norm(dim=1), torch.ones(8))
    torch.testing.assert_close(txt.norm(dim=1), torch.ones(5))
    assert enc.model.calls == [("image", 3), ("image", 3), ("image", 2), ("text", 3), ("text", 2)]
    m = enc.model
    pixels = torch.stack([eval_image_processor(im) for im in images[:1]])
    with torch.no_grad():
        first = m.extract_features({"image": pixels}, mode="image").image_embeds_proj[:, 0, :]
    torch.testing.assert_close(img[:1], torch.nn.functional.normalize(first, dim=-1), atol=1e-6, rtol=0)
    assert enc.fingerprint()["path"] == "extract_features"


def test_fingerprint(tokenizer):
    a, b = retrieval_encoder(tokenizer), retrieval_encoder(tokenizer)
    fp = a.fingerprint()
    assert fp["kind"] == "lavis" and fp["checkpoint"] == "blip_retrieval/coco" and fp["dim"] == DIM
    assert fp["path"] == "itc_projections" and fp["precision"] == "float32" and fp == b.fingerprint()
    with torch.no_grad():
        b.model.text_proj.bias.add_(1.0)
    b._digest = None
    assert b.fingerprint()["weights"] != fp["weights"]


def test_missing_lavis_says_which_environment(monkeypatch):
    monkeypatch.setitem(sys.modules, "lavis", None)
    monkeypatch.setitem(sys.modules, "lavis.models", None)
    with pytest.raises(ImportError, match="environment-lavis.yml"):
        LavisEncoder("blip_retrieval", "coco", device="cpu")


def test_bad_settings_and_models(tokenizer):
    with pytest.raises(ValueError, match="amp_dtype"):
        retrieval_encoder(tokenizer, amp_dtype="half")
    with pytest.raises(TypeError, match="neither extract_features"):
        LavisEncoder("blip_caption", "base_coco", device="cpu", loader=Loader(lambda: nn.Linear(2, 2)))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            retrieval_encoder(tokenizer, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device_and_mixed_precision(tokenizer, images):
    cpu = retrieval_encoder(tokenizer)
    gpu = LavisEncoder("blip_retrieval", "coco", device="cuda", loader=Loader(lambda: FakeRetrievalModel(tokenizer)))
    assert all(p.device.type == "cuda" for p in gpu.model.parameters())
    assert gpu.fingerprint()["precision"] == "float16" and gpu.fingerprint()["weights"] == cpu.fingerprint()["weights"]
    for got, want in (
        (gpu.encode_images(images), cpu.encode_images(images)),
        (gpu.encode_texts(TEXTS), cpu.encode_texts(TEXTS)),
    ):
        assert got.device.type == "cpu" and got.dtype == torch.float32
        torch.testing.assert_close(got, want, atol=2e-2, rtol=0)
