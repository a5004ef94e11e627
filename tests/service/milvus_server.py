"""A Milvus Lite server process (`python -m milvus_lite server`, pip's milvus-lite) on a free loopback port,
as a user would start one: several processes (test code, service replicas) connect to it over gRPC,
which a Milvus Lite ``.db`` file opened in-process does not allow. Stopped and restarted by tests that
take Milvus away."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from live_server import free_port, port_listens, stop_process, wait_until_ready

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
        wait_until_ready(self.process, lambda: port_listens(self.port), "milvus_lite server", self.log_path, timeout_s)
        return self

    def stop(self) -> None:
        """Terminates the server (SIGTERM, then SIGKILL) and waits for it."""
        stop_process(self.process)
        self.process = None
