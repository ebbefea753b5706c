"""`slotctl logs`: the bot's units' journal, read from a real (sandboxed) systemd's journal through its root."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time

import pytest

from helpers import deploy


@pytest.fixture
def running(host):
    assert deploy(host, "v1").returncode == 0
    return host


def test_logs_shows_the_bots_units_journal_and_n_limits_it(running):
    proc = running.cli("logs")
    assert proc.returncode == 0, proc.stderr
    assert "[v1] starting pid=" in proc.stdout  # the bot's own output
    assert "Started trading-bot-dashboard.service" in proc.stdout  # and systemd's about each unit of the release
    three = running.cli("logs", "-n", "3")
    assert three.returncode == 0 and len(three.stdout.splitlines()) == 3, three.stdout
    bot = running.cli("logs", "--unit", "trading-bot.service")
    assert bot.returncode == 0 and "dashboard" not in bot.stdout and "[v1] starting pid=" in bot.stdout


def test_an_unknown_unit_is_exit_2_naming_the_hosts_units(running):
    proc = running.cli("logs", "--unit", "trading-bot-dashbord.service")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("slotctl logs: error: --unit trading-bot-dashbord.service: not a unit of host local "
                           "(its units: trading-bot.service, trading-bot-dashboard.service)\n")


def journalctls(host) -> list[int]:
    """journalctl processes reading this sandbox's journal."""
    where = str(host.sandbox.proc_root.parent).encode()
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                argv = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"journalctl") and any(a.startswith(where) for a in argv):
                found.append(int(d))
    return found


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_follow_streams_new_lines_until_a_signal_then_exits_0(running, signum):
    proc = subprocess.Popen(running.argv("logs", "--follow", "-n", "1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=running.env())
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        got = [lines.get(timeout=10) for _ in range(3)]  # the last line, then new ones as the bot trades
        assert any("[v1]" in line for line in got), got
        assert journalctls(running)
        proc.send_signal(signum)
        assert proc.wait(timeout=10) == 0, proc.stderr.read()
    finally:
        proc.kill()
    deadline = time.monotonic() + 5
    while journalctls(running) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert journalctls(running) == []


def test_a_follow_ends_when_nobody_reads_even_while_the_journal_is_quiet(running):
    """What ends a `slotctl logs --follow` run over ssh when the controller goes: its stdout closed, seen at once,
    not at the unit's next line (here a rehearsal unit that never runs)."""
    running.reconfigure(rehearsal={})
    proc = subprocess.Popen(running.argv("logs", "--follow", "-n", "0", "--unit", "trading-bot-rehearsal.service"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=running.env())
    try:
        deadline = time.monotonic() + 10
        while not journalctls(running):
            assert time.monotonic() < deadline, "journalctl never started"
            time.sleep(0.05)
        proc.stdout.close()
        t0 = time.monotonic()
        assert proc.wait(timeout=5) == 0, proc.stderr.read()
        assert time.monotonic() - t0 < 2
    finally:
        proc.kill()
    assert journalctls(running) == []
