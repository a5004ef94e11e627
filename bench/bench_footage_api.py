"""Footage through the API: cross-camera retrieval and end-to-end job speed, measured on a running service.

Renders (or reuses) the two-camera synthetic footage of bench/bench_footage.py (768x576, 40 s per camera by
default), starts ``python -m service`` on the model given, and runs the demo's footage step
(training.footage_demo): camera A's video enrolled with POST /footage, camera B's searched with
``mode=query`` against every gallery tracklet. Reported: per camera the job's frames per second (the
service's own figure: frames over the job's wall time, detection, tracking, cutting, embedding and storing
included, the upload excluded) and the wall time from the upload to the job's end, MOTA/IDF1 of the tracks
the API returns; rank-1 and mAP of camera B's tracklets against camera A's gallery; and POST /query latency
alone and while a footage job runs (footage must not starve requests).

Writes its section into bench/footage.md between the markers below (the rest of the file is left alone).

    PYTHONPATH=. .venv/bin/python -m bench.bench_footage_api --model models/demo.onnx
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import cv2
import httpx
import numpy as np

from bench.machine import load_average, machine_description
from bench.servers import free_port
from training.data.synthetic_footage import PRESETS, generate_footage
from training.footage_demo import FootageDemoResult, run_footage_demo

BEGIN, END = "<!-- footage-api:begin -->", "<!-- footage-api:end -->"
log = logging.getLogger("bench_footage_api")


def start_service(model: Path, data_dir: Path, log_path: Path, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "REID_MODEL_PATH": str(model), "REID_DATA_DIR": str(data_dir), "REID_DEVICE": "cpu",
           "REID_INTRA_OP_THREADS": str(threads)}  # fmt: skip
    env.pop("REID_API_KEY", None)
    with log_path.open("w") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "service", "--port", str(port)], env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited; see {log_path}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise TimeoutError(f"the service did not come up; see {log_path}")


def query_latencies(client: httpx.Client, count: int, until: threading.Event | None = None) -> list[float]:
    """Seconds of ``count`` POST /query requests with an 8-frame tracklet (or, with ``until``, as many as run
    before it is set, at least ``count``)."""
    rng = np.random.default_rng(0)
    frames = [("frames", (f"{index}.png", cv2.imencode(".png", rng.integers(0, 256, (128, 64, 3), np.uint8))[1]
                          .tobytes(), "image/png")) for index in range(8)]  # fmt: skip
    latencies: list[float] = []
    while len(latencies) < count or (until is not None and not until.is_set()):
        started = time.perf_counter()
        response = client.post("/query", files=frames, data={"top_k": "5"})
        latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"query failed during the fairness check: {response.status_code} {response.text}")
    return latencies


def fairness(url: str, video: Path, count: int) -> dict[str, float]:
    """Query latency alone, then while a footage job (mode=query, so nothing is stored) runs."""
    with httpx.Client(base_url=url, timeout=120.0) as client:
        alone = query_latencies(client, count)
        with video.open("rb") as file:
            job_id = client.post("/footage", files={"video": (video.name, file)},
                                 data={"camera_id": "fairness", "mode": "query"}).json()["job_id"]  # fmt: skip
        finished = threading.Event()

        def watch() -> None:
            while client.get(f"/jobs/{job_id}").json()["status"] not in ("done", "failed", "cancelled"):
                time.sleep(0.5)
            finished.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        during = query_latencies(client, count, until=finished)
        watcher.join()
    return {"alone_p50": float(np.median(alone)), "alone_p95": float(np.percentile(alone, 95)),
            "during_p50": float(np.median(during)), "during_p95": float(np.percentile(during, 95)),
            "alone_n": len(alone), "during_n": len(during)}  # fmt: skip


def section(args: argparse.Namespace, result: FootageDemoResult, width: int, height: int, load: str,
            fair: dict[str, float] | None = None) -> str:
    lines = [
        BEGIN,
        "## Footage through the API (POST /footage jobs)",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d} with `PYTHONPATH=. python -m bench.bench_footage_api "
        f"--model {args.model} --seconds {args.seconds:g}`: {width}x{height} synthetic footage, {args.seconds:g} s "
        f"per camera, weight-free detector (REID_DETECTOR=background), one footage worker, the service on the CPU "
        f"({args.threads} onnxruntime threads). Model: `{args.model}` ({args.model_note}).",
        f"Machine: {machine_description()}; load average before the run {load}.",
        "",
        "| camera | mode | frames | job fps | upload to done (s) | tracks | tracklets | MOTA | IDF1 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for camera in (result.gallery, result.query):
        progress = camera.job["progress"]
        lines.append(
            f"| {camera.camera} | {camera.job['mode']} | {progress['frames_processed']} | {progress['fps']:.1f} "
            f"| {camera.seconds:.1f} | {progress['tracks']} | {progress['tracklets']} "
            f"| {100 * camera.scores['mota']:.1f} | {100 * camera.scores['idf1']:.1f} |"
        )
    lines += [
        "",
        "Cross-camera retrieval from footage: each tracklet's identity is the ground-truth person most of its "
        "boxes overlap (IoU >= 0.5); camera B's tracklets with an identity camera A's gallery holds are the "
        "queries, ranked against every tracklet enrolled from camera A (unmatched ones stay as distractors).",
        "",
        "| gallery (cam_a tracklets) | queries (cam_b) | rank-1 | mAP |",
        "|---:|---:|---:|---:|",
        f"| {result.gallery_size} | {result.queries} | {100 * result.rank1:.1f} | {100 * result.mean_ap:.1f} |",
        "",
        *([] if fair is None else [
            "Footage beside requests: `POST /query` latency (an 8-frame 128x64 tracklet, top 5) alone, then while "
            "a footage job (camera A, mode query) runs; one client, one run.",
            "",
            "| | queries | p50 (ms) | p95 (ms) |",
            "|---|---:|---:|---:|",
            f"| alone | {fair['alone_n']} | {1000 * fair['alone_p50']:.0f} | {1000 * fair['alone_p95']:.0f} |",
            f"| during a footage job | {fair['during_n']} | {1000 * fair['during_p50']:.0f} "
            f"| {1000 * fair['during_p95']:.0f} |",
            f"| ratio | | {fair['during_p50'] / fair['alone_p50']:.2f} "
            f"| {fair['during_p95'] / fair['alone_p95']:.2f} |",
            "",
        ]),
        "Job fps is the service's own figure (frames over the job's wall time: decoding, detection, tracking, "
        "cutting, cropping, embedding through the shared batcher and storing); the footage worker runs at a "
        "lower CPU priority than requests, so a busy machine slows it first.",
        END,
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    existing = path.read_text() if path.is_file() else ""
    if BEGIN in existing and END in existing:
        head, rest = existing.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        existing = head + text + tail
    else:
        existing = (existing.rstrip("\n") + "\n\n" if existing else "") + text
    path.write_text(existing)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/demo.onnx"))
    parser.add_argument("--model-note", default="the make demo model: ResNet-18 MG-RAFA(N=4), 128x64, T=4, trained "
                        "20 epochs on the synthetic benchmark")  # fmt: skip
    parser.add_argument("--data", type=Path, default=Path("data/footage-bench"))
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads of the service")
    parser.add_argument("--out", type=Path, default=Path("bench/footage.md"))
    parser.add_argument("--fairness", type=int, default=20,
                        help="queries timed alone and during a footage job (0: skip that check)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    spec = replace(PRESETS["default"], seconds=args.seconds, seed=args.seed)
    if not (args.data / "footage_meta.json").is_file():
        log.info("rendering %.0f s of %dx%d footage per camera into %s", spec.seconds, spec.width, spec.height,
                 args.data)  # fmt: skip
        generate_footage(args.data, spec)
    load = load_average()
    with tempfile.TemporaryDirectory() as folder:
        process, url = start_service(args.model.resolve(), Path(folder) / "data", Path(folder) / "service.log",
                                     args.threads)  # fmt: skip
        try:
            fair = None
            if args.fairness:
                video = next(path for path in (args.data / "cam_a").iterdir() if path.stem == "video")
                fair = fairness(url, video, args.fairness)
            result = run_footage_demo(url, args.data)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    text = section(args, result, spec.width, spec.height, load, fair)
    print(text)
    write_section(args.out, text)


if __name__ == "__main__":
    main()
