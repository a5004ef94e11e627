"""A person detector the user brings: any YOLO-family ONNX model, run with onnxruntime.

Select it with ``REID_DETECTOR=/path/model.onnx``; it runs on the embedder's onnxruntime providers (the
REID_DEVICE choice). The input is the model's first input, NCHW float (float32 or float16), RGB scaled to
[0, 1], letterboxed to the model's input size (a dynamic size means 640x640): the frame is scaled by
r = min(H / h, W / w) keeping its aspect ratio, centred, and padded with grey 114. Boxes are mapped back
by undoing exactly that (subtract the padding, divide by r) and clipped to the frame.

Supported output layouts (the model's first output; B = 1, N candidate boxes, C classes):

============  ===================  ==========================================================================
layout        shape                rows
============  ===================  ==========================================================================
``yolov5``    (1, N, 5 + C)        cx, cy, w, h, objectness, C class scores; person score = objectness *
                                   class score. YOLOv5, YOLOv7 (without its NMS head), YOLOv6/YOLOX exports
                                   that decode boxes in the graph.
``yolov8``    (1, 4 + C, N)        cx, cy, w, h, C class scores (no objectness), channels first. YOLOv8,
                                   YOLOv9, YOLO11, YOLOv12 (Ultralytics export).
``end2end``   (1, N, 6)            x1, y1, x2, y2, score, class, NMS already done. YOLOv10, and Ultralytics
                                   exports with ``nms=True`` / end-to-end heads (e.g. YOLO26).
============  ===================  ==========================================================================

All coordinates are in the letterboxed input's pixels. The layout is recognised from the shape: (1, A, B)
with A < B is ``yolov8``; otherwise B == 6 is ``end2end`` and B > 6 is ``yolov5``. A single-class YOLOv5
model also has B == 6: name its layout explicitly, ``REID_DETECTOR=yolov5:/path/model.onnx`` (the prefixes
``yolov5:``, ``yolov8:`` and ``end2end:`` force a layout). Only the person class
(``REID_DETECTOR_PERSON_CLASS``, 0 in COCO) is kept; boxes under ``REID_DETECTOR_THRESHOLD`` are dropped,
then class-agnostic non-maximum suppression at IoU 0.45 (also applied to ``end2end``; harmless there).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from service.footage.detection import empty_boxes, nms

LAYOUTS = ("yolov5", "yolov8", "end2end")
DEFAULT_INPUT = 640
PAD_VALUE = 114


def split_layout_prefix(spec: str) -> tuple[str | None, str]:
    """``"yolov5:/m.onnx"`` -> ("yolov5", "/m.onnx"); a plain path -> (None, path)."""
    head, sep, rest = spec.partition(":")
    if sep and head in LAYOUTS:
        return head, rest
    return None, spec


def guess_layout(shape: tuple[int, ...]) -> str:
    """The layout of an output of this shape (see the module docstring); ValueError if none fits."""
    if len(shape) != 3 or shape[0] not in (1, -1):
        raise ValueError(f"detector output must be (1, A, B), got {shape}")
    _, a, b = shape
    if a > 0 and b > 0 and a < b and a >= 5:
        return "yolov8"
    if b == 6:
        return "end2end"
    if b > 6:
        return "yolov5"
    raise ValueError(f"cannot tell the YOLO layout of a detector output shaped {shape}")


def letterbox(frame_bgr: np.ndarray, height: int, width: int) -> tuple[np.ndarray, float, int, int]:
    """(1, 3, height, width) float32 RGB in [0, 1], the scale r, and the left / top padding in pixels."""
    h, w = frame_bgr.shape[:2]
    r = min(height / h, width / w)
    new_w, new_h = max(1, int(round(w * r))), max(1, int(round(h * r)))
    left, top = (width - new_w) // 2, (height - new_h) // 2
    canvas = np.full((height, width, 3), PAD_VALUE, np.uint8)
    resized = cv2.resize(frame_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas[top : top + new_h, left : left + new_w] = resized
    tensor = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    return tensor, r, left, top


def decode(output: np.ndarray, layout: str, person_class: int, threshold: float) -> np.ndarray:
    """Person boxes (N, 5: x1, y1, x2, y2, score) in the model input's pixels from one raw output."""
    out = np.asarray(output, np.float32)[0]
    if layout == "yolov8":
        out = out.T  # (N, 4 + C)
        if person_class >= out.shape[1] - 4:
            raise ValueError(f"person class {person_class} but the detector has {out.shape[1] - 4} classes")
        scores = out[:, 4 + person_class]
        centres = out[:, :4]
    elif layout == "yolov5":
        if person_class >= out.shape[1] - 5:
            raise ValueError(f"person class {person_class} but the detector has {out.shape[1] - 5} classes")
        scores = out[:, 4] * out[:, 5 + person_class]
        centres = out[:, :4]
    elif layout == "end2end":
        keep = np.round(out[:, 5]).astype(np.int64) == person_class
        out = out[keep]
        boxes = np.concatenate([out[:, :4], out[:, 4:5]], axis=1)
        return boxes[boxes[:, 4] >= threshold]
    else:
        raise ValueError(f"unknown detector layout {layout!r}; one of {', '.join(LAYOUTS)}")
    keep = scores >= threshold
    cx, cy, w, h = centres[keep].T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, scores[keep]], axis=1).astype(np.float32)


class OnnxDetector:
    """YOLO-family ONNX person detector (see the module docstring). Stateless: safe to share."""

    def __init__(
        self,
        path: str | Path,
        providers: list[str] | None = None,
        score_threshold: float = 0.25,
        person_class: int = 0,
        nms_iou: float = 0.45,
        layout: str | None = None,
    ):
        import onnxruntime as ort

        forced, spec = split_layout_prefix(str(path))
        self.path = Path(spec)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX detector {self.path} does not exist")
        self.session = ort.InferenceSession(str(self.path), providers=providers or ["CPUExecutionProvider"])
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.input_dtype = np.float16 if "float16" in first.type else np.float32
        dims = list(first.shape)
        self.input_h = dims[2] if isinstance(dims[2], int) and dims[2] > 0 else DEFAULT_INPUT
        self.input_w = dims[3] if isinstance(dims[3], int) and dims[3] > 0 else DEFAULT_INPUT
        self.output_name = self.session.get_outputs()[0].name
        declared = tuple(d if isinstance(d, int) else -1 for d in self.session.get_outputs()[0].shape)
        self.layout = layout or forced
        if self.layout is None and all(d > 0 for d in declared[1:]):
            self.layout = guess_layout(declared)
        self.score_threshold, self.person_class, self.nms_iou = score_threshold, person_class, nms_iou
        self.width = self.height = 0

    def start(self, width: int, height: int, fps: float) -> None:
        self.width, self.height = width, height

    def feedback(self, boxes: np.ndarray) -> None:
        """Unused: a detector that sees people in every frame needs no help with people standing still."""

    def detect(self, frame_bgr: np.ndarray) -> np.ndarray:
        tensor, r, left, top = letterbox(frame_bgr, self.input_h, self.input_w)
        (output,) = self.session.run([self.output_name], {self.input_name: tensor.astype(self.input_dtype)})
        layout = self.layout or guess_layout(tuple(output.shape))
        boxes = decode(output, layout, self.person_class, self.score_threshold)
        if not len(boxes):
            return empty_boxes()
        boxes[:, [0, 2]] = (boxes[:, [0, 2]] - left) / r
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] - top) / r
        h, w = frame_bgr.shape[:2]
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
        boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
        return boxes[nms(boxes, self.nms_iou)].astype(np.float32)
