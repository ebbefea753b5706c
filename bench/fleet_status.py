"""Fleet status time against the number of hosts (1, 5, 20, 50): one parallel sweep against one host after another.

    .venv/bin/python bench/fleet_status.py

Each host is a real systemd in its own namespaces running a real sshd on a
loopback port (the fleet tests' hosts, tests/sshhosts.py); slotctl reaches them
with Fabric. Prints, per fleet size, the wall time of `slotctl status --all`
(one sweep, hosts in parallel) and of the same hosts asked one after another
(`slotctl status --host X` each), and how each grows from one host; and the
controller's own cost per host in the sweep (its CPU seconds and peak memory,
from the kernel's rusage of that one process), so that a bigger fleet's cost can
be read off and anything worse than linear shows as a growing per-host figure.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

import yaml  # noqa: E402

from _machine import describe  # noqa: E402
from sshhosts import keypair, remote_defaults, start_host  # noqa: E402

SIZES = (1, 5, 20, 50)


def slotctl(inventory: Path, *args: str) -> tuple[float, float, float]:
    """Wall seconds, and the controller process's own CPU seconds and peak RSS in MB (not the remote hosts')."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "slotctl", "-i", str(inventory), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0  # reaped by wait4
    return time.perf_counter() - t, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


# Each sandboxed systemd holds 4 inotify instances; the kernel's default of 128 per user stops at ~30 hosts.
INOTIFY = Path("/proc/sys/fs/inotify/max_user_instances")


def main() -> None:
    limit = int(INOTIFY.read_text())
    need = 8 * max(SIZES) + 128
    if limit < need:
        INOTIFY.write_text(str(need))
        print(f"fs.inotify.max_user_instances raised from {limit} to {need} for this run (restored after it)")
    try:
        run()
    finally:
        INOTIFY.write_text(str(limit))


def run() -> None:
    work = Path(tempfile.mkdtemp(prefix="slotctl-bench-fleet-"))
    key = keypair(work / "client_key")
    known = work / "known_hosts"
    known.touch()
    hosts = []
    try:
        for i in range(max(SIZES)):
            hosts.append(start_host(f"h{i:02d}", work / f"h{i:02d}", key.with_suffix(".pub"), known))
        print(f"machine: {describe()}")
        print(f"{'hosts':>5}  {'one sweep':>10}  {'one by one':>11}  {'sweep vs 1 host':>16}  {'one by one vs sweep':>20}"
              f"  {'controller CPU/host':>20}  {'controller MB':>14}  {'MB/host over 1 host':>20}")
        base = base_mb = None
        for n in SIZES:
            # The hosts share this filesystem: this controller's own slotctl stands in for one `slotctl setup` installs.
            remote = dict(remote_defaults(key, known), slotctl=str(Path(sys.executable).with_name("slotctl")))
            doc = {"version": 1, "defaults": {"repo": str(work), "remote": remote},
                   "hosts": {h.name: {"ssh": h.ssh, "root": str(h.root)} for h in hosts[:n]}}
            inv = work / f"inventory-{n}.yaml"
            inv.write_text(yaml.safe_dump(doc))
            runs = [slotctl(inv, "status", "--all", "--json") for _ in range(3)]
            sweep = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            mb = statistics.median(r[2] for r in runs)
            serial = sum(slotctl(inv, "status", "--host", h.name, "--json")[0] for h in hosts[:n])
            base = base or sweep
            base_mb = base_mb or mb
            per_host_mb = (mb - base_mb) / (n - 1) if n > 1 else 0.0
            print(f"{n:>5}  {sweep:>9.2f}s  {serial:>10.2f}s  {sweep / base:>15.1f}x  {serial / sweep:>19.1f}x"
                  f"  {cpu / n * 1000:>17.0f} ms  {mb:>11.0f} MB  {per_host_mb:>17.2f} MB")
    finally:
        for h in hosts:
            h.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
