"""What every benchmark table says about the machine it was measured on."""

from __future__ import annotations

import os
import platform
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
