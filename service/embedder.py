"""The exported model: its card and an onnxruntime session on the best device.

`OnnxEmbedder` wraps one onnxruntime session (CUDA when allowed, available and really created, else CPU);
`service.batching.MicroBatcher` lets many concurrent requests share it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models import CardError, ModelCard, card_path_for, model_version_of
from service.cpu_features import cpu_flags, int8_advice, int8_dot_product
from service.errors import StartupError

log = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def load_card(path: Path) -> ModelCard:
    """The model card at ``path``, validated by the contract (models.ModelCard); StartupError naming every
    problem when it is missing, unreadable or does not fit the schema."""
    try:
        return ModelCard.read(path)
    except CardError as error:
        raise StartupError(str(error)) from None


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


def device_reason(device: str, requested: list[str], got: str) -> str:
    """Why the session runs where it runs, in words (logged, and kept as `OnnxEmbedder.device_reason`)."""
    if got == "cuda":
        return f"REID_DEVICE={device} and onnxruntime created a CUDA session"
    if device == "cpu":
        return "REID_DEVICE=cpu"
    if CUDA_PROVIDER not in requested:
        return "this onnxruntime build has no CUDAExecutionProvider (install onnxruntime-gpu for CUDA)"
    return ("CUDA was requested but onnxruntime could not create a CUDA session and fell back to the CPU "
            "(no GPU, or CUDA/cuDNN libraries missing; see onnxruntime's log)")


def fp16_refusal(model_path: Path, device: str) -> str:
    """Why an fp16 model is refused on a CPU session."""
    return (f"model {model_path} is fp16 (its card's precision), which is meant for a CUDA GPU, but this process "
            f"would run it on the CPU (REID_DEVICE={device}); serve the fp32 or int8 export of the model on CPU hosts")


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
        self.card = load_card(card_path_for(model_path))
        try:
            actual_version = model_version_of(model_path)
        except OSError as error:
            raise StartupError(f"model file {model_path} is unreadable: {error}") from None
        if actual_version != self.card.model_version:
            raise StartupError(
                f"model file {model_path} (sha256 {actual_version}) does not match its card's model_version "
                f"{self.card.model_version}; re-export the model or restore the matching card"
            )

        requested = choose_providers(device, ort.get_available_providers())
        if self.card.precision == "fp16" and CUDA_PROVIDER not in requested:
            raise StartupError(fp16_refusal(model_path, device))

        options = ort.SessionOptions()
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(model_path), sess_options=options, providers=requested)
        except Exception as error:  # onnxruntime raises its own untyped errors for unreadable graphs
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise StartupError(f"model file {model_path} could not be loaded by onnxruntime: {first_line}") from None
        self.providers = list(self.session.get_providers())
        # Asking for CUDA is not enough: onnxruntime falls back to CPU when CUDA or cuDNN fail to load.
        self.device = "cuda" if self.providers and self.providers[0] == CUDA_PROVIDER else "cpu"
        self.device_reason = device_reason(device, requested, self.device)
        if device == "cuda" and self.device != "cuda":
            raise StartupError("REID_DEVICE=cuda but onnxruntime could not create a CUDA session (see its log)")
        if self.card.precision == "fp16" and self.device != "cuda":
            raise StartupError(fp16_refusal(model_path, device) + f" ({self.device_reason})")
        if CUDA_PROVIDER in requested and self.device != "cuda":
            log.warning("running on the CPU: %s", self.device_reason)
        self._check_graph()
        flags = cpu_flags()
        #: The CPU's int8 dot-product flag (GET /model), None without one or on a GPU session.
        self.cpu_int8_dot_product = int8_dot_product(flags) if self.device == "cpu" else None
        if self.card.precision == "int8" and self.device == "cpu" and (advice := int8_advice(flags)):
            log.warning("model %s is int8, but %s", model_path, advice)
        log.info(
            "model %s (version %s, %s) on %s (%s): input %dx%d, T=%d, dim %d; providers %s",
            self.card.name, self.card.model_version, self.card.precision, self.device, self.device_reason,
            self.card.height, self.card.width, self.card.num_frames, self.card.dim, ",".join(self.providers),
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
    def attention_names(self) -> list[str]:
        """The graph's attention outputs named by its card (granularity order), the ones it really has."""
        outputs = {node.name for node in self.session.get_outputs()}
        return [name for name in self.card.attention_outputs if name in outputs]

    def attention(self, clip: np.ndarray) -> list[np.ndarray]:
        """Per granularity, the attention (T, Hm, Wm) of one clip (T, H, W, 3) uint8 RGB; [] without outputs.

        A separate run from `embed` (only for the tracklet view's overlays): embeddings never wait on it."""
        names = self.attention_names
        if not names:
            return []
        clip = np.asarray(clip, dtype=np.uint8)
        if clip.shape != self.input_shape:
            raise ValueError(f"expected a uint8 clip {self.input_shape}, got {clip.shape}")
        outputs = self.session.run(names, {self.card.input_name: clip[None]})
        return [np.asarray(output[0], dtype=np.float32) for output in outputs]

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
