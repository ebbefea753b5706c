"""Never restart mid-trade: the gate, drain and snapshots against the reference bot under a real systemd."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time

import pytest

from helpers import active, deploy, envelope, journal_records, wait_for


@pytest.fixture
def host(host):
    """The releases here differ in their trading pace on purpose: those config keys may differ."""
    host.reconfigure(config={"allow_differ": ["release", "fault", "open_every", "start_with_trade", "trade_seconds",
                                              "hold_seconds", "await_fill"]})
    return host


def drain_flag(host):
    return host.root / "shared/control/drain"


def snapshots(host) -> list[dict]:
    where = host.root / ".slotctl/backups"
    return sorted((json.loads((d / "snapshot.json").read_text()) for d in where.iterdir() if not d.name.startswith(".")),
                  key=lambda r: r["ts"])


def bot_pid(host) -> int:
    return host.ctx.systemd.state("trading-bot.service").main_pid


def test_a_flat_bot_passes_the_gate_at_once_and_the_drain_is_lifted(host):
    host.reconfigure(quiesce={"policy": "flat"})
    assert deploy(host, "calm").returncode == 0
    proc = deploy(host, "v1")
    assert proc.returncode == 0, proc.stderr
    records = envelope(proc)["hosts"]["local"]["quiesce"]
    assert records[-1]["open"] and records[-1]["t"] < 1.5
    assert not drain_flag(host).exists()
    assert snapshots(host)[-1]["good"]


def test_a_bot_mid_trade_is_waited_for_and_its_trade_survives_the_switch(host):
    assert deploy(host, "midtrade").returncode == 0  # starts a trade at once, which lands once the test lets it
    proc = subprocess.Popen(host.argv("deploy", "--yes", "--json", "--commit", host.bot_repo.sha["v1"]), env=host.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said = []
    for line in proc.stderr:  # the gate says what it waits for as it goes: the fill comes once it waited on the trade
        said.append(line)
        if "bot is trading, not idle" in line:
            (host.root / "shared/control/fill").write_text("")
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, "".join(said) + err
    records = json.loads(out)["hosts"]["local"]["quiesce"]
    assert any("bot is trading, not idle" in r["reason"] for r in records if not r["open"])
    assert records[-1]["open"] and "1 open position(s) recorded: p1" in records[-1]["reason"]
    log = (host.root / "shared/logs/bot.log").read_text()
    assert "[midtrade] opened p1" in log and "[v1] restored open positions p1" in log
    assert snapshots(host)[-1]["open_positions"] == ["p1"]


def test_the_flat_policy_waits_for_open_positions_to_close(host):
    host.reconfigure(quiesce={"policy": "flat"})
    assert deploy(host, "holdshort").returncode == 0  # one position, closed after 3 s
    proc = deploy(host, "v1")
    assert proc.returncode == 0, proc.stderr
    records = envelope(proc)["hosts"]["local"]["quiesce"]
    assert any("1 open position(s): p1" in r["reason"] for r in records)
    assert "[holdshort] closed p1" in (host.root / "shared/logs/bot.log").read_text()


def test_a_bot_that_never_quiesces_times_out_with_exit_5_and_keeps_trading_undrained(host):
    assert deploy(host, "stubborn").returncode == 0
    pid = bot_pid(host)
    proc = deploy(host, "v1", "--quiesce-timeout", "2")
    assert proc.returncode == 5, proc.stderr
    summary = envelope(proc)["hosts"]["local"]["summary"]
    assert "quiesce timed out" in summary and "Still open: bot is trading, not idle" in summary
    assert active(host) == "slots/blue" and bot_pid(host) == pid
    assert not drain_flag(host).exists()
    assert host.cli("status").returncode == 0


def test_an_emptied_positions_file_stops_the_deploy_and_keeps_the_evidence(host):
    assert deploy(host, "wiper").returncode == 0  # empties its positions file at its 3rd tick
    wait_for(lambda: (host.root / "shared/data/positions_futures.json").read_text() == "{}")
    pid = bot_pid(host)
    proc = host.cli("deploy", "--yes", "--commit", host.bot_repo.sha["v1"])
    assert proc.returncode == 2
    assert "positions file is empty ({}), but the bot reports 1 open" in proc.stderr
    assert active(host) == "slots/blue" and bot_pid(host) == pid and not drain_flag(host).exists()
    evidence = [s for s in snapshots(host) if not s["good"]]
    assert evidence and "empty" in evidence[-1]["reason"]


def test_a_torn_positions_file_stops_the_deploy(host):
    assert deploy(host, "tearer").returncode == 0
    wait_for(lambda: "fault injected: positions file torn" in (host.root / "shared/logs/bot.log").read_text())
    proc = host.cli("deploy", "--yes", "--commit", host.bot_repo.sha["v1"])
    assert proc.returncode == 2 and "positions file is torn" in proc.stderr
    assert active(host) == "slots/blue"


def test_a_locked_positions_file_is_waited_on_not_read_as_empty(host):
    host.reconfigure(quiesce={"lock_wait": 0.2})
    assert deploy(host, "calm").returncode == 0
    lock = open(host.root / "shared/data/positions_futures.json.lock", "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    before = len(journal_records(host))
    running = subprocess.Popen(host.argv("deploy", "--yes", "--json", "--commit", host.bot_repo.sha["v1"]),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=host.env())
    # Held until the gate has been asking for a while (however long the build took), then let go.
    wait_for(lambda: any(r.get("step") == "quiesce" and r.get("phase") == "begin" for r in journal_records(host)[before:]), 120)
    time.sleep(1)
    lock.close()
    out, err = running.communicate(timeout=120)
    proc = subprocess.CompletedProcess(running.args, running.returncode, out, err)
    assert proc.returncode == 0, proc.stderr
    records = envelope(proc)["hosts"]["local"]["quiesce"]
    assert any("locked by the bot" in r["reason"] and "not reading it as empty" in r["reason"] for r in records)


def test_snapshots_rotate_to_keep_and_the_newest_is_good(host):
    host.reconfigure(backups={"keep": 1})
    for release in ("v1", "v2", "calm"):
        assert deploy(host, release).returncode == 0
    snaps = snapshots(host)
    assert len(snaps) == 1 and snaps[0]["good"] and snaps[0]["commit_before"] == host.bot_repo.sha["v2"]


def test_status_shows_a_drained_bot_and_the_latest_snapshot(host):
    assert deploy(host, "v1").returncode == 0
    assert deploy(host, "v2").returncode == 0
    ok = host.cli("status")
    assert ok.returncode == 0 and "snapshot" in ok.stdout
    drain_flag(host).write_text(json.dumps({"since": time.time(), "by": "alice", "deploy": "d-1"}))
    proc = host.cli("status", "--json")
    assert proc.returncode == 3
    doc = envelope(proc)["hosts"]["local"]
    assert doc["drained"]["by"] == "alice"
    assert any("the bot is drained" in p for p in doc["problems"])
    assert doc["snapshot"]["good"]
    os.unlink(drain_flag(host))


def test_a_drain_call_deferred_while_no_bot_ran_is_sent_once_the_gate_sees_one(host, tmp_path):
    """A bot that starts after the drain request (systemd restarting it) still gets the drain call, and only a
    heartbeat after that call opens the gate."""
    from slotctl.adapters.drain import Drain
    from slotctl.ops import quiesce

    assert deploy(host, "calm").returncode == 0
    marker = tmp_path / "said"
    host.reconfigure(quiesce={"drain_command": ["sh", "-c", f"echo drain >> {marker}"]})
    host.ctx.systemd.stop("trading-bot.service")
    d = Drain(host.ctx.host)
    since = d.request("dep", bot_running=False)
    assert drain_flag(host).exists() and not marker.exists()
    host.ctx.systemd.start("trading-bot.service")
    result = quiesce.wait(host.ctx, "dep", since, timeout=20, drain=d)
    assert marker.read_text().split() == ["drain"] and d.sent
    assert result.opened, result.records
    assert result.records[0]["reason"] == "a bot runs now: drain call sent"
