"""Enroll latency with the media on the local disk vs in S3 (REID_MEDIA_BACKEND=local / s3), for a small
tracklet: the whole POST /tracklets and its "store" stage (media writes + the record), medians and p90.

    python -m bench.bench_media_store [--model M.onnx] [--enrolls 40] [--out bench/media_store.md]

The S3 side runs against moto's standalone S3 server (`python -m moto.server`, pip's moto[server]) started
here on a loopback port: an emulator (objects in memory, no disk), because no real S3 server (MinIO) can be
installed on this machine. It measures the service's own S3 path (boto3 requests over HTTP to a local
server), not MinIO's or AWS's storage latency. Without --model it exports a random-init ResNet-18 MG-RAFA at
64x32, T=4, so that embedding does not drown the storage. Runs the app in-process (FastAPI TestClient).
"""

from __future__ import annotations

import argparse
import os
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
from bench.servers import free_port, start_listening
from service.app import create_app
from service.config import Settings

FRAMES = 6


def start_moto(log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = start_listening([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port,
                              "moto server", log)  # fmt: skip
    return process, f"http://127.0.0.1:{port}"


def frames_files(seed: int, height: int = 96, width: int = 48) -> list:
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (12, 6, 3), dtype=np.uint8), (width, height),
                      interpolation=cv2.INTER_NEAREST)  # fmt: skip
    return [("frames", (f"f{index}.png", cv2.imencode(".png", np.roll(base, index, axis=1))[1].tobytes(), "image/png"))
            for index in range(FRAMES)]  # fmt: skip


def stage_ms(header: str, name: str) -> float:
    for part in header.split(","):
        stage, _, duration = part.strip().partition(";dur=")
        if stage == name:
            return float(duration)
    raise KeyError(name)


def measure(settings: Settings, enrolls: int) -> dict[str, list[float]]:
    total, store = [], []
    with TestClient(create_app(settings)) as client:
        for index in range(-3, enrolls):  # three warm-up enrolls (connection pool, bucket, caches)
            files = frames_files(index + 3)
            started = time.perf_counter()
            response = client.post("/tracklets", files=files, data={"tracklet_id": f"t{index + 3}"})
            elapsed = time.perf_counter() - started
            assert response.status_code == 201, response.text
            if index >= 0:
                total.append(1000 * elapsed)
                store.append(stage_ms(response.headers["server-timing"], "store"))
    return {"total": total, "store": store}


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--enrolls", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("bench/media_store.md"))
    args = parser.parse_args(argv)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")  # moto accepts any key
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        model = args.model
        if model is None:
            model = work / "model.onnx"
            subprocess.run([sys.executable, "-m", "training.export", "--random-init", "--backbone", "resnet18",
                            "--height", "64", "--width", "32", "--num-frames", "4", "--out", str(model)],
                           check=True, capture_output=True)  # fmt: skip
        common = {"model_path": model, "device": "cpu", "intra_op_threads": 1, "max_wait_ms": 0, "_env_file": None}
        moto, endpoint = start_moto(work / "moto.log")
        try:
            # Interleaved rounds, so a change in the shared machine's load hits both backends alike.
            samples = {"local": {"total": [], "store": []}, "s3": {"total": [], "store": []}}
            rounds = 2
            for round_index in range(rounds):
                for backend in ("local", "s3"):
                    settings = Settings(data_dir=work / f"{backend}-{round_index}", media_backend=backend,
                                        s3_endpoint=endpoint, s3_bucket=f"bench-{round_index}", **common)  # fmt: skip
                    measured = measure(settings, args.enrolls // rounds)
                    for key, values in measured.items():
                        samples[backend][key] += values
            results = samples
        finally:
            moto.terminate()
            moto.wait(20)
    local, s3 = results["local"], results["s3"]
    lines = [
        "# Enroll latency: media on the local disk vs in S3",
        "",
        f"Machine: {machine_description()}; load average {load_average()} (a machine shared with other work).",
        f"Command: `python -m bench.bench_media_store --enrolls {args.enrolls}`"
        + (f" --model {args.model}" if args.model else " (random-init ResNet-18 MG-RAFA, 64x32, T=4)") + ".",
        f"A small tracklet: {FRAMES} PNG frames of 96x48 per POST /tracklets, one request at a time, app in-process; "
        f"{len(local['total'])} enrolls per backend in {2} interleaved rounds, after 3 warm-up enrolls each. "
        "Each enroll writes the model's T frames and a thumbnail (T + 1 media writes), then the SQLite record.",
        "",
        "| REID_MEDIA_BACKEND | enroll p50 (ms) | enroll p90 (ms) | store stage p50 (ms) | store stage p90 (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in (("local", local), ("s3 (moto server, loopback)", s3)):
        lines.append(f"| {name} | {statistics.median(values['total']):.1f} | {p90(values['total']):.1f} | "
                     f"{statistics.median(values['store']):.1f} | {p90(values['store']):.1f} |")  # fmt: skip
    difference = statistics.median(s3["store"]) - statistics.median(local["store"])
    ratio = statistics.median(s3["total"]) / statistics.median(local["total"])
    lines += [
        "",
        f"S3 adds {difference:.1f} ms to the store stage at the median (the whole enroll: {ratio:.2f}x)."
        " Caveat: moto is an in-memory emulator on the same host, so this is the cost of the "
        "service's S3 requests (boto3 over HTTP: two listings that clear earlier frames and overlays, then the "
        "T + 1 PUTs, each step's requests sent at once) without a network or a real server's disk, and moto "
        "shares the 2 loaded cores with the service. MinIO on a LAN adds about two round trips and its own "
        "fsync per object; the local backend's figure already includes an fsync per file.",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
