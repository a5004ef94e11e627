"""An S3-compatible server process for the media tests: moto's standalone server (``python -m moto.server``,
pip's ``moto[server]``) on a free loopback port, started and stopped by the tests as a user would.

moto is an emulator of the S3 API, not a storage server: it keeps objects in memory and is lost when it
stops. It is used because no real S3-compatible server can be installed on the test machines (Debian has no
MinIO package and nothing can be downloaded there); boto3 talks to it over HTTP exactly as to MinIO or AWS,
so the service's requests, errors and timeouts are real. The compose `scale` profile runs the real MinIO.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from live_server import free_port, port_listens, stop_process, wait_until_ready

__all__ = ["MotoS3Server", "S3_TEST_CREDENTIALS"]

#: moto accepts any key; boto3 needs some, from the standard variables the service reads too.
S3_TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret"}


class MotoS3Server:
    """``python -m moto.server -H 127.0.0.1 -p PORT``; ``endpoint`` is what REID_S3_ENDPOINT takes."""

    def __init__(self, log_path: Path, port: int | None = None):
        self.log_path = log_path
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> MotoS3Server:
        environment = {key: value for key, value in os.environ.items() if not key.startswith("REID_")}
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log_file, stderr=subprocess.STDOUT, env=environment,
            )  # fmt: skip
        wait_until_ready(self.process, lambda: port_listens(self.port), "moto server", self.log_path, timeout_s)
        return self

    def stop(self) -> None:
        """Terminates the server (SIGTERM, then SIGKILL) and waits for it."""
        stop_process(self.process)
        self.process = None

    def client(self):
        """A boto3 client of this server, independent of the service's (to look into the bucket)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=S3_TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=S3_TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])  # fmt: skip

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        answer = self.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for item in answer.get("Contents", ()))
