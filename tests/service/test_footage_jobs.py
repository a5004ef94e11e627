"""The footage job table on its own: the life of a job, the enroll journal and recovery after a crash."""

from __future__ import annotations

import time

from service.footage.jobs import Job, JobMode, JobProgress, JobStatus, JobStore


def new_job(store: JobStore, job_id: str, mode: JobMode = JobMode.enroll) -> None:
    store.create(Job(id=job_id, status=JobStatus.queued, mode=mode, camera_id="cam", video_name="v.mp4",
                     video_bytes=10, created_at=time.time()))  # fmt: skip


def test_life_of_a_job_and_its_results(tmp_path):
    store = JobStore(tmp_path)
    new_job(store, "a")
    new_job(store, "b", JobMode.query)
    assert store.count_unfinished() == 2 and store.ids_with_status(JobStatus.queued) == ["a", "b"]
    assert store.start("a") and not store.start("a")  # only a queued job starts
    store.mark_pending("a", "t1")
    store.settle_pending("a", "t1", {"id": "t1"})
    store.mark_pending("a", "t2")
    store.settle_pending("a", "t2", None)  # the enroll failed: not listed
    store.update_progress("a", JobProgress(frames_processed=7, frames_total=9, tracks=2, tracklets=2, fps=3.5))
    store.add_query_result("b", {"track_id": 1, "matches": []})
    store.finish("a", JobStatus.done)
    store.finish("a", JobStatus.failed, "too late")  # a finished job keeps its status
    job = store.get("a")
    assert job.status is JobStatus.done and job.error is None and job.pending == []
    assert job.enrolled == [{"id": "t1"}] and job.queries == []
    assert (job.progress.frames_processed, job.progress.frames_total, job.progress.fps) == (7, 9, 3.5)
    assert store.get("b").queries == [{"track_id": 1, "matches": []}]
    assert store.cancel_if_queued("b") and store.get("b").status is JobStatus.cancelled
    jobs, total = store.list(None, 0, 10)
    assert total == 2 and [job.id for job in jobs] == ["b", "a"]  # newest first
    assert store.list(JobStatus.done, 0, 10)[1] == 1 and store.get("missing") is None
    store.close()


def test_recovery_fails_running_jobs_and_settles_their_journal_with_the_gallery(tmp_path):
    store = JobStore(tmp_path)
    new_job(store, "r")
    new_job(store, "q")
    store.start("r")
    store.mark_pending("r", "r-1")
    store.settle_pending("r", "r-1", {"id": "r-1"})
    store.mark_pending("r", "r-2")  # committed in the gallery, then the process died
    store.mark_pending("r", "r-3")  # never reached the gallery
    store.close()

    reopened = JobStore(tmp_path)
    in_gallery = {"r-1", "r-2"}
    failed = reopened.recover(lambda tracklet_id: {"id": tracklet_id} if tracklet_id in in_gallery else None)
    assert failed == ["r"]
    job = reopened.get("r")
    assert job.status is JobStatus.failed and "stopped (restart or crash)" in job.error
    assert [record["id"] for record in job.enrolled] == ["r-1", "r-2"] and job.pending == []
    assert job.error == ("The service stopped (restart or crash) while this job was running, after 0 frames; the 2 "
                         "tracklets it had enrolled are kept and listed. Upload the footage again to process the rest.")
    assert reopened.get("q").status is JobStatus.queued  # queued jobs wait for the workers again
    reopened.close()
