"""The quiesce gate's decisions (docs/quiesce-gate.md): pure functions of what was read."""

from __future__ import annotations

from dataclasses import dataclass

from .health import FUTURE_TOLERANCE, Heartbeat

# What reading the positions gave. "locked" is never "empty": a lock we could not get
# means the bot is writing, so we wait (the audit's RISK-003 returned {} here and lost positions).
# "unreadable": a source that could not answer now (HTTP down, a failing command, a confirm reading that
# disagrees): not known yet, waited on like "locked", never taken for flat.
OK, MISSING, EMPTY, TORN, INVALID, LOCKED = "ok", "missing", "empty", "torn", "invalid", "locked"
UNREADABLE = "unreadable"
# "unsafe": a path of the bot's that slotctl will not open (a link, a FIFO, a device, a socket, a directory, a file
# over its size cap: fs.Unsafe): not known, waited on whether or not the bot runs, never taken for flat.
UNSAFE = "unsafe"


@dataclass(frozen=True)
class Positions:
    state: str
    ids: tuple[str, ...] = ()
    detail: str = ""

    @property
    def count(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Orders:
    """The bot's open orders (quiesce.orders): those in flight hold the gate; protective ones (a stoploss kept on
    the exchange) are recorded and must survive the switch. A state other than OK is "not known yet"."""

    state: str
    in_flight: tuple[str, ...] = ()
    protective: tuple[str, ...] = ()
    detail: str = ""

    def describe(self) -> str:
        return (f"{len(self.in_flight)} in flight ({', '.join(self.in_flight) or '-'}), {len(self.protective)} "
                f"protective ({', '.join(self.protective) or '-'})")


def json_state(data: bytes) -> tuple[object, Positions | None]:
    """The JSON document of a state file, or why there is none: zero bytes is EMPTY, a half-written file TORN."""
    import json

    if not data.strip():
        return None, Positions(EMPTY, detail="zero bytes")
    try:
        return json.loads(data), None
    except (ValueError, UnicodeDecodeError) as e:
        return None, Positions(TORN, detail=f"not valid JSON ({e})")


def parse_positions(data: bytes) -> Positions:
    """The bot's positions file: a JSON object whose open_positions list holds objects with an id."""
    doc, problem = json_state(data)
    if problem is not None:
        return problem
    if doc == {}:
        return Positions(EMPTY, detail="{}")
    if not isinstance(doc, dict) or not isinstance(doc.get("open_positions"), list):
        return Positions(INVALID, detail="expected a JSON object with an open_positions list")
    ids = []
    for i, p in enumerate(doc["open_positions"]):
        if not isinstance(p, dict) or not isinstance(p.get("id"), (str, int)):
            return Positions(INVALID, detail=f"open_positions[{i}] has no id")
        ids.append(str(p["id"]))
    return Positions(OK, tuple(ids))


@dataclass(frozen=True)
class GateObservation:
    now: float
    bot_running: bool  # a live main process, whatever the unit's state (activating, reloading, deactivating)
    heartbeat: Heartbeat | None
    positions: Positions
    drain_since: float | None = None  # when slotctl asked the bot to drain
    phases: bool = True  # the heartbeat source reports the bot's phase (idle/trading); False: http/systemd without
    drain_id: str | None = None  # this drain request's id, in the flag; None: the flag is an operator's (no id)
    # Distinct heartbeats (by ts) dated at or after drain_since that the gate has seen, this one included.
    heartbeats_since: int = 0
    orders: Orders | None = None  # quiesce.orders; None: not configured


def suspicious(obs: GateObservation, last_good_open: int | None) -> str | None:
    """A reason to stop the deploy now: state that may have silently emptied or been torn.

    last_good_open: open positions in the newest good snapshot (None: no snapshot yet).
    """
    p, hb = obs.positions, obs.heartbeat
    hb_open = hb.open_positions if hb is not None and obs.bot_running else None
    if p.state == TORN:
        return f"positions file is torn: {p.detail}"
    if p.state == INVALID:
        return f"positions file is not the bot's format: {p.detail}"
    # Missing over a snapshot of 0 open lost nothing (a first release that crashed before writing it).
    if p.state == MISSING and ((last_good_open or 0) > 0 or (hb_open or 0) > 0):
        had = f"the last snapshot had {last_good_open} open" if (last_good_open or 0) > 0 else f"the bot reports {hb_open} open"
        return f"positions file is missing, but {had}"
    if p.state == EMPTY and ((last_good_open or 0) > 0 or (hb_open or 0) > 0):
        had = f"the last snapshot had {last_good_open} open" if (last_good_open or 0) > 0 else f"the bot reports {hb_open} open"
        return f"positions file is empty ({p.detail}), but {had}"
    return None


def gate(obs: GateObservation, policy: str) -> tuple[bool, str]:
    """(open, what is still awaited). A bot that is not running has nothing in flight.

    Both policies need the running bot's acknowledgement of the drain: an idle heartbeat it computed after it
    saw this drain request (see unacknowledged()). flat also needs no open position; recorded, every open one on disk.
    """
    p, hb = obs.positions, obs.heartbeat
    if p.state == UNSAFE:
        return False, f"positions not read ({p.detail}); waiting, not reading it as empty"
    if p.state == LOCKED:
        return False, f"positions locked by the bot ({p.detail}); waiting, not reading it as empty"
    if p.state == UNREADABLE:
        if not obs.bot_running:
            # An API answers only while its bot runs (a first deploy has none): a stopped bot has nothing in
            # flight and its state stays where it left it, which the snapshot keeps.
            return True, f"bot not running; positions not readable without it ({p.detail})"
        return False, f"positions not known yet ({p.detail}); waiting, not reading it as empty"
    if p.state not in (OK, EMPTY, MISSING):
        return False, f"positions file is {p.state}"
    if policy == "flat" and p.count:
        return False, f"{p.count} open position(s): {', '.join(p.ids)}"
    waiting = orders_in_flight(obs.orders, obs.bot_running)
    if waiting:
        return False, waiting
    if not obs.bot_running:
        return True, "flat, bot not running" if policy == "flat" else f"bot not running; {p.count} open position(s) on disk"
    if hb is None:
        return False, "no heartbeat yet"
    if hb.ts > obs.now + FUTURE_TOLERANCE:
        return False, f"heartbeat is dated {hb.ts - obs.now:.0f}s in the future: it cannot acknowledge the drain"
    if obs.drain_since is not None and hb.ts < obs.drain_since:
        return False, "no heartbeat since the drain was requested"
    # A heartbeat source that reports no phase (HTTP without one, systemd): the drain request answered (e.g.
    # freqtrade's /stopentry acts before it replies) and a live bot since then is the acknowledgement.
    answered = hb.phase is None and not obs.phases
    if not answered and hb.phase != "idle":
        return False, f"bot is {hb.phase or 'in an unknown phase'}, not idle"
    if not answered and obs.drain_since is not None:
        waiting = unacknowledged(obs, hb)
        if waiting:
            return False, waiting
    ack = "the bot acknowledged the drain (its drain request answered, alive since)" if answered else "idle"
    if policy == "flat":
        return True, f"flat, and the bot acknowledged the drain ({'drain answered' if answered else 'idle'})"
    if hb.open_positions is not None and hb.open_positions != p.count:
        return False, f"bot reports {hb.open_positions} open, the positions file has {p.count}: not all recorded yet"
    return True, f"{ack}, {p.count} open position(s) recorded: {', '.join(p.ids) or '-'}"


def orders_in_flight(orders: Orders | None, bot_running: bool) -> str | None:
    """What the gate waits for in the bot's orders, under both policies; None: no order in flight (or not asked).

    An order source not read is "not known yet", never "none". With no bot running nothing is in flight that
    waiting would settle (a first deploy has no orders file yet; an API answers only while its bot runs): the
    orders the source shows are recorded in the snapshot and the new bot takes them over, as it does positions."""
    if orders is None or not bot_running:
        return None
    if orders.state != OK:
        return f"open orders not known yet ({orders.state}: {orders.detail}); waiting, not reading it as none"
    if orders.in_flight:
        return f"{len(orders.in_flight)} order(s) in flight: {', '.join(orders.in_flight)}"
    return None


def unacknowledged(obs: GateObservation, hb: Heartbeat) -> str | None:
    """What is awaited before this idle heartbeat acknowledges the drain; None: the bot computed it after it saw
    this drain request.

    Being dated after the request is not enough: a bot that read the flag before it was written, then took a
    moment, writes a heartbeat dated after it that it computed before (idle, and about to trade). A bot that
    echoes the request id proves it read this flag first. For one that does not, the first heartbeat dated after
    the request may be such a one; the second was begun after the first was written, so after the request: a
    bot that writes its heartbeats one after the other and acts on a flag read since its previous one.
    """
    if obs.drain_id is not None and hb.drain is not None:
        if hb.drain == obs.drain_id:
            return None
        return (f"idle, but its heartbeat echoes {'drain request ' + hb.drain if hb.drain else 'no drain request'}, "
                f"not this one ({obs.drain_id}): computed before the bot saw it")
    if obs.heartbeats_since < 2:
        return ("idle, but only one heartbeat since the drain was requested, which the bot may have computed before it "
                "saw the flag; waiting for the next")
    return None


@dataclass(frozen=True)
class SnapshotInfo:
    id: str
    ts: float
    good: bool


def rotation(snapshots: list[SnapshotInfo], keep: int) -> list[str]:
    """Ids to delete: all but the `keep` newest, never the newest good one."""
    newest_first = sorted(snapshots, key=lambda s: s.ts, reverse=True)
    newest_good = next((s.id for s in newest_first if s.good), None)
    return [s.id for s in newest_first[keep:] if s.id != newest_good]
