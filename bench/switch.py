"""How long the bot is not trading during a deploy, and how long a rollback takes.

    .venv/bin/python bench/switch.py

switch:   from the old bot's exit (the end of slotctl's stop step) to the new bot's
          first heartbeat, against the bot's own cold start measured alone (start
          the unit, wait for its first heartbeat). Target: slotctl adds < 150 ms.
rollback: `slotctl rollback` wall time minus the stability window. Target: < 1.5 s.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _host import bench_host  # noqa: E402
from _machine import describe  # noqa: E402

RUNS = 5


def first_heartbeat_of_a_new_pid(path: Path, old_pid: int, stop: threading.Event, out: list) -> None:
    while not stop.is_set():
        try:
            hb = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            hb = None
        if hb and hb.get("pid") != old_pid:
            out.append(hb["ts"])
            return
        time.sleep(0.002)


def main() -> None:
    window = 3.0
    with bench_host(window) as host:
        ctx = host.ctx
        hb_path = ctx.host.path(ctx.host.health.heartbeat_file)
        unit = ctx.host.service

        colds = []
        for _ in range(RUNS):
            old = ctx.systemd.stop(unit).main_pid or json.loads(hb_path.read_text())["pid"]
            seen: list[float] = []
            done = threading.Event()
            t = threading.Thread(target=first_heartbeat_of_a_new_pid, args=(hb_path, old, done, seen))
            t.start()
            ctx.systemd.reset_failed(unit)  # this loop starts the unit more often than its StartLimitBurst allows
            t0 = time.time()
            ctx.systemd.start(unit)
            t.join(timeout=30)
            done.set()
            assert seen, f"no heartbeat from a new pid (old {old}): {hb_path.read_text()}"
            colds.append(seen[0] - t0)

        downs = []
        release = "v2"
        for _ in range(RUNS):
            old = json.loads(hb_path.read_text())["pid"]
            seen = []
            done = threading.Event()
            t = threading.Thread(target=first_heartbeat_of_a_new_pid, args=(hb_path, old, done, seen))
            t.start()
            assert host.deploy(release) == 0
            done.set()
            t.join()
            records = [json.loads(line) for line in ctx.layout.journal.read_text().splitlines()]
            stop_end = [r["ts"] for r in records if r.get("step") == "stop" and r.get("phase") == "end"][-1]
            downs.append(seen[0] - stop_end)
            release = "v1" if release == "v2" else "v2"

        rollbacks = []
        for _ in range(3):
            t0 = time.perf_counter()
            proc = subprocess.run(host.slotctl("rollback"), env=host.env(), capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr
            rollbacks.append(time.perf_counter() - t0 - window)

    cold, down, rb = statistics.median(colds), statistics.median(downs), statistics.median(rollbacks)
    print(f"machine: {describe()}")
    print(f"bot cold start alone        {cold * 1000:7.0f} ms   (median of {RUNS})")
    print(f"downtime during a deploy    {down * 1000:7.0f} ms   = {down / cold:.2f}x the cold start; "
          f"slotctl adds {(down - cold) * 1000:.0f} ms (target < 150 ms)")
    print(f"rollback minus the window   {rb * 1000:7.0f} ms   (window {window:g} s; target < 1500 ms)")


if __name__ == "__main__":
    main()
