"""What every benchmark table says about the machine it was measured on."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path


def machine_description() -> str:
    """CPU model, cores, memory and OS, as the kernel reports them."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, {platform.system()} {platform.machine()}"


def load_average() -> str:
    """The 1/5/15-minute load averages, to tell a quiet machine from a shared one."""
    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


class PausedDuringTiming:
    """Stops other processes (SIGSTOP) for each timed window and resumes them (SIGCONT) right after.

    For a shared machine whose background jobs would otherwise dominate the latencies: only the timed
    loops run with them stopped, never data generation or index builds. Every window is recorded (start,
    seconds) for the report; a watchdog resumes the processes if one window outlasts ``max_window_s``,
    and `resume` (also registered with atexit) leaves them running whatever happens.
    """

    def __init__(self, pids: list[int] | Callable[[], list[int]], max_window_s: float = 240.0,
                 max_total_s: float = 1080.0):
        import atexit

        # A callable is asked again at each window (the background jobs may have been restarted since).
        self._find = pids if callable(pids) else (lambda: list(pids))
        self.pids = self._find()
        self.seen: set[int] = set(self.pids)
        self.max_window_s, self.max_total_s = max_window_s, max_total_s
        self.windows: list[tuple[str, float]] = []
        self._stopped = False
        atexit.register(self.resume)

    def _signal(self, number: int) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, number)
            except ProcessLookupError:
                pass

    def resume(self) -> None:
        if self._stopped:
            self._signal(signal.SIGCONT)
            self._stopped = False

    def total_s(self) -> float:
        return sum(seconds for _, seconds in self.windows)

    @contextlib.contextmanager
    def window(self) -> Iterator[None]:
        self.pids = self._find()
        self.seen.update(self.pids)
        if not self.pids or self.total_s() >= self.max_total_s:
            yield
            return
        started_at = datetime.now(timezone.utc).strftime("%H:%M:%S")
        watchdog = threading.Timer(min(self.max_window_s, self.max_total_s - self.total_s()), self.resume)
        started = time.perf_counter()
        self._signal(signal.SIGSTOP)
        self._stopped = True
        watchdog.start()
        try:
            yield
        finally:
            watchdog.cancel()
            self.resume()
            self.windows.append((started_at, time.perf_counter() - started))

    def describe(self) -> str:
        if not self.pids:
            return "no process was paused"
        longest = max((seconds for _, seconds in self.windows), default=0.0)
        first = self.windows[0][0] if self.windows else "-"
        return (f"processes {', '.join(map(str, self.pids))} paused (SIGSTOP/SIGCONT) during the "
                f"{len(self.windows)} timed windows only, {self.total_s():.0f} s in all (longest {longest:.0f} s; "
                f"first at {first} UTC)")


class NotPaused(PausedDuringTiming):
    def __init__(self) -> None:
        super().__init__([])


def write_section(path: str | Path, heading: str, body: str) -> None:
    """Put ``body`` under the ``## heading`` section of the markdown file at ``path``, replacing that section
    (up to the next ``## `` heading) when it is there, else appending it: benchmarks that share a results
    file each rewrite only their own part."""
    path = Path(path)
    title = f"## {heading}"
    lines = path.read_text().splitlines() if path.is_file() else []
    section = [title, "", *body.strip("\n").splitlines(), ""]
    if title in lines:
        start = lines.index(title)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = section
    else:
        if lines and lines[-1].strip():
            lines.append("")
        lines.extend(section)
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
