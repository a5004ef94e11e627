"""The ONNX person detector: every supported YOLO output layout, decoded through the letterbox exactly.

Each test builds a tiny ONNX graph whose output is a constant tensor in one layout, holding known boxes in
the letterboxed input's coordinates; the detector must return those boxes in frame coordinates.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.footage.onnx_detector import OnnxDetector, guess_layout, letterbox, split_layout_prefix
from service.footage.pipeline import FootageSettings, make_detector

FRAME_H, FRAME_W = 480, 640
IN_H, IN_W = 320, 320
# 640x480 -> 320x320: r = 0.5, resized 320x240, top padding 40, left 0.
R, LEFT, TOP = 0.5, 0, 40

# Frame-pixel person boxes (x1, y1, x2, y2), scores, classes.
PEOPLE = np.array([[100, 60, 160, 220], [300, 200, 380, 420], [500, 10, 540, 110]], np.float32)
PEOPLE_SCORES = np.array([0.9, 0.7, 0.4], np.float32)
OTHER = np.array([[20, 300, 120, 400]], np.float32)  # a class-2 object (not a person)
WEAK = np.array([[400, 50, 440, 150]], np.float32)  # a person under the threshold


def to_input(boxes: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    out[:, [0, 2]] = out[:, [0, 2]] * R + LEFT
    out[:, [1, 3]] = out[:, [1, 3]] * R + TOP
    return out


def as_centres(boxes: np.ndarray) -> np.ndarray:
    return np.stack(
        [
            (boxes[:, 0] + boxes[:, 2]) / 2,
            (boxes[:, 1] + boxes[:, 3]) / 2,
            boxes[:, 2] - boxes[:, 0],
            boxes[:, 3] - boxes[:, 1],
        ],
        axis=1,
    )


def rows(num_classes: int, objectness: bool) -> np.ndarray:
    """Candidate rows (cx, cy, w, h, [obj], classes...) in input pixels, plus a duplicate for NMS."""
    everything = [
        *[(b, s, 0) for b, s in zip(PEOPLE, PEOPLE_SCORES, strict=True)],
        (OTHER[0], 0.95, 2),
        (WEAK[0], 0.1, 0),
        (PEOPLE[0] + np.array([2, 2, 2, 2], np.float32), 0.6, 0),  # overlaps the first person: suppressed
    ]
    out = []
    for box, score, cls in everything:
        centre = as_centres(to_input(box[None]))[0]
        classes = np.full(num_classes, 0.01, np.float32)
        classes[cls] = score if not objectness else 1.0
        head = [*centre, score] if objectness else list(centre)
        out.append(np.r_[np.asarray(head, np.float32), classes])
    return np.asarray(out, np.float32)


def constant_model(path, output: np.ndarray, input_dtype=TensorProto.FLOAT) -> str:
    """An ONNX graph taking (1, 3, IN_H, IN_W) images and returning ``output`` whatever the input."""
    image = helper.make_tensor_value_info("images", input_dtype, [1, 3, IN_H, IN_W])
    result = helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output.shape))
    const = helper.make_node("Constant", [], ["value"], value=numpy_helper.from_array(output, "value"))
    # Depend on the input (times zero) so no runtime prunes it.
    reduce = helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0)
    cast = helper.make_node("Cast", ["mean"], ["mean32"], to=TensorProto.FLOAT)
    zero = helper.make_node("Mul", ["mean32", "zero"], ["nothing"])
    add = helper.make_node("Add", ["value", "nothing"], ["output0"])
    zero_init = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    graph = helper.make_graph([const, reduce, cast, zero, add], "detector", [image], [result], [zero_init])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def frame() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (FRAME_H, FRAME_W, 3), dtype=np.uint8)


def check_people(boxes: np.ndarray) -> None:
    order = np.argsort(-boxes[:, 4])
    np.testing.assert_allclose(boxes[order, :4], PEOPLE, atol=1e-3)
    np.testing.assert_allclose(boxes[order, 4], PEOPLE_SCORES, atol=1e-5)


def test_letterbox_scales_centres_and_pads():
    tensor, r, left, top = letterbox(np.full((FRAME_H, FRAME_W, 3), 200, np.uint8), IN_H, IN_W)
    assert tensor.shape == (1, 3, IN_H, IN_W) and tensor.dtype == np.float32
    assert (r, left, top) == (R, LEFT, TOP)
    assert np.allclose(tensor[0, :, :TOP], 114 / 255) and np.allclose(tensor[0, :, TOP : IN_H - TOP], 200 / 255)


def padded(candidates: np.ndarray, total: int) -> np.ndarray:
    """The candidate rows followed by empty ones (all zero scores), ``total`` rows in all, as real models
    emit thousands of anchors."""
    return np.concatenate([candidates, np.zeros((total - len(candidates), candidates.shape[1]), np.float32)])


def test_yolov8_layout_channels_first(tmp_path):
    output = np.ascontiguousarray(padded(rows(num_classes=80, objectness=False), 200).T[None])
    assert output.shape == (1, 84, 200)
    detector = OnnxDetector(constant_model(tmp_path / "v8.onnx", output), score_threshold=0.25)
    assert detector.layout == "yolov8"
    check_people(detector.detect(frame()))


def test_forced_layout_when_the_shape_is_ambiguous(tmp_path):
    # Six candidates of a 3-class YOLOv8 model: (1, 7, 6) would read as 7 rows of 6 (end2end).
    output = np.ascontiguousarray(rows(num_classes=3, objectness=False).T[None])
    path = constant_model(tmp_path / "v8.onnx", output)
    detector = OnnxDetector(f"yolov8:{path}")
    assert detector.layout == "yolov8"
    check_people(detector.detect(frame()))


def test_yolov5_layout_with_objectness(tmp_path):
    output = padded(rows(num_classes=80, objectness=True), 300)[None]  # (1, 300, 85)
    detector = OnnxDetector(constant_model(tmp_path / "v5.onnx", output))
    assert detector.layout == "yolov5"
    check_people(detector.detect(frame()))


def test_end_to_end_layout(tmp_path):
    boxes = np.concatenate([to_input(PEOPLE), to_input(OTHER), to_input(WEAK)])
    scores = np.r_[PEOPLE_SCORES, 0.95, 0.1].astype(np.float32)
    classes = np.r_[0, 0, 0, 2, 0].astype(np.float32)
    output = np.concatenate([boxes, scores[:, None], classes[:, None]], axis=1)
    output = np.concatenate([output, np.full((295, 6), -1, np.float32)])[None]  # (1, 300, 6), unused rows -1
    detector = make_detector(FootageSettings(detector=constant_model(tmp_path / "e2e.onnx", output)))
    assert detector.layout == "end2end"
    check_people(detector.detect(frame()))


def test_person_class_setting_picks_another_class(tmp_path):
    output = padded(rows(num_classes=80, objectness=True), 300)[None]
    detector = OnnxDetector(constant_model(tmp_path / "v5.onnx", output), person_class=2)
    boxes = detector.detect(frame())
    np.testing.assert_allclose(boxes[:, :4], OTHER, atol=1e-3)


def test_float16_input_and_boxes_clipped_to_the_frame(tmp_path):
    outside = np.array([[-50, 100, 80, 300]], np.float32)  # starts left of the frame
    output = np.r_[as_centres(to_input(outside))[0], 0.9, 0.9].astype(np.float32)[None, None]  # (1, 1, 6)
    path = constant_model(tmp_path / "one.onnx", output, input_dtype=TensorProto.FLOAT16)
    detector = OnnxDetector(f"yolov5:{path}")
    boxes = detector.detect(frame())
    np.testing.assert_allclose(boxes[:, :4], [[0, 100, 80, 300]], atol=1e-3)
    assert boxes[0, 4] == pytest.approx(0.81)


@pytest.mark.parametrize(
    ("shape", "layout"),
    [((1, 84, 8400), "yolov8"), ((1, 25200, 85), "yolov5"), ((1, 300, 6), "end2end"), ((1, 5, 8400), "yolov8")],
)
def test_layout_guess(shape, layout):
    assert guess_layout(shape) == layout


def test_bad_shapes_and_prefixes():
    with pytest.raises(ValueError):
        guess_layout((1, 100, 5))
    with pytest.raises(ValueError):
        guess_layout((100, 6))
    assert split_layout_prefix("yolov5:/m.onnx") == ("yolov5", "/m.onnx")
    assert split_layout_prefix("C:/models/m.onnx") == (None, "C:/models/m.onnx")
    with pytest.raises(ValueError, match="REID_DETECTOR"):
        make_detector(FootageSettings(detector="hog"))


def test_pipeline_runs_an_onnx_detector_chosen_by_path(tmp_path):
    """REID_DETECTOR=/path/model.onnx through run_footage: the constant boxes become steady tracks."""
    import cv2

    from service.footage.pipeline import run_footage

    output = padded(rows(num_classes=80, objectness=True), 300)[None]
    path = constant_model(tmp_path / "v5.onnx", output)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (FRAME_W, FRAME_H))
    for _ in range(20):
        writer.write(frame())
    writer.release()
    got = []
    summary = run_footage(video, card_height=64, card_width=32, on_tracklet=got.append,
                          settings=FootageSettings(detector=path, min_track_frames=5, min_box_height=50))  # fmt: skip
    # Two tracks over every frame; the third person's score (0.4) is under the tracker's high score (0.5):
    # low-score detections only continue tracks, they never start one.
    assert len(summary.tracks) == 2
    for boxes in summary.tracks.values():
        assert [b[0] for b in boxes] == list(range(20))
    heights = sorted(round(boxes[-1][4]) for boxes in summary.tracks.values())
    assert heights == [160, 220]
    assert len(got) == 2 and all(t.crops[0].shape == (64, 32, 3) for t in got)
