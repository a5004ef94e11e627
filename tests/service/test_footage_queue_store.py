"""The footage job state in Redis (REID_JOB_QUEUE=redis) on its own, on a real redis-server: the same life of a
job as the SQLite table, the enroll journal across processes, and reaping a job whose worker died."""

from __future__ import annotations

import time

import pytest

from service.errors import StorageUnavailableError
from service.footage.jobs import Job, JobMode, JobProgress, JobStatus
from service.footage.queue import redis_client
from service.footage.redis_jobs import RedisJobStore
from service.footage.runner import JobStopped

pytestmark = pytest.mark.redis


def new_job(store: RedisJobStore, job_id: str, mode: JobMode = JobMode.enroll) -> None:
    store.create(Job(id=job_id, status=JobStatus.queued, mode=mode, camera_id="cam", video_name="v.mp4",
                     video_bytes=10, created_at=time.time(), progress=JobProgress(frames_total=90)))  # fmt: skip


def test_life_of_a_job_and_its_results(redis_url):
    store = RedisJobStore(redis_client(redis_url))
    new_job(store, "a")
    new_job(store, "b", JobMode.query)
    assert store.count_unfinished() == 2 and store.ids_with_status(JobStatus.queued) == ["a", "b"]
    assert store.start("a") and not store.start("a")  # only a queued job starts
    assert store.count(JobStatus.queued) == 1 and store.ids_with_status(JobStatus.running) == ["a"]
    store.mark_pending("a", "t1")
    assert store.get("a").pending == ["t1"]
    assert store.settle_pending("a", "t1", {"id": "t1"}) is True
    store.mark_pending("a", "t2")
    assert store.settle_pending("a", "t2", None) is False  # the enroll failed: not listed
    store.update_progress("a", JobProgress(frames_processed=7, tracks=2, tracklets=2, fps=3.5))
    store.add_warning("a", "truncated")
    with pytest.raises(JobStopped):  # results come from the worker running a job, never to a queued one
        store.add_query_result("b", {"track_id": 1, "matches": []})
    assert not store.cancel_requested("a")
    store.finish("a", JobStatus.done)
    store.finish("a", JobStatus.failed, "too late")  # a finished job keeps its status
    job = store.get("a")
    assert job.status is JobStatus.done and job.error is None and job.pending == [] and job.warnings == ["truncated"]
    assert job.enrolled == [{"id": "t1"}] and job.queries == []
    # frames_total kept from the upload's probe when a progress update does not know it
    assert (job.progress.frames_processed, job.progress.frames_total, job.progress.fps) == (7, 90, 3.5)
    assert job.started_at >= job.created_at and job.finished_at >= job.started_at
    assert store.get("b").queries == []
    assert store.cancel_if_queued("b") and store.get("b").status is JobStatus.cancelled
    assert not store.cancel_if_queued("b") and not store.request_cancel("b")
    jobs, total = store.list(None, 0, 10)
    assert total == 2 and [job.id for job in jobs] == ["b", "a"]  # newest first
    assert store.list(JobStatus.done, 0, 10)[1] == 1 and store.list(None, 5, 10) == ([], 2)
    assert store.get("missing") is None and store.count_unfinished() == 0
    # A second client (another replica) sees the same.
    assert RedisJobStore(redis_client(redis_url)).get("a") == job


def test_a_cancel_reaches_whoever_polls_the_job(redis_url):
    store, other = RedisJobStore(redis_client(redis_url)), RedisJobStore(redis_client(redis_url))
    new_job(store, "c")
    store.start("c")
    assert other.request_cancel("c") and store.cancel_requested("c")


def test_reaping_settles_the_journal_with_the_gallery_and_fails_the_job(redis_url):
    store = RedisJobStore(redis_client(redis_url))
    new_job(store, "r")
    store.start("r")
    store.mark_pending("r", "r-1")
    store.settle_pending("r", "r-1", {"id": "r-1"})
    store.mark_pending("r", "r-2")  # committed in the gallery, then the worker died
    store.mark_pending("r", "r-3")  # never reached the gallery
    store.update_progress("r", JobProgress(frames_processed=40))
    in_gallery = {"r-1", "r-2"}
    reaper = RedisJobStore(redis_client(redis_url))  # another process
    assert reaper.reap("r", "The worker died", lambda tid: {"id": tid} if tid in in_gallery else None)
    assert not reaper.reap("r", "again", lambda tid: None)  # once only
    job = store.get("r")
    assert job.status is JobStatus.failed and job.pending == []
    assert job.error == ("The worker died after 40 frames; the 2 tracklets it had enrolled are kept and listed. "
                         "Upload the footage again to process the rest.")  # fmt: skip
    assert [record["id"] for record in job.enrolled] == ["r-1", "r-2"]
    # The worker was only cut off: it can journal nothing more, and what it settles late is listed only if
    # the reaper found it committed (r-2); otherwise (r-3) it must withdraw the tracklet.
    with pytest.raises(JobStopped):
        store.mark_pending("r", "r-4")
    assert store.settle_pending("r", "r-2", {"id": "r-2"}) is True
    assert store.settle_pending("r", "r-3", {"id": "r-3"}) is False
    assert [record["id"] for record in store.get("r").enrolled] == ["r-1", "r-2"]


def test_redis_away_is_storage_unavailable(redis_server, tmp_path):
    from redis_server import RedisServer

    server = RedisServer(redis_server.executable, tmp_path / "gone").start()
    store = RedisJobStore(redis_client(server.url))
    new_job(store, "x")
    server.stop()
    with pytest.raises(StorageUnavailableError, match="Redis"):
        store.get("x")
    with pytest.raises(StorageUnavailableError):
        new_job(store, "y")


def test_a_starting_process_keeps_the_uploads_others_are_receiving(redis_url, tmp_path):
    """Local media with the Redis queue: replicas and workers share REID_DATA_DIR's spool. A process that starts
    while another replica holds an upload it has not yet recorded as a job (probing it) leaves that file alone;
    one nobody recorded for over an hour goes."""
    import os
    from types import SimpleNamespace

    from service.footage.service import FootageService
    from service.footage.work import FootageFolders
    from service.media import MediaStore, open_backend
    from service.media.store import SHARED_SWEEP_GRACE_S

    folders = FootageFolders(tmp_path)
    for job_id, age_s in (("being-probed", 5.0), ("abandoned", SHARED_SWEEP_GRACE_S + 60)):
        folders.video(job_id).write_bytes(b"video")
        written = time.time() - age_s
        os.utime(folders.video(job_id), (written, written))
    settings = SimpleNamespace(job_queue="redis", gallery_backend="milvus", milvus_uri="http://milvus:19530",
                               redis_url=redis_url, data_dir=tmp_path, job_heartbeat_s=1.0, footage_queue_size=4,
                               media_backend="local")  # fmt: skip
    media = MediaStore(open_backend(settings))  # local media, shared by the processes of this host
    service = FootageService(settings, None, None, enroll=None, search=None, enrolled_record=lambda _: None,
                             media=media)  # fmt: skip
    service.close()
    assert type(service.folders) is FootageFolders  # the files stay in the shared data directory's spool
    assert folders.video("being-probed").is_file() and not folders.video("abandoned").exists()


def test_a_queued_job_whose_queue_entry_was_lost_is_queued_again_once(redis_url):
    """A job recorded as queued whose RQ entry is gone (the replica died between recording and enqueueing it) or
    failed before the job started (its worker died between taking it and starting it; Redis refused the start)
    would otherwise wait forever and hold a REID_FOOTAGE_QUEUE_SIZE slot. Nothing of it ran, so it is queued
    again, exactly once however many processes reap, and only once its entry stayed lost for the grace (a
    replica enqueues right after recording)."""
    from rq.job import Job as RQJob
    from rq.job import JobStatus as RQStatus

    from service.footage.queue import Reaper, enqueue, footage_queue

    store, queue = RedisJobStore(redis_client(redis_url)), footage_queue(redis_url)
    for job_id in ("waiting", "never-enqueued", "taken-by-the-dead"):
        new_job(store, job_id)
    enqueue(queue, "waiting")
    enqueue(queue, "taken-by-the-dead")
    queue.remove("taken-by-the-dead")  # a worker took it, then died: RQ's clean-up fails the execution
    RQJob.fetch("taken-by-the-dead", connection=queue.connection).set_status(RQStatus.FAILED)

    def reaper() -> Reaper:  # one per process
        return Reaper(store, queue, 1.0, lambda _: None, lambda _: None, requeue_after_s=0.3)

    first, second = reaper(), reaper()
    assert first.reap_once() == [] and second.reap_once() == [] and queue.job_ids == ["waiting"]  # within grace
    time.sleep(0.4)
    first.reap_once()
    second.reap_once()
    assert sorted(queue.job_ids) == ["never-enqueued", "taken-by-the-dead", "waiting"]  # each once
    assert store.ids_with_status(JobStatus.queued) == ["waiting", "never-enqueued", "taken-by-the-dead"]
    time.sleep(0.4)
    first.reap_once()
    assert len(queue.job_ids) == 3  # entries that are queued are left alone


def test_a_reaped_query_job_lists_no_result_found_after_it_was_failed(redis_url):
    """A query job's worker cut off from Redis long enough to be declared lost: its job is failed, saying how many
    tracklets it searched; the worker, back, must not add results to it (it stops instead)."""
    store = RedisJobStore(redis_client(redis_url))
    new_job(store, "q", JobMode.query)
    store.start("q")
    store.add_query_result("q", {"track_id": 1, "matches": []})
    assert RedisJobStore(redis_client(redis_url)).reap("q", "The worker died", lambda _: None)
    with pytest.raises(JobStopped):
        store.add_query_result("q", {"track_id": 2, "matches": []})
    job = store.get("q")
    assert job.queries == [{"track_id": 1, "matches": []}] and "its 1 searched tracklets" in job.error


def test_a_malformed_redis_url_stops_the_start_with_the_reason(tmp_path):
    """REID_REDIS_URL that is not a Redis URL: a one-line StartupError naming the setting, not a traceback."""
    from types import SimpleNamespace

    from service.errors import StartupError
    from service.footage.service import FootageService

    for url in ("localhost:6379", "redis://host:port/0"):
        settings = SimpleNamespace(job_queue="redis", gallery_backend="milvus", milvus_uri="http://milvus:19530",
                                   redis_url=url, data_dir=tmp_path, job_heartbeat_s=1.0, footage_queue_size=4)
        with pytest.raises(StartupError, match="REID_REDIS_URL"):
            FootageService(settings, None, None, enroll=None, search=None, enrolled_record=lambda _: None)


def test_a_restarted_worker_is_not_refused_by_the_registration_of_the_one_it_replaces(redis_url):
    """compose restarts a killed worker container with the same host name and PID (1). The killed worker's RQ
    registration (no death recorded) outlives it by up to two minutes, and RQ refuses to register a worker over a
    live-looking one of the same name: the default name must differ at each start, and still be this host's
    for `--ping`."""
    import socket

    from rq import Worker

    from service.footage.queue import footage_queue
    from service.worker import default_name, ping

    queue = footage_queue(redis_url)
    killed = Worker([queue], connection=queue.connection, name=default_name())
    killed.register_birth()  # then SIGKILL: no death is recorded
    restarted = Worker([queue], connection=queue.connection, name=default_name())
    restarted.register_birth()
    assert restarted.name != killed.name and restarted.name.startswith(f"{socket.gethostname()}.")
    assert ping(redis_url)
