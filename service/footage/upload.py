"""POST /footage's body, streamed: the multipart form is parsed as it arrives (python-multipart's push
parser), the ``video`` part written straight into the spool file and the small text fields kept.

Starlette's own form parsing would first spool the file to the system's temporary directory (possibly a
small tmpfs) and then hand it over for a second copy; footage can be gigabytes, so it goes to its final
place under the data directory once. The request-body guard middleware bounds the size
(REID_MAX_FOOTAGE_BYTES, 413 while streaming) and the time (REID_FOOTAGE_BODY_TIMEOUT_S, 408).
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from service.errors import InvalidRequestError, ServiceError, StorageFullError, StorageUnavailableError

#: Largest text field (camera_id, start_time, mode, top_k are all short).
MAX_FIELD_BYTES = 64 * 1024
#: Most text fields: the form has four; a body of thousands of fields is refused, not held in memory.
MAX_FIELDS = 16
FILE_FIELD = "video"


class UnsupportedMediaTypeError(ServiceError):
    status_code = 415
    code = "unsupported_media_type"


class MalformedBodyError(ServiceError):
    status_code = 400
    code = "bad_request"


@dataclass
class FootageForm:
    """The fields of a POST /footage body, with the video already on disk."""

    fields: dict[str, str] = field(default_factory=dict)
    video_name: str | None = None
    video_bytes: int = 0


class _FormSink:
    """python-multipart callbacks that route each part: the video to ``video_path``, text to memory."""

    def __init__(self, video_path: Path):
        self.video_path = video_path
        self.form = FootageForm()
        self.error: ServiceError | None = None
        self._descriptor: int | None = None
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, bytes] = {}
        self._name: str | None = None
        self._text: bytearray | None = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin, "on_part_data": self._part_data, "on_part_end": self._part_end,
            "on_header_field": lambda data, start, end: self._header_field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._header_end, "on_headers_finished": self._headers_finished,
        }  # fmt: skip

    def _fail(self, error: ServiceError) -> None:
        if self.error is None:
            self.error = error

    def _part_begin(self) -> None:
        self._headers = {}
        self._name = None
        self._text = None

    def _header_end(self) -> None:
        self._headers[self._header_field.decode("latin-1").lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        self._name = name
        if name == FILE_FIELD:
            if self._descriptor is not None or self.form.video_name is not None:
                self._fail(InvalidRequestError("Send one video per request (the field 'video' came twice)."))
                return
            filename = options.get(b"filename", b"").decode("utf-8", "replace")
            self.form.video_name = os.path.basename(filename.replace("\\", "/"))[:200] or "video"
            self._descriptor = os.open(self.video_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        else:
            if len(self.form.fields) >= MAX_FIELDS:
                self._fail(InvalidRequestError(f"The form has more than {MAX_FIELDS} fields."))
                return
            self._text = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.error is not None:
            return
        if self._name == FILE_FIELD and self._descriptor is not None:
            # Writes land in the page cache (tens of microseconds per chunk); one fsync at the end.
            view = memoryview(data)[start:end]
            while view:
                written = os.write(self._descriptor, view)
                view = view[written:]
            self.form.video_bytes += end - start
        elif self._text is not None:
            self._text.extend(data[start:end])
            if len(self._text) > MAX_FIELD_BYTES:
                self._fail(InvalidRequestError(f"The field '{self._name}' is longer than {MAX_FIELD_BYTES} bytes."))
                self._text = None

    def _part_end(self) -> None:
        if self._name == FILE_FIELD and self._descriptor is not None:
            os.fsync(self._descriptor)
            os.close(self._descriptor)
            self._descriptor = None
        elif self._text is not None and self._name:
            if self._name in self.form.fields:
                self._fail(InvalidRequestError(f"The field '{self._name}' is given twice; give it once."))
            self.form.fields[self._name] = self._text.decode("utf-8", errors="replace")
        self._name = None
        self._text = None

    def close(self) -> None:
        if self._descriptor is not None:
            with contextlib.suppress(OSError):
                os.close(self._descriptor)
            self._descriptor = None


async def receive_footage_form(request: Request, video_path: Path) -> FootageForm:
    """Reads the whole multipart body, the video into ``video_path`` (removed again on any failure)."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaTypeError(
            "POST /footage takes multipart/form-data with a 'video' file field (e.g. curl -F video=@clip.mp4)."
        )
    sink = _FormSink(video_path)
    try:
        try:
            parser = MultipartParser(boundary, sink.callbacks())
            async for chunk in request.stream():
                if chunk:
                    parser.write(chunk)
                if sink.error is not None:
                    raise sink.error
            parser.finalize()
        except FormParserError as error:
            raise MalformedBodyError(f"The body is not valid multipart/form-data ({error}).") from None
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise StorageFullError("The data directory's disk is full; the footage was not stored.") from None
            raise StorageUnavailableError(
                f"The footage could not be written to the spool ({error.strerror})."
            ) from None
        if sink.error is not None:
            raise sink.error
        return sink.form
    except BaseException:
        sink.close()
        with contextlib.suppress(FileNotFoundError):
            video_path.unlink()
        raise
    finally:
        sink.close()
