"""BlipHFEncoder on a tiny randomly initialised BlipForImageTextRetrieval (offline, CPU).

The reference is the model's own ``forward(use_itm_head=False)``, which returns the ITC
similarity ``normalize(vision_proj(.)) @ normalize(text_proj(.)).T``.
"""

from pathlib import Path

import pytest
import torch
from transformers import BertTokenizer, BlipConfig, BlipForImageTextRetrieval, BlipImageProcessorPil, BlipProcessor

from lsr_lib.dense.blip import BlipHFEncoder, blip_pre_caption, weights_digest
from lsr_lib.data.karpathy import load_image, load_karpathy

FIXTURES = Path(__file__).parent / "fixtures"
PROJ_DIM = 16
IMAGE_SIZE = 32


def tiny_blip(seed: int = 0) -> BlipForImageTextRetrieval:
    """A ~50k-parameter BLIP retrieval model: 2-layer ViT on 32x32 images, 2-layer BERT, 16-d ITC."""
    vocab_size = len((FIXTURES / "tiny_bert_vocab" / "vocab.txt").read_text().split())
    config = BlipConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=IMAGE_SIZE,
            patch_size=8,
        ),
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            pad_token_id=0,
            bos_token_id=2,
            sep_token_id=3,
            eos_token_id=3,
        ),
        image_text_hidden_size=PROJ_DIM,
    )
    torch.manual_seed(seed)
    return BlipForImageTextRetrieval(config).eval()


@pytest.fixture(scope="module")
def parts():
    tokenizer = BertTokenizer.from_pretrained(str(FIXTURES / "tiny_bert_vocab"))
    image_processor = BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return tiny_blip(), image_processor, tokenizer


@pytest.fixture(scope="module")
def encoder(parts):
    model, image_processor, tokenizer = parts
    return BlipHFEncoder(model=model, image_processor=image_processor, tokenizer=tokenizer, device="cpu")


@pytest.fixture(scope="module")
def images():
    col = load_karpathy(FIXTURES / "karpathy_tiny.json", image_root=FIXTURES / "karpathy_images")
    return [load_image(p) for p in col.images["path"]]


TEXTS = ["A red ball on a table.", "a blue sky", "An orange sun in a blue sky with a bright yellow dot."]


def test_shapes_dtype_and_unit_norm(encoder, images):
    img = encoder.encode_images(images)
    txt = encoder.encode_texts(TEXTS)
    assert img.shape == (4, PROJ_DIM) and txt.shape == (3, PROJ_DIM) and encoder.dim == PROJ_DIM
    for emb in (img, txt):
        assert emb.dtype == torch.float32 and emb.device.type == "cpu"
        torch.testing.assert_close(emb.norm(dim=1), torch.ones(len(emb)))
    assert encoder.encode_texts([]).shape == (0, PROJ_DIM)


def test_matches_the_models_own_itc_scores(parts, encoder, images):
    """Encoder vectors give the same similarities as BlipForImageTextRetrieval.forward(use_itm_head=False)."""
    model, image_processor, tokenizer = parts
    cleaned = [blip_pre_caption(t) for t in TEXTS]
    tok = tokenizer(cleaned, padding=True, return_tensors="pt")
    pixels = image_processor(images=images, return_tensors="pt")["pixel_values"]  # (4, 3, 32, 32)
    assert pixels.shape == (4, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        ref = model(
            input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], pixel_values=pixels, use_itm_head=False
        ).itm_score  # (4 images, 3 texts)
    ours = encoder.encode_images(images) @ encoder.encode_texts(TEXTS).T
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_deterministic_and_batch_size_invariant(parts, encoder, images):
    model, image_processor, tokenizer = parts
    small = BlipHFEncoder(model=model, image_processor=image_processor, tokenizer=tokenizer, device="cpu", batch_size=1)
    torch.testing.assert_close(encoder.encode_texts(TEXTS), encoder.encode_texts(TEXTS), atol=0, rtol=0)
    torch.testing.assert_close(small.encode_texts(TEXTS), encoder.encode_texts(TEXTS), atol=1e-5, rtol=0)
    torch.testing.assert_close(small.encode_images(images), encoder.encode_images(images), atol=1e-5, rtol=0)


def test_padding_does_not_change_a_text(encoder):
    """The short text padded in a batch with a long one == the short text alone."""
    short, long = "a cat", "a photo of a red ball on a table with a dog and a cat"
    together = encoder.encode_texts([short, long])
    alone = encoder.encode_texts([short])
    torch.testing.assert_close(together[0], alone[0], atol=1e-5, rtol=0)
    assert not torch.allclose(together[0], together[1])


def test_caption_cleaning_and_token_limit(parts):
    assert blip_pre_caption("A man (riding) a horse!  Fast.") == "a man riding a horse fast"
    assert blip_pre_caption("one two three four", max_words=2) == "one two"
    model, image_processor, tokenizer = parts
    enc = BlipHFEncoder(model=model, image_processor=image_processor, tokenizer=tokenizer, device="cpu", max_length=5)
    long = "a red ball on a table with a dog"
    torch.testing.assert_close(enc.encode_texts([long]), enc.encode_texts(["a red ball"]), atol=1e-6, rtol=0)


def test_fingerprint_tracks_weights_and_settings(parts, encoder):
    model, image_processor, tokenizer = parts
    fp = encoder.fingerprint()
    assert fp["kind"] == "blip_hf" and fp["dim"] == PROJ_DIM and fp["image_size"] == [IMAGE_SIZE, IMAGE_SIZE]
    assert fp["precision"] == "float32" and len(fp["weights"]) == 16
    assert weights_digest(tiny_blip(seed=0)) == fp["weights"]
    assert weights_digest(tiny_blip(seed=1)) != fp["weights"]
    other = BlipHFEncoder(
        model=tiny_blip(), image_processor=image_processor, tokenizer=tokenizer, device="cpu", max_length=20
    )
    assert other.fingerprint()["weights"] == fp["weights"] and other.fingerprint() != fp


def test_loads_a_saved_checkpoint_folder(tmp_path, parts, encoder, images):
    model, image_processor, tokenizer = parts
    model.save_pretrained(tmp_path)
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(tmp_path)
    loaded = BlipHFEncoder(str(tmp_path), device="cpu")
    assert isinstance(loaded.image_processor, BlipImageProcessorPil)
    assert loaded.fingerprint()["checkpoint"] == str(tmp_path)
    assert loaded.fingerprint()["weights"] == encoder.fingerprint()["weights"]
    torch.testing.assert_close(loaded.encode_images(images), encoder.encode_images(images), atol=1e-6, rtol=0)
    torch.testing.assert_close(loaded.encode_texts(TEXTS), encoder.encode_texts(TEXTS), atol=1e-6, rtol=0)


def test_clear_errors(tmp_path, parts):
    model, image_processor, tokenizer = parts
    with pytest.raises(RuntimeError, match="could not load BLIP checkpoint.*no_such_checkpoint.*feature_files"):
        BlipHFEncoder(str(tmp_path / "no_such_checkpoint"), device="cpu")
    with pytest.raises(ValueError, match="exactly one of"):
        BlipHFEncoder("x", model=model)
    with pytest.raises(ValueError, match="image_processor"):
        BlipHFEncoder(model=model, device="cpu")
    with pytest.raises(ValueError, match="amp_dtype"):
        BlipHFEncoder(model=model, image_processor=image_processor, tokenizer=tokenizer, amp_dtype="fp8")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_mixed_precision_close_to_cpu(parts, encoder, images):
    model, image_processor, tokenizer = parts
    for dtype in ("float16", "bfloat16"):
        gpu = BlipHFEncoder(
            model=tiny_blip(), image_processor=image_processor, tokenizer=tokenizer, device="cuda", amp_dtype=dtype
        )
        img, txt = gpu.encode_images(images), gpu.encode_texts(TEXTS)
        assert img.device.type == "cpu" and img.dtype == torch.float32
        assert gpu.fingerprint()["precision"] == dtype
        torch.testing.assert_close(img, encoder.encode_images(images), atol=3e-2, rtol=0)
        torch.testing.assert_close(txt, encoder.encode_texts(TEXTS), atol=3e-2, rtol=0)
