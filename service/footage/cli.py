"""``python -m service.footage VIDEO --camera-id ID``: upload footage to a running service, follow the job
with a progress bar on stderr, then print a summary table on stdout.

Exit status: 0 when the job is done, 1 when it failed or was cancelled, 2 when the service refused the
upload or could not be reached, 130 after Ctrl-C (which cancels the job first; what it enrolled stays).
The bar is a few lines of text rather than tqdm, which is a training dependency: the service stays light.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import httpx

FINISHED = ("done", "failed", "cancelled")
BAR_WIDTH = 30


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service.footage",
        description="Upload camera footage to a running reID service: it detects, tracks and cuts the people "
        "into tracklets, then enrolls them (mode enroll) or searches the gallery with each (mode query).",
        epilog="Example: python -m service.footage street.mp4 --camera-id gate-3 --start-time 2026-12-01T08:00:00Z",
    )
    parser.add_argument("video", type=Path, help="the footage: a video file (mp4, avi, mkv, ...)")
    parser.add_argument("--camera-id", required=True, help="the camera that filmed it")
    parser.add_argument("--start-time", help="ISO 8601 time of the first frame (tracklets then get absolute times)")
    parser.add_argument("--mode", choices=("enroll", "query"), default="enroll", help="default: enroll")
    parser.add_argument("--top-k", type=int, default=5, help="matches per tracklet in query mode (default 5)")
    parser.add_argument(
        "--url",
        default=os.environ.get("REID_URL", "http://127.0.0.1:8000"),
        help="the service (default: $REID_URL, else http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("REID_CLIENT_API_KEY"),
        help="an accepted API key (default: $REID_CLIENT_API_KEY)",
    )
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between progress checks (default 0.5)")
    return parser.parse_args(argv)


class ProgressBar:
    """One line redrawn in place on a terminal; on a pipe or file, a plain line every few seconds."""

    def __init__(self, stream: TextIO, every_s: float = 5.0):
        self.stream = stream
        self.live = stream.isatty()
        self.every_s = every_s
        self.last_line = 0.0

    def show(self, job: dict[str, Any]) -> None:
        progress = job["progress"]
        done, total = progress["frames_processed"], progress["frames_total"]
        if total:
            filled = int(BAR_WIDTH * min(done / total, 1.0))
            head = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {100 * done / total:5.1f}% {done}/{total} frames"
        else:
            head = f"{done} frames"
        fps = f", {progress['fps']:.1f} fps" if progress.get("fps") else ""
        line = f"{job['status']:<9} {head}, {progress['tracks']} tracks, {progress['tracklets']} tracklets{fps}"
        if self.live:
            self.stream.write(f"\r{line}\033[K")
            self.stream.flush()
        elif time.monotonic() - self.last_line >= self.every_s or job["status"] in FINISHED:
            self.last_line = time.monotonic()
            self.stream.write(line + "\n")

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")


def _time(value: Any, absolute: bool) -> str:
    """A tracklet time: ISO 8601 text as is; a number is epoch seconds (``absolute``) or seconds from the
    footage start."""
    if isinstance(value, str) or value is None:
        return value or "-"
    if absolute:
        return datetime.fromtimestamp(value, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"{value:.1f}s"


def summary_table(job: dict[str, Any]) -> str:
    """The job's outcome as an aligned text table (one row per tracklet)."""
    absolute = job.get("start_time") is not None
    if job["mode"] == "enroll":
        header = ("tracklet", "frames", "first", "last", "start", "end")
        rows = [
            (record["id"], str(record.get("frames_decoded", "")), str(_field(record, "frame_start")),
             str(_field(record, "frame_end")), _time(_field(record, "start_time"), absolute),
             _time(_field(record, "end_time"), absolute))
            for record in job["result"]["tracklets"] or []
        ]  # fmt: skip
    else:
        header = ("track", "frames", "start", "end", "rank-1 tracklet", "person", "camera", "distance")
        rows = []
        for query in job["result"]["queries"] or []:
            best = query["matches"][0] if query["matches"] else None
            rows.append((
                str(query["track_id"]), str(query["num_frames"]), _time(query["start_time"], absolute),
                _time(query["end_time"], absolute), best["id"] if best else "-", (best or {}).get("person_id") or "-",
                (best or {}).get("camera_id") or "-", f"{best['distance']:.4f}" if best else "-",
            ))  # fmt: skip
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in (header, *rows)]  # fmt: skip
    lines.insert(1, "  ".join("-" * width for width in widths))
    progress = job["progress"]
    fps = f" at {progress['fps']:.1f} fps" if progress.get("fps") else ""
    verb = "enrolled" if job["mode"] == "enroll" else "searched"
    lines.append(
        f"job {job['job_id']} {job['status']}: {progress['frames_processed']} frames{fps}, "
        f"{progress['tracks']} tracks, {len(rows)} tracklets {verb}"
    )
    lines.extend(f"warning: {warning}" for warning in job["warnings"])
    if job["error"]:
        lines.append(f"error: {job['error']}")
    return "\n".join(lines)


def _field(record: dict[str, Any], key: str) -> Any:
    """A provenance field, from the record or (older records) its metadata."""
    value = record.get(key)
    return value if value is not None else record.get("metadata", {}).get(key, "")


def _error_message(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.text[:300]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.video.is_file():
        print(f"error: {args.video} is not a file", file=sys.stderr)
        return 2
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    fields = {"camera_id": args.camera_id, "mode": args.mode, "top_k": str(args.top_k)}
    if args.start_time:
        fields["start_time"] = args.start_time
    bar = ProgressBar(sys.stderr)
    with httpx.Client(base_url=args.url, headers=headers, timeout=httpx.Timeout(60.0, write=None)) as client:
        try:
            with args.video.open("rb") as video:  # httpx streams the file part from disk in chunks
                response = client.post("/footage", data=fields, files={"video": (args.video.name, video)})
        except httpx.HTTPError as error:
            print(f"error: cannot reach {args.url}: {error}", file=sys.stderr)
            return 2
        if response.status_code != 202:
            print(f"error: the service answered {response.status_code}: {_error_message(response)}", file=sys.stderr)
            return 2
        job = response.json()
        print(f"job {job['job_id']} accepted ({args.url}{response.headers.get('location', '')})", file=sys.stderr)
        try:
            while job["status"] not in FINISHED:
                bar.show(job)
                time.sleep(args.poll)
                job = client.get(f"/jobs/{job['job_id']}").json()
            bar.show(job)
        except KeyboardInterrupt:
            bar.close()
            job = client.delete(f"/jobs/{job['job_id']}").json()
            print(f"cancelled job {job.get('job_id', '')}; what it enrolled stays in the gallery", file=sys.stderr)
            return 130
        bar.close()
    print(summary_table(job))
    return 0 if job["status"] == "done" else 1
