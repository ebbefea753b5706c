"""Health verdicts from observations: pure, so every rule is a table-driven test."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Heartbeat:
    ts: float  # unix seconds: the JSON's ts, or the file's mtime for bots that write no JSON
    pid: int | None
    phase: str | None
    open_positions: int | None


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
    positions: tuple[str, ...] | None = None  # open ids in the positions file; None: not checked this time
    log_mtime: float | None = None  # the dashboard's log file's mtime; None: missing
    external: tuple[str, ...] = ()  # what the HTTP and command probes found wrong


@dataclass(frozen=True)
class Baseline:
    """Facts fixed right after the start job finished."""

    slot: str
    started_at: float  # unix seconds, from ExecMainStartTimestamp
    main_pid: int
    n_restarts: int
    expected_positions: tuple[str, ...] | None = None  # open at the gate; None: not checked
    log_file: str | None = None  # the log the dashboard reads; None: not checked


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
    if obs.heartbeat_problem:
        found.append(obs.heartbeat_problem)
    hb = obs.heartbeat
    fresh = hb is not None and hb.ts >= base.started_at
    if fresh:
        assert hb is not None
        age = obs.now - hb.ts
        if age > max_age:
            found.append(f"heartbeat is {age:.1f}s old, max_age is {max_age:g}s")
        if hb.pid is not None and obs.main_pid and hb.pid != obs.main_pid:
            found.append(f"heartbeat written by pid {hb.pid}, but the unit's main pid is {obs.main_pid}")
    elif obs.now - base.started_at > max_age or final:
        found.append(f"no heartbeat written since the restart {obs.now - base.started_at:.1f}s ago")
    if fresh and base.expected_positions is not None and obs.positions is not None:
        lost = [i for i in base.expected_positions if i not in obs.positions]
        if lost:
            found.append(f"positions lost since the switch: {', '.join(lost)} were open, the new bot's file lacks them")
    if final and base.log_file is not None and (obs.log_mtime is None or obs.log_mtime < base.started_at):
        state = "missing" if obs.log_mtime is None else "not written since the restart"
        found.append(f"log file {base.log_file} {state}: the dashboard reads it (RISK-013)")
    found += obs.external
    return found
