"""Typed, frozen run configuration loaded from ``params/<profile>.yaml``.

Every stage reads one :class:`Config`. Unknown keys and wrong types are errors that name the
key, raised before any work starts (HOUSE_STYLE: "unknown keys and wrong types are errors").
Each section is a frozen dataclass; paper hyperparameters carry their source in the YAML.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILES = ("smoke", "default", "paper")


class ConfigError(ValueError):
    """A profile file has an unknown key, a wrong type or a bad value."""


@dataclass(frozen=True)
class DataConfig:
    """Which image-caption collection to use and how to split it."""

    name: str = "emoji"  # emoji (embedded default) | mscoco | flickr30k
    root: str = "data"  # relative to the repository root unless absolute
    max_groups: Optional[int] = None  # smoke: keep only this many variant groups
    split_seed: int = 13
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)  # train, val, test
    image_size: int = 224
    karpathy_json: Optional[str] = None  # paper profile: dataset_{coco,flickr30k}.json
    image_root: Optional[str] = None  # paper profile: folder the Karpathy file paths are under
    train_splits: tuple[str, ...] = ("train",)  # reference code: train only, restval excluded


@dataclass(frozen=True)
class EncoderConfig:
    """The frozen dense dual encoder (DESIGN.md section 4/5)."""

    kind: str = "lit_towers"  # lit_towers | blip_hf | lavis | feature_files
    checkpoint: Optional[str] = None  # blip_hf / lavis model name or path
    features_dir: Optional[str] = None  # feature_files: folder with img_embs.parquet, text_embs.parquet
    embed_dim: int = 256


@dataclass(frozen=True)
class LitConfig:
    """LiT-style projections trained on top of the two locked towers (embedded default)."""

    image_features: tuple[str, ...] = ("avg", "max", "logits")  # parts of the tower output used
    train_views: int = 4  # augmented renderings per training image (0 = clean only)
    eval_transforms: tuple[str, ...] = ("grayscale", "small_offset", "thick_stroke", "hue_shift", "tinted_background")
    hidden_dim: int = 1024
    epochs: int = 60
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-2
    dropout: float = 0.1
    init_temperature: float = 0.07
    seed: int = 0


@dataclass(frozen=True)
class ExtractionConfig:
    """Batched tower / encoder forward passes and the on-disk feature cache."""

    device: str = "auto"  # auto | cpu | cuda
    image_batch_size: int = 64
    text_batch_size: int = 256
    shard_size: int = 1024  # rows per cache shard: an interrupted run resumes at shard granularity
    mixed_precision: bool = True  # only used on CUDA
    num_threads: int = 0  # torch CPU threads, 0 = torch default


@dataclass(frozen=True)
class EvalConfig:
    """Retrieval evaluation (DESIGN.md section 3)."""

    ks: tuple[int, ...] = (1, 5, 10)
    mrr_depth: int = 10
    splits: tuple[str, ...] = ("val", "test")


@dataclass(frozen=True)
class Config:
    """One profile: every setting a stage needs."""

    profile: str
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    lit: LitConfig = field(default_factory=LitConfig)
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)

    def path(self, p: str | Path) -> Path:
        """Resolve a configured path against the repository root."""
        p = Path(p)
        return p if p.is_absolute() else REPO_ROOT / p

    @property
    def data_dir(self) -> Path:
        return self.path(self.data.root)

    @property
    def cache_dir(self) -> Path:
        """Per-profile cache of features and checkpoints (gitignored)."""
        return self.data_dir / "cache" / self.profile

    @property
    def results_dir(self) -> Path:
        return REPO_ROOT / "results" / self.profile

    def section_hash(self, *names: str) -> str:
        """Short stable hash of the named sections, for cache manifests."""
        blob = json.dumps({n: to_dict(getattr(self, n)) for n in names}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain JSON-able dict (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    return obj


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against type ``tp`` (recursively), converting lists to tuples."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of settings, got {type(value).__name__}")
        return build_dataclass(tp, value, where)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")


def build_dataclass(cls: type, values: dict, where: str = "") -> Any:
    """Build ``cls`` from a dict, rejecting unknown keys and wrong types by name."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(where + '.' + k if where else k for k in unknown)}; "
            f"allowed in {where or 'the top level'}: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def load_config(profile: str, overrides: Optional[dict] = None, params_dir: Optional[Path] = None) -> Config:
    """Load ``params/<profile>.yaml`` (plus optional nested overrides) into a :class:`Config`."""
    params_dir = params_dir or REPO_ROOT / "params"
    path = Path(params_dir) / f"{profile}.yaml"
    if not path.exists():
        raise ConfigError(f"no profile file {path}; available: {', '.join(p.stem for p in sorted(Path(params_dir).glob('*.yaml')))}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    raw = _merge(raw, overrides or {})
    raw.setdefault("profile", profile)
    try:
        return build_dataclass(Config, raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
