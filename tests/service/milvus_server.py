"""A Milvus Lite server process (`python -m milvus_lite server`, pip's milvus-lite) on a free loopback port,
as a user would start one: several processes (test code, service replicas) connect to it over gRPC,
which a Milvus Lite ``.db`` file opened in-process does not allow. Stopped and restarted by tests that
take Milvus away."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from live_server import free_port

__all__ = ["MilvusLiteServer"]


class MilvusLiteServer:
    """``python -m milvus_lite server --data-dir DIR --port PORT``; ``uri`` is what REID_MILVUS_URI takes."""

    def __init__(self, data_dir: Path, log_path: Path, port: int | None = None):
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> MilvusLiteServer:
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
                 "--port", str(self.port)],
                stdout=log_file, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"milvus_lite server exited:\n{self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"milvus_lite server did not listen:\n{self.log_path.read_text()[-2000:]}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Terminates the server (SIGTERM, then SIGKILL) and waits for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(20)
        self.process = None
