"""Health verdicts from observations: pure, so every rule is a table-driven test."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Heartbeat:
    ts: float  # unix seconds: the JSON's ts, or the file's mtime for bots that write no JSON
    pid: int | None
    phase: str | None
    open_positions: int | None
    status: str | None = None  # systemd's StatusText, for a Type=notify bot
    # The drain request id the bot echoes ("drain"): the flag's id it read before computing this heartbeat. "" when
    # the heartbeat has the field but no id (not drained, or an operator's flag); None: the bot does not echo.
    drain: str | None = None


def echoed_drain(doc: dict) -> str | None:
    """A heartbeat's "drain" field: the request id it echoes, "" for null or no id, None when it has no such field."""
    if "drain" not in doc:
        return None
    return doc["drain"] if isinstance(doc["drain"], str) else ""


class Unanswered(str):
    """A problem reading a heartbeat source that did not answer at all (connection refused, timed out): right after a
    start that is "none yet", as a heartbeat file not written yet is; later, a problem like any other."""


# A heartbeat dated later than now by more than this is wrong (milliseconds written as seconds, a clock
# step): never "fresh forever".
FUTURE_TOLERANCE = 2.0


def heartbeat_age_problem(ts: float, now: float, max_age: float) -> str | None:
    age = now - ts
    if age < -FUTURE_TOLERANCE:
        return f"heartbeat is dated {-age:.1f}s in the future (ts {ts:.0f}: milliseconds instead of seconds, or a clock step)"
    if age > max_age:
        return f"heartbeat is {age:.1f}s old, max_age is {max_age:g}s"
    return None


@dataclass(frozen=True)
class UnitSeen:
    """A unit of the release other than the bot's (a dashboard), as systemd shows it."""

    name: str
    active_state: str
    sub_state: str
    main_pid: int = 0
    n_restarts: int = 0


def unit_problems(seen: UnitSeen, base: UnitSeen | None = None) -> list[str]:
    """A unit that is not up, or that systemd restarted: since `base` (the switch), or since its start when None.
    A release's units are long-running: a service must be running (or a oneshot's exited with RemainAfterExit)."""
    found = []
    up = seen.active_state == "active" and (not seen.name.endswith(".service") or seen.sub_state in ("running", "exited"))
    if not up:
        found.append(f"{seen.name} is {seen.active_state}/{seen.sub_state}, expected active/running")
    restarts = seen.n_restarts - (base.n_restarts if base else 0)
    if restarts > 0:
        found.append(f"systemd restarted {seen.name} {restarts} time(s) since {'the switch' if base else 'it was started'}: "
                     "it keeps failing")
    elif base and base.main_pid and seen.main_pid and seen.main_pid != base.main_pid:
        found.append(f"{seen.name}'s main process changed from pid {base.main_pid} to {seen.main_pid}: the first one died")
    return found


@dataclass(frozen=True)
class Observation:
    now: float
    active_state: str
    sub_state: str
    main_pid: int
    n_restarts: int
    process_slot: str | None  # slot the main process's cwd resolves into; None when unknown
    heartbeat: Heartbeat | None
    heartbeat_problem: str | None = None  # unreadable or malformed heartbeat file
    positions: tuple[str, ...] | None = None  # open ids in the positions file; None: not read, or not readable now
    # When the source last showed the running bot's own word: the file's mtime; for HTTP and command the
    # time of the answer (the running process gave it); for SQLite its fresh heartbeat (up on that database).
    positions_mtime: float | None = None
    # A source whose ids stay whether or not the release loaded them (SQLite rows): the heartbeat's count,
    # when it gives one, must also show them loaded.
    positions_persist: bool = False
    log_mtime: float | None = None  # the dashboard's log file's mtime; None: missing
    external: tuple[str, ...] = ()  # what the HTTP and command probes found wrong
    units: tuple[UnitSeen, ...] = ()  # the release's other units (a dashboard)
    protective: tuple[str, ...] | None = None  # protective orders the source shows now; None: not read now
    orders_written: float | None = None  # when the orders source last showed the running bot's own word


@dataclass(frozen=True)
class Baseline:
    """Facts fixed right after the start job finished."""

    slot: str
    started_at: float  # unix seconds, from ExecMainStartTimestamp
    main_pid: int
    n_restarts: int
    expected_positions: tuple[str, ...] | None = None  # open at the gate; None: not checked
    log_file: str | None = None  # the log the dashboard reads; None: not checked
    units: tuple[UnitSeen, ...] = ()  # the release's other units right after the start
    expected_protective: tuple[str, ...] | None = None  # protective orders open at the gate; None: not checked


def problems(obs: Observation, base: Baseline, max_age: float, *, final: bool) -> list[str]:
    """What is wrong now. Mid-window a missing first heartbeat is not yet a problem; at the end it is."""
    found: list[str] = []
    if obs.active_state != "active" or obs.sub_state != "running":
        found.append(f"unit is {obs.active_state}/{obs.sub_state}, expected active/running")
    if obs.n_restarts > base.n_restarts:
        found.append(f"systemd restarted the bot {obs.n_restarts - base.n_restarts} time(s) since the switch")
    if obs.main_pid and base.main_pid and obs.main_pid != base.main_pid:
        found.append(f"main process changed from pid {base.main_pid} to {obs.main_pid}: the first one died")
    if obs.main_pid and obs.process_slot is not None and obs.process_slot != base.slot:
        found.append(f"main process runs from slot {obs.process_slot}, expected {base.slot}")
    early = obs.now - base.started_at <= max_age and not final
    if obs.heartbeat_problem and not (isinstance(obs.heartbeat_problem, Unanswered) and early):
        found.append(obs.heartbeat_problem)
    hb = obs.heartbeat
    fresh = hb is not None and hb.ts >= base.started_at
    if fresh:
        assert hb is not None
        age_problem = heartbeat_age_problem(hb.ts, obs.now, max_age)
        if age_problem:
            found.append(age_problem)
        if hb.pid is not None and obs.main_pid and hb.pid != obs.main_pid:
            found.append(f"heartbeat written by pid {hb.pid}, but the unit's main pid is {obs.main_pid}")
    elif not early:
        found.append(f"no heartbeat written since the restart {obs.now - base.started_at:.1f}s ago")
    loaded, problem = positions_loaded(obs, base)
    if problem:
        found.append(problem)
    elif final and not loaded:
        found.append(f"the new bot never showed that it loaded the {len(base.expected_positions or ())} position(s) open "
                     "at the gate: its positions were not rewritten since the restart and its heartbeat gives no count")
    kept, problem = protective_kept(obs, base, final=final)
    if problem:
        found.append(problem)
    elif final and not kept:
        found.append(f"the new bot never showed the {len(base.expected_protective or ())} protective order(s) open at "
                     f"the gate ({', '.join(base.expected_protective or ())}): its orders were not rewritten since the restart")
    if final and base.log_file is not None and (obs.log_mtime is None or obs.log_mtime < base.started_at):
        state = ("missing" if obs.log_mtime is None else
                 f"not written since the restart (last written {base.started_at - obs.log_mtime:.3f}s before it)")
        found.append(f"log file {base.log_file} {state}: the dashboard reads it (RISK-013)")
    found += obs.external
    before = {u.name: u for u in base.units}
    for seen in obs.units:
        found += unit_problems(seen, before.get(seen.name))
    return found


def positions_loaded(obs: Observation, base: Baseline) -> tuple[bool, str | None]:
    """(settled, problem): did the new bot load the positions open at the gate?

    Only the new process's own word counts: its positions file written since the restart (by id), or
    else its heartbeat's count. The file as the old bot left it proves nothing (a release that ignores
    its state file leaves it untouched). A file not readable now (locked, torn mid-write) is "not
    known yet", never "no positions".
    """
    expected = base.expected_positions
    if expected is None or not expected:
        return True, None
    ids_seen = False
    if obs.positions is not None and obs.positions_mtime is not None and obs.positions_mtime >= base.started_at:
        lost = [i for i in expected if i not in obs.positions]
        if lost:
            return True, f"positions lost since the switch: {', '.join(lost)} were open, the new bot's state lacks them"
        if not obs.positions_persist:
            return True, None
        ids_seen = True
    hb = obs.heartbeat
    if hb is not None and hb.ts >= base.started_at and hb.open_positions is not None:
        if hb.open_positions < len(expected):
            return True, (f"the new bot reports {hb.open_positions} open position(s), {len(expected)} were open at the "
                          f"gate ({', '.join(expected)}): it did not load its state")
        return True, None
    return ids_seen, None


def protective_kept(obs: Observation, base: Baseline, *, final: bool = True) -> tuple[bool, str | None]:
    """(settled, problem): does the new bot report the protective orders open at the gate (a stoploss on the
    exchange)? Its own word only: the orders source rewritten since its start (or, for a database, read while it
    runs on it). A release that lost track of one would leave the position unprotected: rolled back.

    One missing before the end of the window (final) is not settled yet: a bot may put it back on its first loops,
    after it has already started on the database (freqtrade closes its dry-run stoplosses at start, then places
    new ones)."""
    expected = base.expected_protective
    if not expected:
        return True, None
    if obs.protective is None or obs.orders_written is None or obs.orders_written < base.started_at:
        return False, None
    lost = [i for i in expected if i not in obs.protective]
    if lost:
        if not final:
            return False, None
        return True, (f"protective order(s) lost since the switch: {', '.join(lost)} were open at the gate, the new "
                      "bot's orders lack them")
    return True, None
