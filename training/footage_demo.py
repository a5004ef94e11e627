"""The footage step of the demo, through the running service's API: camera A's synthetic footage is
enrolled (POST /footage), camera B's searched against it (POST /footage mode=query), and the answers are
scored against the renderer's ground truth.

- tracking: MOTA and IDF1 of each camera's ``GET /jobs/{id}/tracks?format=mot`` against its gt.txt
  (py-motmetrics, IoU 0.5);
- retrieval: every tracklet's identity is the ground-truth person most of its boxes overlap (IoU >= 0.5);
  each camera-B tracklet with an identity that camera A's gallery holds is a query; rank-1 per person and
  overall, and mAP over the full ranking (the query job asks for every gallery tracklet).

Also used by bench/bench_footage_api.py. Talks HTTP only: training/ never imports the service.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.mot import mot_scores, parse_mot, read_mot

#: Box overlap that assigns a tracklet's box to a ground-truth person (MOTChallenge's threshold).
IDENTITY_IOU = 0.5


@dataclass
class CameraResult:
    camera: str
    job: dict[str, Any]
    tracks: dict[int, list[dict[str, float]]]
    scores: dict[str, float]
    seconds: float
    """Wall time from the upload to the job's end."""


@dataclass
class FootageDemoResult:
    gallery: CameraResult
    query: CameraResult
    per_person: dict[int, tuple[int, int]] = field(default_factory=dict)
    """identity -> (rank-1 hits, queries)."""
    rank1: float = 0.0
    mean_ap: float = 0.0
    queries: int = 0
    gallery_size: int = 0


def box_iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one (left, top, width, height) box with each row of ``others``."""
    left = np.maximum(box[0], others[:, 0])
    top = np.maximum(box[1], others[:, 1])
    right = np.minimum(box[0] + box[2], others[:, 0] + others[:, 2])
    bottom = np.minimum(box[1] + box[3], others[:, 1] + others[:, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    return inter / (box[2] * box[3] + others[:, 2] * others[:, 3] - inter)


def tracklet_identity(boxes: list[dict[str, float]], frame_start: int, frame_end: int, gt: np.ndarray) -> int:
    """The ground-truth id most of the tracklet's boxes (frames frame_start..frame_end) overlap; 0 if none."""
    votes: dict[int, int] = {}
    for box in boxes:
        if not frame_start <= box["frame"] <= frame_end:
            continue
        rows = gt[gt[:, 0] == box["frame"] + 1]
        if not len(rows):
            continue
        overlaps = box_iou(np.array([box["left"], box["top"], box["width"], box["height"]]), rows[:, 2:6])
        if overlaps.max() >= IDENTITY_IOU:
            identity = int(rows[int(np.argmax(overlaps)), 1])
            votes[identity] = votes.get(identity, 0) + 1
    return max(votes, key=votes.get) if votes else 0


def run_camera(client: Any, video: Path, gt_path: Path, camera: str, mode: str, top_k: int = 10,
               poll_s: float = 0.5, timeout_s: float = 1800.0) -> CameraResult:
    """Uploads one camera's footage, waits for the job, fetches its tracks and scores them."""
    started = time.perf_counter()
    with video.open("rb") as file:
        response = client.post("/footage", files={"video": (video.name, file)},
                               data={"camera_id": camera, "mode": mode, "top_k": str(top_k)})  # fmt: skip
    if response.status_code != 202:
        raise RuntimeError(f"POST /footage for {camera} failed: {response.status_code} {response.text}")
    job_id = response.json()["job_id"]
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled"):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"footage job {job_id} ({camera}) did not end within {timeout_s:.0f} s")
        time.sleep(poll_s)
    if job["status"] != "done":
        raise RuntimeError(f"footage job {job_id} ({camera}) ended {job['status']}: {job['error']}")
    seconds = time.perf_counter() - started
    mot_text = client.get(f"/jobs/{job_id}/tracks", params={"format": "mot"}).text
    tracks = {track["track_id"]: track["boxes"] for track in client.get(f"/jobs/{job_id}/tracks").json()["tracks"]}
    scores = mot_scores(read_mot(gt_path), parse_mot(mot_text), num_frames=job["progress"]["frames_processed"])
    return CameraResult(camera, job, tracks, scores, seconds)


def score_retrieval(result: FootageDemoResult, gt_gallery: np.ndarray, gt_query: np.ndarray) -> FootageDemoResult:
    gallery_ids = {}
    for record in result.gallery.job["result"]["tracklets"]:
        boxes = result.gallery.tracks.get(record["metadata"]["track_id"], [])
        gallery_ids[record["id"]] = tracklet_identity(boxes, record["frame_start"], record["frame_end"], gt_gallery)
    result.gallery_size = len(gallery_ids)
    known = set(gallery_ids.values()) - {0}
    precisions = []
    for query in result.query.job["result"]["queries"]:
        boxes = result.query.tracks.get(query["track_id"], [])
        identity = tracklet_identity(boxes, query["frame_start"], query["frame_end"], gt_query)
        if identity not in known:
            continue  # no ground-truth person, or one camera A never saw
        ranked = [gallery_ids.get(match["id"], 0) == identity for match in query["matches"]]
        hits, total = result.per_person.get(identity, (0, 0))
        result.per_person[identity] = (hits + int(ranked[0]), total + 1)
        positions = np.flatnonzero(ranked) + 1
        precisions.append(float(np.mean(np.arange(1, len(positions) + 1) / positions)) if len(positions) else 0.0)
    result.queries = len(precisions)
    result.rank1 = sum(hits for hits, _ in result.per_person.values()) / max(result.queries, 1)
    result.mean_ap = float(np.mean(precisions)) if precisions else 0.0
    return result


def run_footage_demo(url: str, footage_dir: Path, api_key: str | None = None) -> FootageDemoResult:
    """Camera A enrolled, camera B searched (every gallery tracklet ranked), scored against ground truth.
    ``footage_dir`` is what training.data.synthetic_footage.generate_footage wrote."""
    import httpx

    headers = {"X-API-Key": api_key} if api_key else {}
    cameras = sorted(path.name for path in footage_dir.iterdir() if (path / "gt" / "gt.txt").is_file())
    gallery_camera, query_camera = cameras[0], cameras[1]

    def video_of(camera: str) -> Path:
        return next(path for path in (footage_dir / camera).iterdir() if path.stem == "video")

    with httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(120.0, write=None)) as client:
        gallery = run_camera(client, video_of(gallery_camera), footage_dir / gallery_camera / "gt" / "gt.txt",
                             gallery_camera, "enroll")  # fmt: skip
        top_k = max(1, min(1000, len(gallery.job["result"]["tracklets"])))
        query = run_camera(client, video_of(query_camera), footage_dir / query_camera / "gt" / "gt.txt",
                           query_camera, "query", top_k=top_k)  # fmt: skip
    result = FootageDemoResult(gallery, query)
    return score_retrieval(result, read_mot(footage_dir / gallery_camera / "gt" / "gt.txt"),
                           read_mot(footage_dir / query_camera / "gt" / "gt.txt"))


def print_footage_report(result: FootageDemoResult) -> None:
    print("\n| camera | mode | frames | job fps | tracks | tracklets | MOTA | IDF1 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for camera in (result.gallery, result.query):
        progress = camera.job["progress"]
        print(f"| {camera.camera} | {camera.job['mode']} | {progress['frames_processed']} | {progress['fps'] or 0:.1f} "
              f"| {progress['tracks']} | {progress['tracklets']} | {100 * camera.scores['mota']:.1f}% "
              f"| {100 * camera.scores['idf1']:.1f}% |")  # fmt: skip
    print(f"\n| person | {result.query.camera} tracklets | rank-1 in {result.gallery.camera} |")
    print("|---:|---:|---:|")
    for identity, (hits, total) in sorted(result.per_person.items()):
        print(f"| {identity} | {total} | {hits}/{total} |")
    print(f"\ncross-camera retrieval from footage: rank-1 {100 * result.rank1:.1f}%, mAP {100 * result.mean_ap:.1f}% "
          f"({result.queries} queries from {result.query.camera} against {result.gallery_size} tracklets of "
          f"{result.gallery.camera})")  # fmt: skip
