"""Reduced-precision variants of an exported fp32 graph: int8 (static quantisation) and fp16.

``int8`` (for CPU hosts): onnxruntime's quant pre-processing (shape inference and graph cleanup) first, then
``quantize_static`` in QDQ format with per-channel int8 weights and uint8 activations, calibrated (MinMax)
on real tracklets read from a dataset folder with the contract's preprocessing and test-time sampling. Only
the convolutions are quantised: the backbone's but its stem (the first convolution stays fp32: quantising
the normalised frames cost most of the agreement) and the MG-RAFA head's 1x1 projections, so the head's
relative cost does not grow; its einsums, softmax over positions and reductions stay fp32. Leaving the head's
projections in fp32 too, or percentile/entropy calibration, did not help agreement (bench/precision.md).
Static quantisation applies to every convolution here, so dynamic quantisation is never needed: an int8
export without calibration data is refused rather than silently falling back to dynamic ranges.

``fp16`` (for GPU hosts): onnxconverter-common's ``convert_float_to_float16`` with the graph's input and
outputs kept as they are (uint8 frames in, float32 embedding out) and the numerically sensitive operations
kept in fp32: the softmax over positions, the means and sums (pooling and normalisation), divisions and
square roots.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from models import model_frame_from_bgr, sample_frame_indices
from training.data.tracklets import FRAME_SUFFIXES

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
#: Operations the fp16 conversion leaves in fp32 (onnxconverter-common inserts the casts around them).
FP16_KEEP_FP32 = ("Softmax", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "Div", "Sqrt",
                  "LayerNormalization", "BatchNormalization", "GlobalAveragePool", "AveragePool")
#: Operations the int8 export quantises (the head's 1x1 projections too; its einsums and softmax stay fp32).
INT8_OP_TYPES = ("Conv",)
#: MARS-style frame names (0001C1T0001F001.jpg): frames of several tracklets share a person folder.
_MARS_NAME = re.compile(r"^(\d{4}C\d+T\d{4})F\d+", re.IGNORECASE)


def find_tracklets(root: str | Path) -> list[list[Path]]:
    """Every tracklet under ``root``: the frame images of each folder in name order, split by tracklet
    when the names follow MARS (``PPPPCcTttttFfff``); folders are visited in sorted order."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"calibration folder {root} not found")
    tracklets: list[list[Path]] = []
    for folder in sorted({path.parent for path in root.rglob("*") if path.suffix.lower() in FRAME_SUFFIXES}):
        groups: dict[str, list[Path]] = defaultdict(list)
        frames = (p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file())
        for frame in sorted(p for p in frames if not p.name.startswith(".")):  # macOS ._ twins are not frames
            match = _MARS_NAME.match(frame.name)
            groups[match.group(1) if match else ""].append(frame)
        tracklets.extend(groups[key] for key in sorted(groups))
    return tracklets


def calibration_clips(root: str | Path, num_frames: int, height: int, width: int, count: int = 32) -> np.ndarray:
    """Up to ``count`` clips (N, T, H, W, 3) uint8 RGB from the tracklets under ``root``, spread evenly over
    them; each clip is the test-time sample (:func:`models.sample_frame_indices`) of one tracklet, every
    frame read and resized exactly as the service does (:func:`models.model_frame_from_bgr`)."""
    import cv2

    tracklets = find_tracklets(root)
    if not tracklets:
        raise ValueError(f"no tracklet frames ({', '.join(FRAME_SUFFIXES)}) under {root}")
    picks = np.unique(np.linspace(0, len(tracklets) - 1, min(count, len(tracklets))).round().astype(int))
    clips = []
    for index in picks:
        frames = tracklets[index]
        clip = []
        for frame_index in sample_frame_indices(len(frames), num_frames):
            image = cv2.imread(str(frames[frame_index]), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"calibration frame {frames[frame_index]} is not a readable image")
            clip.append(model_frame_from_bgr(image, height, width))
        clips.append(np.stack(clip))
    return np.stack(clips)


class _ClipReader:
    """onnxruntime's CalibrationDataReader protocol: one clip per call, then None."""

    def __init__(self, input_name: str, clips: np.ndarray):
        self.input_name = input_name
        self.clips = iter(clips)

    def get_next(self) -> dict[str, np.ndarray] | None:
        clip = next(self.clips, None)
        return None if clip is None else {self.input_name: clip[None]}

    def rewind(self) -> None:  # pragma: no cover - part of the protocol, unused by MinMax
        pass


def quantize_int8(fp32_path: Path, out_path: Path, clips: np.ndarray, input_name: str) -> None:
    """Write the statically quantised (QDQ, per-channel int8 weights) graph of ``fp32_path`` to ``out_path``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(dir=out_path.parent) as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # Symbolic shape inference, constant folding and graph cleanup, as onnxruntime recommends first.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        # The stem (the first convolution, on the normalised frames) stays fp32: quantising its input to 256
        # levels of a calibrated range cost most of the agreement with fp32 (top-10 overlap 94.8% -> 99.05% on
        # the trained synthetic network, bench/precision.md) for under 2% of ResNet-50's multiply-adds.
        stem = next(node.name for node in onnx.load(str(prepared)).graph.node if node.op_type == "Conv")
        quantize_static(
            str(prepared),
            str(out_path),
            _ClipReader(input_name, clips),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(INT8_OP_TYPES),
            per_channel=True,
            # uint8 activations with int8 weights is onnxruntime's fast x86 path (U8S8): measured on the
            # ResNet-50 export here it ran 2.5x (batch 1) and 2.8x (batch 8) faster than fp32, where int8
            # activations ran only 1.03-1.1x faster (and agreed less: cosine 0.991 vs 0.996).
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=[stem],
            extra_options={"WeightSymmetric": True},
        )


def convert_fp16(fp32_path: Path, out_path: Path) -> None:
    """Write the fp16 graph of ``fp32_path`` to ``out_path``: input and outputs keep their types, the
    operations of FP16_KEEP_FP32 run in fp32."""
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(fp32_path))
    converted = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=list(FP16_KEEP_FP32))
    # The converter retypes a Cast's float output to float16 but leaves its `to` attribute (the uint8 ->
    # float cast of the input frames), which onnxruntime rejects; point those casts at float16 too.
    fp16_values = {info.name for info in converted.graph.value_info
                   if info.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16}
    for node in converted.graph.node:
        if node.op_type == "Cast" and node.output[0] in fp16_values:
            for attribute in node.attribute:
                if attribute.name == "to" and attribute.i == onnx.TensorProto.FLOAT:
                    attribute.i = onnx.TensorProto.FLOAT16
    onnx.save(converted, str(out_path))


def cosine_agreement(reference: np.ndarray, other: np.ndarray) -> float:
    """The smallest cosine similarity between matching rows of two embedding matrices."""
    reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    other = other / np.linalg.norm(other, axis=1, keepdims=True)
    return float((reference * other).sum(axis=1).min())
