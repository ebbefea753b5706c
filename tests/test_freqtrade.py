"""Real freqtrade (2026.9, dry-run) deployed by slotctl under the sandboxed systemd, against a stand-in exchange.

The bot repository's releases are freqtrade configs and strategies pinned by commit, with freqtrade itself
hash-pinned in requirements.lock; slot venvs are built offline from the wheels scripts/setup downloaded
(tests/ftwheels.py). ccxt's Binance URLs point at tests/ftexchange.py on loopback: this machine has no internet.
Units, drain and state sources are examples/freqtrade's: Type=notify with --sd-notify, the drain over the REST
API (/stopentry, undone by /start), the open trades and orders read from freqtrade's own SQLite database.
"""

from __future__ import annotations

import base64
import http.server
import json
import shutil
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from conftest import BotRepo, Host, write_inventory
from ftexchange import StandInExchange
from ftwheels import LOCK, VERSION, wheels_dir
from helpers import active, deploy, envelope, journal_records, manifest, wait_for
from slotctl import inventory
from slotctl.adapters import units
from slotctl.adapters.drain import Drain, DrainError
from slotctl.core import rehearsal
from slotctl.core.history import deploys
from slotctl.inventory import HostConfig
from slotctl.ops.host import HostContext

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "freqtrade"
USER, PASSWORD = "freqtrader", "dry-run-only"

STRATEGY = '''\
from freqtrade.strategy import IStrategy


class Quiet(IStrategy):
    """Release {release}: never enters or exits by itself; the test opens trades with /forceenter."""

    INTERFACE_VERSION = 3
    timeframe = "5m"
    minimal_roi = {{"0": 100}}
    stoploss = -0.99
    startup_candle_count = 0

    def populate_indicators(self, dataframe, metadata):
        return dataframe

    def populate_entry_trend(self, dataframe, metadata):
        dataframe["enter_long"] = 0
        return dataframe

    def populate_exit_trend(self, dataframe, metadata):
        dataframe["exit_long"] = 0
        return dataframe
'''
# A release whose strategy cannot be loaded: freqtrade exits before READY=1.
BROKEN = "from freqtrade.strategy import IStrategy\nfrom freqtrade.strategy import no_such_helper\n"
# A release that loads, starts and raises on its first candle: freqtrade logs a warning (a ValueError, as pandas
# raises, gets no traceback) and keeps running, its probes all green.
RAISES = STRATEGY.replace("def populate_indicators(self, dataframe, metadata):\n        return dataframe",
                          "def populate_indicators(self, dataframe, metadata):\n"
                          "        raise ValueError('release {release}: broken on its first candle')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(exchange: StandInExchange, api_port: int) -> dict:
    cfg = json.loads((EXAMPLE / "config.json").read_text())
    cfg["strategy"] = "Quiet"
    cfg["force_entry_enable"] = True  # /forceenter: the test opens dry-run trades at will
    cfg["exchange"].update(pair_whitelist=["BTC/USDT", "ETH/USDT", "LTC/USDT"], enable_ws=False,
                           ccxt_config=exchange.ccxt_urls(), ccxt_async_config=exchange.ccxt_urls())
    cfg["api_server"]["listen_port"] = api_port
    cfg["internals"]["process_throttle_secs"] = 2  # a WATCHDOG=1 every 2 s: the gate sees the drain acknowledged soon
    return cfg


def _make_repo(dest: Path, config: dict, releases: dict[str, str]) -> dict[str, str]:
    import git

    repo = git.Repo.init(dest, initial_branch="main")
    me = git.Actor("slotctl test", "test@slotctl.invalid")
    (dest / "strategies").mkdir()
    (dest / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.copy(LOCK, dest / "requirements.lock")
    shas = {}
    for name, strategy in releases.items():
        (dest / "strategies" / "quiet.py").write_text(strategy)
        repo.index.add(["config.json", "requirements.lock", "strategies/quiet.py"])
        shas[name] = repo.index.commit(f"release {name}", author=me, committer=me).hexsha
    return shas


class Api:
    """freqtrade's REST API with HTTP basic auth, as its own client uses it."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/api/v1/"
        self.auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    def __call__(self, path: str, body: dict | None = None, method: str | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": self.auth, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)

    def up(self) -> bool:
        try:
            return self("ping") == {"status": "pong"}
        except (urllib.error.URLError, OSError):
            return False

    def open_trades(self) -> set[int]:
        return {t["trade_id"] for t in self("status") if t["is_open"]}


@pytest.fixture
def exchange():
    ex = StandInExchange().start()
    yield ex
    ex.stop()


@pytest.fixture
def ft(sandbox, exchange, tmp_path, request):
    """request.param (indirect parametrization): keys of config.json to set for every release."""
    wheels = wheels_dir()
    assert wheels.is_dir(), f"{wheels}: freqtrade's wheels are missing: run scripts/setup (it downloads them once)"
    port = _free_port()
    shas = _make_repo(tmp_path / "repo", {**_config(exchange, port), **getattr(request, "param", {})}, {
        "v1": STRATEGY.format(release="v1"), "v2": STRATEGY.format(release="v2"), "broken": BROKEN,
        "raises": RAISES.format(release="raises")})
    secrets = sandbox.shared / "etc"  # inside the sandbox too: systemd reads the EnvironmentFile there
    secrets.mkdir()
    env_file = secrets / "freqtrade.env"
    env_file.write_text(f"FREQTRADE__API_SERVER__USERNAME={USER}\nFREQTRADE__API_SERVER__PASSWORD={PASSWORD}\n"
                        f"FREQTRADE__API_SERVER__JWT_SECRET_KEY={'j' * 32}\nFREQTRADE__API_SERVER__WS_TOKEN=ws\n")
    netrc = secrets / "api.netrc"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    env_file.chmod(0o600)
    netrc.chmod(0o600)

    example = json.loads(json.dumps(inventory.load(EXAMPLE / "inventory.yaml").hosts["local"].quiesce.drain_command))
    api = f"http://127.0.0.1:{port}/api/v1/"
    curl = [a.replace("/etc/freqtrade/api.netrc", str(netrc)) for a in example[:-1]]
    doc = {"version": 1, "defaults": {
        "root": str(sandbox.shared / "opt" / "freqtrade"),
        "repo": str(tmp_path / "repo"),
        "commit": shas["v1"],
        "lockfile": "requirements.lock",
        "index": {"find_links": [str(wheels)], "offline": True},
        "python": "python3.11",
        "service": "freqtrade.service",
        "templates_dir": str(EXAMPLE / "templates"),
        "units": {"freqtrade.service": "freqtrade.service.j2"},
        "unit_dir": str(sandbox.units),
        "run": {"bot": "trade --config config.json --strategy-path strategies", "dashboard": None},
        "vars": {"db_file": "tradesv3.sqlite"},
        "environment_files": [str(env_file)],
        "config": {"files": ["config.json"], "allow_differ": []},
        "quiesce": {"policy": "recorded", "timeout": 60,
                    "positions": {"source": "sqlite", "path": "shared/data/tradesv3.sqlite",
                                  "query": "SELECT id FROM trades WHERE is_open = 1"},
                    "drain_command": [*curl, api + "stopentry"], "undrain_command": [*curl, api + "start"]},
        "health": {"heartbeat": {"source": "systemd"}, "notify": True, "watchdog": 30, "start_timeout": 120,
                   "max_age": 30, "window": 5, "log_file": "shared/logs/freqtrade.log"},
        "backups": {"files": ["shared/data/tradesv3.sqlite"]},
    }, "hosts": {"local": {}}}
    path = write_inventory(tmp_path / "inventory.yaml", doc)
    ctx = HostContext(inventory.load(path).hosts["local"], sandbox.bus_address, sandbox.proc_root)
    host = Host(sandbox, path, ctx, BotRepo(tmp_path / "repo", wheels, shas))
    host.api = Api(port)
    return host


def running_slot(host) -> str | None:
    st = host.ctx.systemd.state("freqtrade.service")
    return host.ctx.process_slot(st.main_pid) if st.main_pid else None


def _db_open_trades(host) -> set[int]:
    db = host.root / "shared/data/tradesv3.sqlite"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return {r[0] for r in con.execute("SELECT id FROM trades WHERE is_open = 1")}
    finally:
        con.close()


def test_freqtrade_dry_run_trades_survive_a_deploy_a_rollback_and_the_rollback_of_a_release_that_cannot_load(ft, exchange):
    t0 = time.monotonic()
    first = deploy(ft, "v1")
    assert first.returncode == 0, first.stderr
    assert "no bot runs: its drain call waits for one" in first.stderr  # no API to call /stopentry on yet
    assert manifest(ft, "blue").distributions["freqtrade"] == VERSION
    wait_for(ft.api.up, 60)
    # freqtrade loaded the stand-in's markets and candles: what ccxt asked for on its way up.
    assert {"/api/v3/exchangeInfo", "/api/v3/klines"} <= set(exchange.calls), exchange.calls
    assert exchange.unanswered == [], "freqtrade asked the stand-in for what it does not serve"
    for pair in ("BTC/USDT", "ETH/USDT"):
        ft.api("forceenter", {"pair": pair, "side": "long"})
    wait_for(lambda: ft.api("count")["current"] == 2, 30)
    trades = ft.api.open_trades()
    assert len(trades) == 2 and _db_open_trades(ft) == trades
    t_v1 = time.monotonic() - t0

    second = deploy(ft, "v2")
    assert second.returncode == 0, second.stderr
    # The drain reached the old freqtrade over its API (/stopentry): it stopped entering before it was stopped.
    assert "Changing state from RUNNING to: PAUSED" in (ft.root / "shared/logs/freqtrade.log").read_text()
    out = envelope(second)["hosts"]["local"]
    assert out["active_slot"] == "green" and running_slot(ft) == "green"
    # The gate read the open trades from freqtrade's database and kept them in the snapshot it took.
    assert {str(t) for t in trades} <= set(out["quiesce"][-1]["reason"].split(": ")[-1].split(", ")), out["quiesce"]
    snap = ft.root / ".slotctl/backups" / out["deploy_id"]
    assert (snap / "files/shared/data/tradesv3.sqlite").is_file(), sorted(str(p) for p in snap.rglob("*"))
    wait_for(ft.api.up, 60)
    assert ft.api.open_trades() == trades  # the new release loaded them from the shared database
    assert ft.api("show_config")["state"] == "running"  # /stopentry lived in the old process only: not drained
    assert not (ft.root / "shared/control/drain").exists()
    # A rollback by hand, through the same gate: the drain reaches the running v2, v1 starts on the same database.
    back = ft.cli("rollback", "--json")
    assert back.returncode == 0, back.stderr
    assert active(ft) == "slots/blue" and running_slot(ft) == "blue"
    assert (ft.root / "shared/logs/freqtrade.log").read_text().count("Changing state from RUNNING to: PAUSED") == 2
    wait_for(ft.api.up, 60)
    assert ft.api.open_trades() == trades and ft.api("show_config")["state"] == "running"
    t_v2 = time.monotonic() - t0 - t_v1

    bad = deploy(ft, "broken")
    assert bad.returncode == 1, bad.stderr
    out = envelope(bad)["hosts"]["local"]
    assert not out["probes"][0]["ok"] and out["probes"][1]["ok"], out["probes"]
    assert manifest(ft, "green").verdict == "bad"
    assert active(ft) == "slots/blue" and running_slot(ft) == "blue"
    wait_for(ft.api.up, 60)
    assert ft.api.open_trades() == trades and _db_open_trades(ft) == trades
    assert ft.api("show_config")["state"] == "running"
    status = ft.cli("status")
    assert status.returncode == 0, status.stdout + status.stderr
    print(f"v1 {t_v1:.0f}s, v2 and rollback {t_v2:.0f}s, broken {time.monotonic() - t0 - t_v1 - t_v2:.0f}s")  # with -s


def test_a_strategy_that_raises_on_its_first_candle_is_rejected_in_rehearsal_and_the_live_freqtrade_never_notices(ft):
    """The example's rehearsal: the candidate freqtrade runs dry-run, API off, on a copy of the database, beside the
    live one. freqtrade survives its strategy raising (unit up, watchdog fed, trades loaded): only the example's
    fail_on patterns, on its journal, can reject it."""
    assert deploy(ft, "v1").returncode == 0
    wait_for(ft.api.up, 60)
    ft.api("forceenter", {"pair": "BTC/USDT", "side": "long"})
    wait_for(lambda: ft.api("count")["current"] == 1, 30)
    trades = ft.api.open_trades()
    pid = ft.ctx.systemd.state("freqtrade.service").main_pid
    example = inventory.load(EXAMPLE / "inventory.yaml").hosts["local"].rehearsal
    ft.reconfigure(rehearsal={"window": 15, "fail_on": list(example.fail_on)})  # its first candle: in its first loop

    bad = deploy(ft, "raises")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    out = envelope(bad)["hosts"]["local"]
    assert "rejected in rehearsal" in out["summary"], out["summary"]
    # The line that rejected it: the strategy wrapper's warning (no Traceback, the default fail_on, to match).
    problem = out["rehearsal"]["problems"][0]
    assert "rehearsal.fail_on" in problem and "Strategy caused the following exception: ValueError('release raises: " \
        "broken on its first candle')" in problem, "\n".join(out["rehearsal"]["journal"])
    # The live freqtrade: the same process, the same open trades, never drained (/stopentry would log PAUSED).
    assert ft.ctx.systemd.state("freqtrade.service").main_pid == pid and running_slot(ft) == "blue"
    assert ft.api.open_trades() == trades and _db_open_trades(ft) == trades
    assert ft.api("show_config")["state"] == "running"
    assert "to: PAUSED" not in (ft.root / "shared/logs/freqtrade.log").read_text()
    dep = deploys(journal_records(ft))[-1]
    steps = [r["step"] for r in dep.steps if r.get("phase") == "begin"]
    assert dep.outcome() == ("rejected-in-rehearsal", 1) and "rehearse" in steps and "quiesce" not in steps, steps
    unit = "freqtrade-rehearsal.service"
    assert not (ft.root / "shared/rehearsal").exists() and not (ft.sandbox.units / unit).exists()
    assert not (ft.sandbox.units / f"{unit}.d").exists()

    # A good release passes the same rehearsal, on the trades it copied, then deploys through the gate.
    good = deploy(ft, "v2")
    assert good.returncode == 0, good.stdout + good.stderr
    out = envelope(good)["hosts"]["local"]
    assert out["rehearsal"]["ok"] and out["rehearsal"]["positions"] == [str(t) for t in trades], out["rehearsal"]
    assert running_slot(ft) == "green" and not (ft.root / "shared/rehearsal").exists()
    wait_for(ft.api.up, 60)
    assert ft.api.open_trades() == trades


STOPLOSS_ON_EXCHANGE = {"order_types": {"entry": "limit", "exit": "limit", "stoploss": "limit",
                                        "stoploss_on_exchange": True}}


def _example_orders() -> dict:
    """The example's quiesce.orders section, as written."""
    return yaml.safe_load((EXAMPLE / "inventory.yaml").read_text())["defaults"]["quiesce"]["orders"]


def _db_rows(host, query: str) -> list[tuple]:
    db = host.root / "shared/data/tradesv3.sqlite"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def _db_orders(host) -> dict[str, bool]:
    """freqtrade's open orders as the example's query reads them: id -> protective."""
    return {r[0]: bool(r[1]) for r in _db_rows(host, _example_orders()["query"])}


def _db_stoplosses(host) -> dict[str, tuple[int, str]]:
    """Every stoploss order freqtrade recorded: its exchange order id -> (ft_is_open, status)."""
    return {r[0]: (r[1], r[2]) for r in _db_rows(host, "SELECT order_id, ft_is_open, status FROM orders "
                                                        "WHERE ft_order_side = 'stoploss'")}


@pytest.mark.parametrize("ft", [STOPLOSS_ON_EXCHANGE], indirect=True)
def test_open_entry_orders_hold_the_gate_until_filled_or_cancelled_and_a_stoploss_on_the_exchange_survives_the_switch(ft, exchange):
    """The example's orders source on freqtrade's own database. Limit entries far below the stand-in's book stay open:
    the gate waits for them (exit 5, drain lifted, nothing switched). One cancelled, the other filled: freqtrade puts
    its stoploss on the exchange, which does not hold the gate, is snapshotted, and the new release takes over."""
    t0 = time.monotonic()
    ft.reconfigure(quiesce={"orders": _example_orders()})
    assert deploy(ft, "v1").returncode == 0
    wait_for(ft.api.up, 60)
    btc = ft.api("forceenter", {"pair": "BTC/USDT", "side": "long", "price": 25000})["trade_id"]
    eth = ft.api("forceenter", {"pair": "ETH/USDT", "side": "long", "price": 1500})["trade_id"]
    entries = _db_orders(ft)
    assert len(entries) == 2 and not any(entries.values()), entries  # both in flight: the book is at 50000 and 3000
    pid = ft.ctx.systemd.state("freqtrade.service").main_pid

    held = deploy(ft, "v2", "--quiesce-timeout", "3")
    assert held.returncode == 5, held.stdout + held.stderr
    out = envelope(held)["hosts"]["local"]
    assert "2 order(s) in flight: " in out["summary"] and all(o in out["summary"] for o in entries), out["summary"]
    assert "nothing switched, drain lifted" in out["summary"], out["summary"]
    assert ft.ctx.systemd.state("freqtrade.service").main_pid == pid and active(ft) == "slots/blue"
    assert ft.api("show_config")["state"] == "running"  # /start undid /stopentry
    assert _db_orders(ft) == entries and ft.api.open_trades() == {btc, eth}
    t_held = time.monotonic() - t0

    # Cancelled unfilled: freqtrade deletes the trade, then fails to show it ("no active trade", HTTP 502).
    with pytest.raises(urllib.error.HTTPError, match="502"):
        ft.api(f"trades/{eth}/open-order", method="DELETE")
    assert eth not in ft.api.open_trades()
    exchange.set_price("BTCUSDT", 24000)  # the book crosses 25000: the BTC entry fills, its stoploss goes on
    stop = f"BTC/USDT stoploss of trade {btc}"
    wait_for(lambda: _db_orders(ft) == {stop: True}, 30)
    [(before, state)] = _db_stoplosses(ft).items()
    assert state == (1, "open")
    through = deploy(ft, "v2")
    assert through.returncode == 0, through.stdout + through.stderr
    assert running_slot(ft) == "green"
    snap = [r for r in journal_records(ft) if r.get("step") == "snapshot" and r.get("phase") == "end"][-1]
    assert snap["protective_orders"] == [stop] and snap["open_orders"] == [], snap
    # The new freqtrade showed a stoploss open for the trade, as the probe required: a new order. In dry-run
    # freqtrade closes every open dry-run stoploss in its database at start (persistence/migrations.py,
    # fix_old_dry_orders: status left "open") and places a new one on its first loop.
    wait_for(ft.api.up, 60)
    assert ft.api.open_trades() == {btc} and _db_orders(ft) == {stop: True}
    after = _db_stoplosses(ft)
    [now] = [i for i, (is_open, _) in after.items() if is_open]
    assert now != before and after[before] == (0, "open"), after
    sl = [o for t in ft.api("status") for o in t["orders"] if o["ft_order_side"] == "stoploss"]
    assert [(o["order_id"], o["is_open"]) for o in sl if o["is_open"]] == [(now, True)], sl
    print(f"held {t_held:.0f}s, through {time.monotonic() - t0 - t_held:.0f}s")  # with -s


def test_the_example_inventory_loads_and_renders_freqtrades_unit_with_sd_notify_and_its_secrets_by_reference():
    host = inventory.load(EXAMPLE / "inventory.yaml").hosts["local"]
    unit = units.render(host, "0" * 40)["freqtrade.service"]
    assert "Type=notify\n" in unit and "WatchdogSec=30s\n" in unit and "TimeoutStartSec=180s\n" in unit
    assert "EnvironmentFile=/etc/freqtrade/freqtrade.env\n" in unit and "User=freqtrade\n" in unit
    start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert start == ("ExecStart=/opt/freqtrade/trading-bot-current/venv/bin/freqtrade trade --config config.json "
                     "--strategy-path strategies --sd-notify --userdir /opt/freqtrade/shared/data/user_data "
                     "--db-url sqlite:////opt/freqtrade/shared/data/tradesv3.sqlite --logfile /opt/freqtrade/shared/logs/freqtrade.log")
    assert "Environment=FREQTRADE__" not in unit
    # Its rehearsal: the candidate slot's freqtrade, paper-only whatever config.json says, on its own copies, API off.
    rhost = rehearsal.rehearsal_host(host)
    unit = units.render(rhost, "0" * 40, units.rehearsal_context(rhost, "0" * 40, Path("/opt/freqtrade/slots/green")))
    unit = unit["freqtrade-rehearsal.service"]
    start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert start == ("ExecStart=/opt/freqtrade/slots/green/venv/bin/freqtrade trade --config config.json --strategy-path "
                     "strategies --dry-run --sd-notify --userdir /opt/freqtrade/shared/rehearsal/data/user_data --db-url "
                     "sqlite:////opt/freqtrade/shared/rehearsal/data/tradesv3.sqlite --logfile "
                     "/opt/freqtrade/shared/rehearsal/logs/freqtrade.log")
    assert "FREQTRADE__API_SERVER__ENABLED=false" in unit and "\nEnvironmentFile=" not in unit


def test_the_examples_drain_fails_closed_when_freqtrade_refuses_its_credentials(tmp_path):
    """curl -f: a 401 from freqtrade's API is a failed drain (exit 2, nothing switched), not a drain that seemed to work."""
    seen = []

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append((self.path, self.headers.get("Authorization", "")))
            body = b'{"detail":"Unauthorized"}'
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        netrc = tmp_path / "api.netrc"
        netrc.write_text(f"machine 127.0.0.1 login {USER} password wrong\n")
        example = inventory.load(EXAMPLE / "inventory.yaml").hosts["local"].quiesce
        base = f"http://127.0.0.1:{server.server_port}/api/v1/"
        argv = [a.replace("/etc/freqtrade/api.netrc", str(netrc)) for a in example.drain_command]
        assert argv[-1] == "http://127.0.0.1:8080/api/v1/stopentry"
        host = HostConfig(name="t", repo="/r", root=tmp_path, quiesce=replace(
            example, drain_command=(*argv[:-1], base + "stopentry"), undrain_command=(*argv[:-1], base + "start")))
        with pytest.raises(DrainError, match="quiesce.drain_command curl failed: .*401"):
            Drain(host).request("dep")
        assert not (tmp_path / "shared/control/drain").exists()
        assert [p for p, _ in seen] == ["/api/v1/stopentry", "/api/v1/start"]  # the undrain too, in case it half-worked
        assert seen[0][1] == "Basic " + base64.b64encode(f"{USER}:wrong".encode()).decode()  # from the netrc file
    finally:
        server.shutdown()
