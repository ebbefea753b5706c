"""State sources without systemd: the pure rules as tables, and each reader against the real thing (a SQLite
file held by another connection, a loopback HTTP server, a command, a process holding a database in /proc)."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from slotctl import inventory
from slotctl.adapters import state
from slotctl.core import sources
from slotctl.core.health import Heartbeat
from slotctl.core.quiesce import GateObservation, Positions, gate
from slotctl.errors import InputError
from slotctl.ops import status as status_mod
from slotctl.ops.host import HostContext

SECRET = "s3cret-Pa55"


# -- the pure rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value, want", [
    (["p1", 7], Positions("ok", ("p1", "7"))),
    ([], Positions("ok", ())),  # {} selected by keys(@): flat, for a bot whose flat file is {}
    (None, "invalid"),  # the select found nothing: not the bot's format
    ({"p1": 1}, "invalid"),
    ([True], "invalid"),
    ([{"id": 1}], "invalid"),
])
def test_a_selection_is_a_list_of_ids_or_the_state_is_not_the_bots_format(value, want):
    got = sources.positions_from(value, "x")
    assert got == want if isinstance(want, Positions) else got.state == want


def test_an_api_answer_of_the_wrong_shape_is_not_known_yet_rather_than_a_format_problem():
    assert sources.positions_from({"detail": "error"}, "[].trade_id", bad_shape="unreadable").state == "unreadable"


@pytest.mark.parametrize("reading, count, want", [
    (Positions("ok", ()), 0, "ok"),  # both say flat
    (Positions("ok", ()), 2, "unreadable"),  # [] while the count says 2: /status failing quietly
    (Positions("ok", ()), None, "unreadable"),  # the count could not be read
    (Positions("ok", ("p1",)), 0, "ok"),  # open positions need no confirmation: never read as flat
    (Positions("locked"), 0, "locked"),
])
def test_flat_is_believed_only_when_the_confirm_count_is_zero(reading, count, want):
    assert sources.confirmed(reading, count, "why").state == want


@pytest.mark.parametrize("value, want", [(0, 0), (3, 3), (3.0, 3), ((2,), 2), (-1, None), (1.5, None), (True, None),
                                         ("3", None), (None, None), ((1, 2), None)])
def test_a_count_is_a_whole_number_or_nothing(value, want):
    assert sources.count_from(value) == want


def test_an_http_heartbeat_is_a_timestamp_or_an_object_with_one():
    assert sources.heartbeat_from(100, "x") == (Heartbeat(100.0, None, None, None), None)
    hb, _ = sources.heartbeat_from({"ts": 100, "pid": 4, "phase": "idle", "open_positions": 2}, "x")
    assert hb == Heartbeat(100.0, 4, "idle", 2)
    assert "expected a unix timestamp" in sources.heartbeat_from("soon", "x")[1]
    assert "expected a unix timestamp" in sources.heartbeat_from(None, "x")[1]


def test_systemd_heartbeat_is_the_last_watchdog_ping_while_active_and_a_problem_with_status_text_when_not():
    hb, problem = sources.heartbeat_from_systemd(200.0, "active", "running", 9, 5_000_000, 150_000_000, "trading")
    assert problem is None and hb.ts == 150.0 and hb.pid == 9 and hb.status == "trading" and hb.phase is None
    hb, _ = sources.heartbeat_from_systemd(200.0, "active", "running", 9, 0, 0, "")
    assert hb.ts == 200.0  # no watchdog: active is all systemd knows
    hb, problem = sources.heartbeat_from_systemd(200.0, "failed", "watchdog", 0, 5_000_000, 150_000_000, "stuck")
    assert hb is None and problem == "systemd: unit is failed/watchdog (stuck)"


@pytest.mark.parametrize("text, ok", [("u:p", True), ("u:p:with:colons\n", True), ("\nu:p\n\n", True),
                                      ("nocolon", False), ("a:b\nc:d", False), ("", False)])
def test_credentials_are_one_line_user_colon_password(text, ok):
    if ok:
        assert sources.parse_credentials(text)[0] == "u"
    else:
        with pytest.raises(ValueError) as e:
            sources.parse_credentials(text)
        assert text.strip() not in str(e.value) or not text.strip()


def gate_obs(p: Positions, running: bool = True, phase: str | None = "idle", phases: bool = True) -> GateObservation:
    return GateObservation(now=101.0, bot_running=running, heartbeat=Heartbeat(100.0, 4, phase, 0), positions=p,
                           drain_since=50.0, phases=phases, heartbeats_since=2)


@pytest.mark.parametrize("policy", ["flat", "recorded"])
def test_a_source_not_known_yet_keeps_the_gate_shut_while_the_bot_runs(policy):
    for p in (Positions("unreadable", detail="HTTP 503"), Positions("locked", detail="database is locked")):
        opened, reason = gate(gate_obs(p), policy)
        assert not opened and "not reading it as empty" in reason
    opened, reason = gate(gate_obs(Positions("unreadable", detail="refused"), running=False), policy)
    assert opened and "bot not running" in reason  # an API answers only while its bot runs


def test_a_heartbeat_source_without_phases_takes_the_answered_drain_as_acknowledgement():
    assert gate(gate_obs(Positions("ok", ()), phase=None, phases=False), "flat")[0]
    assert not gate(gate_obs(Positions("ok", ()), phase=None, phases=True), "flat")[0]  # a contract bot must say idle
    assert not gate(gate_obs(Positions("ok", ()), phase="trading", phases=False), "flat")[0]


# -- the readers ------------------------------------------------------------------------------------


def host_with(tmp_path: Path, **sections) -> inventory.HostConfig:
    doc = {"version": 1, "defaults": {"repo": "/r", "root": str(tmp_path / "root"), **sections}, "hosts": {"h": {}}}
    (tmp_path / "root/shared/data").mkdir(parents=True, exist_ok=True)
    return inventory.parse(doc, tmp_path / "inventory.yaml").hosts["h"]


def test_a_dict_file_read_with_a_select_is_flat_when_empty_and_torn_when_not_json(tmp_path):
    f = tmp_path / "positions.json"
    f.write_text("{}")
    assert state.read_positions(f, 0.1, "keys(@)") == Positions("ok", ())
    f.write_text('{"BTC": {"qty": 1}, "ETH": {"qty": 2}}')
    assert state.read_positions(f, 0.1, "keys(@)").ids == ("BTC", "ETH")
    f.write_text('{"BTC": ')
    assert state.read_positions(f, 0.1, "keys(@)").state == "torn"
    f.write_text("")
    assert state.read_positions(f, 0.1, "keys(@)").state == "empty"
    assert state.read_positions(tmp_path / "none.json", 0.1, "keys(@)").state == "missing"


def sqlite_host(tmp_path, query="SELECT id FROM trades WHERE is_open = 1", **extra):
    return host_with(tmp_path, quiesce={"positions": {"source": "sqlite", "path": "shared/data/t.sqlite",
                                                      "query": query, "timeout": 0.3, **extra}})


def test_sqlite_rows_are_the_open_ids_and_a_missing_database_is_missing(tmp_path):
    host = sqlite_host(tmp_path)
    assert state.read(host).state == "missing"
    con = sqlite3.connect(host.root / "shared/data/t.sqlite")
    con.executescript("CREATE TABLE trades (id INTEGER, is_open INTEGER); INSERT INTO trades VALUES (1, 1), (2, 0), (3, 1);")
    con.commit()
    con.close()
    assert state.read(host) == Positions("ok", ("1", "3"))
    assert state.read(sqlite_host(tmp_path, "SELECT id FROM nope")).state == "unreadable"


def test_a_locked_database_is_locked_never_empty(tmp_path):
    host = sqlite_host(tmp_path)
    db = host.root / "shared/data/t.sqlite"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.executescript("CREATE TABLE trades (id TEXT, is_open INTEGER);")
    holder.execute("BEGIN EXCLUSIVE")  # a rollback-journal database being written: readers must wait
    try:
        t0 = time.monotonic()
        got = state.read(host)
        assert got.state == "locked" and "database is locked" in got.detail
        assert time.monotonic() - t0 < 2  # the short busy timeout, not the default 5 s
        assert not gate(gate_obs(got), "flat")[0]
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def wal_database(path, script: str) -> sqlite3.Connection:
    """A database in WAL mode, as bots keep them, with script run; still open."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(script)
    return con


def test_reading_a_wal_database_nobody_holds_leaves_no_wal_or_shm_behind(tmp_path):
    host = sqlite_host(tmp_path)
    db = host.root / "shared/data/t.sqlite"
    con = wal_database(db, "CREATE TABLE trades (id TEXT, is_open INTEGER); INSERT INTO trades VALUES ('a', 1);")
    con.close()  # the last connection: SQLite checkpoints and deletes the -wal
    assert state.read(host).ids == ("a",)
    assert sorted(p.name for p in db.parent.iterdir()) == ["t.sqlite"]


class Api(BaseHTTPRequestHandler):
    routes: dict = {}

    def do_GET(self):  # noqa: N802
        import base64

        if self.headers.get("Authorization") != "Basic " + base64.b64encode(f"bot:{SECRET}".encode()).decode():
            self.send_response(401)
            self.end_headers()
            return
        code, body = self.routes.get(self.path, (404, b"{}"))
        self.send_response(code)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def api(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    creds = tmp_path / "creds"
    creds.write_text(f"bot:{SECRET}\n")
    yield f"http://127.0.0.1:{server.server_address[1]}", creds
    server.shutdown()
    server.server_close()


def http_host(tmp_path, base, creds, **extra):
    return host_with(tmp_path, quiesce={"positions": {"source": "http", "url": f"{base}/status", "select": "[].trade_id",
                                                      "credentials_file": str(creds), "timeout": 2,
                                                      "confirm": {"url": f"{base}/count", "select": "current"},
                                                      **extra}})


def test_an_http_source_reads_ids_and_believes_flat_only_with_a_zero_count(tmp_path, api):
    base, creds = api
    host = http_host(tmp_path, base, creds)
    Api.routes = {"/status": (200, b'[{"trade_id": 4}, {"trade_id": 9}]'), "/count": (200, b'{"current": 2}')}
    assert state.read(host) == Positions("ok", ("4", "9"))
    Api.routes = {"/status": (200, b"[]"), "/count": (200, b'{"current": 1}')}
    got = state.read(host)
    assert got.state == "unreadable" and "confirm reading counts 1 open" in got.detail
    Api.routes = {"/status": (200, b"[]"), "/count": (500, b"")}
    assert "HTTP 500" in state.read(host).detail
    Api.routes = {"/status": (200, b"[]"), "/count": (200, b'{"current": 0}')}
    assert state.read(host) == Positions("ok", ())


@pytest.mark.parametrize("route, creds_text, want", [
    ((503, b"[]"), f"bot:{SECRET}", "HTTP 503"),
    ((200, b"<html>"), f"bot:{SECRET}", "not JSON"),
    ((200, b'{"detail": "x"}'), f"bot:{SECRET}", "gave null, expected a list of ids"),
    ((200, b"[]"), "bot:wrong-one", "HTTP 401 (credentials refused)"),
    ((200, b"[]"), "no colon here", "expected one line user:password"),
])
def test_an_http_source_that_cannot_answer_is_not_known_yet_and_never_shows_the_credentials(tmp_path, api, route,
                                                                                             creds_text, want):
    base, creds = api
    creds.write_text(creds_text)
    Api.routes = {"/status": route, "/count": (200, b'{"current": 0}')}
    got = state.read(http_host(tmp_path, base, creds))
    assert got.state == "unreadable" and want in got.detail
    assert SECRET not in got.detail and creds_text not in got.detail


def test_an_http_source_that_refuses_the_connection_is_not_known_yet(tmp_path, api):
    base, creds = api
    port = int(base.rsplit(":", 1)[1])
    host = http_host(tmp_path, f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}", creds)
    got = state.read(host)
    assert got.state == "unreadable" and "refused" in got.detail.lower()


def test_a_command_source_reads_its_json_and_a_failing_command_is_not_known_yet(tmp_path):
    ok = host_with(tmp_path, quiesce={"positions": {"source": "command", "select": "open[].id",
                                                    "argv": [sys.executable, "-c", "print('{\"open\": [{\"id\": \"x\"}]}')"]}})
    assert state.read(ok) == Positions("ok", ("x",))
    bad = dataclasses.replace(ok, quiesce=dataclasses.replace(ok.quiesce, positions=dataclasses.replace(
        ok.quiesce.positions, argv=(sys.executable, "-c", "import sys; print('[]'); sys.exit(3)"))))
    got = state.read(bad)
    assert got.state == "unreadable" and "exit 3" in got.detail


def test_the_audit_names_a_database_held_open_by_a_process_of_the_inactive_slot(tmp_path):
    host = host_with(tmp_path)
    root = host.root
    for slot in ("blue", "green"):
        (root / "slots" / slot / "src").mkdir(parents=True)
    os.symlink("slots/green", root / "trading-bot-current")
    db = root / "shared/data/trades.sqlite"
    sqlite3.connect(db).executescript("CREATE TABLE t (x);")
    ctx = HostContext(host)  # the real /proc
    assert status_mod._databases_open_elsewhere(ctx, "green")[0] == []
    holder = subprocess.Popen([sys.executable, "-c", f"import time; f = open({str(db)!r}, 'rb'); print(1, flush=True); "
                               "time.sleep(60)"], cwd=root / "slots/blue/src", stdout=subprocess.PIPE)
    try:
        holder.stdout.readline()
        problems, evidence = status_mod._databases_open_elsewhere(ctx, "green")
        assert problems == [f"pid {holder.pid} runs from slot blue, not the active slot green, and has {db} open: "
                            "two bots on one database close each other's trades"]
        assert evidence["held_by"] == [{"pid": holder.pid, "slot": "blue", "database": str(db)}]
        assert status_mod._databases_open_elsewhere(ctx, "blue")[0] == []  # from the active slot: fine
    finally:
        holder.kill()
        holder.wait()


# -- the inventory ----------------------------------------------------------------------------------


@pytest.mark.parametrize("section, key, expected", [
    ({"quiesce": {"positions": {"source": "redis"}}}, "quiesce.positions.source", "one of 'file', 'sqlite', 'http'"),
    ({"quiesce": {"positions": {"source": "sqlite", "query": "SELECT 1"}}}, "quiesce.positions.path", "a path for source sqlite"),
    ({"quiesce": {"positions": {"source": "http", "select": "[]"}}}, "quiesce.positions.url", "a url for source http"),
    ({"quiesce": {"positions": {"source": "command", "argv": ["x"]}}}, "quiesce.positions.select", "a select"),
    ({"quiesce": {"positions": {"select": "[?"}}}, "quiesce.positions.select", "a JMESPath expression"),
    ({"quiesce": {"positions": {"source": "http", "url": "http://h/s", "select": "[]", "credentials_file": "c"}}},
     "quiesce.positions.credentials_file", "an absolute path"),
    ({"quiesce": {"positions": {"source": "file", "url": "http://h/s"}}}, "quiesce.positions.url", "no url with source file"),
    ({"quiesce": {"positions": {"source": "http", "url": "ftp://h/s", "select": "[]"}}}, "quiesce.positions.url", "an http://"),
    ({"quiesce": {"positions": {"source": "sqlite", "path": "d.db", "query": "q", "confirm": {"source": "http"}}}},
     "quiesce.positions.confirm.url", "a url for source http"),
    ({"health": {"heartbeat": {"source": "http", "url": "http://h/health"}}}, "health.heartbeat.select", "a select"),
    ({"health": {"heartbeat": {"source": "pidfile"}}}, "health.heartbeat.source", "one of 'file', 'http', 'systemd'"),
    ({"health": {"heartbeat": {"source": "systemd"}}}, "health.heartbeat.source", "health.notify: true"),
])
def test_a_source_named_wrongly_is_one_line_naming_the_key_and_what_was_expected(tmp_path, section, key, expected):
    with pytest.raises(InputError) as e:
        host_with(tmp_path, **section)
    assert f": {key}: expected" in e.value.message or f".{key}: expected" in e.value.message, e.value.message
    assert expected in e.value.message


def test_a_url_with_credentials_is_refused_without_showing_them(tmp_path):
    with pytest.raises(InputError) as e:
        host_with(tmp_path, quiesce={"positions": {"source": "http", "url": f"http://bot:{SECRET}@h/s", "select": "[]"}})
    assert "credentials_file" in e.value.message and SECRET not in e.value.message and "@h/s" not in e.value.message


def test_an_inventory_without_sources_reads_todays_contract_and_round_trips_to_a_remote_host(tmp_path):
    host = host_with(tmp_path)
    assert host.quiesce.positions.source == "file" and host.quiesce.positions.select is None
    assert host.health.heartbeat.source == "file"
    f = host.root / host.quiesce.positions_file
    f.write_text(json.dumps({"open_positions": [{"id": "p1"}]}))
    assert state.read(host) == Positions("ok", ("p1",))
    f.write_text("{}")
    assert state.read(host).state == "empty"  # today's contract: {} is emptied state, not flat
    full = host_with(tmp_path, quiesce={"positions": {"source": "sqlite", "path": "d.db", "query": "q",
                                                      "confirm": {"query": "SELECT count(*) FROM t"}}})
    again = inventory.parse(yaml.safe_load(yaml.safe_dump(inventory.to_document(full))), tmp_path / "x.yaml")
    assert again.hosts["h"].quiesce.positions == full.quiesce.positions


def test_a_restore_removes_the_live_databases_stale_wal_and_shm_and_the_copy_reads_whole(tmp_path):
    from slotctl.adapters import backups

    host = host_with(tmp_path)
    db = host.root / "shared/data/trades.sqlite"
    con = wal_database(db, "CREATE TABLE t (x); INSERT INTO t VALUES (1);")
    snap = backups.take(host, tmp_path / "backups", "s", good=True, reason="", extra={})
    con.execute("INSERT INTO t VALUES (2)")
    con.commit()
    con.close()
    for suffix in ("-wal", "-shm"):  # a newer WAL, as a crashed bot leaves it: replayed onto the old copy it would corrupt
        Path(f"{db}{suffix}").write_bytes(b"\1" * 4096)
    assert backups.restore(host, snap) == ["shared/data/trades.sqlite"]
    assert not Path(f"{db}-wal").exists() and not Path(f"{db}-shm").exists()
    back = sqlite3.connect(db)
    assert back.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert back.execute("SELECT x FROM t").fetchall() == [(1,)]
    back.close()


def test_a_host_naming_another_source_replaces_the_defaults_mapping_and_one_naming_none_merges(tmp_path):
    doc = {"version": 1, "defaults": {"repo": "/r", "quiesce": {"positions": {
        "source": "http", "url": "http://127.0.0.1:1/s", "select": "[]", "timeout": 3}}},
        "hosts": {"a": {"quiesce": {"positions": {"source": "sqlite", "path": "d.db", "query": "q"}}},
                  "b": {"quiesce": {"positions": {"select": "[].id"}}}}}
    hosts = inventory.parse(doc, tmp_path / "i.yaml").hosts
    assert hosts["a"].quiesce.positions.url is None and hosts["a"].quiesce.positions.query == "q"
    assert hosts["b"].quiesce.positions.url == "http://127.0.0.1:1/s" and hosts["b"].quiesce.positions.select == "[].id"
