"""Where the bot's state is, read by an adapter and judged here: pure, so every rule is a table-driven test.

Each source answers with Positions (core.quiesce): the ids of the open positions, or why they are not known.
A source that could not answer (connection refused, non-2xx, not JSON, a failing command) is UNREADABLE:
"not known yet", never flat.
"""

from __future__ import annotations

from typing import Any

from .health import Heartbeat, echoed_drain
from .quiesce import INVALID, OK, UNREADABLE, Orders, Positions


def search(expr: str, doc: Any) -> Any:
    import jmespath  # deferred: only hosts with a select pay for it

    return jmespath.search(expr, doc)


def positions_from(value: Any, expr: str, *, bad_shape: str = INVALID) -> Positions:
    """What `select` gave: the list of the open positions' ids (strings or numbers). `[]` is flat.

    bad_shape: the state of an answer that is no such list: INVALID for the bot's own state file (torn or
    foreign: stop and look), UNREADABLE for an API or command (an error object in place of the list).
    """
    if not isinstance(value, list):
        return Positions(bad_shape, detail=f"select {expr!r} gave {_kind(value)}, expected a list of ids")
    ids = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            return Positions(bad_shape, detail=f"select {expr!r}: item {i} is {_kind(v)}, expected an id (string or number)")
        ids.append(str(v))
    return Positions(OK, tuple(ids))


def positions_from_rows(rows: list[tuple]) -> Positions:
    """A SQL query's rows, one per open position, the id first."""
    ids = []
    for i, row in enumerate(rows):
        if not row or row[0] is None or isinstance(row[0], (bytes, float)):
            return Positions(INVALID, detail=f"query row {i}: first column is {_kind(row[0] if row else None)}, expected an id")
        ids.append(str(row[0]))
    return Positions(OK, tuple(ids))


def orders_from(value: Any, expr: str, *, bad_shape: str = INVALID) -> Orders:
    """What the orders source gave: a list whose items are an order id (in flight) or [id, protective] (a row of a
    query, or a select such as `orders[].[id, type == 'stop']`). `[]` is no open order."""
    if not isinstance(value, list):
        return Orders(bad_shape, detail=f"{expr!r} gave {_kind(value)}, expected a list of orders")
    in_flight, protective = [], []
    for i, v in enumerate(value):
        item = list(v) if isinstance(v, (list, tuple)) else [v]
        oid = item[0] if item else None
        if isinstance(oid, bool) or not isinstance(oid, (str, int)) or len(item) > 2:
            return Orders(bad_shape, detail=f"{expr!r}: item {i} is {_kind(v)}, expected an order id or [id, protective]")
        (protective if len(item) == 2 and item[1] else in_flight).append(str(oid))
    return Orders(OK, tuple(in_flight), tuple(protective))


def confirmed_orders(o: Orders, count: int | None, detail: str = "") -> Orders:
    """"No order in flight" is believed only when the confirm reading counts 0 too (as confirmed() for positions)."""
    if o.state != OK or o.in_flight:
        return o
    why = _unconfirmed(count, detail, "none in flight", "in flight")
    return o if why is None else Orders(UNREADABLE, detail=why)


def _unconfirmed(count: int | None, detail: str, said: str, counted: str) -> str | None:
    """Why an empty reading is not believed: its confirm reading failed or counts more than 0; None: it agrees."""
    if count is None:
        return f"the source says {said}, but its confirm reading failed: {detail}"
    if count != 0:
        return f"the source says {said}, but its confirm reading counts {count} {counted}"
    return None


def count_from(value: Any) -> int | None:
    """A confirm reading: a whole number >= 0 (a JSON number, or a SQL row of one integer), else None."""
    if isinstance(value, tuple) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != int(value):
        return None
    return int(value)


def confirmed(p: Positions, count: int | None, detail: str = "") -> Positions:
    """"Flat" from the positions source is believed only when the confirm reading counts 0 too.

    Some APIs answer [] when the call failed as well (freqtrade's /status): without an agreeing count,
    an empty list is "not known yet". Non-empty readings need no confirmation (they are never read as flat).
    """
    if p.state != OK or p.ids:
        return p
    why = _unconfirmed(count, detail, "flat", "open")
    return p if why is None else Positions(UNREADABLE, detail=why)


def heartbeat_from(value: Any, expr: str) -> tuple[Heartbeat | None, str | None]:
    """An HTTP heartbeat: select gives a unix timestamp, or an object with ts (and pid, phase, open_positions, drain)."""
    doc = value if isinstance(value, dict) else {"ts": value}
    ts = doc.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        return None, f"heartbeat select {expr!r} gave {_kind(ts)}, expected a unix timestamp (or an object with ts)"
    pid, n, phase = doc.get("pid"), doc.get("open_positions"), doc.get("phase")
    return Heartbeat(float(ts), pid if type(pid) is int else None, phase if isinstance(phase, str) else None,
                     n if type(n) is int else None, drain=echoed_drain(doc)), None


def heartbeat_from_systemd(now: float, active_state: str, sub_state: str, main_pid: int, watchdog_usec: int,
                           watchdog_ts_us: int, status_text: str) -> tuple[Heartbeat | None, str | None]:
    """A Type=notify bot as systemd sees it. Alive: active/running. With WatchdogSec the heartbeat is the last
    WATCHDOG=1 (systemd kills a bot that misses it, and the unit is then no longer active); without, now."""
    status = status_text or None
    if active_state != "active" or sub_state != "running" or not main_pid:
        return None, f"systemd: unit is {active_state}/{sub_state}" + (f" ({status})" if status else "")
    ts = watchdog_ts_us / 1e6 if watchdog_usec and watchdog_ts_us else now
    return Heartbeat(ts, main_pid, None, None, status), None


def parse_credentials(text: str) -> tuple[str, str]:
    """credentials_file: one line `user:password` (HTTP basic auth). The error never holds the text."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) != 1 or ":" not in lines[0]:
        raise ValueError("expected one line user:password")
    user, _, password = lines[0].strip().partition(":")
    return user, password


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(type(v), "a number"
                                                                                       if isinstance(v, (int, float)) else type(v).__name__)
