"""Reference trading bot: keeps the bot's side of slotctl's contract (docs/bot-contract.md).

It trades nothing real. It opens and closes simulated positions, writes its
positions file atomically under an exclusive flock, writes a heartbeat JSON,
logs where the dashboard reads, honours the drain flag (no new trades; says
"idle" once no trade is in flight), and stops cleanly on SIGTERM. Each tick reads
the flag first and echoes its request id in the heartbeat it then writes
("drain"): slotctl's proof that the heartbeat was computed after the bot saw it.

live_config.json sets its pace and can make a release misbehave on purpose:
  open_every      ticks between new trades          hold_seconds   how long a position stays open
  trade_seconds   how long a trade is in flight     start_with_trade  begin a trade at once
  await_fill      a trade in flight lands only once a file `fill` is in BOT_CONTROL_DIR (an exchange's late fill)
  slow_ack        seconds: a slow bot that echoes nothing. Each tick it computes its heartbeat, reads the flag,
                  waits that long, writes the heartbeat it computed (dated now: after a drain that came meanwhile,
                  still "idle"), then trades if the flag was not there when it read it
  orders          true: its open orders go to BOT_DATA_DIR/orders.json ({"orders": [{id, kind}]}): a trade in flight
                  is an entry order ("e<n>", kind entry) until it lands; each open position has a stoploss kept on
                  the exchange ("sl-<position>", kind stoploss), which a restarted bot takes back over
  phase_idle      true: its heartbeat always says "idle", even mid-trade (a bot that does not report its phase)
  spy             true: at start, try to read each path in $SPY_READ and write in each dir in $SPY_WRITE (":"
                  separated), printing each outcome and the environment (slotctl's rehearsal fence, tested)
  ledger          true: each trade's start and landing times go to BOT_CONTROL_DIR/trades ("start <ts>", "land <ts>")
  decisions       true: each market tick's signal goes to BOT_DATA_DIR/decisions.json ({"decisions": [{tick,
                  signal}]}, the last 40), decided from a simulated market that is a function of the time alone, so
                  two bots running side by side see the same prices (slotctl's rehearsal.decisions)
  tick_stats      true: each tick appends "<unix ts> <ms>" to BOT_CONTROL_DIR/tick_stats, the ms from when the tick
                  was due to its heartbeat written (late wake-up plus work; bench/rehearsal.py); no fsync
  fault: crash_at_start | hang_at_start | die_after (die_after_seconds) | no_heartbeat | ignore_drain
         | empty_positions | torn_positions | lose_positions | ignore_state | log_elsewhere
         | raise_on_tick (imports and starts fine, raises on its first tick)
         | lose_orders (a restarted bot forgets the stoploss orders of the positions it loaded) | null
A file `crash-at-start` in BOT_CONTROL_DIR crashes every release at start (a broken host, not a release).
BOT_REHEARSAL=1 (slotctl's rehearsal) trades on paper: it loads its state and decides as it would, and opens and
closes nothing.

Where it keeps its state (slotctl's quiesce.positions sources), also live_config.json:
  state: contract   the contract's positions file: {"open_positions": [{"id": ...}], ...} (the default)
       | dict       the positions file as a JSON object keyed by position id, {} when flat (meta beside it)
       | sqlite     BOT_DATA_DIR/<db> (default trades.sqlite) in WAL mode: trades(id, symbol, qty, opened_at,
                    is_open); schema: N upgrades it in place at start (2 adds a column) and a release refuses a
                    database newer than its schema; tick_rows: N rows into a ticks table each tick
  api: true         an HTTP API on 127.0.0.1:<port in BOT_CONTROL_DIR/api-port>, freqtrade's shape:
                    /api/v1/status [{trade_id, pair}], /api/v1/count {current}, /api/v1/health {last_process_ts,
                    pid, phase, open, drain}; HTTP basic auth when BOT_CONTROL_DIR/api-credentials holds user:password
It speaks sd_notify when systemd asks (NOTIFY_SOCKET): READY=1 once its state is loaded, WATCHDOG=1 each tick.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import select
import signal
import socket
import sys
import time
from pathlib import Path

import tradekit  # from the slot's venv, pinned by requirements.lock

CONFIG = json.loads(Path("live_config.json").read_text())
POSITIONS = Path(os.environ["BOT_POSITIONS_FILE"])
HEARTBEAT = Path(os.environ["BOT_HEARTBEAT_FILE"])
DRAIN = Path(os.environ["BOT_DRAIN_FILE"])
CONTROL = Path(os.environ["BOT_CONTROL_DIR"])
FAULT = CONFIG.get("fault")
# The dashboard reads BOT_LOG_DIR/bot.log; the log_elsewhere fault writes where nobody looks.
LOG = Path(os.environ["BOT_DATA_DIR" if FAULT == "log_elsewhere" else "BOT_LOG_DIR"]) / "bot.log"
TICK = float(CONFIG.get("tick", 0.5))
REHEARSAL = os.environ.get("BOT_REHEARSAL") == "1"
DECISIONS = Path(os.environ["BOT_DATA_DIR"]) / "decisions.json"
ORDERS = Path(os.environ["BOT_DATA_DIR"]) / "orders.json"
SIGNAL_PERIOD = 0.5  # seconds per market tick


def market_price(t: int) -> float:
    """The simulated market: a price for market tick t that every bot computes alike."""
    return int(hashlib.sha256(str(t).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def strategy(price: float) -> str:
    return "buy" if price > 0.5 else "sell"  # the strategy


def sd_notify(state: str) -> None:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(state.encode(), addr)


def log(msg: str) -> None:
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [{CONFIG.get('release', '?')}] {msg}"
    print(line, flush=True)
    with open(LOG, "a") as f:
        f.write(line + "\n")


def write_atomic(path: Path, obj: object) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


STORE = CONFIG.get("state", "contract")
DB = Path(os.environ["BOT_DATA_DIR"]) / CONFIG.get("db", "trades.sqlite")
SCHEMA = int(CONFIG.get("schema", 1))
META = POSITIONS.with_name(POSITIONS.name + ".meta")  # dict mode: what is not a position (closed, next id)
_db = None


def fresh() -> dict:
    return {"open_positions": [], "closed": 0, "next_id": 1}


def database():
    """The SQLite store in WAL mode, its schema upgraded in place at start as freqtrade does."""
    global _db
    if _db is None:
        import sqlite3

        _db = sqlite3.connect(DB, timeout=10, isolation_level=None)
        _db.execute("PRAGMA journal_mode=WAL")
        _db.execute("CREATE TABLE IF NOT EXISTS trades (id TEXT PRIMARY KEY, symbol TEXT, qty REAL, opened_at REAL,"
                    " is_open INTEGER NOT NULL DEFAULT 1)")
        _db.execute("CREATE TABLE IF NOT EXISTS ticks (n INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL, pid INTEGER)")
        version = _db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA:
            log(f"database schema {version} is newer than this release's {SCHEMA}: refusing to run on it")
            sys.exit(4)
        if version < 2 <= SCHEMA:
            _db.execute("ALTER TABLE trades ADD COLUMN leverage REAL")
            log(f"database schema upgraded from {version} to {SCHEMA}")
        _db.execute(f"PRAGMA user_version = {SCHEMA}")
    return _db


def load_positions() -> dict:
    """Rebuild state from disk at start (a restart must not forget open positions)."""
    if STORE == "sqlite":
        db = database()
        rows = db.execute("SELECT id, symbol, qty, opened_at FROM trades WHERE is_open = 1 ORDER BY opened_at").fetchall()
        numbers = [int(r[0][1:]) for r in db.execute("SELECT id FROM trades") if r[0][1:].isdigit()]
        closed = db.execute("SELECT count(*) FROM trades WHERE is_open = 0").fetchone()[0]
        return {"open_positions": [{"id": i, "symbol": s, "qty": q, "opened_at": t} for i, s, q, t in rows],
                "closed": closed, "next_id": max(numbers, default=0) + 1}
    with open(str(POSITIONS) + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            doc = json.loads(POSITIONS.read_text())
        except FileNotFoundError:
            return fresh()
        if STORE == "dict":
            meta = json.loads(META.read_text()) if META.exists() else {"closed": 0, "next_id": 1}
            return {"open_positions": [dict(v, id=k) for k, v in doc.items()], **meta}
        return doc


def save_positions(state: dict) -> None:
    if STORE == "sqlite":
        db, open_ids = database(), [p["id"] for p in state["open_positions"]]
        db.execute("BEGIN IMMEDIATE")
        db.execute(f"UPDATE trades SET is_open = 0 WHERE is_open = 1 AND id NOT IN ({','.join('?' * len(open_ids))})",
                   open_ids)
        db.executemany("INSERT OR IGNORE INTO trades (id, symbol, qty, opened_at) VALUES (?, ?, ?, ?)",
                       [(p["id"], p["symbol"], p["qty"], p["opened_at"]) for p in state["open_positions"]])
        db.execute("COMMIT")
        return
    with open(str(POSITIONS) + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if STORE == "dict":
            write_atomic(META, {"closed": state["closed"], "next_id": state["next_id"]})
            write_atomic(POSITIONS, {p["id"]: {k: v for k, v in p.items() if k != "id"} for p in state["open_positions"]})
        else:
            write_atomic(POSITIONS, state)


def serve_api(state: dict, live: dict) -> None:
    """freqtrade's REST shape on loopback, answered from memory: what the bot holds, not what is on disk."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    port = int((CONTROL / "api-port").read_text())
    creds_file = CONTROL / "api-credentials"
    expected = "Basic " + base64.b64encode(creds_file.read_text().strip().encode()).decode() if creds_file.exists() else None

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if expected and self.headers.get("Authorization") != expected:
                return self.reply(401, {"detail": "Unauthorized"})
            opened = list(state["open_positions"])
            routes = {"/api/v1/ping": {"status": "pong"},
                      "/api/v1/status": [{"trade_id": p["id"], "pair": p["symbol"]} for p in opened],
                      "/api/v1/count": {"current": len(opened), "max": 10},
                      "/api/v1/health": {"last_process_ts": live["ts"], "pid": os.getpid(), "phase": live["phase"],
                                         "open": len(opened), "drain": live["drain"]}}
            if self.path not in routes:
                return self.reply(404, {"detail": "Not Found"})
            return self.reply(200, routes[self.path])

        def reply(self, code, doc):
            body = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer.allow_reuse_address = True
    delay = float(CONFIG.get("api_delay", 0))  # a bot whose API listens only a while after its start, as real ones do

    def serve() -> None:
        time.sleep(delay)
        ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()

    threading.Thread(target=serve, daemon=True).start()
    log(f"API on 127.0.0.1:{port}")


def spy() -> None:
    """A hostile release's first moves (config spy): read what SPY_READ names, write where SPY_WRITE says, show
    its environment; each outcome a line on stdout (the journal)."""
    for path in filter(None, os.environ.get("SPY_READ", "").split(":")):
        try:
            print(f"spy read {path}: ok, {len(Path(path).read_bytes())} bytes", flush=True)
        except OSError as e:
            print(f"spy read {path}: {e.strerror}", flush=True)
    for d in filter(None, os.environ.get("SPY_WRITE", "").split(":")):
        try:
            (Path(d) / "spy-was-here").write_text("x")
            print(f"spy write {d}: ok", flush=True)
        except OSError as e:
            print(f"spy write {d}: {e.strerror}", flush=True)
    print("spy env " + json.dumps(dict(os.environ)), flush=True)


def drain_request() -> tuple[bool, str | None]:
    """(drained, the request id to echo). An operator's flag (`touch`, no JSON) drains too, with no id."""
    try:
        raw = DRAIN.read_bytes()
    except FileNotFoundError:
        return False, None
    except OSError:  # there, but not readable by the bot's user (an operator's, mode 0600): drained all the same
        return True, None
    try:
        rec = json.loads(raw)
    except ValueError:
        return True, None
    return True, rec.get("id") if isinstance(rec, dict) and isinstance(rec.get("id"), str) else None


def ledger(event: str) -> None:
    if CONFIG.get("ledger"):
        with open(CONTROL / "trades", "a") as f:
            f.write(f"{event} {time.time()!r}\n")


def ids(state: dict) -> str:
    return ",".join(p["id"] for p in state["open_positions"]) or "-"


def main() -> int:
    for d in (POSITIONS.parent, HEARTBEAT.parent, LOG.parent):
        d.mkdir(parents=True, exist_ok=True)
    fault = FAULT
    log(f"starting pid={os.getpid()} cwd={os.getcwd()} tradekit={tradekit.__version__} fault={fault}")
    if fault == "crash_at_start" or (CONTROL / "crash-at-start").exists():
        log("fault injected: crashing at start")
        return 3
    if fault == "hang_at_start":
        log("fault injected: hanging at start")
        time.sleep(100000)
    if fault == "ignore_state":  # never reads its positions file, and leaves it as it was
        state = {"open_positions": [], "closed": 0, "next_id": 1000}
        log("fault injected: ignoring the positions file")
    else:
        state = load_positions()
        if fault == "lose_positions":
            log(f"fault injected: forgetting open positions {ids(state)}")
            state["open_positions"] = []
        save_positions(state)  # the file exists from the first second on, even before any trade
    log(f"restored open positions {ids(state)}")
    if CONFIG.get("spy"):
        spy()
    loaded_at = time.time()
    live = {"ts": time.time(), "phase": "idle", "drain": None}
    if CONFIG.get("api") and not (REHEARSAL and not (CONTROL / "api-port").exists()):
        serve_api(state, live)
    sd_notify("READY=1")
    started = time.monotonic()
    stopping = False

    def on_term(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    # A SIGTERM ends the tick's sleep at once (the signal writes to this pipe, which the select waits on):
    # a stop takes as long as saving the state, not up to a tick more.
    woken, wake = os.pipe()
    os.set_blocking(wake, False)
    signal.set_wakeup_fd(wake)
    tick = 0
    trade_started: float | None = None  # a trade in flight: on the exchange, not yet in the positions file
    traded = False  # start_with_trade: the first trade as soon as the bot may trade (not while drained)
    damaged = False
    trade_seconds = float(CONFIG.get("trade_seconds", 0))
    hold = float(CONFIG.get("hold_seconds", 2))
    slow_ack = float(CONFIG.get("slow_ack", 0))
    decided: list[dict] = []
    stats = open(CONTROL / "tick_stats", "a", buffering=1) if CONFIG.get("tick_stats") else None
    due = time.monotonic()

    # The stoploss orders this process holds on the exchange: taken back over for the positions it loaded.
    stops = set() if fault == "lose_orders" else {p["id"] for p in state["open_positions"]}
    written_orders: list | None = None

    def write_orders() -> None:
        nonlocal written_orders
        if not CONFIG.get("orders"):
            return
        orders = ([{"id": f"e{state['next_id']}", "kind": "entry"}] if trade_started is not None else []) + \
            [{"id": f"sl-{i}", "kind": "stoploss"} for i in sorted(stops)]
        if orders != written_orders:
            write_atomic(ORDERS, {"orders": orders})
            written_orders = orders

    def heartbeat(echo: dict) -> dict:
        trading = trade_started is not None and not CONFIG.get("phase_idle")
        return {"ts": time.time(), "pid": os.getpid(), "phase": "trading" if trading else "idle",
                "open_positions": len(state["open_positions"]), "release": CONFIG.get("release"), **echo}

    while not stopping:
        tick += 1
        sd_notify("WATCHDOG=1")
        if fault == "raise_on_tick":
            raise RuntimeError("fault injected: the first tick fails at runtime")
        if CONFIG.get("decisions"):
            t = int(time.time() // SIGNAL_PERIOD)
            if not decided or decided[-1]["tick"] != t:
                decided = (decided + [{"tick": t, "signal": strategy(market_price(t))}])[-40:]
                tmp = DECISIONS.with_name(f".{DECISIONS.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps({"decisions": decided}))
                os.replace(tmp, DECISIONS)  # not state: no fsync
        if fault == "die_after" and time.monotonic() - started > float(CONFIG.get("die_after_seconds", 3)):
            log("fault injected: dying")
            return 1
        computed = heartbeat({})  # slow_ack writes this one: computed before the flag is read
        # The flag is read once, before anything this tick decides; the heartbeat written at the end echoes its id.
        drained, drain_id = drain_request()
        if slow_ack:
            select.select([woken], [], [], slow_ack)
            write_atomic(HEARTBEAT, dict(computed, ts=time.time()))
        now = time.time()
        may_open = (not drained or fault == "ignore_drain") and not REHEARSAL
        wants = tick % int(CONFIG.get("open_every", 6)) == 0 or (CONFIG.get("start_with_trade") and not traded)
        if trade_started is None and may_open and wants:
            trade_started, traded = now, True
            ledger("start")
            log("trade started")
        filled = not CONFIG.get("await_fill") or (CONTROL / "fill").exists()
        if trade_started is not None and now - trade_started >= trade_seconds and filled:
            pos = {"id": f"p{state['next_id']}", "symbol": CONFIG.get("symbol", "BTC-PERP"),
                   "qty": tradekit.round_qty(0.0123), "opened_at": now}
            state["next_id"] += 1
            state["open_positions"].append(pos)
            save_positions(state)
            trade_started = None
            stops.add(pos["id"])
            ledger("land")
            log(f"opened {pos['id']}")
        # A position this process loaded is held at least `hold` from its start, like one it opened: a restarted
        # bot re-judges its exits instead of closing at once what it just loaded (and what the probes check for).
        for pos in [p for p in state["open_positions"] if now - max(p["opened_at"], loaded_at) > hold and not REHEARSAL]:
            state["open_positions"].remove(pos)
            state["closed"] += 1
            save_positions(state)
            stops.discard(pos["id"])
            log(f"closed {pos['id']}")
        # The state faults strike once, when there is a position to lose.
        if fault == "empty_positions" and state["open_positions"] and not damaged:
            with open(str(POSITIONS) + ".lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                write_atomic(POSITIONS, {})
            damaged = True
            log("fault injected: positions file emptied")
        if fault == "torn_positions" and state["open_positions"] and not damaged:
            text = json.dumps(state)
            POSITIONS.write_text(text[: len(text) // 2])  # not atomic, not locked: a torn write
            damaged = True
            log("fault injected: positions file torn")
        if CONFIG.get("tick_rows"):
            db = database()
            for _ in range(int(CONFIG["tick_rows"])):
                db.execute("INSERT INTO ticks (ts, pid) VALUES (?, ?)", (time.time(), os.getpid()))  # each its own commit
        write_orders()
        live.update(ts=time.time(), phase="trading" if trade_started is not None and not CONFIG.get("phase_idle")
                    else "idle", drain=drain_id)
        if fault != "no_heartbeat" and not slow_ack:
            write_atomic(HEARTBEAT, heartbeat({"drain": drain_id}))
        if stats:
            stats.write(f"{time.time():.3f} {(time.monotonic() - due) * 1000:.3f}\n")
        if not stopping:
            due = time.monotonic() + TICK
            select.select([woken], [], [], TICK)
    sd_notify("STOPPING=1")
    save_positions(state)
    log(f"stopped on SIGTERM, open positions saved {ids(state)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
