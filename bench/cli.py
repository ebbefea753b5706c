"""CLI start-up: `slotctl --help` and a local `slotctl status`, against the interpreter starting and doing nothing.

    .venv/bin/python bench/cli.py

Targets: --help under 150 ms, status under 200 ms (fabric, git, jinja2 and apprise are imported only where needed;
status skips Jinja while the units' inputs are unchanged).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _host import bench_host  # noqa: E402
from _machine import describe  # noqa: E402

RUNS = 15


def wall(argv: list[str], env: dict | None = None) -> float:
    runs = []
    for _ in range(RUNS):
        t = time.perf_counter()
        subprocess.run(argv, capture_output=True, env=env, check=False)
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def main() -> None:
    with bench_host() as host:
        bare = wall([sys.executable, "-c", "pass"])
        helps = wall([sys.executable, "-m", "slotctl", "--help"])
        status = wall(host.slotctl("status"), host.env())
        code = subprocess.run(host.slotctl("status"), env=host.env(), capture_output=True).returncode
    print(f"machine: {describe()}")
    print(f"python -c pass        {bare * 1000:6.0f} ms")
    print(f"slotctl --help        {helps * 1000:6.0f} ms   {helps / bare:4.1f}x the bare interpreter (target < 150 ms)")
    print(f"slotctl status        {status * 1000:6.0f} ms   {status / bare:4.1f}x the bare interpreter (target < 200 ms; exit {code})")


if __name__ == "__main__":
    main()
