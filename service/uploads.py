"""From multipart fields to a decoded tracklet: which media kind was sent, its bytes, the metadata object,
and per-request stage timings (reported in the Server-Timing header and /metrics)."""

from __future__ import annotations

import json
import math
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import UploadFile

from service.decoding import DecodedTracklet, NamedMedia, TrackletDecoder
from service.errors import InvalidRequestError
from service.metrics import ServiceMetrics

MEDIA_FIELDS = ("video", "frames", "archive")


@dataclass(frozen=True)
class MediaUpload:
    """The one media field a request sent: its kind and its files' bytes."""

    kind: str
    files: list[NamedMedia]


def _is_sent(upload: UploadFile | None) -> bool:
    # Browsers send an empty, nameless part for a file input left blank: that is "not sent".
    return upload is not None and not (not upload.filename and upload.size == 0)


async def _read(upload: UploadFile, fallback_name: str) -> NamedMedia:
    data = await upload.read()
    return NamedMedia(upload.filename or fallback_name, data)


async def read_media(
    video: UploadFile | None, frames: list[UploadFile] | None, archive: UploadFile | None
) -> MediaUpload | None:
    """The single media field sent, read into memory (already bounded by the upload limit); None if none.

    Raises InvalidRequestError when more than one media field was sent.
    """
    frame_uploads = [upload for upload in (frames or []) if _is_sent(upload)]
    sent = [name for name, present in
            (("video", _is_sent(video)), ("frames", bool(frame_uploads)), ("archive", _is_sent(archive))) if present]
    if len(sent) > 1:
        raise InvalidRequestError(f"Send exactly one media field (video, frames or archive), not {' and '.join(sent)}.")
    if not sent:
        return None
    if sent[0] == "video":
        return MediaUpload("video", [await _read(video, "video")])
    if sent[0] == "archive":
        return MediaUpload("archive", [await _read(archive, "archive")])
    return MediaUpload("frames", [await _read(upload, f"frame-{index}") for index, upload in enumerate(frame_uploads)])


def decode_media(decoder: TrackletDecoder, media: MediaUpload) -> DecodedTracklet:
    """Blocking: decode and sample (run it in a worker thread)."""
    if media.kind == "video":
        return decoder.decode_video(media.files[0].data)
    if media.kind == "archive":
        return decoder.decode_archive(media.files[0].data)
    return decoder.decode_images(media.files)


def _refuse_non_standard_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf, which JSON cannot send back
        raise ValueError(f"the number {text[:40]} is too large")
    return value


def parse_metadata(text: str | None, max_bytes: int) -> dict[str, Any]:
    """The ``metadata`` field: a JSON object given as a string (absent: {}), at most ``max_bytes`` of UTF-8.

    Refused with InvalidRequestError (422): over the size, not JSON (NaN and Infinity are not, nor numbers
    that overflow to infinity such as 1e400), not an object, nested too deep to parse, or holding text that
    cannot be sent back as UTF-8 (lone surrogates).
    """
    if text is None:
        return {}
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidRequestError("metadata holds characters that are not valid Unicode text.") from None
    if size > max_bytes:
        raise InvalidRequestError(f"metadata is {size} bytes; at most {max_bytes} bytes are allowed.")
    try:
        value = json.loads(text, parse_constant=_refuse_non_standard_constant, parse_float=_finite_float)
    except json.JSONDecodeError as error:
        raise InvalidRequestError(f"metadata is not valid JSON: {error.msg} at position {error.pos}.") from None
    except ValueError as error:
        raise InvalidRequestError(f"metadata is not valid JSON: {error}.") from None
    except RecursionError:
        raise InvalidRequestError("metadata is nested too deeply.") from None
    if not isinstance(value, dict):
        raise InvalidRequestError(f"metadata must be a JSON object, not {type(value).__name__}.")
    try:
        # Escaped lone surrogates ("\ud800") parse, but the response could not encode them as UTF-8.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequestError("metadata holds characters that are not valid Unicode text.") from None
    except RecursionError:
        raise InvalidRequestError("metadata is nested too deeply.") from None
    return value


_LABEL_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_label(field_name: str, value: str | None) -> str | None:
    """A person_id / camera_id: printable text (no control characters, e.g. from binary sent as a label)."""
    if value is not None and _LABEL_CONTROL_CHARACTERS.search(value):
        raise InvalidRequestError(f"{field_name} must be printable text without control characters.")
    return value


@dataclass
class StageTimer:
    """Seconds spent per pipeline stage within one request."""

    metrics: ServiceMetrics | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            if self.metrics is not None:
                self.metrics.stage_seconds.observe(elapsed, stage=name)

    def server_timing(self) -> str:
        """The Server-Timing header value, durations in milliseconds."""
        return ", ".join(f"{name};dur={seconds * 1000:.2f}" for name, seconds in self.seconds.items())
