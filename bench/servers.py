"""Server processes a benchmark starts (Milvus Lite, moto's S3): a free loopback port, and a start that
waits until the server listens."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_listening(command: list[str], port: int, name: str, log: Path | None = None,
                    timeout_s: float = 60.0) -> subprocess.Popen:
    """Starts ``command`` (its output to ``log``, or dropped) and returns once it accepts connections on the
    loopback ``port``; killed and a RuntimeError (with the log's tail) when it exits or ``timeout_s`` passes."""
    output = log.open("wb") if log is not None else subprocess.DEVNULL
    try:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    finally:
        if log is not None:
            output.close()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                tail = f":\n{log.read_text()[-2000:]}" if log is not None else ""
                raise RuntimeError(f"{name} did not start{tail}") from None
            time.sleep(0.1)
