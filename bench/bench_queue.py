"""Footage throughput on the Redis queue (REID_JOB_QUEUE=redis) with 1 and 2 workers.

Renders (or reuses) the two-camera synthetic footage of bench/bench_footage.py (768x576, 10 fps), starts
Debian's redis-server, a Milvus Lite server and one API process (`python -m service`), then for each worker
count N: starts N `python -m service.worker` processes (each with REID_INTRA_OP_THREADS=1), uploads the same
batch of jobs (the two cameras' videos, alternately, in enroll mode) and waits until all are done.

Reported per N: the wall time from the first upload to the last job's end, the throughput (frames of all
jobs / that wall time), each job's own fps, and the CPU time the workers used per frame (from
/proc/<pid>/stat: all their threads), which other processes on a shared machine do not inflate, so
1000 / (CPU ms per frame) is the frame rate one dedicated core gives a worker, and the CPU the workers got
(cores used = CPU seconds / wall seconds). Writes its section of bench/queue.md between the markers below;
the notes under it (what more cores would give) are written by hand from those figures.

    PYTHONPATH=. .venv/bin/python -m bench.bench_queue --model MODEL.onnx --workers 1,2 --jobs 4 --out bench/queue.md
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import httpx

from bench.machine import load_average, machine_description
from bench.servers import free_port, start_listening
from training.data.synthetic_footage import PRESETS, generate_footage

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BEGIN, END = "<!-- bench-queue:begin -->", "<!-- bench-queue:end -->"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads, so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def environment(model: Path, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("REID_")}
    env.update(PYTHONPATH=str(Path(__file__).resolve().parents[1]), REID_MODEL_PATH=str(model),
               REID_DATA_DIR=str(data_dir), REID_DEVICE="cpu", REID_INTRA_OP_THREADS="1", REID_LOG_LEVEL="WARNING",
               REID_MAX_FOOTAGE_BYTES=str(2**31), **extra)  # fmt: skip
    return env


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def registered_workers(redis_url: str) -> int:
    from rq import Worker

    from service.footage.queue import redis_client

    return len(Worker.all(connection=redis_client(redis_url, text=False)))


def run_batch(client: httpx.Client, videos: list[Path], jobs: int, camera_prefix: str) -> tuple[float, list[dict]]:
    """Uploads ``jobs`` jobs (the videos in turn) and waits for all; returns the wall time and the jobs."""
    started = time.monotonic()
    ids = []
    for index in range(jobs):
        video = videos[index % len(videos)]
        with video.open("rb") as file:
            answer = client.post("/footage", files={"video": (video.name, file)},
                                 data={"camera_id": f"{camera_prefix}-{index}"})  # fmt: skip
        answer.raise_for_status()
        ids.append(answer.json()["job_id"])
    done = {}
    while len(done) < len(ids):
        for job_id in ids:
            if job_id not in done:
                job = client.get(f"/jobs/{job_id}").json()
                if job["status"] in ("done", "failed", "cancelled"):
                    if job["status"] != "done":
                        raise RuntimeError(f"job {job_id} ended {job['status']}: {job['error']}")
                    done[job_id] = job
        time.sleep(0.2)
    return time.monotonic() - started, [done[job_id] for job_id in ids]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--workers", default="1,2", help="worker counts to measure, comma-separated")
    parser.add_argument("--jobs", type=int, default=4, help="jobs per batch (the cameras' videos in turn)")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of footage per camera")
    parser.add_argument("--data", type=Path, default=None, help="rendered footage to reuse (else rendered)")
    parser.add_argument("--out", type=Path, default=Path("bench/queue.md"))
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    data = args.data or work / "footage"
    if not (data / "footage_meta.json").is_file():
        generate_footage(data, replace(PRESETS["default"], seconds=args.seconds))
    meta = json.loads((data / "footage_meta.json").read_text())
    videos = [data / camera["video"] for camera in meta["cameras"].values()]
    spec = meta["spec"]

    processes: list[subprocess.Popen] = []
    try:
        redis_port, milvus_port = free_port(), free_port()
        processes.append(start_listening(
            [shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(work)], redis_port, "redis-server", work / "redis.log"))
        milvus = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(work / "milvus"), "--host",
                  "127.0.0.1", "--port", str(milvus_port)]  # fmt: skip
        processes.append(start_listening(milvus, milvus_port, "milvus_lite server", work / "milvus.log", timeout_s=120))
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        shared = {"REID_JOB_QUEUE": "redis", "REID_REDIS_URL": redis_url, "REID_GALLERY_BACKEND": "milvus",
                  "REID_MILVUS_URI": f"http://127.0.0.1:{milvus_port}",
                  "REID_MILVUS_COLLECTION": f"bench_{uuid.uuid4().hex[:8]}", "REID_FOOTAGE_QUEUE_SIZE": "64"}
        api_port = free_port()
        with (work / "api.log").open("wb") as log:
            api = subprocess.Popen([sys.executable, "-m", "service", "--port", str(api_port)],
                                   env=environment(args.model, work / "data", **shared), stdout=log,
                                   stderr=subprocess.STDOUT)  # fmt: skip
        processes.append(api)
        client = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=120)

        def ready() -> bool:
            try:
                return client.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 240, "the API")
        rows = []
        load_before = load_average()
        for count in [int(item) for item in args.workers.split(",")]:
            workers = []
            for index in range(count):
                with (work / f"worker-{count}-{index}.log").open("wb") as log:
                    workers.append(subprocess.Popen(
                        [sys.executable, "-m", "service.worker", "--name", f"bench-{count}-{index}"],
                        env=environment(args.model, work / "data", **shared), stdout=log, stderr=subprocess.STDOUT))
            processes.extend(workers)
            wait_for(lambda: registered_workers(redis_url) == count, 240, f"{count} workers")  # noqa: B023
            cpu_before = [cpu_seconds(worker.pid) for worker in workers]
            wall, jobs = run_batch(client, videos, args.jobs, f"w{count}")
            cpu = sum(cpu_seconds(worker.pid) for worker in workers) - sum(cpu_before)
            frames = sum(job["progress"]["frames_processed"] for job in jobs)
            rows.append({"workers": count, "jobs": len(jobs), "frames": frames, "wall": wall,
                         "fps": frames / wall, "job_fps": [job["progress"]["fps"] for job in jobs],
                         "cpu_ms": 1000 * cpu / frames, "cores": cpu / wall,
                         "tracklets": sum(len(job["result"]["tracklets"]) for job in jobs),
                         "load": load_average()})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(60)
            wait_for(lambda: registered_workers(redis_url) == 0, 60, "the workers to stop")
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
    write_table(args, spec, rows, load_before)


def write_table(args: argparse.Namespace, spec: dict, rows: list[dict], load_before: str) -> None:
    base = rows[0]
    lines = [
        BEGIN,
        "# Footage throughput on the Redis queue: 1 and 2 workers (bench/bench_queue.py)",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {machine_description()}; load average "
        f"{load_before} before the runs (the machine is shared with other jobs).",
        "",
        f"Each run: {rows[0]['jobs']} footage jobs (enroll) uploaded at once through one API replica, the two "
        f"synthetic cameras' videos in turn ({spec['width']}x{spec['height']}, {spec['fps']:g} fps, "
        f"{spec['seconds']:g} s each, weight-free detector), run by N `python -m service.worker` processes "
        "(one onnxruntime thread each) on RQ / redis-server, the gallery on a Milvus Lite server, media on the "
        f"local disk. Model: `{args.model.name}`. Command:",
        "",
        "    PYTHONPATH=. .venv/bin/python -m bench.bench_queue " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "",
        "| workers | jobs | frames | wall (s) | throughput (frames/s) | speed-up | per-job fps | worker CPU ms/frame "
        "| fps per dedicated core | cores the workers got | tracklets | load average after |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['workers']} | {row['jobs']} | {row['frames']} | {row['wall']:.1f} | {row['fps']:.1f} | "
            f"{row['fps'] / base['fps']:.2f} | {', '.join(f'{fps:.1f}' for fps in row['job_fps'])} | "
            f"{row['cpu_ms']:.1f} | {1000 / row['cpu_ms']:.0f} | {row['cores']:.2f} | {row['tracklets']} | "
            f"{row['load']} |"
        )
    lines.append(END)
    text = args.out.read_text() if args.out.is_file() else ""
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + "\n".join(lines) + text[text.index(END) + len(END):]
    else:
        text = "\n".join(lines) + "\n" + text
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
