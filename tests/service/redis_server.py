"""A Redis server process (Debian's `redis-server`) on a free loopback port, as a user would start one, for the
footage queue's tests (REID_JOB_QUEUE=redis). Without the package the tests are skipped saying why, unless
REID_REDIS_TESTS=required (`make test` as root, so CI, installs it and sets that)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from live_server import free_port, stop_process, wait_until_ready

__all__ = ["RedisServer", "redis_server_or_skip"]

REDIS_SERVER = os.environ.get("REID_REDIS_SERVER", "redis-server")


def redis_server_or_skip() -> str:
    """The redis-server executable, or a skip (a failure when REID_REDIS_TESTS=required)."""
    path = shutil.which(REDIS_SERVER)
    if path is None:
        reason = f"{REDIS_SERVER} is not installed (Debian: apt-get install -y redis-server)"
        if os.environ.get("REID_REDIS_TESTS") == "required":
            pytest.fail(f"REID_REDIS_TESTS=required but {reason}")
        pytest.skip(reason)
    return path


class RedisServer:
    """``redis-server`` on a free port, data (an append-only file, like compose's) in ``data_dir``."""

    def __init__(self, executable: str, data_dir: Path):
        self.executable = executable
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 30.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.data_dir / "redis.log"
        with log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
                 "--appendonly", "yes", "--save", "", "--protected-mode", "yes"],
                stdout=log_file, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_until_ready(self.process, self._answers_ping, "redis-server", log_path, timeout_s, poll_s=0.05)
        return self

    def _answers_ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None
