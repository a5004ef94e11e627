"""Footage jobs on the Redis queue (REID_JOB_QUEUE=redis) across real processes: two API replicas and
`python -m service.worker` processes, sharing a redis-server, a Milvus Lite server and, for now, the data
directory (media and the spool), all started here as a user would. A job submitted through one replica is
polled, listed and cancelled through the other; a worker killed with SIGKILL mid-job leaves the job failed
with the reason, listing exactly what the gallery holds from it. The single-host default (local) needs no
Redis at all."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from footage_media import staggered_walkers, street_frames, video_bytes, wait_for_job
from live_server import REPO_ROOT, live_server, server_environment

from service.app import create_app
from service.config import Settings
from service.errors import StartupError
from service.footage.jobs import JobStore
from service.state import load_state

pytestmark = [pytest.mark.redis, pytest.mark.milvus, pytest.mark.slow]


class WorkerProcess:
    """`python -m service.worker` with the test's settings (``name`` empty: its default, HOSTNAME.PID.RANDOM);
    reaped by `worker_process`."""

    def __init__(self, model: Path, data_dir: Path, log_path: Path, name: str, **env: str):
        self.log_path = log_path
        with log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service.worker", *(["--name", name] if name else [])], cwd=REPO_ROOT,
                env=server_environment(model, data_dir, **env), stdout=log_file, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode


def ping(model: Path, data_dir: Path, **env: str) -> int:
    """`python -m service.worker --ping` (compose's health check) with the test's settings: its exit status."""
    return subprocess.run([sys.executable, "-m", "service.worker", "--ping"], cwd=REPO_ROOT, timeout=60,
                          env=server_environment(model, data_dir, **env), capture_output=True).returncode  # fmt: skip


@contextmanager
def worker_process(*args, **kwargs):
    worker = WorkerProcess(*args, **kwargs)
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def queue_env(redis_url, milvus_server) -> dict[str, str]:
    return {"REID_JOB_QUEUE": "redis", "REID_REDIS_URL": redis_url, "REID_JOB_HEARTBEAT_S": "1",
            "REID_GALLERY_BACKEND": "milvus", "REID_MILVUS_URI": milvus_server.uri,
            "REID_MILVUS_COLLECTION": f"queue_{uuid.uuid4().hex[:12]}", "REID_MAX_FOOTAGE_BYTES": "200000000"}


@pytest.fixture(scope="module")
def long_footage() -> bytes:
    return video_bytes(street_frames(frames=1500, walkers=staggered_walkers(50, 30)))


@pytest.fixture(scope="module")
def short_footage() -> bytes:
    return video_bytes(street_frames(frames=40))


def submit(client, video: bytes, camera_id: str) -> str:
    response = client.post("/footage", files={"video": ("clip.avi", video)}, data={"camera_id": camera_id})
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def wait_until(client, job_id: str, predicate, timeout_s: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if predicate(job):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def gallery_ids(client, camera_id: str) -> set[str]:
    answer = client.get("/tracklets", params={"camera_id": camera_id, "limit": 1000})
    assert answer.status_code == 200, answer.text
    return {record["id"] for record in answer.json()["items"]}


def test_submit_through_one_replica_poll_and_cancel_through_the_other(
    tiny_model, tmp_path, queue_env, long_footage, short_footage
):
    data_dir = tmp_path / "shared-data"
    with ExitStack() as stack:
        first = stack.enter_context(live_server(tiny_model, data_dir, tmp_path / "a.log", **queue_env))
        second = stack.enter_context(live_server(tiny_model, data_dir, tmp_path / "b.log", **queue_env))
        worker = stack.enter_context(worker_process(tiny_model, data_dir, tmp_path / "w.log", "", **queue_env))
        one, other = stack.enter_context(first.client()), stack.enter_context(second.client())

        long_id = submit(one, long_footage, "cam-r")
        running = wait_until(other, long_id, lambda job: len(job["result"]["tracklets"]) >= 2)
        assert running["status"] == "running", running
        # The worker is busy: the next job waits, and a cancel through the other replica ends it at once.
        queued_id = submit(one, short_footage, "cam-q")
        assert other.get(f"/jobs/{queued_id}").json()["status"] == "queued"
        cancelled = other.delete(f"/jobs/{queued_id}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert one.get(f"/jobs/{queued_id}").json()["status"] == "cancelled"

        # Cancelling the running job through the other replica reaches the worker that holds it.
        stopped = other.delete(f"/jobs/{long_id}")
        assert stopped.status_code == 200, stopped.text
        job = stopped.json()
        assert job["status"] == "cancelled" and job["error"] is None, job
        listed = {record["id"] for record in job["result"]["tracklets"]}
        assert len(listed) >= 2 and gallery_ids(one, "cam-r") == listed  # whole tracklets, all listed
        assert job["progress"]["frames_processed"] < 1500
        tracks = one.get(f"/jobs/{long_id}/tracks", params={"format": "mot"})
        assert tracks.status_code == 200 and tracks.text.count("\n") > 10
        assert one.delete(f"/jobs/{long_id}").status_code == 409

        # A job submitted through the second replica runs to the end, polled through the first.
        short_id = submit(other, short_footage, "cam-s")
        done = wait_for_job(one, short_id)
        assert done["status"] == "done" and len(done["result"]["tracklets"]) == 2, done
        assert gallery_ids(other, "cam-s") == {record["id"] for record in done["result"]["tracklets"]}
        # Both replicas list the same jobs, newest first.
        pages = [client.get("/jobs").json() for client in (one, other)]
        assert pages[0] == pages[1] and pages[0]["total"] == 3
        assert [item["job_id"] for item in pages[0]["items"]] == [short_id, queued_id, long_id]
        assert worker.process.poll() is None
        assert ping(tiny_model, data_dir, **queue_env) == 0  # a worker of this host is alive in Redis
        assert worker.stop() == 0  # SIGTERM while idle: a clean exit
        assert ping(tiny_model, data_dir, **queue_env) == 1  # and it unregistered
        assert list((data_dir / "footage-spool").iterdir()) == []


def test_a_worker_killed_mid_job_leaves_the_job_failed_with_what_it_enrolled(
    tiny_model, tmp_path, queue_env, long_footage, short_footage
):
    data_dir = tmp_path / "shared-data"
    with ExitStack() as stack:
        server = stack.enter_context(live_server(tiny_model, data_dir, tmp_path / "a.log", **queue_env))
        client = stack.enter_context(server.client())
        worker = stack.enter_context(worker_process(tiny_model, data_dir, tmp_path / "w1.log", "w1", **queue_env))
        job_id = submit(client, long_footage, "cam-k")
        wait_until(client, job_id, lambda job: len(job["result"]["tracklets"]) >= 3)
        worker.kill()
        killed = time.monotonic()
        job = wait_until(client, job_id, lambda job: job["status"] != "running", timeout_s=60)
        # 3 missed heartbeats of 1 s, then the next pass of a reaper (every 1 s): a few seconds, never forever.
        assert time.monotonic() - killed < 15
        assert job["status"] == "failed", job
        assert job["error"].startswith("The worker running this job stopped (killed, crashed or cut off from Redis")
        listed = {record["id"] for record in job["result"]["tracklets"]}
        assert len(listed) >= 3 and f"the {len(listed)} tracklets it had enrolled are kept and listed" in job["error"]
        stored = client.get("/tracklets", params={"camera_id": "cam-k", "limit": 1000}).json()["items"]
        assert {record["id"] for record in stored} == listed and all(r["job_id"] == job_id for r in stored)
        assert client.delete(f"/jobs/{job_id}").status_code == 409
        # The reaper removed its spooled video; another worker takes the next job.
        assert list((data_dir / "footage-spool").iterdir()) == []
        stack.enter_context(worker_process(tiny_model, data_dir, tmp_path / "w2.log", "w2", **queue_env))
        done = wait_for_job(client, submit(client, short_footage, "cam-n"))
        assert done["status"] == "done" and len(done["result"]["tracklets"]) == 2, done


def test_redis_queue_needs_a_shared_gallery(tiny_model, tmp_path, redis_url):
    settings = Settings(model_path=tiny_model, data_dir=tmp_path / "data", device="cpu", intra_op_threads=1,
                        job_queue="redis", redis_url=redis_url, _env_file=None)  # fmt: skip
    with pytest.raises(StartupError, match="REID_GALLERY_BACKEND=milvus"):
        load_state(settings)


def test_the_local_default_needs_no_redis(tiny_model, tmp_path, short_footage):
    """REID_JOB_QUEUE=local never connects to REID_REDIS_URL (nothing listens there)."""
    settings = Settings(model_path=tiny_model, data_dir=tmp_path / "data", device="cpu", intra_op_threads=1,
                        max_wait_ms=2, redis_url="redis://127.0.0.1:1/0", _env_file=None)  # fmt: skip
    assert settings.job_queue == "local"
    with TestClient(create_app(settings)) as client:
        done = wait_for_job(client, submit(client, short_footage, "cam-l"))
        assert done["status"] == "done" and len(done["result"]["tracklets"]) == 2
        assert isinstance(client.app.state.service.footage.store, JobStore)  # the SQLite table


def test_redis_going_away_leaves_metrics_and_the_gallery_working(tiny_model, tmp_path, milvus_server, redis_server):
    """Redis unreachable: the footage routes answer 503 with the reason; /metrics still answers (the unfinished
    jobs gauge reads NaN, like the gallery size while Milvus is away) and enroll does not need Redis."""
    from redis_server import RedisServer
    from test_service_api import assert_error
    from test_service_media_s3 import frames_upload

    server = RedisServer(redis_server.executable, tmp_path / "redis").start()
    settings = Settings(model_path=tiny_model, data_dir=tmp_path / "data", device="cpu", intra_op_threads=1,
                        max_wait_ms=2, job_queue="redis", redis_url=server.url, gallery_backend="milvus",
                        milvus_uri=milvus_server.uri, milvus_collection="redis_away", _env_file=None)  # fmt: skip
    try:
        with TestClient(create_app(settings)) as client:
            assert "reid_footage_jobs_unfinished 0.0" in client.get("/metrics").text
            server.stop()
            assert "Redis" in assert_error(client.get("/jobs"), 503, "storage_unavailable")["message"]
            metrics = client.get("/metrics")
            assert metrics.status_code == 200 and "reid_footage_jobs_unfinished NaN" in metrics.text
            assert client.post("/tracklets", files=frames_upload(1), data={"tracklet_id": "a"}).status_code == 201
    finally:
        server.stop()
