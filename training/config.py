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

import functools
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BeforeValidator, ConfigDict, PositiveInt, TypeAdapter, ValidationError

# torch-free on purpose (training.architecture, not training.model): reading a config imports no torch.
from models import DEFAULT_TEST_MODE, MAX_TEST_CLIPS
from training.architecture import ModelConfig


def none_words(value: Any) -> Any:
    """YAML writes None as null or ~; "none" (any case) is taken too, as people type it on the command line."""
    if isinstance(value, str) and value.strip().lower() in ("null", "none", "~"):
        return None
    return value


def one_or_many(value: Any) -> Any:
    """A single value where a list is expected (``--set optim.milestones=40``) is a list of one."""
    return value if isinstance(value, list | tuple) else [value]


OptionalStr = Annotated[str | None, BeforeValidator(none_words)]
OptionalFloat = Annotated[float | None, BeforeValidator(none_words)]
OptionalPositiveInt = Annotated[PositiveInt | None, BeforeValidator(none_words)]
IntTuple = Annotated[tuple[int, ...], BeforeValidator(one_or_many)]

#: How pydantic reads every section: unknown keys are errors; numbers where text is expected become text
#: (``name: 2024``); everything else by pydantic's usual (lax) coercion, e.g. "1e-4" -> 1e-4, "yes" -> True.
SECTION_CONFIG = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


@dataclass(frozen=True)
class ModelSection(ModelConfig):
    """The network (the fields of :class:`training.architecture.ModelConfig`) and how its weights start."""

    __pydantic_config__ = SECTION_CONFIG

    #: None (random init), a local torchvision ImageNet state-dict file, or "imagenet" (downloads).
    pretrained: OptionalStr = None
    #: Convert BatchNorm to SyncBatchNorm under multi-GPU training (CUDA only; ignored otherwise).
    sync_bn: bool = False

    def to_model_config(self) -> ModelConfig:
        """The architecture alone, as checkpoints and model cards store it."""
        return ModelConfig(**{f.name: getattr(self, f.name) for f in fields(ModelConfig)})


@dataclass
class DataSection:
    """Which dataset, where, and how frames are drawn."""

    __pydantic_config__ = SECTION_CONFIG

    #: mars, ilidsvid, prid2011, dukev or synthetic.
    dataset: str = "mars"
    root: str = "data/mars"
    #: Which of the 10 random splits of iLIDS-VID / PRID2011 (ignored by MARS, DukeV, synthetic).
    split_id: int = 0
    #: iLIDS-VID / PRID2011: a published split file (.mat with ls_set, or JSON list of {"train", "test"});
    #: None looks for the customary files and generates seeded splits only when there are none.
    split_file: str | None = None
    #: T: frames per tracklet, one drawn per uniform chunk.
    num_frames: int = 8
    num_workers: int = 4
    #: Test-time frame sampling (training/test_time.py): "centres" (the centre frame of each of T chunks),
    #: "strided" (clip k = k-th frame of every chunk, clip features averaged), "consecutive" (every frame
    #: in consecutive clips of T, averaged) or "all" (every frame in one pass of the head). "test" and
    #: "dense" are the old names of "centres" and "consecutive".
    test_mode: str = DEFAULT_TEST_MODE
    #: Most clips per tracklet at test time (models.MAX_TEST_CLIPS); longer tracklets are first thinned to
    #: T x max_test_clips chunk centres, as the service does; null keeps every frame (``all`` is then truly
    #: every frame, the backbone still running in batches of frames).
    max_test_clips: OptionalPositiveInt = MAX_TEST_CLIPS
    #: Tracklets (of T frames) per backbone pass at evaluation.
    test_batch_size: int = 32


@dataclass
class AugmentSection:
    """Sequence-level augmentation: one random draw per tracklet, applied to all its frames."""

    __pydantic_config__ = SECTION_CONFIG

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

    __pydantic_config__ = SECTION_CONFIG

    num_identities: int = 16
    tracklets_per_identity: int = 4


@dataclass
class OptimSection:
    """Adam with linear warm-up and step decay (values of [23], see the module docstring)."""

    __pydantic_config__ = SECTION_CONFIG

    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    epochs: int = 120
    warmup_epochs: int = 10
    #: The warm-up starts at lr * warmup_factor and reaches lr after ``warmup_epochs``.
    warmup_factor: float = 0.1
    milestones: IntTuple = (40, 70)
    gamma: float = 0.1


@dataclass
class LossSection:
    """Eq. 7 of the paper; see :class:`training.losses.ReIDCriterion`."""

    __pydantic_config__ = SECTION_CONFIG

    label_smoothing: float = 0.1
    #: Batch-hard triplet margin; null gives the soft-margin variant.
    triplet_margin: OptionalFloat = 0.3
    id_weight: float = 1.0
    triplet_weight: float = 1.0
    #: The 1/N sum over the per-granularity features v_g.
    part_losses: bool = True


@dataclass
class TrainConfig:
    """One training run."""

    __pydantic_config__ = SECTION_CONFIG

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
        """Validate and coerce a (nested) dict; KeyError for unknown keys, ValueError for unreadable values."""
        try:
            return train_config_adapter().validate_python(_empty_sections_as_defaults(values))
        except ValidationError as error:
            raise _validation_problem(error) from None


#: The sections of :class:`TrainConfig` (a YAML section left empty takes its defaults).
SECTIONS = ("model", "data", "augment", "sampler", "optim", "loss")


@functools.cache
def train_config_adapter() -> TypeAdapter[TrainConfig]:
    """pydantic's validator of TrainConfig (built once, on first use)."""
    return TypeAdapter(TrainConfig)


#: pydantic's error types for a key the dataclass does not have.
UNKNOWN_KEY_ERRORS = ("unexpected_keyword_argument", "extra_forbidden")


def _validation_problem(error: ValidationError) -> Exception:
    """pydantic's first complaint as the error the command line prints: unknown keys as KeyError (with every
    unknown dotted key), anything else as ValueError naming the key and the value."""
    problems = error.errors()
    unknown = [problem["loc"] for problem in problems if problem["type"] in UNKNOWN_KEY_ERRORS]
    if unknown:
        section: Any = TrainConfig
        for part in unknown[0][:-1]:
            section = {f.name: f.type for f in fields(section)}[part]
            section = globals()[section] if isinstance(section, str) else section
        known = ", ".join(f.name for f in fields(section))
        keys = ", ".join(".".join(str(part) for part in location) for location in unknown)
        return KeyError(f"unknown config key(s) {keys}; known: {known}")
    problem = problems[0]
    key = ".".join(str(part) for part in problem["loc"] if not isinstance(part, int)) or "config"
    return ValueError(f"{key}: cannot read {problem['input']!r} ({problem['msg']})")


def _empty_sections_as_defaults(values: Any) -> Any:
    """A YAML section with nothing under it (``optim:``) reads as None: take its defaults."""
    if not isinstance(values, dict):
        return values
    return {key: {} if value is None and key in SECTIONS else value for key, value in values.items()}


def set_dotted(values: dict[str, Any], dotted_key: str, raw_value: str) -> None:
    """Apply one ``section.key=value`` override to a nested dict (the value is read as YAML)."""
    parts = dotted_key.split(".")
    node = values
    for part in parts[:-1]:
        if node.get(part) is None:  # absent, or an empty YAML section
            node[part] = {}
        node = node[part]
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
