"""The contract between training/ and service/: the model card, test-time frame sampling and preprocessing.

training/ writes what this module describes (training.export) and service/ reads it (service.embedder);
neither imports the other. Importing it needs numpy and pydantic only: no torch, no onnxruntime, and
OpenCV only when a frame is actually resized. models/README.md documents the card field by field.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

# ---------------------------------------------------------------------------------------------------------
# preprocessing: what a frame goes through before the network, the same offline and in the service

#: ImageNet channel statistics (RGB, on the 0..1 scale); the exported graph applies them itself.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: The graph's one input: uint8 RGB frames (batch, T, height, width, channel).
INPUT_NAME = "frames"
INPUT_DTYPE = "uint8"
INPUT_LAYOUT = "BTHWC"
INPUT_COLOR = "RGB"
#: The graph's embedding output: float32 (batch, dim).
EMBEDDING_NAME = "embedding"
#: How a decoded frame of any size becomes height x width: bilinear (OpenCV's INTER_LINEAR).
RESIZE_INTERPOLATION = "bilinear"
#: A model's version is the first 16 hex digits of the sha256 of its .onnx bytes.
MODEL_VERSION_DIGITS = 16


def resize_frame(image_rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """An RGB uint8 image (h, w, 3) of any size -> (height, width, 3), bilinear (RESIZE_INTERPOLATION)."""
    import cv2  # only here, so that reading a model card never needs OpenCV

    return cv2.resize(image_rgb, (width, height), interpolation=cv2.INTER_LINEAR)


def model_frame_from_bgr(image_bgr: np.ndarray, height: int, width: int) -> np.ndarray:
    """One image as OpenCV decodes it (BGR uint8) -> the model's frame: RGB uint8 (height, width, 3)."""
    import cv2

    return resize_frame(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB), height, width)


def sample_frame_indices(num_frames: int, num_samples: int) -> np.ndarray:
    """Test-time sampling: the centre frame of each of ``num_samples`` uniform chunks of a tracklet.

    ``edges = linspace(0, num_frames, num_samples + 1)``; index k is ``floor((edges[k] + edges[k+1]) / 2)``
    clipped to ``num_frames - 1``, computed in float64 exactly so (integer arithmetic differs on rare
    exact ties, e.g. 14 frames and 5 samples; trained models were evaluated with this rule). Any length
    maps to exactly ``num_samples`` int64 indices in temporal order; tracklets shorter than that repeat
    frames. Offline evaluation (training.data.sampling) and the service both call this one function.
    """
    if num_frames < 1:
        raise ValueError(f"a tracklet needs at least one frame, got {num_frames}")
    if num_samples < 1:
        raise ValueError(f"need at least one sample, got {num_samples}")
    edges = np.linspace(0.0, float(num_frames), num_samples + 1)
    centres = np.floor((edges[:-1] + edges[1:]) / 2.0).astype(np.int64)
    return np.minimum(centres, num_frames - 1)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_version_of(path: str | Path) -> str:
    """The model_version of an .onnx file: the first MODEL_VERSION_DIGITS hex digits of its sha256."""
    return file_sha256(path)[:MODEL_VERSION_DIGITS]


# ---------------------------------------------------------------------------------------------------------
# the model card

#: The card schema this code writes. 1: the first cards (`format_version: 1`); 2: the key is
#: `schema_version` and `precision` is new. Version 1 cards are still read (as version 1, fp32).
#: Test-time modes (how a whole tracklet becomes one feature; training/test_time.py measures them):
#: ``centres`` one clip of the T chunk centres; ``strided`` clip k takes the k-th frame of every one of T
#: chunks (clips spread like training clips, together every frame), clip embeddings averaged;
#: ``consecutive`` every frame in consecutive clips of T, averaged; ``all`` every frame in one clip.
TEST_MODES = ("centres", "strided", "consecutive", "all")
#: The mode offline evaluation and the service use unless told otherwise: the highest mAP in every finished
#: run of the synthetic ablation, every head (bench/ablation_synthetic.md, "Test-time modes").
DEFAULT_TEST_MODE = "consecutive"
#: A tracklet longer than T x MAX_TEST_CLIPS frames is first thinned to that many chunk centres, so one
#: upload costs at most MAX_TEST_CLIPS clips (strided, consecutive) or T x MAX_TEST_CLIPS frames (all).
#: ``max_clips=None`` (``max_test_clips: null`` in a training config, ``"max_clips": null`` in a card)
#: keeps every frame of any tracklet: ``all`` is then literally every frame in one pass (offline only).
MAX_TEST_CLIPS = 4


def strided_clip_indices(num_frames: int, clip_len: int) -> np.ndarray:
    """(K, clip_len) indices: clip k takes the k-th frame of every chunk of ``[0, num_frames)``.

    Chunk j spans ``[floor(edges[j]), floor(edges[j+1]))`` with the edges of :func:`sample_frame_indices`
    (at least one frame each); K is the longest chunk's length and a shorter chunk repeats its last frame.
    Every frame appears in some clip; each clip is in temporal order.
    """
    if num_frames < 1 or clip_len < 1:
        raise ValueError(f"need num_frames >= 1 and clip_len >= 1, got {num_frames}, {clip_len}")
    edges = np.linspace(0.0, float(num_frames), clip_len + 1)
    starts = np.minimum(np.floor(edges[:-1]).astype(np.int64), num_frames - 1)
    ends = np.maximum(starts + 1, np.floor(edges[1:]).astype(np.int64))
    ends[-1] = max(int(ends[-1]), num_frames)
    return np.stack([np.minimum(starts + k, ends - 1) for k in range(int((ends - starts).max()))])


def consecutive_clip_indices(num_frames: int, clip_len: int) -> np.ndarray:
    """(K, clip_len): every frame in consecutive clips; the last clip repeats its last frame."""
    if num_frames < 1 or clip_len < 1:
        raise ValueError(f"need num_frames >= 1 and clip_len >= 1, got {num_frames}, {clip_len}")
    starts = np.arange(0, num_frames, clip_len)
    last = np.minimum(starts + clip_len, num_frames) - 1
    return np.minimum(starts[:, None] + np.arange(clip_len)[None, :], last[:, None])


def sample_clip_indices(
    num_frames: int, clip_len: int, mode: str = DEFAULT_TEST_MODE, max_clips: int | None = MAX_TEST_CLIPS
) -> np.ndarray:
    """The clips a test-time mode feeds the network, as a (K, L) int64 array; their embeddings are averaged.

    L is ``clip_len`` (T) except in ``all`` mode (one clip of every frame). A tracklet longer than
    ``clip_len * max_clips`` frames is first thinned to that many chunk centres (:func:`sample_frame_indices`);
    ``max_clips=None`` never thins (every frame of any tracklet is used).
    Offline evaluation (training.test_time) and the service (service.decoding) both call this function.
    """
    if mode not in TEST_MODES:
        raise ValueError(f"test-time mode must be one of {', '.join(TEST_MODES)}, got {mode!r}")
    if max_clips is not None and max_clips < 1:
        raise ValueError(f"max_clips must be at least 1 (or None: no cap), got {max_clips}")
    if mode == "centres":
        return sample_frame_indices(num_frames, clip_len)[None, :]
    cap = num_frames if max_clips is None else clip_len * max_clips
    kept = sample_frame_indices(num_frames, cap) if num_frames > cap else np.arange(num_frames, dtype=np.int64)
    if mode == "all":
        return kept[None, :]
    clips = strided_clip_indices if mode == "strided" else consecutive_clip_indices
    return kept[clips(len(kept), clip_len)]


SCHEMA_VERSION = 2

Precision = Literal["fp32", "fp16", "int8"]


class CardError(ValueError):
    """A model card that cannot be used; the message names what is wrong and how to fix it."""


class _Section(BaseModel):
    """Every part of the card refuses keys it does not know and values of the wrong type."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class CardInput(_Section):
    """The graph's input: uint8 RGB frames (B, T, height, width, 3); B and T are dynamic in the graph."""

    name: str = INPUT_NAME
    dtype: Literal["uint8"] = "uint8"
    layout: Literal["BTHWC"] = "BTHWC"
    color: Literal["RGB"] = "RGB"
    height: PositiveInt
    width: PositiveInt


class CardEmbedding(_Section):
    """The graph's embedding output: float32 (B, dim), compared by (squared) l2 distance."""

    name: str = EMBEDDING_NAME
    dim: PositiveInt
    normalized: bool = False
    metric: Literal["l2"] = "l2"


class CardArchitecture(_Section):
    """The network (training.architecture.ModelConfig plus its label), to tell models apart; the service
    ignores it. A field added to ModelConfig must be added here too (with a default, so older cards stay
    valid): export refuses a config this section does not describe."""

    backbone: str
    head: str
    label: str
    granularities: PositiveInt
    splits: PositiveInt
    reduction: PositiveInt
    #: Reference nodes of the relations (Table 3 of the paper): temporal, frame or all.
    reference: str = "temporal"
    #: T of the `all` reference (its psi sees T*H*W relations); null for the other references.
    reference_frames: PositiveInt | None = None
    height: PositiveInt
    width: PositiveInt


class CardTestTime(_Section):
    """How a tracklet becomes one embedding (:func:`sample_clip_indices`); offline evaluation and the service
    both use it. A card without it was written before it existed, when the service embedded one clip of
    chunk centres: it reads as ``centres`` (:data:`LEGACY_TEST_TIME`), so an upgrade does not change the
    embeddings of a deployed model against its enrolled gallery. Every export writes it."""

    mode: Literal["centres", "strided", "consecutive", "all"] = DEFAULT_TEST_MODE
    #: null: no cap, every frame of any tracklet; offline only (the service refuses it, as it refuses ``all``).
    max_clips: PositiveInt | None = MAX_TEST_CLIPS


#: What a card without ``test_time`` means: it predates the section, and the service then sampled one clip
#: of T chunk centres (the paper's training sampling without the randomness).
LEGACY_TEST_TIME = CardTestTime(mode="centres")


class CardTraining(_Section):
    """Where the weights come from; the card's `training` is null for a randomly initialised export."""

    dataset: str | None = None
    checkpoint: str | None = None
    epoch: int | None = None
    metrics: dict[str, float] | None = None


class CardExport(_Section):
    """How the graph was made."""

    opset: PositiveInt
    torch: str
    parity_max_rel_error: float = Field(ge=0.0)
    created_at: str

    @field_validator("created_at")
    @classmethod
    def _iso_8601(cls, value: str) -> str:
        datetime.fromisoformat(value)  # raises ValueError, reported as a malformed field
        return value


class ModelCard(_Section):
    """The JSON model card written beside each exported .onnx file (models/README.md).

    Write one with :meth:`write`, read one with :meth:`read` (or :meth:`parse` a dict); both raise
    :class:`CardError` naming every field that is missing, unknown or of the wrong type.
    """

    schema_version: int = SCHEMA_VERSION
    name: str = Field(min_length=1)
    model_version: str = Field(pattern=rf"^[0-9a-f]{{{MODEL_VERSION_DIGITS}}}$")
    onnx_file: str = Field(min_length=1)
    input: CardInput
    num_frames: PositiveInt
    """T: the number of frames the service samples from each tracklet."""
    mean: list[float] = Field(default_factory=lambda: list(IMAGENET_MEAN), min_length=3, max_length=3)
    """RGB mean on the 0..1 scale the graph subtracts (after /255); the service never normalises."""
    std: list[float] = Field(default_factory=lambda: list(IMAGENET_STD), min_length=3, max_length=3)
    precision: Precision = "fp32"
    """What the graph computes in (its input stays uint8 frames and its embedding float32 in every
    precision): fp32; fp16 (meant for GPU providers); int8 (quantised, meant for CPUs)."""
    embedding: CardEmbedding
    attention_outputs: list[str] = []
    """Names of the optional attention outputs, in granularity order (``attention_1`` .. ``attention_N``),
    each float32 (B, T, Hm, Wm); empty when exported without them."""
    model: CardArchitecture
    test_time: CardTestTime = Field(default_factory=lambda: LEGACY_TEST_TIME)
    """The test-time mode the model was evaluated with and the service samples by; absent: centres."""
    training: CardTraining | None = None
    export: CardExport

    @model_validator(mode="before")
    @classmethod
    def _read_version_1(cls, data: Any) -> Any:
        """Version 1 cards name their version `format_version`; read them as schema_version 1."""
        if isinstance(data, dict) and "schema_version" not in data and "format_version" in data:
            data = {("schema_version" if key == "format_version" else key): value for key, value in data.items()}
        return data

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value > SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {value} is newer than this code reads ({SCHEMA_VERSION}): update the service, "
                f"or re-export the model with this version of training.export"
            )
        if value < 1:
            raise ValueError(f"schema_version must be 1..{SCHEMA_VERSION}")
        return value

    @field_validator("mean", "std")
    @classmethod
    def _unit_scale(cls, value: list[float]) -> list[float]:
        if not all(0.0 < channel <= 1.0 for channel in value):
            raise ValueError("channel statistics are on the 0..1 scale, each in (0, 1]")
        return value

    # --- the fields the service uses most, under short names
    @property
    def height(self) -> int:
        return self.input.height

    @property
    def width(self) -> int:
        return self.input.width

    @property
    def dim(self) -> int:
        return self.embedding.dim

    @property
    def input_name(self) -> str:
        return self.input.name

    @property
    def embedding_name(self) -> str:
        return self.embedding.name

    @property
    def normalized(self) -> bool:
        return self.embedding.normalized

    def to_json_dict(self) -> dict[str, Any]:
        """The card as its JSON object (what :meth:`write` writes)."""
        return self.model_dump(mode="json")

    def write(self, path: str | Path) -> Path:
        """Write the card as indented JSON to ``path``; return the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_json_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def parse(cls, data: Any, source: str = "model card") -> ModelCard:
        """Validate a parsed JSON object; CardError names every problem."""
        if not isinstance(data, dict):
            raise CardError(f"{source} is not a JSON object")
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise CardError(f"{source}: {describe_errors(error)} (models/README.md describes the card)") from None

    @classmethod
    def read(cls, path: str | Path) -> ModelCard:
        """Read and validate the card at ``path``; CardError when it is missing, unreadable or invalid."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CardError(f"model card {path} not found (it must sit beside the .onnx file)") from None
        except (OSError, UnicodeDecodeError) as error:
            raise CardError(f"model card {path} is unreadable: {error}") from None
        except json.JSONDecodeError as error:
            raise CardError(f"model card {path} is not valid JSON: {error}") from None
        return cls.parse(data, source=f"model card {path}")


def card_path_for(model_path: str | Path) -> Path:
    """The model card sits beside the ONNX file, with a .json suffix."""
    return Path(model_path).with_suffix(".json")


def describe_errors(error: ValidationError) -> str:
    """pydantic's errors as one line: each field by its dotted path and what is wrong with it."""
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "the card"
        if item["type"] == "extra_forbidden":
            problems.append(f"unknown key '{where}' (schema_version {SCHEMA_VERSION} has no such field)")
        elif item["type"] == "missing":
            problems.append(f"missing key '{where}'")
        else:
            message = re.sub(r"^Value error, ", "", item["msg"])
            got = repr(item.get("input"))
            problems.append(f"'{where}' is malformed: {message} (got {got[:40]})")
    return "; ".join(problems)
