"""Reduced-precision exports: int8 (static, calibrated on rendered tracklets) and fp16 agree with fp32; a
seeded random init shares weights across precisions; the service refuses fp16 on the CPU."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from models import ModelCard
from service.embedder import OnnxEmbedder
from service.errors import StartupError
from training.export import main
from training.precision import find_tracklets

SHAPE = ["--random-init", "--backbone", "resnet18", "--height", "64", "--width", "32", "--num-frames", "4"]


def write_tracklets(root, count=6, frames=5):
    """MARS-named frames of ``count`` rendered tracklets (coloured blocks on noise) under root/0001."""
    rng = np.random.default_rng(3)
    folder = root / "bbox_train" / "0001"
    folder.mkdir(parents=True)
    for track in range(count):
        colour = rng.integers(0, 256, size=3)
        for frame in range(frames):
            image = rng.integers(0, 60, size=(128, 64, 3), dtype=np.uint8)
            image[20 + frame:90 + frame, 12:52] = colour
            cv2.imwrite(str(folder / f"0001C1T{track + 1:04d}F{frame + 1:03d}.jpg"), image)
    return root


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    calibration = write_tracklets(root / "data")
    paths = {}
    for precision in ("fp32", "fp16", "int8"):
        paths[precision] = root / f"{precision}.onnx"
        extra = ["--calibration", str(calibration)] if precision == "int8" else []
        assert main([*SHAPE, "--out", str(paths[precision]), "--precision", precision, *extra]) == 0
    paths["other_seed"] = root / "seed1.onnx"
    assert main([*SHAPE, "--seed", "1", "--out", str(paths["other_seed"])]) == 0
    return paths, calibration


def embed(path, clips):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["embedding"], {"frames": clips})[0]


def cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_calibration_finds_each_mars_tracklet(exports):
    _, calibration = exports
    tracklets = find_tracklets(calibration)
    assert len(tracklets) == 6 and all(len(frames) == 5 for frames in tracklets)


def test_reduced_precisions_agree_with_fp32_and_the_card_says_which(exports):
    paths, _ = exports
    rng = np.random.default_rng(9)
    clips = np.zeros((8, 4, 64, 32, 3), dtype=np.uint8)
    for clip in clips:  # 8 "people": different coloured blocks on noise
        clip[:] = rng.integers(0, 60, size=clip.shape, dtype=np.uint8)
        clip[:, 10:50, 6:26] = rng.integers(0, 256, size=3)
    reference = embed(paths["fp32"], clips)
    neighbours = np.argsort(((reference[:, None] - reference[None]) ** 2).sum(-1), axis=1)[:, 1:4]
    for precision in ("fp16", "int8"):
        assert ModelCard.read(paths[precision].with_suffix(".json")).precision == precision
        got = embed(paths[precision], clips)
        assert got.dtype == np.float32
        assert cosines(reference, got).min() > 0.99, precision
        theirs = np.argsort(((got[:, None] - got[None]) ** 2).sum(-1), axis=1)[:, 1:4]
        overlap = np.mean([len(set(a) & set(b)) / 3 for a, b in zip(neighbours, theirs, strict=True)])
        assert overlap >= 0.9, (precision, overlap)
    # Same seed, same weights: a different seed is a different network.
    assert cosines(reference, embed(paths["other_seed"], clips)).min() < 0.99


def test_int8_quantises_the_convolutions_and_fp16_keeps_the_softmax_in_fp32(exports):
    paths, _ = exports
    int8 = onnx.load(str(paths["int8"])).graph
    assert sum(node.op_type == "QuantizeLinear" for node in int8.node) > 10
    # Every convolution reads dequantised weights but the stem, which stays fp32 (bench/precision.md).
    produced_by = {output: node.op_type for node in int8.node for output in node.output}
    convolutions = [node for node in int8.node if node.op_type == "Conv"]
    dequantised = [produced_by.get(node.input[1]) == "DequantizeLinear" for node in convolutions]
    assert dequantised[0] is False and all(dequantised[1:]), dequantised
    fp16 = onnx.shape_inference.infer_shapes(onnx.load(str(paths["fp16"])))
    types = {info.name: info.type.tensor_type.elem_type for info in
             [*fp16.graph.value_info, *fp16.graph.input, *fp16.graph.output]}
    softmaxes = [node for node in fp16.graph.node if node.op_type == "Softmax"]
    assert softmaxes and all(types[node.input[0]] == onnx.TensorProto.FLOAT for node in softmaxes)
    convs = [node for node in fp16.graph.node if node.op_type == "Conv"]
    assert all(types[node.output[0]] == onnx.TensorProto.FLOAT16 for node in convs)
    assert types["embedding"] == onnx.TensorProto.FLOAT and types["frames"] == onnx.TensorProto.UINT8


def test_service_refuses_fp16_on_the_cpu_and_serves_int8(exports):
    paths, _ = exports
    with pytest.raises(StartupError, match="fp16.*CPU"):
        OnnxEmbedder(paths["fp16"], device="cpu")
    embedder = OnnxEmbedder(paths["int8"], device="cpu")
    assert embedder.card.precision == "int8"
    assert embedder.embed(np.zeros((1, 4, 64, 32, 3), dtype=np.uint8)).shape == (1, 512)


@pytest.mark.parametrize("flags, warned, found", [
    ("fpu sse4_2 avx avx2 fma", True, None),  # AVX2 only: the first EPYC generation
    ("fpu avx2 avx512f avx512_vnni", False, "avx512_vnni"),
    ("fpu avx2 avx_vnni", False, "avx_vnni"),
])
def test_int8_on_a_cpu_without_dot_products_is_flagged(exports, tmp_path, monkeypatch, caplog, flags, warned, found):
    import service.embedder
    from service.cpu_features import cpu_flags

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    monkeypatch.setattr(service.embedder, "cpu_flags", lambda: cpu_flags(cpuinfo))
    paths, _ = exports
    with caplog.at_level("WARNING", logger="service.embedder"):
        int8 = OnnxEmbedder(paths["int8"], device="cpu")
        fp32 = OnnxEmbedder(paths["fp32"], device="cpu")
    assert int8.cpu_int8_dot_product == fp32.cpu_int8_dot_product == found
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert ("no int8 dot-product instructions" in " ".join(warnings)) is warned
    assert all("is int8" in message for message in warnings)  # only the int8 model is warned about


def test_cpu_flags_read_arm_features_and_tolerate_a_missing_file(tmp_path):
    from service.cpu_features import cpu_flags, int8_advice, int8_dot_product

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\n")
    assert int8_dot_product(cpu_flags(cpuinfo)) == "asimddp" and int8_advice(cpu_flags(cpuinfo)) is None
    assert cpu_flags(tmp_path / "missing") is None and int8_advice(None) is None


def test_int8_without_calibration_is_refused(tmp_path, capsys):
    assert main([*SHAPE, "--out", str(tmp_path / "x.onnx"), "--precision", "int8"]) == 2
    assert "--calibration" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()


def float_initializers(path):
    """{name: array} of the graph's floating-point initializers (weights, biases, batch-norm statistics)."""
    from onnx import numpy_helper

    arrays = {item.name: numpy_helper.to_array(item) for item in onnx.load(str(path)).graph.initializer}
    return {name: array for name, array in arrays.items() if array.dtype.kind == "f" and array.size > 1}


def test_random_init_exports_of_one_seed_share_weights_across_precisions(exports):
    """The fp32 and fp16 exports were built separately in this process (the fixture), so only the seed
    (--seed, default 0) can make their weights the same: without it the second build draws new weights."""
    from onnxconverter_common.float16 import convert_np_to_float16

    paths, _ = exports
    fp32, fp16 = float_initializers(paths["fp32"]), float_initializers(paths["fp16"])
    assert len(fp32) >= 20 and set(fp16) == set(fp32)
    convolutions = [name for node in onnx.load(str(paths["fp32"])).graph.node if node.op_type == "Conv"
                    for name in node.input[1:2] if name in fp32]
    assert len(convolutions) >= 20
    for name, weight in fp32.items():
        if fp16[name].dtype == np.float16:  # converted: fp32's weight rounded (and clamped) by the converter
            np.testing.assert_array_equal(fp16[name], convert_np_to_float16(weight), err_msg=name)
        else:  # kept in fp32 (parameters of the operations left in fp32): the very same values
            np.testing.assert_array_equal(fp16[name], weight, err_msg=name)
    assert all(fp16[name].dtype == np.float16 for name in convolutions)
    # Another seed is another network: most weights differ.
    other = float_initializers(paths["other_seed"])
    assert all(not np.array_equal(other[name], fp32[name]) for name in convolutions)
    # And the outputs follow: fp16 is fp32 up to rounding, far closer than another seed's network.
    clips = np.random.default_rng(4).integers(0, 256, size=(3, 4, 64, 32, 3), dtype=np.uint8)
    reference = embed(paths["fp32"], clips)
    assert np.abs(embed(paths["fp16"], clips) - reference).max() < 0.02 * np.abs(reference).max()
    assert np.abs(embed(paths["other_seed"], clips) - reference).max() > 0.2 * np.abs(reference).max()
