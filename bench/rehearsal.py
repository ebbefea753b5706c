"""What a rehearsal costs the live bot, and what it saves it.

    .venv/bin/python bench/rehearsal.py        (about 2.5 minutes)

bad release:  a bad release of the reference bot (fault crash_at_start, then lose_positions) deployed
              RUNS times with --no-rehearsal (drain, stop the live bot, start the bad one, fail its
              probes, roll back, undrain) and RUNS times with a rehearsal (it runs beside the live bot
              and is rejected there). Not trading: the longest gap between the live bot's trading
              heartbeats over the deploy, minus its normal gap just before. A trading heartbeat is an
              undrained one from a good release: the bad release's own do not count. Beside it, the
              same measure over 3 s with no deploy: the tick's own jitter, the floor of the measure.
              Also: whether the live bot's PID changed, whether its open positions all came through.
              Target: 0 ms with a rehearsal (no more than the floor), the PID unchanged.
tick latency: the live bot's per-tick latency (refbot's tick_stats: from when a tick was due to its
              heartbeat written, fsync included), p50 and p99 over SLICE s alone and over SLICE s from
              the start of a rehearsal of a good release (its state copy, its unit, its bot; the build
              before it is a deploy's cost with or without one), ROUNDS rounds in ABBA order with
              os.sync() before each half, so the box's background I/O weighs on both halves alike.
              Measured on the idle box, then with one busy loop per core during both halves: with a
              spare core nothing slows the live bot down, so the idle row alone would flatter the
              rehearsal; with every core busy its processes compete for CPU as on a loaded host.
              The per-round range of the ratio says how much of it is noise. The rehearsal's
              CPUWeight/IOWeight act only where the sandbox's systemd has the cpu and io cgroup
              controllers: the line says which it has. Target: p99 less than 5% worse (< 1.05x).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _host import BenchHost, bench_host  # noqa: E402
from _machine import describe  # noqa: E402
from slotctl import refbot  # noqa: E402
from slotctl.ops.build import build, plan  # noqa: E402
from slotctl.ops.deploy import deploy  # noqa: E402
from slotctl.ops.rehearse import rehearse  # noqa: E402
from slotctl.ops.session import exclusive  # noqa: E402

RUNS = 3
SLICE = 5.0  # seconds of ticks per half of the latency comparison
ROUNDS = 4
TICK = 0.02  # fast ticks: fine heartbeat gaps, and enough ticks in a slice for a p99
# Same config in every release (the drift check refuses a deploy whose config differs otherwise); positions open
# about every second and are never closed, so a bad release always has some to lose.
CONFIG = {"tick": TICK, "tick_stats": True, "open_every": 50, "hold_seconds": 100000}
FAULTS = ("crash_at_start", "lose_positions")


class Heartbeats(threading.Thread):
    """Every heartbeat the live heartbeat file shows, as (ts, release, drained): polled far faster than the bot
    ticks; the bot's own ts, so the polling adds no error."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.seen, self.done = path, [], threading.Event()

    def run(self) -> None:
        last = None
        while not self.done.is_set():
            try:
                hb = json.loads(self.path.read_text())
            except (FileNotFoundError, ValueError):
                hb = None
            if hb and hb["ts"] != last:
                last = hb["ts"]
                # A drained bot heartbeats but opens nothing: not trading.
                self.seen.append((hb["ts"], hb.get("release"), bool(hb.get("drain"))))
            time.sleep(0.001)


def wait_for(what, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while not what():
        if time.monotonic() > end:
            raise TimeoutError(what)
        time.sleep(0.01)


def not_trading(host: BenchHost, during, bad: str | None = None) -> float:
    """Seconds the live bot did not trade while during() ran: its longest gap between trading heartbeats (a good
    release's, undrained) minus its normal gap, the median over the second before."""
    hb_path = host.ctx.host.path(host.ctx.host.health.heartbeat_file)
    watch = Heartbeats(hb_path)
    watch.start()
    time.sleep(1)
    during()
    time.sleep(10 * TICK)  # the heartbeats right after it
    watch.done.set()
    watch.join()
    trading = [ts for ts, release, drained in watch.seen if release != bad and not drained]
    gaps = [b - a for a, b in zip(trading, trading[1:], strict=False)]
    return max(gaps) - statistics.median(gaps[:int(0.8 / TICK)])


def bad_deploy(host: BenchHost, bad: str, rehearsal: bool) -> tuple[float, bool, bool]:
    """(not-trading seconds, live PID changed, all open positions kept) for one deploy of a bad release."""
    ctx = host.ctx
    hb_path = ctx.host.path(ctx.host.health.heartbeat_file)
    wait_for(lambda: json.loads(hb_path.read_text())["open_positions"] > 0)
    pid = ctx.systemd.state(ctx.host.service).main_pid
    before = set(ctx.positions().ids)

    def run() -> None:
        with exclusive(ctx) as (deploy_id, _):
            out = deploy(ctx, host.sha[bad], deploy_id=deploy_id, rehearsal=rehearsal)
        assert out.exit_code == 1, f"{bad}, rehearsal {rehearsal}: exit {out.exit_code}: {out.summary}"
        assert ("rejected in rehearsal" in out.summary) == rehearsal, out.summary

    down = not_trading(host, run, bad)
    return down, ctx.systemd.state(ctx.host.service).main_pid != pid, before <= set(ctx.positions().ids)


def tick_latencies(host: BenchHost, since: float, until: float) -> list[float]:
    path = host.ctx.host.root / "shared/control/tick_stats"
    out = []
    for line in path.read_text().splitlines():
        ts, ms = line.split()
        if since <= float(ts) < until:
            out.append(float(ms))
    return out


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def settle() -> None:
    """Flush what earlier steps left dirty: on ext4 it would land in whichever half's fsyncs come next."""
    os.sync()
    time.sleep(0.5)


def latency_halves(host: BenchHost, slot: str, good: str) -> list[tuple[list[float], list[float]]]:
    """ROUNDS of (alone, beside): the live bot's tick latencies over SLICE seconds with nothing beside it, and over
    SLICE seconds from the start of a rehearsal of the release built in slot (ops.rehearse, as a deploy calls it).
    The order alternates (ABBA...), so a drift in the box's background I/O weighs on both halves alike."""
    rounds = []
    for i in range(ROUNDS):
        halves = {}
        for beside in (False, True) if i % 2 == 0 else (True, False):
            settle()
            t0 = time.time()
            if beside:
                with exclusive(host.ctx):
                    result = rehearse(host.ctx, slot, host.sha[good])
                assert result.ok and result.seconds >= SLICE, result.line()
            else:
                time.sleep(SLICE)
            halves[beside] = tick_latencies(host, t0, t0 + SLICE)
        rounds.append((halves[False], halves[True]))
    return rounds


def busy_loops() -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]


def controllers(host: BenchHost) -> str:
    """The cgroup controllers the sandbox's systemd may use: without cpu and io, CPUWeight and IOWeight do nothing."""
    path = Path(f"/proc/{host.sandbox.init_pid}/root/sys/fs/cgroup/cgroup.controllers")
    try:
        return path.read_text().strip() or "none"
    except OSError as e:
        return f"not known ({e.strerror})"


def main() -> None:
    releases = [refbot.Release("v1", config=CONFIG), refbot.Release("v2", tradekit="1.1.0", config=CONFIG),
                *(refbot.Release(f"bad-{f}", fault=f, config=CONFIG) for f in FAULTS)]
    bad_rows = []
    latency_rows = []
    with bench_host(window=2, releases=releases) as host:
        cgroups = controllers(host)
        settle()
        floor = [not_trading(host, lambda: time.sleep(3)) for _ in range(RUNS)]
        for fault in FAULTS:
            row = {}
            for rehearsal in (False, True):
                host.reconfigure(rehearsal={"window": 2} if rehearsal else None)
                row[rehearsal] = [bad_deploy(host, f"bad-{fault}", rehearsal) for _ in range(RUNS)]
            bad_rows.append((fault, row))

        # Each half is timed from the rehearsal's start; its window, after the state copy, outlasts the half.
        host.reconfigure(rehearsal={"window": SLICE})
        with exclusive(host.ctx):
            planned = plan(host.ctx, host.sha["v2"])
            build(host.ctx, planned=planned)  # once, before: a deploy builds with or without a rehearsal
        latency_rows.append(("idle", latency_halves(host, planned.slot, "v2")))
        hogs = busy_loops()
        try:
            latency_rows.append((f"{len(hogs)} busy loops", latency_halves(host, planned.slot, "v2")))
        finally:
            for h in hogs:
                h.kill()
                h.wait()

    print(f"machine: {describe()}")
    print(f"A bad release's cost to the live bot: not-trading time (longest gap between its trading heartbeats "
          f"minus its normal gap, tick {TICK * 1000:.0f} ms), median [max] of {RUNS} runs")
    print(f"  {'fault':<16} {'--no-rehearsal':<40} {'with rehearsal':<40}")
    floor_ms = [d * 1000 for d in floor]
    print(f"  {'(no deploy)':<16} {statistics.median(floor_ms):6.0f} ms [{max(floor_ms):5.0f}]  the tick's own jitter "
          "over 3 s: the floor of this measure")
    for fault, row in bad_rows:
        cells = []
        for rehearsal in (False, True):
            runs = row[rehearsal]
            downs = [d * 1000 for d, _, _ in runs]
            cells.append(f"{statistics.median(downs):6.0f} ms [{max(downs):5.0f}]  pid changed {sum(p for _, p, _ in runs)}/{RUNS}")
        kept = sum(k for rehearsal in (False, True) for _, _, k in row[rehearsal])
        print(f"  {fault:<16} {cells[0]:<40} {cells[1]:<40} positions kept {kept}/{2 * RUNS}")
    print("  target: 0 ms with a rehearsal (no more than the floor), the live bot's PID unchanged")
    print(f"The live bot's tick latency (due -> heartbeat written), {ROUNDS} x {SLICE:g} s per half, interleaved; "
          f"cgroup controllers in the sandbox: {cgroups}")
    print(f"  {'load':<16} {'alone p50/p99':>16} {'+ rehearsal p50/p99':>22} {'p99 ratio':>10}  {'per round':<14} ticks")
    for load, rounds in latency_rows:
        alone = [ms for a, _ in rounds for ms in a]
        beside = [ms for _, b in rounds for ms in b]
        a, b = p99(alone), p99(beside)
        each = [p99(y) / p99(x) for x, y in rounds]
        print(f"  {load:<16} {statistics.median(alone):6.1f}/{a:5.1f} ms {statistics.median(beside):10.1f}/{b:5.1f} ms "
              f"{b / a:9.2f}x  {min(each):.2f}-{max(each):.2f}x    {len(alone)}/{len(beside)}")
    print("  target: p99 ratio < 1.05x")


if __name__ == "__main__":
    main()
