"""What every benchmark shares: one line that says which machine it ran on, and a median of timed runs."""

from __future__ import annotations

import os
import platform
import statistics
import time


def describe() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def timed(fn, repeat: int) -> float:
    """The median of `repeat` runs of fn(), in seconds."""
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)
