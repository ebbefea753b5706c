"""Reference dashboard: reads the bot's log and positions from the same shared paths."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

POSITIONS = Path(os.environ["BOT_POSITIONS_FILE"])
LOG = Path(os.environ["BOT_LOG_DIR"]) / "bot.log"
# Faults on purpose, as for the bot: a release whose dashboard fails at start (fault "dashboard_crash", in the
# release's live_config.json, read from the working directory, the slot's src/), or a file in the control dir
# that makes whichever release runs crash within its next round.
CRASH = Path(os.environ["BOT_CONTROL_DIR"]) / "dashboard-crash"
try:
    FAULT = json.loads(Path("live_config.json").read_text()).get("fault")
except (OSError, ValueError, AttributeError):
    FAULT = None


def read_positions() -> dict | None:
    try:
        with open(str(POSITIONS) + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)  # never read a half-written file
            return json.loads(POSITIONS.read_text())
    except FileNotFoundError:
        return None


while True:
    if FAULT == "dashboard_crash" or CRASH.exists():
        raise SystemExit("dashboard: fault injected: crashing")
    state = read_positions()
    try:
        last = LOG.read_text().splitlines()[-1]
    except (FileNotFoundError, IndexError):
        last = "(no log yet)"
    # The contract's {"open_positions": [...]}, or the dict keyed by position of `state: dict` (no file with sqlite).
    opened = "?" if not isinstance(state, dict) else len(state.get("open_positions", state))
    print(f"dashboard: {opened} open positions; last log: {last}", flush=True)
    time.sleep(2)
