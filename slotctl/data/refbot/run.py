"""Reference trading bot: keeps the bot's side of slotctl's contract (DESIGN.md section 5).

It trades nothing real. It opens and closes simulated positions, writes its
positions file atomically under an exclusive flock, writes a heartbeat JSON,
logs where the dashboard reads, honours the drain flag (no new trades; says
"idle" once no trade is in flight), and stops cleanly on SIGTERM.

live_config.json sets its pace and can make a release misbehave on purpose:
  open_every      ticks between new trades          hold_seconds   how long a position stays open
  trade_seconds   how long a trade is in flight     start_with_trade  begin a trade at once
  fault: crash_at_start | hang_at_start | die_after (die_after_seconds) | no_heartbeat | ignore_drain
         | empty_positions | torn_positions | lose_positions | ignore_state | log_elsewhere | null
A file `crash-at-start` in BOT_CONTROL_DIR crashes every release at start (a broken host, not a release).
It speaks sd_notify when systemd asks (NOTIFY_SOCKET): READY=1 once its state is loaded, WATCHDOG=1 each tick.
"""

from __future__ import annotations

import fcntl
import json
import os
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


def load_positions() -> dict:
    """Rebuild state from disk at start (a restart must not forget open positions)."""
    with open(str(POSITIONS) + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            return json.loads(POSITIONS.read_text())
        except FileNotFoundError:
            return {"open_positions": [], "closed": 0, "next_id": 1}


def save_positions(state: dict) -> None:
    with open(str(POSITIONS) + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        write_atomic(POSITIONS, state)


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
    loaded_at = time.time()
    sd_notify("READY=1")
    started = time.monotonic()
    stopping = False

    def on_term(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    tick = 0
    trade_started: float | None = None  # a trade in flight: on the exchange, not yet in the positions file
    traded = False  # start_with_trade: the first trade as soon as the bot may trade (not while drained)
    damaged = False
    trade_seconds = float(CONFIG.get("trade_seconds", 0))
    hold = float(CONFIG.get("hold_seconds", 2))
    while not stopping:
        tick += 1
        now = time.time()
        sd_notify("WATCHDOG=1")
        if fault == "die_after" and time.monotonic() - started > float(CONFIG.get("die_after_seconds", 3)):
            log("fault injected: dying")
            return 1
        may_open = not DRAIN.exists() or fault == "ignore_drain"
        wants = tick % int(CONFIG.get("open_every", 6)) == 0 or (CONFIG.get("start_with_trade") and not traded)
        if trade_started is None and may_open and wants:
            trade_started, traded = now, True
            log("trade started")
        if trade_started is not None and now - trade_started >= trade_seconds:
            pos = {"id": f"p{state['next_id']}", "symbol": CONFIG.get("symbol", "BTC-PERP"),
                   "qty": tradekit.round_qty(0.0123), "opened_at": now}
            state["next_id"] += 1
            state["open_positions"].append(pos)
            save_positions(state)
            trade_started = None
            log(f"opened {pos['id']}")
        # A position this process loaded is held at least `hold` from its start, like one it opened: a restarted
        # bot re-judges its exits instead of closing at once what it just loaded (and what the probes check for).
        for pos in [p for p in state["open_positions"] if now - max(p["opened_at"], loaded_at) > hold]:
            state["open_positions"].remove(pos)
            state["closed"] += 1
            save_positions(state)
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
        if fault != "no_heartbeat":
            write_atomic(HEARTBEAT, {"ts": time.time(), "pid": os.getpid(),
                                     "phase": "trading" if trade_started is not None else "idle",
                                     "open_positions": len(state["open_positions"]),
                                     "release": CONFIG.get("release")})
        time.sleep(TICK)
    sd_notify("STOPPING=1")
    save_positions(state)
    log(f"stopped on SIGTERM, open positions saved {ids(state)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
