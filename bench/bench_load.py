"""Mixed load on a real server over loopback: 16 concurrent clients enrolling, querying, reading and
deleting for a fixed time (and at most a fixed number of requests), then a check that no acknowledged
enroll was lost, and the server's memory over the run.

Each client is an asyncio task with its own keep-alive connection. The mix per request: enroll 30 %,
query by media 40 %, query by an enrolled tracklet_id 15 %, get or list 10 %, delete one of its own
enrolls 5 %. Every tracklet is 8 JPEG frames of 128x64 from a pool of 64. The API key is on, so every
request pays for authentication as in production.

Reported: requests and requests/s, p50/p99 latency per operation (client side), status counts, 5xx and
transport errors, lost enrolls (acknowledged with 201, not deleted, yet absent afterwards), the server's
RSS after warm-up, at the end and at its peak, and the gallery size.

    PYTHONPATH=. .venv/bin/python bench/bench_load.py                  # 90 s, writes nothing
    PYTHONPATH=. .venv/bin/python bench/bench_load.py --write          # and records bench/load.md
    PYTHONPATH=. .venv/bin/python bench/bench_load.py --duration 600   # the 10-minute soak

A benchmark run by hand; tests/reliability/test_reliability_load.py runs the same code for ~12 s in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import cv2
import httpx
import numpy as np

from bench.bench_service import Server
from bench.machine import machine_description

log = logging.getLogger("bench_load")
REPO_ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench-load-key"
OPERATIONS = ("enroll", "query_media", "query_id", "read", "delete")
MIX = (0.30, 0.40, 0.15, 0.10, 0.05)


@dataclass
class LoadConfig:
    clients: int = 16
    duration_s: float = 90.0
    max_requests: int = 100_000
    frames_per_tracklet: int = 8
    frame_height: int = 128
    frame_width: int = 64
    pool_size: int = 64
    warmup_requests: int = 32
    seed: int = 0


@dataclass
class LoadResult:
    config: LoadConfig
    wall_s: float
    requests: int
    statuses: dict[str, int]
    per_operation: dict[str, dict[str, float]]
    server_errors: int
    transport_errors: int
    acknowledged_enrolls: int
    acknowledged_deletes: int
    lost_enrolls: list[str]
    deleted_but_present: list[str]
    gallery_size: int
    serving: dict[str, object]
    rss_mib: dict[str, float]
    rss_samples_mib: list[float] = field(default_factory=list)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s


def make_tracklets(config: LoadConfig) -> list[list[tuple]]:
    """``pool_size`` different tracklets as multipart `frames` parts (JPEG, like camera crops)."""
    pool = []
    for seed in range(config.pool_size):
        rng = np.random.default_rng(seed)
        base = cv2.resize(rng.integers(0, 256, (config.frame_height // 8, config.frame_width // 8, 3), np.uint8),
                          (config.frame_width, config.frame_height), interpolation=cv2.INTER_NEAREST)
        parts = []
        for index in range(config.frames_per_tracklet):
            encoded = cv2.imencode(".jpg", np.roll(base, index, axis=1))[1].tobytes()
            parts.append(("frames", (f"{index:03d}.jpg", encoded, "image/jpeg")))
        pool.append(parts)
    return pool


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class _Run:
    """The shared state of one load run (one event loop, so no locks)."""

    def __init__(self, config: LoadConfig, pool: list[list[tuple]]):
        self.config = config
        self.pool = pool
        self.issued = 0
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.statuses: Counter[str] = Counter()
        self.transport_errors = 0
        self.server_errors: list[str] = []
        self.enrolled: set[str] = set()  # acknowledged and not deleted
        self.deleted: set[str] = set()
        self.uncertain: set[str] = set()  # a write whose answer never came

    def take_ticket(self, deadline: float) -> bool:
        if self.issued >= self.config.max_requests or time.monotonic() > deadline:
            return False
        self.issued += 1
        return True


async def _client(run: _Run, client: httpx.AsyncClient, number: int, deadline: float) -> None:
    rng = random.Random(run.config.seed * 1000 + number)
    mine: list[str] = []
    counter = 0
    while run.take_ticket(deadline):
        operation = rng.choices(OPERATIONS, MIX)[0]
        if operation in ("query_id", "delete") and not mine:
            operation = "enroll"
        tracklet = run.pool[rng.randrange(len(run.pool))]
        target = None
        started = time.perf_counter()
        try:
            if operation == "enroll":
                counter += 1
                target = f"c{number}-{counter}"
                run.uncertain.add(target)
                response = await client.post("/tracklets", files=tracklet, data={
                    "tracklet_id": target, "camera_id": f"cam{number % 6}", "person_id": f"p{counter % 50}"})
            elif operation == "query_media":
                response = await client.post("/query", files=tracklet, data={"top_k": "10"})
            elif operation == "query_id":
                response = await client.post("/query", data={"tracklet_id": rng.choice(mine), "top_k": "10"})
            elif operation == "read":
                if mine and rng.random() < 0.5:
                    response = await client.get(f"/tracklets/{rng.choice(mine)}")
                else:
                    response = await client.get("/tracklets", params={"limit": "50"})
            else:
                target = mine.pop(rng.randrange(len(mine)))
                run.uncertain.add(target)
                response = await client.delete(f"/tracklets/{target}")
        except httpx.TransportError as error:
            run.transport_errors += 1
            run.server_errors.append(f"{operation}: {type(error).__name__}")
            continue
        elapsed = time.perf_counter() - started
        run.statuses[str(response.status_code)] += 1
        if response.status_code >= 500:
            run.server_errors.append(f"{operation}: {response.status_code} {response.text[:200]}")
            continue
        run.latencies[operation].append(elapsed)
        if operation == "enroll" and response.status_code == 201:
            run.uncertain.discard(target)
            run.enrolled.add(target)
            mine.append(target)
        elif operation == "delete" and response.status_code == 204:
            run.uncertain.discard(target)
            run.enrolled.discard(target)
            run.deleted.add(target)


async def _sample_rss(pid: int, samples: list[float], stop: asyncio.Event, every_s: float = 1.0) -> None:
    while not stop.is_set():
        samples.append(rss_mib(pid))
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except asyncio.TimeoutError:
            pass


async def _all_ids(client: httpx.AsyncClient) -> set[str]:
    ids: set[str] = set()
    offset = 0
    while True:
        page = (await client.get("/tracklets", params={"limit": "1000", "offset": str(offset)})).json()
        ids |= {item["id"] for item in page["items"]}
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return ids


async def run_load(url: str, server_pid: int, config: LoadConfig) -> LoadResult:
    """Runs the load against a started server and checks the gallery afterwards."""
    pool = make_tracklets(config)
    run = _Run(config, pool)
    limits = httpx.Limits(max_connections=config.clients + 2, max_keepalive_connections=config.clients + 2)
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": API_KEY}, timeout=120.0,
                                 limits=limits) as client:
        # Warm-up (first onnxruntime runs, allocator growth) before the memory baseline.
        warm = _Run(LoadConfig(**{**asdict(config), "max_requests": config.warmup_requests}), pool)
        await asyncio.gather(*(_client(warm, client, 1000 + index, time.monotonic() + 60)
                               for index in range(config.clients)))
        for tracklet_id in warm.enrolled:
            await client.delete(f"/tracklets/{tracklet_id}")
        samples: list[float] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample_rss(server_pid, samples, stop))
        started = time.perf_counter()
        deadline = time.monotonic() + config.duration_s
        await asyncio.gather(*(_client(run, client, index, deadline) for index in range(config.clients)))
        wall = time.perf_counter() - started
        stop.set()
        await sampler
        rss_end = rss_mib(server_pid)
        present = await _all_ids(client)
        ready = (await client.get("/readyz")).json()

    per_operation = {}
    for operation in OPERATIONS:
        latencies = np.array(run.latencies.get(operation, []))
        if latencies.size:
            per_operation[operation] = {
                "count": int(latencies.size), "per_s": latencies.size / wall,
                "p50_ms": float(np.percentile(latencies, 50) * 1000),
                "p99_ms": float(np.percentile(latencies, 99) * 1000),
            }
    return LoadResult(
        config=config, wall_s=wall, requests=sum(run.statuses.values()), statuses=dict(run.statuses),
        per_operation=per_operation, server_errors=len(run.server_errors) - run.transport_errors,
        transport_errors=run.transport_errors,
        acknowledged_enrolls=len(run.enrolled) + len(run.deleted),
        acknowledged_deletes=len(run.deleted),
        lost_enrolls=sorted(run.enrolled - run.uncertain - present),
        deleted_but_present=sorted((run.deleted - run.uncertain) & present),
        gallery_size=ready["gallery_size"],
        serving={"device": ready["device"], "providers": ready["providers"], "index_device": ready["index_device"]},
        rss_mib={"start": samples[0], "end": rss_end, "peak": max([*samples, rss_end])},
        rss_samples_mib=samples,
    )


def default_model(work_dir: Path) -> Path:
    """A randomly initialised ResNet-18 MG-RAFA, 128x64, T=8 (exported once into ``work_dir``)."""
    path = work_dir / "mgrafa-r18-128x64-t8.onnx"
    if not path.is_file():
        log.info("exporting %s", path)
        subprocess.run([sys.executable, "-m", "training.export", "--random-init", "--backbone", "resnet18",
                        "--height", "128", "--width", "64", "--num-frames", "8", "--out", str(path)],
                       cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, check=True)
    return path


def server_environment(intra_op_threads: int = 1) -> dict[str, str]:
    # REID_DEVICE stays "auto" (bench_service.Server sets it): CPU here, the GPU where there is one.
    return {"REID_API_KEY": API_KEY, "REID_INTRA_OP_THREADS": str(intra_op_threads), "REID_LOG_LEVEL": "WARNING"}


def render_markdown(result: LoadResult, model: Path, command: str) -> str:
    card = json.loads(model.with_suffix(".json").read_text())
    config = result.config
    rss = result.rss_mib
    # One RSS sample a second; about 20 of them shown (every 15 s for the 90 s run, every 30 s for a soak).
    step = max(15, round(len(result.rss_samples_mib) / 20 / 15) * 15)
    lines = [
        "# Load test: mixed traffic, 16 concurrent clients",
        "",
        f"Recorded {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} with `{command}`.",
        "",
        f"- Machine: {machine_description()}; embeddings on {result.serving['device']} "
        f"({', '.join(result.serving['providers'])}), FAISS on {result.serving['index_device']}, "
        "REID_INTRA_OP_THREADS=1; client and server share the cores, over loopback.",
        f"- Model: {card['model']['label']} on {card['model']['backbone']}, {card['input']['height']}x"
        f"{card['input']['width']}, T={card['num_frames']}, dim {card['embedding']['dim']} (random weights).",
        f"- Traffic: {config.clients} asyncio clients, keep-alive, API key on; each request picks enroll 30 %, "
        "query by media 40 %, query by tracklet_id 15 %, get/list 10 %, delete 5 %; tracklets of "
        f"{config.frames_per_tracklet} JPEG frames of {config.frame_height}x{config.frame_width}; "
        f"{config.duration_s:.0f} s or {config.max_requests} requests, whichever first, after "
        f"{config.warmup_requests} warm-up requests.",
        "",
        "| operation | requests | req/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for operation, figures in result.per_operation.items():
        lines.append(f"| {operation} | {figures['count']} | {figures['per_s']:.1f} | {figures['p50_ms']:.0f} | "
                     f"{figures['p99_ms']:.0f} |")
    lines += [
        f"| **all** | **{result.requests}** | **{result.requests_per_s:.1f}** | | |",
        "",
        f"- Wall time {result.wall_s:.1f} s; statuses {dict(sorted(result.statuses.items()))}.",
        f"- 5xx: **{result.server_errors}**; transport errors: **{result.transport_errors}**.",
        f"- Enrolls acknowledged: {result.acknowledged_enrolls} ({result.acknowledged_deletes} deleted again); "
        f"lost: **{len(result.lost_enrolls)}**; deleted but still listed: **{len(result.deleted_but_present)}**; "
        f"gallery at the end: {result.gallery_size}.",
        f"- Server RSS: {rss['start']:.0f} MiB after warm-up, {rss['end']:.0f} MiB at the end "
        f"(+{rss['end'] - rss['start']:.1f} MiB), peak {rss['peak']:.0f} MiB; every {step} s: "
        f"{', '.join(f'{value:.0f}' for value in result.rss_samples_mib[::step])} MiB. Bound asserted by the CI "
        "version of this run (tests/reliability/test_reliability_load.py): growth under 64 MiB.",
        "",
        "Clients read, query and delete only their own enrolls and ids are unique, so every request is "
        "expected to succeed: any status other than 200/201/204 would show above. The same code path runs in CI "
        "for about 12 s (`tests/reliability/test_reliability_load.py`), asserting zero 5xx, zero lost enrolls "
        "and the RSS bound.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="ONNX model (default: a ResNet-18 export)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=90.0, help="seconds of load (default 90)")
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "reid-bench-load")
    parser.add_argument("--write", action="store_true", help="write bench/load.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    args.work_dir.mkdir(parents=True, exist_ok=True)
    model = args.model or default_model(args.work_dir)
    config = LoadConfig(clients=args.clients, duration_s=args.duration, max_requests=args.max_requests)
    with tempfile.TemporaryDirectory(dir=args.work_dir) as folder:
        server = Server(model, Path(folder) / "gallery", Path(folder) / "server.log", server_environment())
        try:
            result = asyncio.run(run_load(server.url, server.process.pid, config))
        finally:
            server.stop()
    command = "PYTHONPATH=. .venv/bin/python bench/bench_load.py" + (f" --duration {args.duration:g}"
                                                                      if args.duration != 90 else "")
    report = render_markdown(result, model, command)
    print(report)
    if args.write:
        (REPO_ROOT / "bench" / "load.md").write_text(report)
    return 0 if result.server_errors == 0 and not result.lost_enrolls and not result.transport_errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
