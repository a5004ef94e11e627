"""A real service process on a free loopback port (`python -m service` or `uvicorn service.app:app`), for
tests that restart, signal, kill or starve it; always reaped by the context manager."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

__all__ = ["API_KEY", "REPO_ROOT", "LiveServer", "PrivateTmpfs", "free_port", "live_server", "server_environment"]

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "server-test-key"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_listens(port: int) -> bool:
    """Whether something accepts connections on the loopback port (an OSError when not yet)."""
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def wait_until_ready(process: subprocess.Popen, ready: Callable[[], bool], name: str, log_path: Path,
                     timeout_s: float, poll_s: float = 0.1) -> None:
    """Polls ``ready()`` (an OSError counts as not yet) until it holds; an AssertionError with the tail of the
    process's log when the process exits first or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise AssertionError(f"{name} exited:\n{log_path.read_text()[-2000:]}")
        try:
            if ready():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} did not answer:\n{log_path.read_text()[-2000:]}")
        time.sleep(poll_s)


def stop_process(process: subprocess.Popen | None) -> None:
    """Terminates a server process (SIGTERM, then SIGKILL after 20 s) and waits for it."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(20)


def server_environment(model: Path, data_dir: Path, **extra: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("REID_")}
    environment.update(
        PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1", REID_MODEL_PATH=str(model), REID_DATA_DIR=str(data_dir),
        REID_DEVICE="cpu", REID_INTRA_OP_THREADS="1", REID_API_KEY=API_KEY, REID_MAX_UPLOAD_BYTES="2000000",
        REID_LOG_LEVEL="INFO",
    )
    environment.update(extra)
    return environment


class LiveServer:
    """One server process. ``command``: "module" (`python -m service`), "uvicorn" (`uvicorn service.app:app`) or
    "uvicorn-guarded" (the same with the service's HTTP protocol, `--http service.http_protocol:GuardedH11Protocol`)
    or "uvicorn-factory-guarded" (`uvicorn --factory service.app:create_app` with that protocol);
    ``prefix`` runs it under another command (e.g. ``nsenter`` for a private mount)."""

    def __init__(self, model: Path, data_dir: Path, log_path: Path, prefix: Sequence[str] = (),
                 command: str = "module", **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        launcher = {
            "module": ["service"],
            "uvicorn": ["uvicorn", "service.app:app"],
            "uvicorn-guarded": ["uvicorn", "service.app:app", "--http", "service.http_protocol:GuardedH11Protocol"],
            "uvicorn-factory-guarded": ["uvicorn", "--factory", "service.app:create_app",
                                        "--http", "service.http_protocol:GuardedH11Protocol"],
        }[command]
        argv = [sys.executable, "-m", *launcher, "--host", "127.0.0.1", "--port", str(self.port)]
        with log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [*prefix, *argv], cwd=REPO_ROOT, env=server_environment(model, data_dir, **env),
                stdout=log_file, stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request_log_lines(self, request_id: str, wait_s: float = 5.0) -> list[str]:
        """The log lines naming a request id; waits a little, since a line is written after the answer."""
        deadline = time.monotonic() + wait_s
        while True:
            lines = [line for line in self.log().splitlines() if f"id={request_id}" in line]
            if lines or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Waits until /healthz answers; raises with the log's tail if the process exits or hangs."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not come up:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def client(self, key: str | None = API_KEY, **kwargs) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=kwargs.pop("timeout", 60.0), **kwargs)

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, then the exit status (SIGKILL and an AssertionError if it does not exit in time)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"server ignored SIGTERM for {timeout_s} s:\n{self.log()[-3000:]}") from None

    def stop(self) -> None:
        """Ends the process whatever its state (finalizers)."""
        if self.process.poll() is None:
            try:
                self.terminate(30)
            except AssertionError:
                pass


@contextmanager
def live_server(model: Path, data_dir: Path, log_path: Path, prefix: Sequence[str] = (), ready: bool = True,
                command: str = "module", **env: str) -> Iterator[LiveServer]:
    """A started (and, with ``ready``, answering) server that is stopped on exit, even after a failure."""
    server = LiveServer(model, data_dir, log_path, prefix, command, **env)
    try:
        if ready:
            server.wait_ready()
        yield server
    finally:
        server.stop()


class PrivateTmpfs:
    """A small tmpfs on ``mount_point`` that only processes started through `prefix` see: a real filesystem
    that fills up, without touching the machine's mounts. A holder process keeps the mount namespace alive
    across server restarts; closing it (or its death) removes the mount.

    Raises OSError from `start` when this machine does not allow private mounts (no root, no user
    namespaces).
    """

    def __init__(self, mount_point: Path, size: str):
        self.mount_point = mount_point
        self.size = size
        self.holder: subprocess.Popen | None = None

    def start(self) -> PrivateTmpfs:
        self.mount_point.mkdir(parents=True, exist_ok=True)
        user_namespace = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
        script = 'mount -t tmpfs -o size="$1" reid-test-tmpfs "$0" && echo mounted && exec sleep 3600'
        self.holder = subprocess.Popen(
            ["unshare", *user_namespace, "--mount", "--propagation", "private", "sh", "-c", script,
             str(self.mount_point), self.size],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        line = self.holder.stdout.readline().strip()
        if line != "mounted":
            error = self.holder.stderr.read() if self.holder.poll() is not None else "no answer"
            self.close()
            raise OSError(f"cannot mount a private tmpfs here: {error.strip()}")
        return self

    @property
    def prefix(self) -> list[str]:
        """Command prefix that runs a program inside the namespace (nsenter execs: the pid stays the same)."""
        user_namespace = [] if os.geteuid() == 0 else ["--user", "--preserve-credentials"]
        return ["nsenter", "--target", str(self.holder.pid), *user_namespace, "--mount", "--"]

    def run(self, script: str) -> subprocess.CompletedProcess:
        """Runs a shell script inside the namespace (fill the disk, free it, inspect it)."""
        return subprocess.run([*self.prefix, "sh", "-c", script], capture_output=True, text=True, timeout=60,
                              check=False)

    def close(self) -> None:
        if self.holder is not None and self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait(10)
        if self.holder is not None:
            for stream in (self.holder.stdout, self.holder.stderr):
                stream.close()
