"""The quiesce gate's rules, its state reading under flock, drain mechanisms and snapshots."""

from __future__ import annotations

import fcntl
import http.server
import json
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from slotctl.adapters import backups
from slotctl.adapters.drain import Drain, DrainError
from slotctl.adapters.state import read_positions
from slotctl.core.health import Heartbeat
from slotctl.core.quiesce import GateObservation, Positions, SnapshotInfo, gate, parse_positions, rotation, suspicious
from slotctl.inventory import BackupsConfig, HostConfig, QuiesceConfig


@pytest.mark.parametrize("data, state, ids", [
    (b'{"open_positions": [{"id": "p1"}, {"id": 7}]}', "ok", ("p1", "7")),
    (b'{"open_positions": []}', "ok", ()),
    (b"", "empty", ()),
    (b"  \n", "empty", ()),
    (b"{}", "empty", ()),
    (b'{"open_positions": [{"id": "p1"}', "torn", ()),
    (b'[1, 2]', "invalid", ()),
    (b'{"open_positions": [{"qty": 1}]}', "invalid", ()),
])
def test_positions_files_are_classified_not_guessed(data, state, ids):
    p = parse_positions(data)
    assert (p.state, p.ids) == (state, ids)


def hb(phase="idle", n=0, ts=100.0) -> Heartbeat:
    return Heartbeat(ts, 4, phase, n)


def obs(positions=Positions("ok", ()), heartbeat=None, running=True, drain_since=50.0) -> GateObservation:
    # Two heartbeats since the request: the acknowledgement's own rules are in test_drain_ack.py.
    return GateObservation(now=101.0, bot_running=running, heartbeat=heartbeat or hb(), positions=positions,
                           drain_since=drain_since, heartbeats_since=2)


@pytest.mark.parametrize("observation, last_good, reason", [
    (obs(Positions("torn", detail="x")), None, "positions file is torn"),
    (obs(Positions("invalid", detail="x")), None, "not the bot's format"),
    (obs(Positions("empty", detail="{}")), 2, "empty ({}), but the last snapshot had 2 open"),
    (obs(Positions("empty", detail="zero bytes"), heartbeat=hb(n=1)), None, "but the bot reports 1 open"),
    (obs(Positions("missing")), 2, "missing, but the last snapshot had 2 open"),
    (obs(Positions("missing"), heartbeat=hb(n=3)), None, "missing, but the bot reports 3 open"),
])
def test_state_that_may_have_silently_emptied_is_suspicious(observation, last_good, reason):
    assert reason in suspicious(observation, last_good)


@pytest.mark.parametrize("observation, last_good", [
    (obs(Positions("ok", ("p1",)), heartbeat=hb(n=1)), 1),
    (obs(Positions("empty", detail="{}")), 0),  # nothing was open before either
    (obs(Positions("missing")), None),  # a bot that has never written positions
    (obs(Positions("missing")), 0),  # a first release that crashed before writing it: nothing was open to lose
    (obs(Positions("locked")), 5),  # locked is a reason to wait, never to conclude
])
def test_ordinary_state_is_not_suspicious(observation, last_good):
    assert suspicious(observation, last_good) is None


@pytest.mark.parametrize("policy, observation, opened, reason", [
    ("flat", obs(), True, "flat"),
    ("flat", obs(Positions("ok", ("p1", "p2"))), False, "2 open position(s): p1, p2"),
    ("flat", obs(heartbeat=hb("trading")), False, "bot is trading, not idle"),
    # flat needs the bot's acknowledgement of the drain too: an idle heartbeat written after the request (item 9)
    ("flat", obs(heartbeat=hb(ts=40.0)), False, "no heartbeat since the drain was requested"),
    ("flat", obs(positions=Positions("missing"), heartbeat=hb(ts=40.0)), False, "no heartbeat since the drain"),
    ("flat", obs(running=False), True, "flat, bot not running"),
    # a heartbeat dated in the future (milliseconds for seconds) acknowledges nothing (item 13)
    ("recorded", obs(heartbeat=hb(ts=101_000.0)), False, "in the future"),
    ("flat", obs(heartbeat=hb(ts=101_000.0)), False, "in the future"),
    ("flat", obs(Positions("locked", detail="held")), False, "locked by the bot"),
    ("recorded", obs(Positions("ok", ("p1",)), hb("idle", 1)), True, "1 open position(s) recorded: p1"),
    ("recorded", obs(Positions("ok", ("p1",)), hb("trading", 1)), False, "bot is trading, not idle"),
    ("recorded", obs(Positions("ok", ("p1",)), hb("idle", 2)), False, "bot reports 2 open, the positions file has 1"),
    ("recorded", obs(heartbeat=hb(ts=40.0)), False, "no heartbeat since the drain was requested"),
    ("recorded", obs(Positions("ok", ("p1",)), hb("trading", 1), running=False), True, "bot not running"),
    ("recorded", obs(Positions("locked", detail="held")), False, "waiting, not reading it as empty"),
])
def test_the_gate_opens_only_when_the_policy_holds(policy, observation, opened, reason):
    got_open, got_reason = gate(observation, policy)
    assert got_open is opened and reason in got_reason


def test_rotation_keeps_the_newest_and_never_the_newest_good_one():
    snaps = [SnapshotInfo("a", 1, True), SnapshotInfo("b", 2, True), SnapshotInfo("c", 3, False),
             SnapshotInfo("d", 4, False), SnapshotInfo("e", 5, False)]
    assert sorted(rotation(snaps, keep=2)) == ["a", "c"]  # b is the newest good one: kept beyond `keep`
    assert sorted(rotation(snaps, keep=10)) == []
    assert sorted(rotation([SnapshotInfo("x", 1, True), SnapshotInfo("y", 2, True)], keep=1)) == ["x"]


def test_a_locked_positions_file_reads_as_locked_then_as_its_content(tmp_path):
    pos = tmp_path / "positions.json"
    pos.write_text('{"open_positions": [{"id": "p9"}]}')
    lock = open(str(pos) + ".lock", "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    t0 = time.monotonic()
    assert read_positions(pos, lock_wait=0.3).state == "locked"
    assert time.monotonic() - t0 >= 0.3
    threading.Timer(0.2, lock.close).start()  # the writer finishes while we wait
    assert read_positions(pos, lock_wait=2).ids == ("p9",)


def test_a_missing_positions_file_is_missing_not_empty(tmp_path):
    assert read_positions(tmp_path / "none.json").state == "missing"


def host_at(tmp_path: Path, **quiesce) -> HostConfig:
    return HostConfig(name="t", repo="/r", root=tmp_path, quiesce=replace(QuiesceConfig(), **quiesce))


def test_the_drain_flag_records_who_and_is_lifted(tmp_path):
    d = Drain(host_at(tmp_path))
    since = d.request("dep-1")
    rec = d.active()
    assert rec["deploy"] == "dep-1" and rec["since"] == since and rec["by"]
    d.lift("dep-1")
    assert d.active() is None and not (tmp_path / "shared/control/drain").exists()


def test_drain_and_undrain_commands_run_without_a_shell(tmp_path):
    marker = tmp_path / "said"
    d = Drain(host_at(tmp_path, drain_command=("sh", "-c", f"echo drain >> {marker}", "; not-a-shell"),
                      undrain_command=("sh", "-c", f"echo undrain >> {marker}")))
    d.request("dep")
    d.lift("dep")
    assert marker.read_text().split() == ["drain", "undrain"]


def test_a_failing_drain_command_is_an_error_naming_it_and_leaves_no_flag(tmp_path):
    """Item 5: a drain request that fails leaves no flag behind (the bot would stay drained for nothing)."""
    marker = tmp_path / "said"
    d = Drain(host_at(tmp_path, drain_command=("false",), undrain_command=("sh", "-c", f"echo undrain >> {marker}")))
    with pytest.raises(DrainError, match="quiesce.drain_command false failed"):
        d.request("dep")
    assert d.active() is None and not (tmp_path / "shared/control/drain").exists()
    assert marker.read_text().split() == ["undrain"]  # in case the failed request half-worked


def test_with_no_bot_running_the_drain_call_waits_until_one_runs_and_is_sent_once(tmp_path):
    """A bot drained over its API cannot answer while down (a first deploy, a rollback from a crash): the flag is
    written, the call is sent once the gate sees a bot, and only once."""
    marker = tmp_path / "said"
    d = Drain(host_at(tmp_path, drain_command=("sh", "-c", f"echo drain >> {marker}")))
    d.request("dep", bot_running=False)
    assert d.active()["deploy"] == "dep" and not marker.exists() and not d.sent
    d.send_pending()
    d.send_pending()
    assert marker.read_text().split() == ["drain"] and d.sent


def test_a_deferred_drain_call_that_fails_takes_the_flag_back(tmp_path):
    marker = tmp_path / "said"
    d = Drain(host_at(tmp_path, drain_command=("false",), undrain_command=("sh", "-c", f"echo undrain >> {marker}")))
    d.request("dep", bot_running=False)
    with pytest.raises(DrainError, match="quiesce.drain_command false failed"):
        d.send_pending()
    assert d.active() is None and marker.read_text().split() == ["undrain"]


@pytest.mark.parametrize("operators_flag", ["", '{"by": "alice", "reason": "FOMC"}'])
def test_a_drain_the_operator_set_before_the_deploy_is_still_set_after_it(tmp_path, operators_flag):
    """Item 10: slotctl lifts only the drain it set."""
    marker = tmp_path / "said"
    flag = tmp_path / "shared/control/drain"
    flag.parent.mkdir(parents=True)
    flag.write_text(operators_flag)
    d = Drain(host_at(tmp_path, undrain_command=("sh", "-c", f"echo undrain >> {marker}")))
    d.request("dep")
    assert d.lift("dep") is False
    assert flag.read_text() == operators_flag and not marker.exists()


def test_drain_over_http_posts_to_the_configured_urls(tmp_path):
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append(self.path)
            self.send_response(204 if self.path != "/broken" else 500)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        d = Drain(host_at(tmp_path, drain_url=f"{base}/drain", undrain_url=f"{base}/resume"))
        d.request("dep")
        d.lift("dep")
        assert seen == ["/drain", "/resume"]
        with pytest.raises(DrainError, match="HTTP 500"):
            Drain(host_at(tmp_path, drain_url=f"{base}/broken")).request("dep")
    finally:
        server.shutdown()


def test_a_snapshot_holds_positions_and_a_self_contained_copy_of_sqlite_with_its_wal_committed(tmp_path):
    data = tmp_path / "shared/data"
    data.mkdir(parents=True)
    (data / "positions_futures.json").write_text('{"open_positions": [{"id": "p1"}]}')
    db = sqlite3.connect(data / "trades.sqlite")
    db.execute("pragma journal_mode=wal")
    db.execute("create table t (x)")
    db.execute("insert into t values (1)")
    db.commit()  # keep the connection open: -wal and -shm exist, as under a running bot
    h = HostConfig(name="t", repo="/r", root=tmp_path, backups=BackupsConfig(keep=3))
    snap = backups.take(h, tmp_path / ".slotctl/backups", "dep-1", good=True, reason="flat", extra={"open_positions": ["p1"]})
    names = sorted(str(p.relative_to(snap / "files")) for p in (snap / "files").rglob("*") if p.is_file())
    assert names == ["shared/data/positions_futures.json", "shared/data/trades.sqlite"]  # the backup API's copy
    restored = tmp_path / "restored.sqlite"
    restored.write_bytes((snap / "files/shared/data/trades.sqlite").read_bytes())
    assert sqlite3.connect(restored).execute("select x from t").fetchall() == [(1,)]  # the row still in the -wal
    record = json.loads((snap / "snapshot.json").read_text())
    assert record["good"] and set(record["files"]) == set(names) and record["sqlite"] == ["shared/data/trades.sqlite"]
    assert oct((tmp_path / ".slotctl/backups").stat().st_mode & 0o777) == "0o700"
    db.close()


def test_rotation_on_disk_keeps_the_newest_good_snapshot(tmp_path):
    h = HostConfig(name="t", repo="/r", root=tmp_path)
    (tmp_path / "shared/data").mkdir(parents=True)
    (tmp_path / "shared/data/positions_futures.json").write_text('{"open_positions": []}')
    where = tmp_path / ".slotctl/backups"
    backups.take(h, where, "1-good", good=True, reason="", extra={})
    for i in range(2, 5):
        backups.take(h, where, f"{i}-bad", good=False, reason="suspicious", extra={})
    (where / ".tmp-crashed").mkdir()
    backups.rotate(where, keep=2)
    assert sorted(p.name for p in where.iterdir()) == ["1-good", "3-bad", "4-bad"]
