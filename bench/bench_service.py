"""Service throughput and latency over real HTTP on loopback: enroll and query with 1, 4, 8 and 16 clients.

Starts ``python -m service`` on a free port with a gallery pre-filled with random embeddings (so searches
cost what they would in use), then for each concurrency level runs a bounded number of enrolls and then of
queries (each level also stops after a time limit). Each request uploads one tracklet of 16 JPEG frames of
256x128. Reports requests/s, p50/p99 latency seen by the client, the mean onnxruntime batch size (from
/metrics) and where the time goes, from the server's Server-Timing header: decode, embed (queue wait +
model), search or store, and the rest (HTTP, multipart parsing, thread hand-offs).

    PYTHONPATH=. .venv/bin/python bench/bench_service.py                       # ResNet-50 MG-RAFA, T=8
    PYTHONPATH=. .venv/bin/python bench/bench_service.py --models A.onnx,B.onnx

Without --models it uses the ResNet-50 export of bench_embedding.py (exporting it if missing). A benchmark
run by hand, not a test; client and server share the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import httpx
import numpy as np

from bench.machine import load_average, machine_description
from service.gallery import SqliteGallery, TrackletRecord

log = logging.getLogger("bench_service")
REPO_ROOT = Path(__file__).resolve().parents[1]
STAGES = ("decode", "embed", "search", "store")


def default_model(work_dir: Path) -> Path:
    path = work_dir / "mgrafa-r50-n4.onnx"
    if not path.is_file():
        log.info("exporting %s (ResNet-50 MG-RAFA, random weights)", path)
        subprocess.run([sys.executable, "-m", "training.export", "--random-init", "--backbone", "resnet50",
                        "--height", "256", "--width", "128", "--num-frames", "8", "--out", str(path)],
                       cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, check=True)
    return path


def make_uploads(count: int, frames: int, height: int = 256, width: int = 128) -> list[list[tuple]]:
    """``count`` different tracklets, each ``frames`` JPEG files (multipart `frames` parts)."""
    uploads = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        base = cv2.resize(rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8), (width, height))
        parts = []
        for index in range(frames):
            frame = np.roll(base, index, axis=1)
            parts.append(("frames", (f"{index:03d}.jpg", cv2.imencode(".jpg", frame)[1].tobytes(), "image/jpeg")))
        uploads.append(parts)
    return uploads


def parse_server_timing(header: str) -> dict[str, float]:
    stages = {}
    for part in header.split(","):
        match = re.match(r"\s*(\w+);dur=([\d.]+)", part)
        if match:
            stages[match.group(1)] = float(match.group(2)) / 1000.0
    return stages


def metric_value(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([\d.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


class Server:
    def __init__(self, model: Path, data_dir: Path, log_path: Path, extra_env: dict[str, str]):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        environment = {key: value for key, value in os.environ.items() if not key.startswith("REID_")}
        environment.update(PYTHONPATH=str(REPO_ROOT), REID_MODEL_PATH=str(model), REID_DATA_DIR=str(data_dir),
                           REID_DEVICE="auto", **extra_env)
        self.log_file = log_path.open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "service", "--port", str(self.port)], cwd=REPO_ROOT,
                                        env=environment, stdout=self.log_file, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log_file.close()


def run_level(server: Server, operation: str, clients: int, total: int, time_limit_s: float,
              uploads: list, counter: list[int]) -> dict:
    """``total`` requests (or as many as fit in the time limit) from ``clients`` threads."""
    lock = threading.Lock()
    issued = [0]
    records: list[tuple[float, dict[str, float], int]] = []
    deadline = time.monotonic() + time_limit_s

    def worker() -> None:
        with httpx.Client(base_url=server.url, timeout=300) as client:
            while True:
                with lock:
                    if issued[0] >= total or time.monotonic() > deadline:
                        return
                    issued[0] += 1
                    counter[0] += 1
                    number = counter[0]
                files = uploads[number % len(uploads)]
                started = time.perf_counter()
                if operation == "enroll":
                    response = client.post("/tracklets", files=files, data={"tracklet_id": f"bench-{number}",
                                                                            "camera_id": f"c{number % 6}"})
                else:
                    response = client.post("/query", files=files, data={"top_k": "10"})
                elapsed = time.perf_counter() - started
                stages = parse_server_timing(response.headers.get("server-timing", ""))
                with lock:
                    records.append((elapsed, stages, response.status_code))

    metrics_before = httpx.get(f"{server.url}/metrics").text
    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    metrics_after = httpx.get(f"{server.url}/metrics").text
    batches = metric_value(metrics_after, "reid_embed_batch_size_count") - metric_value(
        metrics_before, "reid_embed_batch_size_count")
    batched = metric_value(metrics_after, "reid_embed_batch_size_sum") - metric_value(
        metrics_before, "reid_embed_batch_size_sum")

    ok = [record for record in records if record[2] in (200, 201)]
    latencies = np.array([record[0] for record in ok]) if ok else np.array([np.nan])
    mean_latency = float(np.mean(latencies))
    fractions = {stage: float(np.mean([record[1].get(stage, 0.0) for record in ok])) / mean_latency
                 for stage in STAGES} if ok else {}
    fractions["other"] = 1.0 - sum(fractions.values()) if ok else float("nan")
    return {
        "operation": operation, "clients": clients, "requests": len(records), "ok": len(ok), "wall_s": wall,
        "per_s": len(ok) / wall, "p50_ms": float(np.percentile(latencies, 50) * 1000),
        "p99_ms": float(np.percentile(latencies, 99) * 1000), "fractions": fractions,
        "mean_batch": batched / batches if batches else float("nan"),
        "statuses": sorted({record[2] for record in records}),
    }


def bench_model(model: Path, args: argparse.Namespace, uploads: list) -> tuple[dict, list[dict]]:
    card = json.loads(model.with_suffix(".json").read_text())
    data_dir = Path(tempfile.mkdtemp(prefix="bench-service-", dir=args.work_dir))
    try:
        if args.prefill:
            store = SqliteGallery(data_dir, card["embedding"]["dim"], card["model_version"])
            rng = np.random.default_rng(0)
            for start in range(0, args.prefill, 10_000):
                count = min(10_000, args.prefill - start)
                store.add_many([TrackletRecord(id=f"prefill-{start + index}") for index in range(count)],
                               rng.standard_normal((count, card["embedding"]["dim"]), dtype=np.float32))
            store.close()
        server = Server(model, data_dir, args.work_dir / f"server-{model.stem}.log",
                        {"REID_MAX_BATCH": str(args.max_batch), "REID_MAX_WAIT_MS": str(args.max_wait_ms),
                         "REID_LOG_LEVEL": "INFO", "REID_QUEUE_SIZE": "256"})
        try:
            ready = httpx.get(f"{server.url}/readyz").json()
            log.info("server ready: %s", ready)
            counter = [0]
            rows = []
            for clients in args.clients:
                for operation in ("enroll", "query"):
                    total = max(args.min_requests, args.requests_per_client * clients)
                    row = run_level(server, operation, clients, total, args.time_limit, uploads, counter)
                    log.info("%s x%d: %.2f req/s, p50 %.0f ms, p99 %.0f ms, batch %.1f, statuses %s", operation,
                             clients, row["per_s"], row["p50_ms"], row["p99_ms"], row["mean_batch"], row["statuses"])
                    rows.append(row)
        finally:
            server.stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return {**ready, "card": card}, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="comma-separated .onnx paths (default: ResNet-50 MG-RAFA)")
    parser.add_argument("--clients", default="1,4,8,16", help="concurrency levels")
    parser.add_argument("--requests-per-client", type=int, default=3)
    parser.add_argument("--min-requests", type=int, default=12)
    parser.add_argument("--time-limit", type=float, default=45.0, help="seconds per level and operation")
    parser.add_argument("--prefill", type=int, default=10_000, help="random embeddings in the gallery first")
    parser.add_argument("--frames", type=int, default=16, help="JPEG frames per uploaded tracklet")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/reid-bench"))
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bench_service.md"))
    args = parser.parse_args(argv)
    args.clients = [int(level) for level in args.clients.split(",")]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    models = [Path(item) for item in args.models.split(",") if item] or [default_model(args.work_dir)]
    uploads = make_uploads(24, args.frames)
    upload_kib = sum(len(part[1][1]) for part in uploads[0]) / 1024
    load_before = load_average()

    sections = []
    for model in models:
        ready, rows = bench_model(model, args, uploads)
        card = ready["card"]
        section = [
            f"## {card['model']['label']} on {card['model']['backbone']}, T={card['num_frames']}, "
            f"{card['input']['height']}x{card['input']['width']}, dim {card['embedding']['dim']}",
            "",
            f"Device: embeddings on **{ready['device']}** ({', '.join(ready['providers'])}), FAISS on "
            f"{ready['index_device']}; gallery pre-filled with {args.prefill:,} random embeddings.",
            "",
            "| operation | clients | requests | req/s | p50 (ms) | p99 (ms) | mean ORT batch | decode | embed "
            "| search/store | HTTP + rest |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in rows:
            fractions = row["fractions"]
            lookup = "search" if row["operation"] == "query" else "store"
            section.append(
                f"| {row['operation']} | {row['clients']} | {row['ok']}/{row['requests']} | {row['per_s']:.2f} "
                f"| {row['p50_ms']:.0f} | {row['p99_ms']:.0f} | {row['mean_batch']:.1f} "
                f"| {100 * fractions.get('decode', 0):.0f}% | {100 * fractions.get('embed', 0):.0f}% "
                f"| {100 * fractions.get(lookup, 0):.0f}% | {100 * fractions.get('other', 0):.0f}% |"
            )
        sections += section + [""]
    load_after = load_average()

    lines = [
        "# Service throughput over HTTP (loopback)",
        "",
        f"Measured {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} with "
        f"`PYTHONPATH=. .venv/bin/python bench/bench_service.py{' --models ' + args.models if args.models else ''}`.",
        "",
        f"- Machine: {machine_description()}; no GPU, so the service chose the CPU (REID_DEVICE=auto). The "
        "client threads run on the same cores as the server.",
        f"- Load average (1/5/15 min) before: {load_before}; after: {load_after} (shared machine: other "
        "engineers' jobs ran at the same time, so absolute numbers are pessimistic and noisy).",
        f"- Each request uploads one tracklet of {args.frames} JPEG frames of 256x128 ({upload_kib:.0f} KiB) as "
        f"`frames`; enrolls then queries (top-10) per level; at most max({args.min_requests}, "
        f"{args.requests_per_client} x clients) requests or {args.time_limit:.0f} s per level. "
        f"REID_MAX_BATCH={args.max_batch}, REID_MAX_WAIT_MS={args.max_wait_ms:g}.",
        "- Time shares are means over requests from the Server-Timing header: embed includes the wait in the "
        "batching queue; 'HTTP + rest' is client latency minus the server stages (transfer, multipart parsing, "
        "thread hand-offs, SQLite reads of the early conflict check).",
        "",
        *sections,
    ]
    args.out.write_text("\n".join(lines))
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
