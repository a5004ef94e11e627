"""The exported model: its card and an onnxruntime session on the best device.

`OnnxEmbedder` wraps one onnxruntime session (CUDA when allowed, available and really created, else CPU);
`service.batching.MicroBatcher` lets many concurrent requests share it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.errors import StartupError

log = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def card_path_for(model_path: Path) -> Path:
    """The model card sits beside the ONNX file with a .json suffix."""
    return model_path.with_suffix(".json")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelCard:
    """The fields of the model card (models/README.md) the service relies on, plus the raw card."""

    name: str
    model_version: str
    input_name: str
    height: int
    width: int
    num_frames: int
    embedding_name: str
    dim: int
    normalized: bool
    raw: dict[str, Any]

    @classmethod
    def from_dict(cls, card: dict[str, Any]) -> ModelCard:
        """Validates a parsed card; raises StartupError naming the first thing wrong."""
        try:
            model_input = card["input"]
            embedding = card["embedding"]
            parsed = cls(
                name=str(card["name"]),
                model_version=str(card["model_version"]),
                input_name=str(model_input["name"]),
                height=int(model_input["height"]),
                width=int(model_input["width"]),
                num_frames=int(card["num_frames"]),
                embedding_name=str(embedding["name"]),
                dim=int(embedding["dim"]),
                normalized=bool(embedding.get("normalized", False)),
                raw=card,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise StartupError(f"model card is missing or has a malformed field: {error!r}") from None
        if model_input.get("dtype", "uint8") != "uint8" or model_input.get("layout", "BTHWC") != "BTHWC":
            raise StartupError("model card input must be uint8 BTHWC frames (see models/README.md)")
        if min(parsed.height, parsed.width, parsed.num_frames, parsed.dim) < 1:
            raise StartupError("model card has a non-positive size, num_frames or dim")
        return parsed

    @classmethod
    def from_file(cls, path: Path) -> ModelCard:
        try:
            card = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StartupError(f"model card {path} not found (it must sit beside the .onnx file)") from None
        except (OSError, UnicodeDecodeError) as error:
            raise StartupError(f"model card {path} is unreadable: {error}") from None
        except json.JSONDecodeError as error:
            raise StartupError(f"model card {path} is not valid JSON: {error}") from None
        if not isinstance(card, dict):
            raise StartupError(f"model card {path} is not a JSON object")
        return cls.from_dict(card)


def choose_providers(device: str, available: list[str]) -> list[str]:
    """The onnxruntime providers to ask for, given REID_DEVICE and what this onnxruntime build offers."""
    if device == "cpu":
        return [CPU_PROVIDER]
    if CUDA_PROVIDER in available:
        return [CUDA_PROVIDER, CPU_PROVIDER]
    if device == "cuda":
        raise StartupError(
            "REID_DEVICE=cuda but this onnxruntime has no CUDAExecutionProvider "
            f"(available: {', '.join(available)}); install onnxruntime-gpu or use REID_DEVICE=auto"
        )
    return [CPU_PROVIDER]


class OnnxEmbedder:
    """One onnxruntime session over the exported graph: uint8 clips (B, T, H, W, 3) -> embeddings (B, C).

    Args:
        model_path: the .onnx file; its card is read from the .json beside it.
        device: "auto", "cpu" or "cuda" (REID_DEVICE).
        intra_op_threads: onnxruntime intra-op threads, 0 for its default.
    """

    def __init__(self, model_path: Path, device: str = "auto", intra_op_threads: int = 0):
        model_path = Path(model_path)
        if not model_path.is_file():
            raise StartupError(f"model file {model_path} not found (set REID_MODEL_PATH)")
        self.card = ModelCard.from_file(card_path_for(model_path))
        try:
            actual_version = file_sha256(model_path)[:16]
        except OSError as error:
            raise StartupError(f"model file {model_path} is unreadable: {error}") from None
        if actual_version != self.card.model_version:
            raise StartupError(
                f"model file {model_path} (sha256 {actual_version}) does not match its card's model_version "
                f"{self.card.model_version}; re-export the model or restore the matching card"
            )

        options = ort.SessionOptions()
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        requested = choose_providers(device, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(model_path), sess_options=options, providers=requested)
        except Exception as error:  # onnxruntime raises its own untyped errors for unreadable graphs
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise StartupError(f"model file {model_path} could not be loaded by onnxruntime: {first_line}") from None
        self.providers = list(self.session.get_providers())
        # Asking for CUDA is not enough: onnxruntime falls back to CPU when CUDA or cuDNN fail to load.
        self.device = "cuda" if self.providers and self.providers[0] == CUDA_PROVIDER else "cpu"
        if device == "cuda" and self.device != "cuda":
            raise StartupError("REID_DEVICE=cuda but onnxruntime could not create a CUDA session (see its log)")
        self._check_graph()
        log.info(
            "model %s (version %s) on %s: input %dx%d, T=%d, dim %d; providers %s",
            self.card.name, self.card.model_version, self.device, self.card.height, self.card.width,
            self.card.num_frames, self.card.dim, ",".join(self.providers),
        )

    def _check_graph(self) -> None:
        inputs = {node.name: node for node in self.session.get_inputs()}
        outputs = {node.name for node in self.session.get_outputs()}
        if self.card.input_name not in inputs:
            raise StartupError(f"the ONNX graph has no input '{self.card.input_name}' named by its card")
        if self.card.embedding_name not in outputs:
            raise StartupError(f"the ONNX graph has no output '{self.card.embedding_name}' named by its card")
        if inputs[self.card.input_name].type != "tensor(uint8)":
            raise StartupError(f"the ONNX graph's input is {inputs[self.card.input_name].type}, not uint8")

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """(T, H, W, 3) of one clip."""
        return self.card.num_frames, self.card.height, self.card.width, 3

    def embed(self, clips: np.ndarray) -> np.ndarray:
        """Embeddings (B, dim) float32 of clips (B, T, H, W, 3) uint8 RGB, in one onnxruntime run."""
        if clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[1:] != self.input_shape:
            raise ValueError(f"expected uint8 clips (B, {self.input_shape}), got {clips.dtype} {clips.shape}")
        (embeddings,) = self.session.run([self.card.embedding_name], {self.card.input_name: clips})
        return np.ascontiguousarray(embeddings, dtype=np.float32)
