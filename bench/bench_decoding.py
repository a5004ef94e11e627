"""Decoding as a share of request time, and what the decoding pool gains: one run, side by side.

POST /query through the real app (in process, starlette's TestClient: multipart parsing, decoding, the
embedding batcher, an empty gallery's search), one client, with the service's own decoder (a thread pool
bounded by the cores) and with a one-thread decoder swapped in, request by request interleaved, so both see
the same load. The decode and embed times are the server's own (Server-Timing); the request time is the
client's. Models: the ResNet-50 MG-RAFA export (256x128, T=8, random weights: speed does not depend on
them) in fp32 and int8 (calibrated on the synthetic benchmark's training tracklets); exported once into
--work-dir.

    PYTHONPATH=$PWD OMP_NUM_THREADS=2 nice -n 10 python bench/bench_decoding.py \\
        --calibration data/synthetic/bbox_train --out bench/decoding.md
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from bench.machine import load_average, machine_description

log = logging.getLogger("bench_decoding")

#: (label, frames, height, width): bench_service.py's 16 frames of 256x128, and larger person crops.
UPLOADS = (("16 JPEG 256x128", 16, 256, 128), ("32 JPEG 512x256", 32, 512, 256))


def export_models(work_dir: Path, calibration: str) -> dict[str, Path]:
    import torch

    from training.export import export_model
    from training.model import build_model

    paths = {"fp32": work_dir / "r50-fp32.onnx", "int8": work_dir / "r50-int8.onnx"}
    for precision, path in paths.items():
        if not path.is_file():
            log.info("exporting %s", path)
            torch.manual_seed(0)
            model = build_model(backbone="resnet50", head="mg-rafa", granularities=4, height=256, width=128)
            export_model(model, path, num_frames=8, precision=precision,
                         calibration=calibration if precision == "int8" else None, calibration_count=8)
    return paths


def upload(frames: int, height: int, width: int, seed: int) -> list[tuple]:
    """``frames`` JPEG files of one synthetic tracklet (multipart `frames` parts)."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8), (width, height))
    return [("frames", (f"{index:03d}.jpg", cv2.imencode(".jpg", np.roll(base, index, axis=1))[1].tobytes(),
                        "image/jpeg")) for index in range(frames)]


def server_timing(header: str) -> dict[str, float]:
    stages = {}
    for part in header.split(","):
        name, _, duration = part.strip().partition(";dur=")
        if duration:
            stages[name] = float(duration) / 1000.0
    return stages


def measure(model: Path, repeats: int) -> list[dict]:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.config import Settings
    from service.decoding import TrackletDecoder
    from service.state import load_state

    rows = []
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(model_path=model, data_dir=Path(data_dir), device="cpu")
        state = load_state(settings)
        pooled = state.decoder
        serial = TrackletDecoder(pooled.height, pooled.width, pooled.num_frames, pooled.limits,
                                 test_mode=pooled.test_mode, max_clips=pooled.max_clips, workers=1)
        decoders = {f"pool of {pooled.workers}": pooled, "1 thread": serial}
        with TestClient(create_app(settings, state)) as client:
            for label, frames, height, width in UPLOADS:
                files = [upload(frames, height, width, seed) for seed in range(repeats + 1)]
                times = {name: {"request": [], "decode": [], "embed": []} for name in decoders}
                for index, parts in enumerate(files):
                    for name, decoder in decoders.items():  # interleaved, request by request
                        state.decoder = decoder
                        started = time.perf_counter()
                        response = client.post("/query", files=parts, data={"top_k": "5"})
                        elapsed = time.perf_counter() - started
                        response.raise_for_status()
                        if index == 0:
                            continue  # warm-up
                        stages = server_timing(response.headers["server-timing"])
                        times[name]["request"].append(elapsed)
                        times[name]["decode"].append(stages["decode"])
                        times[name]["embed"].append(stages["embed"])
                state.decoder = pooled
                for name in decoders:
                    median = {key: float(np.median(value)) for key, value in times[name].items()}
                    share = float(np.median(np.array(times[name]["decode"]) / np.array(times[name]["request"])))
                    rows.append({"upload": label, "decoder": name, "share": share, **median})
        serial.close()
        state.close()
    return rows


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser()
    parser.add_argument("--calibration", required=True, help="tracklet folders calibrating the int8 export")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "reid-bench-decoding")
    parser.add_argument("--repeats", type=int, default=8, help="timed requests per upload and decoder")
    parser.add_argument("--out", type=Path, default=Path("bench/decoding.md"))
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    models = export_models(args.work_dir, args.calibration)
    loads = [load_average()]
    lines = []
    for precision, path in models.items():
        rows = measure(path, args.repeats)
        loads.append(load_average())
        by_upload = {}
        for row in rows:
            by_upload.setdefault(row["upload"], []).append(row)
        for upload_label, (pool, one) in by_upload.items():
            for row in (pool, one):
                lines.append(
                    f"| {precision} | {upload_label} | {row['decoder']} | {row['request'] * 1000:.0f} | "
                    f"{row['decode'] * 1000:.1f} | {row['embed'] * 1000:.0f} | {100 * row['share']:.1f}% | "
                    + (f"{one['decode'] / pool['decode']:.2f}x | {one['request'] / pool['request']:.3f}x |"
                       if row is pool else "1.00x | 1.000x |"))
    text = "\n".join([
        "# Decoding: its share of request time, and the decoding pool (bench/bench_decoding.py, one run)", "",
        machine_description(), f"Load average (1/5/15 min) before and after each model: {' -> '.join(loads)}", "",
        "POST /query (1 client, in process through the whole app; empty gallery), ResNet-50 MG-RAFA 256x128, "
        "T=8, test-time mode strided (16 frames = 2 clips, 32 frames = 4 clips, every frame decoded). "
        f"Medians of {args.repeats} requests per row; the pool and the one-thread decoder alternate request "
        "by request. decode and embed are the server's Server-Timing stages (embed includes the batcher's "
        "wait); share = decode / request time, per request, median.", "",
        "| model | upload | decoder | request ms | decode ms | embed ms | decode share | decode speed-up "
        "| request speed-up |",
        "|---|---|---|---|---|---|---|---|---|", *lines, ""])
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
