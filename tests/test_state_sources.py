"""Bots that keep their state elsewhere, end to end under a real systemd: a JSON dict keyed by position, a SQLite
database in WAL mode, an HTTP API. Each: the gate waits for a mid-trade bot, positions survive a deploy and a
rollback; and a SQLite snapshot taken while the bot writes restores whole."""

from __future__ import annotations

import dataclasses
import json
import socket
import sqlite3
import subprocess
import time

import pytest
import yaml

from helpers import active, deploy, envelope, wait_for
from slotctl.adapters import backups

PACE = ["release", "fault", "open_every", "start_with_trade", "trade_seconds", "hold_seconds", "await_fill", "schema"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def open_ids(host) -> set[str]:
    return set(host.ctx.positions().ids)


def deploy_mid_trade_then_hold_then_bad(host, store: str) -> tuple[dict, dict]:
    """mid (a trade in flight from its start until the test lets its fill come) -> hold: the gate waits for
    the trade and p1 survives the switch; -> bad: rolled back to hold with p1 still open.
    Returns both envelopes' host entries."""
    assert deploy(host, f"{store}-mid").returncode == 0
    proc = subprocess.Popen(host.argv("deploy", "--yes", "--json", "--commit", host.bot_repo.sha[f"{store}-hold"]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=host.env())
    try:
        # The gate has seen the drained bot still trading: a heartbeat since the drain, and then some polls.
        wait_for(lambda: proc.poll() is not None or (flag := host.root / "shared/control/drain").exists()
                 and json.loads((host.root / "shared/data/heartbeat.json").read_text())["ts"]
                 > json.loads(flag.read_text())["since"], 30)
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.6)
        assert open_ids(host) == set()  # in flight: on the exchange, not yet in the bot's state
        (host.root / "shared/control/fill").touch()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    good = json.loads(out)["hosts"]["local"]
    waited = [r["reason"] for r in good["quiesce"] if not r["open"]]
    assert any("bot is trading, not idle" in r for r in waited), good["quiesce"]
    assert "1 open position(s) recorded: p1" in good["quiesce"][-1]["reason"]
    assert open_ids(host) == {"p1"} and host.ctx.positions().state == "ok"
    assert f"[{store}-hold] restored open positions p1" in (host.root / "shared/logs/bot.log").read_text()

    slot = active(host)
    proc = deploy(host, f"{store}-bad")
    assert proc.returncode == 1, proc.stderr
    bad = envelope(proc)["hosts"]["local"]
    assert active(host) == slot and bad["probes"][-1]["ok"], bad["probes"]
    assert open_ids(host) == {"p1"}
    return good, bad


def test_a_json_dict_keyed_by_position_is_read_with_a_select_and_survives_deploy_and_rollback(host):
    host.reconfigure(config={"allow_differ": PACE}, quiesce={"positions": {"select": "keys(@)"}})
    good, bad = deploy_mid_trade_then_hold_then_bad(host, "dict")
    doc = json.loads((host.root / "shared/data/positions_futures.json").read_text())
    assert "p1" in doc and doc["p1"]["symbol"] == "BTC-PERP"  # the dict shape, not the contract's
    assert "positions lost since the switch: p1 were open" in bad["probes"][0]["problems"][0]
    assert "shared/data/positions_futures.json" in bad["restored"]
    assert host.cli("status").returncode == 0


def test_a_sqlite_store_is_queried_read_only_and_a_rollback_over_a_schema_upgrade_gets_the_old_schema_back(host):
    db = host.root / "shared/data/trades.sqlite"
    host.reconfigure(config={"allow_differ": PACE},
                     quiesce={"positions": {"source": "sqlite", "path": "shared/data/trades.sqlite",
                                            "query": "SELECT id FROM trades WHERE is_open = 1"}})
    good, bad = deploy_mid_trade_then_hold_then_bad(host, "sqlite")
    snap = host.root / ".slotctl/backups" / bad["deploy_id"]
    assert json.loads((snap / "snapshot.json").read_text())["sqlite"] == ["shared/data/trades.sqlite"]
    assert not (snap / "files/shared/data/trades.sqlite-wal").exists()  # the backup API's copy is self-contained
    # The bad release upgraded the schema and failed; the old release refuses a newer schema, so its passing
    # probe shows the database is the one from before the upgrade, and so does the database itself.
    assert "database schema upgraded from 1 to 2" in (host.root / "shared/logs/bot.log").read_text()
    assert bad["restored"] == ["shared/data/trades.sqlite"]
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "leverage" not in [r[1] for r in con.execute("PRAGMA table_info(trades)")]
    con.close()
    assert host.cli("status").returncode == 0


def test_a_sqlite_snapshot_taken_while_the_bot_writes_in_wal_mode_restores_whole(host, tmp_path):
    """The bot commits 20 rows each tick in WAL mode; the copy is one committed state holding every row
    committed before it began, and passes integrity_check once restored."""
    host.reconfigure(config={"allow_differ": PACE})  # the default backups.files glob finds shared/data/*.sqlite
    assert deploy(host, "sqlite-hold").returncode == 0
    db = host.root / "shared/data/trades.sqlite"
    assert (host.root / "shared/data/trades.sqlite-wal").exists()
    for i in range(3):
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        committed = con.execute("SELECT max(n) FROM ticks").fetchone()[0]
        con.close()
        snap = backups.take(host.ctx.host, tmp_path / "backups", f"s{i}", good=True, reason="test", extra={})
        elsewhere = dataclasses.replace(host.ctx.host, root=tmp_path / f"restored{i}")
        assert backups.restore(elsewhere, snap) == ["shared/data/trades.sqlite"]
        copy = sqlite3.connect(elsewhere.root / "shared/data/trades.sqlite")
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows, top = copy.execute("SELECT count(*), max(n) FROM ticks").fetchone()
        assert top >= committed and rows == top  # every committed row, none torn out of the middle
        copy.close()


@pytest.fixture
def api(host, tmp_path):
    """The bot's API port and credentials; slotctl reads them from its own credentials file."""
    port = free_port()
    control = host.root / "shared/control"
    control.mkdir(parents=True, exist_ok=True)
    (control / "api-port").write_text(str(port))
    (control / "api-credentials").write_text("slotctl:s3cret-Pa55\n")
    creds = tmp_path / "api-credentials"
    creds.write_text("slotctl:s3cret-Pa55\n")
    creds.chmod(0o600)
    base = f"http://127.0.0.1:{port}/api/v1"
    return base, str(creds)


def test_an_http_api_with_a_confirm_count_and_an_http_heartbeat_survives_deploy_and_rollback(host, api):
    base, creds = api
    host.reconfigure(
        config={"allow_differ": PACE},
        quiesce={"positions": {"source": "http", "url": f"{base}/status", "select": "[].trade_id",
                               "credentials_file": creds, "confirm": {"url": f"{base}/count", "select": "current"}}},
        health={"heartbeat": {"source": "http", "url": f"{base}/health", "credentials_file": creds,
                              "select": "{ts: last_process_ts, pid: pid, phase: phase, open_positions: open}"}})
    good, bad = deploy_mid_trade_then_hold_then_bad(host, "http")
    assert "positions lost since the switch: p1 were open" in bad["probes"][0]["problems"][0]
    status = host.cli("status", "--json")
    assert status.returncode == 0, status.stdout
    local = json.loads(status.stdout)["hosts"]["local"]
    assert local["positions"]["source"] == "http" and "p1" in local["positions"]["open"]
    records = (host.root / ".slotctl/journal.jsonl").read_text()
    assert "s3cret-Pa55" not in status.stdout + status.stderr + records + json.dumps([good, bad])


def test_http_down_or_credentials_refused_is_not_known_and_the_gate_times_out_never_flat(host, api, tmp_path):
    base, creds = api
    host.reconfigure(config={"allow_differ": PACE},
                     quiesce={"policy": "flat", "positions": {"source": "http", "url": f"{base}/status",
                                                              "select": "[].trade_id", "credentials_file": creds}})
    assert deploy(host, "http-hold").returncode == 0
    (tmp_path / "api-credentials").write_text("slotctl:wrong\n")
    proc = deploy(host, "http-mid", "--quiesce-timeout", "1.5")
    assert proc.returncode == 5, proc.stderr
    reasons = " ".join(r["reason"] for r in envelope(proc)["hosts"]["local"]["quiesce"])
    assert "HTTP 401 (credentials refused)" in reasons and "not known yet" in reasons
    assert "wrong" not in proc.stdout + proc.stderr
    host.ctx.systemd.stop("trading-bot.service")
    down = host.ctx.positions()  # connection refused: not known, never flat
    assert down.state == "unreadable" and "refused" in down.detail.lower()


def test_an_inventory_naming_a_source_wrongly_exits_2_and_changes_nothing(host):
    assert deploy(host, "v1").returncode == 0
    before = host.slotctl_snapshot()
    for bad, key in (({"source": "sqlit"}, "quiesce.positions.source"),
                     ({"source": "sqlite", "path": "shared/data/t.db"}, "quiesce.positions.query"),
                     ({"select": "keys(@"}, "quiesce.positions.select"),
                     ({"source": "http", "url": "http://127.0.0.1:9/s", "select": "[]", "credentials_file": "creds"},
                      "quiesce.positions.credentials_file")):
        doc = host.inventory_path.read_text()
        d = yaml.safe_load(doc)
        d["hosts"]["local"] = {"quiesce": {"positions": bad}}
        host.inventory_path.write_text(yaml.safe_dump(d))
        proc = deploy(host, "v2")
        assert proc.returncode == 2 and f"hosts.local.{key}: expected" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        host.inventory_path.write_text(doc)
    assert host.slotctl_snapshot() == before


def test_a_type_notify_bot_is_alive_by_systemds_watchdog_through_a_deploy_and_the_audit(host):
    """health.heartbeat source systemd: the last WATCHDOG=1 is the heartbeat; the drain request answered is the
    acknowledgement (systemd knows no phase); a stopped bot is a failed audit naming the unit's state."""
    host.reconfigure(health={"heartbeat": {"source": "systemd"}})  # the reference inventory: notify, WatchdogSec=5
    assert deploy(host, "v1").returncode == 0
    proc = deploy(host, "v2")
    assert proc.returncode == 0, proc.stderr
    assert "acknowledged" in envelope(proc)["hosts"]["local"]["quiesce"][-1]["reason"]
    status = host.cli("status", "--json")
    assert status.returncode == 0, status.stdout
    local = json.loads(status.stdout)["hosts"]["local"]
    assert local["heartbeat"]["source"] == "systemd" and local["heartbeat"]["pid"] == local["unit"]["main_pid"]
    assert 0 <= time.time() - local["heartbeat"]["ts"] < 5  # a watchdog ping, not "now"
    host.ctx.systemd.stop("trading-bot.service")
    stopped = host.cli("status")
    assert stopped.returncode == 3 and "systemd: unit is inactive/dead" in stopped.stdout


def test_a_simple_bot_whose_api_listens_a_moment_after_its_start_deploys_and_its_late_heartbeat_counts(host, api):
    """Type=simple: systemd calls it started at once, its API answers 1.5 s later. The refused connections in between
    are "none yet", as a heartbeat file not written yet is; once it answers, the probe holds for the window."""
    base, creds = api
    host.reconfigure(config={"allow_differ": [*PACE, "api", "api_delay"]},
                     health={"notify": False, "window": 4, "max_age": 3,
                             "heartbeat": {"source": "http", "url": f"{base}/health", "credentials_file": creds,
                                           "select": "{ts: last_process_ts, pid: pid, phase: phase, open_positions: open}"}})
    assert deploy(host, "http-hold").returncode == 0
    proc = deploy(host, "http-late")
    assert proc.returncode == 0, proc.stderr
    probe = envelope(proc)["hosts"]["local"]["probes"][0]
    assert probe["ok"] and probe["evidence"]["heartbeat_age"] is not None  # the late API's own heartbeat was read
