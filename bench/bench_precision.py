"""fp32 vs int8 speed of the ResNet-50 export (256x128, T=8, batch 1 and 8), MG-RAFA and baseline heads
timed interleaved in one process, so the MG-RAFA/baseline ratio per precision is measured under the same load.
Random init (speed does not depend on the weights); int8 calibrated on the synthetic benchmark's tracklets.
fp16 is not timed here (no GPU). Agreement through the evaluation: bench/bench_precision_agreement.py. Writes
its section of bench/precision.md.

    PYTHONPATH=$PWD OMP_NUM_THREADS=2 nice -n 10 python bench/bench_precision.py \
        --calibration data/synthetic/bbox_train --out bench/precision.md
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from bench.machine import load_average, machine_description, write_section
from training.export import export_model
from training.model import build_model
from training.precision import calibration_clips, quantize_int8

SECTION = "Speed (bench/bench_precision.py, one run)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calibration", required=True)
    parser.add_argument("--out", default="bench/precision.md")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    clips = calibration_clips(args.calibration, 8, 256, 128, 8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    sessions = {}
    with tempfile.TemporaryDirectory() as scratch:
        for head in ("mg-rafa", "baseline"):
            torch.manual_seed(0)
            model = build_model(backbone="resnet50", head=head, granularities=4, height=256, width=128)
            fp32 = Path(scratch) / f"{head}.onnx"
            export_model(model, fp32, num_frames=8, with_attention=False)
            int8 = Path(scratch) / f"{head}-int8.onnx"
            quantize_int8(fp32, int8, clips, "frames")
            for precision, path in (("fp32", fp32), ("int8", int8)):
                sessions[head, precision] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        rows = []
        for batch in (1, 8):
            x = np.repeat(clips[:1], batch, axis=0)
            times = {key: [] for key in sessions}
            for session in sessions.values():
                session.run(None, {"frames": x})
            for _ in range(args.repeats):
                for key, session in sessions.items():  # interleaved
                    start = time.perf_counter()
                    session.run(None, {"frames": x})
                    times[key].append(time.perf_counter() - start)
            med = {key: float(np.median(value)) for key, value in times.items()}
            for precision in ("fp32", "int8"):
                rows.append(f"| {batch} | {precision} | {med['mg-rafa', precision] * 1000:.0f} | "
                            f"{med['baseline', precision] * 1000:.0f} | "
                            f"{med['mg-rafa', precision] / med['baseline', precision]:.3f} | "
                            f"{med['mg-rafa', 'fp32'] / med['mg-rafa', precision]:.2f}x |")
    body = "\n".join([
        machine_description(), f"Load average during the run: {load_average()}", "",
        "ResNet-50, 256x128, T=8, onnxruntime CPU, 2 intra-op threads, median of "
        f"{args.repeats} interleaved runs. int8 = static QDQ (uint8 activations, per-channel int8 weights) of "
        "the convolutions, calibrated on 8 synthetic tracklets.", "",
        "| batch | precision | MG-RAFA ms | baseline ms | MG-RAFA/baseline | speed-up vs fp32 |",
        "|---|---|---|---|---|---|", *rows, "",
        "fp16: not timed here (no GPU on this machine); see the fp16 section below, worked out on paper."])
    write_section(args.out, SECTION, body)
    print(body)


if __name__ == "__main__":
    main()
