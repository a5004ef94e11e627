"""Where media bytes live: `MediaBackend`, a small blob interface with two implementations.

- `LocalMediaBackend`: files under REID_DATA_DIR, one per key (``thumbnails/x.jpg`` is
  ``REID_DATA_DIR/thumbnails/x.jpg``), each written to a temporary name, fsync'd and renamed. One host.
- `S3MediaBackend`: objects in an S3-compatible bucket (MinIO, AWS S3, ...) through boto3, the maintained
  AWS client, so that every API replica and footage worker sees the same media. A PUT that returned is
  durable on the server; an object is never visible half-written. Credentials come from boto3's standard
  chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...), never from REID_* settings.

Every failure of the storage itself is a `StorageFullError` (507, a full local disk) or a
`StorageUnavailableError` (503, a failing disk, an unreachable or refusing S3 server): never a 500.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import functools
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from service.errors import StartupError, StorageFullError, StorageUnavailableError

log = logging.getLogger(__name__)

TEMPORARY_SUFFIX = ".tmp"
#: Objects deleted per S3 DeleteObjects call (the API's maximum).
S3_DELETE_BATCH = 1000
#: Requests one replica sends at once for one tracklet's media (T + 1 objects: 9 for T=8), all enrolls
#: together sharing the threads.
S3_CONCURRENCY = 16


class MediaBackend(Protocol):
    """Keys are ``/``-separated relative paths (``frames/<id>/0.jpg``); values are bytes or whole files."""

    #: A shared store (several processes write it): the orphan sweep then leaves recent objects alone.
    shared: bool

    def put(self, key: str, data: bytes) -> None:
        """Stores ``data`` durably under ``key`` (replacing it); visible whole or not at all."""

    def get(self, key: str) -> bytes | None:
        """The bytes of ``key``; None when there is no such key."""

    def delete(self, key: str) -> None:
        """Removes ``key`` (nothing when absent)."""

    def delete_prefix(self, prefix: str) -> None:
        """Removes every key that starts with ``prefix`` (which ends with ``/``)."""

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        """`put` of each (key, data), concurrently where that helps; when it raises, some may be stored."""

    def delete_prefixes(self, prefixes: list[str]) -> None:
        """`delete_prefix` of each, concurrently where that helps."""

    def list(self, prefix: str) -> Iterator[tuple[str, float]]:
        """(key, modification time in epoch seconds) of every key under ``prefix`` (ending with ``/``)."""

    def put_file(self, key: str, source: Path) -> None:
        """Stores the file at ``source`` under ``key``, streamed (footage can be gigabytes)."""

    def get_file(self, key: str, destination: Path) -> bool:
        """Writes ``key`` to ``destination``, streamed; False when there is no such key."""

    def describe(self) -> str:
        """Where the media is, for logs and messages."""


# -- local directory ---------------------------------------------------------------------------------------
def media_write_error(error: OSError) -> StorageFullError | StorageUnavailableError:
    """The service error for a failed media write (the disk, not the request): 507 when the disk is full, else
    503, both saying that nothing was half-written, like the gallery's own writes."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError(
            "The gallery's disk is full, so the tracklet was not stored (nothing was half-written). "
            "Searches still work; free space in the data directory and retry."
        )
    return StorageUnavailableError(
        f"The tracklet's media cannot be written right now ({error.strerror or error}), so the tracklet was not "
        "stored (nothing was half-written); retry later."
    )


def write_durably(path: Path, data: bytes) -> None:
    """Temporary file, fsync, rename: a reader never sees half of it, a crash leaves at most a .tmp file."""
    temporary = path.with_name(path.name + TEMPORARY_SUFFIX)
    try:
        with temporary.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


class LocalMediaBackend:
    """Files under ``root`` (REID_DATA_DIR), laid out exactly as the keys say. ``shared``: other processes write
    the same directory (REID_JOB_QUEUE=redis, where replicas and workers share REID_DATA_DIR), so the orphan
    sweep leaves their recent media alone, as on S3."""

    def __init__(self, root: Path, shared: bool = False):
        self.root = Path(root)
        self.shared = shared
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        parts = key.split("/")
        if any(part in ("", ".", "..") for part in parts):  # keys are built by MediaStore; this is a guard
            raise ValueError(f"not a media key: {key!r}")
        return self.root.joinpath(*parts)

    def describe(self) -> str:
        return f"the directory {self.root}"

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        for key, data in items:
            self.put(key, data)

    def delete_prefixes(self, prefixes: list[str]) -> None:
        for prefix in prefixes:
            self.delete_prefix(prefix)

    def put(self, key: str, data: bytes) -> None:
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_durably(path, data)
        except OSError as error:
            raise media_write_error(error) from None

    def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:
            raise StorageUnavailableError(f"The media in {self.root} cannot be read right now ({error}).") from None

    def delete(self, key: str) -> None:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            pass
        except OSError as error:
            raise self._removal_error(error) from None

    def delete_prefix(self, prefix: str) -> None:
        folder = self.path(prefix.rstrip("/"))
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise self._removal_error(error) from None

    def _removal_error(self, error: OSError) -> StorageUnavailableError:
        """A file that cannot be removed (a failing disk, a damaged data directory): 503, never a 500."""
        return StorageUnavailableError(
            f"The media in {self.root} cannot be removed right now ({error.strerror or error}); retry later."
        )

    def list(self, prefix: str) -> Iterator[tuple[str, float]]:
        folder = self.path(prefix.rstrip("/"))
        for directory, _, names in os.walk(folder):
            relative = Path(directory).relative_to(self.root).as_posix()
            for name in names:
                with contextlib.suppress(OSError):  # removed meanwhile
                    yield f"{relative}/{name}", os.stat(os.path.join(directory, name)).st_mtime

    def put_file(self, key: str, source: Path) -> None:
        self._place(Path(source), self.path(key))

    def get_file(self, key: str, destination: Path) -> bool:
        source = self.path(key)
        if not source.is_file():
            return False
        self._place(source, Path(destination))
        return True

    @staticmethod
    def _place(source: Path, destination: Path) -> None:
        """A hard link when both are on one file system (footage is large: no copy), else a durable copy."""
        try:
            destination.parent.mkdir(parents=True, exist_ok=True)
            if destination.exists() and destination.samefile(source):
                return
            temporary = destination.with_name(destination.name + TEMPORARY_SUFFIX)
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            try:
                os.link(source, temporary)
            except OSError:
                with source.open("rb") as reader, temporary.open("wb") as writer:
                    shutil.copyfileobj(reader, writer, 1024 * 1024)
                    writer.flush()
                    os.fsync(writer.fileno())
            os.replace(temporary, destination)
        except OSError as error:
            raise media_write_error(error) from None


# -- S3-compatible object storage --------------------------------------------------------------------------
class S3MediaBackend:
    """Objects in ``bucket`` at ``endpoint`` (created on first start when missing)."""

    shared = True

    def __init__(self, endpoint: str, bucket: str, region: str = "us-east-1", timeout_s: float = 10.0,
                 client: Any = None):  # fmt: skip
        import boto3
        from botocore.config import Config

        self.endpoint = endpoint
        self.bucket = bucket
        config = Config(
            region_name=region, connect_timeout=timeout_s, read_timeout=timeout_s,
            max_pool_connections=S3_CONCURRENCY * 2,
            # Two attempts: a replica answers 503 within a few timeouts rather than retrying for minutes.
            retries={"max_attempts": 2, "mode": "standard"},
            # MinIO and most S3-compatible servers address buckets by path, not by host name.
            s3={"addressing_style": "path"},
        )  # fmt: skip
        self.client = client or boto3.client("s3", endpoint_url=endpoint, config=config)
        from boto3.s3.transfer import TransferConfig

        self.transfer = TransferConfig(multipart_threshold=64 * 1024 * 1024, multipart_chunksize=64 * 1024 * 1024)
        # boto3 clients are thread-safe; botocore's pool keeps 10 connections per host by default.
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=S3_CONCURRENCY, thread_name_prefix="s3")

    def describe(self) -> str:
        return f"the bucket {self.bucket} at {self.endpoint}"

    def _concurrently(self, calls: list[Callable[[], None]]) -> None:
        """Runs the calls on the backend's threads (each is one HTTP round trip: an enroll's T + 1 PUTs then
        cost about one round trip, not T + 1); waits for all, then raises the first failure."""
        if len(calls) <= 1:
            for call in calls:
                call()
            return
        futures = [self.executor.submit(call) for call in calls]
        concurrent.futures.wait(futures)
        for future in futures:
            future.result()

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        self._concurrently([functools.partial(self.put, key, data) for key, data in items])

    def delete_prefixes(self, prefixes: list[str]) -> None:
        self._concurrently([functools.partial(self.delete_prefix, prefix) for prefix in prefixes])

    def ensure_bucket(self) -> None:
        """Creates the bucket when it does not exist; StartupError when the server cannot be used."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as error:
            if _error_code(error) not in ("404", "NoSuchBucket", "NotFound"):
                raise StartupError(f"REID_MEDIA_BACKEND=s3: {self.describe()} cannot be used: {error}") from None
        except BotoCoreError as error:
            raise StartupError(f"REID_MEDIA_BACKEND=s3: {self.describe()} cannot be reached: {error}") from None
        try:
            self.client.create_bucket(Bucket=self.bucket)
            log.info("created the media bucket %s at %s", self.bucket, self.endpoint)
        except ClientError as error:
            if _error_code(error) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):  # another replica
                raise StartupError(f"REID_MEDIA_BACKEND=s3: cannot create {self.describe()}: {error}") from None
        except BotoCoreError as error:
            raise StartupError(f"REID_MEDIA_BACKEND=s3: {self.describe()} cannot be reached: {error}") from None

    @contextlib.contextmanager
    def _unavailable(self, doing: str) -> Iterator[None]:
        """Any failure of the server or the connection -> 503 with the reason, never a 500."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as error:
            raise StorageUnavailableError(
                f"The media store ({self.describe()}) cannot {doing} right now ({error}); retry later."
            ) from None

    def put(self, key: str, data: bytes) -> None:
        with self._unavailable("store media"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        with self._unavailable("read media"):
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as error:
                if _error_code(error) in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise
            return answer["Body"].read()

    def delete(self, key: str) -> None:
        with self._unavailable("delete media"):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def delete_prefix(self, prefix: str) -> None:
        keys = [key for key, _ in self.list(prefix)]
        with self._unavailable("delete media"):
            for start in range(0, len(keys), S3_DELETE_BATCH):
                batch = [{"Key": key} for key in keys[start:start + S3_DELETE_BATCH]]
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
                if answer.get("Errors"):
                    first = answer["Errors"][0]
                    raise StorageUnavailableError(
                        f"The media store ({self.describe()}) refused to delete {first.get('Key')}: "
                        f"{first.get('Code')} {first.get('Message')}; retry later."
                    )

    def list(self, prefix: str) -> Iterator[tuple[str, float]]:
        with self._unavailable("list media"):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for item in page.get("Contents", ()):
                    yield item["Key"], item["LastModified"].timestamp()

    def put_file(self, key: str, source: Path) -> None:
        from boto3.exceptions import S3UploadFailedError

        with self._unavailable("store the file"):
            try:
                self.client.upload_file(str(source), self.bucket, key, Config=self.transfer)
            except S3UploadFailedError as error:
                raise StorageUnavailableError(
                    f"The media store ({self.describe()}) refused the file: {error}; retry later."
                ) from None

    def get_file(self, key: str, destination: Path) -> bool:
        from botocore.exceptions import ClientError

        destination = Path(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        temporary = destination.with_name(destination.name + TEMPORARY_SUFFIX)
        with self._unavailable("read the file"):
            try:
                self.client.download_file(self.bucket, key, str(temporary), Config=self.transfer)
            except ClientError as error:
                with contextlib.suppress(OSError):
                    temporary.unlink()
                if _error_code(error) in ("NoSuchKey", "404", "NotFound"):
                    return False
                raise
            except BaseException:
                with contextlib.suppress(OSError):
                    temporary.unlink()
                raise
        os.replace(temporary, destination)
        return True


def _error_code(error: Any) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def open_backend(settings: Any) -> MediaBackend:
    """The backend REID_MEDIA_BACKEND names; StartupError (one line) when it cannot be used."""
    if settings.media_backend == "local":
        # With the Redis queue, API replicas and workers on one host share the data directory.
        return LocalMediaBackend(settings.data_dir, shared=getattr(settings, "job_queue", "local") == "redis")
    if settings.media_backend == "s3":
        if not settings.s3_endpoint:
            raise StartupError("REID_MEDIA_BACKEND=s3 needs REID_S3_ENDPOINT (e.g. http://minio:9000)")
        try:
            import boto3  # noqa: F401
        except ImportError as error:
            raise StartupError(f"REID_MEDIA_BACKEND=s3 needs boto3 (pip install boto3): {error}") from None
        backend = S3MediaBackend(settings.s3_endpoint, settings.s3_bucket, settings.s3_region, settings.s3_timeout_s)
        backend.ensure_bucket()
        return backend
    raise StartupError(f"REID_MEDIA_BACKEND={settings.media_backend!r} is not a media backend; use local or s3")
