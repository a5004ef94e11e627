"""The media store's thumbnails (local backend): JPEG files named after the tracklet id, written atomically,
swept when orphaned."""

from __future__ import annotations

import os
import time

import cv2
import numpy as np

from service.media import MAX_HEIGHT, MediaStore, encode_thumbnail


def test_write_read_delete_and_names_that_stay_inside_the_folder(tmp_path):
    store = MediaStore(tmp_path)
    picture = np.zeros((256, 128, 3), np.uint8)
    picture[:, :, 0] = 200  # red in RGB
    for tracklet_id in ("plain", "../escape", "a/b", "x:y@z"):
        assert store.write(tracklet_id, picture)
        assert store.path(tracklet_id).parent == tmp_path / "thumbnails"
        decoded = cv2.imdecode(np.frombuffer(store.read(tracklet_id), np.uint8), cv2.IMREAD_COLOR)
        assert decoded.shape == (MAX_HEIGHT, 64, 3) and decoded[..., 2].mean() > 180  # BGR: red kept
    store.delete("plain")
    assert store.read("plain") is None
    store.delete("plain")  # deleting twice is fine
    assert not MediaStore(tmp_path / "off", store_thumbnails=False).write("x", picture)
    assert encode_thumbnail(np.zeros((40, 20, 3), np.uint8))[:2] == b"\xff\xd8"  # small ones are not enlarged


def test_orphans_older_than_the_process_are_swept(tmp_path):
    store = MediaStore(tmp_path)
    picture = np.zeros((64, 32, 3), np.uint8)
    for tracklet_id in ("kept", "orphan"):
        store.write(tracklet_id, picture)
    ((tmp_path / "thumbnails") / "half.tmp").write_bytes(b"partial")
    started = time.time()
    store.write("fresh-orphan", picture)
    future = started + 60
    os.utime(store.path("fresh-orphan"), (future, future))
    past = started - 60
    for name in ("kept", "orphan"):
        os.utime(store.path(name), (past, past))
    os.utime((tmp_path / "thumbnails") / "half.tmp", (past, past))
    removed = store.remove_orphans(lambda tracklet_id: tracklet_id == "kept", older_than=started)
    assert removed == 2
    assert store.read("kept") is not None and store.read("orphan") is None
    assert store.read("fresh-orphan") is not None  # written after the sweep began: an enroll in progress
    assert not ((tmp_path / "thumbnails") / "half.tmp").exists()


def test_processes_sharing_the_data_dir_keep_each_other_s_enroll_in_progress(tmp_path):
    """REID_JOB_QUEUE=redis with local media: API replicas and workers share REID_DATA_DIR. A process that starts
    while another is between its media write and its record commit must not sweep that media (the record would
    then commit without it); alone (REID_JOB_QUEUE=local) the process sweeps all it can, as before."""
    from types import SimpleNamespace

    from service.media import open_backend

    picture = np.zeros((64, 32, 3), np.uint8)
    for job_queue, kept in (("redis", True), ("local", False)):
        data_dir = tmp_path / job_queue
        settings = SimpleNamespace(media_backend="local", data_dir=data_dir, job_queue=job_queue)
        other = MediaStore(data_dir)
        other.write("in-progress", picture)  # another process: its record commits in a moment
        written = time.time() - 5
        os.utime(other.path("in-progress"), (written, written))
        starting = MediaStore(open_backend(settings))  # this process starts now and sweeps
        assert starting.remove_orphans(lambda tracklet_id: False, older_than=time.time(),
                                       has_record=lambda tracklet_id: False) == (0 if kept else 1)  # fmt: skip
        assert (other.read("in-progress") is not None) is kept
