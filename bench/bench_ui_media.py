"""What the web page's media cost the service: enroll time and disk with REID_STORE_FRAMES on and off, and
an attention overlay's first (rendered) and later (cached) request.

    python -m bench.bench_ui_media [--model M.onnx] [--enrolls 20] [--out bench/ui_media.md]

Without --model it exports a random-init ResNet-18 MG-RAFA at 256x128, T=8 (the paper's input size; the
head's attention outputs are in the export by default). Runs the app in-process (FastAPI TestClient).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from fastapi.testclient import TestClient

from bench.machine import load_average, machine_description
from service.app import create_app
from service.config import Settings
from service.media import MediaStore


def write_frames_ms(work: Path, height: int, width: int, frames: int = 8, repeats: int = 30) -> float:
    """Median time of MediaStore.write_frames (encode + fsync'd writes) for one tracklet's frames alone: the
    cost an enroll pays for keeping them, without the noise of the whole request."""
    store = MediaStore(work / "write-frames")
    clip = np.random.default_rng(0).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    seconds = []
    for index in range(repeats):
        started = time.perf_counter()
        store.write_frames(f"t{index}", clip)
        seconds.append(time.perf_counter() - started)
    return 1000 * statistics.median(seconds)


def frames_files(seed: int, count: int, height: int, width: int) -> list:
    rng = np.random.default_rng(seed)
    pattern = rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)
    base = cv2.resize(pattern, (width, height), interpolation=cv2.INTER_NEAREST)
    files = []
    for index in range(count):
        ok, data = cv2.imencode(".jpg", np.roll(base, index, axis=1))
        files.append(("frames", (f"f{index:03d}.jpg", data.tobytes(), "image/jpeg")))
    return files


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def measure(model: Path, work: Path, store_frames: bool, enrolls: int) -> dict:
    settings = Settings(model_path=model, data_dir=work / f"frames-{store_frames}", device="cpu", max_wait_ms=0,
                        store_frames=store_frames, _env_file=None)  # fmt: skip
    with TestClient(create_app(settings)) as client:
        card = client.get("/model").json()
        height, width = card["input"]["height"], card["input"]["width"]
        client.post("/tracklets", files=frames_files(999, 16, height, width))  # warm-up
        seconds = []
        for index in range(enrolls):
            files = frames_files(index, 16, height, width)
            started = time.perf_counter()
            response = client.post("/tracklets", files=files, data={"tracklet_id": f"t{index}"})
            seconds.append(time.perf_counter() - started)
            assert response.status_code == 201, response.text
        result = {"enroll_ms": 1000 * statistics.median(seconds),
                  "frames_kib": folder_bytes(settings.data_dir / "frames") / 1024 / (enrolls + 1)}  # fmt: skip
        if store_frames and card["attention_outputs"]:
            first, cached, png = [], [], []
            for index in range(min(enrolls, 10)):
                started = time.perf_counter()
                response = client.get(f"/tracklets/t{index}/attention/1")
                first.append(time.perf_counter() - started)
                png.append(len(response.content))
                started = time.perf_counter()
                client.get(f"/tracklets/t{index}/attention/1")
                cached.append(time.perf_counter() - started)
            result.update(attention_first_ms=1000 * statistics.median(first),
                          attention_cached_ms=1000 * statistics.median(cached),
                          attention_png_kib=statistics.median(png) / 1024)  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--enrolls", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench/ui_media.md"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        model = args.model
        if model is None:
            model = work / "model.onnx"
            subprocess.run([sys.executable, "-m", "training.export", "--random-init", "--backbone", "resnet18",
                            "--num-frames", "8", "--out", str(model)], check=True, capture_output=True)  # fmt: skip
        off = measure(model, work, False, args.enrolls)
        on = measure(model, work, True, args.enrolls)
        card = json.loads(model.with_suffix(".json").read_text())
        height, width, frames = card["input"]["height"], card["input"]["width"], card["num_frames"]
        write_ms = write_frames_ms(work, height, width, frames)
    lines = [
        "# Web page media: frames and attention overlays",
        "",
        f"Machine: {machine_description()}; load average {load_average()}.",
        f"Command: `python -m bench.bench_ui_media --enrolls {args.enrolls}`"
        + (f" --model {args.model}" if args.model else " (random-init ResNet-18 MG-RAFA, 256x128, T=8)") + ".",
        "Enrolls of 16 JPEG frames through the app in-process, one at a time; medians.",
        "",
        "| REID_STORE_FRAMES | enroll (ms) | frames on disk per tracklet (KiB) |",
        "|---|---:|---:|",
        f"| false | {off['enroll_ms']:.1f} | {off['frames_kib']:.1f} |",
        f"| true | {on['enroll_ms']:.1f} | {on['frames_kib']:.1f} |",
        "",
        f"Enroll with frames kept: {on['enroll_ms'] / off['enroll_ms']:.2f}x the time without (whole requests on a "
        f"shared machine: the noise is larger than the difference). Keeping the {frames} frames alone "
        f"(`MediaStore.write_frames`: JPEG encode and fsync'd writes of random {height}x{width} frames) takes "
        f"{write_ms:.1f} ms, median of 30.",
    ]
    if "attention_first_ms" in on:
        lines += [
            "",
            "| attention overlay (granularity 1) | ms |",
            "|---|---:|",
            f"| first request (onnxruntime on the stored frames + render + PNG) | {on['attention_first_ms']:.1f} |",
            f"| later requests (cached PNG) | {on['attention_cached_ms']:.1f} |",
            "",
            f"PNG size {on['attention_png_kib']:.1f} KiB. Rendering at enroll time would add the first-request "
            "time to every enroll, for every granularity, whether or not anyone looks; on request it is paid "
            "once per tracklet and granularity viewed.",
        ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
