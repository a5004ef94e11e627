"""The int8 ceiling of this CPU: onnxruntime's int8 matrix product (MatMulInteger, uint8 x int8 and
uint8 x uint8) against its fp32 MatMul, on shapes of ResNet-50's convolutions, one thread, interleaved.

A quantised network cannot run faster than its matrix products do, so this says, in a few seconds and
without a model, whether int8 can pay off on a CPU at all (bench/bench_precision.py times the whole
network). The CPU's family, model and int8 dot-product flags are recorded with the table. Writes its
section of bench/precision.md.

    PYTHONPATH=$PWD python bench/bench_int8_gemm.py --pause '[t]raining ablation'
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from bench.machine import NotPaused, PausedDuringTiming, load_average, machine_description, write_section
from service.cpu_features import INT8_DOT_PRODUCT_FLAGS, cpu_flags, int8_dot_product

SECTION = "int8 GEMM ceiling (bench/bench_int8_gemm.py)"

#: (what, M, K, N): im2col shapes of ResNet-50 convolutions on one 8-frame 256x128 tracklet.
SHAPES = (
    ("layer1 3x3 conv, 64 -> 64 channels, 64x32 map", 8 * 64 * 32, 64 * 9, 64),
    ("layer3 1x1 conv, 1024 -> 256 channels, 16x8 map", 8 * 16 * 8, 1024, 256),
    ("layer4 3x3 conv, 512 -> 512 channels, 16x8 map", 8 * 16 * 8, 512 * 9, 512),
)
KINDS = ("fp32", "u8s8", "u8u8")


def matmul_model(kind: str, m: int, k: int, n: int, weights: np.ndarray) -> bytes:
    """A graph of one matrix product whose weights are a constant (an initializer), as a convolution's are in
    the exported model, so onnxruntime pre-packs them once."""
    if kind == "fp32":
        a_type, y_type, op = TensorProto.FLOAT, TensorProto.FLOAT, "MatMul"
    else:
        a_type, y_type, op = TensorProto.UINT8, TensorProto.INT32, "MatMulInteger"
    graph = helper.make_graph(
        [helper.make_node(op, ["a", "b"], ["y"])], "matmul",
        [helper.make_tensor_value_info("a", a_type, [m, k])],
        [helper.make_tensor_value_info("y", y_type, [m, n])],
        initializer=[numpy_helper.from_array(weights, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def operands(kind: str, m: int, k: int, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if kind == "fp32":
        return {"a": rng.random((m, k), np.float32), "b": rng.random((k, n), np.float32)}
    if kind == "u8s8":
        b = rng.integers(-127, 128, (k, n), dtype=np.int8)
    else:
        b = rng.integers(0, 256, (k, n), dtype=np.uint8)
    return {"a": rng.integers(0, 256, (m, k), dtype=np.uint8), "b": b}


def cpu_identity() -> str:
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("cpu family", "model", "model name") and key.strip() not in fields:
                fields[key.strip()] = value.strip()
    except OSError:
        return "unknown CPU"
    return f"{fields.get('model name', '?')}, family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--pause", default="", metavar="PATTERN",
                        help="stop the processes matching PATTERN (pgrep -f) during the timed loops")
    parser.add_argument("--out", default="bench/precision.md")
    args = parser.parse_args()
    pause = NotPaused()
    if args.pause:
        found = subprocess.run(["pgrep", "-f", args.pause], capture_output=True, text=True, check=False).stdout
        pause = PausedDuringTiming([int(pid) for pid in found.split()])
    load_before = load_average()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    rng = np.random.default_rng(0)
    rows = []
    for what, m, k, n in SHAPES:
        operand = {kind: operands(kind, m, k, n, rng) for kind in KINDS}
        sessions = {kind: ort.InferenceSession(matmul_model(kind, m, k, n, operand[kind]["b"]), options,
                                               providers=["CPUExecutionProvider"])
                    for kind in KINDS}
        inputs = {kind: {"a": operand[kind]["a"]} for kind in KINDS}
        best = {kind: float("inf") for kind in KINDS}
        with pause.window():
            for kind in KINDS:  # warm-up
                sessions[kind].run(None, inputs[kind])
            for _ in range(args.repeats):
                for kind in KINDS:  # interleaved
                    start = time.perf_counter()
                    sessions[kind].run(None, inputs[kind])
                    best[kind] = min(best[kind], time.perf_counter() - start)
        macs = m * k * n
        rows.append(f"| {what} | {m}x{k}x{n} | " + " | ".join(f"{macs / best[kind] / 1e9:.1f}" for kind in KINDS)
                    + f" | {best['fp32'] / best['u8s8']:.2f}x | {best['fp32'] / best['u8u8']:.2f}x |")
    flags = cpu_flags()
    dot = int8_dot_product(flags)
    simd = sorted(flag for flag in (flags or ()) if flag.startswith(("avx", "amx", "asimd", "sve")) or flag == "fma")
    wanted = ", ".join(INT8_DOT_PRODUCT_FLAGS)
    body = f"""{machine_description()}; {cpu_identity()}
SIMD flags: {' '.join(simd) or 'unknown'}; int8 dot-product instructions ({wanted}): {dot or 'none'}
Load average (1/5/15 min) before: {load_before}; after: {load_average()}; {pause.describe()}

onnxruntime {ort.__version__} CPU, one intra-op thread, best of {args.repeats} interleaved runs per kind: fp32 MatMul
against MatMulInteger with uint8 activations and int8 (u8s8, what the int8 export's convolutions run) or
uint8 (u8u8) weights; the weights are constants of the graph, pre-packed once by onnxruntime as the exported
convolutions' are. Figures in GMAC/s (multiply-adds per second).

| shape | M x K x N | fp32 | u8s8 | u8u8 | u8s8 vs fp32 | u8u8 vs fp32 |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Command: `PYTHONPATH=$PWD python bench/bench_int8_gemm.py --pause '[t]raining ablation'`
"""
    write_section(args.out, SECTION, body)
    print(body)


if __name__ == "__main__":
    main()
