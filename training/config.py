"""Training configuration: nested dataclasses, loaded from YAML, overridden with ``--set section.key=value``.

Every knob of a run is a field here, the paper's value as its default where the paper gives one
(Section 4.2): ResNet-50 with last stride 1, MG-RAFA(N=4), T=8 frames of 256x128, PK batches of
P=16 identities x Z=4 tracklets (MARS; the YAML files of iLIDS-VID and PRID2011 set P=8), Adam, label
smoothing 0.1, the batch-hard triplet loss, sequence-level random crop / flip / erasing with p=0.5.

The paper defers learning rate, schedule, epochs, weight decay and the triplet margin to its
supplementary, which is not available. For those we take the recipe of the strong baseline it builds on
and cites ([23], Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person Re-identification"),
whose ResNet-50 + BNNeck + label smoothing + batch-hard triplet setup is the same as ours: Adam with lr
3.5e-4 and weight decay 5e-4, a linear warm-up over the first 10 epochs from 0.1 x lr, the lr divided
by 10 at epochs 40 and 70, 120 epochs in all, and a triplet margin of 0.3.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from training.model import ModelConfig


@dataclass(frozen=True)
class ModelSection(ModelConfig):
    """The network (the fields of :class:`training.model.ModelConfig`) and how its weights start."""

    #: None (random init), a local torchvision ImageNet state-dict file, or "imagenet" (downloads).
    pretrained: str | None = None
    #: Convert BatchNorm to SyncBatchNorm under multi-GPU training (CUDA only; ignored otherwise).
    sync_bn: bool = False

    def to_model_config(self) -> ModelConfig:
        """The architecture alone, as checkpoints and model cards store it."""
        return ModelConfig(**{f.name: getattr(self, f.name) for f in fields(ModelConfig)})


@dataclass
class DataSection:
    """Which dataset, where, and how frames are drawn."""

    #: mars, ilidsvid, prid2011, dukev or synthetic.
    dataset: str = "mars"
    root: str = "data/mars"
    #: Which of the 10 random splits of iLIDS-VID / PRID2011 (ignored by MARS, DukeV, synthetic).
    split_id: int = 0
    #: T: frames per tracklet, one drawn per uniform chunk.
    num_frames: int = 8
    num_workers: int = 4
    #: Test-time frame sampling: "test" (one deterministic frame per chunk) or "dense" (all frames in
    #: clips of T, clip features averaged).
    test_mode: str = "test"
    #: Tracklets (test mode) or clips (dense mode) per forward pass at evaluation.
    test_batch_size: int = 32


@dataclass
class AugmentSection:
    """Sequence-level augmentation: one random draw per tracklet, applied to all its frames."""

    #: Random crop as in [23]: zero-pad by this many pixels per side, cut an HxW window at a random
    #: offset (0 disables it).
    crop_padding: int = 10
    flip_p: float = 0.5
    erase_p: float = 0.5
    #: Fraction of the frame area, and height/width ratio, of the erased rectangle (Zhong et al.).
    erase_area: tuple[float, float] = (0.02, 0.4)
    erase_aspect: tuple[float, float] = (0.3, 3.33)


@dataclass
class SamplerSection:
    """PK batches: P identities x Z tracklets each (per process under multi-GPU training)."""

    num_identities: int = 16
    tracklets_per_identity: int = 4


@dataclass
class OptimSection:
    """Adam with linear warm-up and step decay (values of [23], see the module docstring)."""

    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    epochs: int = 120
    warmup_epochs: int = 10
    #: The warm-up starts at lr * warmup_factor and reaches lr after ``warmup_epochs``.
    warmup_factor: float = 0.1
    milestones: tuple[int, ...] = (40, 70)
    gamma: float = 0.1


@dataclass
class LossSection:
    """Eq. 7 of the paper; see :class:`training.losses.ReIDCriterion`."""

    label_smoothing: float = 0.1
    #: Batch-hard triplet margin; null gives the soft-margin variant.
    triplet_margin: float | None = 0.3
    id_weight: float = 1.0
    triplet_weight: float = 1.0
    #: The 1/N sum over the per-granularity features v_g.
    part_losses: bool = True


@dataclass
class TrainConfig:
    """One training run."""

    name: str = "mars-mg-rafa"
    seed: int = 1
    #: "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N".
    device: str = "auto"
    #: Mixed precision (float16 autocast + gradient scaling); CUDA only, ignored on CPU.
    amp: bool = False
    #: Evaluate on query/gallery every this many epochs (0: only at the end, see ``eval_at_end``).
    eval_every: int = 0
    eval_at_end: bool = True
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    sampler: SamplerSection = field(default_factory=SamplerSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        return build_dataclass(cls, values, prefix="")


def build_dataclass(cls: type, values: dict[str, Any], prefix: str):
    """Build ``cls`` from a (nested) dict, coercing every value to its field's type; unknown keys fail."""
    if not isinstance(values, dict):
        raise TypeError(f"{prefix or 'config'} must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise KeyError(f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; known: {', '.join(known)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build_dataclass(hint, value or {}, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = coerce(value, hint, f"{prefix}{name}")
    return cls(**kwargs)


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert a YAML or command-line value to the annotated type (str, int, float, bool, Optional, tuple)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            if type(None) in args:
                return None
        non_none = [a for a in args if a is not type(None)]
        return coerce(value, non_none[0], key)
    if origin is tuple:
        if isinstance(value, str):
            value = yaml.safe_load(value if value.strip().startswith("[") else f"[{value}]")
        if not isinstance(value, list | tuple):
            value = [value]
        item_type = args[0] if args else str
        return tuple(coerce(v, item_type, key) for v in value)
    try:
        if hint is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
                    raise ValueError(value)
                return lowered in ("true", "yes", "1", "on")
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) else int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{key}: cannot read {value!r} as {getattr(hint, '__name__', hint)}") from error
    return value


def set_dotted(values: dict[str, Any], dotted_key: str, raw_value: str) -> None:
    """Apply one ``section.key=value`` override to a nested dict (the value is read as YAML)."""
    parts = dotted_key.split(".")
    node = values
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise KeyError(f"{dotted_key}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(raw_value) if raw_value.strip() else ""


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, str]]:
    """``["optim.lr=1e-4", ...]`` -> ``[("optim.lr", "1e-4"), ...]``."""
    pairs = []
    for item in overrides or ():
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value, e.g. optim.lr=1e-4")
        key, value = item.split("=", 1)
        pairs.append((key.strip(), value.strip()))
    return pairs


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (or start from the defaults) and apply ``section.key=value`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
    for key, raw_value in parse_overrides(overrides):
        set_dotted(values, key, raw_value)
    return TrainConfig.from_dict(values)


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the full config (every field, defaults included) as YAML."""
    values = config.to_dict()
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(to_plain(values), handle, sort_keys=False)


def to_plain(value: Any) -> Any:
    """Tuples to lists, recursively, so that YAML/JSON stay plain."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value
